//! The shape of a decoder, from `config.json` or GGUF metadata.

use serde::Deserialize;

pub use super::arch::Architecture;
use super::arch::GEMMA3_LOCAL_ROPE_THETA;
use crate::backend::kernels::GatedActivation;

/// How RoPE frequencies are adjusted for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f32,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub qkv_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The dimensions of each head RoPE rotates: `head_dim` but for partial rotary.
    pub rotary_dim: usize,
    /// Keys a local layer's query sees, its own included.
    pub sliding_window: Option<usize>,
    /// Per layer, whether it attends through [`Self::sliding_window`].
    pub local_layers: Vec<bool>,
    /// RoPE's base frequency on local layers, unscaled, when it is not `rope_theta` (Gemma 3).
    pub local_rope_theta: Option<f32>,
    pub activation: GatedActivation,
    /// Attention scores are `q · k / √query_pre_attn_scalar` (Gemma); `None`: `√head_dim`.
    pub query_pre_attn_scalar: Option<f32>,
    pub attn_logit_softcap: Option<f32>,
    pub final_logit_softcap: Option<f32>,
    pub experts: Option<Experts>,
}

/// A sparse mixture of experts in place of each layer's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Experts {
    /// Experts per layer.
    pub count: usize,
    /// Experts each token runs through.
    pub per_token: usize,
}

/// Sizes beyond any real decoder: a model file claiming more is corrupt or crafted, and
/// believing it would mean allocations or index arithmetic that cannot work.
const MAX_WIDTH: usize = 1 << 20;
const MAX_VOCAB: usize = 1 << 24;
const MAX_LAYERS: usize = 1 << 10;
const MAX_HEADS: usize = 1 << 12;
const MAX_POSITIONS: usize = 1 << 24;
const MAX_EXPERTS: usize = 1 << 10;

impl ModelConfig {
    /// Whether the shape describes a decoder the engine can run: every size positive and
    /// within reason, the attention heads dividing evenly, RoPE's dimension even, the
    /// special token ids inside the vocabulary. The first problem found is described.
    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, MAX_WIDTH),
            ("num_hidden_layers", self.num_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_heads, MAX_HEADS),
            ("num_key_value_heads", self.num_kv_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_WIDTH),
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
        ];
        for (name, value, max) in sizes {
            if value == 0 || value > max {
                return Err(format!("{name} must be between 1 and {max}, got {value}"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.num_heads * self.head_dim > MAX_WIDTH {
            return Err(format!(
                "num_attention_heads × head_dim ({} × {}) is more than {MAX_WIDTH}",
                self.num_heads, self.head_dim
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim must be even (RoPE rotates pairs), got {}",
                self.head_dim
            ));
        }
        if self.rotary_dim == 0
            || self.rotary_dim > self.head_dim
            || !self.rotary_dim.is_multiple_of(2)
        {
            return Err(format!(
                "the rotary dimensions ({}) must be even and at most head_dim ({})",
                self.rotary_dim, self.head_dim
            ));
        }
        if self.local_layers.len() != self.num_layers {
            return Err(format!(
                "layer_types names {} layers of {}",
                self.local_layers.len(),
                self.num_layers
            ));
        }
        match self.sliding_window {
            Some(0) => return Err("sliding_window must be at least 1".into()),
            None if self.local_layers.contains(&true) => {
                return Err("layers are sliding_attention but there is no sliding_window".into());
            }
            _ => {}
        }
        if let Some(experts) = self.experts
            && (experts.count == 0
                || experts.count > MAX_EXPERTS
                || experts.per_token == 0
                || experts.per_token > experts.count)
        {
            return Err(format!(
                "num_experts_per_tok ({}) must be between 1 and num_local_experts ({}), \
                 which must be between 1 and {MAX_EXPERTS}",
                experts.per_token, experts.count
            ));
        }
        let optional = [
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
            ("attn_logit_softcapping", self.attn_logit_softcap),
            ("final_logit_softcapping", self.final_logit_softcap),
            ("rope_local_base_freq", self.local_rope_theta),
        ];
        let positive = [
            ("rms_norm_eps", Some(self.rms_norm_eps)),
            ("rope_theta", Some(self.rope_theta)),
        ]
        .into_iter()
        .chain(optional)
        .filter_map(|(name, value)| value.map(|v| (name, v)));
        for (name, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{name} must be a positive number, got {value}"));
            }
        }
        let factor = match &self.rope_scaling {
            RopeScaling::None => None,
            RopeScaling::Linear { factor } | RopeScaling::Llama3 { factor, .. } => Some(*factor),
        };
        if let Some(factor) = factor
            && !(factor.is_finite() && factor > 0.0)
        {
            return Err(format!(
                "the rope scaling factor must be a positive number, got {factor}"
            ));
        }
        let special = self
            .bos_token_id
            .iter()
            .map(|&id| ("bos_token_id", id))
            .chain(self.eos_token_ids.iter().map(|&id| ("eos_token_id", id)));
        for (name, id) in special {
            if id as usize >= self.vocab_size {
                return Err(format!(
                    "{name} {id} is outside the vocabulary of {} tokens",
                    self.vocab_size
                ));
            }
        }
        Ok(())
    }

    /// [`ModelConfig::validate`], as the loader reports it: naming the file it came from.
    pub(crate) fn check(&self, path: &std::path::Path) -> Result<(), super::ModelError> {
        self.validate().map_err(|reason| super::ModelError::Config {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// `1 / √query_pre_attn_scalar`, by default `1 / √head_dim`: what multiplies `q · k`.
    pub fn attention_scale(&self) -> f32 {
        let scalar = self.query_pre_attn_scalar.unwrap_or(self.head_dim as f32);
        1.0 / scalar.sqrt()
    }

    /// The inverse frequencies of RoPE's rotation pairs on global layers, scaling applied.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        rope_inv_freq(self.rope_theta, self.rotary_dim, &self.rope_scaling)
    }

    /// The inverse frequencies of local layers, when they rotate differently (Gemma 3).
    pub fn local_rope_inv_freq(&self) -> Option<Vec<f32>> {
        self.local_rope_theta
            .map(|theta| rope_inv_freq(theta, self.rotary_dim, &RopeScaling::None))
    }
}

/// RoPE's inverse frequencies for `rotary_dim` rotated dimensions of base `theta`.
fn rope_inv_freq(theta: f32, rotary_dim: usize, scaling: &RopeScaling) -> Vec<f32> {
    let half = rotary_dim / 2;
    let base: Vec<f64> = (0..half)
        .map(|i| 1.0 / (theta as f64).powf(2.0 * i as f64 / rotary_dim as f64))
        .collect();
    match scaling {
        RopeScaling::None => base.iter().map(|f| *f as f32).collect(),
        RopeScaling::Linear { factor } => {
            base.iter().map(|f| (*f / *factor as f64) as f32).collect()
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let (factor, low, high, original) = (
                *factor as f64,
                *low_freq_factor as f64,
                *high_freq_factor as f64,
                *original_max_position_embeddings as f64,
            );
            let low_freq_wavelen = original / low;
            let high_freq_wavelen = original / high;
            base.iter()
                .map(|&freq| {
                    let wavelen = 2.0 * std::f64::consts::PI / freq;
                    let scaled = if wavelen < high_freq_wavelen {
                        freq
                    } else if wavelen > low_freq_wavelen {
                        freq / factor
                    } else {
                        let smooth = (original / wavelen - low) / (high - low);
                        (1.0 - smooth) * freq / factor + smooth * freq
                    };
                    scaled as f32
                })
                .collect()
        }
    }
}

/// The fields of a Hugging Face `config.json` the engine reads.
#[derive(Debug, Deserialize)]
pub(crate) struct HfConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    pub rope_theta: Option<f32>,
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers ≥ 5 nests rope settings here (per layer type for Gemma 3).
    pub rope_parameters: Option<serde_json::Value>,
    pub partial_rotary_factor: Option<f32>,
    pub rope_local_base_freq: Option<f32>,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: Option<bool>,
    pub attention_bias: Option<bool>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<serde_json::Value>,
    pub hidden_act: Option<String>,
    /// Gemma's name for `hidden_act`.
    pub hidden_activation: Option<String>,
    pub sliding_window: Option<usize>,
    /// Qwen2 carries a window it does not use unless this is set.
    pub use_sliding_window: Option<bool>,
    pub layer_types: Option<Vec<String>>,
    pub query_pre_attn_scalar: Option<f32>,
    pub attn_logit_softcapping: Option<f32>,
    pub final_logit_softcapping: Option<f32>,
    pub num_local_experts: Option<usize>,
    pub num_experts_per_tok: Option<usize>,
}

fn default_eps() -> f32 {
    1e-6
}
fn default_max_positions() -> usize {
    4096
}

const DEFAULT_ROPE_THETA: f32 = 10000.0;

impl HfConfig {
    pub fn into_config(self) -> Result<ModelConfig, String> {
        let name = self.architectures.first().cloned().unwrap_or_default();
        let architecture =
            Architecture::from_hf_class(&name).ok_or_else(|| format!("architecture:{name}"))?;
        let spec = architecture.spec();
        let num_kv_heads = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        // Zero heads leave head_dim 0 here; `ModelConfig::validate` names the real cause.
        let head_dim = self.head_dim.unwrap_or_else(|| {
            self.hidden_size
                .checked_div(self.num_attention_heads)
                .unwrap_or(0)
        });
        // transformers ≥ 5 keys Gemma 3's rope settings by layer type.
        let layered = |kind: &str| self.rope_parameters.as_ref().and_then(|p| p.get(kind));
        let global = layered("full_attention")
            .or(self.rope_parameters.as_ref())
            .or(self.rope_scaling.as_ref());
        let theta_of = |value: Option<&serde_json::Value>| {
            value
                .and_then(|p| p.get("rope_theta"))
                .and_then(serde_json::Value::as_f64)
                .map(|t| t as f32)
        };
        let rope_theta = theta_of(global)
            .or(self.rope_theta)
            .unwrap_or(DEFAULT_ROPE_THETA);
        let partial_rotary_factor = self.partial_rotary_factor.or_else(|| {
            global
                .and_then(|p| p.get("partial_rotary_factor"))
                .and_then(serde_json::Value::as_f64)
                .map(|f| f as f32)
        });
        let rotary_dim = match partial_rotary_factor {
            Some(factor) if (0.0..=1.0).contains(&factor) => {
                ((head_dim as f32 * factor) as usize) & !1
            }
            Some(factor) => {
                return Err(format!(
                    "partial_rotary_factor must be between 0 and 1, got {factor}"
                ));
            }
            None => head_dim,
        };
        let local_rope_theta = match architecture {
            Architecture::Gemma3 => Some(
                theta_of(layered("sliding_attention"))
                    .or(self.rope_local_base_freq)
                    .unwrap_or(GEMMA3_LOCAL_ROPE_THETA),
            ),
            _ => None,
        };
        let eos_token_ids = match self.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(ids)) => ids
                .iter()
                .filter_map(serde_json::Value::as_u64)
                .map(|v| v as u32)
                .collect(),
            _ => Vec::new(),
        };
        let activation_name = self.hidden_activation.as_ref().or(self.hidden_act.as_ref());
        let activation = match activation_name.map(String::as_str) {
            None => spec.activation,
            Some("silu" | "swish") => GatedActivation::Silu,
            Some("gelu_pytorch_tanh") => GatedActivation::GeluTanh,
            Some(other) => return Err(format!("unsupported hidden activation '{other}'")),
        };
        if architecture == Architecture::Qwen2 && self.use_sliding_window == Some(true) {
            return Err("Qwen2's use_sliding_window is not supported".into());
        }
        let sliding_window = match architecture {
            Architecture::Qwen2 => None,
            _ => self.sliding_window,
        };
        let local_layers = match (&self.layer_types, sliding_window) {
            (Some(types), _) => types
                .iter()
                .map(|kind| match kind.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(format!("unsupported layer type '{other}'")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            (None, None) => vec![false; self.num_hidden_layers],
            (None, Some(_)) => (0..self.num_hidden_layers)
                .map(|layer| spec.local_layers.is_none_or(|is_local| is_local(layer)))
                .collect(),
        };
        let experts = match (self.num_local_experts, self.num_experts_per_tok) {
            (Some(count), Some(per_token)) => Some(Experts { count, per_token }),
            (None, None) => None,
            _ => return Err("num_local_experts and num_experts_per_tok come together".into()),
        };
        if architecture == Architecture::Mixtral && experts.is_none() {
            return Err("Mixtral needs num_local_experts and num_experts_per_tok".into());
        }
        Ok(ModelConfig {
            architecture,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads,
            head_dim,
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            rope_scaling: parse_rope_scaling(global)?,
            max_position_embeddings: self.max_position_embeddings,
            // Gemma always ties its head to the embeddings.
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(spec.scales_embeddings),
            qkv_bias: self.attention_bias.unwrap_or(spec.qkv_bias_by_default),
            bos_token_id: self.bos_token_id,
            eos_token_ids,
            rotary_dim,
            sliding_window,
            local_layers,
            local_rope_theta,
            activation,
            query_pre_attn_scalar: self.query_pre_attn_scalar,
            attn_logit_softcap: self.attn_logit_softcapping,
            final_logit_softcap: self.final_logit_softcapping,
            experts,
        })
    }
}

fn parse_rope_scaling(value: Option<&serde_json::Value>) -> Result<RopeScaling, String> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(RopeScaling::None);
    };
    let kind = value
        .get("rope_type")
        .or_else(|| value.get("type"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("default");
    let number = |key: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .map(|v| v as f32)
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: number("factor").ok_or("rope scaling 'linear' needs a factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: number("factor").ok_or("rope scaling 'llama3' needs a factor")?,
            low_freq_factor: number("low_freq_factor").unwrap_or(1.0),
            high_freq_factor: number("high_freq_factor").unwrap_or(4.0),
            original_max_position_embeddings: number("original_max_position_embeddings")
                .unwrap_or(8192.0),
        }),
        other => Err(format!(
            "unsupported rope scaling type '{other}' (supported: linear, llama3)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama() -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            hidden_size: 64,
            intermediate_size: 128,
            num_layers: 1,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            vocab_size: 10,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::None,
            max_position_embeddings: 128,
            tie_word_embeddings: false,
            qkv_bias: false,
            bos_token_id: None,
            eos_token_ids: vec![],
            rotary_dim: 16,
            sliding_window: None,
            local_layers: vec![false],
            local_rope_theta: None,
            activation: GatedActivation::Silu,
            query_pre_attn_scalar: None,
            attn_logit_softcap: None,
            final_logit_softcap: None,
            experts: None,
        }
    }

    #[test]
    fn inverse_frequencies_fall_geometrically_from_one() {
        let inv = llama().rope_inv_freq();
        assert_eq!(inv.len(), 8);
        assert!((inv[0] - 1.0).abs() < 1e-7);
        assert!((inv[1] - 10000f32.powf(-2.0 / 16.0)).abs() < 1e-7);
    }

    #[test]
    fn llama3_scaling_keeps_high_frequencies_and_divides_low_ones() {
        let mut config = llama();
        config.rope_theta = 500000.0;
        config.rope_scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let base = llama_with_theta(500000.0).rope_inv_freq();
        let scaled = config.rope_inv_freq();
        assert_eq!(scaled[0], base[0], "highest frequency untouched");
        let last = base.len() - 1;
        assert!(
            (scaled[last] - base[last] / 8.0).abs() < 1e-12,
            "lowest frequency divided"
        );
    }

    #[test]
    fn partial_rotary_rotates_the_first_dimensions_with_their_own_frequencies() {
        let mut config = llama();
        config.rotary_dim = 8;
        let inv = config.rope_inv_freq();
        assert_eq!(inv.len(), 4);
        assert!((inv[1] - 10000f32.powf(-2.0 / 8.0)).abs() < 1e-7);
    }

    fn llama_with_theta(theta: f32) -> ModelConfig {
        ModelConfig {
            rope_theta: theta,
            ..llama()
        }
    }

    #[test]
    fn a_runnable_shape_is_valid() {
        assert_eq!(llama().validate(), Ok(()));
    }

    #[test]
    fn shapes_that_cannot_run_are_described() {
        type Breakage = fn(&mut ModelConfig);
        let cases: [(Breakage, &str); 9] = [
            (|c| c.num_heads = 0, "num_attention_heads must be between 1"),
            (
                |c| c.num_kv_heads = 0,
                "num_key_value_heads must be between 1",
            ),
            (
                |c| c.num_kv_heads = 3,
                "must be a multiple of num_key_value_heads (3)",
            ),
            (|c| c.head_dim = 15, "head_dim must be even"),
            (
                |c| c.vocab_size = usize::MAX,
                "vocab_size must be between 1",
            ),
            (
                |c| c.num_layers = 1 << 40,
                "num_hidden_layers must be between 1",
            ),
            (|c| c.head_dim = 1 << 19, "num_attention_heads × head_dim"),
            (
                |c| c.rms_norm_eps = f32::NAN,
                "rms_norm_eps must be a positive number",
            ),
            (
                |c| c.eos_token_ids = vec![10],
                "eos_token_id 10 is outside the vocabulary",
            ),
        ];
        for (break_it, expected) in cases {
            let mut config = llama();
            break_it(&mut config);
            let error = config.validate().expect_err(expected);
            assert!(error.contains(expected), "{error} (expected: {expected})");
        }
    }

    #[test]
    fn unknown_rope_scaling_is_refused_by_name() {
        let err = parse_rope_scaling(Some(
            &serde_json::json!({"rope_type": "yarn", "factor": 2.0}),
        ))
        .expect_err("yarn is not supported");
        assert!(err.contains("yarn"));
    }

    /// A minimal `config.json` of `class` with `extra` fields merged in.
    fn hf(class: &str, extra: serde_json::Value) -> Result<ModelConfig, String> {
        let mut value = serde_json::json!({
            "architectures": [class], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 100,
        });
        for (key, field) in extra.as_object().expect("an object") {
            value[key] = field.clone();
        }
        serde_json::from_value::<HfConfig>(value)
            .expect("deserialises")
            .into_config()
    }

    #[test]
    fn gemma3_layers_and_ropes_come_from_either_config_layout() {
        // transformers < 5 writes the pattern and the local base frequency at the top level.
        let old = hf(
            "Gemma3ForCausalLM",
            serde_json::json!({"sliding_window": 512, "rope_theta": 1e6,
                "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0}}),
        )
        .expect("valid");
        // transformers ≥ 5 lists the layer types and nests RoPE per type.
        let new = hf(
            "Gemma3ForCausalLM",
            serde_json::json!({"sliding_window": 512,
                "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention",
                                "sliding_attention", "sliding_attention", "full_attention"],
                "rope_parameters": {
                    "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}),
        )
        .expect("valid");
        for config in [&old, &new] {
            assert_eq!(config.local_layers, [true, true, true, true, true, false]);
            assert_eq!(config.rope_theta, 1e6);
            assert_eq!(config.local_rope_theta, Some(10000.0));
            assert_eq!(config.rope_scaling, RopeScaling::Linear { factor: 8.0 });
            assert_eq!(config.activation, GatedActivation::GeluTanh);
            assert!(config.tie_word_embeddings);
        }
    }

    #[test]
    fn what_the_engine_does_not_run_is_refused_by_name() {
        let cases = [
            (
                "GPTNeoXForCausalLM",
                serde_json::json!({}),
                "architecture:GPTNeoXForCausalLM",
            ),
            (
                "Qwen2ForCausalLM",
                serde_json::json!({"use_sliding_window": true}),
                "use_sliding_window",
            ),
            (
                "Phi3ForCausalLM",
                serde_json::json!({"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0]}}),
                "'longrope'",
            ),
            (
                "LlamaForCausalLM",
                serde_json::json!({"hidden_act": "relu"}),
                "'relu'",
            ),
            (
                "MixtralForCausalLM",
                serde_json::json!({}),
                "num_local_experts",
            ),
            (
                "Gemma2ForCausalLM",
                serde_json::json!({"sliding_window": 8, "layer_types": ["chunked_attention"]}),
                "'chunked_attention'",
            ),
        ];
        for (class, extra, expected) in cases {
            let error = hf(class, extra).expect_err(expected);
            assert!(error.contains(expected), "{error} (expected: {expected})");
        }
    }

    #[test]
    fn shapes_of_the_new_switches_that_cannot_run_are_described() {
        type Breakage = fn(&mut ModelConfig);
        let cases: [(Breakage, &str); 5] = [
            (|c| c.rotary_dim = 18, "rotary dimensions (18)"),
            (|c| c.local_layers = vec![], "layer_types names 0 layers"),
            (
                |c| c.sliding_window = Some(0),
                "sliding_window must be at least 1",
            ),
            (
                |c| {
                    c.experts = Some(Experts {
                        count: 2,
                        per_token: 3,
                    })
                },
                "num_experts_per_tok (3)",
            ),
            (
                |c| c.final_logit_softcap = Some(-1.0),
                "final_logit_softcapping must be a positive number",
            ),
        ];
        for (break_it, expected) in cases {
            let mut config = llama();
            break_it(&mut config);
            let error = config.validate().expect_err(expected);
            assert!(error.contains(expected), "{error} (expected: {expected})");
        }
        let mut local = llama();
        local.local_layers = vec![true];
        let error = local.validate().expect_err("local layers need a window");
        assert!(error.contains("no sliding_window"), "{error}");
    }
}
