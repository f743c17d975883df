//! Finding the CUDA libraries before anything calls into them.
//!
//! cudarc loads libcuda, libnvrtc and libcublas on first use and panics if one is missing;
//! every entry point of the backend checks here first, so a machine without a driver (or
//! without NVRTC or cuBLAS) gets an error that names what is missing, never a panic.

use std::path::Path;
use std::sync::OnceLock;

use crate::backend::BackendError;

/// The libraries the backend loads, with what provides each.
const LIBRARIES: [(&str, &str); 3] = [
    ("libcuda", "the NVIDIA driver"),
    ("libnvrtc", "the CUDA runtime compiler (NVRTC)"),
    ("libcublas", "cuBLAS"),
];

fn present() -> [bool; 3] {
    static PRESENT: OnceLock<[bool; 3]> = OnceLock::new();
    // SAFETY: each check only tries to open the library (and closes it again).
    *PRESENT.get_or_init(|| unsafe {
        [
            cudarc::driver::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
        ]
    })
}

pub(super) fn unavailable(reason: impl Into<String>) -> BackendError {
    BackendError::Unavailable {
        backend: "cuda",
        reason: reason.into(),
    }
}

/// Ok when the driver, NVRTC and cuBLAS can all be loaded; else which cannot.
pub fn check_libraries() -> Result<(), BackendError> {
    let missing: Vec<String> = LIBRARIES
        .iter()
        .zip(present())
        .filter(|(_, ok)| !ok)
        .map(|((lib, what), _)| format!("{lib}.so ({what})"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(unavailable(format!(
        "cannot load {}; on a GPU node the NVIDIA container runtime provides libcuda, and \
         LD_LIBRARY_PATH must reach NVRTC and cuBLAS (CUDA 13); without a GPU use --backend cpu",
        missing.join(", ")
    )))
}

/// Only NVRTC: enough to compile kernels on a machine without a GPU.
pub fn check_nvrtc() -> Result<(), BackendError> {
    if present()[1] {
        Ok(())
    } else {
        Err(unavailable(
            "cannot load libnvrtc.so (the CUDA runtime compiler); LD_LIBRARY_PATH must reach it",
        ))
    }
}

/// Loads every shared library in `dir` and keeps it loaded, so that later loads by name
/// (cudarc's, and NVRTC's own of its builtins) find them without `LD_LIBRARY_PATH`. Must run
/// before the first check above.
pub fn preload_libraries(dir: &Path) -> Result<usize, BackendError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| unavailable(format!("reading {}: {e}", dir.display())))?;
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".so"))
        })
        .collect();
    // Builtins and helpers first: a library's own dependencies must already be loaded.
    paths.sort_by_key(|p| !p.to_string_lossy().contains("builtins"));
    for path in &paths {
        // SAFETY: loading a CUDA library runs only its initialisers, which have no
        // preconditions.
        let library = unsafe { libloading::Library::new(path) }
            .map_err(|e| unavailable(format!("loading {}: {e}", path.display())))?;
        // Kept for the life of the process: the loads by name resolve to it.
        std::mem::forget(library);
    }
    Ok(paths.len())
}
