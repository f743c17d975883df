//! Logits equal Hugging Face transformers' on small random-initialised Llama and Qwen2
//! models (f32, bf16 weights, sharded safetensors, llama3 RoPE scaling, tied embeddings,
//! QKV bias), however the prompt is fed: whole, token by token, or in chunks over a
//! scattered block table. Fixtures: scripts/golden/make_fixtures.sh.

use std::path::{Path, PathBuf};

use modelfleet_engine::backend::cpu::{CpuBackend, CpuConfig, CpuModel};
use modelfleet_engine::backend::kernels::KvCacheDtype;
use modelfleet_engine::backend::{Backend, ForwardBatch, KvCacheShape, SequenceChunk};
use modelfleet_engine::model::LoadedModel;
use serde::Deserialize;

/// Both sides compute in f32 but sum in different orders; logits of these models reach
/// magnitudes of ~10, so agreement to 1e-3 relative is agreement up to rounding.
const RELATIVE_TOLERANCE: f32 = 1e-3;

const BLOCK_SIZE: usize = 4;
/// Blocks in deliberately scattered order, so the test proves reads go through the table.
const SCATTERED_TABLE: [u32; 6] = [7, 2, 5, 0, 3, 6];

#[derive(Deserialize)]
pub(crate) struct Reference {
    pub token_ids: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
}

pub(crate) struct Fixture {
    pub model: LoadedModel,
    pub reference: Reference,
}

fn fixture(name: &str) -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    fixture_at(&dir, &dir.join("reference.json"))
}

/// The model at `model` (a directory or a GGUF file) and the reference logits at `reference`.
pub(crate) fn fixture_at(model: &Path, reference: &Path) -> Fixture {
    let name = model.display();
    let model = LoadedModel::load(model).unwrap_or_else(|e| panic!("loading {name}: {e}"));
    let text = std::fs::read_to_string(reference).expect("reference.json");
    let reference = serde_json::from_str(&text).expect("reference parses");
    Fixture { model, reference }
}

/// The weights as stored (f32 or bf16 here), an f32 KV cache.
pub(crate) fn backend(model: &LoadedModel) -> CpuBackend {
    CpuModel::place(model, CpuConfig::default())
        .expect("places")
        .backend(
            KvCacheShape {
                num_blocks: 8,
                block_size: BLOCK_SIZE,
            },
            KvCacheDtype::F32,
        )
        .expect("backend")
}

pub(crate) fn chunk(tokens: &[u32], start: usize, table: &[u32]) -> ForwardBatch {
    ForwardBatch {
        chunks: vec![SequenceChunk {
            token_ids: tokens.to_vec(),
            start_position: start,
            block_table: table.to_vec(),
            needs_logits: true,
            every_token_logits: false,
        }],
    }
}

/// Largest |ours - theirs| relative to the row's largest reference magnitude.
pub(crate) fn assert_close(name: &str, position: usize, ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len(), "{name}: vocabulary size");
    let scale = theirs.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff <= RELATIVE_TOLERANCE * scale,
        "{name}: logits at position {position} differ by {diff} (scale {scale})"
    );
    diff
}

fn check_all_feeding_orders(name: &str) {
    check_feeding_orders_of(name, fixture(name));
}

/// The fixture's logits at every position equal the reference's, whether its prompt is fed
/// whole, token by token, or in chunks of 5, over a scattered block table.
pub(crate) fn check_feeding_orders_of(name: &str, fixture: Fixture) {
    let Fixture { model, reference } = fixture;
    let ids = &reference.token_ids;
    let last = ids.len() - 1;

    let mut whole = backend(&model);
    let logits = whole
        .forward(&chunk(ids, 0, &SCATTERED_TABLE))
        .expect("prefill");
    let mut max_diff = assert_close(name, last, logits.row(0), &reference.logits[last]);

    let mut stepwise = backend(&model);
    for (position, token) in ids.iter().enumerate() {
        let logits = stepwise
            .forward(&chunk(&[*token], position, &SCATTERED_TABLE))
            .expect("decode");
        max_diff = max_diff.max(assert_close(
            name,
            position,
            logits.row(0),
            &reference.logits[position],
        ));
    }

    let mut chunked = backend(&model);
    for start in (0..ids.len()).step_by(5) {
        let end = (start + 5).min(ids.len());
        let logits = chunked
            .forward(&chunk(&ids[start..end], start, &SCATTERED_TABLE))
            .expect("chunk");
        max_diff = max_diff.max(assert_close(
            name,
            end - 1,
            logits.row(0),
            &reference.logits[end - 1],
        ));
    }
    eprintln!("{name}: max |logit difference| vs transformers = {max_diff:e}");
}

#[test]
fn llama_with_llama3_rope_scaling_matches_transformers() {
    check_all_feeding_orders("tiny-llama");
}

#[test]
fn llama_with_bf16_weights_matches_transformers() {
    check_all_feeding_orders("tiny-llama-bf16");
}

#[test]
fn sharded_qwen2_with_qkv_bias_and_tied_embeddings_matches_transformers() {
    let Fixture { model, .. } = fixture("tiny-qwen2");
    assert!(model.config.qkv_bias && !model.tensors.contains("lm_head.weight"));
    check_all_feeding_orders("tiny-qwen2");
}

#[test]
fn two_sequences_in_one_batch_get_their_own_logits() {
    let Fixture { model, reference } = fixture("tiny-llama");
    let ids = &reference.token_ids;
    let mut batched = backend(&model);
    let batch = ForwardBatch {
        chunks: vec![
            SequenceChunk {
                token_ids: ids[..10].to_vec(),
                start_position: 0,
                block_table: vec![0, 1, 2],
                needs_logits: true,
                every_token_logits: false,
            },
            SequenceChunk {
                token_ids: ids[..7].to_vec(),
                start_position: 0,
                block_table: vec![5, 4],
                needs_logits: true,
                every_token_logits: false,
            },
        ],
    };
    let logits = batched.forward(&batch).expect("batch");
    assert_eq!(logits.num_rows(), 2);
    assert_close("batch row 0", 9, logits.row(0), &reference.logits[9]);
    assert_close("batch row 1", 6, logits.row(1), &reference.logits[6]);
}

#[test]
fn a_plan_that_overruns_its_block_table_is_refused() {
    let Fixture { model, reference } = fixture("tiny-llama");
    let mut backend = backend(&model);
    let err = backend
        .forward(&chunk(&reference.token_ids[..9], 0, &[0, 1]))
        .expect_err("2 blocks of 4 hold 8");
    assert!(err.to_string().contains("cannot hold 9 positions"), "{err}");
}
