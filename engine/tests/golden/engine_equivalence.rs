//! The engine's scheduling must never change what the model says: on the demo model,
//! greedy outputs are identical whether a request runs alone or batched with others that
//! arrive at other times, whether its prompt comes from the prefix cache or is computed,
//! and whether it was preempted and recomputed halfway.

use std::sync::{Arc, OnceLock};

use crate::support::demo_model_dir;
use modelfleet_engine::backend::KvCacheShape;
use modelfleet_engine::backend::cpu::{CpuConfig, CpuModel};
use modelfleet_engine::backend::kernels::KvCacheDtype;
use modelfleet_engine::engine::{
    Engine, EngineConfig, EngineHandle, FinishReason, GenerationRequest, ModelSpec, RequestId,
    StopParams,
};
use modelfleet_engine::model::{LoadedModel, ModelConfig, Tokenizer};
use modelfleet_engine::sampling::SamplingParams;
use modelfleet_engine::scheduler::SchedulerConfig;

/// Blocks for engines that should never run short of KV cache in these tests.
const ROOMY: usize = 128;

/// The demo model, loaded once for every test of this file.
struct DemoModel {
    config: ModelConfig,
    /// The weights as stored (quantised), shared by every engine of the tests.
    placed: CpuModel,
    tokenizer: Arc<Tokenizer>,
}

impl DemoModel {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.tokenizer
            .encode(text)
            .expect("the demo tokenizer encodes plain text")
    }

    /// A fresh engine (empty KV cache of `num_blocks` blocks of 16 tokens) on the CPU backend.
    fn engine(&self, num_blocks: usize, config: EngineConfig) -> Engine {
        let shape = KvCacheShape {
            num_blocks,
            block_size: 16,
        };
        let backend = self
            .placed
            .backend(shape, KvCacheDtype::F16)
            .expect("backend");
        let spec = ModelSpec {
            decoder: self.tokenizer.clone(),
            eos_token_ids: self.config.eos_token_ids.clone(),
            vocab_size: self.config.vocab_size,
        };
        Engine::new(Box::new(backend), spec, config)
    }
}

fn demo_model() -> &'static DemoModel {
    static DEMO: OnceLock<DemoModel> = OnceLock::new();
    DEMO.get_or_init(|| {
        let dir = demo_model_dir();
        assert!(
            dir.exists(),
            "the demo model is not at {}: run `make tools` (or `bash scripts/tools.sh model`), \
             or point MODELFLEET_DEMO_MODEL at it",
            dir.display()
        );
        let model = LoadedModel::load(&dir)
            .unwrap_or_else(|e| panic!("loading the demo model at {}: {e}", dir.display()));
        let placed = CpuModel::place(&model, CpuConfig::default()).expect("places");
        DemoModel {
            config: model.config,
            placed,
            tokenizer: Arc::new(model.tokenizer),
        }
    })
}

/// Everything one request produced.
#[derive(Debug, Clone, PartialEq)]
struct Generated {
    tokens: Vec<u32>,
    text: String,
    finish: Option<FinishReason>,
    cached_prompt_tokens: usize,
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        prompt_token_ids: prompt,
        sampling: SamplingParams::greedy(),
        stop: StopParams {
            max_tokens,
            ignore_eos: true,
            ..Default::default()
        },
    }
}

/// Runs requests that arrive at given steps (`(arrival step, request)`) to completion.
fn run(engine: &mut Engine, arrivals: Vec<(usize, GenerationRequest)>) -> Vec<Generated> {
    let mut results = vec![
        Generated {
            tokens: vec![],
            text: String::new(),
            finish: None,
            cached_prompt_tokens: 0
        };
        arrivals.len()
    ];
    let mut pending: Vec<(usize, RequestId, GenerationRequest)> = arrivals
        .into_iter()
        .enumerate()
        .map(|(i, (at, r))| (at, i as RequestId, r))
        .collect();
    let mut step = 0;
    while !pending.is_empty() || engine.has_unfinished() {
        let (now, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(at, ..)| *at <= step);
        pending = later;
        for (_, id, request) in now {
            engine.add_request(id, request).expect("valid request");
        }
        for output in engine.step().expect("step runs") {
            let r = &mut results[output.request_id as usize];
            r.tokens.push(output.token_id);
            r.text.push_str(&output.text);
            r.finish = output.finish_reason;
            r.cached_prompt_tokens = output.usage.cached_prompt_tokens;
        }
        step += 1;
        assert!(step < 10_000, "generation makes progress");
    }
    results
}

fn alone(model: &DemoModel, prompt: &[u32], max_tokens: usize) -> Generated {
    let mut engine = model.engine(ROOMY, EngineConfig::default());
    run(&mut engine, vec![(0, greedy(prompt.to_vec(), max_tokens))]).remove(0)
}

#[test]
fn greedy_continuation_of_the_capital_of_france_is_paris() {
    let model = demo_model();
    let prompt = model.encode("The capital of France is");
    assert_eq!(prompt, vec![504, 3575, 282, 4649, 314]);
    let out = alone(model, &prompt, 2);
    assert_eq!(out.tokens, vec![7042, 30]);
    assert_eq!(out.text, " Paris.");
    assert_eq!(out.finish, Some(FinishReason::Length));
}

#[test]
fn batched_generation_with_staggered_arrivals_equals_one_at_a_time() {
    let model = demo_model();
    let prompts = [
        "The capital of France is",
        "Write a short poem about the sea. The waves",
        "In 1969, the first humans landed on the Moon. The mission was called Apollo 11 and it \
         was commanded by Neil Armstrong, who was the first",
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n",
        "Once upon a time",
    ];
    let prompts: Vec<Vec<u32>> = prompts.iter().map(|p| model.encode(p)).collect();
    let expected: Vec<Generated> = prompts.iter().map(|p| alone(model, p, 12)).collect();

    // A small token budget chunks the long prompts while others decode.
    let config = EngineConfig {
        scheduler: SchedulerConfig {
            max_num_batched_tokens: 24,
            max_num_seqs: 8,
        },
        enable_prefix_caching: true,
    };
    let mut engine = model.engine(ROOMY, config);
    let arrivals = [0, 0, 1, 3, 6];
    let batched = run(
        &mut engine,
        prompts
            .iter()
            .zip(arrivals)
            .map(|(p, at)| (at, greedy(p.clone(), 12)))
            .collect(),
    );
    for (i, (got, want)) in batched.iter().zip(&expected).enumerate() {
        assert_eq!(got.tokens, want.tokens, "prompt {i}: tokens");
        assert_eq!(got.text, want.text, "prompt {i}: text");
    }
}

#[test]
fn prefix_cache_hit_yields_the_output_of_a_miss() {
    let model = demo_model();
    let system = "You are a helpful assistant who answers questions about geography, history \
                  and science in one short sentence. Question:";
    let first = model.encode(&format!("{system} What is the largest ocean on Earth?"));
    let second = model.encode(&format!("{system} Who painted the Mona Lisa?"));
    let miss_first = alone(model, &first, 10);
    let miss_second = alone(model, &second, 10);
    assert_eq!(miss_second.cached_prompt_tokens, 0);

    let mut engine = model.engine(ROOMY, EngineConfig::default());
    let warm = run(&mut engine, vec![(0, greedy(first.clone(), 10))]).remove(0);
    assert_eq!(warm.tokens, miss_first.tokens);
    // Same prompt again: every full block but the one holding the last token is reused.
    let again = run(&mut engine, vec![(0, greedy(first.clone(), 10))]).remove(0);
    assert_eq!(again.cached_prompt_tokens, (first.len() - 1) / 16 * 16);
    assert!(again.cached_prompt_tokens > 0);
    assert_eq!(again.tokens, miss_first.tokens);
    // A different question after the same system prompt reuses the shared blocks.
    let shared = first
        .iter()
        .zip(&second)
        .take_while(|(a, b)| a == b)
        .count();
    let hit = run(&mut engine, vec![(0, greedy(second.clone(), 10))]).remove(0);
    assert_eq!(hit.cached_prompt_tokens, shared / 16 * 16);
    assert!(
        hit.cached_prompt_tokens > 0,
        "the shared system prompt spans a full block"
    );
    assert_eq!(hit.tokens, miss_second.tokens);
    assert_eq!(hit.text, miss_second.text);
}

#[test]
fn preemption_and_resume_yield_the_uninterrupted_output() {
    let model = demo_model();
    let prompts: Vec<Vec<u32>> = [
        "The history of the Roman Empire begins",
        "Photosynthesis is the process by which plants",
        "The three primary colors are",
    ]
    .iter()
    .map(|p| model.encode(p))
    .collect();
    let max_tokens = 40;
    let expected: Vec<Generated> = prompts
        .iter()
        .map(|p| alone(model, p, max_tokens))
        .collect();

    // Each request needs up to 4 blocks of 16 tokens; 6 blocks cannot hold three at once,
    // and prefix caching is off so resumption recomputes everything.
    let config = EngineConfig {
        scheduler: SchedulerConfig {
            max_num_batched_tokens: 256,
            max_num_seqs: 8,
        },
        enable_prefix_caching: false,
    };
    let mut engine = model.engine(6, config);
    let got = run(
        &mut engine,
        prompts
            .iter()
            .map(|p| (0, greedy(p.clone(), max_tokens)))
            .collect(),
    );
    assert!(
        engine.stats().preemptions_total > 0,
        "the tiny cache forced preemption"
    );
    assert_eq!(
        engine.stats().kv_cache_usage,
        0.0,
        "finished requests free every block"
    );
    for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(got.tokens, want.tokens, "prompt {i}: tokens");
    }
}

#[test]
fn threaded_handle_streams_the_same_tokens_and_abort_frees_blocks() {
    let model = demo_model();
    let prompt = model.encode("The capital of France is");
    let expected = alone(model, &prompt, 8);
    let handle =
        EngineHandle::spawn(model.engine(ROOMY, EngineConfig::default())).expect("thread starts");

    // A long request that will be abandoned, and one read to the end.
    let mut abandoned = handle
        .generate(greedy(prompt.clone(), 1000))
        .expect("engine running");
    let mut stream = handle
        .generate(greedy(prompt.clone(), 8))
        .expect("engine running");
    let first = abandoned
        .blocking_next()
        .expect("an output")
        .expect("valid request");
    assert_eq!(first.token_id, expected.tokens[0]);
    let mut tokens = Vec::new();
    while let Some(output) = stream.blocking_next() {
        tokens.push(output.expect("valid request").token_id);
    }
    assert_eq!(tokens, expected.tokens);
    drop(abandoned);
    // The abort is taken before the next step; wait for the loop to go idle.
    let mut idle = false;
    for _ in 0..500 {
        let stats = handle.stats();
        if stats.running == 0 && stats.waiting == 0 {
            idle = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(idle, "the abandoned request was aborted");
    assert_eq!(handle.stats().kv_cache_usage, 0.0);

    let invalid = SamplingParams {
        top_p: 0.0,
        ..SamplingParams::greedy()
    };
    let mut refused = handle
        .generate(GenerationRequest {
            sampling: invalid,
            ..greedy(prompt, 4)
        })
        .expect("engine running");
    assert!(refused.blocking_next().expect("an answer").is_err());
    handle.shutdown();
}

#[test]
fn seeded_sampling_is_reproducible_and_unaffected_by_batching() {
    let model = demo_model();
    let sampled = |seed| GenerationRequest {
        prompt_token_ids: model.encode("Once upon a time"),
        sampling: SamplingParams {
            temperature: 1.0,
            top_p: 0.95,
            top_k: 50,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        stop: StopParams {
            max_tokens: 24,
            ignore_eos: true,
            ..Default::default()
        },
    };
    let once = |request| {
        run(
            &mut model.engine(ROOMY, EngineConfig::default()),
            vec![(0, request)],
        )
    };
    let first = once(sampled(7)).remove(0);
    assert_eq!(
        once(sampled(7)).remove(0).tokens,
        first.tokens,
        "same seed, same output"
    );
    assert_ne!(
        once(sampled(8)).remove(0).tokens,
        first.tokens,
        "another seed, another output"
    );

    // Sharing the batch with other requests, arriving later, does not touch its stream.
    let prompt = model.encode("The capital of France is");
    let mut engine = model.engine(ROOMY, EngineConfig::default());
    let batched = run(
        &mut engine,
        vec![
            (0, greedy(prompt.clone(), 10)),
            (2, sampled(7)),
            (3, sampled(9)),
        ],
    );
    assert_eq!(batched[1].tokens, first.tokens);
}

#[test]
fn stop_strings_end_generation_and_stay_out_of_the_text() {
    let model = demo_model();
    let request = GenerationRequest {
        prompt_token_ids: model.encode("The capital of France is"),
        sampling: SamplingParams::greedy(),
        stop: StopParams {
            max_tokens: 20,
            stop: vec![".".into()],
            ..Default::default()
        },
    };
    let mut engine = model.engine(ROOMY, EngineConfig::default());
    let out = run(&mut engine, vec![(0, request)]).remove(0);
    assert_eq!(out.text, " Paris");
    assert_eq!(out.tokens, vec![7042, 30]);
    assert_eq!(out.finish, Some(FinishReason::StopString(".".into())));
    assert_eq!(engine.stats().kv_cache_usage, 0.0);
}
