//! Weights as the CPU kernels keep them: the same bits as the file (quantised stays
//! quantised), rearranged per row so a kernel reads each block's pieces with whole-vector
//! loads.
//!
//! - Float formats: as stored.
//! - Q8_0: the 32 int8 values of each block back to back; the f16 scales apart.
//! - Q4_0, Q4_1: blocks taken in pairs, 32 bytes per pair whose low nibbles are block
//!   `2p`'s values and high nibbles block `2p + 1`'s (Q4_K's own layout), so one load and
//!   two masks give two blocks in value order; scales (and Q4_1's minimums) apart.
//! - Q4_K, Q5_K: nibbles (and Q5_K's high bits) as stored; the 6-bit scales and minimums
//!   unpacked to one byte each.
//! - Q6_K: as stored, the f16 scale apart.
//!
//! Per-block f16 arrays are padded with zeros to whole groups of 8 blocks per row.

use half::f16;

use super::activations::{BLOCK, GROUP};
use crate::weights::dequantize::{half_at, k_scale_min};
use crate::weights::{HostTensor, WeightFormat};

/// One tensor of a linear layer, `[rows, cols]`, in CPU layout.
pub(in crate::backend::cpu) struct PackedWeights {
    pub rows: usize,
    pub cols: usize,
    pub layout: Layout,
}

pub(in crate::backend::cpu) enum Layout {
    /// F32, F16 or BF16, row-major as stored.
    Float {
        format: WeightFormat,
        data: Vec<u8>,
    },
    Q8_0 {
        qs: Vec<u8>,
        d: Vec<u16>,
    },
    /// Q4_0 (no minimums) or Q4_1.
    Q4 {
        qs: Vec<u8>,
        d: Vec<u16>,
        m: Option<Vec<u16>>,
    },
    /// Q4_K, or Q5_K when `qh` is present.
    K45 {
        qs: Vec<u8>,
        qh: Option<Vec<u8>>,
        scales: Vec<u8>,
        mins: Vec<u8>,
        d: Vec<u16>,
        dmin: Vec<u16>,
    },
    Q6K {
        ql: Vec<u8>,
        qh: Vec<u8>,
        scales: Vec<u8>,
        d: Vec<u16>,
    },
}

/// Blocks of 32 per row and their count padded to whole groups.
pub(super) fn blocks(cols: usize) -> (usize, usize) {
    let nb = cols / BLOCK;
    (nb, nb.div_ceil(GROUP) * GROUP)
}

fn half_bits(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

impl PackedWeights {
    pub fn pack(tensor: &HostTensor<'_>) -> Self {
        let (rows, cols) = (tensor.rows(), tensor.cols());
        let format = tensor.format();
        let (nb, nbp) = blocks(cols);
        let layout = match format {
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::Bf16 => Layout::Float {
                format,
                data: tensor.bytes().to_vec(),
            },
            WeightFormat::Q8_0 => {
                let mut qs = Vec::with_capacity(rows * nb * BLOCK);
                let mut d = vec![0u16; rows * nbp];
                for r in 0..rows {
                    for (b, block) in tensor.row(r).chunks_exact(34).enumerate() {
                        d[r * nbp + b] = half_bits(block, 0);
                        qs.extend_from_slice(&block[2..34]);
                    }
                }
                Layout::Q8_0 { qs, d }
            }
            WeightFormat::Q4_0 | WeightFormat::Q4_1 => {
                let with_min = format == WeightFormat::Q4_1;
                let (header, size) = if with_min { (4, 20) } else { (2, 18) };
                let pairs = nb.div_ceil(2);
                let mut qs = vec![0u8; rows * pairs * BLOCK];
                let mut d = vec![0u16; rows * nbp];
                let mut m = with_min.then(|| vec![0u16; rows * nbp]);
                for r in 0..rows {
                    let row = tensor.row(r);
                    for (b, block) in row.chunks_exact(size).enumerate() {
                        d[r * nbp + b] = half_bits(block, 0);
                        if let Some(m) = &mut m {
                            m[r * nbp + b] = half_bits(block, 2);
                        }
                        let pair = &mut qs[(r * pairs + b / 2) * BLOCK..][..BLOCK];
                        let shift = if b % 2 == 0 { 0 } else { 4 };
                        for (i, &byte) in block[header..].iter().enumerate() {
                            // GGML: value i in the low nibble of byte i, value i + 16 in its
                            // high nibble.
                            pair[i] |= (byte & 0x0F) << shift;
                            pair[i + 16] |= (byte >> 4) << shift;
                        }
                    }
                }
                Layout::Q4 { qs, d, m }
            }
            WeightFormat::Q4K | WeightFormat::Q5K => {
                let five = format == WeightFormat::Q5K;
                let nsb = cols / 256;
                let mut layout = (
                    Vec::with_capacity(rows * nsb * 128),
                    five.then(|| Vec::with_capacity(rows * nsb * 32)),
                    Vec::with_capacity(rows * nsb * 8),
                    Vec::with_capacity(rows * nsb * 8),
                    Vec::with_capacity(rows * nsb),
                    Vec::with_capacity(rows * nsb),
                );
                let (qs, qh, scales, mins, d, dmin) = &mut layout;
                for r in 0..rows {
                    for block in tensor.row(r).chunks_exact(format.block_bytes()) {
                        d.push(half_bits(block, 0));
                        dmin.push(half_bits(block, 2));
                        for j in 0..8 {
                            let (sc, m) = k_scale_min(j, &block[4..16]);
                            scales.push(sc);
                            mins.push(m);
                        }
                        match qh {
                            Some(qh) => {
                                qh.extend_from_slice(&block[16..48]);
                                qs.extend_from_slice(&block[48..176]);
                            }
                            None => qs.extend_from_slice(&block[16..144]),
                        }
                    }
                }
                let (qs, qh, scales, mins, d, dmin) = layout;
                Layout::K45 {
                    qs,
                    qh,
                    scales,
                    mins,
                    d,
                    dmin,
                }
            }
            WeightFormat::Q6K => {
                let nsb = cols / 256;
                let mut ql = Vec::with_capacity(rows * nsb * 128);
                let mut qh = Vec::with_capacity(rows * nsb * 64);
                let mut scales = Vec::with_capacity(rows * nsb * 16);
                let mut d = Vec::with_capacity(rows * nsb);
                for r in 0..rows {
                    for block in tensor.row(r).chunks_exact(210) {
                        ql.extend_from_slice(&block[..128]);
                        qh.extend_from_slice(&block[128..192]);
                        scales.extend_from_slice(&block[192..208]);
                        d.push(half_bits(block, 208));
                    }
                }
                Layout::Q6K { ql, qh, scales, d }
            }
        };
        Self { rows, cols, layout }
    }

    pub fn format(&self) -> WeightFormat {
        match &self.layout {
            Layout::Float { format, .. } => *format,
            Layout::Q8_0 { .. } => WeightFormat::Q8_0,
            Layout::Q4 { m: None, .. } => WeightFormat::Q4_0,
            Layout::Q4 { m: Some(_), .. } => WeightFormat::Q4_1,
            Layout::K45 { qh: None, .. } => WeightFormat::Q4K,
            Layout::K45 { qh: Some(_), .. } => WeightFormat::Q5K,
            Layout::Q6K { .. } => WeightFormat::Q6K,
        }
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        let len16 = |v: &Vec<u16>| 2 * v.len();
        match &self.layout {
            Layout::Float { data, .. } => data.len(),
            Layout::Q8_0 { qs, d } => qs.len() + len16(d),
            Layout::Q4 { qs, d, m } => qs.len() + len16(d) + m.as_ref().map_or(0, len16),
            Layout::K45 {
                qs,
                qh,
                scales,
                mins,
                d,
                dmin,
            } => {
                qs.len()
                    + qh.as_ref().map_or(0, Vec::len)
                    + scales.len()
                    + mins.len()
                    + len16(d)
                    + len16(dmin)
            }
            Layout::Q6K { ql, qh, scales, d } => ql.len() + qh.len() + scales.len() + len16(d),
        }
    }

    /// Decodes row `r` into `out` (`cols` values): the values [`dequantize_row`] gives for
    /// the stored row.
    ///
    /// [`dequantize_row`]: crate::weights::dequantize::dequantize_row
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let cols = self.cols;
        let (nb, nbp) = blocks(cols);
        let h = |bits: u16| f16::from_bits(bits).to_f32();
        match &self.layout {
            Layout::Float { format, data } => {
                let width = format.block_bytes() * cols;
                crate::weights::dequantize::dequantize_row(
                    *format,
                    &data[r * width..(r + 1) * width],
                    out,
                );
            }
            Layout::Q8_0 { qs, d } => {
                for b in 0..nb {
                    let scale = h(d[r * nbp + b]);
                    let q = &qs[(r * nb + b) * BLOCK..][..BLOCK];
                    for (o, &v) in out[b * BLOCK..][..BLOCK].iter_mut().zip(q) {
                        *o = v as i8 as f32 * scale;
                    }
                }
            }
            Layout::Q4 { qs, d, m } => {
                let pairs = nb.div_ceil(2);
                for b in 0..nb {
                    let scale = h(d[r * nbp + b]);
                    let pair = &qs[(r * pairs + b / 2) * BLOCK..][..BLOCK];
                    let shift = if b % 2 == 0 { 0 } else { 4 };
                    for (i, o) in out[b * BLOCK..][..BLOCK].iter_mut().enumerate() {
                        let q = ((pair[i] >> shift) & 0x0F) as f32;
                        *o = match m {
                            Some(m) => q * scale + h(m[r * nbp + b]),
                            None => (q - 8.0) * scale,
                        };
                    }
                }
            }
            Layout::K45 {
                qs,
                qh,
                scales,
                mins,
                d,
                dmin,
            } => {
                let nsb = cols / 256;
                for s in 0..nsb {
                    let at = r * nsb + s;
                    let (d, dmin) = (h(d[at]), h(dmin[at]));
                    for p in 0..4 {
                        let bytes = &qs[at * 128 + 32 * p..][..32];
                        for half in 0..2 {
                            let j = 2 * p + half;
                            let scale = d * scales[at * 8 + j] as f32;
                            let min = dmin * mins[at * 8 + j] as f32;
                            for (l, &byte) in bytes.iter().enumerate() {
                                let mut q = if half == 0 { byte & 0x0F } else { byte >> 4 };
                                if let Some(qh) = qh {
                                    q |= ((qh[at * 32 + l] >> j) & 1) << 4;
                                }
                                out[s * 256 + j * 32 + l] = scale * q as f32 - min;
                            }
                        }
                    }
                }
            }
            Layout::Q6K { ql, qh, scales, d } => {
                let nsb = cols / 256;
                for s in 0..nsb {
                    let at = r * nsb + s;
                    let mut block = Vec::with_capacity(210);
                    block.extend_from_slice(&ql[at * 128..][..128]);
                    block.extend_from_slice(&qh[at * 64..][..64]);
                    block.extend_from_slice(&scales[at * 16..][..16]);
                    block.extend_from_slice(&d[at].to_le_bytes());
                    debug_assert_eq!(half_at(&block, 208), h(d[at]));
                    crate::weights::dequantize::dequantize_row(
                        WeightFormat::Q6K,
                        &block,
                        &mut out[s * 256..(s + 1) * 256],
                    );
                }
            }
        }
    }
}
