//! Every architecture beyond Llama against Hugging Face transformers, from safetensors and
//! from the GGUF file llama.cpp's converter makes of the same weights: Qwen2, Mistral
//! (sliding window), Gemma 2 (soft-capping, sandwich norms, GeGLU, scaled embeddings,
//! alternating local layers), Gemma 3 (query and key norms, local layers with their own
//! RoPE), Phi-3 (fused projections, partial rotary, sliding window) and Mixtral (top-2 of 4
//! experts), and each one's Q8_0 quantisation by llama-quantize run on its int8 kernels.
//! Fixtures: scripts/golden/make_llama_cpp_fixtures.sh architectures.

use std::path::PathBuf;

use modelfleet_engine::backend::{Backend, ForwardBatch, SequenceChunk};
use modelfleet_engine::model::Architecture;

use super::logits::{Fixture, assert_close, backend, check_feeding_orders_of, fixture_at};
use crate::support::kl_divergence;

const NAMES: [&str; 6] = ["qwen2", "mistral", "gemma2", "gemma3", "phi3", "mixtral"];

/// Bounds of the Q8_0 files' next-token distributions (int8 weights and activations)
/// against transformers on the unquantised weights, as KL divergence in nats: (mean, at any
/// position). Measured (mean, max): Qwen2 0.0022, 0.0046; Mistral 0.0025, 0.0045; Gemma 2 0.0005, 0.0008;
/// Gemma 3 0.0013, 0.0033; Phi-3 0.0099, 0.044; Mixtral 0.043, 0.33. These random models'
/// logits are sharp, so rounding shows; Mixtral's most, where near-tied router scores
/// round to another expert. A wrong tensor layout costs nats, not hundredths.
fn kl_bounds(name: &str) -> (f64, f64) {
    match name {
        "mixtral" => (0.1, 0.7),
        _ => (0.02, 0.1),
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/architectures")
}

fn safetensors(name: &str) -> Fixture {
    fixture_at(&dir().join(name), &dir().join(name).join("reference.json"))
}

fn gguf(name: &str) -> Fixture {
    fixture_at(
        &dir().join(format!("{name}.gguf")),
        &dir().join(name).join("reference.json"),
    )
}

/// Both files of `name` load as `architecture` and match transformers in every feeding order.
fn check_both_formats(name: &str, architecture: Architecture) {
    for (format, fixture) in [("safetensors", safetensors(name)), ("gguf", gguf(name))] {
        assert_eq!(
            fixture.model.config.architecture, architecture,
            "{name} {format}"
        );
        check_feeding_orders_of(&format!("{name} ({format})"), fixture);
    }
}

#[test]
fn qwen2_matches_transformers_from_both_formats() {
    let fixture = safetensors("qwen2");
    assert!(fixture.model.config.qkv_bias && fixture.model.config.tie_word_embeddings);
    check_both_formats("qwen2", Architecture::Qwen2);
}

#[test]
fn mistral_with_a_sliding_window_matches_transformers() {
    let fixture = safetensors("mistral");
    assert_eq!(fixture.model.config.sliding_window, Some(7));
    check_feeding_orders_of("mistral (safetensors)", fixture);
    // llama.cpp writes Mistral as Llama and drops the window: the GGUF file is a Llama
    // that matches transformers' Mistral up to the window, so only while within it.
    let Fixture { model, reference } = gguf("mistral");
    assert_eq!(model.config.architecture, Architecture::Llama);
    let mut engine = backend(&model);
    let logits = engine
        .forward(&super::logits::chunk(&reference.token_ids[..7], 0, &[0, 1]))
        .expect("prefill");
    assert_close("mistral (gguf)", 6, logits.row(0), &reference.logits[6]);
}

#[test]
fn gemma2_matches_transformers_from_both_formats() {
    let fixture = safetensors("gemma2");
    let c = &fixture.model.config;
    assert_eq!(c.local_layers, [true, false, true, false]);
    assert_eq!(
        (c.attn_logit_softcap, c.final_logit_softcap),
        (Some(2.0), Some(5.0))
    );
    check_both_formats("gemma2", Architecture::Gemma2);
}

#[test]
fn gemma3_matches_transformers_from_both_formats() {
    let fixture = safetensors("gemma3");
    let c = &fixture.model.config;
    assert_eq!(c.local_layers, [true, true, true, true, true, false]);
    assert_eq!(c.local_rope_theta, Some(10000.0));
    check_both_formats("gemma3", Architecture::Gemma3);
}

#[test]
fn phi3_with_partial_rotary_matches_transformers_from_both_formats() {
    let fixture = safetensors("phi3");
    assert_eq!(fixture.model.config.rotary_dim, 8);
    check_both_formats("phi3", Architecture::Phi3);
}

#[test]
fn mixtral_matches_transformers_from_both_formats() {
    check_both_formats("mixtral", Architecture::Mixtral);
}

/// Tokens of different sequences routed to different experts in one step get what each
/// gets alone: the grouped matmul keeps rows apart.
#[test]
fn a_mixtral_batch_routed_to_different_experts_equals_each_sequence_alone() {
    let Fixture { model, reference } = safetensors("mixtral");
    let ids = &reference.token_ids;
    let sequences: [(&[u32], Vec<u32>); 3] = [
        (&ids[..9], vec![0, 1, 2]),
        (&ids[9..14], vec![3, 4]),
        (&ids[14..15], vec![5]),
    ];
    let batch = ForwardBatch {
        chunks: sequences
            .iter()
            .map(|(tokens, table)| SequenceChunk {
                token_ids: tokens.to_vec(),
                start_position: 0,
                block_table: table.clone(),
                needs_logits: true,
                every_token_logits: false,
            })
            .collect(),
    };
    let together = backend(&model).forward(&batch).expect("batch");
    for (row, (tokens, table)) in sequences.iter().enumerate() {
        let alone = backend(&model)
            .forward(&super::logits::chunk(tokens, 0, table))
            .expect("alone");
        assert_eq!(together.row(row), alone.row(0), "sequence {row}");
    }
}

/// Every architecture's Q8_0 file, decoded token by token on the int8 kernels, stays close
/// to transformers on the unquantised weights (Mistral's within its window, as its GGUF
/// file has none).
#[test]
fn q8_0_quantised_files_of_every_architecture_stay_close_to_transformers() {
    for name in NAMES {
        let Fixture { model, reference } = fixture_at(
            &dir().join(format!("{name}-Q8_0.gguf")),
            &dir().join(name).join("reference.json"),
        );
        let positions = if name == "mistral" {
            7
        } else {
            reference.token_ids.len()
        };
        let (mean_bound, max_bound) = kl_bounds(name);
        let mut engine = backend(&model);
        let (mut total, mut worst) = (0.0, 0.0f64);
        for (position, token) in reference.token_ids[..positions].iter().enumerate() {
            let logits = engine
                .forward(&super::logits::chunk(
                    &[*token],
                    position,
                    &[7, 2, 5, 0, 3, 6],
                ))
                .expect("decode");
            let kl = kl_divergence(&reference.logits[position], logits.row(0));
            assert!(
                kl <= max_bound,
                "{name} position {position}: KL divergence {kl}"
            );
            worst = worst.max(kl);
            total += kl;
        }
        let mean = total / positions as f64;
        eprintln!("{name} Q8_0: mean KL {mean:.5} nats, at most {worst:.5}");
        assert!(mean <= mean_bound, "{name}: mean KL divergence {mean}");
    }
}
