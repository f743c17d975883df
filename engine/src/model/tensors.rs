//! Where a model's tensors come from, whatever the file format: a model definition asks for
//! tensors by the names its format gives them and gets them as stored.

use std::path::{Path, PathBuf};

use super::ModelError;
use super::gguf::GgufFile;
use super::safetensors_source::SafetensorsSource;
use crate::weights::HostTensor;

/// Which naming scheme a file's tensors follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorNaming {
    /// Hugging Face's module paths (`model.layers.0.self_attn.q_proj.weight`).
    HuggingFace,
    /// llama.cpp's GGUF names (`blk.0.attn_q.weight`).
    Gguf,
}

pub trait TensorSource: Send + Sync {
    /// The file or directory, for error messages.
    fn path(&self) -> &Path;
    /// The file that holds tensor `name` (a shard of a directory), for error messages.
    fn file_of(&self, name: &str) -> PathBuf {
        let _ = name;
        self.path().to_path_buf()
    }
    fn naming(&self) -> TensorNaming;
    fn contains(&self, name: &str) -> bool;
    /// The tensor as stored, `[rows, cols]` in Hugging Face's orientation.
    fn tensor(&self, name: &str) -> Result<HostTensor<'_>, ModelError>;
}

impl dyn TensorSource + '_ {
    /// The matrix `name`, checked to be `[rows, cols]`.
    pub fn matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<HostTensor<'_>, ModelError> {
        let tensor = self.tensor(name)?;
        if (tensor.rows(), tensor.cols()) != (rows, cols) {
            return Err(ModelError::WrongShape {
                path: self.file_of(name),
                tensor: name.to_string(),
                actual: vec![tensor.rows(), tensor.cols()],
                expected: vec![rows, cols],
            });
        }
        Ok(tensor)
    }

    /// The vector `name`, checked to hold `len` values.
    pub fn vector(&self, name: &str, len: usize) -> Result<HostTensor<'_>, ModelError> {
        let tensor = self.tensor(name)?;
        if (tensor.rows(), tensor.cols()) != (1, len) {
            return Err(ModelError::WrongShape {
                path: self.file_of(name),
                tensor: name.to_string(),
                actual: vec![tensor.rows() * tensor.cols()],
                expected: vec![len],
            });
        }
        Ok(tensor)
    }
}

impl TensorSource for SafetensorsSource {
    fn path(&self) -> &Path {
        self.dir()
    }

    fn naming(&self) -> TensorNaming {
        TensorNaming::HuggingFace
    }

    fn file_of(&self, name: &str) -> PathBuf {
        SafetensorsSource::file_of(self, name)
    }

    fn contains(&self, name: &str) -> bool {
        SafetensorsSource::contains(self, name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor<'_>, ModelError> {
        SafetensorsSource::tensor(self, name)
    }
}

impl TensorSource for GgufFile {
    fn path(&self) -> &Path {
        GgufFile::path(self)
    }

    fn naming(&self) -> TensorNaming {
        TensorNaming::Gguf
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor<'_>, ModelError> {
        GgufFile::tensor(self, name)
    }
}
