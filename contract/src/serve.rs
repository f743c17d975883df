//! The `modelfleet-engine serve` flags the operator sets, as one typed value.
//!
//! The operator builds a [`ServeArgs`] from a ModelDeployment and writes it into the engine
//! container with [`ServeArgs::to_args`]; the engine's command line flattens the same
//! [`ServeArgs`] into its `serve` command, so what one side writes is parsed by the very
//! code the other side runs. The engine's own tuning flags (KV cache size, threads, …) are
//! the engine's business and live beside it.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ports;

/// Tokens per KV cache block, unless `--block-size` says otherwise.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// Numeric precision the engine computes in.
#[derive(
    JsonSchema, Serialize, Deserialize, ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// The engine picks from the weights and the device.
    #[default]
    Auto,
    Float32,
    Float16,
    Bfloat16,
}

impl Dtype {
    pub const ALL: [Dtype; 4] = [Dtype::Auto, Dtype::Float32, Dtype::Float16, Dtype::Bfloat16];

    /// The value `--dtype` takes (and the CRD's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Float32 => "float32",
            Self::Float16 => "float16",
            Self::Bfloat16 => "bfloat16",
        }
    }
}

/// Where the model runs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    Cpu,
    /// An NVIDIA GPU; the driver, NVRTC and cuBLAS of CUDA 13 are loaded at start-up.
    Cuda,
}

impl Backend {
    /// The value `--backend` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }
}

/// Which model and how it is placed: the flags `serve` shares with the engine's one-shot
/// commands (`generate`).
#[derive(Args, Clone, Debug, PartialEq)]
pub struct ModelArgs {
    /// A model directory (config.json, safetensors, tokenizer.json, or a GGUF file) or a
    /// GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// Precision the weights are kept in: `auto` keeps them as the file stores them
    /// (quantised GGUF blocks stay quantised, 16-bit weights stay 16-bit); the others
    /// convert every weight at load.
    #[arg(long, value_enum, default_value_t = Dtype::Auto)]
    pub dtype: Dtype,
    /// Tokens per KV cache block.
    #[arg(long, default_value_t = DEFAULT_BLOCK_SIZE)]
    pub block_size: usize,
    /// Most sequences running at once.
    #[arg(long, default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Where the model runs: `cpu`, or `cuda` (an NVIDIA GPU).
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
    /// Fraction of GPU memory for weights, workspace and KV cache (CUDA backend); the CPU
    /// backend budgets its KV cache with --kv-cache-bytes.
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
}

/// The `serve` flags the operator sets from a ModelDeployment's spec.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The name clients ask for (`model` in requests); defaults to the model's file or
    /// directory name.
    // A ModelDeployment's servedName may start with a dash; it is still a value.
    #[arg(long, allow_hyphen_values = true)]
    pub served_name: Option<String>,
    #[arg(long, default_value_t = ports::GRPC.number)]
    pub grpc_port: u16,
    #[arg(long, default_value_t = ports::HTTP.number)]
    pub http_port: u16,
    /// Longest prompt plus output a request may have (default: the model's context).
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// A file holding the API key that generation and model requests must carry (HTTP
    /// `Authorization: Bearer <key>`, gRPC `authorization` metadata); health, readiness and
    /// /metrics stay open. Without it, the API is open to whoever reaches the ports.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
}

/// Every flag of [`ServeArgs`]: the ones the operator sets from the spec, which a
/// ModelDeployment's `extraArgs` may therefore not repeat (the engine would take the last
/// one, silently overriding the field, or for the ports breaking the probes and the
/// Service). In the order the CRD's validation message lists them.
pub const OPERATOR_FLAGS: &[&str] = &[
    "--model",
    "--served-name",
    "--dtype",
    "--block-size",
    "--max-num-seqs",
    "--gpu-memory-utilization",
    "--grpc-port",
    "--http-port",
    "--max-model-len",
    "--api-key-file",
    "--backend",
];

/// The command line of [`ServeArgs`] alone, for [`ServeArgs::parse_from`].
#[derive(Parser, Debug)]
#[command(name = "serve", no_binary_name = true)]
struct ServeCommandLine {
    #[command(flatten)]
    args: ServeArgs,
}

impl ServeArgs {
    /// The flags, in the order the operator has always written them (a reordering would
    /// change every pod template and roll every fleet).
    pub fn to_args(&self) -> Vec<String> {
        let model = &self.model;
        let mut args = vec!["--model".to_string(), model.model.display().to_string()];
        if let Some(name) = &self.served_name {
            args.extend(["--served-name".to_string(), name.clone()]);
        }
        args.extend([
            "--dtype".to_string(),
            model.dtype.as_str().to_string(),
            "--block-size".to_string(),
            model.block_size.to_string(),
            "--max-num-seqs".to_string(),
            model.max_num_seqs.to_string(),
            "--gpu-memory-utilization".to_string(),
            model.gpu_memory_utilization.to_string(),
            "--grpc-port".to_string(),
            self.grpc_port.to_string(),
            "--http-port".to_string(),
            self.http_port.to_string(),
        ]);
        if let Some(len) = self.max_model_len {
            args.extend(["--max-model-len".to_string(), len.to_string()]);
        }
        args.extend(["--backend".to_string(), model.backend.as_str().to_string()]);
        if let Some(path) = &self.api_key_file {
            args.extend(["--api-key-file".to_string(), path.display().to_string()]);
        }
        args
    }

    /// Parses `args` (flags only, no program or subcommand name) as the engine's `serve`
    /// does.
    pub fn parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        ServeCommandLine::try_parse_from(args).map(|c| c.args)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory;
    use proptest::prelude::*;

    use super::*;

    fn dtype() -> impl Strategy<Value = Dtype> {
        proptest::sample::select(Dtype::ALL.to_vec())
    }

    fn backend() -> impl Strategy<Value = Backend> {
        prop_oneof![Just(Backend::Cpu), Just(Backend::Cuda)]
    }

    /// Any value of the flags, including names a ModelDeployment allows but a command line
    /// could misread (a leading dash, spaces, `=`, non-ASCII).
    fn serve_args() -> impl Strategy<Value = ServeArgs> {
        (
            (
                "/[a-z0-9/_.-]{0,40}",
                dtype(),
                1usize..=4096,
                1usize..=100_000,
                backend(),
            ),
            (1u32..=1_000_000).prop_map(|n| f64::from(n) / 1_000_000.0),
            proptest::option::of("\\PC{1,256}"),
            (any::<u16>(), any::<u16>()),
            proptest::option::of(1usize..=10_000_000),
            proptest::option::of("/[a-z0-9/_.-]{1,40}"),
        )
            .prop_map(
                |(
                    (model, dtype, block_size, max_num_seqs, backend),
                    gpu_memory_utilization,
                    served_name,
                    (grpc_port, http_port),
                    max_model_len,
                    api_key_file,
                )| ServeArgs {
                    model: ModelArgs {
                        model: model.into(),
                        dtype,
                        block_size,
                        max_num_seqs,
                        backend,
                        gpu_memory_utilization,
                    },
                    served_name,
                    grpc_port,
                    http_port,
                    max_model_len,
                    api_key_file: api_key_file.map(PathBuf::from),
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_value_survives_its_own_command_line(args in serve_args()) {
            let line = args.to_args();
            let parsed = ServeArgs::parse_from(&line)
                .map_err(|e| TestCaseError::fail(format!("{line:?} does not parse: {e}")))?;
            prop_assert_eq!(parsed, args);
        }
    }

    #[test]
    fn served_names_that_look_like_flags_are_still_values() {
        for name in ["-chat", "--help", "--model", "--served-name=x", ""] {
            let mut args = ServeArgs::parse_from(["--model", "/models"]).expect("parses");
            args.served_name = Some(name.into());
            let parsed = ServeArgs::parse_from(args.to_args())
                .unwrap_or_else(|e| panic!("served name {name:?}: {e}"));
            assert_eq!(parsed.served_name.as_deref(), Some(name));
            assert_eq!(parsed.model.model, args.model.model);
        }
    }

    #[test]
    fn unset_flags_take_the_engine_defaults() {
        let parsed = ServeArgs::parse_from(["--model", "/models"]).expect("parses");
        assert_eq!(parsed.model.dtype, Dtype::Auto);
        assert_eq!(parsed.model.block_size, DEFAULT_BLOCK_SIZE);
        assert_eq!(parsed.model.backend, Backend::Cpu);
        assert_eq!(parsed.grpc_port, ports::GRPC.number);
        assert_eq!(parsed.http_port, ports::HTTP.number);
        assert_eq!(parsed.served_name, None);
    }

    #[test]
    fn the_operator_flags_are_exactly_the_flags_of_serve_args() {
        let command = ServeCommandLine::command();
        let longs: BTreeSet<String> = command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| *l != "help")
            .map(|l| format!("--{l}"))
            .collect();
        let listed: BTreeSet<String> = OPERATOR_FLAGS.iter().map(|f| f.to_string()).collect();
        assert_eq!(longs, listed);
        assert_eq!(listed.len(), OPERATOR_FLAGS.len(), "no flag listed twice");
    }

    #[test]
    fn a_value_with_every_flag_set_writes_every_operator_flag() {
        let args = ServeArgs {
            model: ModelArgs {
                model: "/models".into(),
                dtype: Dtype::Bfloat16,
                block_size: 32,
                max_num_seqs: 8,
                backend: Backend::Cuda,
                gpu_memory_utilization: 0.5,
            },
            served_name: Some("chat".into()),
            grpc_port: 1,
            http_port: 2,
            max_model_len: Some(4096),
            api_key_file: Some("/etc/key".into()),
        };
        let written: BTreeSet<&str> = args
            .to_args()
            .iter()
            .filter(|a| a.starts_with("--"))
            .map(|a| {
                OPERATOR_FLAGS
                    .iter()
                    .find(|f| *f == a)
                    .copied()
                    .unwrap_or("?")
            })
            .collect();
        assert_eq!(written, OPERATOR_FLAGS.iter().copied().collect());
    }

    #[test]
    fn dtype_names_match_the_flag_values() {
        for dtype in Dtype::ALL {
            let value = dtype.to_possible_value().expect("not skipped");
            assert_eq!(value.get_name(), dtype.as_str());
            assert_eq!(
                serde_json::to_value(dtype).expect("serializes"),
                serde_json::Value::String(dtype.as_str().into())
            );
        }
    }
}
