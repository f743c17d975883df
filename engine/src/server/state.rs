//! What both APIs share: the serving phase, the model once it is loaded, the slots that
//! bound how many requests are in flight, and the metrics.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::proto::v1::generation_server::GenerationServer;

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
}

pub struct ServingState {
    served_name: String,
    phase: watch::Sender<Phase>,
    model: OnceLock<ServingModel>,
    /// One permit per request in flight: the running batch plus the waiting queue.
    slots: Arc<Semaphore>,
    capacity: usize,
    metrics: Arc<Metrics>,
    health: HealthReporter,
}

impl ServingState {
    /// A server that is loading. `capacity` is how many requests may be in flight (running
    /// or waiting) before new ones are refused with a retry hint.
    pub async fn new(
        served_name: String,
        capacity: usize,
        health: HealthReporter,
    ) -> Result<Self, prometheus::Error> {
        let metrics = Arc::new(Metrics::new(&served_name)?);
        let state = ServingState {
            served_name,
            phase: watch::channel(Phase::Loading).0,
            model: OnceLock::new(),
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
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

    /// Installs the loaded, warmed-up model and starts serving.
    pub async fn start_serving(&self, model: ServingModel) {
        if self.model.set(model).is_err() {
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

    /// Requests holding a slot.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    /// The model, when it may take requests.
    pub fn model(&self) -> Result<&ServingModel, ApiError> {
        match (self.phase(), self.model.get()) {
            (Phase::Serving, Some(model)) => Ok(model),
            (Phase::Draining, _) => Err(ApiError::Unavailable(
                "the engine is shutting down and takes no new requests; retry on another replica"
                    .into(),
            )),
            _ => Err(ApiError::Unavailable(
                "the model is still loading; retry when the engine reports ready".into(),
            )),
        }
    }

    /// The loaded model in any phase (for information requests while draining).
    pub fn loaded_model(&self) -> Option<&ServingModel> {
        self.model.get()
    }

    /// Admits a request: `build` turns it into parameters against the loaded model (it
    /// tokenises, applies the chat template); then it is validated, given a slot and queued.
    /// Every refusal is counted by outcome.
    pub fn generate(
        &self,
        build: impl FnOnce(&ServingModel) -> Result<GenerateParams, ApiError>,
    ) -> Result<Generation, ApiError> {
        let arrived = Instant::now();
        self.admit(build, arrived)
            .map_err(|error| self.refuse(error))
    }

    /// Counts a request refused before it was admitted, and hands the error back.
    pub fn refuse(&self, error: ApiError) -> ApiError {
        let outcome = match error {
            ApiError::InvalidArgument { .. } | ApiError::ModelNotFound { .. } => Outcome::Invalid,
            ApiError::Overloaded { .. } => Outcome::Rejected,
            ApiError::Unavailable(_) => Outcome::Unavailable,
            ApiError::Internal(_) => Outcome::Failed,
        };
        self.metrics.observe_end(outcome, None);
        error
    }

    fn admit(
        &self,
        build: impl FnOnce(&ServingModel) -> Result<GenerateParams, ApiError>,
        arrived: Instant,
    ) -> Result<Generation, ApiError> {
        let model = self.model()?;
        let request = validate(&model.info, build(model)?)?;
        let slot =
            Arc::clone(&self.slots)
                .try_acquire_owned()
                .map_err(|_| ApiError::Overloaded {
                    capacity: self.capacity,
                })?;
        let prompt_tokens = request.prompt_token_ids.len();
        let outputs = model
            .engine
            .generate(request)
            .map_err(|e| ApiError::from_engine(&e))?;
        self.metrics.observe_admitted(prompt_tokens);
        Ok(Generation::new(
            outputs,
            Arc::clone(&self.metrics),
            arrived,
            slot,
        ))
    }

    /// The Prometheus exposition, with the scheduler's gauges read now.
    pub fn render_metrics(&self) -> Result<(String, String), prometheus::Error> {
        if let Some(model) = self.model.get() {
            self.metrics.observe_scheduler(&model.engine.stats());
        }
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
