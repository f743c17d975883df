//! What one request did: when its tokens arrived and how it ended.

use std::time::{Duration, Instant};

use serde::Serialize;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The stream finished with a finish reason.
    Ok,
    /// The engine refused it for overload: HTTP 429 or gRPC RESOURCE_EXHAUSTED.
    Rejected,
    /// The engine is draining or could not be reached: HTTP 503 or gRPC UNAVAILABLE, or a
    /// connection that could not be made (gRPC reports those as UNAVAILABLE too).
    Unavailable,
    /// Anything else: another status, a broken stream, a timeout.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Rejected,
        Outcome::Unavailable,
        Outcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Unavailable => "unavailable",
            Outcome::Error => "error",
        }
    }
}

/// Why a request did not finish normally.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub outcome: Outcome,
    pub message: String,
    /// False when no connection to the engine could be made at all.
    pub reached_server: bool,
}

impl Failure {
    pub fn new(outcome: Outcome, message: impl Into<String>) -> Self {
        Self {
            outcome,
            message: message.into(),
            reached_server: true,
        }
    }

    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Unavailable,
            message: message.into(),
            reached_server: false,
        }
    }
}

/// What the end of a successful stream says about the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Completion {
    /// Output tokens as the engine counted them (gRPC usage, or an HTTP usage chunk).
    pub output_tokens: Option<u64>,
    pub prompt_tokens: Option<u64>,
}

/// The record of one request, kept for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// The target it was sent to, as written (`grpc://host:port`, or the HTTP URL).
    pub target: String,
    pub outcome: Outcome,
    /// The failure's message; `None` when the request succeeded.
    pub error: Option<String>,
    pub reached_server: bool,
    /// Time from sending the request to the first non-empty token delta.
    pub ttft: Option<Duration>,
    /// Gaps between successive tokens (see [`TokenTimer::tokens`]).
    pub inter_token: Vec<Duration>,
    /// Time from sending the request to the end of its stream.
    pub e2e: Duration,
    pub output_tokens: u64,
    pub prompt_tokens: Option<u64>,
}

/// Collects the arrival times of a request's tokens while its stream is read.
#[derive(Debug, Clone)]
pub struct TokenTimer {
    start: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    inter_token: Vec<Duration>,
    tokens: u64,
}

impl TokenTimer {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            first: None,
            last: None,
            inter_token: Vec::new(),
            tokens: 0,
        }
    }

    /// `n` tokens arrived at `at`. The first delta with tokens marks the time to first token.
    /// A later delta that carries `n` tokens at once (the engine ran ahead of the stream)
    /// contributes `n` gaps of (gap since the previous delta) / `n`, so the gaps still add up
    /// to the decode time and there is one gap per token after the first.
    pub fn tokens(&mut self, at: Instant, n: u64) {
        if n == 0 {
            return;
        }
        match self.last {
            None => {
                self.first = Some(at);
                // The first token of the first delta starts the clock; its other tokens came
                // in the same instant.
                self.inter_token
                    .extend(std::iter::repeat_n(Duration::ZERO, (n - 1) as usize));
            }
            Some(last) => {
                let gap = at.saturating_duration_since(last);
                let each = gap.div_f64(n as f64);
                self.inter_token
                    .extend(std::iter::repeat_n(each, n as usize));
            }
        }
        self.last = Some(at);
        self.tokens += n;
    }

    pub fn tokens_seen(&self) -> u64 {
        self.tokens
    }

    /// The record of a request whose stream ended at `end`.
    pub fn into_record(
        self,
        target: String,
        end: Instant,
        result: Result<Completion, Failure>,
    ) -> RequestRecord {
        let ttft = self.first.map(|f| f.saturating_duration_since(self.start));
        let e2e = end.saturating_duration_since(self.start);
        match result {
            Ok(done) => RequestRecord {
                target,
                outcome: Outcome::Ok,
                error: None,
                reached_server: true,
                ttft,
                inter_token: self.inter_token,
                e2e,
                // The engine's own count when it gives one: text deltas over HTTP need not map
                // one to one onto tokens.
                output_tokens: done.output_tokens.unwrap_or(self.tokens),
                prompt_tokens: done.prompt_tokens,
            },
            Err(failure) => RequestRecord {
                target,
                outcome: failure.outcome,
                error: Some(failure.message),
                reached_server: failure.reached_server,
                ttft,
                inter_token: self.inter_token,
                e2e,
                output_tokens: self.tokens,
                prompt_tokens: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttft_is_the_first_delta_with_tokens_and_gaps_follow() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timer = TokenTimer::new(t0);
        timer.tokens(ms(5), 0); // an empty delta is not the first token
        timer.tokens(ms(40), 1);
        timer.tokens(ms(50), 1);
        timer.tokens(ms(70), 2); // two tokens in one delta: two gaps of 10 ms
        let record = timer.into_record(
            "grpc://b:1".into(),
            ms(75),
            Ok(Completion {
                output_tokens: None,
                prompt_tokens: Some(7),
            }),
        );
        assert_eq!(record.outcome, Outcome::Ok);
        assert_eq!(record.target, "grpc://b:1");
        assert_eq!(record.ttft, Some(Duration::from_millis(40)));
        assert_eq!(
            record.inter_token,
            vec![
                Duration::from_millis(10),
                Duration::from_millis(10),
                Duration::from_millis(10)
            ]
        );
        assert_eq!(record.e2e, Duration::from_millis(75));
        assert_eq!(record.output_tokens, 4);
        assert_eq!(record.prompt_tokens, Some(7));
    }

    #[test]
    fn the_engines_token_count_wins_and_failures_keep_their_kind() {
        let t0 = Instant::now();
        let mut timer = TokenTimer::new(t0);
        timer.tokens(t0 + Duration::from_millis(3), 1);
        let ok = timer.clone().into_record(
            "grpc://a:1".into(),
            t0 + Duration::from_millis(9),
            Ok(Completion {
                output_tokens: Some(2),
                prompt_tokens: None,
            }),
        );
        assert_eq!(ok.output_tokens, 2);
        let failed = timer.into_record(
            "grpc://a:1".into(),
            t0 + Duration::from_millis(9),
            Err(Failure::new(Outcome::Rejected, "429")),
        );
        assert_eq!(failed.outcome, Outcome::Rejected);
        assert_eq!(failed.error.as_deref(), Some("429"));
        assert!(failed.reached_server);
        assert_eq!(failed.output_tokens, 1);
        let unreachable = TokenTimer::new(t0).into_record(
            "grpc://a:1".into(),
            t0,
            Err(Failure::unreachable("connection refused")),
        );
        assert_eq!(unreachable.outcome, Outcome::Unavailable);
        assert!(!unreachable.reached_server);
        assert_eq!(unreachable.ttft, None);
    }
}
