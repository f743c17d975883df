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
