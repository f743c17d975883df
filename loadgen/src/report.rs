//! The end-of-run report: built from the request records by a pure function, rendered as a
//! text table or as JSON.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::config::Arrival;
use super::percentile::LatencySummary;
use super::record::{Outcome, RequestRecord};
use super::target::Target;

/// How many distinct error messages the report keeps.
const ERROR_SAMPLES: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub arrival: Arrival,
    pub targets: Vec<String>,
    /// From the first request to the end of the last one counted.
    pub elapsed_secs: f64,
    /// True when the run was cancelled; requests then in flight are not counted.
    pub cancelled: bool,
    pub requests: RequestCounts,
    /// Output tokens of the successful requests.
    pub output_tokens: u64,
    /// Prompt tokens of the successful requests, where the engine reported them.
    pub prompt_tokens: u64,
    pub throughput: Throughput,
    /// Over successful requests only.
    pub latency: Latencies,
    pub per_target: Vec<TargetCounts>,
    /// The most frequent failure messages, most frequent first.
    pub errors: Vec<ErrorSample>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    /// Requests that finished, either way.
    pub total: u64,
    pub ok: u64,
    /// HTTP 429 / gRPC RESOURCE_EXHAUSTED.
    pub rejected: u64,
    /// HTTP 503 / gRPC UNAVAILABLE, including connections that could not be made.
    pub unavailable: u64,
    pub error: u64,
    /// Of the failures, those that never reached an engine (no connection).
    pub unreachable: u64,
}

impl RequestCounts {
    pub fn failed(&self) -> u64 {
        self.rejected + self.unavailable + self.error
    }

    fn count(&mut self, outcome: Outcome) {
        self.total += 1;
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Rejected => self.rejected += 1,
            Outcome::Unavailable => self.unavailable += 1,
            Outcome::Error => self.error += 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Throughput {
    /// Successful requests per second.
    pub requests_per_sec: f64,
    /// Output tokens of successful requests per second.
    pub output_tokens_per_sec: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latencies {
    /// Time to first token: from sending to the first non-empty token delta.
    pub ttft: Option<LatencySummary>,
    /// Gaps between successive output tokens.
    pub inter_token: Option<LatencySummary>,
    /// From sending to the end of the stream.
    pub e2e: Option<LatencySummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetCounts {
    pub target: String,
    pub ok: u64,
    pub failed: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorSample {
    pub outcome: Outcome,
    pub message: String,
    pub count: u64,
}

impl Report {
    /// The report of a run over `targets` whose requests produced `records`. Targets that
    /// records name but `targets` does not (added while the run ran) follow them.
    pub fn from_records(
        arrival: Arrival,
        targets: &[Target],
        records: &[RequestRecord],
        elapsed: Duration,
        cancelled: bool,
    ) -> Self {
        let mut requests = RequestCounts::default();
        let mut per_target: Vec<TargetCounts> = targets
            .iter()
            .map(|t| TargetCounts {
                target: t.to_string(),
                ok: 0,
                failed: 0,
                output_tokens: 0,
            })
            .collect();
        let mut output_tokens = 0;
        let mut prompt_tokens = 0;
        let mut errors: HashMap<(Outcome, &str), u64> = HashMap::new();
        for r in records {
            requests.count(r.outcome);
            if !r.reached_server {
                requests.unreachable += 1;
            }
            let slot = match per_target.iter().position(|t| t.target == r.target) {
                Some(i) => &mut per_target[i],
                None => {
                    per_target.push(TargetCounts {
                        target: r.target.clone(),
                        ok: 0,
                        failed: 0,
                        output_tokens: 0,
                    });
                    let last = per_target.len() - 1;
                    &mut per_target[last]
                }
            };
            if r.outcome == Outcome::Ok {
                output_tokens += r.output_tokens;
                prompt_tokens += r.prompt_tokens.unwrap_or(0);
                slot.ok += 1;
                slot.output_tokens += r.output_tokens;
            } else {
                slot.failed += 1;
                let message = r.error.as_deref().unwrap_or("");
                *errors.entry((r.outcome, message)).or_default() += 1;
            }
        }
        let mut errors: Vec<ErrorSample> = errors
            .into_iter()
            .map(|((outcome, message), count)| ErrorSample {
                outcome,
                message: message.to_owned(),
                count,
            })
            .collect();
        errors.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.outcome.cmp(&b.outcome))
                .then(a.message.cmp(&b.message))
        });
        errors.truncate(ERROR_SAMPLES);

        let ok = || records.iter().filter(|r| r.outcome == Outcome::Ok);
        let latency = Latencies {
            ttft: LatencySummary::from_durations(ok().filter_map(|r| r.ttft.as_ref())),
            inter_token: LatencySummary::from_durations(ok().flat_map(|r| &r.inter_token)),
            e2e: LatencySummary::from_durations(ok().map(|r| &r.e2e)),
        };
        let secs = elapsed.as_secs_f64();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        Report {
            arrival,
            targets: per_target.iter().map(|t| t.target.clone()).collect(),
            elapsed_secs: secs,
            cancelled,
            requests,
            output_tokens,
            prompt_tokens,
            throughput: Throughput {
                requests_per_sec: per_sec(requests.ok),
                output_tokens_per_sec: per_sec(output_tokens),
            },
            latency,
            per_target,
            errors,
        }
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Every field serialises (no maps with non-string keys, no non-finite floats reach
        // here but as null), so this cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A table for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mode = match self.arrival {
            Arrival::Closed { concurrency } => format!("closed loop, concurrency {concurrency}"),
            Arrival::Poisson { rate, seed } => {
                format!("open loop, Poisson arrivals at {rate} requests/s (seed {seed})")
            }
        };
        let _ = writeln!(
            out,
            "load:        {mode}, {} target{}, {:.2} s{}",
            self.targets.len(),
            if self.targets.len() == 1 { "" } else { "s" },
            self.elapsed_secs,
            if self.cancelled { " (cancelled)" } else { "" }
        );
        let r = &self.requests;
        let _ = writeln!(
            out,
            "requests:    {} ok, {} rejected (429/RESOURCE_EXHAUSTED), {} unavailable (503/UNAVAILABLE{}), {} errors",
            r.ok,
            r.rejected,
            r.unavailable,
            if r.unreachable > 0 {
                format!(", {} unreachable", r.unreachable)
            } else {
                String::new()
            },
            r.error
        );
        let _ = writeln!(
            out,
            "throughput:  {:.2} requests/s, {:.1} output tokens/s ({} output tokens)",
            self.throughput.requests_per_sec,
            self.throughput.output_tokens_per_sec,
            self.output_tokens
        );
        let _ = writeln!(
            out,
            "latency (ms)         {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "p50", "p90", "p99", "mean", "max", "samples"
        );
        for (name, summary) in [
            ("time to first token", &self.latency.ttft),
            ("inter-token", &self.latency.inter_token),
            ("end-to-end", &self.latency.e2e),
        ] {
            match summary {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "  {name:<19}{:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8}",
                        s.p50_ms, s.p90_ms, s.p99_ms, s.mean_ms, s.max_ms, s.count
                    );
                }
                None => {
                    let _ = writeln!(out, "  {name:<19}{:>9}", "-");
                }
            }
        }
        if self.per_target.len() > 1 {
            let _ = writeln!(out, "per target:");
            let width = self
                .per_target
                .iter()
                .map(|t| t.target.len())
                .max()
                .unwrap_or(0);
            for t in &self.per_target {
                let _ = writeln!(
                    out,
                    "  {:<width$}  {} ok, {} failed, {} output tokens",
                    t.target, t.ok, t.failed, t.output_tokens
                );
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "failures (most frequent first):");
            for e in &self.errors {
                let _ = writeln!(
                    out,
                    "  {:>6} × {}: {}",
                    e.count,
                    e.outcome.as_str(),
                    e.message
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(target: &str, ttft_ms: u64, gaps_ms: &[u64], tokens: u64) -> RequestRecord {
        let inter_token: Vec<Duration> =
            gaps_ms.iter().map(|&g| Duration::from_millis(g)).collect();
        let e2e = Duration::from_millis(ttft_ms + gaps_ms.iter().sum::<u64>());
        RequestRecord {
            target: target.into(),
            outcome: Outcome::Ok,
            error: None,
            reached_server: true,
            ttft: Some(Duration::from_millis(ttft_ms)),
            inter_token,
            e2e,
            output_tokens: tokens,
            prompt_tokens: Some(5),
        }
    }

    fn failed(target: &str, outcome: Outcome, message: &str, reached: bool) -> RequestRecord {
        RequestRecord {
            target: target.into(),
            outcome,
            error: Some(message.into()),
            reached_server: reached,
            ttft: None,
            inter_token: Vec::new(),
            e2e: Duration::from_millis(1),
            output_tokens: 0,
            prompt_tokens: None,
        }
    }

    const A: &str = "grpc://a:1";
    const B: &str = "http://b:2/v1/completions";

    fn report() -> Report {
        let targets: Vec<Target> = ["grpc://a:1", "http://b:2"]
            .iter()
            .map(|t| t.parse().expect("target"))
            .collect();
        let records = vec![
            ok(A, 100, &[10, 20], 3),
            ok(B, 200, &[30, 40], 3),
            ok(A, 300, &[50, 60], 3),
            failed(B, Outcome::Rejected, "HTTP 429", true),
            failed(B, Outcome::Rejected, "HTTP 429", true),
            failed(A, Outcome::Unavailable, "connection refused", false),
            failed(A, Outcome::Error, "stream broke", true),
        ];
        Report::from_records(
            Arrival::Closed { concurrency: 2 },
            &targets,
            &records,
            Duration::from_secs(2),
            false,
        )
    }

    #[test]
    fn counts_throughput_and_latencies_come_from_the_records() {
        let r = report();
        assert_eq!(
            r.requests,
            RequestCounts {
                total: 7,
                ok: 3,
                rejected: 2,
                unavailable: 1,
                error: 1,
                unreachable: 1
            }
        );
        assert_eq!(r.requests.failed(), 4);
        assert_eq!(r.output_tokens, 9);
        assert_eq!(r.prompt_tokens, 15);
        assert!((r.throughput.requests_per_sec - 1.5).abs() < 1e-9);
        assert!((r.throughput.output_tokens_per_sec - 4.5).abs() < 1e-9);
        let ttft = r.latency.ttft.expect("ttft");
        assert_eq!(ttft.count, 3);
        assert!((ttft.p50_ms - 200.0).abs() < 1e-9);
        assert!((ttft.p99_ms - 300.0).abs() < 1e-9);
        let itl = r.latency.inter_token.expect("itl");
        assert_eq!(itl.count, 6);
        assert!((itl.p50_ms - 30.0).abs() < 1e-9);
        let e2e = r.latency.e2e.expect("e2e");
        assert!((e2e.max_ms - 410.0).abs() < 1e-9);
        assert_eq!(r.per_target[0].ok, 2);
        assert_eq!(r.per_target[0].failed, 2);
        assert_eq!(r.per_target[1].output_tokens, 3);
        assert_eq!(r.errors[0].message, "HTTP 429");
        assert_eq!(r.errors[0].count, 2);
        assert_eq!(r.errors.len(), 3);
    }

    #[test]
    fn a_target_added_during_the_run_gets_its_own_row() {
        let targets: Vec<Target> = vec![A.parse().expect("target")];
        let records = vec![ok(A, 100, &[10], 2), ok("grpc://c:3", 100, &[10], 2)];
        let r = Report::from_records(
            Arrival::Closed { concurrency: 1 },
            &targets,
            &records,
            Duration::from_secs(1),
            false,
        );
        assert_eq!(r.targets, vec![A.to_owned(), "grpc://c:3".to_owned()]);
        assert_eq!(r.per_target[1].ok, 1);
        assert_eq!(r.per_target[1].output_tokens, 2);
    }

    #[test]
    fn text_names_every_figure() {
        let text = report().to_text();
        for needle in [
            "closed loop, concurrency 2, 2 targets, 2.00 s",
            "3 ok, 2 rejected",
            "1 unavailable (503/UNAVAILABLE, 1 unreachable)",
            "1 errors",
            "1.50 requests/s, 4.5 output tokens/s (9 output tokens)",
            "time to first token",
            "   200.00    300.00    300.00    200.00    300.00        3",
            "grpc://a:1",
            "2 × rejected: HTTP 429",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let json: serde_json::Value =
            serde_json::from_str(&report().to_json()).expect("valid JSON");
        assert_eq!(json["arrival"]["kind"], "closed");
        assert_eq!(json["arrival"]["concurrency"], 2);
        assert_eq!(json["requests"]["ok"], 3);
        assert_eq!(json["requests"]["rejected"], 2);
        assert_eq!(json["latency"]["ttft"]["p90_ms"], 300.0);
        assert_eq!(json["throughput"]["requests_per_sec"], 1.5);
        assert_eq!(json["errors"][0]["outcome"], "rejected");
        assert_eq!(json["targets"][1], "http://b:2/v1/completions");
    }

    #[test]
    fn an_empty_run_has_no_latencies_and_no_rates() {
        let r = Report::from_records(
            Arrival::Poisson { rate: 2.0, seed: 1 },
            &[],
            &[],
            Duration::ZERO,
            true,
        );
        assert_eq!(r.requests.total, 0);
        assert_eq!(r.latency.ttft, None);
        assert_eq!(r.throughput.requests_per_sec, 0.0);
        assert!(r.to_text().contains("(cancelled)"));
        assert!(r.to_text().contains("Poisson arrivals at 2 requests/s"));
    }
}
