//! Tensors from a Hugging Face directory: `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`, memory-mapped; each shard's header is read once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::Metadata};

use super::ModelError;
use crate::weights::{HostTensor, WeightFormat};

struct Shard {
    path: PathBuf,
    map: Mmap,
    /// Where the tensor data starts: after the 8-byte length and the JSON header.
    data_start: usize,
    metadata: Metadata,
}

pub(crate) struct SafetensorsSource {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    index: HashMap<String, usize>,
}

impl SafetensorsSource {
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<String> = if index_path.is_file() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| ModelError::io(&index_path, e))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Config {
                    path: index_path.clone(),
                    reason: e.to_string(),
                })?;
            let map = value
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Config {
                    path: index_path.clone(),
                    reason: "no weight_map".into(),
                })?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            files.sort();
            files.dedup();
            files
        } else if dir.join("model.safetensors").is_file() {
            vec!["model.safetensors".into()]
        } else {
            return Err(ModelError::NotAModel {
                path: dir.to_path_buf(),
                reason: "no model.safetensors or model.safetensors.index.json".into(),
            });
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for file in files {
            let shard = Shard::open(&dir.join(&file))?;
            for name in shard.metadata.tensors().into_keys() {
                index.insert(name, shards.len());
            }
            shards.push(shard);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
            index,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The shard that holds `name` (the directory when no shard does).
    pub fn file_of(&self, name: &str) -> PathBuf {
        self.index
            .get(name)
            .map_or_else(|| self.dir.clone(), |&i| self.shards[i].path.clone())
    }

    /// The tensor as stored, borrowed from its shard's mapping: a `[rows, cols]` matrix or a
    /// vector (one row).
    pub fn tensor(&self, name: &str) -> Result<HostTensor<'_>, ModelError> {
        let missing = || ModelError::MissingTensor {
            path: self.dir.clone(),
            tensor: name.to_string(),
        };
        let shard = &self.shards[*self.index.get(name).ok_or_else(missing)?];
        let info = shard.metadata.info(name).ok_or_else(missing)?;
        let format = match info.dtype {
            Dtype::F32 => WeightFormat::F32,
            Dtype::F16 => WeightFormat::F16,
            Dtype::BF16 => WeightFormat::Bf16,
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path: shard.path.clone(),
                    tensor: name.to_string(),
                    dtype: format!("{other:?} (supported: F32, F16, BF16)"),
                });
            }
        };
        let (rows, cols) = match info.shape.as_slice() {
            [len] => (1, *len),
            [rows, cols] => (*rows, *cols),
            shape => {
                return Err(ModelError::WrongShape {
                    path: shard.path.clone(),
                    tensor: name.to_string(),
                    actual: shape.to_vec(),
                    expected: vec![],
                });
            }
        };
        let (start, end) = info.data_offsets;
        let bytes = shard
            .map
            .get(shard.data_start + start..shard.data_start + end)
            .ok_or_else(|| ModelError::NotAModel {
                path: shard.path.clone(),
                reason: format!("tensor {name} extends past the end of the file"),
            })?;
        HostTensor::new(name, format, rows, cols, bytes).map_err(|reason| ModelError::NotAModel {
            path: shard.path.clone(),
            reason,
        })
    }
}

impl Shard {
    fn open(path: &Path) -> Result<Self, ModelError> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: read-only mapping of a weights file nobody writes while the engine loads it.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&map).map_err(|e| ModelError::NotAModel {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_start: 8 + header_len,
            metadata,
        })
    }
}
