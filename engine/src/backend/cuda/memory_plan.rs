//! How much of the GPU the KV cache gets: what `--gpu-memory-utilization` allows, less
//! what is already in use once the weights and the activation workspace are placed (and
//! whatever else runs on the device), in whole blocks.

use crate::backend::kernels::KvCacheLayout;

const GIB: f64 = (1u64 << 30) as f64;

/// The KV cache's share of the device, as planned at start-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryPlan {
    pub total_bytes: usize,
    /// In use before the cache: the weights, the workspace, the context, other processes.
    pub used_bytes: usize,
    pub utilization: f32,
    pub kv_cache_bytes: usize,
    pub num_blocks: usize,
}

impl std::fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} KV blocks ({:.2} GiB) = {:.0}% of {:.2} GiB less {:.2} GiB in use",
            self.num_blocks,
            self.kv_cache_bytes as f64 / GIB,
            self.utilization * 100.0,
            self.total_bytes as f64 / GIB,
            self.used_bytes as f64 / GIB,
        )
    }
}

/// Plans the KV cache from the device's `(free, total)` memory, measured after the weights
/// and workspace were allocated. Refuses, saying why, a plan that leaves no block.
pub fn plan_kv_cache(
    free_bytes: usize,
    total_bytes: usize,
    utilization: f32,
    layout: &KvCacheLayout,
) -> Result<MemoryPlan, String> {
    if !(utilization > 0.0 && utilization <= 1.0) {
        return Err(format!(
            "--gpu-memory-utilization must be in (0, 1], got {utilization}"
        ));
    }
    let used_bytes = total_bytes.saturating_sub(free_bytes);
    let allowed = (total_bytes as f64 * f64::from(utilization)) as usize;
    let budget = allowed.saturating_sub(used_bytes).min(free_bytes);
    let num_blocks = layout.blocks_in(budget);
    let plan = MemoryPlan {
        total_bytes,
        used_bytes,
        utilization,
        kv_cache_bytes: num_blocks * layout.bytes_per_block(),
        num_blocks,
    };
    if num_blocks == 0 {
        return Err(format!(
            "no room for a KV cache block ({} bytes): {:.2} GiB of the device's {:.2} GiB are \
             in use after placing the weights, and --gpu-memory-utilization {utilization} allows \
             {:.2} GiB; raise it, or lower --max-num-batched-tokens to shrink the workspace",
            layout.bytes_per_block(),
            used_bytes as f64 / GIB,
            total_bytes as f64 / GIB,
            allowed as f64 / GIB,
        ));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::KvCacheShape;
    use crate::backend::kernels::KvCacheDtype;

    /// Llama-3.1-8B's cache: 32 layers, 8 KV heads of 128, bf16, 16 tokens a block = 2 MiB.
    fn llama_8b() -> KvCacheLayout {
        KvCacheLayout {
            shape: KvCacheShape {
                num_blocks: 0,
                block_size: 16,
            },
            num_layers: 32,
            num_kv_heads: 8,
            head_dim: 128,
            dtype: KvCacheDtype::Bf16,
        }
    }

    #[test]
    fn the_cache_gets_what_the_utilization_leaves_after_what_is_in_use() {
        const GB: usize = 1 << 30;
        let layout = llama_8b();
        assert_eq!(layout.bytes_per_block(), 2 << 20);
        // 80 GiB device, 17 GiB in use (weights + workspace), 90%: 72 - 17 = 55 GiB.
        let plan = plan_kv_cache(63 * GB, 80 * GB, 0.9, &layout).expect("fits");
        assert_eq!(plan.used_bytes, 17 * GB);
        let expected_bytes = (80.0 * GB as f64 * f64::from(0.9f32)) as usize - 17 * GB;
        assert_eq!(plan.num_blocks, expected_bytes / (2 << 20));
        assert!(plan.kv_cache_bytes <= expected_bytes);
        assert!(plan.to_string().contains("KV blocks"), "{plan}");
    }

    #[test]
    fn the_cache_never_takes_more_than_is_free() {
        const GB: usize = 1 << 30;
        // Another process holds memory the utilization would allow: only the free part counts.
        let plan = plan_kv_cache(GB, 80 * GB, 1.0, &llama_8b()).expect("fits");
        assert_eq!(plan.num_blocks, 512);
    }

    #[test]
    fn no_room_is_refused_with_the_figures_and_what_to_change() {
        const GB: usize = 1 << 30;
        let err = plan_kv_cache(10 * GB, 80 * GB, 0.5, &llama_8b()).expect_err("no room");
        assert!(
            err.contains("70.00 GiB") && err.contains("--gpu-memory-utilization"),
            "{err}"
        );
        assert!(plan_kv_cache(GB, 80 * GB, 0.0, &llama_8b()).is_err());
        assert!(plan_kv_cache(GB, 80 * GB, 1.5, &llama_8b()).is_err());
    }
}
