//! One sequence as the scheduler sees it: tokens, and how many of them the cache holds.

use crate::kv_cache::SequenceId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    id: SequenceId,
    /// Prompt, then every generated token.
    token_ids: Vec<u32>,
    num_prompt_tokens: usize,
    /// Leading tokens whose keys and values are in the cache.
    num_computed_tokens: usize,
    /// Prompt tokens served from the prefix cache at first admission.
    num_cached_prompt_tokens: Option<usize>,
    /// The logits of every prompt token are wanted (prompt log-probabilities), until the
    /// prompt has been computed once.
    scores_prompt: bool,
}

impl Sequence {
    pub fn new(id: SequenceId, prompt: Vec<u32>) -> Self {
        Sequence {
            id,
            num_prompt_tokens: prompt.len(),
            token_ids: prompt,
            num_computed_tokens: 0,
            num_cached_prompt_tokens: None,
            scores_prompt: false,
        }
    }

    /// A further choice of the same prompt: everything the parent has, except that
    /// `first_token` takes the place of the parent's own latest output token.
    pub(super) fn forked(&self, id: SequenceId, first_token: u32) -> Sequence {
        let mut child = self.clone();
        child.id = id;
        child.scores_prompt = false;
        if child.token_ids.len() > child.num_prompt_tokens {
            child.token_ids.pop();
        }
        child.token_ids.push(first_token);
        child
    }

    pub fn scores_prompt(&self) -> bool {
        self.scores_prompt
    }

    pub(super) fn set_scores_prompt(&mut self) {
        self.scores_prompt = true;
    }

    pub fn id(&self) -> SequenceId {
        self.id
    }

    pub fn token_ids(&self) -> &[u32] {
        &self.token_ids
    }

    pub fn prompt_token_ids(&self) -> &[u32] {
        &self.token_ids[..self.num_prompt_tokens]
    }

    pub fn output_token_ids(&self) -> &[u32] {
        &self.token_ids[self.num_prompt_tokens..]
    }

    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    pub fn num_computed_tokens(&self) -> usize {
        self.num_computed_tokens
    }

    pub fn num_uncomputed_tokens(&self) -> usize {
        self.token_ids.len() - self.num_computed_tokens
    }

    pub fn num_cached_prompt_tokens(&self) -> usize {
        self.num_cached_prompt_tokens.unwrap_or(0)
    }

    pub(super) fn start_computing_from(&mut self, cached: usize) {
        self.num_computed_tokens = cached;
        if self.num_cached_prompt_tokens.is_none() {
            self.num_cached_prompt_tokens = Some(cached.min(self.num_prompt_tokens));
        }
    }

    pub(super) fn mark_computed(&mut self, n: usize) {
        self.num_computed_tokens = (self.num_computed_tokens + n).min(self.token_ids.len());
        if self.num_computed_tokens >= self.num_prompt_tokens {
            // Recomputing after a preemption does not report the prompt again.
            self.scores_prompt = false;
        }
    }

    pub(super) fn push_token(&mut self, token: u32) {
        self.token_ids.push(token);
    }

    pub(super) fn reset_computed(&mut self) {
        self.num_computed_tokens = 0;
    }
}
