//! Self-checks of `conv2d_tma` (the TMA-fed warp-specialised `wgmma` 3x3 conv of the residual blocks) and
//! of `nhwc_in_apply_pad` (the pass that writes its reflection-padded, normalised input), against the CPU.
//!
//! Inputs and weights are rounded to f16 on the host; the input norm is f16(relu(a·x + b)) as the kernels
//! compute it, so `models::ops::conv2d` (reflection padding 1) sees exactly the GPU's operands and only the
//! fp32 summation order differs. Each conv case:
//! * writes the padded input with `nhwc_in_apply_pad` (random (a, b) + ReLU, or the identity (1, 0)
//!   without ReLU) and checks the padded tensor against the CPU's reflection padding of the same values;
//! * checks the NHWC f16 output (NaN-poisoned first, so an unwritten pixel fails), the InstanceNorm
//!   partials per (sample, channel, tile) against f64 sums over the CPU output's tiles
//!   (`PartTiling::blocks(H, W, R, Wt)`), and the coefficients `nhwc_in_coef_tiled` makes of them;
//! * runs one or two consumer warpgroups (64- or 128-pixel tiles; every two-warpgroup case also with the
//!   ping-pong schedule, `conv2d_tma_pp`, whose partials combine two 64-row halves, and every one-warpgroup
//!   case also on the deep ring, `conv2d_tma_m64_deep`, and with the channels split over two jobs,
//!   `conv2d_tma_n64`; sub-pixel weights there fall back to the deep ring), boxes of whole rows and boxes of
//!   several short rows, partial tiles at the right and bottom edges, batch > 1 and grids with more tiles
//!   than blocks (each block strides over several tiles).
//!
//! Every conv case runs a second time with its statistics added to f64 plane sums (`NormStats::Sums`,
//! zeroed by `NormSums::zero` first; the fast TransformerNet's residual blocks and deconv1): the f16 output
//! must be the same, each plane's mean and variance from the sums must match the CPU output's, and
//! `nhwc_in_apply_pad` computing (a, b) from those sums (`NormCoef::Sums`) must give relu(a·y + b) of the
//! conv's own output with the CPU's coefficients (`sums_checks`).
//!
//! The residual update (`nhwc_in_apply_pad` with a padded residual, into a padded and into a plain
//! output) is checked on its own, and a last check makes sure the launchers refuse bad shapes.
//!
//! The sub-pixel form of a 2x upsampling conv (deconv2: `TmaConvWeight::upload_upsample` over a
//! replicate-padded input) is checked against the CPU twice: against the nominal upsample + reflection
//! pad + 3x3 conv with the original f16 weights (the kernel rounds each summed weight to f16 once more,
//! hence a looser tolerance), and, for the output and the partials, against the CPU conv of the
//! replicate-padded input with the kernel's own f16 sub-pixel weights, pixel-shuffled (only the summation
//! order differs).
use models::ops::{self as cpu, Padding};
use models::Tensor;

use super::conv2d_tc::{apply_in_norm, host_coef, partials_checks, random_in_coef, sums_stats_check, tiled_coef};
use super::{catch, compare, errored, poisoned, random, refusal_result, Check, CheckResult, Rng64, Tolerance};
use crate::error::Result;
use crate::gpu::half::{round_f16, round_tensor_f16};
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::ops::conv2d_tc as tc;
use crate::ops::conv2d_tma::{conv2d_tma, upsample_weight, PadMode, PaddedInput, TmaConvWeight, TmaTiling};
use crate::ops::nhwc::{nhwc_in_apply_pad, NormCoef, NormStats, NormSums, PadOut};

const OP: &str = "conv2d_tma";
/// f16 output: fp32 accumulation of exact f16 products plus one rounding (relative 2^-11).
const TOL_F16: Tolerance = Tolerance { rel_l2: 1e-3, max_rel: 1e-3 };

pub fn checks() -> Vec<Check> {
    vec![Check { op: OP, run: conv2d_tma_checks }]
}

struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    consumers: u32,
    norm: bool,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // The 256x256 image's residual conv (64x64): one warpgroup, tiles of one row.
    Case { n: 1, c: 128, h: 64, w: 64, consumers: 1, norm: true },
    // The same with two warpgroups: boxes of 64 x 2 rows.
    Case { n: 1, c: 128, h: 64, w: 64, consumers: 2, norm: false },
    // Short rows: 13 x 9 boxes (117 of 128 tile rows used), batch 2.
    Case { n: 2, c: 128, h: 9, w: 13, consumers: 2, norm: true },
    // C = 64 (one K step per tap), 23 x 2 boxes, a partial bottom tile.
    Case { n: 1, c: 64, h: 19, w: 23, consumers: 1, norm: true },
    // Batch 3, 37 x 3 boxes, partial bottom tiles.
    Case { n: 3, c: 128, h: 40, w: 37, consumers: 2, norm: false },
    // The smallest input (every tap reflected).
    Case { n: 1, c: 128, h: 2, w: 2, consumers: 1, norm: true },
    // Rows wider than a tile: 128-wide boxes, a 44-pixel partial tile at the right edge.
    Case { n: 1, c: 128, h: 20, w: 300, consumers: 2, norm: true },
    // More tiles than blocks on any GPU: 130 x 130, 260 (two warpgroups) or 390 (one) tiles.
    Case { n: 1, c: 128, h: 130, w: 130, consumers: 2, norm: true },
    Case { n: 1, c: 128, h: 130, w: 130, consumers: 1, norm: false },
];

/// The identity input norm (a, b) = (1, 0) for `n` samples of `c` channels.
fn identity_coef(n: usize, c: usize) -> Tensor {
    Tensor { shape: vec![n * c * 2], data: (0..n * c).flat_map(|_| [1.0, 0.0]).collect() }
}

/// NCHW `x` reflection-padded by 1, as NHWC `[N, H + 2, W + 2, C]` values.
fn pad_nhwc(x: &Tensor) -> Vec<f32> {
    pad_nhwc_mode(x, PadMode::Reflect)
}

/// NCHW `x` padded by 1 as `mode` says, as NHWC `[N, H + 2, W + 2, C]` values.
fn pad_nhwc_mode(x: &Tensor, mode: PadMode) -> Vec<f32> {
    let [n, c, h, w] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    let refl = |v: isize, e: usize| -> usize {
        match mode {
            PadMode::Replicate => v.clamp(0, e as isize - 1) as usize,
            PadMode::Reflect => {
                let v = v.unsigned_abs();
                if v > e - 1 { 2 * (e - 1) - v } else { v }
            }
        }
    };
    let mut out = Vec::with_capacity(n * (h + 2) * (w + 2) * c);
    for s in 0..n {
        for py in 0..h + 2 {
            for px in 0..w + 2 {
                let (sy, sx) = (refl(py as isize - 1, h), refl(px as isize - 1, w));
                for ch in 0..c {
                    out.push(x.data[((s * c + ch) * h + sy) * w + sx]);
                }
            }
        }
    }
    out
}

/// Which of the kernels of a warpgroup count a case runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kern {
    /// `conv2d_tma_m128` (two warpgroups) or `conv2d_tma_m64` (one).
    Base,
    /// The ping-pong schedule (`conv2d_tma_pp`) with two, the deep ring (`conv2d_tma_m64_deep`) with one.
    Alt,
    /// One warpgroup, the channels split over two jobs (`conv2d_tma_n64`; a sub-pixel weight falls back to
    /// the deep ring: `TmaTiling::for_up`).
    SplitN,
}

/// The kernels a case with `consumers` warpgroups runs on.
fn kernels(consumers: u32) -> &'static [Kern] {
    if consumers == 1 {
        &[Kern::Base, Kern::Alt, Kern::SplitN]
    } else {
        &[Kern::Base, Kern::Alt]
    }
}

/// The tiling a case runs: `consumers` warpgroups on kernel `k`.
fn case_tiling(h: usize, w: usize, consumers: u32, k: Kern) -> TmaTiling {
    let tl = TmaTiling::new(h, w, consumers);
    match (k, consumers) {
        (Kern::Base, _) => tl,
        (Kern::Alt, 2) => tl.pingpong(),
        (Kern::Alt, _) => tl.deep(),
        (Kern::SplitN, _) => tl.split_n(),
    }
}

/// The case label's kernel: m64, m64deep, m64n64, m128 or m128pp.
fn kernel_tag(consumers: u32, k: Kern) -> String {
    let alt = match (k, consumers) {
        (Kern::Base, _) => "",
        (Kern::Alt, 2) => "pp",
        (Kern::Alt, _) => "deep",
        (Kern::SplitN, _) => "n64",
    };
    format!("m{}{alt}", 64 * consumers)
}

fn run_case(gpu: &Gpu, rng: &mut Rng64, cs: &Case, k: Kern) -> Vec<CheckResult> {
    let tag = if cs.norm { " +in_norm" } else { "" };
    let case = format!("{}x{}x{}x{} {}{tag}", cs.n, cs.c, cs.h, cs.w, kernel_tag(cs.consumers, k));
    let mut run = || -> Result<Vec<CheckResult>> {
        let (n, c, h, w) = (cs.n, cs.c, cs.h, cs.w);
        let x = round_tensor_f16(&random(rng, &[n, c, h, w], -1.0, 1.0));
        let bound = 1.0 / ((c * 9) as f32).sqrt();
        let wt = round_tensor_f16(&random(rng, &[128, c, 3, 3], -bound, bound));
        let coef = if cs.norm { random_in_coef(rng, n, c) } else { identity_coef(n, c) };
        let x_cpu = if cs.norm { apply_in_norm(&x, &coef.data) } else { x.clone() };
        let expected = cpu::conv2d(&x_cpu, &wt, None, 1, Padding::Reflect(1), 1)?;

        let (xs, xd) = tc::nchw_to_nhwc(&x)?;
        let dx = DeviceTensor::from_f32_as_f16(&xs, &xd, Layout::Nhwc)?;
        let dcoef = DeviceTensor::from_host(&coef)?;
        let tl = case_tiling(h, w, cs.consumers, k);
        let mut xp = PaddedInput::new(n, h, w, c, tl, PadMode::Reflect)?;
        let dw = TmaConvWeight::upload(&wt)?;
        nhwc_in_apply_pad(gpu, &dx, &dcoef, cs.norm, None, PadOut::Padded(&mut xp))?;
        let want_tiling = tl.part_tiling(h, w, 1, 1);
        let mut dy = poisoned(&[n, h, w, 128], DType::F16, Layout::Nhwc)?;
        let mut part = poisoned(&[want_tiling.part_len(n, 128)], DType::F32, Layout::RowMajor)?;
        let tiling = conv2d_tma(gpu, &xp, &dw, &mut dy, &mut part)?;
        let (ncoef, gamma, beta) = tiled_coef(gpu, rng, &[n, h, w, 128], &tiling, &part)?;
        gpu.synchronize()?;

        let got_pad = xp.t.to_vec_f16_as_f32()?;
        let got16 = tc::nhwc_to_nchw([n, h, w, 128], &dy.to_vec_f16_as_f32()?)?;
        let means_label = format!("tile means ({} tiles of {}x{})", tiling.tiles, tl.box_r, tl.box_w);
        let [means, m2] = partials_checks(OP, &case, &means_label, &part, &expected, &want_tiling)?;
        let mut results = vec![
            compare(OP, &format!("{case} padded input"), &got_pad, &pad_nhwc(&x_cpu), Tolerance::F32),
            compare(OP, &format!("{case} f16 out"), &got16.data, &expected.data, TOL_F16),
            means,
            m2,
            compare(OP, &format!("{case} norm coef (tiled)"), &ncoef.to_vec_f32()?, &host_coef(&expected, &gamma.data, &beta.data), Tolerance::F32_LOOSE),
        ];
        if tiling != want_tiling {
            results[1].passed = false;
            results[1].detail = format!("tiling {tiling:?} (expected {want_tiling:?})");
        }
        results.extend(sums_checks(gpu, rng, &case, &xp, &dw, [n, h, w, 128], &dy.to_vec_f16_as_f32()?, &expected)?);
        Ok(results)
    };
    run().unwrap_or_else(|e| vec![errored(OP, &case, e)])
}

/// The conv of `run_case` / `upsample_case` again with its statistics added to f64 plane sums, and
/// `nhwc_in_apply_pad` (ReLU, plain output) computing the coefficients from them (module comment). `out`
/// is the NHWC output shape, `y16` the partials run's f16 output, `expected` the CPU output (NCHW) whose
/// plane statistics the sums must have.
#[allow(clippy::too_many_arguments)]
fn sums_checks(gpu: &Gpu, rng: &mut Rng64, case: &str, xp: &PaddedInput, dw: &TmaConvWeight, out: [usize; 4], y16: &[f32], expected: &Tensor) -> Result<Vec<CheckResult>> {
    let [n, ho, wo, k] = out;
    let mut sums = NormSums::new(1, n * k)?;
    let slot = sums.slot(0)?;
    sums.zero(gpu)?;
    let mut dy = poisoned(&out, DType::F16, Layout::Nhwc)?;
    conv2d_tma(gpu, xp, dw, &mut dy, NormStats::Sums(slot))?;
    let gamma = random(rng, &[k], 0.5, 1.5);
    let beta = random(rng, &[k], -0.5, 0.5);
    let (dg, db) = (DeviceTensor::from_host(&gamma)?, DeviceTensor::from_host(&beta)?);
    let mut normed = poisoned(&out, DType::F16, Layout::Nhwc)?;
    nhwc_in_apply_pad(gpu, &dy, NormCoef::Sums { sums: slot, gamma: &dg, beta: &db }, true, None, PadOut::Plain(&mut normed))?;
    let got_sums = sums.download(gpu, 0)?;
    let got16 = dy.to_vec_f16_as_f32()?;
    let pq = ho * wo;
    // relu(a·y + b) of the conv's own f16 output (NHWC, channel fastest), rounded to f16 once.
    let coef = host_coef(expected, &gamma.data, &beta.data);
    let want_norm: Vec<f32> = got16
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            let plane = (i / (pq * k)) * k + i % k;
            round_f16(y.mul_add(coef[2 * plane], coef[2 * plane + 1]).max(0.0))
        })
        .collect();
    Ok(vec![
        compare(OP, &format!("{case} f16 out, sums mode"), &got16, y16, Tolerance { rel_l2: 0.0, max_rel: 0.0 }),
        sums_stats_check(OP, case, &got_sums, expected),
        compare(OP, &format!("{case} apply_pad from sums"), &normed.to_vec_f16_as_f32()?, &want_norm, TOL_F16),
    ])
}

/// `nhwc_in_apply_pad` with a padded residual: out = f16(a·x + b + r) at the reflected source pixel, into
/// a padded output and into a plain one.
fn residual_case(gpu: &Gpu, rng: &mut Rng64, n: usize, h: usize, w: usize) -> Vec<CheckResult> {
    let c = 128;
    let case = format!("apply_pad residual {n}x{c}x{h}x{w}");
    let mut run = || -> Result<Vec<CheckResult>> {
        let t = round_tensor_f16(&random(rng, &[n, c, h, w], -2.0, 2.0));
        let r = round_tensor_f16(&random(rng, &[n, c, h, w], -1.0, 1.0));
        let coef = random_in_coef(rng, n, c);
        let tl = TmaTiling::new(h, w, 1);
        let (ts, td) = tc::nchw_to_nhwc(&t)?;
        let (rs, rd) = tc::nchw_to_nhwc(&r)?;
        let dt = DeviceTensor::from_f32_as_f16(&ts, &td, Layout::Nhwc)?;
        let dr = DeviceTensor::from_f32_as_f16(&rs, &rd, Layout::Nhwc)?;
        let dcoef = DeviceTensor::from_host(&coef)?;
        let dident = DeviceTensor::from_host(&identity_coef(n, c))?;
        let mut rp = PaddedInput::new(n, h, w, c, tl, PadMode::Reflect)?;
        let mut out_p = PaddedInput::new(n, h, w, c, tl, PadMode::Reflect)?;
        let mut out_plain = poisoned(&[n, h, w, c], DType::F16, Layout::Nhwc)?;
        nhwc_in_apply_pad(gpu, &dr, &dident, false, None, PadOut::Padded(&mut rp))?;
        nhwc_in_apply_pad(gpu, &dt, &dcoef, false, Some(&rp), PadOut::Padded(&mut out_p))?;
        nhwc_in_apply_pad(gpu, &dt, &dcoef, false, Some(&rp), PadOut::Plain(&mut out_plain))?;
        gpu.synchronize()?;
        let mut want = t.clone();
        let hw = h * w;
        for plane in 0..n * c {
            let (a, b) = (coef.data[2 * plane], coef.data[2 * plane + 1]);
            for i in 0..hw {
                let k = plane * hw + i;
                want.data[k] = round_f16(t.data[k].mul_add(a, b) + r.data[k]);
            }
        }
        let got_plain = tc::nhwc_to_nchw([n, h, w, c], &out_plain.to_vec_f16_as_f32()?)?;
        Ok(vec![
            compare(OP, &format!("{case} padded"), &out_p.t.to_vec_f16_as_f32()?, &pad_nhwc(&want), TOL_F16),
            compare(OP, &format!("{case} plain"), &got_plain.data, &want.data, TOL_F16),
        ])
    };
    run().unwrap_or_else(|e| vec![errored(OP, &case, e)])
}

fn refusals(gpu: &Gpu) -> CheckResult {
    catch(OP, "refuses bad shapes", || {
        let zeros = |shape: &[usize]| Tensor { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] };
        let h16 = |s: &[usize]| DeviceTensor::empty(s, DType::F16, Layout::Nhwc);
        let tl = TmaTiling::new(8, 8, 1);
        let x = PaddedInput::new(1, 8, 8, 128, tl, PadMode::Reflect)?;
        let w = TmaConvWeight::upload(&zeros(&[128, 128, 3, 3]))?;
        let w64 = TmaConvWeight::upload(&zeros(&[128, 64, 3, 3]))?;
        let part_len = tl.part_tiling(8, 8, 1, 1).part_len(1, 128);
        let mut part = DeviceTensor::empty(&[part_len], DType::F32, Layout::RowMajor)?;
        let mut part_small = DeviceTensor::empty(&[part_len - 1], DType::F32, Layout::RowMajor)?;
        let mut y = h16(&[1, 8, 8, 128])?;
        let mut y_bad = h16(&[1, 8, 9, 128])?;
        let raw = h16(&[1, 8, 8, 128])?;
        let raw_bad = h16(&[1, 8, 9, 128])?;
        let coef = DeviceTensor::from_host(&identity_coef(1, 128))?;
        let coef_small = DeviceTensor::empty(&[255], DType::F32, Layout::RowMajor)?;
        let mut xp = PaddedInput::new(1, 8, 8, 128, tl, PadMode::Reflect)?;
        let x_rep = PaddedInput::new(1, 8, 8, 128, tl, PadMode::Replicate)?;
        let w_up = TmaConvWeight::upload_upsample(&zeros(&[32, 128, 3, 3]))?;
        let mut y_up = h16(&[1, 16, 16, 32])?;
        let mut part_up = DeviceTensor::empty(&[tl.part_tiling(8, 8, 2, 1).part_len(1, 32)], DType::F32, Layout::RowMajor)?;
        // 9 rows in tiles of 64 / 8 = 8 rows (one warpgroup): a two-N-tile conv's partials need whole tiles.
        let tl_odd = TmaTiling::new(9, 8, 1);
        let x_odd = PaddedInput::new(1, 9, 8, 128, tl_odd, PadMode::Replicate)?;
        let w_up64 = TmaConvWeight::upload_upsample(&zeros(&[64, 128, 3, 3]))?;
        let mut y_odd = h16(&[1, 18, 16, 64])?;
        let mut part_odd = DeviceTensor::empty(&[4 * tl_odd.part_tiling(9, 8, 2, 2).part_len(1, 64)], DType::F32, Layout::RowMajor)?;
        let attempts: Vec<(&str, bool)> = vec![
            ("input channels differ from the weight's", conv2d_tma(gpu, &x, &w64, &mut y, &mut part).is_ok()),
            ("output shape", conv2d_tma(gpu, &x, &w, &mut y_bad, &mut part).is_ok()),
            ("partials too small", conv2d_tma(gpu, &x, &w, &mut y, &mut part_small).is_ok()),
            ("64 output channels", TmaConvWeight::upload(&zeros(&[64, 128, 3, 3])).is_ok()),
            ("9x9 weight", TmaConvWeight::upload(&zeros(&[128, 128, 9, 9])).is_ok()),
            ("32 input channels", TmaConvWeight::upload(&zeros(&[128, 32, 3, 3])).is_ok()),
            ("padded input with C = 32", PaddedInput::new(1, 8, 8, 32, tl, PadMode::Reflect).is_ok()),
            ("padded input 1 pixel high", PaddedInput::new(1, 1, 8, 128, TmaTiling::new(1, 8, 1), PadMode::Reflect).is_ok()),
            ("padded input with another tiling", PaddedInput::new(1, 8, 8, 128, TmaTiling::new(8, 9, 1), PadMode::Reflect).is_ok()),
            ("apply_pad image mismatch", nhwc_in_apply_pad(gpu, &raw_bad, &coef, true, None, PadOut::Padded(&mut xp)).is_ok()),
            ("apply_pad residual mismatch", nhwc_in_apply_pad(gpu, &raw_bad, &coef, true, Some(&x), PadOut::Plain(&mut y_bad)).is_ok()),
            ("apply_pad coef too small", nhwc_in_apply_pad(gpu, &raw, &coef_small, true, None, PadOut::Padded(&mut xp)).is_ok()),
            ("sub-pixel weight over a reflection-padded input", conv2d_tma(gpu, &x, &w_up, &mut y_up, &mut part_up).is_ok()),
            ("sub-pixel weight into a 1x output", conv2d_tma(gpu, &x_rep, &w_up, &mut y, &mut part_up).is_ok()),
            ("plain weight over a replicate-padded input", conv2d_tma(gpu, &x_rep, &w, &mut y, &mut part).is_ok()),
            ("sub-pixel weight with 128 outputs", TmaConvWeight::upload_upsample(&zeros(&[128, 128, 3, 3])).is_ok()),
            ("two N tiles with tile rows not dividing H", conv2d_tma(gpu, &x_odd, &w_up64, &mut y_odd, &mut part_odd).is_ok()),
            ("sub-pixel weight with 32 inputs", TmaConvWeight::upload_upsample(&zeros(&[32, 32, 3, 3])).is_ok()),
        ];
        // The right calls are taken (so the refusals above are about what they name).
        let control = nhwc_in_apply_pad(gpu, &raw, &coef, true, None, PadOut::Padded(&mut xp))
            .and_then(|_| conv2d_tma(gpu, &xp, &w, &mut y, &mut part))
            .and_then(|_| conv2d_tma(gpu, &x_rep, &w_up, &mut y_up, &mut part_up).map(|_| ()));
        gpu.synchronize()?;
        let accepted: Vec<&str> = attempts.iter().filter(|(_, ok)| *ok).map(|(n, _)| *n).collect();
        Ok(refusal_result(OP, &accepted, control.err().map(|e| e.to_string())))
    })
}

/// Sub-pixel 2x upsampling conv cases: (N, C, H, W) of the low-resolution input, output channels K (32: one
/// N tile; 64: two), consumer warpgroups, input norm.
#[rustfmt::skip]
const UP_CASES: &[(usize, usize, usize, usize, usize, u32, bool)] = &[
    // deconv2 of a 256x256 image (128x128 -> 256x256), one warpgroup as the net picks there.
    (1, 64, 128, 128, 32, 1, true),
    // Short rows (13 x 9 boxes), batch 2, partial bottom tiles.
    (2, 64, 9, 13, 32, 2, true),
    // A 44-pixel partial tile at the right edge, no norm.
    (1, 64, 6, 300, 32, 2, false),
    // C = 128 (two K steps per tap), 7 x 9 boxes.
    (1, 128, 11, 7, 32, 1, true),
    // The smallest input (every tap replicated).
    (1, 64, 2, 2, 32, 1, true),
    // Batch 3, more tiles than blocks.
    (3, 64, 40, 37, 32, 2, false),
    // deconv1 (128 -> 64, two N tiles) of a 256x256 image (64x64 -> 128x128).
    (1, 128, 64, 64, 64, 1, true),
    // Two N tiles: 13 x 9 boxes (9 rows divide H), batch 2; a partial right tile; batch 3 with 37 x 3 boxes.
    (2, 128, 9, 13, 64, 2, true),
    (1, 128, 6, 300, 64, 2, false),
    (3, 128, 24, 37, 64, 2, true),
    // C = 64 with two N tiles, a single tile of 4 rows.
    (1, 64, 4, 16, 64, 1, false),
];

/// The sub-pixel form on the CPU: NCHW `x` `[N, C, H, W]` replicate-padded, convolved with `w_sub`
/// `[4K, C, 3, 3]` (`upsample_weight`), column block q = 2py + px of the result moved to output pixel
/// (2y + py, 2x + px): `[N, K, 2H, 2W]`.
fn subpixel_conv_cpu(x: &Tensor, w_sub: &Tensor) -> Result<Tensor> {
    let [n, c, h, w] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    let kc = w_sub.shape[0] / 4;
    let xpad = tc::nhwc_to_nchw([n, h + 2, w + 2, c], &pad_nhwc_mode(x, PadMode::Replicate))?;
    let sub = cpu::conv2d(&xpad, w_sub, None, 1, Padding::Zero(0), 1)?;
    let (ho, wo) = (2 * h, 2 * w);
    let mut out = Tensor { shape: vec![n, kc, ho, wo], data: vec![0.0; n * kc * ho * wo] };
    for s in 0..n {
        for q in 0..4 {
            for k in 0..kc {
                for y in 0..h {
                    for xx in 0..w {
                        out.data[((s * kc + k) * ho + 2 * y + q / 2) * wo + 2 * xx + q % 2] = sub.data[((s * 4 * kc + q * kc + k) * h + y) * w + xx];
                    }
                }
            }
        }
    }
    Ok(out)
}

/// `[N, C, 2H, W]` with the even rows first, then the odd ones (the plane two-N-tile partials tile).
fn rows_by_parity(t: &Tensor) -> Tensor {
    let [n, c, h2, w] = [t.shape[0], t.shape[1], t.shape[2], t.shape[3]];
    let mut out = t.clone();
    for plane in 0..n * c {
        for r in 0..h2 {
            let dst = (r % 2) * (h2 / 2) + r / 2;
            out.data[(plane * h2 + dst) * w..][..w].copy_from_slice(&t.data[(plane * h2 + r) * w..][..w]);
        }
    }
    out
}

/// One [`UP_CASES`] case (module comment).
fn upsample_case(gpu: &Gpu, rng: &mut Rng64, (n, c, h, w, k, consumers, norm): (usize, usize, usize, usize, usize, u32, bool), kern: Kern) -> Vec<CheckResult> {
    const TOL_SUB: Tolerance = Tolerance { rel_l2: 2e-3, max_rel: 4e-3 };
    let tag = if norm { " +in_norm" } else { "" };
    let fallback = if kern == Kern::SplitN { " (runs m64deep)" } else { "" };
    let case = format!("up2 {n}x{c}x{h}x{w} -> {k} {}{fallback}{tag}", kernel_tag(consumers, kern));
    let mut run = || -> Result<Vec<CheckResult>> {
        let x = round_tensor_f16(&random(rng, &[n, c, h, w], -1.0, 1.0));
        let bound = 1.0 / ((c * 9) as f32).sqrt();
        let wt = round_tensor_f16(&random(rng, &[k, c, 3, 3], -bound, bound));
        let coef = if norm { random_in_coef(rng, n, c) } else { identity_coef(n, c) };
        let x_cpu = if norm { apply_in_norm(&x, &coef.data) } else { x.clone() };
        let nominal = cpu::conv2d(&x_cpu, &wt, None, 1, Padding::Reflect(1), 2)?;
        // The kernel's own arithmetic: its f16 sub-pixel weights.
        let exact = subpixel_conv_cpu(&x_cpu, &round_tensor_f16(&upsample_weight(&wt)?))?;
        let (ho, wo) = (2 * h, 2 * w);

        let (xs, xd) = tc::nchw_to_nhwc(&x)?;
        let dx = DeviceTensor::from_f32_as_f16(&xs, &xd, Layout::Nhwc)?;
        let dcoef = DeviceTensor::from_host(&coef)?;
        let tl = case_tiling(h, w, consumers, kern);
        let mut xp = PaddedInput::new(n, h, w, c, tl, PadMode::Replicate)?;
        let dw = TmaConvWeight::upload_upsample(&wt)?;
        nhwc_in_apply_pad(gpu, &dx, &dcoef, norm, None, PadOut::Padded(&mut xp))?;
        let want_tiling = tl.part_tiling(h, w, 2, k / 32);
        let mut dy = poisoned(&[n, ho, wo, k], DType::F16, Layout::Nhwc)?;
        let mut part = poisoned(&[want_tiling.part_len(n, k)], DType::F32, Layout::RowMajor)?;
        let tiling = conv2d_tma(gpu, &xp, &dw, &mut dy, &mut part)?;
        let (ncoef, gamma, beta) = tiled_coef(gpu, rng, &[n, ho, wo, k], &tiling, &part)?;
        gpu.synchronize()?;

        let got16 = tc::nhwc_to_nchw([n, ho, wo, k], &dy.to_vec_f16_as_f32()?)?;
        // Two N tiles: the partials tile a plane of the even output rows then the odd ones.
        let exact_rows = if k == 64 { rows_by_parity(&exact) } else { exact.clone() };
        let means_label = format!("tile means ({} tiles of {}x{})", tiling.tiles, 2 * tl.box_r, 2 * tl.box_w);
        let [means, m2] = partials_checks(OP, &case, &means_label, &part, &exact_rows, &want_tiling)?;
        let mut results = vec![
            compare(OP, &format!("{case} replicate-padded input"), &xp.t.to_vec_f16_as_f32()?, &pad_nhwc_mode(&x_cpu, PadMode::Replicate), Tolerance::F32),
            compare(OP, &format!("{case} f16 out vs upsample conv"), &got16.data, &nominal.data, TOL_SUB),
            compare(OP, &format!("{case} f16 out vs sub-pixel conv"), &got16.data, &exact.data, TOL_F16),
            means,
            m2,
            compare(OP, &format!("{case} norm coef (tiled)"), &ncoef.to_vec_f32()?, &host_coef(&exact, &gamma.data, &beta.data), Tolerance::F32_LOOSE),
        ];
        if tiling != want_tiling {
            results[2].passed = false;
            results[2].detail = format!("tiling {tiling:?} (expected {want_tiling:?})");
        }
        results.extend(sums_checks(gpu, rng, &case, &xp, &dw, [n, ho, wo, k], &dy.to_vec_f16_as_f32()?, &exact)?);
        Ok(results)
    };
    run().unwrap_or_else(|e| vec![errored(OP, &case, e)])
}

fn conv2d_tma_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out = Vec::new();
    // Every case runs on every kernel of its warpgroup count: two warpgroups on each tile and ping-pong;
    // one warpgroup on the 3-stage ring, on the deep one and with the channels split over two jobs (a
    // sub-pixel weight: on the deep ring, through the launcher's fallback).
    for cs in CASES {
        for &k in kernels(cs.consumers) {
            out.extend(run_case(gpu, rng, cs, k));
        }
    }
    for &cs in UP_CASES {
        for &k in kernels(cs.5) {
            out.extend(upsample_case(gpu, rng, cs, k));
        }
    }
    out.extend(residual_case(gpu, rng, 2, 9, 13));
    out.extend(residual_case(gpu, rng, 1, 64, 64));
    out.push(refusals(gpu));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selfcheck::conv2d_tc::host_partials;
    use crate::ops::conv2d_tc::PartTiling;

    #[test]
    fn host_partials_two_d_tiles() {
        // One 3x5 plane in tiles of 2 rows x 3 columns: 4 tiles (6, 4, 3 and 2 pixels).
        let y = Tensor { shape: vec![1, 1, 3, 5], data: (0..15).map(|i| i as f32).collect() };
        let (m, m2) = host_partials(&y, &PartTiling::blocks(3, 5, 2, 3));
        assert_eq!(m, vec![(0. + 1. + 2. + 5. + 6. + 7.) / 6., (3. + 4. + 8. + 9.) / 4., 11., 13.5]);
        assert_eq!(m2[3], 0.5);
    }

    #[test]
    fn padding_reflects() {
        let x = Tensor { shape: vec![1, 1, 2, 3], data: vec![1., 2., 3., 4., 5., 6.] };
        let p = pad_nhwc(&x);
        assert_eq!(p.len(), 4 * 5);
        assert_eq!(&p[0..5], &[5., 4., 5., 6., 5.]);
        assert_eq!(&p[5..10], &[2., 1., 2., 3., 2.]);
        assert_eq!(&p[15..20], &[2., 1., 2., 3., 2.]);
    }

    #[test]
    fn padding_replicates() {
        let x = Tensor { shape: vec![1, 1, 2, 3], data: vec![1., 2., 3., 4., 5., 6.] };
        let p = pad_nhwc_mode(&x, PadMode::Replicate);
        assert_eq!(&p[0..5], &[1., 1., 2., 3., 3.]);
        assert_eq!(&p[5..10], &[1., 1., 2., 3., 3.]);
        assert_eq!(&p[15..20], &[4., 4., 5., 6., 6.]);
    }

    /// The sub-pixel weight's four parities, summed taps: a weight of ones gives each parity's low-resolution
    /// taps the count of 3x3 taps landing there (rows: parity 0 -> [1, 2, 0], parity 1 -> [0, 2, 1]).
    #[test]
    fn upsample_weight_sums_taps() {
        let w = Tensor { shape: vec![32, 64, 3, 3], data: vec![1.0; 32 * 64 * 9] };
        let u = upsample_weight(&w).unwrap();
        assert_eq!(u.shape, vec![128, 64, 3, 3]);
        let rows = [[1., 2., 0.], [0., 2., 1.]];
        for q in 0..4 {
            let (a, b) = (q / 2, q % 2);
            let f = &u.data[(q * 32 + 5) * 64 * 9 + 7 * 9..][..9];
            for r in 0..3 {
                for t in 0..3 {
                    assert_eq!(f[r * 3 + t], rows[a][r] * rows[b][t], "parity {q} tap ({r}, {t})");
                }
            }
        }
        assert!(upsample_weight(&Tensor { shape: vec![32, 32, 3, 3], data: vec![0.0; 32 * 32 * 9] }).is_err());
    }

    /// The sub-pixel form (replicate pad, summed taps, pixel shuffle) is the upsample-2 + reflection-pad +
    /// 3x3 conv, on the CPU in f32 (odd sizes, the smallest input).
    #[test]
    fn subpixel_form_is_the_upsampling_conv() {
        let mut rng = <Rng64 as rand::SeedableRng>::seed_from_u64(3);
        for (h, w, k) in [(3, 5, 32), (2, 2, 32), (4, 7, 64)] {
            let x = random(&mut rng, &[2, 64, h, w], -1.0, 1.0);
            let wt = random(&mut rng, &[k, 64, 3, 3], -0.1, 0.1);
            let want = cpu::conv2d(&x, &wt, None, 1, Padding::Reflect(1), 2).unwrap();
            let got = subpixel_conv_cpu(&x, &upsample_weight(&wt).unwrap()).unwrap();
            assert_eq!(got.shape, want.shape);
            for (i, (g, e)) in got.data.iter().zip(&want.data).enumerate() {
                assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{h}x{w} index {i}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn cases_cover_the_contract() {
        assert!(UP_CASES.iter().all(|c| c.4 == 32 || TmaTiling::new(c.2, c.3, c.5).splits_rows(c.2)), "two-N-tile cases need whole tiles");
        assert!(UP_CASES.iter().any(|c| c.4 == 64 && c.0 > 1) && UP_CASES.iter().any(|c| c.4 == 32 && c.0 > 1));
        assert!(CASES.iter().any(|c| c.consumers == 1) && CASES.iter().any(|c| c.consumers == 2));
        assert!(CASES.iter().any(|c| c.c == 64));
        assert!(CASES.iter().any(|c| c.w > 128 && c.w % 128 != 0), "partial tile at the right edge");
        assert!(CASES.iter().any(|c| c.w < 64 && c.h % TmaTiling::new(c.h, c.w, c.consumers).box_r != 0), "partial bottom tile");
        assert!(CASES.iter().any(|c| c.n > 1));
        assert!(CASES.iter().any(|c| TmaTiling::new(c.h, c.w, c.consumers).tiles * c.n > 264), "more tiles than blocks");
    }
}
