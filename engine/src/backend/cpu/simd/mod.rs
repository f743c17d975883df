//! SIMD for the CPU kernels, chosen at run time.
//!
//! Kernels are written once, generic over [`Simd`]: 256-bit vectors of 32 bytes, 8 i32 or 8
//! f32 lanes. [`Portable`] implements it in plain Rust; [`x86`] with AVX2 intrinsics, its
//! three variants differing only in the int8 dot product (AVX2's `vpmaddubsw`, AVX-VNNI's
//! and AVX-512 VNNI's `vpdpbusd`). Every path performs the same arithmetic in the same
//! order — fused multiply-adds everywhere, the same lanes, the same reduction tree — so a
//! kernel's output is bit-for-bit the same on every CPU, and each SIMD path is tested for
//! exact equality with the portable one.
//!
//! [`simd_dispatch!`] turns a generic kernel into a function that runs it on an [`Isa`]:
//! the instantiation for each x86 path is compiled with that path's target features, so
//! one binary carries them all and picks by CPU.

pub(crate) mod math;
mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

pub(crate) use portable::Portable;

use std::fmt;

/// An instruction set the CPU kernels can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust: any CPU.
    Portable,
    /// AVX2 + FMA + F16C (Intel since Haswell, AMD since Zen).
    Avx2,
    /// AVX2 with AVX-VNNI's 256-bit int8 dot products (Intel since Alder Lake).
    AvxVnni,
    /// AVX2 with AVX-512 VNNI's int8 dot products on 256-bit vectors (Intel since Cascade
    /// Lake, AMD since Zen 4).
    Avx512Vnni,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Self::Portable, Self::Avx2, Self::AvxVnni, Self::Avx512Vnni];

    /// The best instruction set this CPU has.
    pub fn detect() -> Self {
        Self::ALL
            .into_iter()
            .rev()
            .find(|isa| isa.is_supported())
            .unwrap_or(Self::Portable)
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            match self {
                Self::Portable => true,
                Self::Avx2 => avx2,
                Self::AvxVnni => avx2 && is_x86_feature_detected!("avxvnni"),
                Self::Avx512Vnni => {
                    avx2 && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512vl")
                        && is_x86_feature_detected!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Self::Portable
        }
    }

    /// Every path this CPU can run.
    pub fn supported() -> Vec<Isa> {
        Self::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::AvxVnni => "avx-vnni",
            Self::Avx512Vnni => "avx512-vnni",
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|isa| isa.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown CPU kernel path '{s}' (known: portable, avx2, avx-vnni, avx512-vnni)"
                )
            })
    }
}

/// 256-bit vector operations, as the kernels use them. Every method is `unsafe`: pointers
/// must be valid for the bytes they name, and an x86 implementation may only run on a CPU
/// with its features (the dispatch checks). Float operations are IEEE single precision;
/// `fma` is fused (one rounding).
#[allow(clippy::missing_safety_doc)]
pub(crate) trait Simd: Copy {
    /// Activation rows a matmul kernel takes at once: as many as the registers hold.
    const ROWS_PER_TILE: usize;
    /// Whether `dot_u8_i8` is exact for every unsigned byte (`vpdpbusd` sums in i32),
    /// not only while pair sums fit i16 (`vpmaddubsw`).
    const DOT_TAKES_FULL_BYTES: bool;

    /// 32 bytes.
    type Bytes: Copy;
    /// 8 × i32.
    type Ints: Copy;
    /// 8 × f32.
    type Floats: Copy;

    unsafe fn load_bytes(p: *const u8) -> Self::Bytes;
    unsafe fn splat_byte(v: u8) -> Self::Bytes;
    unsafe fn and(a: Self::Bytes, b: Self::Bytes) -> Self::Bytes;
    unsafe fn or(a: Self::Bytes, b: Self::Bytes) -> Self::Bytes;
    unsafe fn xor(a: Self::Bytes, b: Self::Bytes) -> Self::Bytes;
    /// Shifts each 16-bit lane left by `N` bits (bits cross byte boundaries within a lane).
    unsafe fn shl16<const N: i32>(a: Self::Bytes) -> Self::Bytes;
    /// Shifts each 16-bit lane right (logical) by `N` bits.
    unsafe fn shr16<const N: i32>(a: Self::Bytes) -> Self::Bytes;
    /// `|a|` of each signed byte, as an unsigned byte.
    unsafe fn abs_i8(a: Self::Bytes) -> Self::Bytes;
    /// Each signed byte of `a`, negated where `s` is negative and zeroed where `s` is zero.
    unsafe fn sign_i8(a: Self::Bytes, s: Self::Bytes) -> Self::Bytes;

    unsafe fn zero_ints() -> Self::Ints;
    /// `acc[j] + Σ w[4j + i] · a[4j + i]` over `i < 4`, `w` unsigned and `a` signed bytes.
    /// Callers keep each pair sum of products within i16 (AVX2 saturates there).
    unsafe fn dot_u8_i8(acc: Self::Ints, w: Self::Bytes, a: Self::Bytes) -> Self::Ints;
    unsafe fn add_ints(a: Self::Ints, b: Self::Ints) -> Self::Ints;
    unsafe fn sub_ints(a: Self::Ints, b: Self::Ints) -> Self::Ints;
    unsafe fn load_ints(p: *const i32) -> Self::Ints;
    /// Shifts each i32 lane left by `N` bits.
    unsafe fn shl_ints<const N: i32>(a: Self::Ints) -> Self::Ints;
    /// Each lane's bits as an f32.
    unsafe fn ints_as_floats(a: Self::Ints) -> Self::Floats;
    /// Each lane, which must hold an integer value within i32, as an i32.
    unsafe fn floats_to_ints(v: Self::Floats) -> Self::Ints;
    unsafe fn ints(v: [i32; 8]) -> Self::Ints;
    unsafe fn to_floats(v: Self::Ints) -> Self::Floats;

    unsafe fn zero() -> Self::Floats;
    unsafe fn splat(v: f32) -> Self::Floats;
    unsafe fn load(p: *const f32) -> Self::Floats;
    /// 8 f16 values (little-endian bits), widened exactly.
    unsafe fn load_f16(p: *const u16) -> Self::Floats;
    /// 8 bf16 values, widened exactly.
    unsafe fn load_bf16(p: *const u16) -> Self::Floats;
    unsafe fn load_u8(p: *const u8) -> Self::Floats;
    unsafe fn load_i8(p: *const i8) -> Self::Floats;
    unsafe fn store(p: *mut f32, v: Self::Floats);
    unsafe fn add(a: Self::Floats, b: Self::Floats) -> Self::Floats;
    unsafe fn mul(a: Self::Floats, b: Self::Floats) -> Self::Floats;
    unsafe fn div(a: Self::Floats, b: Self::Floats) -> Self::Floats;
    /// The lesser of each pair (`b` where `a` is NaN).
    unsafe fn min(a: Self::Floats, b: Self::Floats) -> Self::Floats;
    /// The greater of each pair (`b` where `a` is NaN).
    unsafe fn max(a: Self::Floats, b: Self::Floats) -> Self::Floats;
    unsafe fn floor(v: Self::Floats) -> Self::Floats;
    /// `a * b + c`, one rounding.
    unsafe fn fma(a: Self::Floats, b: Self::Floats, c: Self::Floats) -> Self::Floats;
    /// Every lane set to lane `lane` of `v`.
    unsafe fn broadcast_lane(v: Self::Floats, lane: usize) -> Self::Floats;
    /// Lane `j` set to lane `index[j]` of `v`.
    unsafe fn permute(v: Self::Floats, index: Self::Ints) -> Self::Floats;
    /// `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`.
    unsafe fn sum(v: Self::Floats) -> f32;
}

/// Defines `pub(crate) fn $name(isa: Isa, args) -> ret` running the generic `$generic::<S>`
/// on `isa`'s implementation of [`Simd`], each x86 instantiation compiled with its target
/// features. The caller must pass a supported `isa` (`CpuKernels` checks once at start-up);
/// an unsupported one falls back to the portable path rather than fault.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $(<$lt:lifetime>)? ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $generic:ident) => {
        $(#[$meta])*
        $vis fn $name $(<$lt>)? (isa: $crate::backend::cpu::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::backend::cpu::simd::x86;
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn avx2 $(<$lt>)? ($($arg: $ty),*) $(-> $ret)? {
                    $generic::<x86::X86<x86::Avx2Dot>>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
                unsafe fn avx_vnni $(<$lt>)? ($($arg: $ty),*) $(-> $ret)? {
                    $generic::<x86::X86<x86::AvxVnniDot>>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
                unsafe fn avx512_vnni $(<$lt>)? ($($arg: $ty),*) $(-> $ret)? {
                    $generic::<x86::X86<x86::Avx512VnniDot>>($($arg),*)
                }
                if isa.is_supported() {
                    // SAFETY: the CPU has the features each function is compiled with.
                    match isa {
                        $crate::backend::cpu::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                        $crate::backend::cpu::simd::Isa::AvxVnni => return unsafe { avx_vnni($($arg),*) },
                        $crate::backend::cpu::simd::Isa::Avx512Vnni => return unsafe { avx512_vnni($($arg),*) },
                        $crate::backend::cpu::simd::Isa::Portable => {}
                    }
                }
            }
            let _ = isa;
            $generic::<$crate::backend::cpu::simd::Portable>($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;
