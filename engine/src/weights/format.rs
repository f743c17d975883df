//! The storage formats of weights: their block geometry and their GGML and safetensors names.

use std::fmt;

/// How a row of weights is stored. Quantised formats store a row as consecutive blocks of
/// `block_len()` values, each block `block_bytes()` long (GGML's layouts, byte for byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    Bf16,
    /// 32 values: an f16 scale and 32 signed bytes.
    Q8_0,
    /// 32 values: an f16 scale and 32 nibbles centred on 8.
    Q4_0,
    /// 32 values: an f16 scale, an f16 minimum and 32 nibbles.
    Q4_1,
    /// 256 values in 8 sub-blocks of 32 with 6-bit scales and minimums, 4-bit values.
    Q4K,
    /// As Q4K with a fifth bit per value.
    Q5K,
    /// 256 values in 16 sub-blocks of 16 with 8-bit scales, 6-bit values centred on 32.
    Q6K,
}

/// A GGML tensor type the engine does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownFormat(pub u32);

impl fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            6 => "Q5_0",
            7 => "Q5_1",
            9 => "Q8_1",
            10 => "Q2_K",
            11 => "Q3_K",
            15 => "Q8_K",
            16..=23 | 29 => "an IQ type",
            _ => "an unknown type",
        };
        write!(
            f,
            "GGML type {} ({name}; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)",
            self.0
        )
    }
}

impl WeightFormat {
    /// Every format, for tests and tables.
    pub const ALL: [WeightFormat; 9] = [
        Self::F32,
        Self::F16,
        Self::Bf16,
        Self::Q8_0,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
    ];

    /// The format of GGML tensor type `id` (the numbering of GGUF files).
    pub fn from_ggml_type(id: u32) -> Result<Self, UnknownFormat> {
        Ok(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::Bf16,
            other => return Err(UnknownFormat(other)),
        })
    }

    /// Values per block (1 for float formats).
    pub const fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::Bf16 => 1,
            Self::Q8_0 | Self::Q4_0 | Self::Q4_1 => 32,
            Self::Q4K | Self::Q5K | Self::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    pub const fn is_quantized(self) -> bool {
        self.block_len() > 1
    }

    /// Bytes of a row of `cols` values, or `None` when `cols` is not a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        cols.is_multiple_of(self.block_len())
            .then(|| (cols / self.block_len()).checked_mul(self.block_bytes()))
            .flatten()
    }

    /// The name llama.cpp and the GGUF specification use.
    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_are_ggmls() {
        // bits per value: Q8_0 8.5, Q4_0 4.5, Q4_1 5, Q4_K 4.5, Q5_K 5.5, Q6_K 6.5625.
        let bits = |f: WeightFormat| f.block_bytes() as f64 * 8.0 / f.block_len() as f64;
        assert_eq!(bits(WeightFormat::Q8_0), 8.5);
        assert_eq!(bits(WeightFormat::Q4_0), 4.5);
        assert_eq!(bits(WeightFormat::Q4_1), 5.0);
        assert_eq!(bits(WeightFormat::Q4K), 4.5);
        assert_eq!(bits(WeightFormat::Q5K), 5.5);
        assert_eq!(bits(WeightFormat::Q6K), 6.5625);
    }

    #[test]
    fn a_row_that_is_not_whole_blocks_has_no_size() {
        assert_eq!(WeightFormat::Q4_0.row_bytes(64), Some(36));
        assert_eq!(WeightFormat::Q4_0.row_bytes(48), None);
        assert_eq!(WeightFormat::Q6K.row_bytes(576), None);
        assert_eq!(WeightFormat::Bf16.row_bytes(3), Some(6));
    }

    #[test]
    fn ggml_ids_round_trip_and_unknown_ones_are_named() {
        for id in [0, 1, 2, 3, 8, 12, 13, 14, 30] {
            assert!(WeightFormat::from_ggml_type(id).is_ok(), "{id}");
        }
        let err = WeightFormat::from_ggml_type(11).expect_err("Q3_K");
        assert!(err.to_string().contains("Q3_K"), "{err}");
    }
}
