//! Self-checks of the fast (f16) TransformerNet ([`GpuTransformerNetFast`]) and its NHWC glue kernels.
//!
//! * `nhwc_pack_input`: exact against the host's f16 rounding;
//! * `nhwc_in_apply`: in place with ReLU, and the residual update (also with its residual normalised +
//!   ReLU first, as the first residual block applies in3), against the host (one f16 rounding);
//!   `nhwc_in_coef` is checked with real `conv2d_tc` partials in the conv2d_tc check;
//! * the whole network against a CPU emulation of the same f16 arithmetic and against the fp32 reference.
use models::ops::{self, Padding};
use models::transformer_net::{ConvLayer, Norm};
use models::{Tensor, TransformerNet};

use super::{catch, compare, errored, poisoned, random, Check, CheckResult, Rng64, Tolerance};
use crate::error::Result;
use crate::gpu::half::{f16_to_f32, f32_to_f16, round_f16, round_tensor_f16};
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::nets::transformer_net_fast::GpuTransformerNetFast;
use crate::ops::nhwc;

const OP_NET: &str = "transformer_net_fast";
const OP_NHWC: &str = "nhwc";
const EXACT: Tolerance = Tolerance {
    rel_l2: 0.0,
    max_rel: 0.0,
};
/// One f16 rounding (relative 2^-11 of each value, ≤ 2^-11 of the largest), with margin for the fma.
const F16_ROUNDING: Tolerance = Tolerance {
    rel_l2: 1e-3,
    max_rel: 1e-3,
};
/// The f16 network against the fp32 reference: the bar for the fast path (1e-2 relative L2).
/// The CPU emulation measures about 2e-3..3e-3 on the fixture weights and on random weights (see the
/// test in nets/transformer_net_fast.rs).
pub const F16_NET_VS_F32: Tolerance = Tolerance::HALF;
/// GPU f16 network vs the CPU emulation of the same arithmetic: only summation order and the f16 roundings
/// it flips differ (bf16 showed 6e-3..1e-2 here; f16 has 8x finer steps).
const F16_NET_VS_EMULATION: Tolerance = Tolerance {
    rel_l2: 5e-3,
    max_rel: 2e-2,
};

pub fn checks() -> Vec<Check> {
    vec![
        Check {
            op: OP_NHWC,
            run: nhwc_checks,
        },
        Check {
            op: OP_NET,
            run: net_checks,
        },
    ]
}

fn pack_case(gpu: &Gpu, rng: &mut Rng64) -> CheckResult {
    let case = "pack_input 2x3x7x5";
    catch(OP_NHWC, case, || {
        let (n, h, w) = (2, 7, 5);
        let mut x = random(rng, &[n, 3, h, w], -300.0, 300.0);
        // Ties and specials: exactly halfway values, zero, -0, a value past the f16 range (saturates).
        x.data[0] = 1.0 + 2f32.powi(-11);
        x.data[1] = 1.0 + 3.0 * 2f32.powi(-11);
        x.data[2] = 0.0;
        x.data[3] = -0.0;
        x.data[4] = 1e6;
        let mut expected = vec![0u16; n * h * w * 4];
        for ni in 0..n {
            for c in 0..3 {
                for i in 0..h * w {
                    expected[(ni * h * w + i) * 4 + c] =
                        f32_to_f16(x.data[(ni * 3 + c) * h * w + i]);
                }
            }
        }
        let dx = DeviceTensor::from_host(&x)?;
        let mut dy = poisoned(&[n, h, w, 4], DType::F16, Layout::Nhwc)?;
        nhwc::nhwc_pack_input(gpu, &dx, &mut dy)?;
        gpu.synchronize()?;
        let got = dy.to_vec_f16_as_f32()?;
        let want: Vec<f32> = expected.iter().map(|&b| f16_to_f32(b)).collect();
        let mut r = compare(OP_NHWC, case, &got, &want, EXACT);
        if r.passed && !got.iter().zip(&expected).all(|(g, e)| f32_to_f16(*g) == *e) {
            r.passed = false;
            r.detail = "bit patterns differ (signed zero?)".into();
        }
        Ok(r)
    })
}

/// `nhwc_in_apply` with ReLU (`residual` false), or the residual update (`residual` true), whose residual
/// is itself normalised (+ReLU, one f16 rounding) first when `res_norm`.
fn apply_case(
    gpu: &Gpu,
    rng: &mut Rng64,
    shape: [usize; 4],
    residual: bool,
    res_norm: bool,
) -> CheckResult {
    let case = format!(
        "in_apply {}x{}x{}x{}{}",
        shape[0],
        shape[1],
        shape[2],
        shape[3],
        match (residual, res_norm) {
            (false, _) => " relu",
            (true, false) => " +res",
            (true, true) => " +relu(norm(res))",
        }
    );
    catch(OP_NHWC, &case.clone(), || {
        let [n, _, _, c] = shape;
        let numel: usize = shape.iter().product();
        let x: Vec<f32> = random(rng, &[numel], -3.0, 3.0)
            .data
            .into_iter()
            .map(round_f16)
            .collect();
        let acc: Vec<f32> = random(rng, &[numel], -2.0, 2.0)
            .data
            .into_iter()
            .map(round_f16)
            .collect();
        let coef = random(rng, &[n * c * 2], -1.5, 1.5);
        let acc_coef = random(rng, &[n * c * 2], -1.5, 1.5);
        let pqc = numel / n;
        let expected: Vec<f32> = (0..numel)
            .map(|i| {
                let (ni, ci) = (i / pqc, i % c);
                let v = x[i] * coef.data[(ni * c + ci) * 2] + coef.data[(ni * c + ci) * 2 + 1];
                if residual {
                    let r = if res_norm {
                        let (a, b) = (acc_coef.data[(ni * c + ci) * 2], acc_coef.data[(ni * c + ci) * 2 + 1]);
                        round_f16(acc[i].mul_add(a, b).max(0.0))
                    } else {
                        acc[i]
                    };
                    v + r
                } else {
                    v.max(0.0)
                }
            })
            .collect();
        let dcoef = DeviceTensor::from_host(&coef)?;
        let mut dx = DeviceTensor::from_f32_as_f16(&shape, &x, Layout::Nhwc)?;
        let got = if residual {
            let mut dacc = DeviceTensor::from_f32_as_f16(&shape, &acc, Layout::Nhwc)?;
            if res_norm {
                let dacc_coef = DeviceTensor::from_host(&acc_coef)?;
                nhwc::nhwc_in_apply_residual_normed(gpu, &dx, &dcoef, &mut dacc, &dacc_coef)?;
            } else {
                nhwc::nhwc_in_apply_residual(gpu, &dx, &dcoef, &mut dacc)?;
            }
            gpu.synchronize()?;
            dacc.to_vec_f16_as_f32()?
        } else {
            nhwc::nhwc_in_apply(gpu, &mut dx, &dcoef, true)?;
            gpu.synchronize()?;
            dx.to_vec_f16_as_f32()?
        };
        Ok(compare(OP_NHWC, &case, &got, &expected, F16_ROUNDING))
    })
}

fn refusals(gpu: &Gpu) -> CheckResult {
    let case = "refuses bad shapes";
    catch(OP_NHWC, case, || {
        let f = |s: &[usize], l| DeviceTensor::empty(s, DType::F32, l);
        let h = |s: &[usize]| DeviceTensor::empty(s, DType::F16, Layout::Nhwc);
        let x4 = f(&[1, 4, 8, 8], Layout::Nchw)?;
        let x3 = f(&[1, 3, 8, 8], Layout::Nchw)?;
        let mut p4 = h(&[1, 8, 8, 4])?;
        let mut p8 = h(&[1, 8, 8, 8])?;
        let mut h12 = h(&[1, 4, 4, 12])?;
        let mut h32 = h(&[1, 4, 4, 32])?;
        let h_bad = h(&[1, 4, 5, 32])?;
        let h32_in = h(&[1, 4, 4, 32])?;
        let mut f32_nhwc = f(&[1, 4, 4, 32], Layout::Nhwc)?;
        let coef = f(&[64], Layout::RowMajor)?;
        let mut coef_small = f(&[10], Layout::RowMajor)?;
        let g32 = f(&[32], Layout::RowMajor)?;
        let g31 = f(&[31], Layout::RowMajor)?;
        let part = f(&[4], Layout::RowMajor)?;
        let mut coef_ok = f(&[64], Layout::RowMajor)?;
        let attempts: Vec<(&str, Result<()>)> = vec![
            (
                "pack 4 channels in",
                nhwc::nhwc_pack_input(gpu, &x4, &mut p4),
            ),
            (
                "pack into 8 channels",
                nhwc::nhwc_pack_input(gpu, &x3, &mut p8),
            ),
            (
                "apply C = 12",
                nhwc::nhwc_in_apply(gpu, &mut h12, &coef, true),
            ),
            (
                "apply coef too small",
                nhwc::nhwc_in_apply(gpu, &mut h32, &coef_small, true),
            ),
            (
                "apply f32 tensor",
                nhwc::nhwc_in_apply(gpu, &mut f32_nhwc, &coef, true),
            ),
            (
                "residual shape",
                nhwc::nhwc_in_apply_residual(gpu, &h_bad, &coef, &mut h32),
            ),
            (
                "residual coef too small",
                nhwc::nhwc_in_apply_residual_normed(gpu, &h32_in, &coef, &mut h32, &coef_small),
            ),
            (
                "coef partials too small",
                nhwc::nhwc_in_coef(gpu, &[1, 4, 4, 32], &part, &g32, &g32, &mut coef_ok),
            ),
            (
                "coef gamma length",
                nhwc::nhwc_in_coef(gpu, &[1, 1, 1, 32], &coef, &g31, &g32, &mut coef_ok),
            ),
            (
                "coef output too small",
                nhwc::nhwc_in_coef(gpu, &[1, 1, 1, 32], &coef, &g32, &g32, &mut coef_small),
            ),
        ];
        let accepted: Vec<&str> = attempts
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(n, _)| *n)
            .collect();
        Ok(CheckResult {
            op: OP_NHWC.to_string(),
            case: case.to_string(),
            rel_l2: 0.0,
            max_rel: 0.0,
            tol: EXACT,
            passed: accepted.is_empty(),
            detail: if accepted.is_empty() {
                String::new()
            } else {
                format!("accepted: {}", accepted.join(", "))
            },
        })
    })
}

fn nhwc_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    vec![
        pack_case(gpu, rng),
        apply_case(gpu, rng, [2, 9, 11, 64], false, false),
        apply_case(gpu, rng, [1, 70, 70, 32], true, false),
        apply_case(gpu, rng, [2, 5, 3, 128], true, false),
        apply_case(gpu, rng, [3, 1, 1, 8], false, false),
        apply_case(gpu, rng, [2, 9, 7, 128], true, true),
        refusals(gpu),
    ]
}

/// InstanceNorm as the fast path does it: statistics (f64 here) of the f32 conv output `y`, applied to `y`
/// rounded to f16, then ReLU or `+ residual`, the result rounded to f16.
fn norm_f16(y: &Tensor, n: &Norm, relu: bool, residual: Option<&Tensor>) -> Tensor {
    let [nb, c, p, q] = [y.shape[0], y.shape[1], y.shape[2], y.shape[3]];
    let pq = p * q;
    let mut out = vec![0f32; y.data.len()];
    for plane in 0..nb * c {
        let v = &y.data[plane * pq..(plane + 1) * pq];
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / pq as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / pq as f64;
        let a = (n.gamma.data[plane % c] as f64 / (var + 1e-5).sqrt()) as f32;
        let b = n.beta.data[plane % c] - mean as f32 * a;
        for i in 0..pq {
            let mut o = round_f16(v[i]) * a + b;
            if relu {
                o = o.max(0.0);
            }
            if let Some(r) = residual {
                o += r.data[plane * pq + i];
            }
            out[plane * pq + i] = round_f16(o);
        }
    }
    Tensor {
        shape: y.shape.clone(),
        data: out,
    }
}

/// The fast network's arithmetic on the CPU: input, conv inputs and weights in f16 (exact products, f32
/// sums), no bias before InstanceNorm, conv outputs stored in f16 with statistics from the f32 values,
/// normalised activations and the residual trunk stored in f16, deconv3 in f32 with its bias.
///
/// The rounding points are those of the fused GPU path: each conv's raw output is rounded to f16 when
/// stored (before the norm), and the next conv's loader computes relu(a·x + b) in f32 from it and rounds
/// once to f16 in shared memory (`norm_f16` rounds `v` and then its result: the same two roundings the
/// separate `nhwc_in_apply` pass had, so folding the pass changed no values). conv3's output is normalised
/// both by the first residual conv's loader and by the first residual update, which also rounds the
/// normalised trunk to f16 before adding (the `y` below that both the conv and the residual read).
pub fn emulate_f16(net: &TransformerNet, x: &Tensor) -> Result<Tensor> {
    let conv = |l: &ConvLayer, y: &Tensor, bias: bool| -> Result<Tensor> {
        let r = l.weight.shape.get(2).copied().unwrap_or(1);
        Ok(ops::conv2d(
            &round_tensor_f16(y),
            &round_tensor_f16(&l.weight),
            bias.then_some(&l.bias),
            l.stride,
            Padding::Reflect(r / 2),
            l.upsample.max(1),
        )?)
    };
    let cin = |l: &ConvLayer, n: &Norm, y: &Tensor| -> Result<Tensor> {
        Ok(norm_f16(&conv(l, y, false)?, n, true, None))
    };
    let mut y = cin(&net.conv1, &net.in1, x)?;
    y = cin(&net.conv2, &net.in2, &y)?;
    y = cin(&net.conv3, &net.in3, &y)?;
    for b in &net.res {
        let t = cin(&b.conv1, &b.in1, &y)?;
        y = norm_f16(&conv(&b.conv2, &t, false)?, &b.in2, false, Some(&y));
    }
    y = cin(&net.deconv1, &net.in4, &y)?;
    y = cin(&net.deconv2, &net.in5, &y)?;
    conv(&net.deconv3, &y, true)
}

fn net_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let net = match TransformerNet::new(super::random_weights::random_tnet_weights(rng)) {
        Ok(n) => n,
        Err(e) => return vec![errored(OP_NET, "random weights", e)],
    };
    let mut gnet = match GpuTransformerNetFast::new(gpu, &net) {
        Ok(g) => g,
        Err(e) => return vec![errored(OP_NET, "upload", e)],
    };
    // Direct launches, graph replays (same shape twice), and a shape change in between.
    let shapes: [[usize; 4]; 4] = [
        [1, 3, 40, 36],
        [2, 3, 33, 47],
        [1, 3, 40, 36],
        [1, 3, 40, 36],
    ];
    let mut out = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let case = format!("{}x{}x{}x{} #{i}", shape[0], shape[1], shape[2], shape[3]);
        let mut run = |rng: &mut Rng64| -> Result<Vec<CheckResult>> {
            let x = random(rng, shape, 0.0, 255.0);
            let expected = net.forward(&x)?;
            let emulated = emulate_f16(&net, &x)?;
            let (ho, wo) = TransformerNet::output_size(shape[2], shape[3]);
            let want = [shape[0], 3, ho, wo];
            gnet.set_use_graph(i != 0);
            let got: Tensor = if i % 2 == 0 {
                gnet.forward(&x)?
            } else {
                let dx = DeviceTensor::from_host(&x)?;
                let y = gnet.forward_device(&dx)?;
                gpu.synchronize()?;
                y.to_host()?
            };
            let mut a = compare(
                OP_NET,
                &format!("{case} vs f16 emulation"),
                &got.data,
                &emulated.data,
                F16_NET_VS_EMULATION,
            );
            let mut b = compare(
                OP_NET,
                &format!("{case} vs fp32"),
                &got.data,
                &expected.data,
                F16_NET_VS_F32,
            );
            if got.shape != want || expected.shape != want {
                for r in [&mut a, &mut b] {
                    r.passed = false;
                    r.detail = format!(
                        "shape {:?}, CPU {:?}, output_size {want:?}",
                        got.shape, expected.shape
                    );
                }
            }
            if let Some(e) = gnet.graph_error() {
                b.passed = false;
                b.detail = format!("graph capture failed: {e}");
            }
            Ok(vec![a, b])
        };
        out.extend(run(rng).unwrap_or_else(|e| vec![errored(OP_NET, &case, e)]));
    }
    out
}
