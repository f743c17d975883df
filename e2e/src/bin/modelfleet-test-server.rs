//! A small server for the harness's tests: the test-server image (`make images`) they run on
//! the real node.
//!
//! HTTP on `--port`: `/healthz` (200), `/env/NAME` (an environment variable), `/file/PATH`
//! (a file's contents, as the container sees its file system), `/pid`, `/hostname`,
//! `/whoami` (the user the API server authenticates this pod as, through the in-cluster
//! configuration), `/metrics` (Prometheus text: requests served, and
//! `modelfleet_engine_queue_depth` with the value of `--queue-depth`, standing in for an
//! engine); anything else is 404. With `--grpc-port` it also answers `grpc.health.v1` as SERVING. On SIGTERM it
//! notes the signal in `--note-sigterm` and exits, or keeps running with `--ignore-sigterm`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use modelfleet_contract::metrics::QUEUE_DEPTH;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    port: u16,
    #[arg(long)]
    grpc_port: Option<u16>,
    /// A file that gets a line `SIGTERM` when the signal arrives.
    #[arg(long)]
    note_sigterm: Option<PathBuf>,
    /// Keep running after SIGTERM (to prove SIGKILL follows the grace period).
    #[arg(long)]
    ignore_sigterm: bool,
    /// The `modelfleet_engine_queue_depth` this server reports on `/metrics`.
    #[arg(long, default_value_t = 0.0)]
    queue_depth: f64,
}

/// Requests answered so far, for `/metrics`.
static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn metrics(queue_depth: f64) -> String {
    let served = REQUESTS.load(std::sync::atomic::Ordering::Relaxed);
    format!(
        "# TYPE modelfleet_test_server_requests_total counter\n\
         modelfleet_test_server_requests_total {served}\n\
         # TYPE {QUEUE_DEPTH} gauge\n\
         {QUEUE_DEPTH} {queue_depth}\n"
    )
}

async fn respond(mut stream: TcpStream, queue_depth: f64) -> anyhow::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&request);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (code, body) = if path == "/metrics" {
        (200, metrics(queue_depth))
    } else if path == "/whoami" {
        match whoami().await {
            Ok(user) => (200, user),
            Err(err) => (500, format!("{err:#}")),
        }
    } else if path == "/healthz" {
        (200, "ok".to_string())
    } else if path == "/pid" {
        (200, std::process::id().to_string())
    } else if path == "/hostname" {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        (200, name.trim().to_string())
    } else if let Some(name) = path.strip_prefix("/env/") {
        match std::env::var(name) {
            Ok(value) => (200, value),
            Err(_) => (404, format!("{name} is not set")),
        }
    } else if let Some(file) = path.strip_prefix("/file") {
        match std::fs::read_to_string(file) {
            Ok(contents) => (200, contents),
            Err(err) => (404, format!("{file}: {err}")),
        }
    } else {
        (404, "not found".to_string())
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Asks the API server who this pod is, as any in-cluster client would.
async fn whoami() -> anyhow::Result<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let config = kube::Config::incluster().context("in-cluster configuration")?;
    let client = kube::Client::try_from(config).context("building a client")?;
    let reviews: kube::Api<SelfSubjectReview> = kube::Api::all(client);
    let review = reviews
        .create(
            &kube::api::PostParams::default(),
            &SelfSubjectReview::default(),
        )
        .await
        .context("creating a SelfSubjectReview")?;
    Ok(review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default())
}

async fn serve_grpc(port: u16) -> anyhow::Result<()> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .add_service(service)
        .serve(([0, 0, 0, 0], port).into())
        .await
        .context("serving gRPC health")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(("0.0.0.0", args.port))
        .await
        .with_context(|| format!("binding port {}", args.port))?;
    if let Some(port) = args.grpc_port {
        tokio::spawn(async move {
            if let Err(err) = serve_grpc(port).await {
                eprintln!("{err:#}");
                std::process::exit(1);
            }
        });
    }
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    eprintln!("serving on port {}", args.port);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted.context("accepting")?;
                let queue_depth = args.queue_depth;
                tokio::spawn(async move {
                    if let Err(err) = respond(stream, queue_depth).await {
                        eprintln!("request failed: {err:#}");
                    }
                });
            }
            _ = terminate.recv() => {
                if let Some(note) = &args.note_sigterm {
                    let mut line = std::fs::read_to_string(note).unwrap_or_default();
                    line.push_str("SIGTERM\n");
                    std::fs::write(note, line).context("noting SIGTERM")?;
                }
                eprintln!("got SIGTERM");
                if !args.ignore_sigterm {
                    return Ok(());
                }
            }
        }
    }
}
