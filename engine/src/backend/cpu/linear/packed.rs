//! Weights as the CPU kernels keep them: the same values as the file (quantised stays
//! quantised, at the same bits per value), rearranged per row into the interleaved order
//! of the activations (see [`super::activations`]) so one load and a mask or two give a
//! vector whose lanes are eight blocks.
//!
//! - Float formats: as stored.
//! - Q8_0: each group of 8 blocks' int8 values interleaved (256 bytes), stored offset by
//!   128 as unsigned bytes (`vpdpbusd` takes them as they are); a partial last group's
//!   blocks in plain order. f16 scales apart.
//! - Q4_0, Q4_1: each group's nibbles in 128 bytes, byte `i` of vector `v` holding the
//!   interleaved value `i` of vector `v` in its low nibble and of vector `v + 4` in its
//!   high nibble; a partial last group's blocks in pairs (low nibbles one block, high the
//!   next). f16 scales (and Q4_1's minimums) apart.
//! - Q4_K, Q5_K: a super-block is a group, nibbles as for Q4; Q5_K's fifth bits in 32
//!   bytes whose bit `v` of byte `i` belongs to vector `v`; the 6-bit scales and minimums
//!   unpacked to a byte each.
//! - Q6_K: a super-block is two groups of 8 half-blocks of 16: per group 64 bytes of low
//!   nibbles (vectors 0 and 2, then 1 and 3) and 32 bytes of high bit pairs (bits `2v`,
//!   `2v + 1` for vector `v`); scales and `d` apart.
//!
//! Per-block f16 arrays are padded with zeros to whole groups of 8 blocks per row.

use half::f16;

use super::activations::{BLOCK, GROUP, interleaved};
use crate::weights::dequantize::{dequantize_row, k_scale_min};
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

/// A row's blocks of 32: how many, how many are in whole groups, and the count padded to
/// whole groups (the length of per-block arrays).
#[derive(Debug, Clone, Copy)]
pub(super) struct RowBlocks {
    pub blocks: usize,
    pub grouped: usize,
    pub padded: usize,
}

impl RowBlocks {
    pub fn of(cols: usize) -> Self {
        let blocks = cols / BLOCK;
        Self {
            blocks,
            grouped: blocks / GROUP * GROUP,
            padded: blocks.div_ceil(GROUP) * GROUP,
        }
    }

    /// Bytes of a Q4 row: 16 per block, the partial group's blocks paired.
    pub fn q4_bytes(&self) -> usize {
        self.grouped * 16 + (self.blocks - self.grouped).div_ceil(2) * BLOCK
    }
}

fn half_bits(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// GGML's Q4_0 and Q4_1 nibbles: value `i` in the low nibble of byte `i`, value `i + 16`
/// in its high nibble.
fn q4_values(qs: &[u8]) -> [u8; BLOCK] {
    std::array::from_fn(|i| {
        if i < 16 {
            qs[i] & 0x0F
        } else {
            qs[i - 16] >> 4
        }
    })
}

/// Nibbles of 8 blocks (`values[j][t]`) in the interleaved group layout.
fn pack_nibble_group(values: &[[u8; BLOCK]; GROUP], out: &mut [u8]) {
    for (j, block) in values.iter().enumerate() {
        for t in 0..16 {
            // Vectors 0-3 in the low nibbles, vectors 4-7 (values 16-31) in the high.
            out[interleaved(j, t)] = block[t] | (block[t + 16] << 4);
        }
    }
}

/// The 4-bit value `t` of block `j` of a nibble group.
fn nibble_of(group: &[u8], j: usize, t: usize) -> u8 {
    if t < 16 {
        group[interleaved(j, t)] & 0x0F
    } else {
        group[interleaved(j, t - 16)] >> 4
    }
}

impl PackedWeights {
    pub fn pack(tensor: &HostTensor<'_>) -> Self {
        let (rows, cols) = (tensor.rows(), tensor.cols());
        let format = tensor.format();
        let layout = match format {
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::Bf16 => Layout::Float {
                format,
                data: tensor.bytes().to_vec(),
            },
            WeightFormat::Q8_0 => pack_q8_0(tensor),
            WeightFormat::Q4_0 | WeightFormat::Q4_1 => pack_q4(tensor),
            WeightFormat::Q4K | WeightFormat::Q5K => pack_k45(tensor),
            WeightFormat::Q6K => pack_q6_k(tensor),
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

    /// Decodes row `r` into `out` (`cols` values): the values the reference decoder
    /// ([`dequantize_row`]) gives for the stored row.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let cols = self.cols;
        let rb = RowBlocks::of(cols);
        let h = |bits: u16| f16::from_bits(bits).to_f32();
        match &self.layout {
            Layout::Float { format, data } => {
                let width = format.block_bytes() * cols;
                dequantize_row(*format, &data[r * width..(r + 1) * width], out);
            }
            Layout::Q8_0 { qs, d } => {
                let row = &qs[r * rb.blocks * BLOCK..][..rb.blocks * BLOCK];
                for b in 0..rb.blocks {
                    let scale = h(d[r * rb.padded + b]);
                    for t in 0..BLOCK {
                        let at = if b < rb.grouped {
                            b / GROUP * GROUP * BLOCK + interleaved(b % GROUP, t)
                        } else {
                            b * BLOCK + t
                        };
                        out[b * BLOCK + t] = (row[at] ^ 0x80) as i8 as f32 * scale;
                    }
                }
            }
            Layout::Q4 { qs, d, m } => {
                let row = &qs[r * rb.q4_bytes()..][..rb.q4_bytes()];
                for b in 0..rb.blocks {
                    let scale = h(d[r * rb.padded + b]);
                    for t in 0..BLOCK {
                        let q = if b < rb.grouped {
                            nibble_of(&row[b / GROUP * 128..], b % GROUP, t)
                        } else {
                            let tail = b - rb.grouped;
                            let pair = &row[rb.grouped * 16 + tail / 2 * BLOCK..];
                            (pair[t] >> (4 * (tail % 2))) & 0x0F
                        } as f32;
                        out[b * BLOCK + t] = match m {
                            Some(m) => q * scale + h(m[r * rb.padded + b]),
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
                    let group = &qs[at * 128..][..128];
                    for j in 0..GROUP {
                        let scale = d * scales[at * 8 + j] as f32;
                        let min = dmin * mins[at * 8 + j] as f32;
                        for t in 0..BLOCK {
                            let mut q = nibble_of(group, j, t);
                            if let Some(qh) = qh {
                                let byte = qh[at * 32 + interleaved(j, t % 4) % 32];
                                q |= ((byte >> (t / 4)) & 1) << 4;
                            }
                            out[s * 256 + j * BLOCK + t] = scale * q as f32 - min;
                        }
                    }
                }
            }
            Layout::Q6K { ql, qh, scales, d } => {
                let nsb = cols / 256;
                for s in 0..nsb {
                    let at = r * nsb + s;
                    let d = h(d[at]);
                    for g in 0..2 {
                        let low = &ql[at * 128 + 64 * g..][..64];
                        let high = &qh[at * 64 + 32 * g..][..32];
                        for j in 0..GROUP {
                            let scale = scales[at * 16 + 8 * g + j] as i8 as f32;
                            for t in 0..16 {
                                let (v, p) = (t / 4, interleaved(j, t % 4));
                                let nibble = (low[(v % 2) * 32 + p] >> (4 * (v / 2))) & 0x0F;
                                let bits = (high[p] >> (2 * v)) & 3;
                                let q = (nibble | (bits << 4)) as i32 - 32;
                                out[s * 256 + (8 * g + j) * 16 + t] = d * scale * q as f32;
                            }
                        }
                    }
                }
            }
        }
    }
}

fn pack_q8_0(tensor: &HostTensor<'_>) -> Layout {
    let rb = RowBlocks::of(tensor.cols());
    let mut qs = vec![0u8; tensor.rows() * rb.blocks * BLOCK];
    let mut d = vec![0u16; tensor.rows() * rb.padded];
    for r in 0..tensor.rows() {
        let out = &mut qs[r * rb.blocks * BLOCK..][..rb.blocks * BLOCK];
        for (b, block) in tensor.row(r).chunks_exact(34).enumerate() {
            d[r * rb.padded + b] = half_bits(block, 0);
            for (t, &q) in block[2..34].iter().enumerate() {
                let at = if b < rb.grouped {
                    b / GROUP * GROUP * BLOCK + interleaved(b % GROUP, t)
                } else {
                    b * BLOCK + t
                };
                out[at] = q ^ 0x80;
            }
        }
    }
    Layout::Q8_0 { qs, d }
}

fn pack_q4(tensor: &HostTensor<'_>) -> Layout {
    let with_min = tensor.format() == WeightFormat::Q4_1;
    let (header, size) = if with_min { (4, 20) } else { (2, 18) };
    let rb = RowBlocks::of(tensor.cols());
    let row_bytes = rb.q4_bytes();
    let mut qs = vec![0u8; tensor.rows() * row_bytes];
    let mut d = vec![0u16; tensor.rows() * rb.padded];
    let mut m = with_min.then(|| vec![0u16; tensor.rows() * rb.padded]);
    for r in 0..tensor.rows() {
        let out = &mut qs[r * row_bytes..][..row_bytes];
        let blocks: Vec<&[u8]> = tensor.row(r).chunks_exact(size).collect();
        for (b, block) in blocks.iter().enumerate() {
            d[r * rb.padded + b] = half_bits(block, 0);
            if let Some(m) = &mut m {
                m[r * rb.padded + b] = half_bits(block, 2);
            }
        }
        for g in 0..rb.grouped / GROUP {
            let values: [[u8; BLOCK]; GROUP] =
                std::array::from_fn(|j| q4_values(&blocks[g * GROUP + j][header..]));
            pack_nibble_group(&values, &mut out[g * 128..(g + 1) * 128]);
        }
        for b in rb.grouped..rb.blocks {
            let tail = b - rb.grouped;
            let pair = &mut out[rb.grouped * 16 + tail / 2 * BLOCK..][..BLOCK];
            for (t, v) in q4_values(&blocks[b][header..]).into_iter().enumerate() {
                pair[t] |= v << (4 * (tail % 2));
            }
        }
    }
    Layout::Q4 { qs, d, m }
}

fn pack_k45(tensor: &HostTensor<'_>) -> Layout {
    let five = tensor.format() == WeightFormat::Q5K;
    let nsb = tensor.rows() * tensor.cols() / 256;
    let mut qs = vec![0u8; nsb * 128];
    let mut qh = five.then(|| vec![0u8; nsb * 32]);
    let (mut scales, mut mins) = (Vec::with_capacity(nsb * 8), Vec::with_capacity(nsb * 8));
    let (mut d, mut dmin) = (Vec::with_capacity(nsb), Vec::with_capacity(nsb));
    let blocks =
        (0..tensor.rows()).flat_map(|r| tensor.row(r).chunks_exact(tensor.format().block_bytes()));
    for (at, block) in blocks.enumerate() {
        d.push(half_bits(block, 0));
        dmin.push(half_bits(block, 2));
        for j in 0..GROUP {
            let (sc, m) = k_scale_min(j, &block[4..16]);
            scales.push(sc);
            mins.push(m);
        }
        let (high_bits, nibbles) = if five {
            (Some(&block[16..48]), &block[48..176])
        } else {
            (None, &block[16..144])
        };
        // Stored: byte 32p + l holds value l of sub-block 2p (low) and 2p + 1 (high); the
        // fifth bit of value l of sub-block j is bit j of qh[l].
        let values: [[u8; BLOCK]; GROUP] = std::array::from_fn(|j| {
            std::array::from_fn(|l| (nibbles[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0F)
        });
        pack_nibble_group(&values, &mut qs[at * 128..(at + 1) * 128]);
        if let (Some(high_bits), Some(qh)) = (high_bits, &mut qh) {
            let out = &mut qh[at * 32..(at + 1) * 32];
            for j in 0..GROUP {
                for t in 0..BLOCK {
                    let bit = (high_bits[t] >> j) & 1;
                    out[interleaved(j, t % 4) % 32] |= bit << (t / 4);
                }
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
    }
}

fn pack_q6_k(tensor: &HostTensor<'_>) -> Layout {
    let nsb = tensor.rows() * tensor.cols() / 256;
    let mut ql = vec![0u8; nsb * 128];
    let mut qh = vec![0u8; nsb * 64];
    let mut scales = Vec::with_capacity(nsb * 16);
    let mut d = Vec::with_capacity(nsb);
    let blocks = (0..tensor.rows()).flat_map(|r| tensor.row(r).chunks_exact(210));
    for (at, block) in blocks.enumerate() {
        scales.extend_from_slice(&block[192..208]);
        d.push(half_bits(block, 208));
        let values = q6_k_values(block);
        for g in 0..2 {
            let low = &mut ql[at * 128 + 64 * g..][..64];
            let high = &mut qh[at * 64 + 32 * g..][..32];
            for j in 0..GROUP {
                for t in 0..16 {
                    let q = values[(8 * g + j) * 16 + t];
                    let (v, p) = (t / 4, interleaved(j, t % 4));
                    low[(v % 2) * 32 + p] |= (q & 0x0F) << (4 * (v / 2));
                    high[p] |= (q >> 4) << (2 * v);
                }
            }
        }
    }
    Layout::Q6K { ql, qh, scales, d }
}

/// The 256 unsigned 6-bit values of a stored Q6_K block, in order (see the reference
/// decoder for the stored arrangement).
fn q6_k_values(block: &[u8]) -> [u8; 256] {
    let mut out = [0u8; 256];
    for n in 0..2 {
        let ql = &block[64 * n..64 * n + 64];
        let qh = &block[128 + 32 * n..128 + 32 * n + 32];
        for l in 0..32 {
            out[128 * n + l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
            out[128 * n + l + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
            out[128 * n + l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            out[128 * n + l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    out
}
