//! The engine loop: requests in, one step at a time, outputs out.
//!
//! [`Engine`] is the synchronous core: [`Engine::step`] asks the scheduler for a plan, has
//! the backend execute it, samples a token for every sequence that reached the end of its
//! known tokens, and turns those tokens into [`RequestOutput`]s (text deltas, finish
//! reasons, usage). [`EngineHandle`] runs that loop on a thread of its own for servers:
//! add a request, get a stream of its outputs; dropping the stream aborts the request.

mod error;
mod fault;
mod handle;
mod request;
mod stop;
mod validation;

use std::collections::HashMap;
use std::sync::Arc;

pub use error::EngineError;
pub use fault::{FaultyBackend, InjectedFault};
pub use handle::{EngineHandle, LoopState, MAX_CONSECUTIVE_FAILED_STEPS, OutputStream};
pub use request::{
    FinishReason, GenerationRequest, MAX_STOP_STRINGS, RequestId, RequestOutput, StopParams, Usage,
};
pub use stop::{OutputText, TokenOutcome};
pub use validation::{InvalidRequest, RequestLimits, ValidatedRequest};

use crate::backend::Backend;
use crate::detokenizer::Decode;
use crate::kv_cache::KvCacheManager;
use crate::sampling::Sampler;
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerStats, StepPlan};

/// How the engine batches; the KV cache's shape comes from the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    pub scheduler: SchedulerConfig,
    pub enable_prefix_caching: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            scheduler: SchedulerConfig::default(),
            enable_prefix_caching: true,
        }
    }
}

/// What the engine knows about the model besides the backend.
#[derive(Clone)]
pub struct ModelSpec {
    /// Renders generated tokens as text.
    pub decoder: Arc<dyn Decode + Send + Sync>,
    pub eos_token_ids: Vec<u32>,
    pub vocab_size: usize,
}

struct RequestState {
    sampler: Sampler,
    output: OutputText,
}

/// The synchronous engine core.
pub struct Engine {
    backend: Box<dyn Backend>,
    model: ModelSpec,
    scheduler: Scheduler,
    requests: HashMap<RequestId, RequestState>,
}

impl Engine {
    pub fn new(backend: Box<dyn Backend>, model: ModelSpec, config: EngineConfig) -> Self {
        let shape = backend.kv_cache_shape();
        let kv = KvCacheManager::new(
            shape.num_blocks,
            shape.block_size,
            config.enable_prefix_caching,
        );
        Engine {
            backend,
            model,
            scheduler: Scheduler::new(config.scheduler, kv),
            requests: HashMap::new(),
        }
    }

    /// What a request must fit: the vocabulary and the KV cache (this engine has no notion
    /// of a context length beyond what its cache holds; servers narrow `max_model_len`).
    pub fn limits(&self) -> RequestLimits {
        let kv_cache_tokens = self.scheduler.kv_cache().capacity_tokens();
        RequestLimits {
            vocab_size: self.model.vocab_size,
            max_model_len: kv_cache_tokens,
            kv_cache_tokens,
        }
    }

    /// Validates a request against [`Engine::limits`] and queues it under the caller's id.
    pub fn add_request(
        &mut self,
        id: RequestId,
        request: GenerationRequest,
    ) -> Result<(), EngineError> {
        let request = self.limits().validate(request)?;
        self.add(id, request)
    }

    /// Queues a validated request under the caller's id.
    pub fn add(&mut self, id: RequestId, request: ValidatedRequest) -> Result<(), EngineError> {
        if self.requests.contains_key(&id) {
            return Err(EngineError::DuplicateRequest(id));
        }
        let request = request.into_inner();
        let sampler = Sampler::new(request.sampling);
        let output = OutputText::new(&request.prompt_token_ids, request.stop.clone());
        self.scheduler
            .add(id, request.prompt_token_ids, request.stop.max_tokens)?;
        self.requests.insert(id, RequestState { sampler, output });
        Ok(())
    }

    /// Cancels a request and frees its KV blocks at once. Returns whether it existed.
    pub fn abort(&mut self, id: RequestId) -> Result<bool, EngineError> {
        let existed = self.requests.remove(&id).is_some();
        self.scheduler.remove(id)?;
        Ok(existed)
    }

    pub fn has_unfinished(&self) -> bool {
        self.scheduler.has_unfinished()
    }

    pub fn stats(&self) -> SchedulerStats {
        self.scheduler.stats()
    }

    /// Runs one step and returns one output per request that got a token.
    pub fn step(&mut self) -> Result<Vec<RequestOutput>, EngineError> {
        let plan = self.scheduler.schedule()?;
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        if !plan.copies.is_empty() {
            self.backend.copy_blocks(&plan.copies)?;
        }
        let sampled = match self.device_picks(&plan) {
            Some((ids, picks)) => {
                let tokens = self.backend.forward_picking(&plan.batch, &picks)?;
                self.record_picked(ids, tokens)?
            }
            None => {
                let logits = self.backend.forward(&plan.batch)?;
                self.sample(&plan, &logits)?
            }
        };
        let tokens: Vec<(RequestId, u32)> = sampled.iter().map(|(id, s)| (*id, s.token)).collect();
        self.scheduler.complete_step(&plan, &tokens)?;
        self.finish_outputs(sampled)
    }

    /// When every sampling sequence's next token can be picked where the logits are, the
    /// sequences and their picks (drawing each sampled pick's number from its request's
    /// stream); else `None`, and nothing is drawn.
    fn device_picks(
        &mut self,
        plan: &StepPlan,
    ) -> Option<(Vec<RequestId>, Vec<crate::backend::kernels::TokenPick>)> {
        let ids: Vec<RequestId> = plan.sampling_sequences().collect();
        let all = !ids.is_empty()
            && ids.iter().all(|id| {
                self.requests
                    .get(id)
                    .is_some_and(|s| s.sampler.can_pick_on_device())
            });
        if !all {
            return None;
        }
        let mut picks = Vec::with_capacity(ids.len());
        for id in &ids {
            picks.push(self.requests.get_mut(id)?.sampler.device_pick());
        }
        Some((ids, picks))
    }

    fn record_picked(
        &mut self,
        ids: Vec<RequestId>,
        tokens: Vec<u32>,
    ) -> Result<Vec<(RequestId, crate::sampling::SampledToken)>, EngineError> {
        if tokens.len() != ids.len() {
            return Err(EngineError::LogitsMismatch {
                expected: ids.len(),
                got: tokens.len(),
            });
        }
        let mut sampled = Vec::with_capacity(ids.len());
        for (id, token) in ids.into_iter().zip(tokens) {
            let state = self
                .requests
                .get_mut(&id)
                .ok_or(EngineError::UnknownRequest(id))?;
            state.sampler.record(token);
            sampled.push((
                id,
                crate::sampling::SampledToken {
                    token,
                    logprobs: None,
                },
            ));
        }
        Ok(sampled)
    }

    /// Picks a token for every sampling sequence from its row of logits.
    fn sample(
        &mut self,
        plan: &StepPlan,
        logits: &crate::backend::Logits,
    ) -> Result<Vec<(RequestId, crate::sampling::SampledToken)>, EngineError> {
        let ids: Vec<RequestId> = plan.sampling_sequences().collect();
        if logits.num_rows() != ids.len() {
            return Err(EngineError::LogitsMismatch {
                expected: ids.len(),
                got: logits.num_rows(),
            });
        }
        let mut sampled = Vec::with_capacity(ids.len());
        for (row, id) in ids.into_iter().enumerate() {
            let (Some(seq), Some(state)) =
                (self.scheduler.sequence(id), self.requests.get_mut(&id))
            else {
                // Requests and sequences are added and removed together.
                return Err(EngineError::UnknownRequest(id));
            };
            let token = state.sampler.sample(
                logits.row(row),
                seq.prompt_token_ids(),
                seq.output_token_ids(),
            );
            sampled.push((id, token));
        }
        Ok(sampled)
    }

    /// Detokenises the new tokens, applies stop conditions and retires finished requests.
    fn finish_outputs(
        &mut self,
        sampled: Vec<(RequestId, crate::sampling::SampledToken)>,
    ) -> Result<Vec<RequestOutput>, EngineError> {
        let mut outputs = Vec::with_capacity(sampled.len());
        for (id, token) in sampled {
            let Some(state) = self.requests.get_mut(&id) else {
                continue;
            };
            let outcome = state.output.push(
                self.model.decoder.as_ref(),
                token.token,
                &self.model.eos_token_ids,
            )?;
            let usage = self
                .scheduler
                .sequence(id)
                .map_or_else(Usage::default, |seq| Usage {
                    prompt_tokens: seq.prompt_token_ids().len(),
                    completion_tokens: seq.output_token_ids().len(),
                    cached_prompt_tokens: seq.num_cached_prompt_tokens(),
                });
            if outcome.finish.is_some() {
                self.requests.remove(&id);
                self.scheduler.remove(id)?;
            }
            outputs.push(RequestOutput {
                request_id: id,
                token_id: token.token,
                text: outcome.text,
                logprobs: token.logprobs,
                finish_reason: outcome.finish,
                usage,
            });
        }
        Ok(outputs)
    }
}
