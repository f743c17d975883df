//! A model that cannot be loaded says which file and which tensor is wrong.

use std::path::{Path, PathBuf};

use modelfleet_engine::backend::cpu::{CpuConfig, CpuModel};
use modelfleet_engine::model::{Architecture, LoadedModel};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A writable copy of a fixture model.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixture(name)).expect("fixture") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    edit(&mut config);
    std::fs::write(&path, config.to_string()).expect("write");
}

/// Why the model at `dir` cannot be loaded and placed on the CPU (tensors are read when
/// they are placed).
fn load_error(dir: &Path) -> String {
    match LoadedModel::load(dir).and_then(|m| CpuModel::place(&m, CpuConfig::default())) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_fixtures_load_with_their_architectures() {
    let llama = LoadedModel::load(&fixture("tiny-llama")).expect("llama");
    assert_eq!(llama.config.architecture, Architecture::Llama);
    assert_eq!((llama.config.num_heads, llama.config.num_kv_heads), (4, 2));
    let qwen = LoadedModel::load(&fixture("tiny-qwen2")).expect("qwen2");
    assert_eq!(qwen.config.architecture, Architecture::Qwen2);
}

#[test]
fn an_unsupported_architecture_is_named() {
    let dir = copy_of("tiny-llama");
    edit_config(dir.path(), |c| {
        c["architectures"] = serde_json::json!(["GPT2LMHeadModel"])
    });
    let message = load_error(dir.path());
    assert!(
        message.contains("GPT2LMHeadModel") && message.contains("config.json"),
        "{message}"
    );
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named_with_its_file() {
    let dir = copy_of("tiny-llama");
    edit_config(dir.path(), |c| {
        c["intermediate_size"] = serde_json::json!(96)
    });
    let message = load_error(dir.path());
    assert!(
        message.contains("model.layers.0.mlp.gate_proj.weight"),
        "{message}"
    );
    assert!(
        message.contains("model.safetensors") && message.contains("[160, 64]"),
        "{message}"
    );
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = copy_of("tiny-llama");
    edit_config(dir.path(), |c| {
        c["num_hidden_layers"] = serde_json::json!(4)
    });
    let message = load_error(dir.path());
    assert!(
        message.contains("model.layers.3.") && message.contains("missing"),
        "{message}"
    );
}

#[test]
fn a_missing_shard_is_named() {
    let dir = copy_of("tiny-qwen2");
    std::fs::remove_file(dir.path().join("model-00003-of-00007.safetensors")).expect("remove");
    let message = load_error(dir.path());
    assert!(
        message.contains("model-00003-of-00007.safetensors"),
        "{message}"
    );
}

#[test]
fn a_directory_without_a_model_says_what_it_expected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let message = load_error(dir.path());
    assert!(
        message.contains("config.json") && message.contains(".gguf"),
        "{message}"
    );
}
