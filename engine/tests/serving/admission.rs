//! Admission comes before any work on a request: large prompts are tokenised off the
//! request-handling threads, so health checks keep answering while they are, and a full
//! engine refuses them (and `Tokenize`) before tokenising anything.

use std::time::Duration;

use modelfleet_proto::v1 as pb;
use tokio::task::JoinHandle;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{JsonBody as _, Server, greedy_request, http_client};

/// Kubernetes' default `timeoutSeconds` for a probe: a health check slower than this counts
/// as a failure, and enough of them restart or unready the pod.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Large prompts sent at once: more than the two threads that handle requests.
const LARGE_PROMPTS: usize = 4;

/// A prompt of about 2 MB (just under the HTTP API's body limit): seconds of tokenising.
fn large_prompt(seed: usize) -> String {
    (0..250_000)
        .map(|i| format!("word{}", (i + seed) % 1000))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sends `LARGE_PROMPTS` large completions at once; each task returns its HTTP status.
fn send_large_prompts(server: &Server) -> Vec<JoinHandle<u16>> {
    (0..LARGE_PROMPTS)
        .map(|i| {
            let url = server.http_url("/v1/completions");
            let body = serde_json::json!({"prompt": large_prompt(i), "max_tokens": 1});
            tokio::spawn(async move {
                http_client()
                    .post(url)
                    .json_body(&body)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            })
        })
        .collect()
}

/// Checks health five times over the first second of the load, each within a probe's
/// timeout, and returns how many large prompts were still unanswered after the last check.
async fn probe_while_loaded(server: &Server, load: &[JoinHandle<u16>]) -> usize {
    let mut health = server.health().await;
    for attempt in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let check = health.check(HealthCheckRequest {
            service: String::new(),
        });
        let status = tokio::time::timeout(PROBE_TIMEOUT, check)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "health check {attempt} took longer than a probe's {PROBE_TIMEOUT:?} while \
                     large prompts were sent"
                )
            })
            .expect("health check")
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving);
    }
    load.iter().filter(|task| !task.is_finished()).count()
}

#[tokio::test]
async fn health_answers_within_a_probe_timeout_while_large_prompts_are_tokenised() {
    let server = Server::ready(&[]).await;
    // Connected before the load, as the kubelet's prober would be.
    server.health_status().await;
    let load = send_large_prompts(&server);
    let unanswered = probe_while_loaded(&server, &load).await;
    // The load was really there while health answered: tokenising one prompt takes seconds.
    assert!(
        unanswered > 0,
        "every large prompt was answered within a second; the test lost its load"
    );
    for task in load {
        // Each is tokenised, then refused for its length.
        assert_eq!(task.await.expect("task"), 400);
    }
}

#[tokio::test]
async fn a_full_engine_refuses_large_prompts_and_tokenize_before_tokenising() {
    let server = Server::ready(&["--max-num-seqs", "1", "--max-queued-requests", "0"]).await;
    let mut client = server.grpc().await;
    let mut running = client
        .generate(greedy_request("Once upon a time", 2000, true))
        .await
        .expect("the one slot")
        .into_inner();
    running.message().await.expect("message").expect("a token");

    let refused = client
        .tokenize(pb::TokenizeRequest {
            text: "Hello".into(),
        })
        .await
        .expect_err("Tokenize needs a slot too");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );

    // Refused at the door, large prompts cost the server nothing: health keeps answering.
    let load = send_large_prompts(&server);
    probe_while_loaded(&server, &load).await;
    for task in load {
        assert_eq!(task.await.expect("task"), 429);
    }

    // Once the slot is free, Tokenize is served.
    drop(running);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match client
            .tokenize(pb::TokenizeRequest {
                text: "Hello".into(),
            })
            .await
        {
            Ok(response) => {
                assert!(!response.into_inner().token_ids.is_empty());
                break;
            }
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the slot was never freed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("Tokenize failed: {status:?}"),
        }
    }
}
