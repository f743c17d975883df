//! [`Simd`] in plain Rust: arrays standing in for registers, lane for lane what the x86
//! instructions compute, so it is both the fallback and the reference of the SIMD paths.

use half::{bf16, f16};

use super::Simd;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Portable;

fn map16(a: [u8; 32], f: impl Fn(u16) -> u16) -> [u8; 32] {
    let mut out = [0u8; 32];
    for i in 0..16 {
        let lane = f(u16::from_le_bytes([a[2 * i], a[2 * i + 1]]));
        out[2 * i..2 * i + 2].copy_from_slice(&lane.to_le_bytes());
    }
    out
}

impl Simd for Portable {
    const ROWS_PER_TILE: usize = 4;
    const DOT_TAKES_FULL_BYTES: bool = true;
    type Bytes = [u8; 32];
    type Ints = [i32; 8];
    type Floats = [f32; 8];

    #[inline(always)]
    unsafe fn load_bytes(p: *const u8) -> [u8; 32] {
        // SAFETY: the caller passes 32 readable bytes.
        unsafe { p.cast::<[u8; 32]>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn splat_byte(v: u8) -> [u8; 32] {
        [v; 32]
    }

    #[inline(always)]
    unsafe fn and(a: [u8; 32], b: [u8; 32]) -> [u8; 32] {
        std::array::from_fn(|i| a[i] & b[i])
    }

    #[inline(always)]
    unsafe fn or(a: [u8; 32], b: [u8; 32]) -> [u8; 32] {
        std::array::from_fn(|i| a[i] | b[i])
    }

    #[inline(always)]
    unsafe fn xor(a: [u8; 32], b: [u8; 32]) -> [u8; 32] {
        std::array::from_fn(|i| a[i] ^ b[i])
    }

    #[inline(always)]
    unsafe fn shl16<const N: i32>(a: [u8; 32]) -> [u8; 32] {
        map16(a, |v| v << N)
    }

    #[inline(always)]
    unsafe fn shr16<const N: i32>(a: [u8; 32]) -> [u8; 32] {
        map16(a, |v| v >> N)
    }

    #[inline(always)]
    unsafe fn abs_i8(a: [u8; 32]) -> [u8; 32] {
        std::array::from_fn(|i| (a[i] as i8).unsigned_abs())
    }

    #[inline(always)]
    unsafe fn sign_i8(a: [u8; 32], s: [u8; 32]) -> [u8; 32] {
        std::array::from_fn(|i| match (s[i] as i8).signum() {
            0 => 0,
            1 => a[i],
            _ => (a[i] as i8).wrapping_neg() as u8,
        })
    }

    #[inline(always)]
    unsafe fn zero_ints() -> [i32; 8] {
        [0; 8]
    }

    #[inline(always)]
    unsafe fn dot_u8_i8(acc: [i32; 8], w: [u8; 32], a: [u8; 32]) -> [i32; 8] {
        std::array::from_fn(|j| {
            acc[j]
                + (0..4)
                    .map(|i| w[4 * j + i] as i32 * a[4 * j + i] as i8 as i32)
                    .sum::<i32>()
        })
    }

    #[inline(always)]
    unsafe fn add_ints(a: [i32; 8], b: [i32; 8]) -> [i32; 8] {
        std::array::from_fn(|i| a[i] + b[i])
    }

    #[inline(always)]
    unsafe fn sub_ints(a: [i32; 8], b: [i32; 8]) -> [i32; 8] {
        std::array::from_fn(|i| a[i] - b[i])
    }

    #[inline(always)]
    unsafe fn load_ints(p: *const i32) -> [i32; 8] {
        // SAFETY: the caller passes 8 readable i32.
        unsafe { p.cast::<[i32; 8]>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn shl_ints<const N: i32>(a: [i32; 8]) -> [i32; 8] {
        a.map(|x| x << N)
    }

    #[inline(always)]
    unsafe fn ints_as_floats(a: [i32; 8]) -> [f32; 8] {
        a.map(|x| f32::from_bits(x as u32))
    }

    #[inline(always)]
    unsafe fn floats_to_ints(v: [f32; 8]) -> [i32; 8] {
        v.map(|x| x as i32)
    }

    #[inline(always)]
    unsafe fn ints(v: [i32; 8]) -> [i32; 8] {
        v
    }

    #[inline(always)]
    unsafe fn to_floats(v: [i32; 8]) -> [f32; 8] {
        v.map(|x| x as f32)
    }

    #[inline(always)]
    unsafe fn zero() -> [f32; 8] {
        [0.0; 8]
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> [f32; 8] {
        [v; 8]
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 8] {
        // SAFETY: the caller passes 8 readable floats.
        unsafe { p.cast::<[f32; 8]>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> [f32; 8] {
        // SAFETY: the caller passes 8 readable halves.
        let bits = unsafe { p.cast::<[u16; 8]>().read_unaligned() };
        bits.map(|b| f16::from_bits(b).to_f32())
    }

    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> [f32; 8] {
        // SAFETY: as load_f16.
        let bits = unsafe { p.cast::<[u16; 8]>().read_unaligned() };
        bits.map(|b| bf16::from_bits(b).to_f32())
    }

    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> [f32; 8] {
        // SAFETY: the caller passes 8 readable bytes.
        unsafe { p.cast::<[u8; 8]>().read_unaligned() }.map(|b| b as f32)
    }

    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> [f32; 8] {
        // SAFETY: as load_u8.
        unsafe { p.cast::<[i8; 8]>().read_unaligned() }.map(|b| b as f32)
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 8]) {
        // SAFETY: the caller passes 8 writable floats.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v) }
    }

    #[inline(always)]
    unsafe fn add(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] + b[i])
    }

    #[inline(always)]
    unsafe fn mul(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] * b[i])
    }

    #[inline(always)]
    unsafe fn div(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] / b[i])
    }

    #[inline(always)]
    unsafe fn min(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        // As `vminps`: the second operand unless the first is less.
        std::array::from_fn(|i| if a[i] < b[i] { a[i] } else { b[i] })
    }

    #[inline(always)]
    unsafe fn max(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        // As `vmaxps`: the second operand unless the first is greater.
        std::array::from_fn(|i| if a[i] > b[i] { a[i] } else { b[i] })
    }

    #[inline(always)]
    unsafe fn floor(v: [f32; 8]) -> [f32; 8] {
        v.map(f32::floor)
    }

    #[inline(always)]
    unsafe fn fma(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i].mul_add(b[i], c[i]))
    }

    #[inline(always)]
    unsafe fn broadcast_lane(v: [f32; 8], lane: usize) -> [f32; 8] {
        [v[lane]; 8]
    }

    #[inline(always)]
    unsafe fn permute(v: [f32; 8], index: [i32; 8]) -> [f32; 8] {
        index.map(|i| v[(i & 7) as usize])
    }

    #[inline(always)]
    unsafe fn sum(v: [f32; 8]) -> f32 {
        ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
    }
}
