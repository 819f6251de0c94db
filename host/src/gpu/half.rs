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
        for h in (0u16..0x7c00).step_by(7).chain([0x3555, 0x7bff, 0x0001, 0x03ff]) {
            let v = f16_to_f32(h);
            assert_eq!(f32_to_f16(v), h, "{h:#x}");
            assert_eq!(f32_to_f16(-v), h | 0x8000, "-{h:#x}");
        }
        for v in [0.1f32, 3.3, -1234.5, 1e-3, 6e4] {
            assert!((round_f16(v) - v).abs() <= v.abs() * 2f32.powi(-11), "{v}");
        }
    }
}
