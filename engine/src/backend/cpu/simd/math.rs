//! Functions of [`Simd`] vectors built from its exact operations, so every path computes
//! the same bits.

use super::Simd;

/// `e^x` of each lane, within 2 ulp for `x` in [-87.3, 88] (inputs outside are clamped
/// there: below, the result is the smallest normal f32 rather than a denormal or 0).
/// Cephes' `expf`: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6 polynomial for
/// `e^r`, and `2^n` put in the exponent bits.
#[inline(always)]
pub(crate) unsafe fn exp<S: Simd>(x: S::Floats) -> S::Floats {
    // SAFETY: register operations only.
    unsafe {
        let x = S::min(S::max(x, S::splat(-87.336_55)), S::splat(88.0));
        let n = S::floor(S::fma(x, S::splat(std::f32::consts::LOG2_E), S::splat(0.5)));
        // r = x - n ln 2, with ln 2 split in two so the first product is exact.
        let r = S::fma(n, S::splat(-0.693_359_4), x);
        let r = S::fma(n, S::splat(2.121_944_4e-4), r);
        let mut p = S::splat(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            p = S::fma(p, r, S::splat(c));
        }
        let e_r = S::add(S::fma(p, S::mul(r, r), r), S::splat(1.0));
        let two_n = S::ints_as_floats(S::shl_ints::<23>(S::add_ints(
            S::floats_to_ints(n),
            S::ints([127; 8]),
        )));
        S::mul(e_r, two_n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Isa, Portable, simd_dispatch};
    use super::*;

    #[inline(always)]
    fn exp_of<S: Simd>(x: &[f32; 8]) -> [f32; 8] {
        let mut out = [0.0; 8];
        // SAFETY: 8 floats in and out.
        unsafe { S::store(out.as_mut_ptr(), exp::<S>(S::load(x.as_ptr()))) };
        out
    }

    simd_dispatch!(fn exp_on(x: &[f32; 8]) -> [f32; 8] => exp_of);

    #[test]
    fn exp_is_within_two_ulp_and_the_same_on_every_path() {
        let mut worst = 0.0f64;
        for k in -8733..8800 {
            let x: [f32; 8] = std::array::from_fn(|i| (k * 8 + i as i32) as f32 / 800.0);
            let x = x.map(|v| v.clamp(-87.3, 88.0));
            let ours = exp_on(Isa::Portable, &x);
            for isa in Isa::supported() {
                assert_eq!(exp_on(isa, &x), ours, "{isa} at {x:?}");
            }
            for (v, e) in x.iter().zip(ours) {
                let exact = (*v as f64).exp();
                let ulp = (exact as f32).abs() as f64 * f32::EPSILON as f64;
                worst = worst.max((e as f64 - exact).abs() / ulp);
            }
        }
        assert!(worst <= 2.0, "error of {worst} ulp");
        let _ = Portable;
    }

    #[test]
    fn exp_clamps_far_inputs() {
        let x = [
            f32::NEG_INFINITY,
            -1000.0,
            0.0,
            1.0,
            100.0,
            -87.0,
            88.0,
            f32::INFINITY,
        ];
        let e = exp_on(Isa::detect(), &x);
        assert!(e[0] > 0.0 && e[0] < 1.2e-38 && e[1] == e[0]);
        assert_eq!(e[2], 1.0);
        assert!((e[3] - std::f32::consts::E).abs() < 1e-6);
        assert!(e[4].is_finite() && e[7] == e[4]);
    }
}
