//! The demo model (SmolLM2-135M-Instruct, Q4_1 GGUF) against transformers loading the same
//! file: the same greedy continuations and the same tokenizer ids.

use std::path::PathBuf;
use std::sync::Arc;

use modelfleet_engine::backend::KvCacheShape;
use modelfleet_engine::backend::cpu::linear::WeightDtype;
use modelfleet_engine::backend::cpu::{CpuConfig, CpuModel};
use modelfleet_engine::backend::kernels::KvCacheDtype;
use modelfleet_engine::detokenizer::Decode;
use modelfleet_engine::engine::{Engine, EngineConfig, GenerationRequest, ModelSpec, StopParams};
use modelfleet_engine::model::LoadedModel;
use modelfleet_engine::sampling::SamplingParams;
use serde::Deserialize;

#[derive(Deserialize)]
struct Continuation {
    prompt: String,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Tokenized {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct DemoReference {
    continuations: Vec<Continuation>,
    tokenizer: Vec<Tokenized>,
}

fn reference() -> DemoReference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/demo-model.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("demo-model.json")).expect("parses")
}

fn demo_model_dir() -> PathBuf {
    let dir = crate::support::demo_model_dir();
    assert!(
        dir.join("model.gguf").is_file(),
        "no demo model in {}: run `make tools`",
        dir.display()
    );
    dir
}

/// transformers dequantises the GGUF to float32 and computes in float32: so does the
/// engine with `--dtype float32`, and the continuations are the same token for token.
#[test]
fn greedy_continuations_in_float32_equal_transformers() {
    let model = LoadedModel::load(&demo_model_dir()).expect("demo model loads");
    let spec = ModelSpec {
        decoder: Arc::new(model.tokenizer.clone_handle()),
        eos_token_ids: model.config.eos_token_ids.clone(),
        vocab_size: model.config.vocab_size,
    };
    let shape = KvCacheShape {
        num_blocks: 64,
        block_size: 16,
    };
    let config = CpuConfig {
        weight_dtype: WeightDtype::F32,
        ..CpuConfig::default()
    };
    let backend = CpuModel::place(&model, config)
        .expect("places")
        .backend(shape, KvCacheDtype::F32)
        .expect("backend");
    let mut engine = Engine::new(Box::new(backend), spec, EngineConfig::default());
    let cases = reference().continuations;
    for (id, case) in cases.iter().enumerate() {
        assert_eq!(
            model.tokenizer.encode(&case.prompt).expect("encodes"),
            case.prompt_ids,
            "prompt ids of {:?}",
            case.prompt
        );
        let request = GenerationRequest {
            prompt_token_ids: case.prompt_ids.clone(),
            sampling: SamplingParams::greedy(),
            stop: StopParams {
                max_tokens: case.generated_ids.len(),
                ignore_eos: true,
                ..Default::default()
            },
        };
        engine.add_request(id as u64, request).expect("request");
    }
    let mut generated = vec![Vec::new(); cases.len()];
    while engine.has_unfinished() {
        for output in engine.step().expect("step") {
            generated[output.request_id as usize].push(output.token_id);
        }
    }
    for (case, ours) in cases.iter().zip(generated) {
        assert_eq!(
            ours, case.generated_ids,
            "greedy continuation of {:?}",
            case.prompt
        );
    }
}

#[test]
fn tokenizer_equals_transformers_on_varied_text() {
    let model = LoadedModel::load(&demo_model_dir()).expect("demo model loads");
    for case in reference().tokenizer {
        let ids = model.tokenizer.encode(&case.text).expect("encodes");
        assert_eq!(ids, case.ids, "ids of {:?}", case.text);
        assert_eq!(
            model.tokenizer.decode(&ids).expect("decodes"),
            case.text,
            "round trip of {:?}",
            case.text
        );
    }
}

/// The quantised path (weights as the GGUF stores them, activations quantised to int8 per
/// block of 32, an f16 KV cache) against the float32 reference on the same file, at every
/// position of the demo prompts and their continuations. Stated tolerance, as
/// distributions over the next token: mean KL divergence at most `MEAN_KL`, at most
/// `MAX_KL` at any position, no logit further than `MAX_LOGIT_DIFFERENCE` of the row's
/// largest magnitude, and the same most likely token wherever the reference's top two are
/// not a near tie.
#[test]
fn quantised_logits_stay_close_to_the_float32_reference() {
    // Measured on the demo model (SmolLM2-135M, Q4_1 with a Q8_0 embedding): mean KL
    // 0.004 nats, at most 0.025; logits within 6% of the row's scale; top-1 differs at 4
    // of 95 positions, each a near tie.
    const MEAN_KL: f64 = 0.01;
    const MAX_KL: f64 = 0.05;
    const MAX_LOGIT_DIFFERENCE: f32 = 0.1;
    const NEAR_TIE: f32 = 0.02;
    let model = LoadedModel::load(&demo_model_dir()).expect("demo model loads");
    let reference = logits_of_every_position(&model, WeightDtype::F32, KvCacheDtype::F32);
    let quantised = logits_of_every_position(&model, WeightDtype::AsStored, KvCacheDtype::F16);
    let (mut worst, mut worst_kl, mut kl_total, mut disagreements) = (0.0f32, 0.0f64, 0.0f64, 0);
    for (position, (ours, theirs)) in quantised.iter().zip(&reference).enumerate() {
        let scale = theirs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        worst = worst.max(diff / scale);
        assert!(
            diff <= MAX_LOGIT_DIFFERENCE * scale,
            "position {position}: logits differ by {diff} (scale {scale})"
        );
        let kl = kl_divergence(theirs, ours);
        assert!(kl <= MAX_KL, "position {position}: KL divergence {kl}");
        (worst_kl, kl_total) = (worst_kl.max(kl), kl_total + kl);
        let (ours_top, theirs_top) = (argmax(ours), argmax(theirs));
        if ours_top != theirs_top {
            disagreements += 1;
            let mut sorted = theirs.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            assert!(
                sorted[0] - sorted[1] <= NEAR_TIE * scale,
                "position {position}: top token {ours_top} against the reference's {theirs_top}, whose lead is {}",
                sorted[0] - sorted[1]
            );
        }
    }
    let mean_kl = kl_total / quantised.len() as f64;
    eprintln!(
        "quantised vs float32 on the demo model: mean KL {mean_kl:.5} nats (at most \
         {worst_kl:.5}), logits within {worst:.4} of the row's scale, top-1 differs at \
         {disagreements} of {} positions",
        quantised.len()
    );
    assert!(mean_kl <= MEAN_KL, "mean KL divergence {mean_kl}");
}

/// KL(p || q) of the softmax distributions of two logit rows, in nats.
fn kl_divergence(p: &[f32], q: &[f32]) -> f64 {
    let log_softmax = |row: &[f32]| -> Vec<f64> {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
        let log_total = row
            .iter()
            .map(|v| (*v as f64 - max).exp())
            .sum::<f64>()
            .ln();
        row.iter().map(|v| *v as f64 - max - log_total).collect()
    };
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Logits at every position of the demo fixtures' prompts, fed whole.
fn logits_of_every_position(
    model: &LoadedModel,
    weights: WeightDtype,
    kv: KvCacheDtype,
) -> Vec<Vec<f32>> {
    use modelfleet_engine::backend::{Backend, ForwardBatch, SequenceChunk};
    let placed = CpuModel::place(
        model,
        CpuConfig {
            weight_dtype: weights,
            ..CpuConfig::default()
        },
    )
    .expect("places");
    let mut rows = Vec::new();
    for case in reference().continuations {
        let ids: Vec<u32> = case
            .prompt_ids
            .iter()
            .chain(&case.generated_ids)
            .copied()
            .collect();
        let table: Vec<u32> = (0..ids.len().div_ceil(16) as u32).collect();
        let shape = KvCacheShape {
            num_blocks: table.len(),
            block_size: 16,
        };
        let mut backend = placed.backend(shape, kv).expect("backend");
        // One chunk per token, so every position's logits come back.
        for (position, &token) in ids.iter().enumerate() {
            let batch = ForwardBatch {
                chunks: vec![SequenceChunk {
                    token_ids: vec![token],
                    start_position: position,
                    block_table: table.clone(),
                    needs_logits: true,
                }],
            };
            rows.push(backend.forward(&batch).expect("forward").values);
        }
    }
    rows
}
