//! Polling helpers for tests: wait until a condition over the cluster holds.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every `interval` until it returns `Some`, or panics after `timeout` naming
/// `what`. For tests: the panic message is the test's failure message.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let interval = Duration::from_millis(250);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(interval).await;
    }
}
