//! IEEE binary16 (f16) on the host: the conversions the fast paths' uploads, downloads and CPU emulations
//! use. Rounding matches the kernels' `pack_f16x2`: nearest even, saturating to ±65504, NaN kept.

/// Largest finite f16.
pub const F16_MAX: f32 = 65504.0;

/// f32 -> f16 bits: round to nearest even, saturate to ±65504 (as the kernels do), NaN -> quiet NaN.
pub fn f32_to_f16(v: f32) -> u16 {
    let sign = ((v.to_bits() >> 16) & 0x8000) as u16;
    if v.is_nan() {
        return sign | 0x7e00;
    }
    let a = v.abs().min(F16_MAX);
    if a >= 6.103_515_6e-5 {
        // Normal: keep 10 of the 23 mantissa bits, round the 13 dropped ones to nearest even (a carry
        // into the exponent is the correct next binade; ≤ 65504 cannot carry past it).
        let bits = a.to_bits();
        let exp = (bits >> 23) as i32 - 127;
        let mant = bits & 0x7f_ffff;
        let mut h = (((exp + 15) as u32) << 10) | (mant >> 13);
        let rem = mant & 0x1fff;
        if rem > 0x1000 || (rem == 0x1000 && h & 1 == 1) {
            h += 1;
        }
        sign | h as u16
    } else {
        // Subnormal (or zero): a multiple of 2^-24; 1024 * 2^-24 is the smallest normal, encoded as 0x400.
        sign | (a * 16_777_216.0).round_ties_even() as u16
    }
}

/// f16 bits -> f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let mant = (h & 0x3ff) as f32;
    match exp {
        0 => sign * mant * 2f32.powi(-24),
        31 if mant == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + mant / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// `v` rounded to the nearest f16 value (as f32, saturated like the kernels).
pub fn round_f16(v: f32) -> f32 {
    f16_to_f32(f32_to_f16(v))
}

/// A host tensor with every element rounded to f16 (the values an f16 upload of it holds).
pub fn round_tensor_f16(t: &models::Tensor) -> models::Tensor {
    models::Tensor {
        shape: t.shape.clone(),
        data: t.data.iter().map(|&v| round_f16(v)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values_and_ties() {
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f32_to_f16(0.0), 0);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0); 1 + 3 * 2^-11 rounds up.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11) + 2f32.powi(-20)), 0x3c01);
        // Subnormals: 2^-24 is the smallest; half of it ties to zero; 1023.5 * 2^-24 ties up to the smallest normal.
        assert_eq!(f32_to_f16(2f32.powi(-24)), 1);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0);
        assert_eq!(f32_to_f16(1023.5 * 2f32.powi(-24)), 0x400);
        // Saturation and NaN.
        assert_eq!(f32_to_f16(1e6), 0x7bff);
        assert_eq!(f32_to_f16(f32::NEG_INFINITY), 0xfbff);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
    }

    #[test]
    fn round_trip_and_relative_error() {
        for h in (0u16..0x7c00)
            .step_by(7)
            .chain([0x3555, 0x7bff, 0x0001, 0x03ff])
        {
            let v = f16_to_f32(h);
            assert_eq!(f32_to_f16(v), h, "{h:#x}");
            assert_eq!(f32_to_f16(-v), h | 0x8000, "-{h:#x}");
        }
        for v in [0.1f32, 3.3, -1234.5, 1e-3, 6e4] {
            assert!((round_f16(v) - v).abs() <= v.abs() * 2f32.powi(-11), "{v}");
        }
    }

    #[test]
    fn f16_round_trip_and_rounding() {
        assert_eq!(f32_to_f16(0.0), 0x0000);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        // Saturating, as the kernels' pack_f16x2.
        assert_eq!(f32_to_f16(1e6), 0x7bff);
        assert_eq!(f32_to_f16(-1e6), 0xfbff);
        assert_eq!(f32_to_f16(f32::INFINITY), 0x7bff);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        // 1 + 3·2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9: rounds up to even.
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        // Just above halfway rounds up.
        assert_eq!(
            f32_to_f16(f32::from_bits(1.0f32.to_bits() + 0x1001)),
            0x3c01
        );
        // 65520 is halfway between 65504 and 65536 (= infinity): saturates to 65504.
        assert_eq!(f32_to_f16(65520.0), 0x7bff);
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        // Subnormals: smallest 2^-24, largest (1023)·2^-24, halfway cases.
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0x0000); // tie -> even (0)
        assert_eq!(f32_to_f16(1.5 * 2f32.powi(-24)), 0x0002); // tie between 1 and 2 -> 2
        assert_eq!(f32_to_f16(2f32.powi(-26)), 0x0000);
        assert_eq!(f32_to_f16(1023.0 * 2f32.powi(-24)), 0x03ff);
        assert_eq!(f32_to_f16(2f32.powi(-14)), 0x0400); // smallest normal
        assert_eq!(f32_to_f16(1023.75 * 2f32.powi(-24)), 0x0400); // rounds up into the normals
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        // Every finite half value round-trips exactly (infinities saturate).
        for h in 0u16..=0xffff {
            let v = f16_to_f32(h);
            if v.is_finite() {
                let back = f32_to_f16(v);
                assert!(
                    back == h || (v == 0.0 && (back & 0x7fff) == 0),
                    "{h:#06x} -> {v} -> {back:#06x}"
                );
            }
        }
        // Rounding error bound for normal values: half an ulp = 2^-11 relative.
        for v in [0.1f32, -3.25391, 1234.567, 6.1e-5, 0.7] {
            assert!((round_f16(v) - v).abs() <= v.abs() * 2f32.powi(-11), "{v}");
        }
    }

    #[test]
    fn f16_matches_nearest_by_search() {
        // Brute force: the nearest half value (ties to even mantissa) for a sweep of f32 inputs.
        let halves: Vec<(f32, u16)> = (0u16..0x7c00).map(|h| (f16_to_f32(h), h)).collect();
        let mut x = 1.0e-8f32;
        while x < 70000.0 {
            let want = {
                let i = halves.partition_point(|&(v, _)| v < x);
                if i == 0 {
                    halves[0].1
                } else if i == halves.len() {
                    halves[i - 1].1 // past 65504: saturates
                } else {
                    let (lo, hi) = (halves[i - 1], halves[i]);
                    let (dl, dh) = (x - lo.0, hi.0 - x);
                    if dl < dh || (dl == dh && lo.1 & 1 == 0) {
                        lo.1
                    } else {
                        hi.1
                    }
                }
            };
            assert_eq!(f32_to_f16(x), want, "{x:e}");
            assert_eq!(f32_to_f16(-x), want | 0x8000, "{x:e}");
            x *= 1.000_37;
        }
    }
}
