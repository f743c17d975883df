//! What a load run does: how requests arrive, when the run stops, and what each request asks
//! the engine for.

use std::time::Duration;

use serde::Serialize;

use super::error::LoadgenError;

/// How requests are issued.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Arrival {
    /// Closed loop: `concurrency` clients, each sending its next request as soon as its
    /// previous one finished. The offered load adapts to the server's speed.
    Closed { concurrency: usize },
    /// Open loop: requests arrive as a Poisson process at `rate` requests per second whatever
    /// the server does (exponential inter-arrival times drawn from an RNG seeded by `seed`).
    Poisson { rate: f64, seed: u64 },
}

/// When the run stops issuing requests. Both unset: only cancellation stops it.
/// Requests in flight when a limit is reached finish and are counted; requests in flight when
/// the run is cancelled are dropped and not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StopAfter {
    /// Stop after this many requests were issued.
    pub requests: Option<u64>,
    /// Stop issuing requests this long after the start.
    #[serde(serialize_with = "serialize_opt_secs")]
    pub duration: Option<Duration>,
}

/// The prompt every request sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// This many words of filler text, different for each request (drawn from an RNG seeded
    /// by the run's seed and the request's index) so the prefix cache does not serve them.
    Words(usize),
    /// This exact text for every request.
    Text(String),
}

/// What each request asks the engine for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestSettings {
    /// The served model name; empty lets the engine use the one model it serves (gRPC) and is
    /// sent as is over HTTP.
    pub model: String,
    pub prompt: Prompt,
    /// Most tokens to generate per request.
    pub max_tokens: u32,
    /// Keep generating past end-of-sequence tokens so every request produces `max_tokens`.
    pub ignore_eos: bool,
    /// Sampling temperature; `None` takes the engine's default (greedy).
    pub temperature: Option<f32>,
    /// A request that takes longer than this fails with an error; `None`: no limit.
    #[serde(serialize_with = "serialize_opt_secs")]
    pub timeout: Option<Duration>,
}

impl Default for RequestSettings {
    fn default() -> Self {
        Self {
            model: String::new(),
            prompt: Prompt::Words(32),
            max_tokens: 64,
            ignore_eos: true,
            temperature: None,
            timeout: None,
        }
    }
}

/// A whole load run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadConfig {
    pub arrival: Arrival,
    pub stop: StopAfter,
    pub request: RequestSettings,
    /// Seeds the filler prompts (and, for Poisson arrivals, nothing else: that has its own).
    pub seed: u64,
}

impl LoadConfig {
    /// Refuses settings a run cannot honour.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        match self.arrival {
            Arrival::Closed { concurrency: 0 } => {
                return Err(LoadgenError::Config(
                    "concurrency must be at least 1".into(),
                ));
            }
            Arrival::Poisson { rate, .. } if !(rate.is_finite() && rate > 0.0) => {
                return Err(LoadgenError::Config(format!(
                    "the arrival rate must be a positive number of requests per second, got {rate}"
                )));
            }
            _ => {}
        }
        if self.stop.requests == Some(0) {
            return Err(LoadgenError::Config("--requests must be at least 1".into()));
        }
        if self.stop.duration == Some(Duration::ZERO) {
            return Err(LoadgenError::Config(
                "the duration must be above zero".into(),
            ));
        }
        if self.request.max_tokens == 0 {
            return Err(LoadgenError::Config("max_tokens must be at least 1".into()));
        }
        if let Prompt::Text(text) = &self.request.prompt
            && text.is_empty()
        {
            return Err(LoadgenError::Config("the prompt text is empty".into()));
        }
        if self.request.prompt == Prompt::Words(0) {
            return Err(LoadgenError::Config(
                "the prompt needs at least one word".into(),
            ));
        }
        Ok(())
    }
}

/// Parses `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 500ms, 30s, 2m, 1h)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}` (ms, s, m, h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

fn serialize_opt_secs<S: serde::Serializer>(
    value: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => serializer.serialize_some(&d.as_secs_f64()),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LoadConfig {
        LoadConfig {
            arrival: Arrival::Closed { concurrency: 2 },
            stop: StopAfter {
                requests: Some(10),
                duration: None,
            },
            request: RequestSettings::default(),
            seed: 0,
        }
    }

    #[test]
    fn durations_parse_with_units_and_as_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn validation_refuses_zero_concurrency_bad_rates_and_empty_prompts() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.arrival = Arrival::Closed { concurrency: 0 };
        assert!(c.validate().is_err());
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut c = config();
            c.arrival = Arrival::Poisson { rate, seed: 1 };
            assert!(c.validate().is_err(), "rate {rate}");
        }
        let mut c = config();
        c.request.prompt = Prompt::Text(String::new());
        assert!(c.validate().is_err());
        let mut c = config();
        c.request.max_tokens = 0;
        assert!(c.validate().is_err());
        let mut c = config();
        c.stop.requests = Some(0);
        assert!(c.validate().is_err());
    }
}
