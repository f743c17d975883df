//! A small Prometheus HTTP API client: instant queries that return one number.
//!
//! It rides on kube's HTTP stack (hyper with rustls), which speaks to any base URL, so the
//! operator needs no second HTTP client.

use std::time::Duration;

use axum::http::{Request, StatusCode};
use kube::client::Body;
use serde::Deserialize;

use crate::{Error, Result};

/// How long one query may take, connect included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Talks to one Prometheus server.
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

/// Why a query has no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

impl PrometheusClient {
    /// A client for the server at `url` (`http://host:9090`, a path prefix allowed).
    pub fn new(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::Prometheus {
            url: url.to_string(),
            reason,
        };
        let uri: axum::http::Uri = url
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

    /// Runs `query` and returns its one value: `None` when the result is empty, the sum of
    /// the values when there are several series.
    pub async fn query_scalar(&self, query: &str) -> std::result::Result<Option<f64>, QueryError> {
        let request = Request::get(format!("/api/v1/query?query={}", percent_encode(query)))
            .header("accept", "application/json")
            .body(Body::empty())
            .map_err(|e| QueryError(format!("building the request: {e}")))?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| QueryError(format!("{}: {e}", self.url)))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| QueryError(format!("{}: reading the answer: {e}", self.url)))?;
        parse_answer(status, &body).map_err(|e| QueryError(format!("{}: {e}", self.url)))
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Series {
    /// `[unix seconds, "value"]`.
    value: (f64, String),
}

/// The value of an instant-query answer (vector or scalar).
fn parse_answer(status: StatusCode, body: &[u8]) -> std::result::Result<Option<f64>, String> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        format!("HTTP {status}, not a Prometheus API answer ({e}): {text}")
    })?;
    if answer.status != "success" || !status.is_success() {
        return Err(format!(
            "HTTP {status}: {}",
            answer.error.unwrap_or_else(|| answer.status.clone())
        ));
    }
    let data = answer.data.ok_or("the answer has no data")?;
    let number = |text: &str| {
        text.parse::<f64>()
            .map_err(|e| format!("value {text:?} is not a number: {e}"))
    };
    match data.result_type.as_str() {
        "vector" => {
            let series: Vec<Series> =
                serde_json::from_value(data.result).map_err(|e| format!("bad vector: {e}"))?;
            if series.is_empty() {
                return Ok(None);
            }
            let mut total = 0.0;
            for s in &series {
                total += number(&s.value.1)?;
            }
            Ok(Some(total))
        }
        "scalar" => {
            let (_, value): (f64, String) =
                serde_json::from_value(data.result).map_err(|e| format!("bad scalar: {e}"))?;
            number(&value).map(Some)
        }
        other => Err(format!(
            "a {other} answer where an instant vector was expected"
        )),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_answer_sums_its_series() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1700000000.1,"12"]},{"metric":{"a":"b"},"value":[1700000000.1,"0.5"]}]}}"#;
        assert_eq!(parse_answer(StatusCode::OK, body), Ok(Some(12.5)));
    }

    #[test]
    fn an_empty_vector_is_no_value() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_answer(StatusCode::OK, body), Ok(None));
    }

    #[test]
    fn an_error_answer_carries_prometheus_message() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let err = parse_answer(StatusCode::BAD_REQUEST, body).expect_err("an error");
        assert!(err.contains("parse error at char 4"), "{err}");
        assert!(err.contains("400"), "{err}");
    }

    #[test]
    fn something_else_than_prometheus_is_an_error() {
        let err = parse_answer(StatusCode::OK, b"<html>login</html>").expect_err("not JSON");
        assert!(err.contains("not a Prometheus API answer"), "{err}");
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            percent_encode(r#"sum(x{a="b c"}[1m])"#),
            "sum%28x%7Ba%3D%22b%20c%22%7D%5B1m%5D%29"
        );
    }

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        assert!(PrometheusClient::new("prometheus:9090").is_err());
        assert!(PrometheusClient::new("ftp://host").is_err());
    }
}
