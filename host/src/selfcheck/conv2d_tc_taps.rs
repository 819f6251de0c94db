//! Self-checks of `conv2d_tc_halo9_taps` (the last layer with the filter columns in the GEMM's N) against
//! the CPU reference, with and without the previous layer's InstanceNorm + ReLU applied on load.
//!
//! Input and weight are rounded to f16 on the host; with input coefficients the CPU applies
//! relu(a·x + b) in f32 and rounds to f16 (what the kernel does in shared memory), then
//! `models::ops::conv2d` with reflection padding 4. Cases cover partial tiles in both directions (the tile
//! is 8 x 56), the 5x5 minimum, batch 2 (per-sample coefficients) and 1 to 3 output channels.
use models::ops::{self as cpu, Padding};
use models::Tensor;

use super::{catch, compare, poisoned, random, Check, CheckResult, Rng64, Tolerance};
use crate::gpu::half::{round_f16, round_tensor_f16};
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::ops::conv2d_tc as tc;
use crate::ops::nhwc::NormCoef;
use crate::ops::conv2d_tc_taps::{conv2d_tc_halo9_taps, TapsWeight};

const OP: &str = "conv2d_tc";
/// fp32 accumulation of exact f16 products; only the summation order differs from the CPU.
const TOL: Tolerance = Tolerance { rel_l2: 1e-4, max_rel: 1e-3 };

pub fn checks() -> Vec<Check> {
    vec![Check { op: OP, run: taps_checks }]
}

fn taps_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for &(n, h, w, k) in &[(1usize, 20usize, 18usize, 3usize), (2, 13, 61, 3), (1, 5, 5, 1), (1, 17, 120, 2)] {
        for norm in [false, true] {
            out.push(case(gpu, rng, n, h, w, k, norm));
        }
    }
    out
}

fn case(gpu: &Gpu, rng: &mut Rng64, n: usize, h: usize, w: usize, k: usize, norm: bool) -> CheckResult {
    let name = format!("halo9 taps {n}x32x{h}x{w} -> {k}{}", if norm { " (input norm+relu)" } else { "" });
    catch(OP, &name.clone(), || {
        let x = round_tensor_f16(&random(rng, &[n, 32, h, w], -1.0, 1.0));
        let wt = round_tensor_f16(&random(rng, &[k, 32, 9, 9], -0.05, 0.05));
        let bias = random(rng, &[k], -0.5, 0.5);
        // Per (sample, channel) coefficients: a in [-2, 2] (negative ones flip the sign: ReLU matters), b in [-0.5, 0.5].
        let coef = random(rng, &[n * 32 * 2], -0.5, 0.5);
        let coef = Tensor::new(&[n * 32 * 2], coef.data.iter().enumerate().map(|(i, &v)| if i % 2 == 0 { 4.0 * v } else { v }).collect());
        let xin = if norm {
            let mut d = x.data.clone();
            for (i, v) in d.iter_mut().enumerate() {
                let (ci, s) = ((i / (h * w)) % 32, i / (32 * h * w));
                let (a, b) = (coef.data[(s * 32 + ci) * 2], coef.data[(s * 32 + ci) * 2 + 1]);
                *v = round_f16(a.mul_add(*v, b).max(0.0));
            }
            Tensor::new(&x.shape, d)
        } else {
            x.clone()
        };
        let expected = cpu::conv2d(&xin, &wt, Some(&bias), 1, Padding::Reflect(4), 1)?;
        let (xs, xd) = tc::nchw_to_nhwc(&x)?;
        let dx = DeviceTensor::from_f32_as_f16(&xs, &xd, Layout::Nhwc)?;
        let dw = TapsWeight::upload(&wt)?;
        let db = DeviceTensor::from_host(&bias)?;
        let dc = DeviceTensor::from_host(&coef)?;
        let mut dy = poisoned(&expected.shape, DType::F32, Layout::Nchw)?;
        conv2d_tc_halo9_taps(gpu, &dx, &dw, norm.then_some(NormCoef::Coef(&dc)), &db, &mut dy)?;
        gpu.synchronize()?;
        Ok(compare(OP, &name, &dy.to_vec_f32()?, &expected.data, TOL))
    })
}
