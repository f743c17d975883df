//! A small Prometheus HTTP API client.
//!
//! It rides on kube's HTTP stack (hyper with rustls), which speaks to any base URL, so
//! neither the operator nor the harness needs a second HTTP client.

use std::time::Duration;

use http::Request;
use kube::client::Body;

use super::answer::{Sample, parse_answer, percent_encode, sum};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request may wait for its answer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A Prometheus URL that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Prometheus URL {url:?}: {reason}")]
pub struct InvalidUrl {
    pub url: String,
    pub reason: String,
}

/// Why a request has no answer; the message names the server.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// Talks to one Prometheus server. It belongs to the tokio runtime it was made in.
#[derive(Clone)]
pub struct PrometheusClient {
    url: String,
    client: kube::Client,
}

impl std::fmt::Debug for PrometheusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusClient")
            .field("url", &self.url)
            .finish()
    }
}

impl PrometheusClient {
    /// A client for the server at `url` (`http://host:9090`, a path prefix allowed).
    pub fn new(url: &str) -> Result<Self, InvalidUrl> {
        let invalid = |reason: String| InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let uri: http::Uri = url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| invalid(format!("not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(invalid("needs http:// or https:// and a host".into()));
        }
        let mut config = kube::Config::new(uri);
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        config.write_timeout = Some(READ_TIMEOUT);
        let client = kube::Client::try_from(config)
            .map_err(|e| invalid(format!("building an HTTP client: {e}")))?;
        Ok(Self {
            url: url.to_string(),
            client,
        })
    }

    /// The server's URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every series of `promql`'s instant-query answer.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, QueryError> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}", percent_encode(promql)))
            .await?;
        parse_answer(status, &body).map_err(|e| QueryError(format!("{}: {e}", self.url)))
    }

    /// `promql`'s one value: `None` when the answer is empty, the sum of the values when
    /// there are several series.
    pub async fn query_scalar(&self, promql: &str) -> Result<Option<f64>, QueryError> {
        self.query(promql).await.map(|samples| sum(&samples))
    }

    /// GET `path` (with its query string) from the server: the status and the body.
    pub async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), QueryError> {
        let request = Request::get(path)
            .header("accept", "application/json")
            .body(Body::empty())
            .map_err(|e| QueryError(format!("building a request for {path}: {e}")))?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| QueryError(format!("{}: {e}", self.url)))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| QueryError(format!("{}: reading the answer: {e}", self.url)))?;
        Ok((status, body.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        assert!(PrometheusClient::new("prometheus:9090").is_err());
        assert!(PrometheusClient::new("ftp://host").is_err());
    }

    #[tokio::test]
    async fn an_http_url_with_a_path_prefix_makes_a_client() {
        let client = PrometheusClient::new("http://prometheus.monitoring:9090/prom/").expect("ok");
        assert_eq!(client.url(), "http://prometheus.monitoring:9090/prom/");
    }
}
