//! The kernel sources and their compilation by NVRTC.
//!
//! Each `.cu` file under `ops/` is one concern; it is compiled on its own, after the
//! `#define`s that specialise it (head size, GQA group, cache precision) and `common.cuh`.
//! NVRTC emits PTX for the device's compute capability, which the driver assembles at load;
//! CI compiles every source the same way and assembles the PTX with `ptxas` for sm_80 and
//! sm_90, without a GPU.

use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use super::driver;
use super::ops;
use crate::backend::BackendError;
use crate::backend::kernels::KvCacheDtype;

/// What every source starts with (after its defines).
pub const COMMON: &str = include_str!("ops/common.cuh");

/// A specialisation constant a source is compiled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Define {
    HeadDim,
    /// Query heads per KV head.
    Group,
    /// The cache's element: 0 float32, 1 float16, 2 bfloat16.
    KvDtype,
}

impl Define {
    pub const fn name(self) -> &'static str {
        match self {
            Self::HeadDim => "HEAD_DIM",
            Self::Group => "GROUP",
            Self::KvDtype => "KV_DTYPE",
        }
    }
}

pub const fn kv_dtype_code(dtype: KvCacheDtype) -> usize {
    match dtype {
        KvCacheDtype::F32 => 0,
        KvCacheDtype::F16 => 1,
        KvCacheDtype::Bf16 => 2,
    }
}

/// One `.cu` file.
#[derive(Debug)]
pub struct KernelSource {
    pub file: &'static str,
    pub code: &'static str,
    pub entry_points: &'static [&'static str],
    /// The defines it must be compiled with.
    pub needs: &'static [Define],
}

/// Values of the defines a source is compiled with, in a fixed order (the cache key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Defines(Vec<(Define, usize)>);

impl Defines {
    pub fn new(values: &[(Define, usize)]) -> Self {
        let mut v = values.to_vec();
        v.sort();
        v.dedup_by_key(|(d, _)| *d);
        Self(v)
    }

    /// Only those of `needs`, so that sources needing fewer share a compilation.
    pub fn restricted_to(&self, needs: &[Define]) -> Self {
        Self(
            self.0
                .iter()
                .copied()
                .filter(|(d, _)| needs.contains(d))
                .collect(),
        )
    }

    pub fn get(&self, define: Define) -> Option<usize> {
        self.0.iter().find(|(d, _)| *d == define).map(|(_, v)| *v)
    }
}

impl std::fmt::Display for Defines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(d, v)| format!("{}={v}", d.name()))
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// Every kernel source of the backend.
pub const SOURCES: &[&KernelSource] = &[
    &ops::embedding::SOURCE,
    &ops::rms_norm::SOURCE,
    &ops::rope_cache::SOURCE,
    &ops::attention_decode::SOURCE,
    &ops::attention_prefill::SOURCE,
    &ops::silu_mul::SOURCE,
    &ops::bias::SOURCE,
    &ops::convert::SOURCE,
    &ops::gather_rows::SOURCE,
    &ops::copy_blocks::SOURCE,
    &ops::select_tokens::SOURCE,
];

/// The program NVRTC compiles: the defines, the common header, the source. Refuses a
/// source whose defines are missing.
pub fn program(source: &KernelSource, defines: &Defines) -> Result<String, BackendError> {
    let mut text = String::new();
    for &define in source.needs {
        let value = defines.get(define).ok_or_else(|| {
            BackendError::Execution(format!(
                "{} must be compiled with {} defined",
                source.file,
                define.name()
            ))
        })?;
        text.push_str(&format!("#define {} {value}\n", define.name()));
    }
    text.push_str(COMMON);
    text.push_str(&format!("#line 1 \"{}\"\n", source.file));
    text.push_str(source.code);
    Ok(text)
}

/// NVRTC's options for a compute capability such as `(9, 0)`: exact float math (the CPU
/// kernels are the reference), line info for the sanitizer.
pub fn options(compute_capability: (u32, u32)) -> Vec<String> {
    let (major, minor) = compute_capability;
    vec![
        format!("--gpu-architecture=compute_{major}{minor}"),
        "--std=c++17".into(),
        "--fmad=true".into(),
        "--generate-line-info".into(),
    ]
}

/// PTX of `source` specialised by `defines`, for `compute_capability`.
pub fn compile(
    source: &KernelSource,
    defines: &Defines,
    compute_capability: (u32, u32),
) -> Result<String, BackendError> {
    driver::check_nvrtc()?;
    let program = program(source, defines)?;
    let opts = CompileOptions {
        options: options(compute_capability),
        name: Some(source.file.into()),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(program, opts).map_err(|e| {
        let detail = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                log.to_string_lossy().into_owned()
            }
            other => other.to_string(),
        };
        BackendError::Execution(format!(
            "NVRTC could not compile {} ({defines}): {detail}",
            source.file
        ))
    })?;
    Ok(ptx.to_src())
}

/// The specialisations CI compiles every source with: the head sizes and groups of the
/// models the backend is for (Llama-3's 128 × 4, Llama-3.2-1B's 64 × 4, Qwen2's 128 × 7,
/// 128 × 8, SmolLM2's 64 × 3, the test models' 16 × 2, multi-head 128 × 1) with a bf16
/// cache, and the other cache precisions at 128 × 4. Sources that need fewer defines
/// collapse to fewer distinct programs.
pub fn checked_specialisations() -> Vec<Defines> {
    let shapes = [
        (128, 4),
        (64, 4),
        (128, 7),
        (128, 8),
        (64, 3),
        (16, 2),
        (128, 1),
    ];
    let mut all: Vec<Defines> = shapes
        .into_iter()
        .map(|(head_dim, group)| (head_dim, group, KvCacheDtype::Bf16))
        .chain([(128, 4, KvCacheDtype::F16), (128, 4, KvCacheDtype::F32)])
        .map(|(head_dim, group, kv)| {
            Defines::new(&[
                (Define::HeadDim, head_dim),
                (Define::Group, group),
                (Define::KvDtype, kv_dtype_code(kv)),
            ])
        })
        .collect();
    all.dedup();
    all
}

/// Every distinct program CI compiles: each source once per specialisation it tells apart.
pub fn checked_programs() -> Vec<(&'static KernelSource, Defines)> {
    let mut programs: Vec<(&'static KernelSource, Defines)> = Vec::new();
    for &source in SOURCES {
        for defines in checked_specialisations() {
            let defines = defines.restricted_to(source.needs);
            if !programs
                .iter()
                .any(|(s, d)| s.file == source.file && *d == defines)
            {
                programs.push((source, defines));
            }
        }
    }
    programs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_its_defines_then_the_common_header_then_the_source() {
        let defines = Defines::new(&[
            (Define::KvDtype, 2),
            (Define::HeadDim, 128),
            (Define::Group, 4),
        ]);
        let text = program(&ops::attention_decode::SOURCE, &defines).expect("defined");
        assert!(text.starts_with("#define HEAD_DIM 128\n#define GROUP 4\n#define KV_DTYPE 2\n"));
        assert!(text.contains("__device__ __forceinline__ float bf16_to_f32"));
        assert!(text.ends_with(ops::attention_decode::SOURCE.code));
        // Sources needing nothing take no defines (and share one compilation).
        let plain = defines.restricted_to(ops::rms_norm::SOURCE.needs);
        assert_eq!(plain, Defines::default());
        assert!(
            program(&ops::rms_norm::SOURCE, &plain)
                .expect("plain")
                .starts_with("//")
        );
    }

    #[test]
    fn a_missing_define_is_refused_by_name() {
        let err = program(&ops::rope_cache::SOURCE, &Defines::default()).expect_err("missing");
        assert!(err.to_string().contains("KV_DTYPE"), "{err}");
    }

    #[test]
    fn every_source_is_listed_once_with_its_entry_points() {
        let mut files: Vec<_> = SOURCES.iter().map(|s| s.file).collect();
        files.sort();
        files.dedup();
        assert_eq!(files.len(), SOURCES.len());
        for source in SOURCES {
            assert!(source.file.ends_with(".cu"));
            for entry in source.entry_points {
                assert!(
                    source.code.contains(&format!("void {entry}("))
                        || source.code.contains(&format!("{entry}(\n")),
                    "{} has no kernel {entry}",
                    source.file
                );
            }
        }
    }

    #[test]
    fn options_name_the_compute_capability() {
        assert_eq!(options((9, 0))[0], "--gpu-architecture=compute_90");
        assert_eq!(options((8, 0))[0], "--gpu-architecture=compute_80");
    }
}
