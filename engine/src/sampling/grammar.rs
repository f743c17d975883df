//! Grammar-constrained decoding: a request's grammar (a JSON schema, a regex, a Lark
//! grammar), compiled by llguidance into a matcher that says, before each token, which
//! tokens may come next.
//!
//! The mask for a sequence's next token is computed on a thread of its own as soon as the
//! previous token is known, so it runs while the engine loop executes the forward pass, and
//! a constrained row never makes the other rows of the batch wait longer than its own mask
//! takes. The sampler then sees the row with every disallowed token at `-inf`.

use std::sync::mpsc::{Receiver, channel};

use llguidance::Matcher;
use llguidance::toktrie::SimpleVob;

/// A compiled grammar a sequence follows. Cloning gives an independent copy at the same
/// point (a forked choice continues from where its parent was).
pub struct Grammar {
    state: State,
    /// The mask of the latest [`Self::mask`], kept for forks of this point.
    mask: Option<SimpleVob>,
}

// Matchers are large; boxed, they move between threads as a pointer.
enum State {
    Ready(Box<Matcher>),
    /// The next mask is being computed; the matcher comes back with it.
    Computing(Receiver<(Box<Matcher>, Option<SimpleVob>)>),
    /// The matcher failed (or its thread died): only end-of-sequence may follow.
    Failed,
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Ready(_) => "ready",
            State::Computing(_) => "computing",
            State::Failed => "failed",
        };
        f.debug_struct("Grammar").field("state", &state).finish()
    }
}

impl Grammar {
    /// Starts following `matcher` (fresh from a compiled grammar); the first mask starts
    /// computing at once, while the prompt is prefilled.
    pub fn new(matcher: Box<Matcher>) -> Self {
        let mut grammar = Grammar {
            state: State::Ready(matcher),
            mask: None,
        };
        grammar.start_mask();
        grammar
    }

    /// `logits` with every token the grammar rules out next at `-inf` (when the grammar is
    /// complete, everything but end-of-sequence). Waits for the mask if it is not ready.
    pub fn masked(&mut self, logits: &[f32], eos_token_ids: &[u32]) -> Vec<f32> {
        let mask = self.mask();
        let mut row = logits.to_vec();
        match mask {
            Some(mask) => {
                for (token, value) in row.iter_mut().enumerate() {
                    if token >= mask.len() || !mask.is_allowed(token as u32) {
                        *value = f32::NEG_INFINITY;
                    }
                }
            }
            None => {
                for (token, value) in row.iter_mut().enumerate() {
                    if !eos_token_ids.contains(&(token as u32)) {
                        *value = f32::NEG_INFINITY;
                    }
                }
            }
        }
        row
    }

    fn mask(&mut self) -> Option<&SimpleVob> {
        if let State::Computing(receiver) = &self.state {
            self.state = match receiver.recv() {
                Ok((matcher, mask)) => {
                    self.mask = mask;
                    State::Ready(matcher)
                }
                Err(_) => {
                    self.mask = None;
                    State::Failed
                }
            };
        }
        match self.state {
            State::Ready(_) => self.mask.as_ref(),
            _ => None,
        }
    }

    /// A copy at this point, for a choice forked from this one (after [`Self::masked`]).
    pub fn fork(&mut self) -> Grammar {
        let _ = self.mask();
        let state = match &self.state {
            State::Ready(matcher) => State::Ready(Box::new(matcher.deep_clone())),
            _ => State::Failed,
        };
        Grammar {
            state,
            mask: self.mask.clone(),
        }
    }

    /// Moves past `token` (one the mask allowed) and starts computing the next mask.
    pub fn advance(&mut self, token: u32) {
        let _ = self.mask();
        if let State::Ready(matcher) = &mut self.state
            && let Err(error) = matcher.consume_token(token)
        {
            tracing::warn!(%error, token, "the grammar refused a token; ending the output");
            self.state = State::Failed;
            return;
        }
        self.start_mask();
    }

    fn start_mask(&mut self) {
        let State::Ready(mut matcher) = std::mem::replace(&mut self.state, State::Failed) else {
            return;
        };
        let (sender, receiver) = channel();
        let spawned = std::thread::Builder::new()
            .name("grammar-mask".into())
            .spawn(move || {
                let mask = matcher.compute_mask_or_eos().ok();
                let _ = sender.send((matcher, mask));
            });
        self.state = match spawned {
            Ok(_) => State::Computing(receiver),
            Err(error) => {
                tracing::warn!(%error, "no thread for the grammar's mask; ending the output");
                State::Failed
            }
        };
    }
}

/// A grammar compiled for a request, before it runs: each request starts from a fresh copy
/// of the compiled matcher. Two are equal when they were compiled from the same source.
#[derive(Clone)]
pub struct CompiledGrammar {
    matcher: Box<Matcher>,
    /// What it was compiled from, for logs and comparison: the field and its text.
    source: String,
}

impl CompiledGrammar {
    pub fn new(matcher: Matcher, source: String) -> Self {
        CompiledGrammar {
            matcher: Box::new(matcher),
            source,
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The grammar as a sequence follows it.
    pub fn start(self) -> Grammar {
        Grammar::new(self.matcher)
    }
}

impl PartialEq for CompiledGrammar {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl std::fmt::Debug for CompiledGrammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CompiledGrammar")
            .field(&self.source)
            .finish()
    }
}
