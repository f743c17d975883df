//! Continuous batching: which sequences run in the next step, and with how many tokens.
//!
//! Every step the scheduler first gives each running sequence its next tokens (one when
//! decoding, the next chunk when its prompt is still being prefilled), oldest first, then
//! admits waiting sequences first-come first-served while the step's token budget, the
//! sequence cap and the KV cache allow. When the cache cannot hold a running sequence's next
//! tokens, the newest running sequence is preempted: its blocks are freed and it waits again
//! at the front of the queue, to be recomputed (its full blocks often still sit in the prefix
//! cache). The result is a [`StepPlan`]; the scheduler never runs the model.

mod plan;
mod sequence;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

pub use plan::{ScheduledChunk, StepPlan};
pub use sequence::Sequence;

use crate::backend::{ForwardBatch, SequenceChunk};
use crate::kv_cache::{KvCacheError, KvCacheManager, PrefixHit, SequenceId, blocks_for_tokens};

/// Limits of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most tokens (decode tokens plus prefill chunks) fed to the model in one step.
    pub max_num_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_num_batched_tokens: 512,
            max_num_seqs: 64,
        }
    }
}

/// Numbers the serving layer exports as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SchedulerStats {
    /// Sequences waiting for their first (or, after preemption, next) admission: the queue
    /// depth.
    pub waiting: usize,
    pub running: usize,
    /// Fraction of KV cache blocks in use.
    pub kv_cache_usage: f64,
    pub preemptions_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    #[error("sequence {0} is already scheduled")]
    Duplicate(SequenceId),
    #[error(transparent)]
    KvCache(#[from] KvCacheError),
}

/// Owns every unfinished sequence and the KV cache manager they share.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    kv: KvCacheManager,
    sequences: HashMap<SequenceId, Sequence>,
    waiting: VecDeque<SequenceId>,
    /// In admission order: the last one is the newest, preempted first.
    running: Vec<SequenceId>,
    preemptions_total: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, kv: KvCacheManager) -> Self {
        Scheduler {
            config: SchedulerConfig {
                max_num_batched_tokens: config.max_num_batched_tokens.max(1),
                max_num_seqs: config.max_num_seqs.max(1),
            },
            kv,
            sequences: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            preemptions_total: 0,
        }
    }

    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    pub fn kv_cache(&self) -> &KvCacheManager {
        &self.kv
    }

    /// Queues a sequence. The caller has checked that it is not empty and fits the cache
    /// alone even at its longest (`engine::RequestLimits::validate`), or it could never
    /// finish; `max_new_tokens` is that bound and is not needed here beyond the check.
    pub fn add(
        &mut self,
        id: SequenceId,
        prompt: Vec<u32>,
        max_new_tokens: usize,
    ) -> Result<(), SchedulerError> {
        debug_assert!(
            !prompt.is_empty() && prompt.len() + max_new_tokens <= self.kv.capacity_tokens(),
            "requests reach the scheduler validated"
        );
        if self.sequences.contains_key(&id) {
            return Err(SchedulerError::Duplicate(id));
        }
        self.sequences.insert(id, Sequence::new(id, prompt));
        self.waiting.push_back(id);
        Ok(())
    }

    /// Like [`Self::add`], for a sequence whose prompt is scored: its prompt chunks ask for
    /// the logits of every token, and it skips the prefix cache (cached tokens would have
    /// none).
    pub fn add_scoring_prompt(
        &mut self,
        id: SequenceId,
        prompt: Vec<u32>,
        max_new_tokens: usize,
    ) -> Result<(), SchedulerError> {
        self.add(id, prompt, max_new_tokens)?;
        self.sequence_mut(id)?.set_scores_prompt();
        Ok(())
    }

    /// Adds `child`, a further choice of `parent`'s prompt, once the parent has sampled its
    /// first token: it shares the parent's KV blocks (the first write into a shared block
    /// copies it) and starts from `first_token` instead of the parent's.
    pub fn fork(
        &mut self,
        parent: SequenceId,
        child: SequenceId,
        first_token: u32,
    ) -> Result<(), SchedulerError> {
        if self.sequences.contains_key(&child) {
            return Err(SchedulerError::Duplicate(child));
        }
        let forked = self.sequence_ref(parent)?.forked(child, first_token);
        self.kv.fork(parent, child)?;
        self.sequences.insert(child, forked);
        self.running.push(child);
        Ok(())
    }

    pub fn sequence(&self, id: SequenceId) -> Option<&Sequence> {
        self.sequences.get(&id)
    }

    pub fn has_unfinished(&self) -> bool {
        !self.sequences.is_empty()
    }

    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            waiting: self.waiting.len(),
            running: self.running.len(),
            kv_cache_usage: self.kv.pool().usage(),
            preemptions_total: self.preemptions_total,
        }
    }

    /// Decides the next step.
    pub fn schedule(&mut self) -> Result<StepPlan, SchedulerError> {
        let mut budget = self.config.max_num_batched_tokens;
        let mut scheduled: Vec<(SequenceId, usize)> = Vec::new();
        let mut plan = StepPlan::default();

        // Running sequences first, oldest first.
        let mut index = 0;
        while index < self.running.len() && budget > 0 {
            let id = self.running[index];
            let seq = self.sequence_ref(id)?;
            let start = seq.num_computed_tokens();
            let n = seq.num_uncomputed_tokens().min(budget);
            if n == 0 {
                index += 1;
                continue;
            }
            loop {
                if let Some(allocation) = self.kv.allocate(id, start, start + n)? {
                    plan.copies.extend(allocation.copies);
                    scheduled.push((id, n));
                    budget -= n;
                    index += 1;
                    break;
                }
                // Out of blocks: recompute the newest later, to let older ones finish.
                let Some(victim) = self.running.pop() else {
                    break;
                };
                self.preempt(victim)?;
                plan.preempted.push(victim);
                if victim == id {
                    break;
                }
            }
        }

        // Then waiting sequences in arrival order; a head that does not fit blocks the rest.
        if plan.preempted.is_empty() {
            while budget > 0 && self.running.len() < self.config.max_num_seqs {
                let Some(&id) = self.waiting.front() else {
                    break;
                };
                let seq = self.sequence_ref(id)?;
                let hit = if seq.scores_prompt() {
                    PrefixHit::default()
                } else {
                    self.kv.find_prefix(seq.token_ids())
                };
                let n = (seq.len() - hit.num_tokens).min(budget);
                let Some(allocation) = self.kv.admit(id, &hit, hit.num_tokens + n)? else {
                    break;
                };
                plan.copies.extend(allocation.copies);
                self.sequence_mut(id)?.start_computing_from(hit.num_tokens);
                self.waiting.pop_front();
                self.running.push(id);
                scheduled.push((id, n));
                budget -= n;
            }
        }

        plan.batch = ForwardBatch {
            chunks: Vec::with_capacity(scheduled.len()),
        };
        for (id, n) in scheduled {
            let seq = self.sequence_ref(id)?;
            let start = seq.num_computed_tokens();
            let end = start + n;
            let table = self.kv.block_table(id)?;
            let table = &table[..blocks_for_tokens(end, self.kv.block_size()).min(table.len())];
            let samples = end == seq.len();
            plan.batch.chunks.push(SequenceChunk {
                token_ids: seq.token_ids()[start..end].to_vec(),
                start_position: start,
                block_table: table.to_vec(),
                needs_logits: samples,
                every_token_logits: seq.scores_prompt(),
            });
            plan.scheduled.push(ScheduledChunk {
                sequence: id,
                num_tokens: n,
                samples,
            });
        }
        Ok(plan)
    }

    /// Records that `plan` ran: its chunks are now in the cache (full blocks become
    /// findable by prefix), and each sequence in `sampled` gains its new token. Sequences
    /// aborted meanwhile are skipped.
    pub fn complete_step(
        &mut self,
        plan: &StepPlan,
        sampled: &[(SequenceId, u32)],
    ) -> Result<(), SchedulerError> {
        for chunk in &plan.scheduled {
            let Some(seq) = self.sequences.get_mut(&chunk.sequence) else {
                continue;
            };
            seq.mark_computed(chunk.num_tokens);
            self.kv
                .cache_full_blocks(seq.id(), seq.token_ids(), seq.num_computed_tokens())?;
        }
        for &(id, token) in sampled {
            if let Some(seq) = self.sequences.get_mut(&id) {
                seq.push_token(token);
            }
        }
        Ok(())
    }

    /// Removes a sequence whatever its state and frees its blocks at once (finish or
    /// abort). Returns the sequence if it existed.
    pub fn remove(&mut self, id: SequenceId) -> Result<Option<Sequence>, SchedulerError> {
        let Some(seq) = self.sequences.remove(&id) else {
            return Ok(None);
        };
        self.waiting.retain(|&w| w != id);
        self.running.retain(|&r| r != id);
        if self.kv.has_sequence(id) {
            self.kv.free(id)?;
        }
        Ok(Some(seq))
    }

    fn preempt(&mut self, id: SequenceId) -> Result<(), SchedulerError> {
        self.kv.free(id)?;
        self.sequence_mut(id)?.reset_computed();
        self.waiting.push_front(id);
        self.preemptions_total += 1;
        tracing::debug!(sequence = id, "preempted: KV cache full, will recompute");
        Ok(())
    }

    fn sequence_ref(&self, id: SequenceId) -> Result<&Sequence, SchedulerError> {
        self.sequences
            .get(&id)
            .ok_or(SchedulerError::KvCache(KvCacheError::UnknownSequence(id)))
    }

    fn sequence_mut(&mut self, id: SequenceId) -> Result<&mut Sequence, SchedulerError> {
        self.sequences
            .get_mut(&id)
            .ok_or(SchedulerError::KvCache(KvCacheError::UnknownSequence(id)))
    }
}
