//! Under load: queue depth in `/metrics`, refusal with a retry hint when every slot is
//! taken, and a cancelled request's KV blocks freed at once.

use std::time::Duration;

use crate::support::{
    JsonBody as _, Server, collect_stream, greedy_request, metric_value, post_json,
};

use modelfleet_contract::metrics::{
    self, KV_CACHE_USAGE_RATIO as KV_USAGE, OUTCOME, QUEUE_DEPTH, REQUESTS,
    RUNNING_REQUESTS as RUNNING, VLLM_REQUESTS_WAITING as VLLM_WAITING,
};

fn requests_total(outcome: &str) -> String {
    metrics::series(REQUESTS, &[(OUTCOME, outcome)])
}

#[tokio::test]
async fn cancelling_a_stream_frees_its_kv_blocks_at_once() {
    let server = Server::ready(&[]).await;
    let mut client = server.grpc().await;

    // gRPC: the client drops the stream.
    let mut stream = client
        .generate(greedy_request("Once upon a time", 2000, true))
        .await
        .expect("generate")
        .into_inner();
    for _ in 0..3 {
        stream.message().await.expect("message").expect("a message");
    }
    assert_eq!(server.metric(RUNNING).await, 1.0);
    assert!(server.metric(KV_USAGE).await > 0.0);
    drop(stream);
    server.wait_metric(KV_USAGE, |v| v == 0.0).await;
    assert_eq!(server.metric(RUNNING).await, 0.0);
    server
        .wait_metric(&requests_total("cancelled"), |v| v == 1.0)
        .await;

    // HTTP: the client closes the event stream.
    let mut response = crate::support::http_client()
        .post(server.http_url("/v1/completions"))
        .json_body(
            &serde_json::json!({"prompt": "Once upon a time", "max_tokens": 2000,
            "ignore_eos": true, "stream": true}),
        )
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 200);
    response.chunk().await.expect("a chunk").expect("an event");
    assert!(server.metric(KV_USAGE).await > 0.0);
    drop(response);
    server.wait_metric(KV_USAGE, |v| v == 0.0).await;
    server
        .wait_metric(&requests_total("cancelled"), |v| v == 2.0)
        .await;
}

#[tokio::test]
async fn a_full_queue_is_refused_with_a_retry_hint() {
    let server = Server::ready(&["--max-num-seqs", "1", "--max-queued-requests", "1"]).await;
    let mut client = server.grpc().await;
    let mut running = client
        .generate(greedy_request("Once upon a time", 2000, true))
        .await
        .expect("first request")
        .into_inner();
    running
        .message()
        .await
        .expect("message")
        .expect("a message");
    let queued = client
        .generate(greedy_request("In a land far away", 8, true))
        .await
        .expect("second request is queued")
        .into_inner();
    server.wait_metric(QUEUE_DEPTH, |v| v == 1.0).await;

    let refused = client
        .generate(greedy_request("Hello", 4, false))
        .await
        .expect_err("no slot left");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert_eq!(
        refused
            .metadata()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let (status, headers, body) = post_json(
        &server,
        "/v1/completions",
        &serde_json::json!({"prompt": "Hello", "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(server.metric(&requests_total("rejected")).await, 2.0);

    // Freeing the running slot lets the queued request through.
    drop(running);
    let queued = collect_stream(queued)
        .await
        .expect("queued request is served");
    assert_eq!(queued.len(), 8);
}

#[tokio::test]
async fn queue_depth_rises_when_requests_exceed_max_num_seqs_and_returns_to_zero() {
    let server = Server::ready(&["--max-num-seqs", "2"]).await;
    let client = server.grpc().await;
    let requests: Vec<_> = (0..6)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let stream = client
                    .generate(greedy_request(&format!("Story number {i}:"), 24, true))
                    .await?
                    .into_inner();
                collect_stream(stream).await
            })
        })
        .collect();

    let mut highest = 0.0_f64;
    let mut all_done = false;
    while !all_done {
        let (_, body) = crate::support::http_get(server.http_port, "/metrics")
            .await
            .expect("/metrics");
        let depth = metric_value(&body, QUEUE_DEPTH).expect("queue depth");
        assert_eq!(
            metric_value(&body, VLLM_WAITING),
            Some(depth),
            "both names report the same queue"
        );
        assert!(metric_value(&body, RUNNING).expect("running") <= 2.0);
        highest = highest.max(depth);
        all_done = requests.iter().all(tokio::task::JoinHandle::is_finished);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(highest >= 1.0, "the queue never showed a waiting request");
    assert!(
        highest <= 6.0,
        "only 6 requests were sent, saw {highest} waiting"
    );
    for request in requests {
        let messages = request.await.expect("task").expect("served");
        assert_eq!(messages.len(), 24);
    }
    assert_eq!(server.metric(QUEUE_DEPTH).await, 0.0);
    assert_eq!(server.metric(RUNNING).await, 0.0);
    assert_eq!(server.metric(&requests_total("length")).await, 6.0);
}
