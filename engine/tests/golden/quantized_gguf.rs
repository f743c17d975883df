//! GGUF files in every quantised format the engine reads, made by llama.cpp's own tools from
//! a tiny random-initialised Llama (scripts/golden/make_llama_cpp_fixtures.sh quantized):
//! Q8_0, Q4_0, Q4_1 and Q6_K files, and llama.cpp's Q4_K_M and Q5_K_M mixes.
//!
//! - Every tensor decodes to exactly the values gguf-py's dequantiser gives.
//! - With `--dtype float32` the logits equal transformers' on the same file (it decodes with
//!   gguf-py), fed whole, token by token and in chunks over a scattered block table.
//! - As stored (the int8 kernels), the logits stay within the stated tolerance of that
//!   float32 reference.

use std::path::PathBuf;

use modelfleet_engine::backend::cpu::linear::WeightDtype;
use modelfleet_engine::backend::cpu::{CpuBackend, CpuConfig, CpuModel};
use modelfleet_engine::backend::kernels::KvCacheDtype;
use modelfleet_engine::backend::{Backend, ForwardBatch, KvCacheShape, SequenceChunk};
use modelfleet_engine::model::LoadedModel;
use serde::Deserialize;

use crate::support::kl_divergence;

const FILES: [&str; 6] = ["Q8_0", "Q4_0", "Q4_1", "Q4_K_M", "Q5_K_M", "Q6_K"];

/// As the safetensors golden tests: f32 on both sides, different summation orders.
const RELATIVE_TOLERANCE: f32 = 1e-3;
/// The quantised path against float32 on these models, as distributions over the next
/// token. Measured on every file: mean KL at most 0.00014 nats, 0.00027 at any position.
const MEAN_KL: f64 = 0.001;
const MAX_KL: f64 = 0.002;

const BLOCK_SIZE: usize = 4;
const SCATTERED_TABLE: [u32; 7] = [9, 2, 5, 0, 3, 6, 8];

#[derive(Deserialize)]
struct Reference {
    token_ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
    tensors: Vec<Sampled>,
}

/// gguf-py's dequantised values of one tensor at sampled flat (row-major) indices.
#[derive(Deserialize)]
struct Sampled {
    name: String,
    #[serde(rename = "type")]
    format: String,
    index: Vec<usize>,
    value: Vec<f32>,
}

fn fixture(kind: &str) -> (LoadedModel, Reference) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf-quantized");
    let model = LoadedModel::load(&dir.join(format!("tiny-llama-{kind}.gguf")))
        .unwrap_or_else(|e| panic!("loading the {kind} fixture: {e}"));
    let text =
        std::fs::read_to_string(dir.join(format!("tiny-llama-{kind}.json"))).expect("reference");
    (
        model,
        serde_json::from_str(&text).expect("reference parses"),
    )
}

fn backend(model: &LoadedModel, weight_dtype: WeightDtype, kv: KvCacheDtype) -> CpuBackend {
    let config = CpuConfig {
        weight_dtype,
        ..CpuConfig::default()
    };
    CpuModel::place(model, config)
        .expect("places")
        .backend(
            KvCacheShape {
                num_blocks: 10,
                block_size: BLOCK_SIZE,
            },
            kv,
        )
        .expect("backend")
}

fn chunk(tokens: &[u32], start: usize) -> ForwardBatch {
    ForwardBatch {
        chunks: vec![SequenceChunk {
            token_ids: tokens.to_vec(),
            start_position: start,
            block_table: SCATTERED_TABLE.to_vec(),
            needs_logits: true,
            every_token_logits: false,
        }],
    }
}

/// The logits at every position, one token per step.
fn stepwise(backend: &mut CpuBackend, ids: &[u32]) -> Vec<Vec<f32>> {
    ids.iter()
        .enumerate()
        .map(|(p, &t)| backend.forward(&chunk(&[t], p)).expect("step").values)
        .collect()
}

fn assert_close(what: &str, ours: &[f32], theirs: &[f32]) {
    let scale = theirs.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff <= RELATIVE_TOLERANCE * scale,
        "{what}: logits differ by {diff} (scale {scale})"
    );
}

#[test]
fn every_tensor_decodes_to_gguf_pys_values() {
    for kind in FILES {
        let (model, reference) = fixture(kind);
        for sampled in &reference.tensors {
            let tensor = model.tensors.tensor(&sampled.name).expect("tensor");
            assert_eq!(
                tensor.format().name(),
                sampled.format,
                "{kind} {}",
                sampled.name
            );
            let values = tensor.to_f32();
            for (&i, &expected) in sampled.index.iter().zip(&sampled.value) {
                assert_eq!(values[i], expected, "{kind} {} value {i}", sampled.name);
            }
        }
    }
}

#[test]
fn in_float32_every_format_matches_transformers_however_fed() {
    for kind in FILES {
        let (model, reference) = fixture(kind);
        let ids = &reference.token_ids;
        let last = ids.len() - 1;
        let mut whole = backend(&model, WeightDtype::F32, KvCacheDtype::F32);
        let logits = whole.forward(&chunk(ids, 0)).expect("prefill");
        assert_close(
            &format!("{kind} whole"),
            logits.row(0),
            &reference.logits[last],
        );

        let mut step = backend(&model, WeightDtype::F32, KvCacheDtype::F32);
        for (p, row) in stepwise(&mut step, ids).iter().enumerate() {
            assert_close(&format!("{kind} position {p}"), row, &reference.logits[p]);
        }

        let mut chunked = backend(&model, WeightDtype::F32, KvCacheDtype::F32);
        for start in (0..ids.len()).step_by(7) {
            let end = (start + 7).min(ids.len());
            let logits = chunked
                .forward(&chunk(&ids[start..end], start))
                .expect("chunk");
            assert_close(
                &format!("{kind} chunk ending {end}"),
                logits.row(0),
                &reference.logits[end - 1],
            );
        }
    }
}

#[test]
fn as_stored_every_format_stays_close_to_its_float32_reference() {
    for kind in FILES {
        let (model, reference) = fixture(kind);
        let ids = &reference.token_ids;
        let float32 = stepwise(
            &mut backend(&model, WeightDtype::F32, KvCacheDtype::F32),
            ids,
        );
        let quantised = stepwise(
            &mut backend(&model, WeightDtype::AsStored, KvCacheDtype::F16),
            ids,
        );
        let mut kl_total = 0.0;
        let mut worst = 0.0f64;
        for (p, (ours, theirs)) in quantised.iter().zip(&float32).enumerate() {
            let kl = kl_divergence(theirs, ours);
            assert!(kl <= MAX_KL, "{kind} position {p}: KL divergence {kl}");
            worst = worst.max(kl);
            kl_total += kl;
        }
        let mean = kl_total / ids.len() as f64;
        eprintln!("{kind}: int8 kernels vs float32, mean KL {mean:.5} nats, at most {worst:.5}");
        assert!(mean <= MEAN_KL, "{kind}: mean KL divergence {mean}");
    }
}
