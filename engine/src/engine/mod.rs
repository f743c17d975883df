//! The engine loop: requests in, one step at a time, outputs out.
//!
//! [`Engine`] is the synchronous core: [`Engine::step`] asks the scheduler for a plan, has
//! the backend execute it, samples a token for every sequence that reached the end of its
//! known tokens, and turns those tokens into [`RequestOutput`]s (text deltas, finish
//! reasons, usage). [`EngineHandle`] runs that loop on a thread of its own for servers:
//! add a request, get a stream of its outputs; dropping the stream aborts the request.
//!
//! A request is one sequence per choice (`n`): the first is added as the request arrives,
//! the others are forked from it when it samples its first token, sharing its prompt's
//! KV blocks. A request that asked for its prompt's log-probabilities has the logits of
//! every prompt token computed (see `Scheduler::add_scoring_prompt`).

mod choices;
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
use crate::kv_cache::{KvCacheManager, SequenceId};
use crate::sampling::{Grammar, PositionLogprobs, SampledToken, Sampler, position_logprobs};
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerStats, StepPlan};
use choices::{Choices, ForkIds};

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

/// One choice of a request: one sequence.
struct SequenceState {
    request: RequestId,
    index: u32,
    sampler: Sampler,
    output: OutputText,
    /// The prompt's log-probabilities as the scored prompt is computed, delivered with the
    /// first output.
    prompt_logprobs: Option<Vec<Option<PositionLogprobs>>>,
    /// The grammar the output follows (structured output).
    grammar: Option<Grammar>,
}

/// The synchronous engine core.
pub struct Engine {
    backend: Box<dyn Backend>,
    model: ModelSpec,
    scheduler: Scheduler,
    sequences: HashMap<SequenceId, SequenceState>,
    requests: HashMap<RequestId, Choices>,
    fork_ids: ForkIds,
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
            sequences: HashMap::new(),
            requests: HashMap::new(),
            fork_ids: ForkIds::default(),
        }
    }

    /// What a request must fit: the vocabulary and the KV cache (this engine has no notion
    /// of a context length beyond what its cache holds; servers narrow `max_model_len`).
    pub fn limits(&self) -> RequestLimits {
        let kv = self.scheduler.kv_cache();
        let kv_cache_tokens = kv.capacity_tokens();
        RequestLimits {
            vocab_size: self.model.vocab_size,
            max_model_len: kv_cache_tokens,
            kv_cache_tokens,
            block_size: kv.block_size(),
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
        let mut request = request.into_inner();
        let grammar = request.sampling.grammar.take().map(|g| g.start());
        let n = request.sampling.n;
        let prompt_logprobs = request
            .sampling
            .prompt_logprobs
            .map(|_| vec![None; request.prompt_token_ids.len()]);
        let output = OutputText::new(&request.prompt_token_ids, request.stop.clone());
        let sampler = Sampler::for_choice(request.sampling, 0);
        let (prompt, max_tokens) = (request.prompt_token_ids, request.stop.max_tokens);
        if prompt_logprobs.is_some() {
            self.scheduler.add_scoring_prompt(id, prompt, max_tokens)?;
        } else {
            self.scheduler.add(id, prompt, max_tokens)?;
        }
        self.sequences.insert(
            id,
            SequenceState {
                request: id,
                index: 0,
                sampler,
                output,
                prompt_logprobs,
                grammar,
            },
        );
        self.requests.insert(id, Choices::new(id, n));
        Ok(())
    }

    /// Cancels a request and frees its KV blocks at once. Returns whether it existed.
    pub fn abort(&mut self, id: RequestId) -> Result<bool, EngineError> {
        let Some(choices) = self.requests.remove(&id) else {
            self.scheduler.remove(id)?;
            return Ok(false);
        };
        for &sequence in choices.live() {
            self.sequences.remove(&sequence);
            self.scheduler.remove(sequence)?;
        }
        Ok(true)
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
        // Forks made this step are not in the scheduler yet, so it skips their tokens.
        self.scheduler.complete_step(&plan, &tokens)?;
        self.add_forks(&sampled)?;
        self.finish_outputs(sampled)
    }

    /// Adds to the scheduler the choices forked this step (sampled from their parent's
    /// logits, in [`Self::sample`]).
    fn add_forks(&mut self, sampled: &[(SequenceId, SampledToken)]) -> Result<(), EngineError> {
        for (id, token) in sampled {
            let Some(state) = self.sequences.get(id) else {
                continue;
            };
            if state.index > 0 && self.scheduler.sequence(*id).is_none() {
                self.scheduler.fork(state.request, *id, token.token)?;
            }
        }
        Ok(())
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
            && plan.batch.chunks.iter().all(|c| !c.every_token_logits)
            && ids.iter().all(|id| {
                self.sequences.get(id).is_some_and(|s| {
                    s.sampler.can_pick_on_device()
                        && s.grammar.is_none()
                        // A request still to fork samples its choices from one row on the host.
                        && self
                            .requests
                            .get(&s.request)
                            .is_some_and(|c| !c.forks_pending())
                })
            });
        if !all {
            return None;
        }
        let mut picks = Vec::with_capacity(ids.len());
        for id in &ids {
            picks.push(self.sequences.get_mut(id)?.sampler.device_pick());
        }
        Some((ids, picks))
    }

    fn record_picked(
        &mut self,
        ids: Vec<RequestId>,
        tokens: Vec<u32>,
    ) -> Result<Vec<(SequenceId, SampledToken)>, EngineError> {
        if tokens.len() != ids.len() {
            return Err(EngineError::LogitsMismatch {
                expected: ids.len(),
                got: tokens.len(),
            });
        }
        let mut sampled = Vec::with_capacity(ids.len());
        for (id, token) in ids.into_iter().zip(tokens) {
            let state = self
                .sequences
                .get_mut(&id)
                .ok_or(EngineError::UnknownRequest(id))?;
            state.sampler.record(token);
            sampled.push((
                id,
                SampledToken {
                    token,
                    logprobs: None,
                },
            ));
        }
        Ok(sampled)
    }

    /// Picks a token for every sampling sequence from its row of logits, records the
    /// prompt log-probabilities of scored prompts, and forks the further choices of
    /// requests whose first choice samples its first token (each choice drawing from the
    /// same row with a sampler of its own).
    fn sample(
        &mut self,
        plan: &StepPlan,
        logits: &crate::backend::Logits,
    ) -> Result<Vec<(SequenceId, SampledToken)>, EngineError> {
        let expected: usize = plan
            .batch
            .chunks
            .iter()
            .map(|c| match (c.every_token_logits, c.needs_logits) {
                (true, _) => c.token_ids.len(),
                (false, true) => 1,
                (false, false) => 0,
            })
            .sum();
        if logits.num_rows() != expected {
            return Err(EngineError::LogitsMismatch {
                expected,
                got: logits.num_rows(),
            });
        }
        let mut sampled = Vec::new();
        let mut row = 0;
        for (chunk, scheduled) in plan.batch.chunks.iter().zip(&plan.scheduled) {
            let id = scheduled.sequence;
            let (Some(seq), Some(state)) =
                (self.scheduler.sequence(id), self.sequences.get_mut(&id))
            else {
                // Sequences of the engine and of the scheduler are added and removed together.
                return Err(EngineError::UnknownRequest(id));
            };
            if chunk.every_token_logits {
                let prompt = seq.prompt_token_ids();
                if let Some(collected) = state.prompt_logprobs.as_mut() {
                    let top = state.sampler.params().prompt_logprobs.unwrap_or(0);
                    for offset in 0..chunk.token_ids.len() {
                        // The logits at one position score the prompt's next token.
                        let next = chunk.start_position + offset + 1;
                        if let (Some(&token), Some(slot)) =
                            (prompt.get(next), collected.get_mut(next))
                        {
                            *slot = Some(position_logprobs(logits.row(row + offset), token, top));
                        }
                    }
                }
                // Every row but the last; that one samples if the chunk ends the prompt.
                row += chunk.token_ids.len() - 1;
            }
            if !chunk.needs_logits {
                if chunk.every_token_logits {
                    row += 1;
                }
                continue;
            }
            let masked = state
                .grammar
                .as_mut()
                .map(|g| g.masked(logits.row(row), &self.model.eos_token_ids));
            let values = masked.as_deref().unwrap_or(logits.row(row));
            row += 1;
            let token =
                state
                    .sampler
                    .sample(values, seq.prompt_token_ids(), seq.output_token_ids());
            let forks = match self.requests.get_mut(&state.request) {
                Some(choices) if state.index == 0 => choices.take_forks(&mut self.fork_ids),
                _ => Vec::new(),
            };
            let (params, output) = (state.sampler.params().clone(), state.output.clone());
            // Forks continue from the grammar's state before the parent's own token.
            let fork_grammars: Vec<Option<Grammar>> = forks
                .iter()
                .map(|_| state.grammar.as_mut().map(Grammar::fork))
                .collect();
            if let Some(grammar) = state.grammar.as_mut() {
                grammar.advance(token.token);
            }
            sampled.push((id, token));
            for ((index, child), mut grammar) in forks.into_iter().zip(fork_grammars) {
                let mut sampler = Sampler::for_choice(params.clone(), index);
                let token = sampler.sample(values, seq.prompt_token_ids(), &[]);
                if let Some(grammar) = grammar.as_mut() {
                    grammar.advance(token.token);
                }
                self.sequences.insert(
                    child,
                    SequenceState {
                        request: id,
                        index,
                        sampler,
                        output: output.clone(),
                        prompt_logprobs: None,
                        grammar,
                    },
                );
                sampled.push((child, token));
            }
        }
        Ok(sampled)
    }

    /// Detokenises the new tokens, applies stop conditions and retires finished choices
    /// (and requests, with their last choice).
    fn finish_outputs(
        &mut self,
        sampled: Vec<(SequenceId, SampledToken)>,
    ) -> Result<Vec<RequestOutput>, EngineError> {
        let mut outputs = Vec::with_capacity(sampled.len());
        for (id, token) in sampled {
            let Some(state) = self.sequences.get_mut(&id) else {
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
            let (request, index) = (state.request, state.index);
            let prompt_logprobs = state.prompt_logprobs.take();
            let mut last = false;
            if outcome.finish.is_some() {
                self.sequences.remove(&id);
                self.scheduler.remove(id)?;
                last = self
                    .requests
                    .get_mut(&request)
                    .is_none_or(|choices| choices.finish(id));
                if last {
                    self.requests.remove(&request);
                }
            }
            outputs.push(RequestOutput {
                request_id: request,
                index,
                token_id: token.token,
                text: outcome.text,
                logprobs: token.logprobs,
                prompt_logprobs,
                finish_reason: outcome.finish,
                usage,
                last,
            });
        }
        Ok(outputs)
    }
}
