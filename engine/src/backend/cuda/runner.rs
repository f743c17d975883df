//! The CUDA [`Backend`]: the shared model over [`CudaKernels`], as
//! [`crate::backend::runner::ModelRunner`] runs it on any device, plus CUDA graphs for
//! decode steps.
//!
//! A decode step is padded to its bucket (see [`graphs`]). The first step of a bucket runs
//! eagerly, which compiles what it needs and warms cuBLAS; the second is recorded into a
//! graph and every later one replays it after uploading its metadata to the same
//! addresses. A graph belongs to this runner: it holds this runner's cache addresses. If
//! recording fails, graphs are turned off for the runner and steps run eagerly.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cudarc::driver::{CudaGraph, sys};

use super::graphs::{bucket_for, decode_buckets, is_decode_step, pad_decode_step};
use super::{CudaActivations, CudaKernels, CudaKvCache};
use crate::backend::kernels::{Kernels, KvCacheDtype, TokenPick};
use crate::backend::step::StepMetadata;
use crate::backend::{
    Backend, BackendError, BlockId, ForwardBatch, KvCacheShape, Logits, check_picks,
};
use crate::model::Decoder;

/// A recorded decode step.
struct Recorded {
    graph: SendGraph,
    /// Where the graph leaves the logits, and how far it uses the workspace.
    logits: CudaActivations,
    workspace_used: usize,
}

/// A graph handle moved with its runner.
struct SendGraph(CudaGraph);
// SAFETY: a CUDA graph may be launched from any thread as long as calls on it are
// serialised; only its runner touches it, through `&mut self`.
unsafe impl Send for SendGraph {}

struct DecodeGraphs {
    buckets: Vec<usize>,
    warmed: HashSet<usize>,
    recorded: HashMap<usize, Recorded>,
}

pub struct CudaRunner {
    kernels: Arc<CudaKernels>,
    model: Arc<Decoder<CudaKernels>>,
    cache: CudaKvCache,
    shape: KvCacheShape,
    graphs: Option<DecodeGraphs>,
}

impl CudaRunner {
    pub fn new(
        kernels: Arc<CudaKernels>,
        model: Arc<Decoder<CudaKernels>>,
        shape: KvCacheShape,
        dtype: KvCacheDtype,
    ) -> Result<Self, BackendError> {
        let cache = kernels.new_kv_cache(&model.kv_cache_layout(shape, dtype))?;
        let graphs = kernels.config().cuda_graphs.then(|| DecodeGraphs {
            buckets: decode_buckets(kernels.config().max_num_seqs),
            warmed: HashSet::new(),
            recorded: HashMap::new(),
        });
        Ok(Self {
            kernels,
            model,
            cache,
            shape,
            graphs,
        })
    }

    /// Decode buckets recorded so far.
    pub fn recorded_buckets(&self) -> Vec<usize> {
        let mut b: Vec<usize> = self
            .graphs
            .as_ref()
            .map(|g| g.recorded.keys().copied().collect())
            .unwrap_or_default();
        b.sort_unstable();
        b
    }

    /// Runs the step and returns its logits on the device: the rows `meta` asked for (a
    /// padded step's extra rows are left out).
    fn run(&mut self, meta: &StepMetadata) -> Result<CudaActivations, BackendError> {
        let bucket = match &self.graphs {
            Some(g) if is_decode_step(meta) => bucket_for(&g.buckets, meta.num_seqs()),
            _ => None,
        };
        let Some(bucket) = bucket else {
            return self.eager(meta);
        };
        let rows = meta.num_seqs();
        let padded = pad_decode_step(meta, bucket);
        if let Some(logits) = self.replay(bucket, &padded)? {
            return Ok(logits.first_rows(rows));
        }
        let warmed = self
            .graphs
            .as_mut()
            .is_some_and(|g| !g.warmed.insert(bucket));
        let logits = if warmed {
            self.record(bucket, &padded)?
        } else {
            self.eager(&padded)?
        };
        Ok(logits.first_rows(rows))
    }

    fn eager(&mut self, meta: &StepMetadata) -> Result<CudaActivations, BackendError> {
        let step = self.kernels.upload_step(meta)?;
        self.model
            .forward_logits(&self.kernels, meta, &step, &mut self.cache)
    }

    fn replay(
        &mut self,
        bucket: usize,
        padded: &StepMetadata,
    ) -> Result<Option<CudaActivations>, BackendError> {
        let Some(recorded) = self.graphs.as_ref().and_then(|g| g.recorded.get(&bucket)) else {
            return Ok(None);
        };
        // Same shape, so the metadata lands where the graph reads it.
        self.kernels.upload_step(padded)?;
        recorded
            .graph
            .0
            .launch()
            .map_err(|e| BackendError::Execution(format!("replaying the decode graph: {e}")))?;
        self.kernels
            .device()
            .resume_workspace(recorded.workspace_used);
        Ok(Some(self.kernels.restamp(recorded.logits)))
    }

    /// Records the padded step into a graph and runs it; on failure turns graphs off and
    /// runs the step eagerly.
    fn record(
        &mut self,
        bucket: usize,
        padded: &StepMetadata,
    ) -> Result<CudaActivations, BackendError> {
        let step = self.kernels.upload_step(padded)?;
        let stream = Arc::clone(self.kernels.device().stream());
        let recorded = stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| format!("starting to record: {e}"))
            .and_then(|()| {
                let logits =
                    self.model
                        .forward_logits(&self.kernels, padded, &step, &mut self.cache);
                // Recording must end whatever happened inside it.
                let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
                match (logits, graph) {
                    (Ok(logits), Ok(Some(graph))) => Ok((logits, graph)),
                    (Err(e), _) => Err(e.to_string()),
                    (_, Err(e)) => Err(format!("ending the recording: {e}")),
                    (_, Ok(None)) => Err("the recording is empty".into()),
                }
            });
        match recorded {
            Ok((logits, graph)) => {
                let workspace_used = self.kernels.device().workspace_used();
                graph.launch().map_err(|e| {
                    BackendError::Execution(format!("running the recorded decode graph: {e}"))
                })?;
                if let Some(graphs) = &mut self.graphs {
                    graphs.recorded.insert(
                        bucket,
                        Recorded {
                            graph: SendGraph(graph),
                            logits,
                            workspace_used,
                        },
                    );
                }
                tracing::debug!(bucket, "recorded a CUDA graph for decode steps");
                Ok(logits)
            }
            Err(reason) => {
                tracing::warn!(
                    bucket,
                    %reason,
                    "recording a CUDA graph failed; decode steps run without graphs"
                );
                self.graphs = None;
                self.eager(padded)
            }
        }
    }
}

impl Backend for CudaRunner {
    fn name(&self) -> &'static str {
        "cuda"
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
        let logits = self.run(&meta)?;
        let values = self.kernels.read(&logits)?;
        Ok(Logits { vocab_size, values })
    }

    fn forward_picking(
        &mut self,
        batch: &ForwardBatch,
        picks: &[TokenPick],
    ) -> Result<Vec<u32>, BackendError> {
        let meta = StepMetadata::build(batch, self.shape, self.model.config().vocab_size)?;
        check_picks(meta.logits_rows.len(), picks)?;
        if meta.num_tokens() == 0 {
            return Ok(Vec::new());
        }
        let logits = self.run(&meta)?;
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
        self.kernels.copy_blocks(&mut self.cache, copies)
    }
}
