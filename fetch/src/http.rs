//! The HTTP client under `https://` and `hf://`: ranged GETs that resume, and what response
//! headers say about the file (size, sha256 ETag).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, RANGE};

use super::download::Opened;
use super::error::FileFailure;
use super::plan::sha256_from_etag;

/// Shared by every file of one fetch (one connection pool).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    /// Sent as a bearer token (the hub's `HF_TOKEN`). reqwest drops it on redirects to
    /// another host, so it does not leak to the hub's storage.
    token: Option<String>,
    /// Added to an access-denied failure: what the user can do about it.
    denied_hint: &'static str,
}

impl HttpClient {
    pub fn new(token: Option<String>, denied_hint: &'static str) -> Result<Self, String> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("modelfleet-engine/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // A stalled transfer fails and resumes rather than hanging the init container.
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| error_chain(&e))?;
        Ok(Self {
            client,
            token,
            denied_hint,
        })
    }

    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.client.get(url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Starts a GET of `url` from byte `offset`. A server that ignores the range answers with
    /// the whole file; [`Opened::start`] says which happened.
    pub async fn open(&self, url: &str, offset: u64) -> Result<Opened, FileFailure> {
        let mut request = self.get(url);
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        let response = request
            .send()
            .await
            .map_err(|e| FileFailure::Transfer(error_chain(&e)))?;
        let status = response.status();
        let headers = response.headers();
        let (start, total) = match status {
            StatusCode::OK => (0, response.content_length()),
            StatusCode::PARTIAL_CONTENT => headers
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    FileFailure::Transfer(format!("206 without a usable Content-Range from {url}"))
                })?,
            _ => return Err(status_failure(status, url, self.denied_hint)),
        };
        let sha256 = sha256_header(headers);
        let body = response
            .bytes_stream()
            .map_err(|e| FileFailure::Transfer(error_chain(&e)))
            .boxed();
        Ok(Opened {
            start,
            total,
            sha256,
            body,
        })
    }
}

/// The failure an unsuccessful status means for a file.
pub fn status_failure(status: StatusCode, url: &str, denied_hint: &'static str) -> FileFailure {
    match status {
        StatusCode::NOT_FOUND => FileFailure::NotFound {
            location: url.to_string(),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => FileFailure::Denied {
            status: status.as_u16(),
            url: url.to_string(),
            hint: denied_hint,
        },
        _ => FileFailure::HttpStatus {
            status: status.as_u16(),
            url: url.to_string(),
        },
    }
}

/// The sha256 the hub gives for LFS files: `X-Linked-Etag` (on the resolve response before
/// a redirect) or `ETag`.
fn sha256_header(headers: &HeaderMap) -> Option<String> {
    ["x-linked-etag", ETAG.as_str()]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .find_map(sha256_from_etag)
}

/// `bytes 100-199/1000` → (100, Some(1000)); `bytes 100-199/*` → (100, None).
pub fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// An error and its causes on one line (reqwest's own message is often just the outermost).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// rustls needs one process-wide crypto provider; the workspace builds ring. A second call
/// (or a provider installed by the embedding program) is fine.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes */1000"), None);
    }

    #[test]
    fn statuses_map_to_failures_that_say_what_to_do() {
        let url = "http://hub/org/m/resolve/main/x";
        assert!(matches!(
            status_failure(StatusCode::NOT_FOUND, url, ""),
            FileFailure::NotFound { .. }
        ));
        assert!(
            status_failure(StatusCode::UNAUTHORIZED, url, " (set HF_TOKEN)")
                .to_string()
                .contains("HF_TOKEN")
        );
        assert!(status_failure(StatusCode::BAD_GATEWAY, url, "").is_retriable());
    }
}
