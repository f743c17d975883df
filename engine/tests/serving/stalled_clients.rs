//! Clients that stop reading cannot hold a replica's capacity: a stream whose client leaves
//! it unread longer than the write timeout is cancelled and its slot freed, while the
//! connection itself may stay open.

use std::time::{Duration, Instant};

use modelfleet_contract::metrics::{
    self, KV_CACHE_USAGE_RATIO as KV_USAGE, OUTCOME, QUEUE_DEPTH, REQUESTS, SLOTS_IN_USE,
};
use modelfleet_proto::v1::generation_client::GenerationClient;
use tonic::transport::{Channel, Endpoint};

use crate::support::{Server, collect_stream, greedy_request};

/// Never-reading clients, each on a connection of its own.
const STALLED_CLIENTS: usize = 200;

/// A connection whose client will not read: a flow-control window of a few messages, so
/// the server's writes stop after a handful of tokens instead of filling megabytes of
/// buffers first.
async fn non_reading_channel(server: &Server) -> Channel {
    Endpoint::from_shared(format!("http://127.0.0.1:{}", server.grpc_port))
        .expect("endpoint")
        .initial_stream_window_size(256)
        .connect()
        .await
        .expect("connect")
}

#[tokio::test]
async fn a_few_hundred_never_reading_clients_do_not_hold_the_replica_at_capacity() {
    let server = Server::ready(&[
        "--max-num-seqs",
        "2",
        "--max-queued-requests",
        "2",
        "--write-timeout-seconds",
        "2",
    ])
    .await;

    // Every client asks for a long stream and never reads a message of it; the connections
    // stay open until the end of the test.
    let mut held = Vec::new();
    let mut admitted = 0;
    for i in 0..STALLED_CLIENTS {
        let channel = non_reading_channel(&server).await;
        let request = greedy_request(&format!("Story number {i}:"), 3000, true);
        match GenerationClient::new(channel.clone())
            .generate(request)
            .await
        {
            Ok(stream) => {
                admitted += 1;
                held.push((channel, Some(stream)));
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                held.push((channel, None));
            }
        }
    }
    assert_eq!(admitted, 4, "max_num_seqs + max_queued_requests slots");

    // Positive control: the stalled clients really took every slot.
    let mut client = server.grpc().await;
    let refused = client
        .generate(greedy_request("Hello", 4, true))
        .await
        .expect_err("every slot is held");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);

    // Their streams are given up; a well-behaved client is served again.
    let deadline = Instant::now() + Duration::from_secs(180);
    let served = loop {
        match client.generate(greedy_request("Hello", 4, true)).await {
            Ok(stream) => break collect_stream(stream.into_inner()).await,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    Instant::now() < deadline,
                    "the replica still answers RESOURCE_EXHAUSTED; log:\n{}",
                    server.log_text()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(status) => panic!("unexpected refusal: {status:?}"),
        }
    };
    assert_eq!(served.expect("served").len(), 4);

    server.wait_metric(SLOTS_IN_USE, |v| v == 0.0).await;
    let cancelled = metrics::series(REQUESTS, &[(OUTCOME, "cancelled")]);
    server.wait_metric(&cancelled, |v| v == 4.0).await;
    assert_eq!(server.metric(QUEUE_DEPTH).await, 0.0);
    assert_eq!(server.metric(KV_USAGE).await, 0.0);
    assert!(
        server
            .log_text()
            .contains("the client stopped reading its stream"),
        "the server says why it cancelled; log:\n{}",
        server.log_text()
    );
    drop(held);
}
