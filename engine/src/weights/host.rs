//! A tensor as a file stores it, borrowed from the memory-mapped file where it can be.

use std::borrow::Cow;

use half::{bf16, f16};

use super::WeightFormat;
use super::dequantize::dequantize_row;

/// A `[rows, cols]` matrix (a vector has one row) in `format`, row-major: row `r` is
/// `row_bytes` bytes at `r * row_bytes`. Shapes are Hugging Face's (`nn.Linear` weights are
/// `[out_features, in_features]`) whatever order the file lists them in.
#[derive(Debug, Clone)]
pub struct HostTensor<'a> {
    name: String,
    format: WeightFormat,
    rows: usize,
    cols: usize,
    bytes: Cow<'a, [u8]>,
}

impl<'a> HostTensor<'a> {
    /// Wraps `bytes`, refusing a size that does not match the shape and format.
    pub fn new(
        name: impl Into<String>,
        format: WeightFormat,
        rows: usize,
        cols: usize,
        bytes: impl Into<Cow<'a, [u8]>>,
    ) -> Result<Self, String> {
        let name = name.into();
        let bytes = bytes.into();
        let Some(row_bytes) = format.row_bytes(cols) else {
            return Err(format!(
                "{name}: a row of {cols} values is not a whole number of {format} blocks of {}",
                format.block_len()
            ));
        };
        let expected = row_bytes.checked_mul(rows);
        if expected != Some(bytes.len()) {
            return Err(format!(
                "{name}: {} bytes of data, but [{rows}, {cols}] in {format} takes {}",
                bytes.len(),
                expected.map_or("more than the address space".into(), |e| e.to_string())
            ));
        }
        Ok(Self {
            name,
            format,
            rows,
            cols,
            bytes,
        })
    }

    /// An f32 tensor made on the host (norm weights concatenated, test data).
    pub fn from_f32(name: impl Into<String>, rows: usize, cols: usize, values: &[f32]) -> Self {
        assert_eq!(values.len(), rows * cols, "from_f32: shape");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self {
            name: name.into(),
            format: WeightFormat::F32,
            rows,
            cols,
            bytes: Cow::Owned(bytes),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn format(&self) -> WeightFormat {
        self.format
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn row_bytes(&self) -> usize {
        self.bytes.len() / self.rows.max(1)
    }

    pub fn row(&self, index: usize) -> &[u8] {
        let width = self.row_bytes();
        &self.bytes[index * width..(index + 1) * width]
    }

    /// Every value, decoded to f32 (the reference decoding of [`dequantize_row`]).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        if self.cols > 0 {
            for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
                dequantize_row(self.format, self.row(r), row);
            }
        }
        out
    }

    /// The same values stored as `format`, a float format: quantised blocks are decoded,
    /// f32 is rounded to 16 bits by round-to-nearest-even.
    ///
    /// # Panics
    /// If `format` is quantised (quantising is not a loader's job).
    pub fn convert(&self, format: WeightFormat) -> HostTensor<'static> {
        assert!(
            !format.is_quantized(),
            "convert: {format} is not a float format"
        );
        let values = self.to_f32();
        let bytes: Vec<u8> = match format {
            WeightFormat::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            WeightFormat::F16 => values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
            _ => values
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect(),
        };
        HostTensor {
            name: self.name.clone(),
            format,
            rows: self.rows,
            cols: self.cols,
            bytes: Cow::Owned(bytes),
        }
    }

    /// The tensor with its rows reordered: row `i` of the result is row `source_of(i)` of
    /// this one. Rows are whole blocks, so this works for every format.
    pub fn reorder_rows(&self, source_of: impl Fn(usize) -> usize) -> HostTensor<'static> {
        let mut bytes = Vec::with_capacity(self.bytes.len());
        for i in 0..self.rows {
            bytes.extend_from_slice(self.row(source_of(i)));
        }
        HostTensor {
            name: self.name.clone(),
            format: self.format,
            rows: self.rows,
            cols: self.cols,
            bytes: Cow::Owned(bytes),
        }
    }

    /// Rows `first .. first + rows` as a tensor of their own, borrowing these bytes (one
    /// expert of a GGUF file's stacked experts).
    ///
    /// # Panics
    /// If the rows are not all inside this tensor.
    pub fn slice_rows(&self, name: impl Into<String>, first: usize, rows: usize) -> HostTensor<'_> {
        assert!(first + rows <= self.rows, "slice_rows: rows out of range");
        let width = self.row_bytes();
        HostTensor {
            name: name.into(),
            format: self.format,
            rows,
            cols: self.cols,
            bytes: Cow::Borrowed(&self.bytes[first * width..(first + rows) * width]),
        }
    }

    /// Owns its bytes, so it outlives the file it came from.
    pub fn into_owned(self) -> HostTensor<'static> {
        HostTensor {
            name: self.name,
            format: self.format,
            rows: self.rows,
            cols: self.cols,
            bytes: Cow::Owned(self.bytes.into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_that_does_not_match_the_shape_is_refused_by_name() {
        let err =
            HostTensor::new("w", WeightFormat::Q8_0, 2, 32, vec![0u8; 34]).expect_err("short");
        assert!(err.contains("w:") && err.contains("68"), "{err}");
        let err = HostTensor::new("w", WeightFormat::Q4K, 1, 100, vec![]).expect_err("cols");
        assert!(err.contains("whole number"), "{err}");
    }

    #[test]
    fn conversion_to_16_bits_rounds_and_keeps_the_shape() {
        let t = HostTensor::from_f32("v", 1, 3, &[1.0, 1.0 + 1.0 / 1024.0, -2.5]);
        let bf = t.convert(WeightFormat::Bf16);
        assert_eq!(bf.format(), WeightFormat::Bf16);
        assert_eq!(bf.bytes().len(), 6);
        assert_eq!(bf.to_f32(), vec![1.0, 1.0, -2.5]);
        let h = t.convert(WeightFormat::F16);
        assert_eq!(h.to_f32(), vec![1.0, 1.0 + 1.0 / 1024.0, -2.5]);
    }

    #[test]
    fn a_slice_of_rows_is_those_rows() {
        let t = HostTensor::from_f32("m", 3, 2, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let s = t.slice_rows("m.1", 1, 2);
        assert_eq!((s.name(), s.rows(), s.cols()), ("m.1", 2, 2));
        assert_eq!(s.to_f32(), vec![2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn reordering_moves_whole_rows() {
        let t = HostTensor::from_f32("m", 3, 2, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let r = t.reorder_rows(|i| 2 - i);
        assert_eq!(r.to_f32(), vec![4.0, 5.0, 2.0, 3.0, 0.0, 1.0]);
    }
}
