//! Self-checks of the TransformerNet kernels (conv2d, instance_norm, upsample, elementwise) and of the
//! whole GPU TransformerNet against the CPU reference, on random data.
//!
//! Every GPU output is poisoned with 0xff bytes (NaN) before the launch, so an element the kernel fails
//! to write fails the comparison. Uploads and the poisoning use blocking copies/memsets outside the
//! StyleForge stream: the context is synchronised before each launch so they cannot race with it.

use models::ops::{self as cpu, Padding};
use models::{Tensor, TransformerNet};

use super::{catch, compare, poisoned, random, Check, CheckResult, Rng64, Tolerance};
use crate::error::Result;
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::nets::GpuTransformerNet;
use crate::ops;

pub fn checks() -> Vec<Check> {
    vec![
        Check {
            op: "conv2d",
            run: conv2d_checks,
        },
        Check {
            op: "instance_norm",
            run: instance_norm_checks,
        },
        Check {
            op: "upsample_nearest",
            run: upsample_checks,
        },
        Check {
            op: "relu",
            run: relu_checks,
        },
        Check {
            op: "add",
            run: add_checks,
        },
        Check {
            op: "transformer_net",
            run: transformer_net_checks,
        },
    ]
}

/// Synchronises the stream, downloads `y` and compares it with `expected` (shape and values).
fn finish(
    gpu: &Gpu,
    op: &str,
    case: &str,
    y: &DeviceTensor,
    expected: &Tensor,
    tol: Tolerance,
) -> Result<CheckResult> {
    gpu.synchronize()?;
    let got = y.to_vec_f32()?;
    let mut r = compare(op, case, &got, &expected.data, tol);
    if y.shape != expected.shape {
        r.passed = false;
        r.detail = format!("shape {:?}, expected {:?}", y.shape, expected.shape);
    }
    Ok(r)
}

/// A case that passes when every launch in `attempts` was refused with an error (no panic, no launch).
fn expect_refused(op: &str, case: &str, attempts: Vec<(&str, Result<()>)>) -> CheckResult {
    let accepted: Vec<&str> = attempts
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| *n)
        .collect();
    CheckResult {
        op: op.to_string(),
        case: case.to_string(),
        rel_l2: 0.0,
        max_rel: 0.0,
        tol: Tolerance::F32,
        passed: accepted.is_empty(),
        detail: if accepted.is_empty() {
            String::new()
        } else {
            format!("accepted: {}", accepted.join(", "))
        },
    }
}

// ------------------------------------------------------------------------------------------------ conv2d

struct ConvCase {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    r: usize,
    stride: usize,
    pad: Padding,
    up: usize,
    bias: bool,
}

#[rustfmt::skip]
const CONV_CASES: &[ConvCase] = &[
    // conv1-like: 9x9 reflect on an odd size, wide and partial channel blocks.
    ConvCase { n: 1, c: 3, h: 17, w: 23, k: 32, r: 9, stride: 1, pad: Padding::Reflect(4), up: 1, bias: true },
    ConvCase { n: 1, c: 3, h: 17, w: 23, k: 8, r: 9, stride: 1, pad: Padding::Reflect(4), up: 1, bias: false },
    // conv2/conv3-like: 3x3 stride 2, several channel chunks and channel blocks, batch 2.
    ConvCase { n: 2, c: 32, h: 31, w: 29, k: 64, r: 3, stride: 2, pad: Padding::Reflect(1), up: 1, bias: true },
    // residual-like: 128 -> 128, 16 chunks of 8 channels, 4 channel blocks, tiles wider and taller than one.
    ConvCase { n: 1, c: 128, h: 12, w: 37, k: 128, r: 3, stride: 1, pad: Padding::Reflect(1), up: 1, bias: true },
    // deconv-like: nearest x2 folded into the addressing, odd sizes.
    ConvCase { n: 2, c: 16, h: 9, w: 13, k: 24, r: 3, stride: 1, pad: Padding::Reflect(1), up: 2, bias: true },
    ConvCase { n: 1, c: 5, h: 7, w: 6, k: 40, r: 3, stride: 2, pad: Padding::Reflect(1), up: 2, bias: false },
    // conv_out-like: 9x9 reflect, 3 output channels (narrow kernel), input larger than one tile.
    ConvCase { n: 1, c: 32, h: 35, w: 41, k: 3, r: 9, stride: 1, pad: Padding::Reflect(4), up: 1, bias: true },
    ConvCase { n: 2, c: 13, h: 19, w: 21, k: 4, r: 3, stride: 2, pad: Padding::Reflect(1), up: 1, bias: true },
    // zero padding (StyleViT's final convs), with and without bias, narrow and wide.
    ConvCase { n: 1, c: 3, h: 20, w: 20, k: 3, r: 3, stride: 1, pad: Padding::Zero(1), up: 1, bias: true },
    ConvCase { n: 2, c: 7, h: 33, w: 15, k: 9, r: 3, stride: 1, pad: Padding::Zero(1), up: 1, bias: false },
    ConvCase { n: 1, c: 6, h: 10, w: 11, k: 5, r: 3, stride: 2, pad: Padding::Zero(2), up: 1, bias: true },
    // 1x1 convolutions, no padding.
    ConvCase { n: 2, c: 8, h: 7, w: 5, k: 5, r: 1, stride: 1, pad: Padding::Zero(0), up: 1, bias: true },
    ConvCase { n: 1, c: 3, h: 9, w: 70, k: 3, r: 1, stride: 1, pad: Padding::Zero(0), up: 1, bias: false },
    // Tiny inputs: 1x1 (zero pad) and the smallest reflection-padded input.
    ConvCase { n: 2, c: 5, h: 1, w: 1, k: 6, r: 3, stride: 1, pad: Padding::Zero(1), up: 1, bias: true },
    ConvCase { n: 1, c: 4, h: 2, w: 3, k: 33, r: 3, stride: 1, pad: Padding::Reflect(1), up: 1, bias: true },
    ConvCase { n: 1, c: 2, h: 5, w: 5, k: 3, r: 9, stride: 1, pad: Padding::Reflect(4), up: 1, bias: true },
    // Patch-embedding-like: kernel 4 stride 4 would be unusual here; a stride-4 1x1 covers strided addressing.
    ConvCase { n: 1, c: 3, h: 13, w: 17, k: 12, r: 1, stride: 4, pad: Padding::Zero(0), up: 1, bias: true },
];

fn conv_case(gpu: &Gpu, rng: &mut Rng64, cs: &ConvCase) -> CheckResult {
    let case = format!(
        "{}x{}x{}x{} k{} {}x{} s{} {:?} up{}{}",
        cs.n,
        cs.c,
        cs.h,
        cs.w,
        cs.k,
        cs.r,
        cs.r,
        cs.stride,
        cs.pad,
        cs.up,
        if cs.bias { " +b" } else { "" }
    );
    catch("conv2d", &case.clone(), || {
        let x = random(rng, &[cs.n, cs.c, cs.h, cs.w], -1.0, 1.0);
        let bound = 1.0 / ((cs.c * cs.r * cs.r) as f32).sqrt();
        let w = random(rng, &[cs.k, cs.c, cs.r, cs.r], -bound, bound);
        let b = cs.bias.then(|| random(rng, &[cs.k], -0.5, 0.5));
        let expected = cpu::conv2d(&x, &w, b.as_ref(), cs.stride, cs.pad, cs.up)?;
        let dx = DeviceTensor::from_host(&x)?;
        let dw = DeviceTensor::from_host(&w)?;
        let db = b.as_ref().map(DeviceTensor::from_host).transpose()?;
        let mut dy = poisoned(&expected.shape, DType::F32, Layout::Nchw)?;
        ops::conv2d::conv2d(
            gpu,
            &dx,
            &dw,
            db.as_ref(),
            cs.stride,
            cs.pad,
            cs.up,
            &mut dy,
        )?;
        finish(gpu, "conv2d", &case, &dy, &expected, Tolerance::F32)
    })
}

fn conv2d_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out: Vec<CheckResult> = CONV_CASES
        .iter()
        .map(|cs| conv_case(gpu, rng, cs))
        .collect();
    out.push(catch("conv2d", "refuses bad shapes", || {
        let t = |s: &[usize]| DeviceTensor::empty(s, DType::F32, Layout::Nchw);
        let x = t(&[1, 4, 3, 3])?;
        let w = t(&[8, 4, 3, 3])?;
        let w_bad_c = t(&[8, 5, 3, 3])?;
        let w_rect = t(&[8, 4, 3, 1])?;
        let b_bad = t(&[7])?;
        let x_bf16 = DeviceTensor::empty(&[1, 4, 3, 3], DType::BF16, Layout::Nchw)?;
        let mut y = t(&[1, 8, 3, 3])?;
        let mut y_bad = t(&[1, 8, 3, 4])?;
        let mut y_s2 = t(&[1, 8, 2, 2])?;
        let c =
            |x: &DeviceTensor,
             w: &DeviceTensor,
             b: Option<&DeviceTensor>,
             s,
             p,
             u,
             y: &mut DeviceTensor| { ops::conv2d::conv2d(gpu, x, w, b, s, p, u, y) };
        Ok(expect_refused(
            "conv2d",
            "refuses bad shapes",
            vec![
                (
                    "input channels",
                    c(&x, &w_bad_c, None, 1, Padding::Reflect(1), 1, &mut y),
                ),
                (
                    "non-square filter",
                    c(&x, &w_rect, None, 1, Padding::Reflect(1), 1, &mut y),
                ),
                (
                    "bias length",
                    c(&x, &w, Some(&b_bad), 1, Padding::Reflect(1), 1, &mut y),
                ),
                (
                    "output shape",
                    c(&x, &w, None, 1, Padding::Reflect(1), 1, &mut y_bad),
                ),
                (
                    "reflect pad >= size",
                    c(&x, &w, None, 1, Padding::Reflect(3), 1, &mut y),
                ),
                (
                    "stride 0",
                    c(&x, &w, None, 0, Padding::Reflect(1), 1, &mut y_s2),
                ),
                (
                    "upsample 0",
                    c(&x, &w, None, 1, Padding::Reflect(1), 0, &mut y),
                ),
                (
                    "bf16 input",
                    c(&x_bf16, &w, None, 1, Padding::Reflect(1), 1, &mut y),
                ),
            ],
        ))
    }));
    out
}

// ----------------------------------------------------------------------------------------- instance_norm

fn instance_norm_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    // (shape, relu, residual, in place, input offset)
    #[rustfmt::skip]
    let cases: &[([usize; 4], bool, bool, bool, f32)] = &[
        ([1, 4, 7, 9], false, false, false, 0.0),
        ([2, 3, 17, 23], true, false, false, 3.0),
        ([2, 5, 13, 11], false, true, false, -2.0),
        ([1, 3, 1, 2], true, true, false, 0.0),
        // More than one partial chunk per plane (130*129 > 4096): exercises the Chan combination.
        ([1, 2, 130, 129], true, true, false, 10.0),
        ([2, 3, 64, 65], false, false, true, 50.0),
        ([1, 32, 40, 36], true, false, true, 0.5),
        ([2, 128, 9, 12], false, true, true, 1.0),
    ];
    cases
        .iter()
        .map(|&(shape, relu, res, inplace, offset)| {
            let case = format!(
                "{}x{}x{}x{}{}{}{} mean~{offset}",
                shape[0],
                shape[1],
                shape[2],
                shape[3],
                if relu { " +relu" } else { "" },
                if res { " +res" } else { "" },
                if inplace { " in-place" } else { "" }
            );
            catch("instance_norm", &case.clone(), || {
                let c = shape[1];
                let x = random(rng, &shape, offset - 1.5, offset + 1.5);
                let gamma = random(rng, &[c], 0.5, 1.5);
                let beta = random(rng, &[c], -0.5, 0.5);
                let residual = res.then(|| random(rng, &shape, -1.0, 1.0));
                let expected = cpu::instance_norm(&x, &gamma, &beta, relu, residual.as_ref())?;
                let mut dx = DeviceTensor::from_host(&x)?;
                let dg = DeviceTensor::from_host(&gamma)?;
                let db = DeviceTensor::from_host(&beta)?;
                let dr = residual.as_ref().map(DeviceTensor::from_host).transpose()?;
                let mut stats = poisoned(
                    &[ops::instance_norm::instance_norm_stats_len(&shape)],
                    DType::F32,
                    Layout::Nchw,
                )?;
                if inplace {
                    ops::instance_norm::instance_norm_inplace(
                        gpu,
                        &mut dx,
                        &dg,
                        &db,
                        relu,
                        dr.as_ref(),
                        &mut stats,
                    )?;
                    finish(gpu, "instance_norm", &case, &dx, &expected, Tolerance::F32)
                } else {
                    let mut dy = poisoned(&shape, DType::F32, Layout::Nchw)?;
                    ops::instance_norm::instance_norm(
                        gpu,
                        &dx,
                        &dg,
                        &db,
                        relu,
                        dr.as_ref(),
                        &mut dy,
                        &mut stats,
                    )?;
                    finish(gpu, "instance_norm", &case, &dy, &expected, Tolerance::F32)
                }
            })
        })
        .chain(std::iter::once(catch(
            "instance_norm",
            "refuses bad shapes",
            || {
                let t = |s: &[usize]| DeviceTensor::empty(s, DType::F32, Layout::Nchw);
                let x = t(&[1, 4, 8, 8])?;
                let g = t(&[4])?;
                let g_bad = t(&[3])?;
                let r_bad = t(&[1, 4, 8, 7])?;
                let mut y = t(&[1, 4, 8, 8])?;
                let mut y_bad = t(&[1, 4, 8, 9])?;
                let mut stats = t(&[ops::instance_norm::instance_norm_stats_len(&[1, 4, 8, 8])])?;
                let mut stats_small = t(&[4])?;
                use ops::instance_norm::instance_norm as inorm;
                Ok(expect_refused(
                    "instance_norm",
                    "refuses bad shapes",
                    vec![
                        (
                            "gamma length",
                            inorm(gpu, &x, &g_bad, &g, false, None, &mut y, &mut stats),
                        ),
                        (
                            "residual shape",
                            inorm(gpu, &x, &g, &g, false, Some(&r_bad), &mut y, &mut stats),
                        ),
                        (
                            "output shape",
                            inorm(gpu, &x, &g, &g, false, None, &mut y_bad, &mut stats),
                        ),
                        (
                            "stats too small",
                            inorm(gpu, &x, &g, &g, false, None, &mut y, &mut stats_small),
                        ),
                    ],
                ))
            },
        )))
        .collect()
}

// ---------------------------------------------------------------------------------- upsample, relu, add

fn upsample_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let cases: &[([usize; 4], usize)] = &[
        ([2, 3, 5, 7], 2),
        ([1, 2, 1, 1], 2),
        ([1, 64, 17, 9], 2),
        ([1, 3, 4, 6], 3),
    ];
    cases
        .iter()
        .map(|&(shape, f)| {
            let case = format!("{}x{}x{}x{} x{f}", shape[0], shape[1], shape[2], shape[3]);
            catch("upsample_nearest", &case.clone(), || {
                let x = random(rng, &shape, -1.0, 1.0);
                let expected = cpu::upsample_nearest(&x, f)?;
                let dx = DeviceTensor::from_host(&x)?;
                let mut dy = poisoned(&expected.shape, DType::F32, Layout::Nchw)?;
                ops::upsample::upsample_nearest(gpu, &dx, f, &mut dy)?;
                finish(
                    gpu,
                    "upsample_nearest",
                    &case,
                    &dy,
                    &expected,
                    Tolerance::F32,
                )
            })
        })
        .collect()
}

fn relu_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    [vec![2, 3, 17, 23], vec![1, 1, 1, 1], vec![3, 100_003]]
        .iter()
        .map(|shape| {
            let case = format!("{shape:?}");
            catch("relu", &case.clone(), || {
                let x = random(rng, shape, -1.0, 1.0);
                let expected = cpu::relu(&x);
                let dx = DeviceTensor::from_host(&x)?;
                let mut dy = poisoned(shape, DType::F32, Layout::Nchw)?;
                ops::elementwise::relu(gpu, &dx, &mut dy)?;
                finish(gpu, "relu", &case, &dy, &expected, Tolerance::F32)
            })
        })
        .collect()
}

fn add_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    [vec![2, 3, 17, 23], vec![1, 1, 1, 1], vec![3, 100_003]]
        .iter()
        .map(|shape| {
            let case = format!("{shape:?}");
            catch("add", &case.clone(), || {
                let a = random(rng, shape, -1.0, 1.0);
                let b = random(rng, shape, -1.0, 1.0);
                let expected = cpu::add(&a, &b)?;
                let da = DeviceTensor::from_host(&a)?;
                let db = DeviceTensor::from_host(&b)?;
                let mut dy = poisoned(shape, DType::F32, Layout::Nchw)?;
                ops::elementwise::add(gpu, &da, &db, &mut dy)?;
                finish(gpu, "add", &case, &dy, &expected, Tolerance::F32)
            })
        })
        .collect()
}

// --------------------------------------------------------------------------------------- transformer_net

/// A TransformerNet with random weights, under the pytorch/examples key names.
pub fn random_transformer_net(rng: &mut Rng64) -> Result<TransformerNet> {
    Ok(TransformerNet::new(
        super::random_weights::random_tnet_weights(rng),
    )?)
}

fn transformer_net_checks(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    const OP: &str = "transformer_net";
    let net = match random_transformer_net(rng) {
        Ok(n) => n,
        Err(e) => return vec![super::errored(OP, "random weights", e)],
    };
    let mut gnet = match GpuTransformerNet::new(gpu, &net) {
        Ok(g) => g,
        Err(e) => return vec![super::errored(OP, "upload", e)],
    };
    // Shapes change and come back, so buffers are reallocated and reused; the last case repeats the
    // previous shape (same buffers, different input).
    let shapes: [[usize; 4]; 6] = [
        [1, 3, 40, 36],
        [2, 3, 33, 47],
        [1, 3, 16, 16],
        [1, 3, 40, 36],
        [1, 3, 17, 70],
        [1, 3, 17, 70],
    ];
    let mut out = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let case = format!("{}x{}x{}x{} #{i}", shape[0], shape[1], shape[2], shape[3]);
        out.push(catch(OP, &case.clone(), || {
            let x = random(rng, shape, 0.0, 255.0);
            let expected = net.forward(&x)?;
            let (ho, wo) = TransformerNet::output_size(shape[2], shape[3]);
            let want = [shape[0], 3, ho, wo];
            let got = if i % 2 == 0 {
                gnet.forward(&x)?
            } else {
                // The device path: upload, queue, synchronise, download.
                let dx = DeviceTensor::from_host(&x)?;
                let y = gnet.forward_device(&dx)?;
                gpu.synchronize()?;
                y.to_host()?
            };
            let mut r = compare(OP, &case, &got.data, &expected.data, Tolerance::F32_LOOSE);
            if got.shape != want || expected.shape != want {
                r.passed = false;
                r.detail = format!(
                    "shape {:?}, CPU {:?}, output_size {want:?}",
                    got.shape, expected.shape
                );
            }
            Ok(r)
        }));
    }
    out
}
