//! Stand-ins for engines' `/metrics`, for tests and benchmarks of what reads the queue depth
//! (the autoscaler through a real Prometheus) without running a model.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use modelfleet_contract::metrics::QUEUE_DEPTH;

/// Serves `modelfleet_engine_queue_depth` at the value in `depth` (hundredths) on any path,
/// the way an engine's `/metrics` would; returns its `host:port`. Runs until the runtime ends.
pub async fn serve_queue_depth(depth: Arc<AtomicU64>) -> String {
    serve_exposition(move || {
        let value = depth.load(Ordering::SeqCst) as f64 / 100.0;
        format!("# TYPE {QUEUE_DEPTH} gauge\n{QUEUE_DEPTH} {value}\n")
    })
    .await
}

/// Serves the Prometheus text exposition `body()` makes, anew for every scrape, on any path;
/// returns its `host:port`. Runs until the runtime ends.
pub async fn serve_exposition(body: impl Fn() -> String + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let body = Arc::new(body);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = body();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}
