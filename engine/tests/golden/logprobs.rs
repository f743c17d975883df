//! Log-probabilities the engine reports equal `log_softmax` of Hugging Face transformers'
//! logits on the tiny Llama fixture: the prompt's (each token given those before it) and the
//! generated tokens'. And a request's `n` choices, forked from one prompt over shared KV
//! blocks, say exactly what `n` separate requests with the choices' seeds say.

use std::path::PathBuf;
use std::sync::Arc;

use modelfleet_engine::engine::{
    Engine, EngineConfig, GenerationRequest, ModelSpec, RequestOutput, StopParams,
};
use modelfleet_engine::sampling::SamplingParams;
use modelfleet_engine::scheduler::SchedulerConfig;

use crate::logits::{Fixture, backend, fixture_at};

/// Both sides compute in f32 and sum in different orders; their log-probabilities agree to
/// a few 1e-6 on this fixture, so 1e-3 is agreement up to rounding on any CPU's kernels,
/// and far below the gap between neighbouring positions' values.
const LOGPROB_TOLERANCE: f64 = 1e-3;

fn tiny_llama() -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama");
    fixture_at(&dir, &dir.join("reference.json"))
}

fn engine(fixture: &Fixture) -> Engine {
    engine_with(fixture, SchedulerConfig::default())
}

fn engine_with(fixture: &Fixture, scheduler: SchedulerConfig) -> Engine {
    let model = &fixture.model;
    let spec = ModelSpec {
        decoder: Arc::new(model.tokenizer.clone_handle()),
        eos_token_ids: model.config.eos_token_ids.clone(),
        vocab_size: model.config.vocab_size,
    };
    Engine::new(
        Box::new(backend(model)),
        spec,
        EngineConfig {
            scheduler,
            // The reference logits are computed without a prefix cache either way; this
            // keeps two identical prompts from sharing blocks through it, so any sharing
            // below is the fork's.
            enable_prefix_caching: false,
        },
    )
}

fn reference_log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
    let log_total = row
        .iter()
        .map(|v| (*v as f64 - max).exp())
        .sum::<f64>()
        .ln();
    row.iter().map(|v| *v as f64 - max - log_total).collect()
}

fn run_to_end(engine: &mut Engine) -> Vec<RequestOutput> {
    let mut outputs = Vec::new();
    for _ in 0..1000 {
        if !engine.has_unfinished() {
            return outputs;
        }
        outputs.extend(engine.step().expect("step"));
    }
    panic!("the engine did not finish within 1000 steps");
}

#[test]
fn prompt_and_token_logprobs_equal_log_softmax_of_the_reference_logits() {
    prompt_and_token_logprobs_match_with(SchedulerConfig::default());
}

#[test]
fn a_prompt_scored_in_chunks_gets_the_same_logprobs() {
    // 5 tokens a step: the 12-token prompt runs as chunks of 5, 5 and 2, the middle ones
    // without a sampling row.
    prompt_and_token_logprobs_match_with(SchedulerConfig {
        max_num_batched_tokens: 5,
        ..SchedulerConfig::default()
    });
}

fn prompt_and_token_logprobs_match_with(scheduler: SchedulerConfig) {
    let fixture = tiny_llama();
    let reference = &fixture.reference;
    let prompt: Vec<u32> = reference.token_ids[..12].to_vec();
    let mut engine = engine_with(&fixture, scheduler);
    let request = GenerationRequest {
        prompt_token_ids: prompt.clone(),
        sampling: SamplingParams {
            logprobs: Some(5),
            prompt_logprobs: Some(3),
            ..SamplingParams::greedy()
        },
        stop: StopParams {
            max_tokens: 3,
            ignore_eos: true,
            ..StopParams::default()
        },
    };
    engine.add_request(0, request).expect("valid");
    let outputs = run_to_end(&mut engine);
    assert_eq!(outputs.len(), 3);
    assert!(outputs[2].last && !outputs[1].last);

    let scored = outputs[0].prompt_logprobs.as_ref().expect("asked for");
    assert!(outputs[1].prompt_logprobs.is_none(), "sent once");
    assert_eq!(scored.len(), prompt.len());
    assert!(scored[0].is_none(), "nothing precedes the first token");
    let mut max_diff = 0.0f64;
    for position in 1..prompt.len() {
        let ours = scored[position].as_ref().expect("scored");
        let theirs = reference_log_softmax(&reference.logits[position - 1]);
        assert_eq!(ours.chosen.token, prompt[position]);
        let diff = (f64::from(ours.chosen.logprob) - theirs[prompt[position] as usize]).abs();
        max_diff = max_diff.max(diff);
        assert!(diff <= LOGPROB_TOLERANCE, "position {position}: {diff}");
        assert_eq!(ours.top.len(), 3);
        for alternative in &ours.top {
            let diff = (f64::from(alternative.logprob) - theirs[alternative.token as usize]).abs();
            assert!(diff <= LOGPROB_TOLERANCE, "position {position}: {diff}");
        }
        let best = theirs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!((f64::from(ours.top[0].logprob) - best).abs() <= LOGPROB_TOLERANCE);
    }

    // The first generated token: greedy, so the reference's arg-max, with its log-probability.
    let first = outputs[0].logprobs.as_ref().expect("asked for");
    let theirs = reference_log_softmax(&reference.logits[prompt.len() - 1]);
    let (argmax, best) =
        theirs.iter().enumerate().fold(
            (0, f64::NEG_INFINITY),
            |m, (i, &v)| if v > m.1 { (i, v) } else { m },
        );
    assert_eq!(first.chosen.token as usize, argmax);
    assert!((f64::from(first.chosen.logprob) - best).abs() <= LOGPROB_TOLERANCE);
    assert_eq!(first.top.len(), 5);
    assert_eq!(first.top[0], first.chosen);
    assert!(outputs.iter().all(|o| o.logprobs.is_some()));
    eprintln!("max |prompt logprob difference| vs transformers = {max_diff:e}");
}

#[test]
fn n_forked_choices_equal_n_separate_requests_with_their_seeds() {
    let fixture = tiny_llama();
    let prompt: Vec<u32> = fixture.reference.token_ids[..10].to_vec();
    let request = |n: usize, seed: u64| GenerationRequest {
        prompt_token_ids: prompt.clone(),
        sampling: SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            n,
            ..SamplingParams::default()
        },
        stop: StopParams {
            max_tokens: 6,
            ignore_eos: true,
            ..StopParams::default()
        },
    };
    // 10 prompt tokens fill 2 blocks of 4 and share them; 3 choices of 6 more need 4 + 2 + 2
    // blocks, all 8 the fixture's cache has: without sharing they could not run at once.
    let mut forked = engine(&fixture);
    forked
        .add_request(0, request(3, 40))
        .expect("fits with shared blocks");
    let outputs = run_to_end(&mut forked);
    assert_eq!(outputs.iter().filter(|o| o.last).count(), 1);
    assert!(outputs.last().expect("outputs").last);
    let mut choices = vec![Vec::new(); 3];
    for output in &outputs {
        assert_eq!(output.request_id, 0);
        choices[output.index as usize].push(output.token_id);
    }

    for (index, tokens) in choices.iter().enumerate() {
        let mut alone = engine(&fixture);
        alone
            .add_request(7, request(1, 40 + index as u64))
            .expect("valid");
        let expected: Vec<u32> = run_to_end(&mut alone).iter().map(|o| o.token_id).collect();
        assert_eq!(tokens, &expected, "choice {index}");
    }
    assert!(
        choices[0] != choices[1] || choices[1] != choices[2],
        "sampled choices with different seeds differ: {choices:?}"
    );
}

#[test]
fn aborting_a_request_frees_every_choice() {
    let fixture = tiny_llama();
    let mut engine = engine(&fixture);
    let request = GenerationRequest {
        prompt_token_ids: fixture.reference.token_ids[..6].to_vec(),
        sampling: SamplingParams {
            n: 2,
            ..SamplingParams::greedy()
        },
        stop: StopParams {
            max_tokens: 8,
            ignore_eos: true,
            ..StopParams::default()
        },
    };
    engine.add_request(3, request).expect("valid");
    let first = engine.step().expect("step");
    assert_eq!(first.iter().map(|o| o.index).collect::<Vec<_>>(), [0, 1]);
    assert!(engine.stats().running == 2 && engine.stats().kv_cache_usage > 0.0);
    assert!(engine.abort(3).expect("known"));
    assert!(!engine.has_unfinished());
    assert_eq!(engine.stats().kv_cache_usage, 0.0);
}
