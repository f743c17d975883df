//! What both APIs share: the serving phase, the model once it is loaded, the slots that
//! bound how many requests are in flight, and the metrics.
//!
//! A request is admitted before any work is done on it: it takes a slot first (or is
//! refused at once with a retry hint), and only then is it tokenised and templated, on the
//! blocking pool and at most `preprocess_concurrency` at a time, so large prompts neither
//! stall the async runtime (health checks included) nor get past the slot limit.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use modelfleet_proto::v1::generation_server::GenerationServer;

use super::ServerConfig;
use super::error::ApiError;
use super::generation::Generation;
use super::grpc::GenerationService;
use super::metrics::{Metrics, Outcome};
use super::model::ServingModel;
use super::validate::{GenerateParams, validate};

/// Where a server is in its life. It only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Weights are loading or warming up: health is NOT_SERVING, requests are refused.
    Loading,
    Serving,
    /// SIGTERM arrived: health is NOT_SERVING, new requests are refused, requests in flight
    /// run to their end.
    Draining,
    /// The engine loop died: nothing can be served any more and the process is on its way
    /// out, so Kubernetes replaces the pod.
    Failed,
}

pub struct ServingState {
    served_name: String,
    phase: watch::Sender<Phase>,
    model: OnceLock<Arc<ServingModel>>,
    /// One permit per request in flight: the running batch plus the waiting queue.
    slots: Arc<Semaphore>,
    capacity: usize,
    /// Tokenising and templating admitted requests, at most this many at once, off the
    /// async runtime.
    preprocessing: Arc<Semaphore>,
    /// How long a streaming response may wait for its client to read.
    write_timeout: Duration,
    metrics: Arc<Metrics>,
    health: HealthReporter,
}

/// A request that took a slot; it holds the slot until it is dropped or becomes a
/// [`Generation`].
struct Admission {
    model: Arc<ServingModel>,
    slot: OwnedSemaphorePermit,
}

impl ServingState {
    /// A server that is loading. At most `max_num_seqs + max_queued_requests` requests may
    /// be in flight (running or waiting) before new ones are refused with a retry hint.
    pub async fn new(
        config: &ServerConfig,
        health: HealthReporter,
    ) -> Result<Self, prometheus::Error> {
        let metrics = Arc::new(Metrics::new(&config.served_name)?);
        let capacity = config.max_num_seqs + config.max_queued_requests;
        let state = ServingState {
            served_name: config.served_name.clone(),
            phase: watch::channel(Phase::Loading).0,
            model: OnceLock::new(),
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            preprocessing: Arc::new(Semaphore::new(config.preprocess_concurrency.max(1))),
            write_timeout: config.write_timeout,
            metrics,
            health,
        };
        state.report_health(Phase::Loading).await;
        Ok(state)
    }

    pub fn served_name(&self) -> &str {
        &self.served_name
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// Installs the loaded, warmed-up model and starts serving.
    pub async fn start_serving(&self, model: ServingModel) {
        if self.model.set(Arc::new(model)).is_err() {
            tracing::warn!("a model was already installed; keeping the first");
        }
        self.advance(Phase::Serving).await;
    }

    /// Stops admitting requests and waits up to `deadline` for those in flight to finish.
    /// Returns how many were still running when it gave up.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.advance(Phase::Draining).await;
        let until = Instant::now() + deadline;
        while self.in_flight() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.in_flight()
    }

    /// The engine loop died: report NOT_SERVING and refuse everything from now on.
    pub async fn fail(&self) {
        self.advance(Phase::Failed).await;
    }

    /// Requests holding a slot.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    /// The model, when it may take requests.
    pub fn model(&self) -> Result<&ServingModel, ApiError> {
        self.serving_model().map(|model| &**model)
    }

    fn serving_model(&self) -> Result<&Arc<ServingModel>, ApiError> {
        match (self.phase(), self.model.get()) {
            (Phase::Serving, Some(model)) => Ok(model),
            (Phase::Draining, _) => Err(ApiError::Unavailable(
                "the engine is shutting down and takes no new requests; retry on another replica"
                    .into(),
            )),
            (Phase::Failed, _) => Err(ApiError::Unavailable(
                "the engine failed and is restarting; retry on another replica".into(),
            )),
            _ => Err(ApiError::Unavailable(
                "the model is still loading; retry when the engine reports ready".into(),
            )),
        }
    }

    /// The loaded model in any phase (for information requests while draining).
    pub fn loaded_model(&self) -> Option<&ServingModel> {
        self.model.get().map(|model| &**model)
    }

    /// A handle on the loaded model that a response may keep (to render tokens as text).
    pub fn shared_model(&self) -> Option<Arc<ServingModel>> {
        self.model.get().cloned()
    }

    /// Admits a generation request: a slot first, then `prepare` turns it into parameters
    /// against the loaded model (it tokenises, applies the chat template) off the runtime,
    /// then it is validated and queued. Every refusal is counted by outcome.
    pub async fn generate<F>(&self, prepare: F) -> Result<Generation, ApiError>
    where
        F: FnOnce(&ServingModel) -> Result<GenerateParams, ApiError> + Send + 'static,
    {
        let arrived = Instant::now();
        let admitted = async {
            let admission = self.admit(self.serving_model()?)?;
            let params = self.off_runtime(&admission.model, prepare).await?;
            let request = validate(&admission.model.info, params)?;
            let prompt_tokens = request.prompt_len();
            let prompt_token_ids = request.request().prompt_token_ids.clone();
            self.metrics.observe_features(&request.request().sampling);
            let outputs = admission
                .model
                .engine
                .generate(request)
                .map_err(|e| ApiError::from_engine(&e))?;
            self.metrics.observe_admitted(prompt_tokens);
            Ok(Generation::new(
                outputs,
                Arc::clone(&self.metrics),
                arrived,
                admission.slot,
                prompt_token_ids,
            ))
        };
        admitted.await.map_err(|error| self.refuse(error))
    }

    /// Tokenises `text` for the `Tokenize` RPC, admitted like a generation (a slot, then the
    /// work off the runtime). Answered while draining too, as long as the model is loaded.
    pub async fn tokenize(&self, text: String) -> Result<Vec<u32>, ApiError> {
        let model = match (self.phase(), self.model.get()) {
            (Phase::Serving | Phase::Draining, Some(model)) => model,
            _ => return Err(self.serving_model().err().unwrap_or_else(loading)),
        };
        let admission = self.admit(model)?;
        self.off_runtime(&admission.model, move |model| model.tokenize(&text))
            .await
    }

    /// Counts a request refused before it was admitted, and hands the error back.
    pub fn refuse(&self, error: ApiError) -> ApiError {
        let outcome = match error {
            ApiError::InvalidArgument { .. }
            | ApiError::ModelNotFound { .. }
            | ApiError::Unauthenticated => Outcome::Invalid,
            ApiError::Overloaded { .. } => Outcome::Rejected,
            ApiError::Unavailable(_) => Outcome::Unavailable,
            ApiError::Internal(_) => Outcome::Failed,
        };
        self.metrics.observe_end(outcome, None);
        error
    }

    /// A slot for a request to `model`, or the retry hint if every one is taken.
    fn admit(&self, model: &Arc<ServingModel>) -> Result<Admission, ApiError> {
        let slot =
            Arc::clone(&self.slots)
                .try_acquire_owned()
                .map_err(|_| ApiError::Overloaded {
                    capacity: self.capacity,
                })?;
        Ok(Admission {
            model: Arc::clone(model),
            slot,
        })
    }

    /// Runs `work` on the blocking pool once one of the preprocessing permits is free. The
    /// permit goes with the work, so a client that gives up meanwhile does not let more run
    /// at once than the bound.
    async fn off_runtime<T, F>(&self, model: &Arc<ServingModel>, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&ServingModel) -> Result<T, ApiError> + Send + 'static,
    {
        let permit = Arc::clone(&self.preprocessing)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("the tokenising pool is closed".into()))?;
        let model = Arc::clone(model);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&model)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("preparing the request failed: {e}")))?
    }

    /// The Prometheus exposition, with the scheduler's gauges read now.
    pub fn render_metrics(&self) -> Result<(String, String), prometheus::Error> {
        if let Some(model) = self.model.get() {
            self.metrics.observe_scheduler(&model.engine.stats());
        }
        self.metrics.observe_slots_in_use(self.in_flight());
        self.metrics.encode()
    }

    async fn advance(&self, phase: Phase) {
        let moved = self.phase.send_if_modified(|current| {
            let forward = phase > *current;
            if forward {
                *current = phase;
            }
            forward
        });
        if moved {
            tracing::info!(?phase, "serving phase changed");
            self.report_health(phase).await;
        }
    }

    /// Kubernetes' gRPC probes ask for the whole server (""); clients may ask for the
    /// service by name. Both follow the phase.
    async fn report_health(&self, phase: Phase) {
        let status = if phase == Phase::Serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
        match status {
            ServingStatus::Serving => {
                self.health
                    .set_serving::<GenerationServer<GenerationService>>()
                    .await;
            }
            _ => {
                self.health
                    .set_not_serving::<GenerationServer<GenerationService>>()
                    .await;
            }
        }
    }
}

fn loading() -> ApiError {
    ApiError::Unavailable("the model is still loading".into())
}
