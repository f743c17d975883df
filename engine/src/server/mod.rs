//! `modelfleet-engine serve`: the gRPC and HTTP front of an engine.
//!
//! Both APIs share one [`ServingState`]: requests take a slot first (at most
//! `max_num_seqs + max_queued_requests` in flight, then RESOURCE_EXHAUSTED / 429), are
//! tokenised off the async runtime, validated once ([`validate`]) into the engine's
//! validated request, and stream the engine's outputs ([`Generation`]) through a relay that
//! gives up on clients that stop reading ([`relay`]). Errors map to gRPC and HTTP statuses
//! in [`error`] only. The server's life is a [`Phase`]: ports open at once with health
//! NOT_SERVING while the model loads and warms up; SERVING; on shutdown NOT_SERVING again
//! while requests in flight finish; if the engine loop dies, NOT_SERVING and the process
//! exits with an error, so Kubernetes replaces the pod.

pub mod auth;
pub mod chat_template;
pub mod error;
pub mod generation;
pub mod grammar;
pub mod grpc;
pub mod http;
mod listener;
pub mod metrics;
pub mod model;
pub mod relay;
pub mod state;
pub mod tools;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::engine::{GenerationRequest, StopParams};
use crate::sampling::SamplingParams;
use modelfleet_proto::v1::generation_server::GenerationServer;

pub use auth::ApiKey;
pub use chat_template::{ChatMessage, ChatTemplate};
pub use error::ApiError;
pub use generation::{Completed, Delta, Generation};
pub use model::{ModelInfo, ServingModel};
pub use state::{Phase, ServingState};

/// How a server listens and how it treats load.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub served_name: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The engine's running batch size.
    pub max_num_seqs: usize,
    /// Requests beyond the running batch that may wait for a slot before new ones are
    /// refused with a retry hint.
    pub max_queued_requests: usize,
    /// How long requests in flight may run after shutdown begins.
    pub drain_timeout: Duration,
    /// Admitted requests tokenised (and chat-templated) at once, off the async runtime.
    pub preprocess_concurrency: usize,
    /// How long a response may wait for its client to read before the request is
    /// cancelled and its slot freed (and, on HTTP, the connection closed).
    pub write_timeout: Duration,
    /// Interval of TCP keep-alive probes and HTTP/2 pings; a peer that does not answer a
    /// ping within the same time is disconnected.
    pub keepalive: Duration,
    /// When set, generation and model requests must carry this key.
    pub api_key: Option<ApiKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("loading the model failed: {0}")]
    Load(String),
    #[error("the warm-up request failed: {0}")]
    WarmUp(String),
    #[error("setting up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("the {api} server failed: {reason}")]
    Server { api: &'static str, reason: String },
    #[error("the engine loop died ({0}); exiting so the pod is replaced")]
    EngineDied(String),
}

/// Serves until `shutdown` resolves, then drains.
///
/// `load` runs on a blocking thread after the ports are open, so probes see NOT_SERVING
/// rather than a refused connection while weights load. Ready is reported only after a
/// warm-up request has run through the engine.
pub async fn run<L>(
    config: ServerConfig,
    load: L,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError>
where
    L: FnOnce() -> Result<ServingModel, String> + Send + 'static,
{
    let grpc_listener = bind(config.grpc_addr).await?;
    let http_listener = bind(config.http_addr).await?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let state = Arc::new(ServingState::new(&config, health).await?);
    tracing::info!(
        grpc = %config.grpc_addr,
        http = %config.http_addr,
        "listening; loading the model"
    );

    let stop_servers = CancellationToken::new();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(modelfleet_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Server {
            api: "gRPC",
            reason: format!("building reflection: {e}"),
        })?;
    let generation = GenerationServer::new(grpc::GenerationService::new(Arc::clone(&state)));
    let generation = tonic::service::interceptor::InterceptedService::new(
        generation,
        auth::grpc_check(config.api_key.clone()),
    );
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keepalive))
        .http2_keepalive_timeout(Some(config.keepalive))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(generation)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc_listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(config.keepalive)),
            stop_servers.clone().cancelled_owned(),
        );
    let grpc = tokio::spawn(grpc);
    let http_listener =
        listener::GuardedListener::new(http_listener, config.write_timeout, config.keepalive);
    let http = axum::serve(
        http_listener,
        http::router(Arc::clone(&state), config.api_key.clone()),
    )
    .with_graceful_shutdown(stop_servers.clone().cancelled_owned());
    let http = tokio::spawn(async move { http.await });

    tokio::pin!(shutdown);
    let loading = tokio::task::spawn_blocking(load);
    let loaded = tokio::select! {
        loaded = loading => Some(loaded),
        () = &mut shutdown => None,
    };
    let outcome = match loaded {
        None => {
            tracing::info!("shutdown requested while loading");
            Ok(())
        }
        Some(loaded) => match loaded {
            Ok(Ok(model)) => serve_until_shutdown(&state, model, &config, shutdown).await,
            Ok(Err(reason)) => Err(ServeError::Load(reason)),
            Err(join) => Err(ServeError::Load(format!(
                "the loading thread failed: {join}"
            ))),
        },
    };

    stop_servers.cancel();
    // Connections still open after the drain (keep-alive, a stream cut at the deadline)
    // get a moment to close, then the process goes regardless.
    let servers = async {
        let grpc = grpc.await;
        let http = http.await;
        (grpc, http)
    };
    match tokio::time::timeout(Duration::from_secs(5), servers).await {
        Ok((grpc, http)) => {
            if let Ok(Err(error)) = grpc {
                tracing::warn!(%error, "gRPC server ended with an error");
            }
            if let Ok(Err(error)) = http {
                tracing::warn!(%error, "HTTP server ended with an error");
            }
        }
        Err(_) => tracing::warn!("servers did not close within 5s; exiting anyway"),
    }
    if let Some(model) = state.loaded_model() {
        model.engine.shutdown();
    }
    outcome
}

async fn serve_until_shutdown(
    state: &ServingState,
    model: ServingModel,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    warm_up(&model).await?;
    state.start_serving(model).await;
    tracing::info!("ready");
    let engine = match state.loaded_model() {
        Some(model) => model.engine.clone(),
        None => return Err(ServeError::Load("the model was not installed".into())),
    };
    tokio::select! {
        () = shutdown => {}
        reason = engine.died() => {
            // Streams in flight have ended already; nothing will ever be served again.
            state.fail().await;
            tracing::error!(%reason, "the engine loop died; exiting so the pod is replaced");
            return Err(ServeError::EngineDied(reason));
        }
    }
    tracing::info!(
        in_flight = state.in_flight(),
        deadline_seconds = config.drain_timeout.as_secs_f64(),
        "draining"
    );
    let left = state.drain(config.drain_timeout).await;
    if left > 0 {
        tracing::warn!(
            left,
            "drain deadline passed; ending the requests still in flight"
        );
        if let Some(model) = state.loaded_model() {
            // Their streams end with UNAVAILABLE so clients retry elsewhere.
            model.engine.shutdown();
        }
    } else {
        tracing::info!("drained");
    }
    Ok(())
}

/// One short request through the whole engine, so the first client does not pay for
/// first-touch costs (page faults on weights, thread-pool start-up).
async fn warm_up(model: &ServingModel) -> Result<(), ServeError> {
    let token = model.info.eos_token_ids.first().copied().unwrap_or(0);
    let request = model.info.limits().validate(GenerationRequest {
        prompt_token_ids: vec![token; 4],
        sampling: SamplingParams::greedy(),
        stop: StopParams {
            max_tokens: 2,
            ignore_eos: true,
            ..StopParams::default()
        },
    });
    let request = request.map_err(|e| ServeError::WarmUp(e.to_string()))?;
    let mut outputs = model
        .engine
        .generate(request)
        .map_err(|e| ServeError::WarmUp(e.to_string()))?;
    while let Some(output) = outputs.next().await {
        let output = output.map_err(|e| ServeError::WarmUp(e.to_string()))?;
        if output.last {
            return Ok(());
        }
    }
    Err(ServeError::WarmUp("the engine stopped".into()))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}
