//! Faults injected on purpose, to prove what a server does when its engine breaks: a
//! backend wrapper that, after a number of good steps, fails every step or panics. Only
//! reachable through a hidden `serve` flag; nothing else constructs it.

use std::str::FromStr;

use crate::backend::{Backend, BackendError, BlockId, ForwardBatch, KvCacheShape, Logits};

/// What goes wrong, and after how many good forward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFault {
    /// Every forward pass after the first `n` fails.
    FailStepsAfter(usize),
    /// The forward pass after the first `n` panics.
    PanicAfter(usize),
}

impl FromStr for InjectedFault {
    type Err = String;

    /// `fail-steps-after=N` or `panic-after=N`.
    fn from_str(spec: &str) -> Result<Self, String> {
        let (kind, n) = spec
            .split_once('=')
            .ok_or_else(|| format!("expected KIND=N, got '{spec}'"))?;
        let n: usize = n
            .parse()
            .map_err(|e| format!("'{n}' is not a step count: {e}"))?;
        match kind {
            "fail-steps-after" => Ok(Self::FailStepsAfter(n)),
            "panic-after" => Ok(Self::PanicAfter(n)),
            other => Err(format!(
                "unknown fault '{other}' (known: fail-steps-after, panic-after)"
            )),
        }
    }
}

/// A backend that turns faulty after some good steps.
pub struct FaultyBackend {
    inner: Box<dyn Backend>,
    fault: InjectedFault,
    forwards: usize,
}

impl FaultyBackend {
    pub fn new(inner: Box<dyn Backend>, fault: InjectedFault) -> Self {
        FaultyBackend {
            inner,
            fault,
            forwards: 0,
        }
    }
}

impl Backend for FaultyBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn kv_cache_shape(&self) -> KvCacheShape {
        self.inner.kv_cache_shape()
    }

    fn forward(&mut self, batch: &ForwardBatch) -> Result<Logits, BackendError> {
        self.forwards += 1;
        match self.fault {
            InjectedFault::FailStepsAfter(n) if self.forwards > n => Err(BackendError::Execution(
                format!("injected fault after {n} good steps"),
            )),
            InjectedFault::PanicAfter(n) if self.forwards > n => {
                panic!("injected panic after {n} good steps")
            }
            _ => self.inner.forward(batch),
        }
    }

    fn copy_blocks(&mut self, copies: &[(BlockId, BlockId)]) -> Result<(), BackendError> {
        self.inner.copy_blocks(copies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_their_flag_values() {
        assert_eq!(
            "fail-steps-after=3".parse(),
            Ok(InjectedFault::FailStepsAfter(3))
        );
        assert_eq!("panic-after=0".parse(), Ok(InjectedFault::PanicAfter(0)));
        assert!("explode=1".parse::<InjectedFault>().is_err());
        assert!("panic-after".parse::<InjectedFault>().is_err());
    }
}
