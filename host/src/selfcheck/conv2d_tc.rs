//! Self-checks of `conv2d_tc` (bf16 tensor-core implicit GEMM) against the CPU reference.
//!
//! Inputs and weights are rounded to bf16 on the host and the CPU reference `models::ops::conv2d` runs on
//! the rounded values (NCHW f32), so products are exact on both sides and the only difference is the
//! fp32 summation order. The GPU output (NHWC f32) is poisoned with NaN before the launch and converted
//! to NCHW for the comparison.
use models::ops::{self as cpu, Padding};
use models::Tensor;

use super::{catch, compare, poisoned, random, Check, CheckResult, Rng64, Tolerance};
use crate::error::Result;
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::ops::conv2d_tc::{self as tc, round_bf16};

const OP: &str = "conv2d_tc";
/// fp32 accumulation of exact bf16 products; only the summation order differs from the CPU.
const TOL: Tolerance = Tolerance { rel_l2: 1e-4, max_rel: 1e-3 };

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
    bias: bool,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // conv2-like: 3x3 stride 2, 32 -> 64, odd sizes (M tail).
    Case { n: 1, c: 32, h: 33, w: 29, k: 64, r: 3, stride: 2, up: 1, bias: true },
    // conv3-like: 64 -> 128 stride 2.
    Case { n: 1, c: 64, h: 20, w: 17, k: 128, r: 3, stride: 2, up: 1, bias: false },
    // residual-like: 128 -> 128 stride 1, batch 2 (M crosses images inside a block).
    Case { n: 2, c: 128, h: 19, w: 23, k: 128, r: 3, stride: 1, up: 1, bias: true },
    Case { n: 2, c: 128, h: 19, w: 23, k: 128, r: 3, stride: 1, up: 1, bias: false },
    // up-convs: nearest x2 folded into the gather.
    Case { n: 1, c: 128, h: 9, w: 11, k: 64, r: 3, stride: 1, up: 2, bias: true },
    Case { n: 1, c: 64, h: 16, w: 16, k: 32, r: 3, stride: 1, up: 2, bias: false },
    Case { n: 1, c: 64, h: 16, w: 16, k: 32, r: 3, stride: 1, up: 2, bias: true },
    // C = 16: R*S*C = 144 is not a multiple of the 32-wide K step (zero-filled tail).
    Case { n: 1, c: 16, h: 15, w: 13, k: 32, r: 3, stride: 1, up: 1, bias: true },
    // 9x9 (conv_out-like channels in, 32 out), reflection by 4.
    Case { n: 1, c: 32, h: 20, w: 18, k: 32, r: 9, stride: 1, up: 1, bias: true },
    // Tiny input: reflection touches both borders of every pixel.
    Case { n: 1, c: 32, h: 2, w: 3, k: 64, r: 3, stride: 1, up: 1, bias: true },
];


fn run_case(gpu: &Gpu, rng: &mut Rng64, cs: &Case) -> CheckResult {
    let case = format!(
        "{}x{}x{}x{} k{} {}x{} s{} up{}{}",
        cs.n, cs.c, cs.h, cs.w, cs.k, cs.r, cs.r, cs.stride, cs.up, if cs.bias { " +b" } else { "" }
    );
    catch(OP, &case.clone(), || {
        let round = |t: Tensor| Tensor { shape: t.shape, data: t.data.into_iter().map(round_bf16).collect() };
        let x = round(random(rng, &[cs.n, cs.c, cs.h, cs.w], -1.0, 1.0));
        let bound = 1.0 / ((cs.c * cs.r * cs.r) as f32).sqrt();
        let w = round(random(rng, &[cs.k, cs.c, cs.r, cs.r], -bound, bound));
        let b = cs.bias.then(|| random(rng, &[cs.k], -0.5, 0.5));
        let pad = cs.r / 2;
        let expected = cpu::conv2d(&x, &w, b.as_ref(), cs.stride, Padding::Reflect(pad), cs.up)?;

        let dx = tc::upload_nhwc_bf16(&x)?;
        let dw = tc::upload_weight(&w)?;
        let db = b.as_ref().map(DeviceTensor::from_host).transpose()?;
        let [n, k, p, q] = [expected.shape[0], expected.shape[1], expected.shape[2], expected.shape[3]];
        let mut dy = poisoned(&[n, p, q, k], DType::F32, Layout::Nhwc)?;
        tc::conv2d_tc(gpu, &dx, &dw, db.as_ref(), cs.stride, pad, cs.up, &mut dy)?;
        gpu.synchronize()?;
        let got = tc::nhwc_to_nchw([n, p, q, k], &dy.to_vec_f32()?)?;
        let mut r = compare(OP, &case, &got.data, &expected.data, TOL);
        if got.shape != expected.shape {
            r.passed = false;
            r.detail = format!("shape {:?}, expected {:?}", got.shape, expected.shape);
        }
        Ok(r)
    })
}

fn refusals(gpu: &Gpu) -> CheckResult {
    catch(OP, "refuses bad shapes", || {
        let bf = |s: &[usize], l| DeviceTensor::empty(s, DType::BF16, l);
        let f = |s: &[usize]| DeviceTensor::empty(s, DType::F32, Layout::Nhwc);
        let x = bf(&[1, 8, 8, 32], Layout::Nhwc)?;
        let x_c24 = bf(&[1, 8, 8, 24], Layout::Nhwc)?;
        let x_nchw = bf(&[1, 8, 8, 32], Layout::Nchw)?;
        let x_f32 = f(&[1, 8, 8, 32])?;
        let w = bf(&[32, 3, 3, 32], Layout::RowMajor)?;
        let w_k48 = bf(&[48, 3, 3, 32], Layout::RowMajor)?;
        let w_5x5 = bf(&[32, 5, 5, 32], Layout::RowMajor)?;
        let w_c24 = bf(&[32, 3, 3, 24], Layout::RowMajor)?;
        let b_bad = f(&[31])?;
        let mut y = f(&[1, 8, 8, 32])?;
        let mut y_bad = f(&[1, 8, 9, 32])?;
        let mut y_k48 = f(&[1, 8, 8, 48])?;
        let attempts: Vec<(&str, Result<()>)> = vec![
            ("C not a multiple of 16", tc::conv2d_tc(gpu, &x_c24, &w_c24, None, 1, 1, 1, &mut y)),
            ("K = 48", tc::conv2d_tc(gpu, &x, &w_k48, None, 1, 1, 1, &mut y_k48)),
            ("5x5 filter", tc::conv2d_tc(gpu, &x, &w_5x5, None, 1, 2, 1, &mut y)),
            ("wrong padding", tc::conv2d_tc(gpu, &x, &w, None, 1, 2, 1, &mut y)),
            ("stride 3", tc::conv2d_tc(gpu, &x, &w, None, 3, 1, 1, &mut y)),
            ("upsample 3", tc::conv2d_tc(gpu, &x, &w, None, 1, 1, 3, &mut y)),
            ("bias length", tc::conv2d_tc(gpu, &x, &w, Some(&b_bad), 1, 1, 1, &mut y)),
            ("output shape", tc::conv2d_tc(gpu, &x, &w, None, 1, 1, 1, &mut y_bad)),
            ("NCHW input", tc::conv2d_tc(gpu, &x_nchw, &w, None, 1, 1, 1, &mut y)),
            ("f32 input", tc::conv2d_tc(gpu, &x_f32, &w, None, 1, 1, 1, &mut y)),
            ("channel mismatch", tc::conv2d_tc(gpu, &x, &w_c24, None, 1, 1, 1, &mut y)),
        ];
        let accepted: Vec<&str> = attempts.iter().filter(|(_, r)| r.is_ok()).map(|(n, _)| *n).collect();
        Ok(CheckResult {
            op: OP.to_string(),
            case: "refuses bad shapes".to_string(),
            rel_l2: 0.0,
            max_rel: 0.0,
            tol: TOL,
            passed: accepted.is_empty(),
            detail: if accepted.is_empty() { String::new() } else { format!("accepted: {}", accepted.join(", ")) },
        })
    })
}

fn conv2d_tc_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out: Vec<CheckResult> = CASES.iter().map(|cs| run_case(gpu, rng, cs)).collect();
    out.push(refusals(gpu));
    out
}
