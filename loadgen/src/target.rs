//! Where requests go: an engine's gRPC `Generation` service or its OpenAI-compatible HTTP API.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use reqwest::Url;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::config::RequestSettings;
use super::error::LoadgenError;
use super::record::{Completion, Failure, TokenTimer};
use super::{grpc, http};
use modelfleet_proto::v1::generation_client::GenerationClient;

/// Which OpenAI-compatible endpoint an HTTP target streams from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpApi {
    /// `/v1/completions`: the prompt as given; chunks carry `choices[0].text`.
    Completions,
    /// `/v1/chat/completions`: the prompt as one user message; chunks carry
    /// `choices[0].delta.content`.
    ChatCompletions,
}

/// One engine to send requests to.
///
/// Parsed from `grpc://host:port`, `http://host:port` (streams `/v1/completions`), or an
/// `http(s)://host:port/v1/completions` or `/v1/chat/completions` URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Grpc {
        /// `host:port`.
        authority: String,
    },
    Http {
        /// The endpoint's full URL.
        url: String,
        api: HttpApi,
    },
}

impl Target {
    pub fn grpc(authority: impl Into<String>) -> Self {
        Target::Grpc {
            authority: authority.into(),
        }
    }

    /// The completions endpoint of an engine whose HTTP API is at `base` (`http://host:port`).
    pub fn http_completions(base: &str) -> Result<Self, LoadgenError> {
        format!("{}/v1/completions", base.trim_end_matches('/')).parse()
    }

    /// The chat completions endpoint of an engine whose HTTP API is at `base`.
    pub fn http_chat(base: &str) -> Result<Self, LoadgenError> {
        format!("{}/v1/chat/completions", base.trim_end_matches('/')).parse()
    }
}

impl FromStr for Target {
    type Err = LoadgenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| LoadgenError::Target {
            target: text.to_owned(),
            reason: reason.to_owned(),
        };
        let url = Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host"))?;
        match url.scheme() {
            "grpc" => {
                if !matches!(url.path(), "" | "/") || url.query().is_some() {
                    return Err(invalid("a gRPC target is grpc://host:port, without a path"));
                }
                let port = url
                    .port()
                    .ok_or_else(|| invalid("a gRPC target needs a port (grpc://host:50051)"))?;
                let authority = format!("{host}:{port}");
                // Checked here so that connecting later cannot fail on the address.
                Endpoint::from_shared(format!("http://{authority}"))
                    .map_err(|e| invalid(&e.to_string()))?;
                Ok(Target::Grpc { authority })
            }
            "http" | "https" => {
                let path = url.path().trim_end_matches('/');
                let (path, api) = if path.is_empty() {
                    ("/v1/completions", HttpApi::Completions)
                } else if path.ends_with("/chat/completions") {
                    (path, HttpApi::ChatCompletions)
                } else if path.ends_with("/completions") {
                    (path, HttpApi::Completions)
                } else {
                    return Err(invalid(
                        "an HTTP target is http://host:port or ends in /v1/completions or \
                         /v1/chat/completions",
                    ));
                };
                let mut url = url.clone();
                url.set_path(path);
                Ok(Target::Http {
                    url: url.to_string(),
                    api,
                })
            }
            other => Err(invalid(&format!(
                "unknown scheme `{other}`: use grpc://host:port or http://host:port"
            ))),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Grpc { authority } => write!(f, "grpc://{authority}"),
            Target::Http { url, .. } => f.write_str(url),
        }
    }
}

/// The targets of a run, replaceable while it runs: a fleet's pods come and go (scale-up,
/// rollout), and load should follow them. Cloning gives another handle to the same set.
/// Requests go round-robin over the targets current when each is sent; an empty set fails
/// requests as unreachable until targets are added.
#[derive(Debug, Clone, Default)]
pub struct TargetSet {
    current: Arc<RwLock<Arc<[Target]>>>,
}

impl TargetSet {
    pub fn new(targets: Vec<Target>) -> Self {
        Self {
            current: Arc::new(RwLock::new(targets.into())),
        }
    }

    /// From now on, requests go to these targets. Requests in flight finish where they are.
    pub fn replace(&self, targets: Vec<Target>) {
        let targets: Arc<[Target]> = targets.into();
        match self.current.write() {
            Ok(mut current) => *current = targets,
            Err(poisoned) => *poisoned.into_inner() = targets,
        }
    }

    /// The targets now.
    pub fn current(&self) -> Arc<[Target]> {
        match self.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// A target with its connection: one HTTP/2 channel per gRPC target (requests multiplex on
/// it), one pooled HTTP client shared by every HTTP target.
#[derive(Debug, Clone)]
pub(crate) enum Client {
    Grpc(GenerationClient<Channel>),
    Http {
        client: reqwest::Client,
        url: String,
        api: HttpApi,
    },
}

impl Client {
    /// Connects lazily: an engine that is not up yet fails its requests, not the run.
    /// Must be called inside a Tokio runtime.
    pub(crate) fn new(
        target: &Target,
        http_client: &reqwest::Client,
    ) -> Result<Self, LoadgenError> {
        match target {
            Target::Grpc { authority } => {
                let endpoint =
                    Endpoint::from_shared(format!("http://{authority}")).map_err(|e| {
                        LoadgenError::Target {
                            target: target.to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                Ok(Client::Grpc(GenerationClient::new(endpoint.connect_lazy())))
            }
            Target::Http { url, api } => Ok(Client::Http {
                client: http_client.clone(),
                url: url.clone(),
                api: *api,
            }),
        }
    }

    /// Sends one request and reads its stream to the end, noting token arrivals in `timer`.
    pub(crate) async fn send(
        &self,
        prompt: String,
        settings: &RequestSettings,
        timer: &mut TokenTimer,
    ) -> Result<Completion, Failure> {
        match self {
            Client::Grpc(client) => {
                grpc::generate(client.clone(), grpc::request(prompt, settings), timer).await
            }
            Client::Http { client, url, api } => {
                let body = http::request_body(*api, prompt, settings);
                http::stream(client, url, &body, timer).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Target, String> {
        text.parse::<Target>().map_err(|e| e.to_string())
    }

    #[test]
    fn grpc_targets_need_a_host_and_port() {
        assert_eq!(
            parse("grpc://10.1.2.3:50051"),
            Ok(Target::grpc("10.1.2.3:50051"))
        );
        assert_eq!(
            parse("grpc://localhost:7/"),
            Ok(Target::grpc("localhost:7"))
        );
        assert!(parse("grpc://localhost").is_err());
        assert!(parse("grpc://localhost:1/v1").is_err());
        assert_eq!(
            parse("grpc://10.1.2.3:50051").map(|t| t.to_string()),
            Ok("grpc://10.1.2.3:50051".to_owned())
        );
    }

    #[test]
    fn http_targets_default_to_completions_and_accept_chat() {
        assert_eq!(
            parse("http://127.0.0.1:8000"),
            Ok(Target::Http {
                url: "http://127.0.0.1:8000/v1/completions".into(),
                api: HttpApi::Completions
            })
        );
        assert_eq!(
            parse("http://pod:8000/v1/chat/completions"),
            Ok(Target::Http {
                url: "http://pod:8000/v1/chat/completions".into(),
                api: HttpApi::ChatCompletions
            })
        );
        assert_eq!(
            Target::http_chat("http://pod:8000/").ok(),
            parse("http://pod:8000/v1/chat/completions").ok()
        );
        assert_eq!(
            Target::http_completions("http://pod:8000").ok(),
            parse("http://pod:8000/").ok()
        );
        assert!(parse("http://pod:8000/v1/embeddings").is_err());
        assert!(parse("ftp://pod:21").is_err());
        assert!(parse("pod:8000").is_err());
    }
}
