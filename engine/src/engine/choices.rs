//! A request's `n` choices: each is a sequence of its own, and all but the first are forks
//! of the first, made when it samples its first token so that they share the prompt's KV
//! blocks instead of computing the prompt again.

use super::RequestId;
use crate::kv_cache::SequenceId;

/// Sequence ids of forked choices start here; requests take theirs from 0 upwards, so the
/// two never meet.
const FIRST_FORK_ID: SequenceId = 1 << 63;

/// The sequences of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choices {
    /// Live sequences (the first choice's id is the request's own).
    live: Vec<SequenceId>,
    /// Choices not forked yet: all but the first until the first samples.
    unforked: u32,
}

impl Choices {
    pub fn new(request: RequestId, n: usize) -> Self {
        Choices {
            live: vec![request],
            unforked: u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX),
        }
    }

    /// The choices still to fork, taken at once: `(index, sequence id)` for each.
    pub fn take_forks(&mut self, ids: &mut ForkIds) -> Vec<(u32, SequenceId)> {
        let forks: Vec<(u32, SequenceId)> = (1..=self.unforked)
            .map(|index| (index, ids.next()))
            .collect();
        self.unforked = 0;
        self.live.extend(forks.iter().map(|&(_, id)| id));
        forks
    }

    /// Marks `sequence` finished; returns whether it was the request's last.
    pub fn finish(&mut self, sequence: SequenceId) -> bool {
        self.live.retain(|&s| s != sequence);
        self.live.is_empty() && self.unforked == 0
    }

    /// Whether further choices are still to be forked from the first.
    pub fn forks_pending(&self) -> bool {
        self.unforked > 0
    }

    pub fn live(&self) -> &[SequenceId] {
        &self.live
    }
}

/// Hands out sequence ids for forked choices.
#[derive(Debug, Clone)]
pub struct ForkIds(SequenceId);

impl Default for ForkIds {
    fn default() -> Self {
        ForkIds(FIRST_FORK_ID)
    }
}

impl ForkIds {
    fn next(&mut self) -> SequenceId {
        let id = self.0;
        // 2^63 forks cannot happen in a process's life; wrapping keeps it total.
        self.0 = FIRST_FORK_ID | self.0.wrapping_add(1);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_ends_when_its_last_choice_does_and_not_before_the_forks() {
        let mut ids = ForkIds::default();
        let mut choices = Choices::new(7, 3);
        assert!(!choices.finish(7), "two choices are still to come");
        let mut choices = Choices::new(7, 3);
        let forks = choices.take_forks(&mut ids);
        assert_eq!(forks, [(1, FIRST_FORK_ID), (2, FIRST_FORK_ID + 1)]);
        assert!(choices.take_forks(&mut ids).is_empty());
        assert!(!choices.finish(FIRST_FORK_ID));
        assert!(!choices.finish(7));
        assert!(choices.finish(FIRST_FORK_ID + 1));
        assert!(Choices::new(1, 1).finish(1));
    }
}
