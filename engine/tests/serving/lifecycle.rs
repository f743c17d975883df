//! A server's life: NOT_SERVING while the model loads, SERVING once warmed up, and on
//! SIGTERM NOT_SERVING again while requests in flight finish, then exit 0.

use futures::StreamExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
    JsonBody as _, Server, collect_stream, demo_model_dir, greedy_request, http_get,
};

#[tokio::test]
async fn health_is_not_serving_until_the_model_is_loaded_and_warmed_up() {
    let server = Server::start(&demo_model_dir(), &[]);
    // The ports open before loading starts: the first answer comes while loading.
    let mut watch = server
        .health()
        .await
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("a status").expect("status");
    assert_eq!(first.status(), ServingStatus::NotServing);

    let mut client = server.grpc().await;
    let refused = client
        .generate(greedy_request("Hello", 4, false))
        .await
        .expect_err("refused while loading");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("loading"), "{refused:?}");
    let (status, body) = http_get(server.http_port, "/ready").await.expect("/ready");
    assert_eq!((status, body.as_str()), (503, "loading\n"));
    let (status, _) = http_get(server.http_port, "/health")
        .await
        .expect("/health");
    assert_eq!(status, 200, "alive while loading");

    let mut statuses = vec![first.status()];
    while statuses.last() != Some(&ServingStatus::Serving) {
        let next = watch.next().await.expect("a status").expect("status");
        statuses.push(next.status());
    }
    assert!(
        statuses[..statuses.len() - 1]
            .iter()
            .all(|s| *s == ServingStatus::NotServing),
        "{statuses:?}"
    );
    let (status, _) = http_get(server.http_port, "/ready").await.expect("/ready");
    assert_eq!(status, 200);
    let served = client
        .generate(greedy_request("Hello", 4, false))
        .await
        .expect("served once ready")
        .into_inner();
    assert!(!collect_stream(served).await.expect("stream").is_empty());
}

#[tokio::test]
async fn sigterm_drains_in_flight_streams_then_exits_zero() {
    let mut server = Server::ready(&["--drain-timeout-seconds", "120"]).await;
    let mut client = server.grpc().await;
    let mut in_flight = client
        .generate(greedy_request("Once upon a time", 48, true))
        .await
        .expect("generate")
        .into_inner();
    let first = in_flight
        .message()
        .await
        .expect("first message")
        .expect("a message");

    server.terminate();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.health_status().await != ServingStatus::NotServing {
        assert!(
            std::time::Instant::now() < deadline,
            "health stayed SERVING"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let refused = client
        .generate(greedy_request("Hello", 4, false))
        .await
        .expect_err("refused while draining");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let (status, body) = http_get(server.http_port, "/ready").await.expect("/ready");
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    let response = crate::support::http_client()
        .post(server.http_url("/v1/completions"))
        .json_body(&serde_json::json!({"prompt": "Hello", "max_tokens": 4}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 503);

    let rest = collect_stream(in_flight)
        .await
        .expect("the stream finishes");
    assert_eq!(
        1 + rest.len(),
        48,
        "every token of the in-flight request arrives"
    );
    assert_eq!(first.finish_reason, 0);
    assert_eq!(
        rest.last().map(|m| m.finish_reason()),
        Some(modelfleet_proto::v1::FinishReason::Length)
    );
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log_text());
}

#[tokio::test]
async fn the_drain_deadline_ends_streams_with_unavailable() {
    let mut server = Server::ready(&["--drain-timeout-seconds", "1"]).await;
    let mut client = server.grpc().await;
    let mut in_flight = client
        .generate(greedy_request("Once upon a time", 4000, true))
        .await
        .expect("generate")
        .into_inner();
    in_flight
        .message()
        .await
        .expect("first message")
        .expect("a message");
    server.terminate();
    let ended = collect_stream(in_flight)
        .await
        .expect_err("cut off at the deadline");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log_text());
}

/// Waits for the server to exit by itself with a failure, and returns its log.
async fn exits_with_failure(server: &mut Server) -> String {
    let status = server.wait_exit().await;
    let log = server.log_text();
    assert!(!status.success(), "the server exited 0; log:\n{log}");
    log
}

#[tokio::test]
async fn a_panicking_engine_loop_reports_not_serving_and_exits() {
    // Warm-up takes two forward passes; the first request's second one panics.
    let mut server = Server::ready(&["--inject-fault", "panic-after=3"]).await;
    let mut watch = server
        .health()
        .await
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("a status").expect("status");
    assert_eq!(first.status(), ServingStatus::Serving);

    let mut client = server.grpc().await;
    let stream = client
        .generate(greedy_request("Once upon a time", 16, true))
        .await
        .expect("admitted while the engine lived")
        .into_inner();
    let ended = collect_stream(stream).await.expect_err("the engine died");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");

    let next = watch.next().await.expect("a status").expect("status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    let log = exits_with_failure(&mut server).await;
    assert!(log.contains("the engine loop panicked"), "{log}");
    assert!(log.contains("exiting so the pod is replaced"), "{log}");
}

#[tokio::test]
async fn steps_that_keep_failing_take_the_server_down_one_failure_does_not() {
    let mut server = Server::ready(&["--inject-fault", "fail-steps-after=2"]).await;
    let mut client = server.grpc().await;
    let budget = modelfleet_engine::engine::MAX_CONSECUTIVE_FAILED_STEPS;
    for attempt in 1..=budget {
        let stream = client
            .generate(greedy_request("Hello", 4, true))
            .await
            .expect("admitted")
            .into_inner();
        let failed = collect_stream(stream).await.expect_err("the step fails");
        assert_eq!(failed.code(), tonic::Code::Internal, "{failed:?}");
        if attempt < budget {
            // One failed step ends its requests, not the engine.
            assert_eq!(server.health_status().await, ServingStatus::Serving);
        }
    }
    let log = exits_with_failure(&mut server).await;
    assert!(log.contains("engine steps in a row failed"), "{log}");
}

#[tokio::test]
async fn a_max_model_len_beyond_the_kv_cache_is_refused_at_start_up() {
    let mut server = Server::start(
        &demo_model_dir(),
        &["--num-blocks", "8", "--max-model-len", "1000"],
    );
    let log = exits_with_failure(&mut server).await;
    assert!(
        log.contains("--max-model-len 1000 is more than the KV cache holds")
            && log.contains("= 128 tokens"),
        "{log}"
    );
}
