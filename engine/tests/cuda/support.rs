//! What the CUDA test modules share: where CI's NVRTC and ptxas are, and whether a GPU is.

use std::path::PathBuf;
use std::sync::OnceLock;

use modelfleet_engine::backend::cuda::driver;

/// The NVRTC + ptxas `make tools` provisions: `MODELFLEET_CUDA_COMPILERS`, else the cache
/// directory of the version scripts/versions.env pins.
pub fn compilers_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MODELFLEET_CUDA_COMPILERS") {
        return PathBuf::from(dir);
    }
    let versions = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/versions.env");
    // A copied test binary may run far from the tree it was built in: then there is none.
    let version = std::fs::read_to_string(&versions)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("CUDA_COMPILERS_VERSION="))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cache = std::env::var_os("MODELFLEET_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/modelfleet")
        });
    cache.join(format!("cuda-compilers-{version}"))
}

/// Loads the provisioned NVRTC, when there is one (CI), before anything asks whether the
/// CUDA libraries are present: the engine remembers the first answer, so whichever test runs
/// first, every one goes through here before its first check.
fn preload_provisioned_nvrtc() {
    static LOADED: OnceLock<()> = OnceLock::new();
    LOADED.get_or_init(|| {
        let lib = compilers_dir().join("lib");
        if lib.is_dir() && std::env::var_os("MODELFLEET_CUDA_SYSTEM_NVRTC").is_none() {
            driver::preload_libraries(&lib).expect("loading the provisioned NVRTC");
        }
    });
}

/// NVRTC is loaded: from the provisioned directory when it is there (CI), else from the
/// loader's search path (a GPU machine's own CUDA).
pub fn nvrtc_ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        preload_provisioned_nvrtc();
        if let Err(e) = driver::check_nvrtc() {
            panic!(
                "{e}; `make tools` provisions it in {} (scripts/tools.sh cuda-compilers)",
                compilers_dir().display()
            );
        }
    });
}

/// Whether device tests run: `false` (after printing why) without a usable GPU, unless
/// `MODELFLEET_REQUIRE_GPU` is set, in which case no GPU is a failure.
pub fn gpu_available(test: &str) -> bool {
    static STATUS: OnceLock<Result<(), String>> = OnceLock::new();
    let status = STATUS.get_or_init(|| {
        preload_provisioned_nvrtc();
        driver::check_libraries().map_err(|e| e.to_string())?;
        let count = cudarc::driver::CudaContext::device_count().map_err(|e| e.to_string())?;
        if count < 1 {
            return Err("the driver reports no CUDA device".into());
        }
        Ok(())
    });
    match status {
        Ok(()) => true,
        Err(reason) if std::env::var_os("MODELFLEET_REQUIRE_GPU").is_some() => {
            panic!("{test}: MODELFLEET_REQUIRE_GPU is set but there is no usable GPU: {reason}")
        }
        Err(reason) => {
            // Straight to stderr, past the test harness's capture, so `make test` shows it.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: no GPU here ({reason})");
            false
        }
    }
}

/// The golden fixtures: `MODELFLEET_FIXTURES` (where a copied tree has them), else this
/// crate's.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("MODELFLEET_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}
