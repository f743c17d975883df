//! [`Simd`] on x86-64 with AVX2, FMA and F16C, over 256-bit registers. The int8 dot product
//! is the one thing the three variants do differently.

use std::arch::x86_64::*;
use std::marker::PhantomData;

use super::Simd;

/// How a variant computes `acc + Σ4 u8·i8` per i32 lane.
pub(crate) trait Int8Dot: Copy {
    /// Activation rows per matmul tile: AVX-512 has 32 vector registers, AVX2 16.
    const ROWS_PER_TILE: usize;
    /// See [`Simd::DOT_TAKES_FULL_BYTES`].
    const FULL_BYTES: bool;

    /// # Safety
    /// The CPU must have the variant's features.
    unsafe fn dot(acc: __m256i, w: __m256i, a: __m256i) -> __m256i;
}

/// AVX2: `vpmaddubsw` (pairs of products to i16, saturating; callers keep pair sums in
/// range) then `vpmaddwd` by ones to i32.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2Dot;

/// AVX-VNNI's `vpdpbusd` (VEX-encoded).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AvxVnniDot;

/// AVX-512 VNNI's `vpdpbusd` on 256-bit registers (AVX-512VL).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512VnniDot;

impl Int8Dot for Avx2Dot {
    const ROWS_PER_TILE: usize = 4;
    const FULL_BYTES: bool = false;

    #[inline(always)]
    unsafe fn dot(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        // SAFETY: the dispatch runs this only where AVX2 is present.
        unsafe {
            let pairs = _mm256_maddubs_epi16(w, a);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }
}

impl Int8Dot for AvxVnniDot {
    const ROWS_PER_TILE: usize = 4;
    const FULL_BYTES: bool = true;

    #[inline(always)]
    unsafe fn dot(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        // SAFETY: the dispatch runs this only where AVX-VNNI is present.
        unsafe { _mm256_dpbusd_avx_epi32(acc, w, a) }
    }
}

impl Int8Dot for Avx512VnniDot {
    const ROWS_PER_TILE: usize = 8;
    const FULL_BYTES: bool = true;

    #[inline(always)]
    unsafe fn dot(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        // SAFETY: the dispatch runs this only where AVX-512 VNNI and VL are present.
        unsafe { _mm256_dpbusd_epi32(acc, w, a) }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct X86<D>(PhantomData<D>);

// SAFETY (for every method below): the dispatch only runs these on CPUs with AVX2, FMA
// and F16C; pointer validity is the caller's contract, as the trait states.
impl<D: Int8Dot> Simd for X86<D> {
    const ROWS_PER_TILE: usize = D::ROWS_PER_TILE;
    const DOT_TAKES_FULL_BYTES: bool = D::FULL_BYTES;
    type Bytes = __m256i;
    type Ints = __m256i;
    type Floats = __m256;

    #[inline(always)]
    unsafe fn load_bytes(p: *const u8) -> __m256i {
        unsafe { _mm256_loadu_si256(p.cast()) }
    }

    #[inline(always)]
    unsafe fn splat_byte(v: u8) -> __m256i {
        unsafe { _mm256_set1_epi8(v as i8) }
    }

    #[inline(always)]
    unsafe fn and(a: __m256i, b: __m256i) -> __m256i {
        unsafe { _mm256_and_si256(a, b) }
    }

    #[inline(always)]
    unsafe fn or(a: __m256i, b: __m256i) -> __m256i {
        unsafe { _mm256_or_si256(a, b) }
    }

    #[inline(always)]
    unsafe fn xor(a: __m256i, b: __m256i) -> __m256i {
        unsafe { _mm256_xor_si256(a, b) }
    }

    #[inline(always)]
    unsafe fn shl16<const N: i32>(a: __m256i) -> __m256i {
        unsafe { _mm256_slli_epi16::<N>(a) }
    }

    #[inline(always)]
    unsafe fn shr16<const N: i32>(a: __m256i) -> __m256i {
        unsafe { _mm256_srli_epi16::<N>(a) }
    }

    #[inline(always)]
    unsafe fn abs_i8(a: __m256i) -> __m256i {
        unsafe { _mm256_abs_epi8(a) }
    }

    #[inline(always)]
    unsafe fn sign_i8(a: __m256i, s: __m256i) -> __m256i {
        unsafe { _mm256_sign_epi8(a, s) }
    }

    #[inline(always)]
    unsafe fn zero_ints() -> __m256i {
        unsafe { _mm256_setzero_si256() }
    }

    #[inline(always)]
    unsafe fn dot_u8_i8(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        unsafe { D::dot(acc, w, a) }
    }

    #[inline(always)]
    unsafe fn add_ints(a: __m256i, b: __m256i) -> __m256i {
        unsafe { _mm256_add_epi32(a, b) }
    }

    #[inline(always)]
    unsafe fn sub_ints(a: __m256i, b: __m256i) -> __m256i {
        unsafe { _mm256_sub_epi32(a, b) }
    }

    #[inline(always)]
    unsafe fn load_ints(p: *const i32) -> __m256i {
        unsafe { _mm256_loadu_si256(p.cast()) }
    }

    #[inline(always)]
    unsafe fn shl_ints<const N: i32>(a: __m256i) -> __m256i {
        unsafe { _mm256_slli_epi32::<N>(a) }
    }

    #[inline(always)]
    unsafe fn ints_as_floats(a: __m256i) -> __m256 {
        unsafe { _mm256_castsi256_ps(a) }
    }

    #[inline(always)]
    unsafe fn floats_to_ints(v: __m256) -> __m256i {
        unsafe { _mm256_cvttps_epi32(v) }
    }

    #[inline(always)]
    unsafe fn ints(v: [i32; 8]) -> __m256i {
        unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
    }

    #[inline(always)]
    unsafe fn to_floats(v: __m256i) -> __m256 {
        unsafe { _mm256_cvtepi32_ps(v) }
    }

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> __m256 {
        unsafe { _mm256_set1_ps(v) }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> __m256 {
        unsafe {
            let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
        }
    }

    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> __m256 {
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()))) }
    }

    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> __m256 {
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        unsafe { _mm256_storeu_ps(p, v) }
    }

    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_mul_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_div_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_min_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_max_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn floor(v: __m256) -> __m256 {
        unsafe { _mm256_floor_ps(v) }
    }

    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }

    #[inline(always)]
    unsafe fn broadcast_lane(v: __m256, lane: usize) -> __m256 {
        unsafe { _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(lane as i32)) }
    }

    #[inline(always)]
    unsafe fn permute(v: __m256, index: __m256i) -> __m256 {
        unsafe { _mm256_permutevar8x32_ps(v, index) }
    }

    #[inline(always)]
    unsafe fn sum(v: __m256) -> f32 {
        unsafe {
            // [l0+l4, l1+l5, l2+l6, l3+l7]
            let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            // [(l0+l4)+(l2+l6), (l1+l5)+(l3+l7), ..]
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<0b01>(pair, pair)))
        }
    }
}
