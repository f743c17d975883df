//! The architectures the shared decoder definition ([`super::decoder`]) runs, one small file
//! each: what sets the family apart (its activation, norms, embedding scale, attention
//! variants, tensor names) as data the definition reads, and how its `config.json` or GGUF
//! metadata says so. A name outside this list is refused, never guessed.

mod gemma2;
mod gemma3;
mod llama;
mod mistral;
mod mixtral;
mod phi3;
mod qwen2;

use crate::backend::kernels::GatedActivation;

pub use gemma3::LOCAL_ROPE_THETA as GEMMA3_LOCAL_ROPE_THETA;

/// The decoder families the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    Mistral,
    Gemma2,
    Gemma3,
    Phi3,
    Mixtral,
}

/// What one architecture is, as the shared definition and the loaders read it. Each file
/// writes what sets its family apart and takes the rest from Llama's (`..llama::SPEC`).
#[derive(Debug)]
pub struct ArchitectureSpec {
    pub architecture: Architecture,
    /// The name in logs, metrics and `/v1/models` (lower case).
    pub name: &'static str,
    /// The class `config.json`'s `architectures` names.
    pub hf_class: &'static str,
    /// `general.architecture` of its GGUF files, when llama.cpp writes it apart from Llama.
    pub gguf_arch: Option<&'static str>,
    /// The MLP's activation when `config.json` does not name one.
    pub activation: GatedActivation,
    /// Q, K and V carry biases unless `attention_bias` says otherwise (Qwen2).
    pub qkv_bias_by_default: bool,
    /// Embeddings are multiplied by `√hidden_size` (Gemma).
    pub scales_embeddings: bool,
    /// Hugging Face checkpoints store RMSNorm gains as `w - 1` (Gemma's `x · (1 + w)`);
    /// llama.cpp's converter adds the 1 back, so GGUF files hold `w`.
    pub norm_gain_offset: bool,
    /// A norm after attention and after the MLP too, before each residual add (Gemma 2/3).
    pub sandwich_norms: bool,
    /// RMSNorm over each query and key head before RoPE (Gemma 3).
    pub qk_norm: bool,
    /// Hugging Face stores Q, K and V as one `qkv_proj`, gate and up as one `gate_up_proj`,
    /// and so does GGUF (Phi-3).
    pub fused_projections: bool,
    /// llama.cpp's converter interleaves the rotary halves of Q and K rows in GGUF files
    /// (the Llama family's Q and K, not Qwen2's, Gemma's or Phi-3's).
    pub gguf_rotary_interleaved: bool,
    /// Which layers attend through the sliding window when `config.json` gives no
    /// `layer_types` (`None`: all of them, when there is a window).
    pub local_layers: Option<fn(usize) -> bool>,
}

const ALL: [&ArchitectureSpec; 7] = [
    &llama::SPEC,
    &qwen2::SPEC,
    &mistral::SPEC,
    &gemma2::SPEC,
    &gemma3::SPEC,
    &phi3::SPEC,
    &mixtral::SPEC,
];

impl Architecture {
    pub const fn spec(self) -> &'static ArchitectureSpec {
        match self {
            Self::Llama => &llama::SPEC,
            Self::Qwen2 => &qwen2::SPEC,
            Self::Mistral => &mistral::SPEC,
            Self::Gemma2 => &gemma2::SPEC,
            Self::Gemma3 => &gemma3::SPEC,
            Self::Phi3 => &phi3::SPEC,
            Self::Mixtral => &mixtral::SPEC,
        }
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The architecture of a `config.json` `architectures` entry.
    pub fn from_hf_class(class: &str) -> Option<Self> {
        ALL.iter()
            .find(|spec| spec.hf_class == class)
            .map(|spec| spec.architecture)
    }

    /// The architecture of a GGUF file's `general.architecture`. llama.cpp writes Mistral
    /// as `llama`, and Mixtral as `llama` with experts (`has_experts`).
    pub fn from_gguf(arch: &str, has_experts: bool) -> Option<Self> {
        match arch {
            "llama" if has_experts => Some(Self::Mixtral),
            "llama" => Some(Self::Llama),
            _ => ALL
                .iter()
                .find(|spec| spec.gguf_arch == Some(arch))
                .map(|spec| spec.architecture),
        }
    }
}

/// The names the engine accepts, for the error that refuses any other.
pub fn supported_names() -> String {
    let classes: Vec<&str> = ALL.iter().map(|spec| spec.hf_class).collect();
    let gguf: Vec<&str> = std::iter::once("llama")
        .chain(ALL.iter().filter_map(|spec| spec.gguf_arch))
        .collect();
    format!("{}; GGUF {}", classes.join(", "), gguf.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_architecture_is_found_by_its_own_names() {
        for spec in ALL {
            assert_eq!(
                Architecture::from_hf_class(spec.hf_class),
                Some(spec.architecture)
            );
            assert_eq!(spec.architecture.name(), spec.name);
            if let Some(gguf) = spec.gguf_arch {
                assert_eq!(
                    Architecture::from_gguf(gguf, false),
                    Some(spec.architecture)
                );
            }
        }
        assert_eq!(
            Architecture::from_gguf("llama", true),
            Some(Architecture::Mixtral)
        );
        assert_eq!(Architecture::from_hf_class("GPTNeoXForCausalLM"), None);
        assert_eq!(Architecture::from_gguf("gptneox", false), None);
    }
}
