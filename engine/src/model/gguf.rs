//! A reader for GGUF (version 2 and 3) files: metadata, tensor directory, and each tensor's
//! bytes as stored (crate::weights decodes them).
//!
//! Written here rather than taken from a crate: the format is a short header plus a table,
//! and the crates that read it come with whole tensor frameworks attached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::ModelError;
use crate::weights::{HostTensor, WeightFormat};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// How deep metadata arrays may nest. Real files use flat arrays; a crafted one could nest
/// them until the reader's recursion overflowed the stack.
const MAX_ARRAY_DEPTH: usize = 4;
/// Metadata values (array elements included) a file may hold. Each takes 32 bytes in
/// memory however few it takes in the file, so without a bound a file of one-byte array
/// elements would ask for 32 times its size. The largest vocabularies (about 256 Ki tokens,
/// with their scores, types and merges) need about a million.
const MAX_METADATA_VALUES: usize = 4 << 20;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::U64(v) => Some(*v),
            Self::I64(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::F64(v) => Some(*v),
            Self::U64(v) => Some(*v as f64),
            Self::I64(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Self::Array(values) => Some(values),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// GGUF order: `dims[0]` varies fastest (the row length of a matrix).
    pub dims: Vec<usize>,
    pub type_id: u32,
    offset: u64,
}

impl TensorInfo {
    pub fn element_count(&self) -> usize {
        self.dims.iter().product()
    }
}

/// An open GGUF file, memory-mapped.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    pub metadata: HashMap<String, Value>,
    pub tensors: HashMap<String, TensorInfo>,
    data_start: usize,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: the file is opened read-only and not modified while mapped; a concurrent
        // writer would be a user error that at worst yields wrong weights.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let mut reader = Reader {
            bytes: &map,
            pos: 0,
            path,
            values_left: MAX_METADATA_VALUES,
        };
        if reader.take(4)? != MAGIC {
            return Err(reader.error("missing GGUF magic"));
        }
        let version = reader.u32()?;
        if !(2..=3).contains(&version) {
            return Err(reader.error(&format!(
                "unsupported GGUF version {version} (supported: 2, 3)"
            )));
        }
        let tensor_count = reader.u64()?;
        let kv_count = reader.u64()?;
        let mut metadata = HashMap::new();
        for _ in 0..kv_count {
            let key = reader.string()?;
            let type_id = reader.u32()?;
            let value = reader.value(type_id, 0)?;
            metadata.insert(key, value);
        }
        let mut tensors = HashMap::new();
        for _ in 0..tensor_count {
            let name = reader.string()?;
            let n_dims = reader.u32()? as usize;
            if n_dims > 4 {
                return Err(reader.error(&format!("tensor {name} has {n_dims} dimensions")));
            }
            let dims = (0..n_dims)
                .map(|_| reader.u64().map(|d| d as usize))
                .collect::<Result<_, _>>()?;
            let type_id = reader.u32()?;
            let offset = reader.u64()?;
            tensors.insert(
                name,
                TensorInfo {
                    dims,
                    type_id,
                    offset,
                },
            );
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(value) => match value.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(reader.error(&format!(
                        "general.alignment must be a power of two, got {value:?}"
                    )));
                }
            },
        };
        let data_start = (reader.pos as u64)
            .div_ceil(alignment)
            .checked_mul(alignment)
            .and_then(|start| usize::try_from(start).ok())
            // A vocabulary-only file (llama.cpp's `ggml-vocab-*.gguf`) ends without the
            // padding before its empty data section.
            .filter(|&start| start <= map.len() || tensors.is_empty())
            .ok_or_else(|| reader.error("the tensor data would start past the end of the file"))?;
        for (name, info) in &tensors {
            check_tensor_extent(name, info, data_start, map.len())
                .map_err(|reason| reader.error(&reason))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            map,
            metadata,
            tensors,
            data_start,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// The tensor as stored: a `[rows, cols]` matrix (GGUF lists dimensions fastest first,
    /// so `dims` is `[cols, rows]`; a vector is one row), borrowed from the mapping.
    pub fn tensor(&self, name: &str) -> Result<HostTensor<'_>, ModelError> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })?;
        let format = WeightFormat::from_ggml_type(info.type_id).map_err(|e| {
            ModelError::UnsupportedDtype {
                path: self.path.clone(),
                tensor: name.to_string(),
                dtype: e.to_string(),
            }
        })?;
        // Stacked experts (`[cols, rows, experts]`) read as one matrix of every expert's
        // rows in turn, expert 0 first.
        let (cols, rows) = match info.dims.as_slice() {
            [len] => (*len, 1),
            [cols, rows] => (*cols, *rows),
            [cols, rows, experts] => (
                *cols,
                rows.checked_mul(*experts)
                    .ok_or_else(|| self.malformed(&format!("tensor {name} has too many rows")))?,
            ),
            dims => {
                return Err(self.malformed(&format!(
                    "tensor {name} has {} dimensions; weights have 1 to 3",
                    dims.len()
                )));
            }
        };
        let size = format
            .row_bytes(cols)
            .and_then(|row| row.checked_mul(rows))
            .ok_or_else(|| {
                self.malformed(&format!(
                    "tensor {name}: rows of {cols} values are not whole {format} blocks"
                ))
            })?;
        let bytes = (self.data_start as u64)
            .checked_add(info.offset)
            .and_then(|start| usize::try_from(start).ok())
            .and_then(|start| Some(start..start.checked_add(size)?))
            .and_then(|range| self.map.get(range))
            .ok_or_else(|| {
                self.malformed(&format!("tensor {name} extends past the end of the file"))
            })?;
        HostTensor::new(name, format, rows, cols, bytes).map_err(|reason| self.malformed(&reason))
    }

    fn malformed(&self, reason: &str) -> ModelError {
        ModelError::Gguf {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }
}

/// Whether a tensor's elements can be counted and, for the formats the engine reads,
/// whether its bytes lie inside the file, so that a bad header is refused when the file is
/// opened rather than when the tensor is first read.
fn check_tensor_extent(
    name: &str,
    info: &TensorInfo,
    data_start: usize,
    file_len: usize,
) -> Result<(), String> {
    let count = info
        .dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("tensor {name} has more elements than can be counted"))?;
    let Ok(format) = WeightFormat::from_ggml_type(info.type_id) else {
        return Ok(()); // refused by name if it is ever read
    };
    let end = usize::try_from(info.offset)
        .ok()
        .and_then(|offset| data_start.checked_add(offset))
        .and_then(|start| {
            start.checked_add((count / format.block_len()).checked_mul(format.block_bytes())?)
        });
    match end {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(format!("tensor {name} extends past the end of the file")),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
    /// Metadata values the file may still hold (see [`MAX_METADATA_VALUES`]).
    values_left: usize,
}

impl Reader<'_> {
    fn error(&self, reason: &str) -> ModelError {
        ModelError::Gguf {
            path: self.path.to_path_buf(),
            reason: format!("{reason} (at byte {})", self.pos),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], ModelError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.error("unexpected end of file"));
        };
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ModelError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ModelError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, ModelError> {
        let len = self.u64()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.error("string is not UTF-8"))
    }

    /// A metadata value of `type_id`, inside `depth` enclosing arrays.
    fn value(&mut self, type_id: u32, depth: usize) -> Result<Value, ModelError> {
        self.values_left = self.values_left.checked_sub(1).ok_or_else(|| {
            self.error(&format!(
                "more than {MAX_METADATA_VALUES} metadata values; not a model's metadata"
            ))
        })?;
        Ok(match type_id {
            0 => Value::U64(self.array::<1>()?[0] as u64),
            1 => Value::I64(self.array::<1>()?[0] as i8 as i64),
            2 => Value::U64(u16::from_le_bytes(self.array()?) as u64),
            3 => Value::I64(i16::from_le_bytes(self.array()?) as i64),
            4 => Value::U64(self.u32()? as u64),
            5 => Value::I64(i32::from_le_bytes(self.array()?) as i64),
            6 => Value::F64(f32::from_le_bytes(self.array()?) as f64),
            7 => Value::Bool(self.array::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.error(&format!(
                        "metadata arrays nested more than {MAX_ARRAY_DEPTH} deep"
                    )));
                }
                let element_type = self.u32()?;
                let len = self.u64()?;
                let element_size = encoded_size_at_least(element_type)
                    .ok_or_else(|| self.error(&format!("unknown metadata type {element_type}")))?;
                // Every element takes bytes of the file: a count the rest of the file cannot
                // hold is a lie, refused before anything is allocated for it.
                let fits = (self.bytes.len() - self.pos) as u64 / element_size;
                if len > fits {
                    return Err(self.error(&format!(
                        "an array of {len} elements does not fit in the rest of the file"
                    )));
                }
                if len > self.values_left as u64 {
                    return Err(self.error(&format!(
                        "an array of {len} elements is more than the {MAX_METADATA_VALUES} \
                         metadata values a model's file may hold"
                    )));
                }
                let mut values = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    values.push(self.value(element_type, depth + 1)?);
                }
                Value::Array(values)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(self.error(&format!("unknown metadata type {other}"))),
        })
    }
}

/// The fewest bytes a metadata value of `type_id` takes in the file (a string or an array
/// at least its length field), or `None` for an unknown type.
fn encoded_size_at_least(type_id: u32) -> Option<u64> {
    Some(match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.gguf");
        std::fs::write(&path, b"GGUF\x03\x00\x00\x00\x01").expect("write");
        let err = GgufFile::open(&path).err().expect("truncated");
        let message = err.to_string();
        assert!(
            message.contains("bad.gguf") && message.contains("end of file"),
            "{message}"
        );
    }
}
