//! A request's sampler: its validated parameters plus its own random stream.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::logits::{
    apply_frequency_presence, apply_repetition_penalty, argmax, candidate_distribution, draw,
};
use super::{PositionLogprobs, SamplingParams, position_logprobs};
use crate::backend::kernels::TokenPick;

/// The token picked for one step, with log-probabilities when the request asked for them.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub token: u32,
    /// The chosen token's log-probability (after penalties, before temperature and
    /// filtering, as OpenAI reports it) and the top alternatives, most likely first.
    pub logprobs: Option<PositionLogprobs>,
}

/// Picks tokens for one request. Everything random comes from the request's own ChaCha
/// stream, so a seed fixes the output regardless of what else shares the batch.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    output_counts: HashMap<u32, u32>,
}

impl Sampler {
    /// A sampler for `params`, which the engine has already validated (see
    /// `SamplingParams::validate`, called once for a request at the edge).
    pub fn new(params: SamplingParams) -> Self {
        let seed = params
            .seed
            .unwrap_or_else(|| RandomState::new().hash_one(0u8));
        Sampler {
            rng: ChaCha8Rng::seed_from_u64(seed),
            params,
            output_counts: HashMap::new(),
        }
    }

    /// The sampler of choice `index` of a request that asked for several: a seeded request's
    /// choices each draw from a stream of their own, derived from the seed, so they differ
    /// from one another and still repeat run to run.
    pub fn for_choice(params: SamplingParams, index: u32) -> Self {
        let seed = params.seed.map(|s| s.wrapping_add(u64::from(index)));
        Sampler::new(SamplingParams { seed, ..params })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Whether the next token can be picked where the logits are: nothing this sampler
    /// does needs the whole row on the host (no penalties, no log-probabilities).
    pub fn can_pick_on_device(&self) -> bool {
        let p = &self.params;
        p.repetition_penalty == 1.0
            && p.frequency_penalty == 0.0
            && p.presence_penalty == 0.0
            && p.logprobs.is_none()
            && p.prompt_logprobs.is_none()
            && p.grammar.is_none()
    }

    /// The device's pick of the next token, as [`Self::sample`] would make it: a sampled
    /// pick takes its uniform number from this request's stream, as `sample` does. Pass
    /// the picked token to [`Self::record`].
    pub fn device_pick(&mut self) -> TokenPick {
        let p = &self.params;
        if p.is_greedy() {
            TokenPick::Greedy
        } else {
            TokenPick::Sample {
                temperature: p.temperature,
                top_k: u32::try_from(p.top_k).unwrap_or(u32::MAX),
                top_p: p.top_p,
                min_p: p.min_p,
                uniform: uniform(&mut self.rng),
            }
        }
    }

    /// Remembers a token picked on the device (for the output penalties, as `sample` does).
    pub fn record(&mut self, token: u32) {
        *self.output_counts.entry(token).or_insert(0) += 1;
    }

    /// Picks the next token from `logits`, given every token the model has seen so far
    /// (`prompt` then `output`), and remembers it for the output penalties.
    pub fn sample(&mut self, logits: &[f32], prompt: &[u32], output: &[u32]) -> SampledToken {
        let p = &self.params;
        let needs_copy =
            p.repetition_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0;
        let owned;
        let logits: &[f32] = if needs_copy {
            let mut l = logits.to_vec();
            if p.repetition_penalty != 1.0 {
                apply_repetition_penalty(&mut l, prompt, p.repetition_penalty);
                apply_repetition_penalty(&mut l, output, p.repetition_penalty);
            }
            apply_frequency_presence(
                &mut l,
                &self.output_counts,
                p.frequency_penalty,
                p.presence_penalty,
            );
            owned = l;
            &owned
        } else {
            logits
        };

        let token = if p.is_greedy() {
            argmax(logits)
        } else {
            let candidates =
                candidate_distribution(logits, p.temperature, p.top_k, p.top_p, p.min_p);
            draw(&candidates, uniform(&mut self.rng)).unwrap_or_else(|| argmax(logits))
        };

        let logprobs = p.logprobs.map(|n| position_logprobs(logits, token, n));
        *self.output_counts.entry(token).or_insert(0) += 1;
        SampledToken { token, logprobs }
    }
}

/// A uniform number in `[0, 1)` from the top 53 bits of the stream's next word.
fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::logits::top_n;

    /// A fixed, fairly flat distribution over 50 tokens.
    fn row() -> Vec<f32> {
        (0..50).map(|i| ((i * 37 % 50) as f32) / 25.0).collect()
    }

    fn run(params: SamplingParams, steps: usize) -> Vec<u32> {
        let mut sampler = Sampler::new(params);
        let mut out = Vec::new();
        for _ in 0..steps {
            let t = sampler.sample(&row(), &[], &out).token;
            out.push(t);
        }
        out
    }

    #[test]
    fn a_device_pick_picks_what_sample_picks_from_the_same_stream() {
        for params in [
            SamplingParams::greedy(),
            SamplingParams {
                temperature: 0.8,
                top_k: 20,
                top_p: 0.9,
                seed: Some(3),
                ..Default::default()
            },
        ] {
            let (mut host, mut device) = (Sampler::new(params.clone()), Sampler::new(params));
            assert!(device.can_pick_on_device());
            for _ in 0..20 {
                let expected = host.sample(&row(), &[], &[]).token;
                let token = device.device_pick().pick(&row());
                device.record(token);
                assert_eq!(token, expected);
            }
            assert_eq!(device.output_counts, host.output_counts);
        }
        let penalised = SamplingParams {
            repetition_penalty: 1.2,
            ..Default::default()
        };
        assert!(!Sampler::new(penalised).can_pick_on_device());
    }

    #[test]
    fn greedy_picks_the_arg_max_every_time() {
        let out = run(SamplingParams::greedy(), 5);
        assert_eq!(out, vec![argmax(&row()); 5]);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_different_tokens() {
        let params = |seed| SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..Default::default()
        };
        let a = run(params(7), 40);
        assert_eq!(a, run(params(7), 40));
        assert_ne!(a, run(params(8), 40));
        // Sampling really samples: a flat row does not give one token forever.
        assert!(a.iter().any(|&t| t != a[0]));
    }

    #[test]
    fn top_k_one_is_greedy_even_when_hot() {
        let params = SamplingParams {
            temperature: 5.0,
            top_k: 1,
            seed: Some(1),
            ..Default::default()
        };
        assert_eq!(run(params, 10), vec![argmax(&row()); 10]);
    }

    #[test]
    fn sampled_tokens_stay_inside_the_top_k() {
        let top: Vec<u32> = top_n(&row(), 3).into_iter().map(|t| t.0).collect();
        let params = SamplingParams {
            temperature: 2.0,
            top_k: 3,
            seed: Some(3),
            ..Default::default()
        };
        assert!(run(params, 100).iter().all(|t| top.contains(t)));
    }

    #[test]
    fn presence_penalty_stops_greedy_repeating() {
        let params = SamplingParams {
            presence_penalty: 2.0,
            ..Default::default()
        };
        let out = run(params, 3);
        assert_ne!(out[0], out[1]);
        assert_ne!(out[1], out[2]);
    }

    #[test]
    fn repetition_penalty_applies_to_prompt_tokens() {
        let best = argmax(&row());
        let mut sampler = Sampler::new(SamplingParams {
            repetition_penalty: 10.0,
            ..Default::default()
        });
        assert_ne!(sampler.sample(&row(), &[best], &[]).token, best);
    }

    #[test]
    fn logprobs_report_chosen_and_top_alternatives() {
        let mut sampler = Sampler::new(SamplingParams {
            logprobs: Some(3),
            ..Default::default()
        });
        let sampled = sampler.sample(&row(), &[], &[]);
        let PositionLogprobs { chosen, top } = sampled.logprobs.expect("asked for");
        assert_eq!(chosen.token, sampled.token);
        assert_eq!(top.len(), 3);
        assert_eq!(top[0], chosen);
        assert!(top[0].logprob >= top[1].logprob && top[1].logprob >= top[2].logprob);
        assert!(chosen.logprob < 0.0);
    }
}
