//! The load generator against servers over real sockets: small gRPC and HTTP servers written
//! here that stream a known number of tokens (so counts and round-robin can be checked
//! exactly). The engine's own tests run it against the real engine.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::Stream;
use modelfleet_loadgen::{Arrival, LoadGenerator, StopAfter, Target};
use modelfleet_proto::v1::generation_server::{Generation, GenerationServer};
use modelfleet_proto::v1::{
    FinishReason, GenerateRequest, GenerateResponse, ModelInfoRequest, ModelInfoResponse,
    TokenizeRequest, TokenizeResponse, Usage,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

mod common;

use common::{assert_all_ok, config};

/// Time between streamed tokens of the test servers.
const TOKEN_GAP: Duration = Duration::from_millis(2);

/// What a test server does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Streams `max_tokens` tokens, one per message, then the finish reason and usage.
    Stream,
    /// Refuses every request as overloaded.
    Overloaded,
}

/// Shared by a test server and the test.
#[derive(Debug)]
struct Served {
    behaviour: Behaviour,
    requests: AtomicU64,
    /// The last request body (HTTP) or a description of it (gRPC).
    last: std::sync::Mutex<Option<Value>>,
}

impl Served {
    fn new(behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            behaviour,
            requests: AtomicU64::new(0),
            last: std::sync::Mutex::new(None),
        })
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    fn last(&self) -> Value {
        self.last
            .lock()
            .expect("lock")
            .clone()
            .expect("a request was served")
    }
}

// ---------------------------------------------------------------------------------------
// A minimal gRPC Generation server.

struct FakeGeneration(Arc<Served>);

type GenerateStream = Pin<Box<dyn Stream<Item = Result<GenerateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Generation for FakeGeneration {
    type GenerateStream = GenerateStream;

    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<tonic::Response<GenerateStream>, Status> {
        let served = &self.0;
        served.requests.fetch_add(1, Ordering::SeqCst);
        let request = request.into_inner();
        let stop = request.stop.unwrap_or_default();
        *served.last.lock().expect("lock") = Some(json!({
            "model": request.model,
            "max_tokens": stop.max_tokens,
            "ignore_eos": stop.ignore_eos,
            "has_text_prompt": matches!(
                request.prompt,
                Some(modelfleet_proto::v1::generate_request::Prompt::Text(_))
            ),
        }));
        if served.behaviour == Behaviour::Overloaded {
            return Err(Status::resource_exhausted("the waiting queue is full"));
        }
        let n = stop.max_tokens;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for i in 0..n {
                tokio::time::sleep(TOKEN_GAP).await;
                let last = i + 1 == n;
                let message = GenerateResponse {
                    token_ids: vec![100 + i],
                    text: format!(" w{i}"),
                    finish_reason: if last {
                        FinishReason::Length as i32
                    } else {
                        FinishReason::Unspecified as i32
                    },
                    usage: Some(Usage {
                        prompt_tokens: 5,
                        completion_tokens: i + 1,
                        cached_prompt_tokens: 0,
                    }),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn tokenize(
        &self,
        _: Request<TokenizeRequest>,
    ) -> Result<tonic::Response<TokenizeResponse>, Status> {
        Err(Status::unimplemented("not in this test server"))
    }

    async fn model_info(
        &self,
        _: Request<ModelInfoRequest>,
    ) -> Result<tonic::Response<ModelInfoResponse>, Status> {
        Err(Status::unimplemented("not in this test server"))
    }
}

async fn spawn_grpc(behaviour: Behaviour) -> (Target, Arc<Served>) {
    let served = Served::new(behaviour);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let service = GenerationServer::new(FakeGeneration(Arc::clone(&served)));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (Target::grpc(addr.to_string()), served)
}

// ---------------------------------------------------------------------------------------
// A minimal OpenAI-compatible streaming HTTP server.

async fn completions(State(served): State<Arc<Served>>, Json(body): Json<Value>) -> Response {
    stream_chunks(
        served,
        body,
        |i| json!({"choices": [{"index": 0, "text": format!(" w{i}")}]}),
    )
}

async fn chat(State(served): State<Arc<Served>>, Json(body): Json<Value>) -> Response {
    stream_chunks(
        served,
        body,
        |i| json!({"choices": [{"index": 0, "delta": {"content": format!(" w{i}")}}]}),
    )
}

fn stream_chunks(served: Arc<Served>, body: Value, chunk: fn(u64) -> Value) -> Response {
    served.requests.fetch_add(1, Ordering::SeqCst);
    let n = body["max_tokens"].as_u64().unwrap_or(16);
    let usage = body["stream_options"]["include_usage"] == true;
    *served.last.lock().expect("lock") = Some(body);
    if served.behaviour == Behaviour::Overloaded {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({"error": {"message": "the waiting queue is full", "type": "overloaded"}})),
        )
            .into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, std::convert::Infallible>>(4);
    tokio::spawn(async move {
        // An empty delta first: it must not count as the first token.
        let mut events = vec![json!({"choices": [{"index": 0, "text": ""}]}).to_string()];
        events.extend((0..n).map(|i| chunk(i).to_string()));
        if usage {
            events.push(
                json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": n}})
                    .to_string(),
            );
        }
        events.push("[DONE]".to_owned());
        for data in events {
            tokio::time::sleep(TOKEN_GAP).await;
            if tx.send(Ok(Event::default().data(data))).await.is_err() {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).into_response()
}

async fn spawn_http(behaviour: Behaviour) -> (SocketAddr, Arc<Served>) {
    let served = Served::new(behaviour);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = axum::Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .with_state(Arc::clone(&served));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, served)
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_over_grpc_spreads_requests_round_robin_and_counts_every_token() {
    let (a, served_a) = spawn_grpc(Behaviour::Stream).await;
    let (b, served_b) = spawn_grpc(Behaviour::Stream).await;
    let report = modelfleet_loadgen::run(
        config(Arrival::Closed { concurrency: 3 }, 12, 8),
        vec![a, b],
        CancellationToken::new(),
    )
    .await
    .expect("run");
    assert_all_ok(&report, 12, 8);
    assert_eq!((served_a.requests(), served_b.requests()), (6, 6));
    assert_eq!(report.per_target[0].ok, 6);
    assert_eq!(report.per_target[1].output_tokens, 48);
    assert_eq!(report.prompt_tokens, 12 * 5);
    let sent = served_a.last();
    assert_eq!(sent["max_tokens"], 8);
    assert_eq!(sent["ignore_eos"], true);
    assert_eq!(sent["has_text_prompt"], true);
    // The JSON report says the same.
    let json: Value = serde_json::from_str(&report.to_json()).expect("JSON");
    assert_eq!(json["requests"]["ok"], 12);
    assert_eq!(json["output_tokens"], 96);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_over_http_completions_and_chat_streams() {
    let (addr, served) = spawn_http(Behaviour::Stream).await;
    let base = format!("http://{addr}");
    let targets = vec![
        Target::http_completions(&base).expect("target"),
        Target::http_chat(&base).expect("target"),
    ];
    let report = modelfleet_loadgen::run(
        config(Arrival::Closed { concurrency: 2 }, 10, 6),
        targets,
        CancellationToken::new(),
    )
    .await
    .expect("run");
    assert_all_ok(&report, 10, 6);
    assert_eq!(served.requests(), 10);
    assert_eq!(report.per_target[1].ok, 5);
    let body = served.last();
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 6);
    assert_eq!(body["ignore_eos"], true);
    assert!(
        body.get("prompt").is_some() || body["messages"][0]["role"] == "user",
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisson_arrivals_issue_the_requested_number_of_requests() {
    let (target, served) = spawn_grpc(Behaviour::Stream).await;
    let report = modelfleet_loadgen::run(
        config(
            Arrival::Poisson {
                rate: 200.0,
                seed: 3,
            },
            20,
            4,
        ),
        vec![target],
        CancellationToken::new(),
    )
    .await
    .expect("run");
    assert_all_ok(&report, 20, 4);
    assert_eq!(served.requests(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_stops_issuing_and_lets_requests_in_flight_finish() {
    let (target, served) = spawn_grpc(Behaviour::Stream).await;
    for arrival in [
        Arrival::Closed { concurrency: 3 },
        Arrival::Poisson {
            rate: 100.0,
            seed: 5,
        },
    ] {
        let mut config = config(arrival, 1, 4);
        config.stop = StopAfter {
            requests: None,
            duration: Some(Duration::from_millis(300)),
        };
        let generator = LoadGenerator::new(config, vec![target.clone()]).expect("config");
        let live = generator.live();
        let before = served.requests();
        let report = generator.run(CancellationToken::new()).await.expect("run");
        assert!(!report.cancelled);
        assert!(report.requests.ok > 0, "{}", report.to_text());
        // Every request the server saw finished and was counted.
        assert_eq!(report.requests.ok, served.requests() - before);
        assert_eq!(report.requests.total, report.requests.ok);
        assert_eq!(live.snapshot().issued, report.requests.total);
        assert_eq!(live.snapshot().in_flight, 0);
        assert_eq!(report.output_tokens, report.requests.ok * 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_counted_as_rejected_over_grpc_and_http() {
    let (grpc, _) = spawn_grpc(Behaviour::Overloaded).await;
    let (addr, _) = spawn_http(Behaviour::Overloaded).await;
    let http = Target::http_completions(&format!("http://{addr}")).expect("target");
    let report = modelfleet_loadgen::run(
        config(Arrival::Closed { concurrency: 2 }, 8, 4),
        vec![grpc, http],
        CancellationToken::new(),
    )
    .await
    .expect("run");
    assert_eq!(report.requests.rejected, 8, "{}", report.to_text());
    assert_eq!(report.requests.ok, 0);
    assert_eq!(report.requests.unreachable, 0);
    assert_eq!(report.latency.ttft, None);
    let messages: Vec<&str> = report.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("ResourceExhausted")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("429") && m.contains("Retry-After: 1")),
        "{messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_nobody_listens_on_is_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let targets = vec![
        Target::grpc(format!("127.0.0.1:{port}")),
        Target::http_completions(&format!("http://127.0.0.1:{port}")).expect("target"),
    ];
    let report = modelfleet_loadgen::run(
        config(Arrival::Closed { concurrency: 1 }, 4, 4),
        targets,
        CancellationToken::new(),
    )
    .await
    .expect("run");
    assert_eq!(report.requests.unavailable, 4, "{}", report.to_text());
    assert_eq!(report.requests.unreachable, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_counters_move_during_a_run_and_cancel_ends_it_with_a_report() {
    let (target, _) = spawn_grpc(Behaviour::Stream).await;
    let mut config = config(Arrival::Closed { concurrency: 2 }, 1, 4);
    config.stop = StopAfter::default(); // until cancelled
    let generator = LoadGenerator::new(config, vec![target]).expect("config");
    let live = generator.live();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(generator.run(cancel.clone()));
    while live.snapshot().ok < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let during = live.snapshot();
    assert!(during.output_tokens >= 40);
    assert!(during.recent_ttft_p99_ms.is_some());
    assert!(during.elapsed_secs > 0.0);
    cancel.cancel();
    let report = run.await.expect("run task").expect("run");
    assert!(report.cancelled);
    assert!(report.requests.ok >= 10);
    let after = live.snapshot();
    assert_eq!(after.ok, report.requests.ok);
    assert_eq!(after.in_flight, 0);
    assert_eq!(report.output_tokens, report.requests.ok * 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_targets_take_the_load_from_the_next_request_on() {
    let (old, served_old) = spawn_grpc(Behaviour::Stream).await;
    let (new, served_new) = spawn_grpc(Behaviour::Stream).await;
    let mut config = config(Arrival::Closed { concurrency: 2 }, 1, 4);
    config.stop = StopAfter::default(); // until cancelled
    let generator = LoadGenerator::new(config, vec![old.clone()]).expect("config");
    let (live, targets) = (generator.live(), generator.targets());
    let cancel = CancellationToken::new();
    let run = tokio::spawn(generator.run(cancel.clone()));
    while live.snapshot().ok < 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    targets.replace(vec![new.clone()]);
    // At most the two requests in flight at the switch still reach the old target.
    let old_at_switch = served_old.requests();
    while served_new.requests() < 6 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    let report = run.await.expect("run task").expect("run");
    assert!(served_old.requests() <= old_at_switch + 2);
    assert_eq!(report.targets, vec![old.to_string(), new.to_string()]);
    // Six requests reached the new target; the two in flight at cancellation are dropped.
    assert!(report.per_target[1].ok >= 4, "{}", report.to_text());
    assert_eq!(report.requests.failed(), 0);
    assert_eq!(targets.current().to_vec(), vec![new]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_a_json_report_and_fails_only_when_nothing_was_reached() {
    let (target, served) = spawn_grpc(Behaviour::Stream).await;
    let bin = env!("CARGO_BIN_EXE_modelfleet-loadgen");
    let output = tokio::process::Command::new(bin)
        .args(["--target", &target.to_string(), "--concurrency", "2"])
        .args([
            "--requests",
            "6",
            "--max-tokens",
            "5",
            "--prompt-words",
            "8",
        ])
        .args(["--format", "json"])
        .output()
        .await
        .expect("run the binary");
    assert!(output.status.success(), "{output:?}");
    let json: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(json["requests"]["ok"], 6);
    assert_eq!(json["output_tokens"], 30);
    assert_eq!(served.requests(), 6);

    let refused = tokio::process::Command::new(bin)
        .args(["--target", "grpc://127.0.0.1:1", "--requests", "2"])
        .output()
        .await
        .expect("run the binary");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let invalid = tokio::process::Command::new(bin)
        .args(["--target", "grpc://127.0.0.1:1", "--rate", "0"])
        .output()
        .await
        .expect("run the binary");
    assert_eq!(invalid.status.code(), Some(2), "{invalid:?}");
}
