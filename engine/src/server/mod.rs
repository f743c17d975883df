//! `modelfleet-engine serve`: the gRPC and HTTP front of an engine.
//!
//! Both APIs share one [`ServingState`]: requests are validated at the edge
//! ([`validate`]), take a slot (at most `max_num_seqs + max_queued_requests` in flight, then
//! RESOURCE_EXHAUSTED / 429), and stream the engine's outputs ([`Generation`]). Errors map
//! to gRPC and HTTP statuses in [`error`] only. The server's life is a [`Phase`]: ports
//! open at once with health NOT_SERVING while the model loads and warms up; SERVING; on
//! shutdown NOT_SERVING again while requests in flight finish.

pub mod chat_template;
pub mod error;
pub mod generation;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod model;
pub mod state;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::engine::{GenerationRequest, StopParams};
use crate::proto::v1::generation_server::GenerationServer;
use crate::sampling::SamplingParams;

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
    let capacity = config.max_num_seqs + config.max_queued_requests;
    let state = Arc::new(ServingState::new(config.served_name.clone(), capacity, health).await?);
    tracing::info!(
        grpc = %config.grpc_addr,
        http = %config.http_addr,
        "listening; loading the model"
    );

    let stop_servers = CancellationToken::new();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Server {
            api: "gRPC",
            reason: format!("building reflection: {e}"),
        })?;
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(GenerationServer::new(grpc::GenerationService::new(
            Arc::clone(&state),
        )))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(grpc_listener),
            stop_servers.clone().cancelled_owned(),
        );
    let grpc = tokio::spawn(grpc);
    let http = axum::serve(http_listener, http::router(Arc::clone(&state)))
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
    shutdown.await;
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
    let request = GenerationRequest {
        prompt_token_ids: vec![token; 4],
        sampling: SamplingParams::greedy(),
        stop: StopParams {
            max_tokens: 2,
            ignore_eos: true,
            ..StopParams::default()
        },
    };
    let mut outputs = model
        .engine
        .generate(request)
        .map_err(|e| ServeError::WarmUp(e.to_string()))?;
    while let Some(output) = outputs.next().await {
        let output = output.map_err(|e| ServeError::WarmUp(e.to_string()))?;
        if output.finish_reason.is_some() {
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
