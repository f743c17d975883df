//! A `modelfleet-engine serve` process on the demo model, on free local ports, and the
//! clients the tests talk to it with.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use modelfleet_proto::v1 as pb;
use modelfleet_proto::v1::generation_client::GenerationClient;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub use crate::golden_support::demo_model_dir;

pub const SERVED_NAME: &str = "smollm2";

pub fn engine_binary() -> &'static str {
    env!("CARGO_BIN_EXE_modelfleet-engine")
}

/// A running server; killed (and its log printed) when dropped unfinished.
pub struct Server {
    child: Option<Child>,
    pub grpc_port: u16,
    pub http_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server with `extra` flags and waits until it reports ready.
    pub async fn ready(extra: &[&str]) -> Server {
        let server = Server::start(&demo_model_dir(), extra);
        server.wait_ready().await;
        server
    }

    /// Starts a server without waiting for it.
    pub fn start(model: &Path, extra: &[&str]) -> Server {
        assert!(
            model.exists(),
            "the demo model is missing at {} (run `make tools`)",
            model.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("serve.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let grpc_port = free_port();
        let http_port = free_port();
        let child = Command::new(engine_binary())
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--served-name", SERVED_NAME, "--host", "127.0.0.1"])
            .args(["--grpc-port", &grpc_port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            // Many servers share the machine's cores during a test run.
            .args(["--threads", "1"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawning modelfleet-engine serve");
        Server {
            child: Some(child),
            grpc_port,
            http_port,
            log,
            _dir: dir,
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(response) = http_get(self.http_port, "/ready").await
                && response.0 == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not become ready; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// A gRPC channel, retried until the port accepts.
    pub async fn channel(&self) -> Channel {
        let endpoint = format!("http://127.0.0.1:{}", self.grpc_port);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match Channel::from_shared(endpoint.clone())
                .expect("endpoint")
                .connect()
                .await
            {
                Ok(channel) => return channel,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot connect to {endpoint}: {error}; log:\n{}",
                        self.log_text()
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    pub async fn grpc(&self) -> GenerationClient<Channel> {
        GenerationClient::new(self.channel().await)
    }

    pub async fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel().await)
    }

    pub async fn health_status(&self) -> ServingStatus {
        let response = self
            .health()
            .await
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check");
        response.into_inner().status()
    }

    /// The value of one series in `/metrics` (see [`metric_value`]).
    pub async fn metric(&self, series: &str) -> f64 {
        let (status, body) = http_get(self.http_port, "/metrics")
            .await
            .expect("scraping /metrics");
        assert_eq!(status, 200, "{body}");
        metric_value(&body, series)
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{body}"))
    }

    /// Polls `/metrics` until `series` satisfies `wanted`; fails with the last value seen.
    pub async fn wait_metric(&self, series: &str, wanted: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.metric(series).await;
            if wanted(value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{series} stayed at {value}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn terminate(&self) {
        let pid = i32::try_from(self.pid()).expect("pid");
        // SAFETY: sending a signal to a child this test owns.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM could not be sent");
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- modelfleet-engine serve log ---\n{}", self.log_text());
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The value of `series` in a Prometheus exposition: `name` alone, or `name{label="v",…}`
/// matching a line with that name and at least those labels, in any order.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    let (name, wanted) = split_series(series);
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (sample, value) = line.rsplit_once(' ')?;
            let (line_name, labels) = split_series(sample);
            (line_name == name && wanted.iter().all(|w| labels.contains(w)))
                .then(|| value.parse().ok())
                .flatten()
        })
}

fn split_series(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => {
            let labels = rest.trim_end_matches('}');
            (name, labels.split(',').filter(|l| !l.is_empty()).collect())
        }
    }
}

pub fn http_client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; the workspace uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// GET `path`: status and body text.
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String), reqwest::Error> {
    let response = http_client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// POST a JSON body: status, headers and the parsed JSON response.
pub async fn post_json(
    server: &Server,
    path: &str,
    body: &serde_json::Value,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    post_raw(server, path, body.to_string()).await
}

pub async fn post_raw(
    server: &Server,
    path: &str,
    body: String,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let response = http_client()
        .post(server.http_url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "the response is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, headers, json)
}

/// The `data:` payloads of a server-sent-event body, `[DONE]` included.
pub fn sse_payloads(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// POSTs a streaming request and returns its event payloads, `[DONE]` included.
pub async fn post_sse(server: &Server, path: &str, body: &serde_json::Value) -> Vec<String> {
    let text = http_client()
        .post(server.http_url(path))
        .json_body(body)
        .send()
        .await
        .expect("POST")
        .text()
        .await
        .expect("SSE body");
    sse_payloads(&text)
}

/// A greedy request for `max_tokens` tokens of `prompt`.
pub fn greedy_request(prompt: &str, max_tokens: u32, ignore_eos: bool) -> pb::GenerateRequest {
    pb::GenerateRequest {
        model: String::new(),
        prompt: Some(pb::generate_request::Prompt::Text(prompt.into())),
        sampling: None,
        stop: Some(pb::StopParams {
            max_tokens,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos,
        }),
    }
}

/// Every message of a stream, or the status it failed with.
pub async fn collect_stream(
    mut stream: tonic::Streaming<pb::GenerateResponse>,
) -> Result<Vec<pb::GenerateResponse>, tonic::Status> {
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await? {
        messages.push(message);
    }
    Ok(messages)
}

pub fn text_of(messages: &[pb::GenerateResponse]) -> String {
    messages.iter().map(|m| m.text.as_str()).collect()
}

/// Small helper so tests read as `.json_body(&value)` without reqwest's `json` feature.
pub trait JsonBody {
    fn json_body(self, value: &serde_json::Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, value: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }
}
