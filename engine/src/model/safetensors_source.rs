//! Tensors from a Hugging Face directory: `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`, memory-mapped and converted to f32 on request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::ModelError;

pub(crate) struct SafetensorsSource {
    dir: PathBuf,
    /// Shard file name → its mapping.
    shards: HashMap<String, Mmap>,
    /// Tensor name → shard file name.
    index: HashMap<String, String>,
}

impl SafetensorsSource {
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let index_path = dir.join("model.safetensors.index.json");
        let index: HashMap<String, String> = if index_path.is_file() {
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
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        } else {
            let single = dir.join("model.safetensors");
            if !single.is_file() {
                return Err(ModelError::NotAModel {
                    path: dir.to_path_buf(),
                    reason: "no model.safetensors or model.safetensors.index.json".into(),
                });
            }
            let map = map_file(&single)?;
            SafeTensors::deserialize(&map)
                .map_err(|e| ModelError::NotAModel {
                    path: single.clone(),
                    reason: e.to_string(),
                })?
                .names()
                .into_iter()
                .map(|n| (n.to_string(), "model.safetensors".to_string()))
                .collect()
        };
        let mut shards = HashMap::new();
        for file in index.values() {
            if !shards.contains_key(file) {
                shards.insert(file.clone(), map_file(&dir.join(file))?);
            }
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

    /// The shard that holds `name` (for error messages).
    pub fn file_of(&self, name: &str) -> PathBuf {
        self.index
            .get(name)
            .map_or_else(|| self.dir.clone(), |f| self.dir.join(f))
    }

    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        let missing = || ModelError::MissingTensor {
            path: self.dir.clone(),
            tensor: name.to_string(),
        };
        let file = self.index.get(name).ok_or_else(missing)?;
        let path = self.dir.join(file);
        let map = self.shards.get(file).ok_or_else(missing)?;
        let tensors = SafeTensors::deserialize(map).map_err(|e| ModelError::NotAModel {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let view = tensors
            .tensor(name)
            .map_err(|_| ModelError::MissingTensor {
                path: path.clone(),
                tensor: name.to_string(),
            })?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path,
                    tensor: name.to_string(),
                    dtype: format!("{other:?} (supported: F32, F16, BF16)"),
                });
            }
        };
        Ok((view.shape().to_vec(), data))
    }
}

fn map_file(path: &Path) -> Result<Mmap, ModelError> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: read-only mapping of a weights file nobody writes while the engine loads it.
    unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))
}
