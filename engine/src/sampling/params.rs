//! Sampling parameters and their validation at the edge.

use super::CompiledGrammar;

/// Most alternatives a request may ask log-probabilities for.
pub const MAX_LOGPROBS: usize = 20;

/// Most choices (`n`) one request may ask for.
pub const MAX_CHOICES: usize = 16;

/// How a request picks each token. Defaults are greedy decoding with no penalties.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (arg-max); otherwise logits are divided by it before the draw.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: f32,
    /// Multiplicative penalty on tokens already in the prompt or output (1 = none).
    pub repetition_penalty: f32,
    /// Subtracted from a token's logit once per occurrence in the output.
    pub frequency_penalty: f32,
    /// Subtracted from a token's logit if it occurs in the output at all.
    pub presence_penalty: f32,
    /// Seed of the request's random stream; `None` draws a fresh one.
    pub seed: Option<u64>,
    /// Also report log-probabilities of the chosen token and this many top alternatives.
    pub logprobs: Option<usize>,
    /// Also report the log-probability of every prompt token after the first, given the
    /// tokens before it, and this many top alternatives at each position.
    pub prompt_logprobs: Option<usize>,
    /// Independent choices to generate from the one prompt (they share its KV blocks).
    pub n: usize,
    /// A grammar the output must follow (structured output), compiled at the edge.
    pub grammar: Option<CompiledGrammar>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            logprobs: None,
            prompt_logprobs: None,
            n: 1,
            grammar: None,
        }
    }
}

/// A sampling parameter outside the range it has meaning in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("temperature must be a finite number in [0, 100], got {0}")]
    Temperature(f32),
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
    #[error("min_p must be in [0, 1], got {0}")]
    MinP(f32),
    #[error("repetition_penalty must be a finite number > 0, got {0}")]
    RepetitionPenalty(f32),
    #[error("frequency_penalty must be in [-2, 2], got {0}")]
    FrequencyPenalty(f32),
    #[error("presence_penalty must be in [-2, 2], got {0}")]
    PresencePenalty(f32),
    #[error("logprobs may ask for at most {MAX_LOGPROBS} alternatives, got {0}")]
    Logprobs(usize),
    #[error("prompt logprobs may ask for at most {MAX_LOGPROBS} alternatives, got {0}")]
    PromptLogprobs(usize),
    #[error("n must be between 1 and {MAX_CHOICES}, got {0}")]
    Choices(usize),
}

impl SamplingError {
    /// The request field the error is about, as both APIs name it.
    pub fn param(&self) -> &'static str {
        match self {
            Self::Temperature(_) => "temperature",
            Self::TopP(_) => "top_p",
            Self::MinP(_) => "min_p",
            Self::RepetitionPenalty(_) => "repetition_penalty",
            Self::FrequencyPenalty(_) => "frequency_penalty",
            Self::PresencePenalty(_) => "presence_penalty",
            Self::Logprobs(_) | Self::PromptLogprobs(_) => "logprobs",
            Self::Choices(_) => "n",
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Checks every field; the first bad one is reported.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        if !(t.is_finite() && (0.0..=100.0).contains(&t)) {
            return Err(SamplingError::Temperature(t));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::TopP(self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(SamplingError::MinP(self.min_p));
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(SamplingError::RepetitionPenalty(r));
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return Err(SamplingError::FrequencyPenalty(self.frequency_penalty));
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return Err(SamplingError::PresencePenalty(self.presence_penalty));
        }
        if let Some(n) = self.logprobs.filter(|&n| n > MAX_LOGPROBS) {
            return Err(SamplingError::Logprobs(n));
        }
        if let Some(n) = self.prompt_logprobs.filter(|&n| n > MAX_LOGPROBS) {
            return Err(SamplingError::PromptLogprobs(n));
        }
        if !(1..=MAX_CHOICES).contains(&self.n) {
            return Err(SamplingError::Choices(self.n));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_greedy() {
        assert_eq!(SamplingParams::default().validate(), Ok(()));
        assert!(SamplingParams::default().is_greedy());
    }

    #[test]
    fn each_out_of_range_field_is_named() {
        let base = SamplingParams::default();
        let cases = [
            (
                SamplingParams {
                    temperature: -0.1,
                    ..base.clone()
                },
                SamplingError::Temperature(-0.1),
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..base.clone()
                },
                SamplingError::TopP(0.0),
            ),
            (
                SamplingParams {
                    top_p: 1.5,
                    ..base.clone()
                },
                SamplingError::TopP(1.5),
            ),
            (
                SamplingParams {
                    min_p: 2.0,
                    ..base.clone()
                },
                SamplingError::MinP(2.0),
            ),
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..base.clone()
                },
                SamplingError::RepetitionPenalty(0.0),
            ),
            (
                SamplingParams {
                    frequency_penalty: 3.0,
                    ..base.clone()
                },
                SamplingError::FrequencyPenalty(3.0),
            ),
            (
                SamplingParams {
                    presence_penalty: -3.0,
                    ..base.clone()
                },
                SamplingError::PresencePenalty(-3.0),
            ),
            (
                SamplingParams {
                    logprobs: Some(21),
                    ..base.clone()
                },
                SamplingError::Logprobs(21),
            ),
            (
                SamplingParams {
                    prompt_logprobs: Some(21),
                    ..base.clone()
                },
                SamplingError::PromptLogprobs(21),
            ),
            (
                SamplingParams {
                    n: 0,
                    ..base.clone()
                },
                SamplingError::Choices(0),
            ),
            (
                SamplingParams {
                    n: MAX_CHOICES + 1,
                    ..base.clone()
                },
                SamplingError::Choices(MAX_CHOICES + 1),
            ),
        ];
        for (params, error) in cases {
            assert_eq!(params.validate(), Err(error));
        }
        let nan = SamplingParams {
            temperature: f32::NAN,
            ..base
        };
        assert!(matches!(nan.validate(), Err(SamplingError::Temperature(_))));
    }
}
