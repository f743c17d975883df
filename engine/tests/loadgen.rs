//! The load generator against the real engine (`modelfleet-engine serve` on the demo model)
//! over real sockets; the load generator's own tests use small servers of their own.

use std::net::SocketAddr;
use std::time::Duration;

use modelfleet_loadgen::{Arrival, Target};
use tokio_util::sync::CancellationToken;

// Only the demo model's location is used here; the golden tests use the rest.
#[allow(dead_code)]
#[path = "golden/support.rs"]
mod support;

// The load generator's tests' checks of a report, one copy for both crates.
#[allow(dead_code)]
#[path = "../../loadgen/tests/common/mod.rs"]
mod common;

use common::{assert_all_ok_with_tokens, config};

// ---------------------------------------------------------------------------------------
// The real engine.

/// `modelfleet-engine serve` on the demo model, on free local ports; killed when dropped.
struct Engine {
    child: std::process::Child,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _already_exited = self.child.kill();
        let _status = self.child.wait();
    }
}

fn free_local_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
}

impl Engine {
    /// Starts the engine and waits until `/ready` says the weights are loaded and warm.
    async fn start(extra_args: &[&str]) -> Self {
        let model = support::demo_model_dir();
        assert!(
            model.join("model.gguf").is_file(),
            "no demo model in {}: run `make tools`",
            model.display()
        );
        let (grpc, http) = (free_local_addr(), free_local_addr());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_modelfleet-engine"))
            .arg("serve")
            .arg("--model")
            .arg(&model)
            .args(["--host", "127.0.0.1"])
            .args(["--grpc-port", &grpc.port().to_string()])
            .args(["--http-port", &http.port().to_string()])
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start modelfleet-engine serve");
        let mut engine = Engine { child, grpc, http };
        // reqwest is built without a default TLS provider; the workspace uses ring.
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let ready = format!("http://{http}/ready");
        loop {
            if let Some(status) = engine.child.try_wait().expect("engine status") {
                panic!("modelfleet-engine serve exited before it was ready: {status}");
            }
            match client.get(&ready).send().await {
                Ok(response) if response.status().is_success() => return engine,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_engine_serves_a_closed_loop_over_grpc_completions_and_chat() {
    let engine = Engine::start(&[]).await;
    let base = format!("http://{}", engine.http);
    let targets = vec![
        Target::grpc(engine.grpc.to_string()),
        Target::http_completions(&base).expect("target"),
        Target::http_chat(&base).expect("target"),
    ];
    let (requests, max_tokens) = (6, 12);
    let report = modelfleet_loadgen::run(
        config(Arrival::Closed { concurrency: 3 }, requests, max_tokens),
        targets,
        CancellationToken::new(),
    )
    .await
    .expect("run");
    let itl = assert_all_ok_with_tokens(&report, requests, max_tokens);
    // Tokens arrived in more than one delta per request.
    assert!(itl.count as u64 >= requests, "{}", report.to_text());
    for target in &report.per_target {
        assert_eq!(target.ok, 2, "{}", report.to_text());
        assert_eq!(target.output_tokens, 2 * u64::from(max_tokens));
    }
    // The engine reported the prompts' token counts (12 filler words each, at least a token
    // per word).
    assert!(
        report.prompt_tokens >= requests * 12,
        "{}",
        report.to_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_engine_at_capacity_is_counted_as_rejected_not_as_errors() {
    let engine = Engine::start(&["--max-num-seqs", "1", "--max-queued-requests", "1"]).await;
    let targets = vec![
        Target::grpc(engine.grpc.to_string()),
        Target::http_completions(&format!("http://{}", engine.http)).expect("target"),
    ];
    // Six clients against room for two requests: some must be refused.
    let report = modelfleet_loadgen::run(
        config(Arrival::Closed { concurrency: 6 }, 12, 4),
        targets,
        CancellationToken::new(),
    )
    .await
    .expect("run");
    let r = report.requests;
    assert_eq!(r.total, 12);
    assert!(r.ok >= 1, "{}", report.to_text());
    assert!(r.rejected >= 1, "{}", report.to_text());
    assert_eq!(r.ok + r.rejected, 12, "{}", report.to_text());
    assert_eq!(report.output_tokens, r.ok * 4);
}
