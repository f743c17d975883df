//! A [`Backend`] for any kernel layer: each step plan is flattened into [`StepMetadata`]
//! once, uploaded, and run through the model, whose weights may be shared by several
//! runners (each with its own KV cache).

use std::sync::Arc;

use super::kernels::{Kernels, KvCacheDtype, TokenPick};
use super::step::StepMetadata;
use super::{Backend, BackendError, BlockId, ForwardBatch, KvCacheShape, Logits, check_picks};
use crate::model::Decoder;

pub struct ModelRunner<K: Kernels> {
    kernels: Arc<K>,
    model: Arc<Decoder<K>>,
    cache: K::KvCache,
    shape: KvCacheShape,
}

impl<K: Kernels> ModelRunner<K> {
    /// A runner with a fresh KV cache of `shape` in `dtype`.
    pub fn new(
        kernels: Arc<K>,
        model: Arc<Decoder<K>>,
        shape: KvCacheShape,
        dtype: KvCacheDtype,
    ) -> Result<Self, BackendError> {
        let cache = kernels.new_kv_cache(&model.kv_cache_layout(shape, dtype))?;
        Ok(Self {
            kernels,
            model,
            cache,
            shape,
        })
    }
}

impl<K: Kernels> Backend for ModelRunner<K> {
    fn name(&self) -> &'static str {
        self.kernels.name()
    }

    fn kv_cache_shape(&self) -> KvCacheShape {
        self.shape
    }

    fn forward(&mut self, batch: &ForwardBatch) -> Result<Logits, BackendError> {
        let vocab_size = self.model.config().vocab_size;
        let meta = StepMetadata::build(batch, self.shape, vocab_size)?;
        if meta.num_tokens() == 0 {
            return Ok(Logits {
                vocab_size,
                values: Vec::new(),
            });
        }
        let step = self.kernels.upload_step(&meta)?;
        let values = self
            .model
            .forward(&self.kernels, &meta, &step, &mut self.cache)?;
        Ok(Logits { vocab_size, values })
    }

    fn forward_picking(
        &mut self,
        batch: &ForwardBatch,
        picks: &[TokenPick],
    ) -> Result<Vec<u32>, BackendError> {
        let vocab_size = self.model.config().vocab_size;
        let meta = StepMetadata::build(batch, self.shape, vocab_size)?;
        check_picks(meta.logits_rows.len(), picks)?;
        if meta.num_tokens() == 0 {
            return Ok(Vec::new());
        }
        let step = self.kernels.upload_step(&meta)?;
        let logits = self
            .model
            .forward_logits(&self.kernels, &meta, &step, &mut self.cache)?;
        self.kernels.pick_tokens(&logits, picks)
    }

    fn copy_blocks(&mut self, copies: &[(BlockId, BlockId)]) -> Result<(), BackendError> {
        let blocks = self.shape.num_blocks;
        if let Some((source, destination)) = copies
            .iter()
            .find(|(s, d)| *s as usize >= blocks || *d as usize >= blocks)
        {
            return Err(BackendError::InvalidPlan(format!(
                "copy {source} → {destination}: block out of range"
            )));
        }
        let (kernels, cache) = (&*self.kernels, &mut self.cache);
        kernels.execute(|| kernels.copy_blocks(cache, copies))
    }
}
