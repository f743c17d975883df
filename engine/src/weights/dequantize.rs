//! Reference decoding of every weight format into f32, value by value as GGML defines it.
//!
//! These are the slow, obviously-correct versions: loading with `--dtype float32` uses them,
//! and every device's kernels are tested against them.

use half::{bf16, f16};

use super::WeightFormat;

/// Decodes one row (`out.len()` values) stored as `format` in `bytes`.
///
/// # Panics
/// If `bytes` is not exactly the row's size (`format.row_bytes(out.len())`).
pub fn dequantize_row(format: WeightFormat, bytes: &[u8], out: &mut [f32]) {
    assert_eq!(
        Some(bytes.len()),
        format.row_bytes(out.len()),
        "dequantize_row: {} bytes are not a {format} row of {} values",
        bytes.len(),
        out.len()
    );
    let blocks = bytes.chunks_exact(format.block_bytes());
    let outs = out.chunks_exact_mut(format.block_len());
    match format {
        WeightFormat::F32 => {
            for (b, o) in blocks.zip(outs) {
                o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        WeightFormat::F16 => {
            for (b, o) in blocks.zip(outs) {
                o[0] = half_at(b, 0);
            }
        }
        WeightFormat::Bf16 => {
            for (b, o) in blocks.zip(outs) {
                o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        WeightFormat::Q8_0 => blocks.zip(outs).for_each(|(b, o)| q8_0(b, o)),
        WeightFormat::Q4_0 => blocks.zip(outs).for_each(|(b, o)| q4_0(b, o)),
        WeightFormat::Q4_1 => blocks.zip(outs).for_each(|(b, o)| q4_1(b, o)),
        WeightFormat::Q4K => blocks.zip(outs).for_each(|(b, o)| q4_k(b, o)),
        WeightFormat::Q5K => blocks.zip(outs).for_each(|(b, o)| q5_k(b, o)),
        WeightFormat::Q6K => blocks.zip(outs).for_each(|(b, o)| q6_k(b, o)),
    }
}

/// The f16 stored little-endian at `bytes[at..at + 2]`, as f32.
pub(crate) fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

fn q8_0(block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 0);
    for (o, &q) in out.iter_mut().zip(&block[2..34]) {
        *o = q as i8 as f32 * d;
    }
}

/// Q4_0 and Q4_1 keep value `i` in the low nibble of byte `i` and value `i + 16` in its
/// high nibble.
fn q4_0(block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 0);
    let (low, high) = out.split_at_mut(16);
    for ((l, h), &q) in low.iter_mut().zip(high).zip(&block[2..18]) {
        *l = ((q & 0x0F) as f32 - 8.0) * d;
        *h = ((q >> 4) as f32 - 8.0) * d;
    }
}

fn q4_1(block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 0);
    let m = half_at(block, 2);
    let (low, high) = out.split_at_mut(16);
    for ((l, h), &q) in low.iter_mut().zip(high).zip(&block[4..20]) {
        *l = (q & 0x0F) as f32 * d + m;
        *h = (q >> 4) as f32 * d + m;
    }
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) of a Q4_K or Q5_K block, packed in
/// its 12 scale bytes: sub-blocks 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7
/// (minimums); sub-blocks 4-7 in the nibbles of bytes 8-11 plus the top 2 bits of bytes 0-7.
pub(crate) fn k_scale_min(j: usize, scales: &[u8]) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// Q4_K: `d`, `dmin` (f16), 12 bytes of packed scales, 128 bytes of nibbles. The nibbles of
/// byte `32 * p + l` hold value `l` of sub-block `2p` (low) and of sub-block `2p + 1` (high).
fn q4_k(block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 0);
    let dmin = half_at(block, 2);
    let scales = &block[4..16];
    let qs = &block[16..144];
    for (p, pair) in out.chunks_exact_mut(64).enumerate() {
        let bytes = &qs[32 * p..32 * p + 32];
        let (low, high) = pair.split_at_mut(32);
        let (sc, m) = k_scale_min(2 * p, scales);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        let (sc, m) = k_scale_min(2 * p + 1, scales);
        let (d2, m2) = (d * sc as f32, dmin * m as f32);
        for ((l, h), &q) in low.iter_mut().zip(high).zip(bytes) {
            *l = d1 * (q & 0x0F) as f32 - m1;
            *h = d2 * (q >> 4) as f32 - m2;
        }
    }
}

/// Q5_K: as Q4_K, with a 32-byte `qh` (after the scales) whose bit `j` of byte `l` is the
/// fifth bit of value `l` of sub-block `j`.
fn q5_k(block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 0);
    let dmin = half_at(block, 2);
    let scales = &block[4..16];
    let qh = &block[16..48];
    let qs = &block[48..176];
    for (p, pair) in out.chunks_exact_mut(64).enumerate() {
        let bytes = &qs[32 * p..32 * p + 32];
        let (low, high) = pair.split_at_mut(32);
        let (sc, m) = k_scale_min(2 * p, scales);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        let (sc, m) = k_scale_min(2 * p + 1, scales);
        let (d2, m2) = (d * sc as f32, dmin * m as f32);
        for (l, ((lo, hi), &q)) in low.iter_mut().zip(high).zip(bytes).enumerate() {
            let bit_low = (qh[l] >> (2 * p)) & 1;
            let bit_high = (qh[l] >> (2 * p + 1)) & 1;
            *lo = d1 * ((q & 0x0F) | (bit_low << 4)) as f32 - m1;
            *hi = d2 * ((q >> 4) | (bit_high << 4)) as f32 - m2;
        }
    }
}

/// Q6_K: 128 bytes of low nibbles `ql`, 64 bytes of high bit pairs `qh`, 16 signed scales,
/// then `d` (f16). Each half of 128 values reads 64 bytes of `ql` and 32 of `qh`: value `l`,
/// `l + 32`, `l + 64` and `l + 96` of the half take the low nibble of `ql[l]`, of
/// `ql[l + 32]`, the high nibble of `ql[l]`, of `ql[l + 32]`, and bit pairs 0-1, 2-3, 4-5,
/// 6-7 of `qh[l]`; values are centred on 32, and every 16 values share a scale.
fn q6_k(block: &[u8], out: &mut [f32]) {
    let d = half_at(block, 208);
    let scales = &block[192..208];
    for (n, half_out) in out.chunks_exact_mut(128).enumerate() {
        let ql = &block[64 * n..64 * n + 64];
        let qh = &block[128 + 32 * n..128 + 32 * n + 32];
        let sc = &scales[8 * n..8 * n + 8];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0x0F) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, &q) in q.iter().enumerate() {
                let scale = sc[is + 2 * k] as i8 as f32;
                half_out[l + 32 * k] = d * scale * (q as i32 - 32) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    fn decode(format: WeightFormat, block: &[u8]) -> Vec<f32> {
        let mut out = vec![0.0; format.block_len()];
        dequantize_row(format, block, &mut out);
        out
    }

    #[test]
    fn q4_0_blocks_centre_nibbles_on_eight() {
        let mut block = f16_bytes(0.5).to_vec();
        block.extend((0..16u8).map(|i| i | ((15 - i) << 4)));
        let values = decode(WeightFormat::Q4_0, &block);
        assert_eq!(values[0], -4.0); // (0 - 8) * 0.5
        assert_eq!(values[15], 3.5); // (15 - 8) * 0.5
        assert_eq!(values[16], 3.5); // high nibble of byte 0 is 15
        assert_eq!(values[31], -4.0);
    }

    #[test]
    fn q4_1_blocks_add_the_minimum() {
        let mut block = f16_bytes(2.0).to_vec();
        block.extend(f16_bytes(-1.0));
        block.extend(std::iter::repeat_n(0x31u8, 16));
        let values = decode(WeightFormat::Q4_1, &block);
        assert_eq!(values[0], 1.0); // 1 * 2 - 1
        assert_eq!(values[16], 5.0); // 3 * 2 - 1
    }

    #[test]
    fn q8_0_blocks_are_signed() {
        let mut block = f16_bytes(0.25).to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let values = decode(WeightFormat::Q8_0, &block);
        assert_eq!(values[0], -4.0);
        assert_eq!(values[31], 3.75);
    }

    /// Packs 8 (scale, min) pairs of 6 bits the way GGML's Q4_K quantiser does.
    fn pack_k_scales(pairs: [(u8, u8); 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for (j, &(sc, m)) in pairs.iter().enumerate() {
            if j < 4 {
                s[j] = sc;
                s[j + 4] = m;
            } else {
                s[j + 4] = (sc & 0x0F) | ((m & 0x0F) << 4);
                s[j - 4] |= (sc >> 4) << 6;
                s[j] |= (m >> 4) << 6;
            }
        }
        s
    }

    #[test]
    fn k_scales_unpack_what_the_quantiser_packs() {
        let pairs = [
            (1, 63),
            (2, 40),
            (63, 0),
            (17, 33),
            (48, 5),
            (31, 62),
            (0, 1),
            (60, 59),
        ];
        let packed = pack_k_scales(pairs);
        for (j, pair) in pairs.iter().enumerate() {
            assert_eq!(k_scale_min(j, &packed), *pair, "sub-block {j}");
        }
    }

    #[test]
    fn q4_k_applies_each_sub_blocks_scale_and_minimum() {
        let mut block = f16_bytes(0.5).to_vec();
        block.extend(f16_bytes(0.25));
        let pairs = [
            (1, 0),
            (2, 4),
            (3, 0),
            (4, 0),
            (5, 0),
            (6, 0),
            (7, 8),
            (8, 0),
        ];
        block.extend(pack_k_scales(pairs));
        // Byte 32p + l: value l of sub-block 2p is 3, of sub-block 2p + 1 is 10.
        block.extend(std::iter::repeat_n(0xA3u8, 128));
        let values = decode(WeightFormat::Q4K, &block);
        assert_eq!(values[0], 0.5 * 1.0 * 3.0); // sub-block 0
        assert_eq!(values[32], 0.5 * 2.0 * 10.0 - 0.25 * 4.0); // sub-block 1
        assert_eq!(values[6 * 32 + 5], 0.5 * 7.0 * 3.0 - 0.25 * 8.0); // sub-block 6
        assert_eq!(values[255], 0.5 * 8.0 * 10.0); // sub-block 7
    }

    #[test]
    fn q5_k_adds_sixteen_where_the_high_bit_is_set() {
        let mut block = f16_bytes(1.0).to_vec();
        block.extend(f16_bytes(0.0));
        block.extend(pack_k_scales([(1, 0); 8]));
        let mut qh = [0u8; 32];
        qh[3] = 0b0000_0100; // value 3 of sub-block 2
        block.extend(qh);
        block.extend(std::iter::repeat_n(0x21u8, 128));
        let values = decode(WeightFormat::Q5K, &block);
        assert_eq!(values[64 + 3], 17.0); // 1 + 16
        assert_eq!(values[64 + 4], 1.0);
        assert_eq!(values[96 + 3], 2.0); // sub-block 3: high nibble 2, bit not set
    }

    #[test]
    fn q6_k_centres_values_on_32_with_a_scale_per_16() {
        let mut block = vec![0u8; 210];
        // Half 0, l = 0: ql[0] = 0x21 → values 0 and 64 take 1 and 2; qh[0] = 0b11 → +48
        // on value 0 only.
        block[0] = 0x21;
        block[128] = 0b0000_0011;
        for (i, s) in block[192..208].iter_mut().enumerate() {
            *s = (i as i8 - 8) as u8;
        }
        block[208..210].copy_from_slice(&f16_bytes(0.5));
        let values = decode(WeightFormat::Q6K, &block);
        assert_eq!(values[0], 0.5 * -8.0 * (49 - 32) as f32); // scale 0
        assert_eq!(values[64], 0.5 * -4.0 * (2 - 32) as f32); // scale 4
        assert_eq!(values[16], 0.5 * -7.0 * -32.0); // scale 1, zero bits
        assert_eq!(values[128 + 96 + 17], 0.5 * 7.0 * -32.0); // half 1, scale 8 + 6 + 1
    }

    #[test]
    fn float_formats_decode_exactly() {
        let v = 1.5f32;
        assert_eq!(decode(WeightFormat::F32, &v.to_le_bytes()), [1.5]);
        assert_eq!(decode(WeightFormat::F16, &f16_bytes(v)), [1.5]);
        assert_eq!(
            decode(WeightFormat::Bf16, &bf16::from_f32(v).to_le_bytes()),
            [1.5]
        );
    }
}
