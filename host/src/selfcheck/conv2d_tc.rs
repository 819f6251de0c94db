//! Self-checks of `conv2d_tc` (f16 tensor-core implicit GEMM) against the CPU reference.
//!
//! Inputs and weights are rounded to f16 on the host and the CPU reference `models::ops::conv2d` runs on
//! the rounded values (NCHW f32), so products are exact on both sides and only the fp32 summation order
//! differs. Every case runs both epilogues: the NHWC f16 output (one f16 rounding from the CPU's f32) with
//! its InstanceNorm partials turned into coefficients by `nhwc_in_coef` (against f64 statistics of the
//! CPU output), and the NCHW f32 output of the first `k_real` channels plus bias. Outputs are poisoned
//! with NaN before each launch. The cases reach every kernel variant (`launch::conv2d_tc_variant`: each
//! K at each tile size, the c4 first layer at 256 and 128 pixels, stride 2, upsampling, GEMM-K with a
//! zero half step of 64, partial last tiles, batch > 1); cases whose default is `conv2d_tc_k32` also run
//! through `conv2d_tc_k32` (BK 64) too. Each case name ends with the kernel it ran. conv1's halo-staged
//! `conv2d_tc_c4_halo9_k32` has its own cases (partial 2-D tiles, the 5x5 minimum, batch 2) with its 2-D
//! partials combined by `nhwc_in_coef_tiled`.
//!
//! Input norm ([`ConvOpts::input_norm`]): every case with C % 8 == 0 runs again through each of its variants with a
//! raw input and random (a, b) per (sample, channel) (negative slopes and offsets included, so ReLU clips
//! on both signs of x); the CPU reference convolves f16(relu(a·x + b)) (f32 fma, one f16 rounding, as the
//! kernels do), so reflection padding, upsampling, tile tails and zero-filled GEMM-K tails all meet the
//! transform. `conv2d_tc_halo9` has the same with and without the norm.
use models::ops::{self as cpu, Padding};
use models::Tensor;

use super::{catch, compare, errored, poisoned, random, Check, CheckResult, Rng64, Tolerance};
use crate::error::Result;
use crate::gpu::half::{round_f16, round_tensor_f16};
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::ops::conv2d_tc::{self as tc, ConvOpts, ConvOut, PartTiling, TcWeight};
use gpu_kernels::launch::{conv2d_tc_alternative, conv2d_tc_variant, Conv2dTcVariant, CONV2D_TC_K32_BK32, CONV2D_TC_K32_BK64};
use crate::ops::nhwc::{self, NormCoef, NormStats, NormSums};

const OP: &str = "conv2d_tc";
/// f32 output: fp32 accumulation of exact f16 products; only the summation order differs from the CPU.
const TOL_F32: Tolerance = Tolerance { rel_l2: 1e-4, max_rel: 1e-3 };
/// f16 output: one rounding (relative 2^-11 of each value, at most 2^-11 of the largest) on top.
const TOL_F16: Tolerance = Tolerance { rel_l2: 1e-3, max_rel: 1e-3 };

pub fn checks() -> Vec<Check> {
    vec![Check { op: OP, run: conv2d_tc_checks }]
}

struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    r: usize,
    stride: usize,
    up: usize,
    /// Channels the NCHW + bias epilogue writes.
    k_real: usize,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // conv1-like: 4 packed channels, 9x9, 8-byte gather; batch 2 with odd sizes.
    Case { n: 1, c: 4, h: 20, w: 18, k: 32, r: 9, stride: 1, up: 1, k_real: 32 },
    Case { n: 2, c: 4, h: 13, w: 11, k: 32, r: 9, stride: 1, up: 1, k_real: 5 },
    // conv2-like: 3x3 stride 2, 32 -> 64, odd sizes (tile tail).
    Case { n: 1, c: 32, h: 33, w: 29, k: 64, r: 3, stride: 2, up: 1, k_real: 64 },
    // conv3-like: 64 -> 128 stride 2.
    Case { n: 1, c: 64, h: 20, w: 17, k: 128, r: 3, stride: 2, up: 1, k_real: 128 },
    // residual-like: 128 -> 128 stride 1, batch 2 (grid y = sample).
    Case { n: 2, c: 128, h: 19, w: 23, k: 128, r: 3, stride: 1, up: 1, k_real: 100 },
    // up-convs: nearest x2 folded into the gather.
    Case { n: 1, c: 128, h: 9, w: 11, k: 64, r: 3, stride: 1, up: 2, k_real: 64 },
    Case { n: 1, c: 64, h: 16, w: 16, k: 32, r: 3, stride: 1, up: 2, k_real: 32 },
    // deconv3-like: 32 -> 8 (3 real), 9x9; batch 2.
    Case { n: 1, c: 32, h: 20, w: 18, k: 8, r: 9, stride: 1, up: 1, k_real: 3 },
    Case { n: 2, c: 32, h: 17, w: 13, k: 8, r: 9, stride: 1, up: 1, k_real: 3 },
    // C = 16: R*S*C = 144 is not a multiple of the 32-wide K step (zero-padded weight rows).
    Case { n: 1, c: 16, h: 15, w: 13, k: 8, r: 3, stride: 1, up: 1, k_real: 8 },
    // 13 tiles per sample, the last one partial: the statistics combine many tiles.
    Case { n: 1, c: 32, h: 40, w: 40, k: 32, r: 3, stride: 1, up: 1, k_real: 32 },
    // Grids large enough for the 128-pixel tiles of K = 128 and K = 64 (small ones above take 32/64).
    Case { n: 12, c: 128, h: 30, w: 50, k: 128, r: 3, stride: 1, up: 1, k_real: 128 },
    Case { n: 12, c: 128, h: 15, w: 25, k: 64, r: 3, stride: 1, up: 2, k_real: 64 },
    // Tiny input: reflection touches both borders of every pixel.
    Case { n: 1, c: 32, h: 2, w: 3, k: 64, r: 3, stride: 1, up: 1, k_real: 64 },
    // The 256-pixel tiles of K = 32: deconv2-like (up x2, 64 -> 32, 136 tiles, the last partial; also
    // also run through conv2d_tc_k32, BK 64) and conv1-like (4 packed channels, 9x9, batch 2, 67 tiles each).
    Case { n: 1, c: 64, h: 95, w: 91, k: 32, r: 3, stride: 1, up: 2, k_real: 32 },
    Case { n: 2, c: 4, h: 130, w: 130, k: 32, r: 9, stride: 1, up: 1, k_real: 32 },
    // conv2-like at 128-pixel tiles: C = 32, GEMM-K 288 = 4.5 steps of 64 (zero half step), stride 2.
    Case { n: 2, c: 32, h: 200, w: 179, k: 64, r: 3, stride: 2, up: 1, k_real: 64 },
    // K = 128 with 64-pixel tiles (72 tiles of 128 < 132), stride 2 (conv3-like).
    Case { n: 1, c: 64, h: 192, w: 191, k: 128, r: 3, stride: 2, up: 1, k_real: 128 },
    // K = 128, 128-pixel tiles, stride 2, batch 4 (34 tiles each, the last one partial).
    Case { n: 4, c: 64, h: 130, w: 130, k: 128, r: 3, stride: 2, up: 1, k_real: 128 },
    // C = 16: GEMM-K 144 = 2.25 steps of 64 (a zero half step and zero-filled A positions), K = 128 m32.
    Case { n: 1, c: 16, h: 21, w: 18, k: 128, r: 3, stride: 1, up: 1, k_real: 128 },
];

/// Per (sample, channel, tile) (mean, M2) in f64 over the tiles of `tiling` of an NCHW tensor whose planes
/// hold `tiling.p_rows` x `tiling.q_cols` values (`PartTiling::linear` treats a plane as one row), in the
/// order of the kernels' partials.
pub(super) fn host_partials(y: &Tensor, tiling: &PartTiling) -> (Vec<f32>, Vec<f32>) {
    let (p, q) = (tiling.p_rows, tiling.q_cols);
    let planes = y.data.len() / (p * q).max(1);
    let (mut means, mut m2s) = (Vec::new(), Vec::new());
    for plane in 0..planes {
        let v = &y.data[plane * p * q..(plane + 1) * p * q];
        for i in 0..tiling.tiles {
            let (ty, tx) = (i / tiling.tiles_x, i % tiling.tiles_x);
            let pix: Vec<f64> = (ty * tiling.tile_h..((ty + 1) * tiling.tile_h).min(p))
                .flat_map(|yy| (tx * tiling.tile_w..((tx + 1) * tiling.tile_w).min(q)).map(move |xx| (yy, xx)))
                .map(|(yy, xx)| v[yy * q + xx] as f64)
                .collect();
            let mean = pix.iter().sum::<f64>() / pix.len() as f64;
            means.push(mean as f32);
            m2s.push(pix.iter().map(|x| (x - mean).powi(2)).sum::<f64>() as f32);
        }
    }
    (means, m2s)
}

/// Host (a, b) = (γ·rstd, β − mean·γ·rstd) per (n, c) of an NCHW tensor, f64 statistics, eps 1e-5.
pub(super) fn host_coef(y: &Tensor, gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    let [n, c, p, q] = [y.shape[0], y.shape[1], y.shape[2], y.shape[3]];
    let pq = p * q;
    let mut out = Vec::with_capacity(n * c * 2);
    for plane in 0..n * c {
        let v = &y.data[plane * pq..(plane + 1) * pq];
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / pq as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / pq as f64;
        let a = gamma[plane % c] as f64 / (var + 1e-5).sqrt();
        out.push(a as f32);
        out.push((beta[plane % c] as f64 - mean * a) as f32);
    }
    out
}

/// The plane (mean, biased variance) pairs the f64 sums `sums` ((Σx, Σx²) per plane, `NormSums::download`)
/// give against those of the NCHW `expected` (f64 statistics): the check of a conv's sums mode.
pub(super) fn sums_stats_check(op: &str, case: &str, sums: &[f64], expected: &Tensor) -> CheckResult {
    let pq = expected.shape[2] * expected.shape[3];
    let planes = expected.shape[0] * expected.shape[1];
    let (mut got, mut want) = (Vec::with_capacity(2 * planes), Vec::with_capacity(2 * planes));
    for plane in 0..planes {
        let v = &expected.data[plane * pq..(plane + 1) * pq];
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / pq as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / pq as f64;
        let g_mean = sums[2 * plane] / pq as f64;
        got.extend([g_mean as f32, (sums[2 * plane + 1] / pq as f64 - g_mean * g_mean) as f32]);
        want.extend([mean as f32, var as f32]);
    }
    compare(op, &format!("{case} plane (mean, var) from sums"), &got, &want, Tolerance::F32_LOOSE)
}

/// The coefficients (a, b) per plane a kernel computes from plane sums (`nhwc::in_coef_from_sums`: mean and
/// variance in f64, then rstd = 1/sqrt(max(var, 0) + eps), a = γ·rstd, b = β − mean·a in f32), for planes of
/// `count` values of `gamma.len()` channels.
pub(super) fn coef_from_sums(sums: &[f64], count: usize, gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    let c = gamma.len();
    let inv = 1.0 / count as f64;
    (0..sums.len() / 2)
        .flat_map(|plane| {
            let mean = sums[2 * plane] * inv;
            let var = (sums[2 * plane + 1] * inv - mean * mean) as f32;
            let rstd = 1.0 / (var.max(0.0) + gpu_kernels::launch::INSTANCE_NORM_EPS).sqrt();
            let a = gamma[plane % c] * rstd;
            [a, beta[plane % c] - mean as f32 * a]
        })
        .collect()
}

/// A random InstanceNorm affine for `k` channels (γ in [0.5, 1.5), β in [-0.5, 0.5), drawn in that order) and
/// the coefficients `nhwc_in_coef_tiled` makes of the partials `part` of the NHWC `[N, H, W, k]` output `out`
/// tiled as `tiling` (queued on the stream, NaN-poisoned first): (device coefficients, γ, β).
pub(super) fn tiled_coef(gpu: &Gpu, rng: &mut Rng64, out: &[usize; 4], tiling: &PartTiling, part: &DeviceTensor) -> Result<(DeviceTensor, Tensor, Tensor)> {
    let k = out[3];
    let gamma = random(rng, &[k], 0.5, 1.5);
    let beta = random(rng, &[k], -0.5, 0.5);
    let (dg, db) = (DeviceTensor::from_host(&gamma)?, DeviceTensor::from_host(&beta)?);
    let mut coef = poisoned(&[out[0] * k * 2], DType::F32, Layout::RowMajor)?;
    nhwc::nhwc_in_coef_tiled(gpu, out, tiling, part, &dg, &db, &mut coef)?;
    Ok((coef, gamma, beta))
}

/// The checks of op `op`'s InstanceNorm partials `part` (`(mean, M2)` pairs) against f64 sums over the
/// tiles of `tiling` of the NCHW `expected` output: "`{case} {means_label}`" and "`{case} tile M2`".
pub(super) fn partials_checks(op: &'static str, case: &str, means_label: &str, part: &DeviceTensor, expected: &Tensor, tiling: &PartTiling) -> Result<[CheckResult; 2]> {
    let (got_mean, got_m2): (Vec<f32>, Vec<f32>) = part.to_vec_f32()?.chunks(2).map(|pr| (pr[0], pr[1])).unzip();
    let (want_mean, want_m2) = host_partials(expected, tiling);
    Ok([
        compare(op, &format!("{case} {means_label}"), &got_mean, &want_mean, Tolerance::F32_LOOSE),
        compare(op, &format!("{case} tile M2"), &got_m2, &want_m2, Tolerance::F32_LOOSE),
    ])
}

/// Whether a case also runs with the input norm (the kernels take it with 16-byte pieces: C % 8 == 0).
fn norm_case(cs: &Case) -> bool {
    cs.c.is_multiple_of(8)
}

/// The NHWC output shape of a case.
fn cpu_out_shape(cs: &Case) -> [usize; 4] {
    let out = |v: usize| (v * cs.up + 2 * (cs.r / 2) - cs.r) / cs.stride + 1;
    [cs.n, out(cs.h), out(cs.w), cs.k]
}

/// The kernel variants a case runs through: the default one, plus its `conv2d_tc_alternative` if it has
/// one (the BK 64 `conv2d_tc_k32` for the K = 32 256-pixel tiles).
fn variants(cs: &Case) -> Vec<Option<Conv2dTcVariant>> {
    let (bm, _) = tc::conv2d_tc_tiling(&cpu_out_shape(cs));
    match conv2d_tc_variant(cs.k as u32, cs.c as u32, bm as u32) {
        Some(v) => std::iter::once(Some(v)).chain(conv2d_tc_alternative(v).map(Some)).collect(),
        None => vec![None],
    }
}

/// Random input-norm coefficients (a, b) per (sample, channel): a in [-1.5, 1.5] (negative slopes too),
/// b in [-0.5, 0.5], so that ReLU clips a good share of the inputs on both signs of x.
pub(super) fn random_in_coef(rng: &mut Rng64, n: usize, c: usize) -> Tensor {
    let a = random(rng, &[n * c], -1.5, 1.5);
    let b = random(rng, &[n * c], -0.5, 0.5);
    Tensor { shape: vec![n * c * 2], data: a.data.iter().zip(&b.data).flat_map(|(&a, &b)| [a, b]).collect() }
}

/// What the input norm makes of NCHW `x`: f16(relu(a·x + b)) per (sample, channel), the f32 fma and the
/// single f16 rounding the kernels (and `nhwc_in_apply`) do.
pub(super) fn apply_in_norm(x: &Tensor, coef: &[f32]) -> Tensor {
    let [n, c, h, w] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    let hw = h * w;
    let mut out = x.clone();
    for plane in 0..n * c {
        let (a, b) = (coef[plane * 2], coef[plane * 2 + 1]);
        for v in &mut out.data[plane * hw..(plane + 1) * hw] {
            *v = round_f16(v.mul_add(a, b).max(0.0));
        }
    }
    out
}

/// Runs `cs` through `variant` (None: the default choice), with the input norm when `norm` (the GPU gets
/// the raw input and the coefficients; the CPU reference convolves the normalised input).
fn run_case(gpu: &Gpu, rng: &mut Rng64, cs: &Case, variant: Option<Conv2dTcVariant>, norm: bool) -> Vec<CheckResult> {
    let (bm, _) = tc::conv2d_tc_tiling(&cpu_out_shape(cs));
    let name = variant.map_or("no kernel", |v| v.name);
    let tag = if norm { " +in_norm" } else { "" };
    let case = format!("{}x{}x{}x{} k{} {}x{} s{} up{} bm{bm} {name}{tag}", cs.n, cs.c, cs.h, cs.w, cs.k, cs.r, cs.r, cs.stride, cs.up);
    let mut run = || -> Result<Vec<CheckResult>> {
        let x = round_tensor_f16(&random(rng, &[cs.n, cs.c, cs.h, cs.w], -1.0, 1.0));
        let bound = 1.0 / ((cs.c * cs.r * cs.r) as f32).sqrt();
        let w = round_tensor_f16(&random(rng, &[cs.k, cs.c, cs.r, cs.r], -bound, bound));
        let pad = cs.r / 2;
        let in_coef = norm.then(|| random_in_coef(rng, cs.n, cs.c));
        let x_cpu = match &in_coef {
            Some(cf) => apply_in_norm(&x, &cf.data),
            None => x.clone(),
        };
        let expected = cpu::conv2d(&x_cpu, &w, None, cs.stride, Padding::Reflect(pad), cs.up)?;
        let [n, k, p, q] = [expected.shape[0], expected.shape[1], expected.shape[2], expected.shape[3]];

        let (xs, xd) = tc::nchw_to_nhwc(&x)?;
        let dx = DeviceTensor::from_f32_as_f16(&xs, &xd, Layout::Nhwc)?;
        let dw = TcWeight::upload(&w, 0, 0)?;
        let dcoef = in_coef.as_ref().map(DeviceTensor::from_host).transpose()?;

        // Epilogue 1: NHWC f16 + partials -> coefficients.
        let mut dy = poisoned(&[n, p, q, k], DType::F16, Layout::Nhwc)?;
        let mut part = poisoned(&[tc::conv2d_tc_part_len(&[n, p, q, k])], DType::F32, Layout::RowMajor)?;
        let opts = ConvOpts { variant, input_norm: dcoef.as_ref().map(NormCoef::Coef) };
        let conv = |out: ConvOut<'_>| match (variant, &dcoef) {
            (Some(v), None) => tc::conv2d_tc_with(gpu, &dx, &dw, cs.stride, pad, cs.up, v, out),
            (None, None) => tc::conv2d_tc(gpu, &dx, &dw, cs.stride, pad, cs.up, out),
            _ => tc::conv2d_tc_opts(gpu, &dx, &dw, cs.stride, pad, cs.up, out, opts),
        };
        conv(ConvOut::F16Stats { y: &mut dy, part: &mut part })?;
        let gamma = random(rng, &[k], 0.5, 1.5);
        let beta = random(rng, &[k], -0.5, 0.5);
        let (dg, db) = (DeviceTensor::from_host(&gamma)?, DeviceTensor::from_host(&beta)?);
        let mut coef = poisoned(&[n * k * 2], DType::F32, Layout::RowMajor)?;
        nhwc::nhwc_in_coef(gpu, &[n, p, q, k], &part, &dg, &db, &mut coef)?;
        // The same conv adding its statistics to f64 plane sums instead (the f16 output must not change).
        let mut sums = NormSums::new(1, n * k)?;
        sums.zero(gpu)?;
        let mut dys = poisoned(&[n, p, q, k], DType::F16, Layout::Nhwc)?;
        conv(ConvOut::F16Sums { y: &mut dys, sums: sums.slot(0)? })?;
        // Epilogue 2: NCHW f32 + bias of the first k_real channels.
        let bias = random(rng, &[cs.k_real], -0.5, 0.5);
        let dbias = DeviceTensor::from_host(&bias)?;
        let mut dy32 = poisoned(&[n, cs.k_real, p, q], DType::F32, Layout::Nchw)?;
        conv(ConvOut::NchwBias { y: &mut dy32, bias: &dbias })?;
        gpu.synchronize()?;

        let got16 = tc::nhwc_to_nchw([n, p, q, k], &dy.to_vec_f16_as_f32()?)?;
        let want_coef = host_coef(&expected, &gamma.data, &beta.data);
        let mut want32 = Vec::with_capacity(n * cs.k_real * p * q);
        for ni in 0..n {
            for ci in 0..cs.k_real {
                let plane = &expected.data[(ni * k + ci) * p * q..(ni * k + ci + 1) * p * q];
                want32.extend(plane.iter().map(|v| v + bias.data[ci]));
            }
        }
        let mut results = vec![
            compare(OP, &format!("{case} f16 out"), &got16.data, &expected.data, TOL_F16),
            compare(OP, &format!("{case} norm coef"), &coef.to_vec_f32()?, &want_coef, Tolerance::F32_LOOSE),
            compare(OP, &format!("{case} nchw f32 +b ({} ch)", cs.k_real), &dy32.to_vec_f32()?, &want32, TOL_F32),
            compare(OP, &format!("{case} f16 out, sums mode"), &dys.to_vec_f16_as_f32()?, &dy.to_vec_f16_as_f32()?, Tolerance { rel_l2: 0.0, max_rel: 0.0 }),
            sums_stats_check(OP, &case, &sums.download(gpu, 0)?, &expected),
        ];
        if got16.shape != expected.shape {
            results[0].passed = false;
            results[0].detail = format!("shape {:?}, expected {:?}", got16.shape, expected.shape);
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
        let x = h(&[1, 8, 8, 32], Layout::Nhwc)?;
        let x_c12 = h(&[1, 8, 8, 12], Layout::Nhwc)?;
        let x_c4 = h(&[1, 8, 8, 4], Layout::Nhwc)?;
        let x_nchw = h(&[1, 8, 8, 32], Layout::Nchw)?;
        let x_f32 = f(&[1, 8, 8, 32], Layout::Nhwc)?;
        let w = weight(32, 32, 3)?;
        let w_k48 = weight(48, 32, 3)?;
        let w_5x5 = weight(32, 32, 5)?;
        let w_c12 = weight(32, 12, 3)?;
        let w_c4_k64 = weight(64, 4, 3)?;
        let w_c16 = weight(32, 16, 3)?;
        let w_k64 = weight(64, 32, 3)?;
        let mut y = h(&[1, 8, 8, 32], Layout::Nhwc)?;
        let mut y48 = h(&[1, 8, 8, 48], Layout::Nhwc)?;
        let mut y64 = h(&[1, 8, 8, 64], Layout::Nhwc)?;
        let mut y_bad = h(&[1, 8, 9, 32], Layout::Nhwc)?;
        let mut y_f32 = f(&[1, 8, 8, 32], Layout::Nhwc)?;
        let mut part = f(&[tc::conv2d_tc_part_len(&[1, 8, 8, 32])], Layout::RowMajor)?;
        let mut part_small = f(&[10], Layout::RowMajor)?;
        let b3 = f(&[3], Layout::RowMajor)?;
        let b33 = f(&[33], Layout::RowMajor)?;
        let mut o3_bad = f(&[1, 4, 8, 8], Layout::Nchw)?;
        let mut o33 = f(&[1, 33, 8, 8], Layout::Nchw)?;
        let mut o3 = f(&[1, 3, 8, 8], Layout::Nchw)?;
        let w_c4_k32 = weight(32, 4, 9)?;
        let w_halo = tc::HaloWeight::upload(&Tensor { shape: vec![3, 32, 9, 9], data: vec![0.0; 3 * 32 * 81] })?;
        let coef64 = f(&[64], Layout::RowMajor)?;
        let coef_small = f(&[63], Layout::RowMajor)?;
        let coef_f16 = h(&[64], Layout::RowMajor)?;
        let w_sub = TcWeight::upload_subpixel(&Tensor { shape: vec![32, 32, 3, 3], data: vec![0.0; 32 * 32 * 9] })?;
        let mut y_up = h(&[1, 16, 16, 32], Layout::Nhwc)?;
        let mut o_up = f(&[1, 3, 16, 16], Layout::Nchw)?;
        let norm = |coef| ConvOpts { variant: None, input_norm: Some(NormCoef::Coef(coef)) };
        let attempts: Vec<(&str, Result<()>)> = vec![
            ("C = 12", tc::conv2d_tc(gpu, &x_c12, &w_c12, 1, 1, 1, ConvOut::F16Stats { y: &mut y, part: &mut part })),
            ("C = 4 with K = 64", tc::conv2d_tc(gpu, &x_c4, &w_c4_k64, 1, 1, 1, ConvOut::F16Stats { y: &mut y64, part: &mut part })),
            ("K = 48", tc::conv2d_tc(gpu, &x, &w_k48, 1, 1, 1, ConvOut::F16Stats { y: &mut y48, part: &mut part })),
            ("5x5 filter", tc::conv2d_tc(gpu, &x, &w_5x5, 1, 2, 1, ConvOut::F16Stats { y: &mut y, part: &mut part })),
            ("wrong padding", tc::conv2d_tc(gpu, &x, &w, 1, 2, 1, ConvOut::F16Stats { y: &mut y, part: &mut part })),
            ("stride 3", tc::conv2d_tc(gpu, &x, &w, 3, 1, 1, ConvOut::F16Stats { y: &mut y, part: &mut part })),
            ("upsample 3", tc::conv2d_tc(gpu, &x, &w, 1, 1, 3, ConvOut::F16Stats { y: &mut y, part: &mut part })),
            ("output shape", tc::conv2d_tc(gpu, &x, &w, 1, 1, 1, ConvOut::F16Stats { y: &mut y_bad, part: &mut part })),
            ("f32 NHWC output", tc::conv2d_tc(gpu, &x, &w, 1, 1, 1, ConvOut::F16Stats { y: &mut y_f32, part: &mut part })),
            ("partials too small", tc::conv2d_tc(gpu, &x, &w, 1, 1, 1, ConvOut::F16Stats { y: &mut y, part: &mut part_small })),
            ("NCHW input", tc::conv2d_tc(gpu, &x_nchw, &w, 1, 1, 1, ConvOut::F16Stats { y: &mut y, part: &mut part })),
            ("f32 input", tc::conv2d_tc(gpu, &x_f32, &w, 1, 1, 1, ConvOut::F16Stats { y: &mut y, part: &mut part })),
            ("channel mismatch", tc::conv2d_tc(gpu, &x, &w_c16, 1, 1, 1, ConvOut::F16Stats { y: &mut y, part: &mut part })),
            ("NCHW output channels ≠ bias", tc::conv2d_tc(gpu, &x, &w, 1, 1, 1, ConvOut::NchwBias { y: &mut o3_bad, bias: &b3 })),
            ("bias longer than K", tc::conv2d_tc(gpu, &x, &w, 1, 1, 1, ConvOut::NchwBias { y: &mut o33, bias: &b33 })),
            ("256-pixel kernel for a 128-pixel tiling", tc::conv2d_tc_with(gpu, &x, &w, 1, 1, 1, CONV2D_TC_K32_BK32, ConvOut::F16Stats { y: &mut y, part: &mut part })),
            ("K = 32 kernel for K = 64", tc::conv2d_tc_with(gpu, &x, &w_k64, 1, 1, 1, CONV2D_TC_K32_BK64, ConvOut::F16Stats { y: &mut y64, part: &mut part })),
            ("input norm on 4 channels", tc::conv2d_tc_opts(gpu, &x_c4, &w_c4_k32, 1, 1, 1, ConvOut::F16Stats { y: &mut y, part: &mut part }, norm(&coef64))),
            ("input norm coef too small", tc::conv2d_tc_opts(gpu, &x, &w, 1, 1, 1, ConvOut::F16Stats { y: &mut y, part: &mut part }, norm(&coef_small))),
            ("input norm coef f16", tc::conv2d_tc_opts(gpu, &x, &w, 1, 1, 1, ConvOut::F16Stats { y: &mut y, part: &mut part }, norm(&coef_f16))),
            ("sub-pixel weights without upsampling", tc::conv2d_tc(gpu, &x, &w_sub, 1, 1, 1, ConvOut::F16Stats { y: &mut y, part: &mut part })),
            ("sub-pixel weights, NCHW output", tc::conv2d_tc(gpu, &x, &w_sub, 1, 1, 2, ConvOut::NchwBias { y: &mut o_up, bias: &b3 })),
            ("sub-pixel weights, partials too small", tc::conv2d_tc(gpu, &x, &w_sub, 1, 1, 2, ConvOut::F16Stats { y: &mut y_up, part: &mut part })),
            ("halo9 input norm coef too small", tc::conv2d_tc_halo9_in(gpu, &x, Some(NormCoef::Coef(&coef_small)), &w_halo, &b3, &mut o3)),
        ];
        let accepted: Vec<&str> = attempts.iter().filter(|(_, r)| r.is_ok()).map(|(n, _)| *n).collect();
        Ok(CheckResult {
            op: OP.to_string(),
            case: "refuses bad shapes".to_string(),
            rel_l2: 0.0,
            max_rel: 0.0,
            tol: TOL_F32,
            passed: accepted.is_empty(),
            detail: if accepted.is_empty() { String::new() } else { format!("accepted: {}", accepted.join(", ")) },
        })
    })
}

/// `conv2d_tc_halo9`: the last layer (32 -> k_real, 9x9) with the halo-staged kernel.
/// With `norm`, the input norm + ReLU is applied while staging (CPU: on the input before the conv).
fn halo_case(gpu: &Gpu, rng: &mut Rng64, n: usize, h: usize, w: usize, k: usize, norm: bool) -> CheckResult {
    let case = format!("halo9 {n}x32x{h}x{w} -> {k}{}", if norm { " +in_norm" } else { "" });
    catch(OP, &case.clone(), || {
        let x = round_tensor_f16(&random(rng, &[n, 32, h, w], -1.0, 1.0));
        let wt = round_tensor_f16(&random(rng, &[k, 32, 9, 9], -0.05, 0.05));
        let bias = random(rng, &[k], -0.5, 0.5);
        let in_coef = norm.then(|| random_in_coef(rng, n, 32));
        let x_cpu = match &in_coef {
            Some(cf) => apply_in_norm(&x, &cf.data),
            None => x.clone(),
        };
        let expected = cpu::conv2d(&x_cpu, &wt, Some(&bias), 1, Padding::Reflect(4), 1)?;
        let (xs, xd) = tc::nchw_to_nhwc(&x)?;
        let dx = DeviceTensor::from_f32_as_f16(&xs, &xd, Layout::Nhwc)?;
        let dw = tc::HaloWeight::upload(&wt)?;
        let db = DeviceTensor::from_host(&bias)?;
        let mut dy = poisoned(&expected.shape, DType::F32, Layout::Nchw)?;
        match in_coef.as_ref().map(DeviceTensor::from_host).transpose()? {
            Some(dc) => tc::conv2d_tc_halo9_in(gpu, &dx, Some(NormCoef::Coef(&dc)), &dw, &db, &mut dy)?,
            None => tc::conv2d_tc_halo9(gpu, &dx, &dw, &db, &mut dy)?,
        }
        gpu.synchronize()?;
        Ok(compare(OP, &case, &dy.to_vec_f32()?, &expected.data, TOL_F32))
    })
}

/// `conv2d_tc_c4_halo9`: conv1 (9x9, 4 packed channels -> 32) with the halo-staged kernel, NHWC f16 output
/// and its 2-D-tiled InstanceNorm partials turned into coefficients by `nhwc_in_coef_tiled`. With a
/// `c`-channel weight (3 = the network's RGB), input channels past `c` hold garbage the kernel must ignore
/// (their packed weights are zero); the CPU reference sees only the first `c`.
fn c4_halo_case(gpu: &Gpu, rng: &mut Rng64, n: usize, h: usize, w: usize, c: usize) -> Vec<CheckResult> {
    let case = format!("c4 halo9 {n}x{c}(4)x{h}x{w} -> 32 conv2d_tc_c4_halo9_k32");
    let mut run = || -> Result<Vec<CheckResult>> {
        let x4 = round_tensor_f16(&random(rng, &[n, 4, h, w], -1.0, 1.0));
        let mut x = Tensor { shape: vec![n, c, h, w], data: Vec::with_capacity(n * c * h * w) };
        for ni in 0..n {
            x.data.extend_from_slice(&x4.data[ni * 4 * h * w..(ni * 4 + c) * h * w]);
        }
        let bound = 1.0 / ((c * 81) as f32).sqrt();
        let wt = round_tensor_f16(&random(rng, &[32, c, 9, 9], -bound, bound));
        let expected = cpu::conv2d(&x, &wt, None, 1, Padding::Reflect(4), 1)?;
        let (xs, xd) = tc::nchw_to_nhwc(&x4)?;
        let dx = DeviceTensor::from_f32_as_f16(&xs, &xd, Layout::Nhwc)?;
        let dw = tc::C4HaloWeight::upload(&wt)?;
        let out = [n, h, w, 32];
        let want_tiling = tc::conv2d_tc_c4_halo_tiling(&out);
        let mut dy = poisoned(&out, DType::F16, Layout::Nhwc)?;
        let mut part = poisoned(&[want_tiling.part_len(n, 32)], DType::F32, Layout::RowMajor)?;
        let tiling = tc::conv2d_tc_c4_halo9(gpu, &dx, &dw, &mut dy, &mut part)?;
        let (coef, gamma, beta) = tiled_coef(gpu, rng, &out, &tiling, &part)?;
        gpu.synchronize()?;
        let got16 = tc::nhwc_to_nchw(out, &dy.to_vec_f16_as_f32()?)?;
        let want_coef = host_coef(&expected, &gamma.data, &beta.data);
        let mut results = vec![
            compare(OP, &format!("{case} f16 out"), &got16.data, &expected.data, TOL_F16),
            compare(OP, &format!("{case} norm coef ({} tiles)", tiling.tiles), &coef.to_vec_f32()?, &want_coef, Tolerance::F32_LOOSE),
        ];
        if tiling != want_tiling || got16.shape != expected.shape {
            results[0].passed = false;
            results[0].detail = format!("tiling {tiling:?} (expected {want_tiling:?}), shape {:?} (expected {:?})", got16.shape, expected.shape);
        }
        Ok(results)
    };
    run().unwrap_or_else(|e| vec![errored(OP, &case, e)])
}

fn c4_halo_refusals(gpu: &Gpu) -> CheckResult {
    catch(OP, "c4 halo9 refuses bad shapes", || {
        let h = |s: &[usize], l| DeviceTensor::empty(s, DType::F16, l);
        let f = |n: usize| DeviceTensor::empty(&[n], DType::F32, Layout::RowMajor);
        let w = tc::C4HaloWeight::upload(&Tensor { shape: vec![32, 3, 9, 9], data: vec![0.0; 32 * 3 * 81] })?;
        let w_bad = tc::C4HaloWeight { data: h(&[100], Layout::RowMajor)? };
        let x = h(&[1, 8, 8, 4], Layout::Nhwc)?;
        let x_c8 = h(&[1, 8, 8, 8], Layout::Nhwc)?;
        let x_small = h(&[1, 4, 8, 4], Layout::Nhwc)?;
        let x_nchw = h(&[1, 8, 8, 4], Layout::Nchw)?;
        let mut y = h(&[1, 8, 8, 32], Layout::Nhwc)?;
        let mut y_small = h(&[1, 4, 8, 32], Layout::Nhwc)?;
        let mut y_bad = h(&[1, 8, 8, 16], Layout::Nhwc)?;
        let mut part = f(tc::conv2d_tc_c4_halo_tiling(&[1, 8, 8, 32]).part_len(1, 32))?;
        let mut part_small = f(10)?;
        let attempts: Vec<(&str, Result<tc::PartTiling>)> = vec![
            ("8 input channels", tc::conv2d_tc_c4_halo9(gpu, &x_c8, &w, &mut y, &mut part)),
            ("H = 4", tc::conv2d_tc_c4_halo9(gpu, &x_small, &w, &mut y_small, &mut part)),
            ("NCHW input", tc::conv2d_tc_c4_halo9(gpu, &x_nchw, &w, &mut y, &mut part)),
            ("16 output channels", tc::conv2d_tc_c4_halo9(gpu, &x, &w, &mut y_bad, &mut part)),
            ("partials too small", tc::conv2d_tc_c4_halo9(gpu, &x, &w, &mut y, &mut part_small)),
            ("unpacked weight", tc::conv2d_tc_c4_halo9(gpu, &x, &w_bad, &mut y, &mut part)),
        ];
        let accepted: Vec<&str> = attempts.iter().filter(|(_, r)| r.is_ok()).map(|(n, _)| *n).collect();
        Ok(CheckResult {
            op: OP.to_string(),
            case: "c4 halo9 refuses bad shapes".to_string(),
            rel_l2: 0.0,
            max_rel: 0.0,
            tol: TOL_F32,
            passed: accepted.is_empty(),
            detail: if accepted.is_empty() { String::new() } else { format!("accepted: {}", accepted.join(", ")) },
        })
    })
}

fn conv2d_tc_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out: Vec<CheckResult> = CASES.iter().flat_map(|cs| variants(cs).into_iter().flat_map(|v| run_case(gpu, rng, cs, v, false)).collect::<Vec<_>>()).collect();
    // The input norm (+ReLU) on every case with 16-byte pieces (every variant but the 4-channel ones, with
    // stride 2, upsampling, partial tiles and zero-filled GEMM-K tails among them).
    for cs in CASES.iter().filter(|cs| norm_case(cs)) {
        for v in variants(cs) {
            out.extend(run_case(gpu, rng, cs, v, true));
        }
    }
    // Partial tiles in both directions, batch 2, exact tiles, the smallest input, 8 real channels; with
    // and without the input norm.
    for (n, h, w, k) in [(1, 20, 37, 3), (2, 17, 13, 3), (1, 16, 64, 3), (1, 5, 5, 3), (1, 9, 33, 8)] {
        out.push(halo_case(gpu, rng, n, h, w, k, false));
        out.push(halo_case(gpu, rng, n, h, w, k, true));
    }
    // conv1's halo kernel: partial tiles in both directions (37x53), the smallest input the reflection
    // allows (5x5), 9x9, an exact tile, batch 2 with several tiles, RGB (3-channel weight, garbage in the
    // 4th input channel) and 4 real channels.
    for (n, h, w, c) in [(1, 37, 53, 3), (1, 5, 5, 3), (1, 9, 9, 4), (1, 16, 32, 3), (2, 20, 33, 4), (2, 130, 70, 3)] {
        out.extend(c4_halo_case(gpu, rng, n, h, w, c));
    }
    out.push(c4_halo_refusals(gpu));
    // Sub-pixel upsample-2 convs (deconv1 / deconv2 shapes): odd planes (partial tiles in every parity),
    // batch 2, the smallest input, and planes large enough for the 128-pixel (K = 64) and 256-pixel
    // (K = 32) tiles; with and without the input norm.
    for (n, c, h, w, k, norm) in [(1, 128, 9, 13, 64, false), (2, 64, 17, 11, 32, true), (1, 64, 2, 3, 32, false), (1, 128, 70, 66, 64, true), (1, 64, 96, 100, 32, false)] {
        out.extend(subpixel_case(gpu, rng, n, c, h, w, k, norm));
    }
    // The stem and head through plane sums, as the fast TransformerNet runs them: odd sizes with batch 2,
    // and one large enough for the 128-pixel tiles.
    for (n, h, w) in [(2, 37, 29), (1, 130, 70)] {
        out.extend(sums_chain(gpu, rng, n, h, w));
    }
    out.push(refusals(gpu));
    out
}

/// The fast TransformerNet's stem and head with every norm through f64 plane sums: conv1's halo kernel
/// (RGB, 9x9 -> 32) adds its statistics to sums (in1) instead of partials; a conv2-like `conv2d_tc` (3x3
/// stride 2, 32 -> 64) reads that raw output normalised with coefficients it computes from the sums and adds
/// its own output's statistics to sums (in2); a conv3-like one (64 -> 128, stride 2) does the same with
/// those (in3); `conv2d_tc_halo9_taps` and `conv2d_tc_halo9_k8` (9x9 -> 3, the head) read conv1's raw output
/// normalised from in1's sums. Each sums-mode output must match the CPU reference computed from the GPU's
/// own f16 input, normalised with the coefficients the host derives from the downloaded sums the way the
/// kernels do (`coef_from_sums`); each sums slot's (mean, var) must match the CPU output's statistics; and
/// conv1's f16 output must be bit-identical to its partials run's.
fn sums_chain(gpu: &Gpu, rng: &mut Rng64, n: usize, h: usize, w: usize) -> Vec<CheckResult> {
    let case = format!("sums chain {n}x3x{h}x{w}");
    let mut run = || -> Result<Vec<CheckResult>> {
        let x4 = round_tensor_f16(&random(rng, &[n, 4, h, w], -1.0, 1.0));
        let mut x = Tensor { shape: vec![n, 3, h, w], data: Vec::with_capacity(n * 3 * h * w) };
        for ni in 0..n {
            x.data.extend_from_slice(&x4.data[ni * 4 * h * w..(ni * 4 + 3) * h * w]);
        }
        let weight = |rng: &mut Rng64, k: usize, c: usize, r: usize| {
            let bound = 1.0 / ((c * r * r) as f32).sqrt();
            round_tensor_f16(&random(rng, &[k, c, r, r], -bound, bound))
        };
        let (w1, w2, w3, wh) = (weight(rng, 32, 3, 9), weight(rng, 64, 32, 3), weight(rng, 128, 64, 3), weight(rng, 3, 32, 9));
        let affine = |rng: &mut Rng64, k: usize| -> Result<(Tensor, Tensor, DeviceTensor, DeviceTensor)> {
            let (g, b) = (random(rng, &[k], 0.5, 1.5), random(rng, &[k], -0.5, 0.5));
            let (dg, db) = (DeviceTensor::from_host(&g)?, DeviceTensor::from_host(&b)?);
            Ok((g, b, dg, db))
        };
        let ((g1, b1, dg1, db1), (g2, b2, dg2, db2)) = (affine(rng, 32)?, affine(rng, 64)?);
        let bias = random(rng, &[3], -0.5, 0.5);
        let dbias = DeviceTensor::from_host(&bias)?;

        let (xs, xd) = tc::nchw_to_nhwc(&x4)?;
        let dx = DeviceTensor::from_f32_as_f16(&xs, &xd, Layout::Nhwc)?;
        let mut sums = NormSums::new(3, n * 128)?;
        sums.zero(gpu)?;
        let (s1, s2, s3) = (sums.slot(0)?, sums.slot(1)?, sums.slot(2)?);
        let (p2, q2) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        let (p3, q3) = ((p2 - 1) / 2 + 1, (q2 - 1) / 2 + 1);
        let mut y1 = poisoned(&[n, h, w, 32], DType::F16, Layout::Nhwc)?;
        let mut y1p = poisoned(&[n, h, w, 32], DType::F16, Layout::Nhwc)?;
        let mut y2 = poisoned(&[n, p2, q2, 64], DType::F16, Layout::Nhwc)?;
        let mut y3 = poisoned(&[n, p3, q3, 128], DType::F16, Layout::Nhwc)?;
        let mut out_taps = poisoned(&[n, 3, h, w], DType::F32, Layout::Nchw)?;
        let mut out_k8 = poisoned(&[n, 3, h, w], DType::F32, Layout::Nchw)?;
        let dw1 = tc::C4HaloWeight::upload(&w1)?;
        let (dw2, dw3) = (TcWeight::upload(&w2, 0, 0)?, TcWeight::upload(&w3, 0, 0)?);
        let (dwt, dwk8) = (crate::ops::conv2d_tc_taps::TapsWeight::upload(&wh)?, tc::HaloWeight::upload(&wh)?);
        let in1 = NormCoef::Sums { sums: s1, gamma: &dg1, beta: &db1 };
        let in2 = NormCoef::Sums { sums: s2, gamma: &dg2, beta: &db2 };
        let norm = |nc| ConvOpts { variant: None, input_norm: Some(nc) };
        tc::conv2d_tc_c4_halo9(gpu, &dx, &dw1, &mut y1, NormStats::Sums(s1))?;
        let mut part = poisoned(&[tc::conv2d_tc_c4_halo_tiling(&[n, h, w, 32]).part_len(n, 32)], DType::F32, Layout::RowMajor)?;
        tc::conv2d_tc_c4_halo9(gpu, &dx, &dw1, &mut y1p, &mut part)?;
        tc::conv2d_tc_opts(gpu, &y1, &dw2, 2, 1, 1, ConvOut::F16Sums { y: &mut y2, sums: s2 }, norm(in1))?;
        tc::conv2d_tc_opts(gpu, &y2, &dw3, 2, 1, 1, ConvOut::F16Sums { y: &mut y3, sums: s3 }, norm(in2))?;
        crate::ops::conv2d_tc_taps::conv2d_tc_halo9_taps(gpu, &y1, &dwt, Some(in1), &dbias, &mut out_taps)?;
        tc::conv2d_tc_halo9_in(gpu, &y1, Some(in1), &dwk8, &dbias, &mut out_k8)?;
        gpu.synchronize()?;

        // Each stage's CPU reference starts from the GPU's own f16 input (what the kernel read).
        let nchw = |t: &DeviceTensor| -> Result<Tensor> { tc::nhwc_to_nchw(<[usize; 4]>::try_from(&t.shape[..]).expect("4-D"), &t.to_vec_f16_as_f32()?) };
        let (h1, h2) = (nchw(&y1)?, nchw(&y2)?);
        let (sum1, sum2, sum3) = (sums.download(gpu, 0)?, sums.download(gpu, 1)?, sums.download(gpu, 2)?);
        let (sum1, sum2, sum3) = (&sum1[..2 * n * 32], &sum2[..2 * n * 64], &sum3[..2 * n * 128]);
        let x2 = apply_in_norm(&h1, &coef_from_sums(sum1, h * w, &g1.data, &b1.data));
        let x3 = apply_in_norm(&h2, &coef_from_sums(sum2, p2 * q2, &g2.data, &b2.data));
        let exp1 = cpu::conv2d(&x, &w1, None, 1, Padding::Reflect(4), 1)?;
        let exp2 = cpu::conv2d(&x2, &w2, None, 2, Padding::Reflect(1), 1)?;
        let exp3 = cpu::conv2d(&x3, &w3, None, 2, Padding::Reflect(1), 1)?;
        let exp_head = cpu::conv2d(&x2, &wh, Some(&bias), 1, Padding::Reflect(4), 1)?;
        Ok(vec![
            compare(OP, &format!("{case} conv1 f16 out, sums mode"), &h1.data, &exp1.data, TOL_F16),
            compare(OP, &format!("{case} conv1 f16 out = partials run's"), &y1.to_vec_f16_as_f32()?, &y1p.to_vec_f16_as_f32()?, Tolerance { rel_l2: 0.0, max_rel: 0.0 }),
            sums_stats_check(OP, &format!("{case} in1"), sum1, &exp1),
            compare(OP, &format!("{case} conv2 from in1 sums"), &h2.data, &exp2.data, TOL_F16),
            sums_stats_check(OP, &format!("{case} in2"), sum2, &exp2),
            compare(OP, &format!("{case} conv3 from in2 sums"), &nchw(&y3)?.data, &exp3.data, TOL_F16),
            sums_stats_check(OP, &format!("{case} in3"), sum3, &exp3),
            compare(OP, &format!("{case} halo9_taps from in1 sums"), &out_taps.to_vec_f32()?, &exp_head.data, TOL_F32),
            compare(OP, &format!("{case} halo9_k8 from in1 sums"), &out_k8.to_vec_f32()?, &exp_head.data, TOL_F32),
        ])
    };
    run().unwrap_or_else(|e| vec![errored(OP, &case, e)])
}

/// A nearest-2x-upsample + reflection-pad-1 + 3x3 conv through the sub-pixel weights
/// ([`TcWeight::upload_subpixel`]) against the CPU's upsample-2 conv of the same f16 input and weights.
/// The kernel's weights are the 3x3 taps summed per parity then rounded to f16 once (a second rounding of
/// up to 2^-12 relative per summed weight), hence the looser tolerance. Partials through
/// `nhwc_in_coef_tiled` with [`tc::conv2d_tc_subpixel_tiling`] against the CPU output's statistics.
#[allow(clippy::too_many_arguments)]
fn subpixel_case(gpu: &Gpu, rng: &mut Rng64, n: usize, c: usize, h: usize, w: usize, k: usize, norm: bool) -> Vec<CheckResult> {
    const TOL_SUB: Tolerance = Tolerance { rel_l2: 2e-3, max_rel: 4e-3 };
    let out = [n, 2 * h, 2 * w, k];
    let (bm, _) = tc::conv2d_tc_tiling(&out);
    let kernel = conv2d_tc_variant(k as u32, c as u32, bm as u32).map_or("no kernel", |v| v.name);
    let tag = if norm { " +in_norm" } else { "" };
    let case = format!("subpixel {n}x{c}x{h}x{w} up2 3x3 -> {k} bm{bm} {kernel}{tag}");
    let mut run = || -> Result<Vec<CheckResult>> {
        let x = round_tensor_f16(&random(rng, &[n, c, h, w], -1.0, 1.0));
        let bound = 1.0 / ((c * 9) as f32).sqrt();
        let wt = round_tensor_f16(&random(rng, &[k, c, 3, 3], -bound, bound));
        let in_coef = norm.then(|| random_in_coef(rng, n, c));
        let x_cpu = match &in_coef {
            Some(cf) => apply_in_norm(&x, &cf.data),
            None => x.clone(),
        };
        let expected = cpu::conv2d(&x_cpu, &wt, None, 1, Padding::Reflect(1), 2)?;
        let (xs, xd) = tc::nchw_to_nhwc(&x)?;
        let dx = DeviceTensor::from_f32_as_f16(&xs, &xd, Layout::Nhwc)?;
        let dw = TcWeight::upload_subpixel(&wt)?;
        let dcoef = in_coef.as_ref().map(DeviceTensor::from_host).transpose()?;
        let tiling = tc::conv2d_tc_subpixel_tiling(&out);
        let mut dy = poisoned(&out, DType::F16, Layout::Nhwc)?;
        let mut part = poisoned(&[tiling.part_len(n, k)], DType::F32, Layout::RowMajor)?;
        let opts = ConvOpts { variant: None, input_norm: dcoef.as_ref().map(NormCoef::Coef) };
        tc::conv2d_tc_opts(gpu, &dx, &dw, 1, 1, 2, ConvOut::F16Stats { y: &mut dy, part: &mut part }, opts)?;
        let (coef, gamma, beta) = tiled_coef(gpu, rng, &out, &tiling, &part)?;
        gpu.synchronize()?;
        let got16 = tc::nhwc_to_nchw(out, &dy.to_vec_f16_as_f32()?)?;
        let want_coef = host_coef(&expected, &gamma.data, &beta.data);
        let mut results = vec![
            compare(OP, &format!("{case} f16 out"), &got16.data, &expected.data, TOL_SUB),
            compare(OP, &format!("{case} norm coef ({} tiles)", tiling.tiles), &coef.to_vec_f32()?, &want_coef, Tolerance::F32_LOOSE),
        ];
        if got16.shape != expected.shape {
            results[0].passed = false;
            results[0].detail = format!("shape {:?}, expected {:?}", got16.shape, expected.shape);
        }
        Ok(results)
    };
    run().unwrap_or_else(|e| vec![errored(OP, &case, e)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cases reach every compiled `conv2d_tc` variant (each name the tile choice can give), the
    /// BK = 64 zero half step, stride 2 and upsampling on the large tiles, and partial last tiles.
    #[test]
    fn cases_cover_every_variant() {
        let mut seen: Vec<&str> = CASES.iter().flat_map(variants).flatten().map(|v| v.name).collect();
        seen.sort_unstable();
        seen.dedup();
        let all = [
            "conv2d_tc_k8", "conv2d_tc_k32", "conv2d_tc_k32_bk32", "conv2d_tc_k32_m128", "conv2d_tc_k64", "conv2d_tc_k64_m64", "conv2d_tc_k128",
            "conv2d_tc_k128_m64", "conv2d_tc_k128_m32", "conv2d_tc_c4_k32", "conv2d_tc_c4_k32_m128",
        ];
        for name in all {
            assert!(seen.contains(&name), "no case runs {name} (seen {seen:?})");
        }
        // The input norm reaches every 16-byte-piece variant, with upsampling and stride 2 among its cases.
        let mut normed: Vec<&str> = CASES.iter().filter(|cs| norm_case(cs)).flat_map(variants).flatten().map(|v| v.name).collect();
        normed.sort_unstable();
        normed.dedup();
        for name in all.iter().filter(|n| !n.starts_with("conv2d_tc_c4")) {
            assert!(normed.contains(name), "no input-norm case runs {name}");
        }
        assert!(CASES.iter().any(|cs| norm_case(cs) && cs.up == 2) && CASES.iter().any(|cs| norm_case(cs) && cs.stride == 2));
        let tiled = |cs: &Case| {
            let out = cpu_out_shape(cs);
            let (bm, _) = tc::conv2d_tc_tiling(&out);
            (bm, !(out[1] * out[2]).is_multiple_of(bm))
        };
        // 256-pixel tiles with a partial last tile, for both K = 32 gathers.
        assert!(CASES.iter().any(|cs| cs.c == 4 && tiled(cs) == (256, true)));
        assert!(CASES.iter().any(|cs| cs.c % 8 == 0 && cs.k == 32 && cs.up == 2 && tiled(cs) == (256, true)));
        // BK = 64 variants with kw % 64 == 32 (a zero half step), at 128- and 32-pixel tiles.
        let half_step = |cs: &Case| (cs.r * cs.r * cs.c).div_ceil(32) % 2 == 1 && cs.c.is_multiple_of(8) && cs.k != 8;
        assert!(CASES.iter().any(|cs| half_step(cs) && cs.stride == 2 && tiled(cs).0 == 128));
        assert!(CASES.iter().any(|cs| half_step(cs) && cs.k == 128));
        // Stride 2 on K = 128's 128-pixel tiles, upsampling on K = 64's.
        assert!(CASES.iter().any(|cs| cs.k == 128 && cs.stride == 2 && tiled(cs).0 == 128));
        assert!(CASES.iter().any(|cs| cs.k == 64 && cs.up == 2 && tiled(cs).0 == 128));
    }
}
