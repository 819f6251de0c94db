//! Self-checks of `conv2d_wg` (the `wgmma` implicit-GEMM 3x3 conv, 128 or 64 output channels) against the CPU
//! reference, the way `selfcheck::conv2d_tc` checks `conv2d_tc`.
//!
//! Inputs and weights are rounded to f16 on the host and `models::ops::conv2d` (reflection padding 1,
//! stride 1, nearest upsampling) runs on the rounded values, so products are exact on both sides and only
//! the fp32 summation order differs. Each case checks:
//! * the NHWC f16 output (one f16 rounding of the CPU's f32 value; NaN-poisoned before the launch, so an
//!   unwritten pixel fails);
//! * the InstanceNorm partials directly: per (sample, channel, 128-pixel tile) the mean and the M2 of the
//!   tile's valid pixels against f64 sums over the CPU output (means and M2 compared separately);
//! * the partials combined by `nhwc_in_coef_tiled` with the returned tiling, against f64 statistics of the
//!   whole plane (`host_coef`);
//! * the returned tiling against `PartTiling::linear(P*Q, 128)`.
//!
//! Cases: K = 128 (`conv2d_wg_k128`) and K = 64 (`conv2d_wg_k64`, deconv1-like), C = 128 and C = 64, with and without the input norm (random (a, b), negative slopes included;
//! the CPU convolves f16(relu(a·x + b))), upsample 1 and 2, P*Q not a multiple of 128 (9x13 -> 117 pixels,
//! one partial tile; 18x26 -> 468), exact tiles, batch 2 and 3, a 1x1 input upsampled to 2x2 (every tap
//! reflected), and a grid of many tiles. A last check makes sure the launcher refuses bad shapes.
use models::ops::{self as cpu, Padding};
use models::Tensor;

use super::conv2d_tc::{apply_in_norm, host_coef, partials_checks, random_in_coef, tiled_coef};
use super::{catch, compare, errored, poisoned, random, refusal_result, Check, CheckResult, Rng64, Tolerance};
use crate::error::Result;
use crate::gpu::half::round_tensor_f16;
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::ops::nhwc::NormCoef;
use crate::ops::conv2d_tc::{self as tc, PartTiling, TcWeight};
use crate::ops::conv2d_wg::{conv2d_wg, conv2d_wg_fits};

const OP: &str = "conv2d_wg";
/// f16 output: fp32 accumulation of exact f16 products plus one rounding (relative 2^-11).
const TOL_F16: Tolerance = Tolerance { rel_l2: 1e-3, max_rel: 1e-3 };
/// Pixels per tile.
const BM: usize = 128;

pub fn checks() -> Vec<Check> {
    vec![Check { op: OP, run: conv2d_wg_checks }]
}

struct Case {
    n: usize,
    c: usize,
    k: usize,
    h: usize,
    w: usize,
    up: usize,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // 117 output pixels: one partial tile.
    Case { n: 1, c: 128, k: 128, h: 9, w: 13, up: 1 },
    // Upsampled, batch 2: 18x26 = 468 pixels, 4 tiles, the last partial.
    Case { n: 2, c: 128, k: 128, h: 9, w: 13, up: 2 },
    // C = 64 (one GEMM-K step per tap), batch 2, odd sizes.
    Case { n: 2, c: 64, k: 128, h: 19, w: 23, up: 1 },
    // C = 64 upsampled, exact tiles (32x32 = 8 tiles).
    Case { n: 1, c: 64, k: 128, h: 16, w: 16, up: 2 },
    // The smallest input: 1x1 upsampled to 2x2, every tap reflected.
    Case { n: 1, c: 128, k: 128, h: 1, w: 1, up: 2 },
    // Batch 3, 40x37 = 1480 pixels = 12 tiles (the last one partial).
    Case { n: 3, c: 128, k: 128, h: 40, w: 37, up: 1 },
    // A residual-block-like grid at reduced size: 64x64, 32 tiles per sample, batch 2.
    Case { n: 2, c: 128, k: 128, h: 64, w: 64, up: 1 },
    // K = 64 (deconv1-like: 128 -> 64, upsampled): 18x26 (partial tile), batch 2; C = 64 odd sizes; the
    // smallest input; many tiles.
    Case { n: 2, c: 128, k: 64, h: 9, w: 13, up: 2 },
    Case { n: 1, c: 64, k: 64, h: 19, w: 23, up: 1 },
    Case { n: 1, c: 128, k: 64, h: 1, w: 1, up: 2 },
    Case { n: 1, c: 128, k: 64, h: 40, w: 37, up: 2 },
];

fn run_case(gpu: &Gpu, rng: &mut Rng64, cs: &Case, norm: bool) -> Vec<CheckResult> {
    let tag = if norm { " +in_norm" } else { "" };
    let case = format!("{}x{}x{}x{} k{} 3x3 up{}{tag}", cs.n, cs.c, cs.h, cs.w, cs.k, cs.up);
    let mut run = || -> Result<Vec<CheckResult>> {
        let x = round_tensor_f16(&random(rng, &[cs.n, cs.c, cs.h, cs.w], -1.0, 1.0));
        let bound = 1.0 / ((cs.c * 9) as f32).sqrt();
        let w = round_tensor_f16(&random(rng, &[cs.k, cs.c, 3, 3], -bound, bound));
        let in_coef = norm.then(|| random_in_coef(rng, cs.n, cs.c));
        let x_cpu = match &in_coef {
            Some(cf) => apply_in_norm(&x, &cf.data),
            None => x.clone(),
        };
        let expected = cpu::conv2d(&x_cpu, &w, None, 1, Padding::Reflect(1), cs.up)?;
        let [n, k, p, q] = [expected.shape[0], expected.shape[1], expected.shape[2], expected.shape[3]];

        let (xs, xd) = tc::nchw_to_nhwc(&x)?;
        let dx = DeviceTensor::from_f32_as_f16(&xs, &xd, Layout::Nhwc)?;
        let dw = TcWeight::upload(&w, 0, 0)?;
        let dcoef = in_coef.as_ref().map(DeviceTensor::from_host).transpose()?;
        if !conv2d_wg_fits(&dx.shape, &dw, cs.up) {
            return Ok(vec![errored(OP, &case, "conv2d_wg_fits refuses a shape the kernel takes")]);
        }
        let want_tiling = PartTiling::linear(p * q, BM);
        let mut dy = poisoned(&[n, p, q, k], DType::F16, Layout::Nhwc)?;
        let mut part = poisoned(&[want_tiling.part_len(n, k)], DType::F32, Layout::RowMajor)?;
        let tiling = conv2d_wg(gpu, &dx, &dw, cs.up, dcoef.as_ref().map(NormCoef::Coef), &mut dy, &mut part)?;
        let (coef, gamma, beta) = tiled_coef(gpu, rng, &[n, p, q, k], &tiling, &part)?;
        gpu.synchronize()?;

        let got16 = tc::nhwc_to_nchw([n, p, q, k], &dy.to_vec_f16_as_f32()?)?;
        let [means, m2] = partials_checks(OP, &case, &format!("tile means ({} tiles)", tiling.tiles), &part, &expected, &want_tiling)?;
        let want_coef = host_coef(&expected, &gamma.data, &beta.data);
        let mut results = vec![
            compare(OP, &format!("{case} f16 out"), &got16.data, &expected.data, TOL_F16),
            means,
            m2,
            compare(OP, &format!("{case} norm coef (tiled)"), &coef.to_vec_f32()?, &want_coef, Tolerance::F32_LOOSE),
        ];
        if tiling != want_tiling || got16.shape != expected.shape {
            results[0].passed = false;
            results[0].detail = format!("tiling {tiling:?} (expected {want_tiling:?}), shape {:?} (expected {:?})", got16.shape, expected.shape);
        }
        Ok(results)
    };
    run().unwrap_or_else(|e| vec![errored(OP, &case, e)])
}

fn refusals(gpu: &Gpu) -> CheckResult {
    catch(OP, "refuses bad shapes", || {
        let h = |s: &[usize], l| DeviceTensor::empty(s, DType::F16, l);
        let f = |s: &[usize], l| DeviceTensor::empty(s, DType::F32, l);
        let weight = |k: usize, c: usize, r: usize| TcWeight::upload(&Tensor { shape: vec![k, c, r, r], data: vec![0.0; k * c * r * r] }, 0, 0);
        let x = h(&[1, 8, 8, 64], Layout::Nhwc)?;
        let x_c32 = h(&[1, 8, 8, 32], Layout::Nhwc)?;
        let x_nchw = h(&[1, 8, 8, 64], Layout::Nchw)?;
        let x_f32 = f(&[1, 8, 8, 64], Layout::Nhwc)?;
        let x_1px = h(&[1, 1, 1, 64], Layout::Nhwc)?;
        let w = weight(128, 64, 3)?;
        let w_c32 = weight(128, 32, 3)?;
        let w_k32 = weight(32, 64, 3)?;
        let w_k64 = weight(64, 64, 3)?;
        let w_9x9 = weight(128, 64, 9)?;
        let w_c128 = weight(128, 128, 3)?;
        let mut y = h(&[1, 8, 8, 128], Layout::Nhwc)?;
        let mut y_up = h(&[1, 16, 16, 128], Layout::Nhwc)?;
        let mut y_1px = h(&[1, 1, 1, 128], Layout::Nhwc)?;
        let mut y_bad = h(&[1, 8, 9, 128], Layout::Nhwc)?;
        let mut y_f32 = f(&[1, 8, 8, 128], Layout::Nhwc)?;
        let mut part = f(&[PartTiling::linear(256, BM).part_len(1, 128)], Layout::RowMajor)?;
        let mut part_small = f(&[PartTiling::linear(64, BM).part_len(1, 128) - 1], Layout::RowMajor)?;
        let coef_small = f(&[127], Layout::RowMajor)?;
        let coef_f16 = h(&[128], Layout::RowMajor)?;
        let norm = |coef| Some(NormCoef::Coef(coef));
        let attempts: Vec<(&str, Result<PartTiling>)> = vec![
            ("C = 32", conv2d_wg(gpu, &x_c32, &w_c32, 1, None, &mut y, &mut part)),
            ("K = 32", conv2d_wg(gpu, &x, &w_k32, 1, None, &mut y, &mut part)),
            ("K = 64 into a 128-channel output", conv2d_wg(gpu, &x, &w_k64, 1, None, &mut y, &mut part)),
            ("9x9", conv2d_wg(gpu, &x, &w_9x9, 1, None, &mut y, &mut part)),
            ("channel mismatch", conv2d_wg(gpu, &x, &w_c128, 1, None, &mut y, &mut part)),
            ("upsample 3", conv2d_wg(gpu, &x, &w, 3, None, &mut y, &mut part)),
            ("1x1 input without upsampling", conv2d_wg(gpu, &x_1px, &w, 1, None, &mut y_1px, &mut part)),
            ("NCHW input", conv2d_wg(gpu, &x_nchw, &w, 1, None, &mut y, &mut part)),
            ("f32 input", conv2d_wg(gpu, &x_f32, &w, 1, None, &mut y, &mut part)),
            ("output shape", conv2d_wg(gpu, &x, &w, 1, None, &mut y_bad, &mut part)),
            ("output shape without the upsampling", conv2d_wg(gpu, &x, &w, 2, None, &mut y, &mut part)),
            ("f32 output", conv2d_wg(gpu, &x, &w, 1, None, &mut y_f32, &mut part)),
            ("partials too small", conv2d_wg(gpu, &x, &w, 1, None, &mut y, &mut part_small)),
            ("input norm coef too small", conv2d_wg(gpu, &x, &w, 1, norm(&coef_small), &mut y, &mut part)),
            ("input norm coef f16", conv2d_wg(gpu, &x, &w, 1, norm(&coef_f16), &mut y, &mut part)),
        ];
        // The same call with the right output is taken (so the refusals above are about what they name).
        let control = conv2d_wg(gpu, &x, &w, 2, None, &mut y_up, &mut part);
        gpu.synchronize()?;
        let accepted: Vec<&str> = attempts.iter().filter(|(_, r)| r.is_ok()).map(|(n, _)| *n).collect();
        Ok(refusal_result(OP, &accepted, control.err().map(|e| e.to_string())))
    })
}

fn conv2d_wg_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for cs in CASES {
        out.extend(run_case(gpu, rng, cs, false));
        out.extend(run_case(gpu, rng, cs, true));
    }
    out.push(refusals(gpu));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selfcheck::conv2d_tc::host_partials;

    /// The cases cover what the module comment promises.
    #[test]
    fn cases_cover_the_contract() {
        let pq = |cs: &Case| cs.h * cs.up * cs.w * cs.up;
        assert!(CASES.iter().any(|cs| cs.c == 64) && CASES.iter().any(|cs| cs.c == 128));
        for k in [64, 128] {
            assert!(CASES.iter().any(|cs| cs.k == k && cs.up == 2 && !pq(cs).is_multiple_of(BM)));
            assert!(CASES.iter().any(|cs| cs.k == k && cs.c == 64));
            assert!(CASES.iter().any(|cs| cs.k == k && cs.h * cs.up == 2));
        }
        assert!(CASES.iter().all(|cs| cs.k == 64 || cs.k == 128));
        assert!(CASES.iter().any(|cs| cs.up == 2 && cs.n > 1 && !pq(cs).is_multiple_of(BM)));
        assert!(CASES.iter().any(|cs| cs.up == 1 && !pq(cs).is_multiple_of(BM)));
        assert!(CASES.iter().any(|cs| pq(cs).is_multiple_of(BM)));
        assert!(CASES.iter().any(|cs| cs.h * cs.up == 2));
        assert!(CASES.iter().any(|cs| pq(cs).div_ceil(BM) > 8 && cs.n > 1));
    }

    #[test]
    fn host_partials_per_tile() {
        // One plane of 130 pixels: tiles of 128 and 2.
        let y = Tensor { shape: vec![1, 1, 10, 13], data: (0..130).map(|i| i as f32).collect() };
        let (m, m2) = host_partials(&y, &PartTiling::linear(130, BM));
        assert_eq!(m, vec![63.5, 128.5]);
        assert_eq!(m2[1], 0.5);
        let want: f64 = (0..128).map(|i| (i as f64 - 63.5).powi(2)).sum();
        assert!((m2[0] as f64 - want).abs() < 1e-3 * want);
    }
}
