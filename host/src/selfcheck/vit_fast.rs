//! Self-checks of the tensor-core StyleViT kernels (`linear_tc`, `attention_tc`) against the CPU
//! reference.
//!
//! Inputs (x, w, q, k, v and f16 residuals) are rounded to f16 on the host and the CPU reference runs on
//! the rounded values, so the GPU and the CPU multiply the same numbers; what remains is the GPU's own
//! rounding, bounded below per op (the tolerances are derived from those bounds and checked against a
//! CPU emulation of the kernels' arithmetic in this module's unit tests). Every GPU output is poisoned
//! with 0xff bytes (NaN in f32 and f16) before the launch, so an element the kernel fails to write fails.
//! Big attention cases compare the first and last 80 query rows (rows are independent; this covers a
//! full tile, a tile boundary and the partial tail tile).
use models::ops;
use models::Tensor;

use super::{catch, compare, download, poisoned, random, Check, CheckResult, Rng64, Tolerance};
use crate::error::Result;
use crate::gpu::half::round_tensor_f16;
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::nets::style_vit_fast::GpuStyleVitFast;
use crate::gpu::TmaMapCache;
use crate::ops::attention_tc::{attention_tc, attention_tc_m1_enabled, attention_tc_qkv, attn_tc_choice, Heads};
use crate::ops::adain::{adain_f16, adain_f16_part_len, adain_f16_split};
use crate::ops::attention_tma::{attention_tma, AttnTmaKernel};
use crate::ops::linear_tc::{
    layer_norm_f16, layer_norm_f16_hv, linear_tc, linear_tc_plan, linear_tc_ws, workspace_need, EpilogueTc,
    LinearTcKernel, LinearTcPlan, LinearTcWorkspace,
};
use models::ops::Padding;
use models::style_vit::Block;
use models::StyleVit;

/// `linear_tc` with an f32 output: the f16 x f16 products are exact in f32 and accumulate in f32, so only
/// the summation order differs from the CPU (as `conv2d_tc`'s tolerance).
pub const LINEAR_TC_F32: Tolerance = Tolerance {
    rel_l2: 1e-4,
    max_rel: 1e-3,
};
/// `linear_tc` with an f16 output: the f32 result rounded to nearest even f16 adds at most 2^-11
/// relative (4.9e-4 of |y| ≤ max|y|, so ≤ 4.9e-4 in max_rel) and about 2e-4 in RMS (measured by the
/// emulation test below: 2.1e-4 rel L2, 2.9e-4 max rel). Tolerance: about 2x the bound, 2.5x the RMS.
pub const LINEAR_TC_F16: Tolerance = Tolerance {
    rel_l2: 5e-4,
    max_rel: 1e-3,
};
/// `linear_tc` adding into its f16 output (`EpilogueTc::accumulate`): on `linear_tma` the product is
/// rounded to f16 before the reduce-add rounds the sum again, so two roundings of 2^-11 relative (each of
/// |y| ≤ max|y|, ≤ 9.8e-4 together in max_rel; about √2 times the single rounding's RMS).
pub const LINEAR_TC_F16_ACC: Tolerance = Tolerance {
    rel_l2: 7e-4,
    max_rel: 2e-3,
};
/// `attention_tc` (f16 output): P is rounded to f16 before the PV product (≤ 2^-11 relative per
/// probability; the row sum uses the f32 values), `ex2.approx` (~2 ulp, negligible) and the f16 output
/// rounding (≤ 2^-11 relative). The emulation test below (same input distribution as the self-check)
/// measures 2.5e-4..2.7e-4 rel L2 and 3.3e-4..4.2e-4 max rel for head_dim 32/64/128 and 300..4099
/// keys, and asserts that it stays within half of this tolerance.
pub const ATTENTION_TC: Tolerance = Tolerance {
    rel_l2: 7e-4,
    max_rel: 1.5e-3,
};

/// `adain_f16`: f32 statistics and arithmetic on the f16 inputs (only the summation order and one
/// division differ from the CPU), then the f16 output rounding, as `linear_tc`'s f16 output.
pub const ADAIN_F16: Tolerance = LINEAR_TC_F16;

/// [`GpuStyleVitFast`] vs the fp32 CPU reference: dominated by the f16 rounding of the GEMM and attention
/// inputs and of the residual stream. The CPU emulation that rounds at the same places
/// ([`emulate_style_vit_fast`]) measures 5.2e-4..1.5e-3 rel L2 and 4.9e-4..2.0e-3 max rel against the
/// fp32 reference on the self-check's networks (1-2 blocks, D 64; with an f32 residual stream it was
/// 4.0e-4..1.1e-3 and 5.2e-4..1.2e-3); the tolerance is about 3x that (the unit test asserts the
/// emulation stays within half of it), leaving room for the kernels' own rounding on top.
pub const STYLE_VIT_FAST: Tolerance = Tolerance {
    rel_l2: 4.5e-3,
    max_rel: 6e-3,
};
/// [`GpuStyleVitFast`] vs the CPU emulation with the same f16 roundings: what remains is the f32
/// summation order, `ex2.approx`, the f16 probabilities in attention (2.7e-4 rel L2 at the attention
/// output, see `ATTENTION_TC`), the GELU's `ex2.approx` / `rcp.approx`, and f16 roundings that flip by one
/// ulp where the f32 values differ (with the f16 residual stream, at every block's sums and LayerNorm
/// outputs, amplified by the next LayerNorm). Measured on an H100 (runs 63-65, session 13): up to 1.50e-3
/// rel L2 and 2.31e-3 max rel; the bound is 2x that.
pub const STYLE_VIT_FAST_VS_EMULATION: Tolerance = Tolerance {
    rel_l2: 3e-3,
    max_rel: 5e-3,
};
/// `linear_tc_layer_norm`: the f32 output as `layer_norm` (fp32, two-pass); the f16
/// copy adds its rounding (≤ 2^-11 relative, as `LINEAR_TC_F16`).
pub const LN_F32: Tolerance = Tolerance::F32;

pub fn checks() -> Vec<Check> {
    vec![
        Check {
            op: "linear_tc",
            run: check_linear_tc,
        },
        Check {
            op: "linear_tc_small",
            run: check_linear_tc_small,
        },
        Check {
            op: "linear_tc_prologue",
            run: check_prologue,
        },
        Check {
            op: "attention_tc",
            run: check_attention_tc,
        },
        Check {
            op: "attention_tma",
            run: check_attention_tma,
        },
        Check {
            op: "adain_f16",
            run: check_adain_f16,
        },
        Check {
            op: "style_vit_fast",
            run: check_style_vit_fast,
        },
    ]
}

// ---------------------------------------------------------------- linear_tc
/// The residual of a GEMM case (here and in `linear_wg`'s checks).
#[derive(Clone, Copy, Debug)]
pub(super) enum Res {
    None,
    /// f32 residual with this many rows (dividing M), broadcast over the rest.
    F32(usize),
    /// f16 residual with this many rows.
    F16(usize),
    /// `EpilogueTc::accumulate`: y16 starts as an f16 residual of M rows and gets the result added in
    /// place (StyleViT's out-projection and fc2; on `linear_tma` by TMA reduce-adds; cases with it have
    /// an f16 output only).
    Acc,
}

impl Res {
    /// The case-name suffix.
    pub(super) fn name(self) -> String {
        match self {
            Res::None => String::new(),
            Res::F32(r) => format!(" +res32[{r}]"),
            Res::F16(r) => format!(" +res16[{r}]"),
            Res::Acc => " y16+=".into(),
        }
    }

    /// The host residual of an M x N case (f16-rounded where the kernel reads f16), or none.
    pub(super) fn host(self, rng: &mut Rng64, m: usize, n: usize) -> Option<Tensor> {
        match self {
            Res::None => None,
            Res::F32(rr) => Some(random(rng, &[rr, n], -2.0, 2.0)),
            Res::F16(rr) => Some(round_tensor_f16(&random(rng, &[rr, n], -2.0, 2.0))),
            Res::Acc => Some(round_tensor_f16(&random(rng, &[m, n], -2.0, 2.0))),
        }
    }

    /// The `EpilogueTc::residual` tensor for host residual `r` (none with `Acc`: the residual is y16).
    pub(super) fn device(self, r: Option<&Tensor>) -> Result<Option<DeviceTensor>> {
        Ok(match (r, self) {
            (Some(_), Res::Acc) | (None, _) => None,
            (Some(r), Res::F16(_)) => Some(DeviceTensor::from_host_f16(r)?),
            (Some(r), _) => Some(DeviceTensor::from_f32(&r.shape, &r.data, Layout::RowMajor)?),
        })
    }

    /// The y16 output a launch starts from: the residual with `Acc`, else poisoned.
    pub(super) fn y16_start(self, r: Option<&Tensor>, m: usize, n: usize) -> Result<DeviceTensor> {
        match (r, self) {
            (Some(r), Res::Acc) => DeviceTensor::from_host_f16(r),
            _ => poisoned(&[m, n], DType::F16, Layout::RowMajor),
        }
    }
}

/// Which outputs a GEMM case writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Out {
    F32,
    F16,
    Both,
}

struct LinCase {
    m: usize,
    n: usize,
    k: usize,
    bias: bool,
    gelu: bool,
    res: Res,
    out: Out,
}

#[rustfmt::skip]
const LIN_CASES: &[LinCase] = &[
    LinCase { m: 1, n: 1, k: 8, bias: true, gelu: false, res: Res::None, out: Out::Both },
    // Odd M and N (scalar stores on the odd-N path), K = 96 (3 BK steps).
    LinCase { m: 67, n: 45, k: 96, bias: true, gelu: false, res: Res::None, out: Out::Both },
    // K = 264: the last 32-wide K step holds one real 8-chunk (zero-filled tail).
    LinCase { m: 130, n: 200, k: 264, bias: true, gelu: true, res: Res::None, out: Out::Both },
    LinCase { m: 257, n: 129, k: 520, bias: false, gelu: false, res: Res::F32(257), out: Out::Both },
    LinCase { m: 100, n: 33, k: 24, bias: true, gelu: true, res: Res::F16(25), out: Out::F16 },
    LinCase { m: 256, n: 384, k: 128, bias: true, gelu: false, res: Res::F32(64), out: Out::F32 },
    LinCase { m: 129, n: 256, k: 64, bias: true, gelu: false, res: Res::F16(129), out: Out::Both },
    // StyleViT shapes (D 512, FFN 2048) on a few hundred tokens: qkv, fc1 (+gelu), fc2 (+residual).
    LinCase { m: 600, n: 1536, k: 512, bias: true, gelu: false, res: Res::None, out: Out::F16 },
    LinCase { m: 600, n: 2048, k: 512, bias: true, gelu: true, res: Res::None, out: Out::F16 },
    LinCase { m: 600, n: 512, k: 2048, bias: true, gelu: false, res: Res::F32(600), out: Out::Both },
];

/// How a case is launched.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// `linear_tc` (its own plan, no K split).
    Auto,
    /// `linear_tc_plan` with the 128 x 128 kernel.
    Big,
    /// `linear_tc_ws` (the default split plan) with the shared workspace.
    Ws,
    /// `linear_tc_plan` with `LinearTcPlan::small(k, splits)` (usize::MAX: one K step per split).
    Split(usize),
}

impl Path {
    /// The plan this path runs for an M x N x K product.
    fn plan(self, m: usize, n: usize, k: usize) -> LinearTcPlan {
        match self {
            Path::Auto => LinearTcPlan::choose(m, n, k, false),
            Path::Big => LinearTcPlan::BIG,
            Path::Ws => LinearTcPlan::choose(m, n, k, true),
            Path::Split(s) => LinearTcPlan::small(k, s),
        }
    }
}

fn plan_name(p: LinearTcPlan) -> String {
    match p.kernel {
        LinearTcKernel::Big => "big".into(),
        LinearTcKernel::Small => format!("small {}x{}", p.splits, p.ktiles_per_split),
    }
}

/// Runs one case along each of `paths` (inputs and CPU reference made once; outputs re-poisoned before
/// every launch, so a path repeated with the same workspace checks that the counters were reset).
fn linear_case(
    gpu: &Gpu,
    rng: &mut Rng64,
    op: &str,
    cs: &LinCase,
    paths: &[Path],
    mut ws: Option<&mut LinearTcWorkspace>,
) -> Vec<CheckResult> {
    let LinCase {
        m,
        n,
        k,
        bias,
        gelu,
        res,
        out,
    } = *cs;
    let name = format!(
        "{m}x{n}x{k}{}{}{} {out:?}",
        if bias { " +b" } else { "" },
        if gelu { " +gelu" } else { "" },
        res.name()
    );
    let mut run = || -> Result<Vec<CheckResult>> {
        let x = round_tensor_f16(&random(rng, &[m, k], -1.0, 1.0));
        let bound = 1.0 / (k as f32).sqrt();
        let w = round_tensor_f16(&random(rng, &[n, k], -bound, bound));
        let b = random(rng, &[n], -0.5, 0.5);
        let r = res.host(rng, m, n);
        let acc = matches!(res, Res::Acc);
        let mut want = ops::linear(&x, &w, bias.then_some(&b))?;
        if gelu {
            want = ops::gelu_tanh(&want);
        }
        if let Some(r) = &r {
            let rn = r.numel();
            for (i, v) in want.data.iter_mut().enumerate() {
                *v += r.data[i % rn];
            }
        }
        let (xd, wd) = (
            DeviceTensor::from_host_f16(&x)?,
            DeviceTensor::from_host_f16(&w)?,
        );
        let bd = DeviceTensor::from_f32(&[n], &b.data, Layout::RowMajor)?;
        let rd = res.device(r.as_ref())?;
        let ep = EpilogueTc {
            bias: bias.then_some(&bd),
            gelu,
            residual: rd.as_ref(),
            accumulate: acc,
        };
        let mut v = Vec::new();
        for (rep, &path) in paths.iter().enumerate() {
            let case = format!("{name} {} #{rep}", plan_name(path.plan(m, n, k)));
            let mut y32 = poisoned(&[m, n], DType::F32, Layout::RowMajor)?;
            // With accumulate, y16 starts as the residual (again for every path).
            let mut y16 = res.y16_start(r.as_ref(), m, n)?;
            let (o32, o16) = match out {
                Out::F32 => (Some(&mut y32), None),
                Out::F16 => (None, Some(&mut y16)),
                Out::Both => (Some(&mut y32), Some(&mut y16)),
            };
            let launched = match path {
                Path::Auto => linear_tc(gpu, &xd, &wd, ep, o32, o16),
                Path::Big | Path::Split(_) => linear_tc_plan(
                    gpu,
                    &xd,
                    &wd,
                    ep,
                    o32,
                    o16,
                    path.plan(m, n, k),
                    ws.as_deref_mut(),
                ),
                Path::Ws => match ws.as_deref_mut() {
                    Some(ws) => linear_tc_ws(gpu, &xd, &wd, ep, o32, o16, ws),
                    None => Err(crate::error::Error::Other(
                        "the check has no workspace".into(),
                    )),
                },
            };
            if let Err(e) = launched {
                v.push(super::errored(op, &case, e));
                continue;
            }
            if out != Out::F16 {
                v.push(compare(
                    op,
                    &format!("{case} y32"),
                    &download(gpu, &y32)?,
                    &want.data,
                    LINEAR_TC_F32,
                ));
            }
            if out != Out::F32 {
                v.push(compare(
                    op,
                    &format!("{case} y16"),
                    &download(gpu, &y16)?,
                    &want.data,
                    LINEAR_TC_F16,
                ));
            }
        }
        Ok(v)
    };
    run().unwrap_or_else(|e| vec![super::errored(op, &name, e)])
}

fn linear_refusals(gpu: &Gpu) -> CheckResult {
    catch("linear_tc", "refuses bad shapes", || {
        let h = |s: &[usize]| DeviceTensor::empty(s, DType::F16, Layout::RowMajor);
        let f = |s: &[usize]| DeviceTensor::empty(s, DType::F32, Layout::RowMajor);
        let x = h(&[4, 16])?;
        let x12 = h(&[4, 12])?;
        let x32 = f(&[4, 16])?;
        let w = h(&[8, 16])?;
        let w12 = h(&[8, 12])?;
        let w3d = h(&[2, 4, 16])?;
        let b_bad = f(&[7])?;
        let b16 = h(&[8])?;
        let r_bad = f(&[3, 8])?;
        let mut y = f(&[4, 8])?;
        let mut y_bad = f(&[4, 9])?;
        let mut y16_as32 = f(&[4, 8])?;
        let mut y16 = h(&[4, 8])?;
        let ep = EpilogueTc::default();
        let attempts: Vec<(&str, Result<()>)> = vec![
            (
                "K not a multiple of 8",
                linear_tc(gpu, &x12, &w12, ep, Some(&mut y), None),
            ),
            (
                "f32 input",
                linear_tc(gpu, &x32, &w, ep, Some(&mut y), None),
            ),
            (
                "3-D weight",
                linear_tc(gpu, &x, &w3d, ep, Some(&mut y), None),
            ),
            (
                "K mismatch",
                linear_tc(gpu, &x12, &w, ep, Some(&mut y), None),
            ),
            ("no output", linear_tc(gpu, &x, &w, ep, None, None)),
            (
                "output shape",
                linear_tc(gpu, &x, &w, ep, Some(&mut y_bad), None),
            ),
            (
                "f32 tensor as y16",
                linear_tc(gpu, &x, &w, ep, None, Some(&mut y16_as32)),
            ),
            (
                "bias length",
                linear_tc(
                    gpu,
                    &x,
                    &w,
                    EpilogueTc {
                        bias: Some(&b_bad),
                        ..ep
                    },
                    Some(&mut y),
                    None,
                ),
            ),
            (
                "f16 bias",
                linear_tc(
                    gpu,
                    &x,
                    &w,
                    EpilogueTc {
                        bias: Some(&b16),
                        ..ep
                    },
                    Some(&mut y),
                    None,
                ),
            ),
            (
                "residual rows not dividing M",
                linear_tc(
                    gpu,
                    &x,
                    &w,
                    EpilogueTc {
                        residual: Some(&r_bad),
                        ..ep
                    },
                    None,
                    Some(&mut y16),
                ),
            ),
        ];
        Ok(refusal_result("linear_tc", LINEAR_TC_F32, &attempts))
    })
}

fn refusal_result(op: &str, tol: Tolerance, attempts: &[(&str, Result<()>)]) -> CheckResult {
    let accepted: Vec<&str> = attempts
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| *n)
        .collect();
    CheckResult {
        op: op.to_string(),
        case: "refuses bad shapes".to_string(),
        rel_l2: 0.0,
        max_rel: 0.0,
        tol,
        passed: accepted.is_empty(),
        detail: if accepted.is_empty() {
            String::new()
        } else {
            format!("accepted: {}", accepted.join(", "))
        },
    }
}

fn check_linear_tc(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    // Each case through `linear_tc`'s own dispatch and through the 128 x 128 kernel explicitly (most of
    // these sizes leave the big grid short of the GPU, so `linear_tc` runs the small kernel on them).
    let mut out: Vec<CheckResult> = LIN_CASES
        .iter()
        .flat_map(|cs| linear_case(gpu, rng, "linear_tc", cs, &[Path::Auto, Path::Big], None))
        .collect();
    out.push(linear_refusals(gpu));
    out
}

// ---------------------------------------------------------------- linear_tc, few rows (split K)
/// The paths every few-row case runs: the default split plan, `linear_tc` (no split) and one K step
/// per split (the most partials per tile).
const SMALL_PATHS: [Path; 3] = [Path::Ws, Path::Auto, Path::Split(usize::MAX)];

/// The few-row cases: (1) every epilogue combination (bias x GELU x residual none/f32/f16, plain or
/// broadcast rows x output f32/f16/both) over shapes with N not a multiple of 32 and K tails; (2) M in
/// {1, 7, 64, 128, 200} x K in {8, 40, 512, 2048}; (3) the StyleViT base and small GEMMs at 64 and 128
/// tokens, the residual ones also in place (`EpilogueTc::accumulate`); (4) in place with M and N tails.
fn small_cases() -> Vec<LinCase> {
    let mut v = Vec::new();
    let shapes = [
        (7, 45, 512),
        (64, 100, 264),
        (1, 33, 2048),
        (128, 96, 512),
        (200, 70, 520),
        (64, 77, 1024),
    ];
    let mut i = 0;
    for bias in [false, true] {
        for gelu in [false, true] {
            for res in 0..5 {
                for out in [Out::F32, Out::F16, Out::Both] {
                    // res: 0 none, 1 f32 [M], 2 f32 broadcast, 3 f16 [M], 4 f16 broadcast; the
                    // broadcast variants (only the residual row index differs) with the f16 output
                    // only: 4 x (3 x 3 + 2) = 44 cases.
                    if (res == 2 || res == 4) && out != Out::F16 {
                        continue;
                    }
                    let (m, n, k) = shapes[i % shapes.len()];
                    i += 1;
                    let bcast = if m % 4 == 0 { m / 4 } else { 1 };
                    let res = match res {
                        0 => Res::None,
                        1 => Res::F32(m),
                        2 => Res::F32(bcast),
                        3 => Res::F16(m),
                        _ => Res::F16(bcast),
                    };
                    v.push(LinCase {
                        m,
                        n,
                        k,
                        bias,
                        gelu,
                        res,
                        out,
                    });
                }
            }
        }
    }
    for (mi, m) in [1usize, 7, 64, 128, 200].into_iter().enumerate() {
        for (ki, (k, n)) in [(8usize, 1536usize), (40, 200), (512, 513), (2048, 96)]
            .into_iter()
            .enumerate()
        {
            let j = mi * 4 + ki;
            v.push(LinCase {
                m,
                n,
                k,
                bias: j % 2 == 0,
                gelu: j % 3 == 0,
                res: match j % 3 {
                    0 => Res::None,
                    1 => Res::F32(m),
                    _ => Res::F16(1),
                },
                out: [Out::F32, Out::F16, Out::Both][j % 3],
            });
        }
    }
    for m in [64usize, 128] {
        for d in [512usize, 256] {
            let f = 4 * d;
            let gemm = |n, k, gelu, res| LinCase {
                m,
                n,
                k,
                bias: true,
                gelu,
                res,
                out: if matches!(res, Res::None | Res::Acc) {
                    Out::F16
                } else {
                    Out::F32
                },
            };
            v.push(gemm(3 * d, d, false, Res::None));
            v.push(gemm(d, d, false, Res::F32(m)));
            v.push(gemm(f, d, true, Res::None));
            v.push(gemm(d, f, false, Res::F32(m)));
            // The fast StyleViT's in-place residual adds (out-projection and fc2: x16 += ...).
            v.push(gemm(d, d, false, Res::Acc));
            v.push(gemm(d, f, false, Res::Acc));
        }
    }
    // In place with M and N tails, with and without bias, GELU before the add.
    for (m, n, k, bias, gelu) in [(7, 45, 512, false, true), (200, 70, 520, true, false)] {
        v.push(LinCase {
            m,
            n,
            k,
            bias,
            gelu,
            res: Res::Acc,
            out: Out::F16,
        });
    }
    v
}

fn check_linear_tc_small(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    const OP: &str = "linear_tc_small";
    let cases = small_cases();
    let (tiles, slots) = workspace_need(cases.iter().flat_map(|c| {
        SMALL_PATHS
            .iter()
            .map(move |p| (c.m, c.n, p.plan(c.m, c.n, c.k)))
    }));
    let mut ws = match LinearTcWorkspace::with_capacity(tiles, slots) {
        Ok(ws) => ws,
        Err(e) => return vec![super::errored(OP, "workspace", e)],
    };
    let mut out: Vec<CheckResult> = Vec::new();
    for cs in &cases {
        out.extend(linear_case(gpu, rng, OP, cs, &SMALL_PATHS, Some(&mut ws)));
    }
    // The same product three times in a row with one workspace: the counters must be back at 0.
    let again = LinCase {
        m: 64,
        n: 512,
        k: 2048,
        bias: true,
        gelu: false,
        res: Res::F32(64),
        out: Out::Both,
    };
    out.extend(linear_case(
        gpu,
        rng,
        OP,
        &again,
        &[Path::Ws, Path::Ws, Path::Split(usize::MAX), Path::Ws],
        Some(&mut ws),
    ));
    out.push(catch(OP, "workspace counters back at 0", || {
        gpu.synchronize()?;
        let pending = ws.pending_counters()?;
        Ok(CheckResult {
            op: OP.to_string(),
            case: "workspace counters back at 0".to_string(),
            rel_l2: 0.0,
            max_rel: 0.0,
            tol: LINEAR_TC_F32,
            passed: pending == 0,
            detail: if pending == 0 {
                String::new()
            } else {
                format!("{pending} of {} counters not 0", ws.tiles())
            },
        })
    }));
    out.push(small_refusals(gpu));
    out
}

fn small_refusals(gpu: &Gpu) -> CheckResult {
    catch(
        "linear_tc_small",
        "refuses bad plans and workspaces",
        || {
            let x = DeviceTensor::empty(&[64, 512], DType::F16, Layout::RowMajor)?;
            let w = DeviceTensor::empty(&[512, 512], DType::F16, Layout::RowMajor)?;
            let w12 = DeviceTensor::empty(&[512, 12], DType::F16, Layout::RowMajor)?;
            let mut y = DeviceTensor::empty(&[64, 512], DType::F32, Layout::RowMajor)?;
            let mut tiny = LinearTcWorkspace::with_capacity(1, 1)?;
            let ep = EpilogueTc::default();
            let plan = |splits, kps| LinearTcPlan {
                kernel: LinearTcKernel::Small,
                splits,
                ktiles_per_split: kps,
            };
            let attempts: Vec<(&str, Result<()>)> = vec![
                (
                    "workspace too small",
                    linear_tc_ws(gpu, &x, &w, ep, Some(&mut y), None, &mut tiny),
                ),
                (
                    "split without a workspace",
                    linear_tc_plan(
                        gpu,
                        &x,
                        &w,
                        ep,
                        Some(&mut y),
                        None,
                        LinearTcPlan::small(512, 4),
                        None,
                    ),
                ),
                (
                    "splits not covering K",
                    linear_tc_plan(gpu, &x, &w, ep, Some(&mut y), None, plan(1, 4), None),
                ),
                (
                    "an empty split",
                    linear_tc_plan(gpu, &x, &w, ep, Some(&mut y), None, plan(8, 2), None),
                ),
                (
                    "absurd K steps per split",
                    linear_tc_plan(
                        gpu,
                        &x,
                        &w,
                        ep,
                        Some(&mut y),
                        None,
                        plan(1, usize::MAX),
                        None,
                    ),
                ),
                (
                    "zero splits",
                    linear_tc_plan(gpu, &x, &w, ep, Some(&mut y), None, plan(0, 8), None),
                ),
                (
                    "big kernel split",
                    linear_tc_plan(
                        gpu,
                        &x,
                        &w,
                        ep,
                        Some(&mut y),
                        None,
                        LinearTcPlan {
                            splits: 2,
                            ..LinearTcPlan::BIG
                        },
                        None,
                    ),
                ),
                (
                    "K not a multiple of 8 (ws path)",
                    linear_tc_ws(gpu, &x, &w12, ep, Some(&mut y), None, &mut tiny),
                ),
            ];
            Ok(refusal_result("linear_tc_small", LINEAR_TC_F32, &attempts))
        },
    )
}

// ---------------------------------------------------------------- f16 prologue helpers
fn check_prologue(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out = Vec::new();
    // d % 4 == 0 and ≤ 1024: the register-resident row (512, 96, 1024, 4, 1020 with a partial group of
    // lanes); otherwise the strided loop (1, 97, 1028). f16 inputs (`linear_tc_layer_norm_h`, the fast
    // StyleViT's residual stream): the same rows from rounded inputs.
    for &(rows, d, with_res, half) in &[
        (33usize, 512usize, true, false),
        (17, 96, false, false),
        (3, 1, false, false),
        (41, 97, true, false),
        (9, 1024, true, false),
        (5, 1020, false, false),
        (12, 4, true, false),
        (3, 1028, true, false),
        (33, 512, false, true),
        (64, 512, true, true),
        (17, 96, true, true),
        (5, 1020, false, true),
        (41, 97, true, true),
        (3, 1028, false, true),
    ] {
        let name = format!(
            "layer_norm{} {rows}x{d}{}",
            if half { " f16 in" } else { "" },
            if with_res { " +res" } else { "" }
        );
        let run = |rng: &mut Rng64| -> Result<Vec<CheckResult>> {
            let (mut x, mut r) = (random(rng, &[rows, d], -2.0, 3.0), random(rng, &[rows, d], -1.0, 1.0));
            if half {
                (x, r) = (round_tensor_f16(&x), round_tensor_f16(&r));
            }
            let g = random(rng, &[d], 0.5, 1.5);
            let b = random(rng, &[d], -0.5, 0.5);
            let sum = if with_res {
                ops::add(&x, &r)?
            } else {
                x.clone()
            };
            let want = ops::layer_norm(&sum, &g, &b)?;
            let up = |t: &Tensor| DeviceTensor::from_f32(&t.shape, &t.data, Layout::RowMajor);
            let (xd, rd) = if half {
                (DeviceTensor::from_host_f16(&x)?, DeviceTensor::from_host_f16(&r)?)
            } else {
                (up(&x)?, up(&r)?)
            };
            let (gd, bd) = (up(&g)?, up(&b)?);
            let mut y = poisoned(&[rows, d], DType::F32, Layout::RowMajor)?;
            let mut y16 = poisoned(&[rows, d], DType::F16, Layout::RowMajor)?;
            layer_norm_f16(
                gpu,
                &xd,
                with_res.then_some(&rd),
                &gd,
                &bd,
                Some(&mut y),
                &mut y16,
            )?;
            Ok(vec![
                compare(
                    "linear_tc_prologue",
                    &format!("{name} y32"),
                    &download(gpu, &y)?,
                    &want.data,
                    LN_F32,
                ),
                compare(
                    "linear_tc_prologue",
                    &format!("{name} y16"),
                    &download(gpu, &y16)?,
                    &want.data,
                    LINEAR_TC_F16,
                ),
            ])
        };
        out.extend(
            run(rng).unwrap_or_else(|e| vec![super::errored("linear_tc_prologue", &name, e)]),
        );
    }
    // f16 in, f16 out only, no residual (the fast StyleViT's LayerNorms): `linear_tc_layer_norm_hv`
    // (rows not a multiple of its 32 rows per block, lanes with one or no group of 8), and through
    // `layer_norm_f16`'s choice: hv for 8200 rows, `linear_tc_layer_norm_h` for D 520 or 33 rows.
    for &(rows, d, hv) in &[
        (33usize, 512usize, true),
        (70, 384, true),
        (5, 136, true),
        (40, 8, true),
        (1000, 512, true),
        (8200, 512, false),
        (33, 512, false),
        (3, 520, false),
    ] {
        let name = format!("layer_norm f16 in, f16 out {rows}x{d}{}", if hv { " hv" } else { "" });
        out.push(catch("linear_tc_prologue", &name, || {
            let x = round_tensor_f16(&random(rng, &[rows, d], -2.0, 3.0));
            let g = random(rng, &[d], 0.5, 1.5);
            let b = random(rng, &[d], -0.5, 0.5);
            let want = ops::layer_norm(&x, &g, &b)?;
            let up = |t: &Tensor| DeviceTensor::from_f32(&t.shape, &t.data, Layout::RowMajor);
            let mut y16 = poisoned(&[rows, d], DType::F16, Layout::RowMajor)?;
            let (xd, gd, bd) = (DeviceTensor::from_host_f16(&x)?, up(&g)?, up(&b)?);
            if hv {
                layer_norm_f16_hv(gpu, &xd, &gd, &bd, &mut y16)?;
            } else {
                layer_norm_f16(gpu, &xd, None, &gd, &bd, None, &mut y16)?;
            }
            Ok(compare("linear_tc_prologue", &name, &download(gpu, &y16)?, &want.data, LINEAR_TC_F16))
        }));
    }
    out.push(catch("linear_tc_prologue", "layer_norm_f16_hv refuses bad shapes", || {
        let h = |s: &[usize]| DeviceTensor::empty(s, DType::F16, Layout::RowMajor);
        let f = |s: &[usize]| DeviceTensor::empty(s, DType::F32, Layout::RowMajor);
        let (x12, x520, x32, g12, g520, g64) = (h(&[4, 12])?, h(&[4, 520])?, f(&[4, 64])?, f(&[12])?, f(&[520])?, f(&[64])?);
        let (mut y12, mut y520, mut y64) = (h(&[4, 12])?, h(&[4, 520])?, h(&[4, 64])?);
        let attempts: Vec<(&str, Result<()>)> = vec![
            ("D 12 (not a multiple of 8)", layer_norm_f16_hv(gpu, &x12, &g12, &g12, &mut y12)),
            ("D 520", layer_norm_f16_hv(gpu, &x520, &g520, &g520, &mut y520)),
            ("f32 x", layer_norm_f16_hv(gpu, &x32, &g64, &g64, &mut y64)),
        ];
        let mut r = refusal_result("linear_tc_prologue", LINEAR_TC_F16, &attempts);
        r.case = "layer_norm_f16_hv refuses bad shapes".into();
        Ok(r)
    }));
    out
}

// ---------------------------------------------------------------- adain_f16
/// `adain_f16` (in place over the content) and `adain_f16_split` (content and style in one tensor) against
/// `models::ops::adain` on the same f16 values: chunk tails (N not a multiple of 128), a broadcast style,
/// D not a multiple of the 128-channel block, the StyleViT base shape; then the shapes it refuses.
fn check_adain_f16(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    // (B, style B, Nc, Ns, D, alpha, split)
    let cases = [
        (2, 2, 300, 200, 64, 1.0f32, false),
        (3, 1, 129, 37, 132, 0.7, false),
        (1, 1, 2, 2, 4, 0.5, false),
        (2, 2, 4096, 256, 512, 1.0, false),
        (2, 2, 64, 64, 512, 1.0, true),
        (3, 1, 50, 50, 132, 0.3, true),
    ];
    let mut out: Vec<CheckResult> = cases
        .iter()
        .map(|&(b, bs, nc, ns, d, alpha, split)| {
            let name = format!("B{b} Bs{bs} Nc{nc} Ns{ns} D{d} a{alpha}{}", if split { " split" } else { "" });
            catch("adain_f16", &name, || {
                // Channel means far from 0 next to unit spreads: the statistics must not cancel.
                let mut c = random(rng, &[b, nc, d], -1.0, 1.0);
                for (i, v) in c.data.iter_mut().enumerate() {
                    *v += ((i % d) % 7) as f32 - 3.0;
                }
                let (c, s) = (round_tensor_f16(&c), round_tensor_f16(&random(rng, &[bs, ns, d], -3.0, 1.0)));
                let s_full = Tensor::new(&[b, ns, d], s.data.iter().copied().cycle().take(b * ns * d).collect());
                let t = ops::adain(&c, &s_full)?;
                let want: Vec<f32> = t.data.iter().zip(&c.data).map(|(t, c)| alpha * t + (1.0 - alpha) * c).collect();
                let mut part = DeviceTensor::empty(&[adain_f16_part_len(b, nc, bs, ns, d)], DType::F32, Layout::RowMajor)?;
                let got = if split {
                    let mut both = c.data.clone();
                    both.extend_from_slice(&s.data);
                    let both = DeviceTensor::from_host_f16(&Tensor::new(&[b + bs, nc, d], both))?;
                    let mut o = poisoned(&[b, nc, d], DType::F16, Layout::RowMajor)?;
                    adain_f16_split(gpu, &both, b, alpha, &mut o, &mut part)?;
                    download(gpu, &o)?
                } else {
                    let mut x = DeviceTensor::from_host_f16(&c)?;
                    adain_f16(gpu, &mut x, &DeviceTensor::from_host_f16(&s)?, alpha, &mut part)?;
                    download(gpu, &x)?
                };
                Ok(compare("adain_f16", &name, &got, &want, ADAIN_F16))
            })
        })
        .collect();
    out.push(catch("adain_f16", "refuses bad shapes", || {
        let h = |s: &[usize]| DeviceTensor::empty(s, DType::F16, Layout::RowMajor);
        let f = |s: &[usize]| DeviceTensor::empty(s, DType::F32, Layout::RowMajor);
        let (s70, s64, s64_one, s64_b3) = (h(&[2, 10, 70])?, h(&[2, 10, 64])?, h(&[2, 1, 64])?, h(&[3, 10, 64])?);
        let (mut x70, mut x64, mut x64_one, mut x32) = (h(&[2, 10, 70])?, h(&[2, 10, 64])?, h(&[2, 1, 64])?, f(&[2, 10, 64])?);
        let mut part = f(&[adain_f16_part_len(2, 10, 2, 10, 70)])?;
        let mut small = f(&[adain_f16_part_len(2, 10, 2, 10, 64) - 1])?;
        let attempts: Vec<(&str, Result<()>)> = vec![
            ("D 70 (not a multiple of 4)", adain_f16(gpu, &mut x70, &s70, 1.0, &mut part)),
            ("f32 content", adain_f16(gpu, &mut x32, &s64, 1.0, &mut part)),
            ("one content token", adain_f16(gpu, &mut x64_one, &s64, 1.0, &mut part)),
            ("one style token", adain_f16(gpu, &mut x64, &s64_one, 1.0, &mut part)),
            ("style batch 3 for content batch 2", adain_f16(gpu, &mut x64, &s64_b3, 1.0, &mut part)),
            ("scratch one element short", adain_f16(gpu, &mut x64, &s64, 1.0, &mut small)),
        ];
        Ok(refusal_result("adain_f16", ADAIN_F16, &attempts))
    }));
    out
}

// ---------------------------------------------------------------- attention_tc
/// Query rows compared against the CPU: all of them up to 300, else the first and last 80.
fn rows_to_check(nq: usize) -> Vec<usize> {
    if nq <= 300 {
        (0..nq).collect()
    } else {
        (0..80).chain(nq - 80..nq).collect()
    }
}

/// Columns `col + h·dh .. + dh` of rows `rows` of a token-major [B, N, C] tensor as [B, H, rows, dh].
fn gather_heads(t: &Tensor, col: usize, heads: usize, dh: usize, rows: &[usize]) -> Tensor {
    let (b, n, c) = (t.shape[0], t.shape[1], t.shape[2]);
    let mut out = Vec::with_capacity(b * heads * rows.len() * dh);
    for bb in 0..b {
        for h in 0..heads {
            for &r in rows {
                let base = (bb * n + r) * c + col + h * dh;
                out.extend_from_slice(&t.data[base..base + dh]);
            }
        }
    }
    Tensor::new(&[b, heads, rows.len(), dh], out)
}

/// GPU output o [B, Nq, H·dh] at `rows`, in the CPU's [B, H, rows, dh] order.
fn gather_output(
    o: &[f32],
    b: usize,
    nq: usize,
    heads: usize,
    dh: usize,
    rows: &[usize],
) -> Vec<f32> {
    let d = heads * dh;
    let mut out = Vec::with_capacity(b * heads * rows.len() * dh);
    for bb in 0..b {
        for h in 0..heads {
            for &r in rows {
                let base = (bb * nq + r) * d + h * dh;
                out.extend_from_slice(&o[base..base + dh]);
            }
        }
    }
    out
}

/// Self-attention from a fused f16 QKV buffer [B, N, 3D].
fn attention_self_case(
    gpu: &Gpu,
    rng: &mut Rng64,
    b: usize,
    heads: usize,
    n: usize,
    dh: usize,
    kernel: Attn,
) -> CheckResult {
    let name = format!("self B{b} H{heads} N{n} dh{dh}{}", kernel.suffix(gpu, dh, n, heads, b));
    let op = kernel.op();
    catch(op, &name, || {
        let d = heads * dh;
        let qkv = round_tensor_f16(&random(rng, &[b, n, 3 * d], -2.0, 2.0));
        let rows = rows_to_check(n);
        let all: Vec<usize> = (0..n).collect();
        let q = gather_heads(&qkv, 0, heads, dh, &rows);
        let k = gather_heads(&qkv, d, heads, dh, &all);
        let v = gather_heads(&qkv, 2 * d, heads, dh, &all);
        let want = ops::attention(&q, &k, &v)?;
        let qkv_d = DeviceTensor::from_host_f16(&qkv)?;
        let mut o = poisoned(&[b, n, d], DType::F16, Layout::RowMajor)?;
        match kernel {
            Attn::Tc => attention_tc_qkv(gpu, &qkv_d, heads, &mut o)?,
            Attn::TcDefault => {
                let hd = |col| Heads { t: &qkv_d, col };
                attention_tc(gpu, hd(0), hd(d), hd(2 * d), heads, &mut o, false)?
            }
            Attn::Tma(k) => {
                let hd = |col| Heads { t: &qkv_d, col };
                attention_tma(gpu, hd(0), hd(d), hd(2 * d), heads, &mut o, &mut TmaMapCache::default(), k)?
            }
        }
        let got = gather_output(&download(gpu, &o)?, b, n, heads, dh, &rows);
        Ok(compare(
            op,
            &name,
            &got,
            &want.data,
            ATTENTION_TC,
        ))
    })
}

/// Cross attention with Nq != Nk: q [B, Nq, D + 16] read from column 8 (offsets and strides), k and v
/// from one [B, Nk, 2D] buffer.
#[allow(clippy::too_many_arguments)]
fn attention_cross_case(
    gpu: &Gpu,
    rng: &mut Rng64,
    b: usize,
    heads: usize,
    nq: usize,
    nk: usize,
    dh: usize,
    kernel: Attn,
) -> CheckResult {
    let name = format!("cross B{b} H{heads} Nq{nq} Nk{nk} dh{dh}{}", kernel.suffix(gpu, dh, nq, heads, b));
    let op = kernel.op();
    catch(op, &name, || {
        let d = heads * dh;
        let qt = round_tensor_f16(&random(rng, &[b, nq, d + 16], -2.0, 2.0));
        let kv = round_tensor_f16(&random(rng, &[b, nk, 2 * d], -2.0, 2.0));
        let rows = rows_to_check(nq);
        let all: Vec<usize> = (0..nk).collect();
        let q = gather_heads(&qt, 8, heads, dh, &rows);
        let k = gather_heads(&kv, 0, heads, dh, &all);
        let v = gather_heads(&kv, d, heads, dh, &all);
        let want = ops::attention(&q, &k, &v)?;
        let (qd, kvd) = (
            DeviceTensor::from_host_f16(&qt)?,
            DeviceTensor::from_host_f16(&kv)?,
        );
        let mut o = poisoned(&[b, nq, d], DType::F16, Layout::RowMajor)?;
        let (q, k, v) = (Heads { t: &qd, col: 8 }, Heads { t: &kvd, col: 0 }, Heads { t: &kvd, col: d });
        match kernel {
            Attn::Tc => attention_tc(gpu, q, k, v, heads, &mut o, attention_tc_m1_enabled())?,
            Attn::TcDefault => attention_tc(gpu, q, k, v, heads, &mut o, false)?,
            Attn::Tma(kt) => attention_tma(gpu, q, k, v, heads, &mut o, &mut TmaMapCache::default(), kt)?,
        }
        let got = gather_output(&download(gpu, &o)?, b, nq, heads, dh, &rows);
        Ok(compare(
            op,
            &name,
            &got,
            &want.data,
            ATTENTION_TC,
        ))
    })
}

fn attention_refusals(gpu: &Gpu) -> CheckResult {
    catch("attention_tc", "refuses bad shapes", || {
        let h = |s: &[usize]| DeviceTensor::empty(s, DType::F16, Layout::RowMajor);
        let qkv = h(&[1, 10, 192])?;
        let qkv32 = DeviceTensor::empty(&[1, 10, 192], DType::F32, Layout::RowMajor)?;
        let kv_short = h(&[1, 10, 100])?;
        let q_odd = h(&[1, 10, 68])?;
        let mut o = h(&[1, 10, 64])?;
        let mut o48 = h(&[1, 10, 48])?;
        let mut o_len = h(&[1, 11, 64])?;
        let hd = |t, col| Heads { t, col };
        let attempts: Vec<(&str, Result<()>)> = vec![
            ("f32 input", attention_tc_qkv(gpu, &qkv32, 1, &mut o)),
            (
                "head_dim 48",
                attention_tc(gpu, hd(&qkv, 0), hd(&qkv, 48), hd(&qkv, 96), 1, &mut o48, attention_tc_m1_enabled()),
            ),
            ("head_dim 16", attention_tc_qkv(gpu, &qkv, 4, &mut o)),
            (
                "columns past the row",
                attention_tc(
                    gpu,
                    hd(&qkv, 0),
                    hd(&kv_short, 40),
                    hd(&kv_short, 0),
                    1,
                    &mut o,
                    attention_tc_m1_enabled(),
                ),
            ),
            (
                "column offset not a multiple of 8",
                attention_tc(gpu, hd(&q_odd, 4), hd(&qkv, 64), hd(&qkv, 128), 1, &mut o, attention_tc_m1_enabled()),
            ),
            ("output length", attention_tc_qkv(gpu, &qkv, 1, &mut o_len)),
        ];
        Ok(refusal_result("attention_tc", ATTENTION_TC, &attempts))
    })
}

/// The attention kernel a case runs on.
#[derive(Clone, Copy)]
enum Attn {
    /// `attention_tc` as the nets call it (one m-tile per warp where the grid fills the GPU at most once).
    Tc,
    /// `attention_tc` with its default m-tiles only (`allow_m1` false).
    TcDefault,
    /// An `attention_tma` variant.
    Tma(AttnTmaKernel),
}

impl Attn {
    fn op(self) -> &'static str {
        match self {
            Attn::Tc | Attn::TcDefault => "attention_tc",
            Attn::Tma(_) => "attention_tma",
        }
    }

    /// The kernel a case runs, for its name.
    fn suffix(self, gpu: &Gpu, dh: usize, nq: usize, heads: usize, b: usize) -> String {
        let m1 = match self {
            Attn::Tc => true,
            Attn::TcDefault => false,
            Attn::Tma(k) => return format!(" {}", k.entry()),
        };
        attn_tc_choice(dh, nq, heads, b, gpu.sm_count as usize, m1)
            .map_or(String::new(), |(k, _)| format!(" {k}"))
    }
}

/// Sequence lengths of the self-attention cases: single keys, tile tails around 64 and 128, long ones.
const SELF_NS: [usize; 9] = [1, 2, 7, 64, 65, 127, 129, 1000, 4099];

/// `attention_tma` (head_dim 64 only): the self-attention lengths, the StyleViT base shape (8 heads of 64,
/// 4096 tokens, two samples: rows of the next sample follow each one in the buffer), cross attention with
/// column offsets and Nq != Nk, and the shapes it refuses.
fn check_attention_tma(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for &n in &SELF_NS {
        let b = if n <= 129 { 3 } else { 2 };
        let heads = if n <= 1000 { 2 } else { 1 };
        for k in AttnTmaKernel::ALL {
            out.push(attention_self_case(gpu, rng, b, heads, n, 64, Attn::Tma(k)));
        }
    }
    for k in AttnTmaKernel::ALL {
        out.push(attention_self_case(gpu, rng, 2, 8, 4096, 64, Attn::Tma(k)));
    }
    for &(nq, nk) in &[(37, 300), (300, 37), (1, 5000), (200, 129), (129, 1), (193, 300), (385, 129)] {
        for k in AttnTmaKernel::ALL {
            out.push(attention_cross_case(gpu, rng, 2, 2, nq, nk, 64, Attn::Tma(k)));
        }
    }
    out.push(attention_tma_variant_bits(gpu, rng));
    out.push(catch("attention_tma", "refuses bad shapes", || {
        let h = |s: &[usize]| DeviceTensor::empty(s, DType::F16, Layout::RowMajor);
        let (qkv96, qkv192, mut o32, mut o64) = (h(&[1, 4, 96])?, h(&[1, 4, 200])?, h(&[1, 4, 32])?, h(&[1, 4, 64])?);
        let mut maps = TmaMapCache::default();
        let hd = |t, col| Heads { t, col };
        let attempts = [
            ("head_dim 32", attention_tma(gpu, hd(&qkv96, 0), hd(&qkv96, 32), hd(&qkv96, 64), 1, &mut o32, &mut maps, AttnTmaKernel::chosen()).is_ok()),
            ("row length 200 with column 4", attention_tma(gpu, hd(&qkv192, 4), hd(&qkv192, 68), hd(&qkv192, 132), 1, &mut o64, &mut maps, AttnTmaKernel::chosen()).is_ok()),
        ];
        let accepted: Vec<&str> = attempts.iter().filter(|(_, ok)| *ok).map(|(w, _)| *w).collect();
        Ok(CheckResult {
            op: "attention_tma".into(),
            case: "refuses bad shapes".into(),
            rel_l2: 0.0,
            max_rel: 0.0,
            tol: Tolerance::F32,
            passed: accepted.is_empty() && maps.is_empty(),
            detail: if accepted.is_empty() { String::new() } else { format!("accepted: {}", accepted.join(", ")) },
        })
    }));
    out
}

/// The `attention_tma` variants accumulate in the same order: their outputs must be the same bits (8 heads
/// of 64, 1000 tokens over 3 samples: several key tiles and a partial last one, 1000 = 5·192 + 40).
fn attention_tma_variant_bits(gpu: &Gpu, rng: &mut Rng64) -> CheckResult {
    catch("attention_tma", "variants agree bit for bit", || {
        let (b, n, heads) = (3, 1000, 8);
        let d = heads * 64;
        let qkv = DeviceTensor::from_host_f16(&round_tensor_f16(&random(rng, &[b, n, 3 * d], -2.0, 2.0)))?;
        let hd = |col| Heads { t: &qkv, col };
        let mut outs = Vec::new();
        for k in AttnTmaKernel::ALL {
            let mut o = poisoned(&[b, n, d], DType::F16, Layout::RowMajor)?;
            attention_tma(gpu, hd(0), hd(d), hd(2 * d), heads, &mut o, &mut TmaMapCache::default(), k)?;
            outs.push(download(gpu, &o)?);
        }
        let differ = (1..outs.len()).find_map(|v| {
            let i = outs[0].iter().zip(&outs[v]).position(|(x, y)| x.to_bits() != y.to_bits())?;
            Some(format!("index {i}: {} {} {} {}", AttnTmaKernel::ALL[0].entry(), outs[0][i], AttnTmaKernel::ALL[v].entry(), outs[v][i]))
        });
        Ok(CheckResult {
            op: "attention_tma".into(),
            case: "variants agree bit for bit".into(),
            rel_l2: 0.0,
            max_rel: 0.0,
            tol: Tolerance::F32,
            passed: differ.is_none() && outs[0].len() == b * n * d,
            detail: differ.unwrap_or_default(),
        })
    })
}

fn check_attention_tc(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for &dh in &[32, 64, 128] {
        for &n in &SELF_NS {
            let b = if n <= 129 { 2 } else { 1 };
            let heads = if n <= 1000 { 2 } else { 1 };
            out.push(attention_self_case(gpu, rng, b, heads, n, dh, Attn::Tc));
            if dh < 128 {
                // The same shape on the default two-m-tile kernel (the nets' choice on bigger grids).
                out.push(attention_self_case(gpu, rng, b, heads, n, dh, Attn::TcDefault));
            }
        }
    }
    // The StyleViT base shape on one sequence: 8 heads of 64, 4096 tokens.
    out.push(attention_self_case(gpu, rng, 1, 8, 4096, 64, Attn::Tc));
    for &(nq, nk, dh) in &[
        (37, 300, 64),
        (300, 37, 32),
        (37, 300, 128),
        (1, 5000, 64),
        (130, 1, 128),
        (65, 64, 32),
        (200, 129, 64),
    ] {
        out.push(attention_cross_case(gpu, rng, 2, 2, nq, nk, dh, Attn::Tc));
        out.push(attention_cross_case(gpu, rng, 2, 2, nq, nk, dh, Attn::TcDefault));
    }
    out.push(attention_refusals(gpu));
    out
}

// ---------------------------------------------------------------- whole network
/// [B, H, N, dh] heads back to token-major [B, N, H·dh].
fn merge_heads(t: &Tensor) -> Tensor {
    let (b, h, n, dh) = (t.shape[0], t.shape[1], t.shape[2], t.shape[3]);
    let mut out = vec![0f32; t.numel()];
    for bb in 0..b {
        for hh in 0..h {
            for r in 0..n {
                let src = ((bb * h + hh) * n + r) * dh;
                let dst = (bb * n + r) * h * dh + hh * dh;
                out[dst..dst + dh].copy_from_slice(&t.data[src..src + dh]);
            }
        }
    }
    Tensor::new(&[b, n, h * dh], out)
}

/// One post-norm block on the CPU, rounding to f16 exactly where [`GpuStyleVitFast`] stores f16: GEMM
/// inputs and weights, qkv, the attention output, the GELU output, and the residual stream (the block's
/// input, the pre-norm sums, the first LayerNorm's output). Returns the f32 LayerNorm output (the last
/// encoder block's f32 copy); the next block rounds it.
fn emulate_block(blk: &Block, x: &Tensor, heads: usize) -> Result<Tensor> {
    let r = round_tensor_f16;
    let x = &r(x);
    let (n, d) = (x.shape[1], x.shape[2]);
    let dh = d / heads;
    let qkv = r(&ops::linear(&r(x), &r(&blk.w_qkv), Some(&blk.b_qkv))?);
    let all: Vec<usize> = (0..n).collect();
    let (q, k, v) = (
        gather_heads(&qkv, 0, heads, dh, &all),
        gather_heads(&qkv, d, heads, dh, &all),
        gather_heads(&qkv, 2 * d, heads, dh, &all),
    );
    let a = r(&merge_heads(&ops::attention(&q, &k, &v)?));
    let t = r(&ops::add(&ops::linear(&a, &r(&blk.w_out), Some(&blk.b_out))?, x)?);
    let x2 = r(&ops::layer_norm(&t, &blk.norm1_w, &blk.norm1_b)?);
    let h = r(&ops::gelu_tanh(&ops::linear(
        &x2,
        &r(&blk.fc1_w),
        Some(&blk.fc1_b),
    )?));
    let t = r(&ops::add(&ops::linear(&h, &r(&blk.fc2_w), Some(&blk.fc2_b))?, &x2)?);
    Ok(ops::layer_norm(&t, &blk.norm2_w, &blk.norm2_b)?)
}

/// StyleViT's forward pass on the CPU with [`GpuStyleVitFast`]'s f16 roundings (see [`emulate_block`];
/// AdaIN's inputs rounded; the patch embedding, AdaIN's arithmetic and the tail stay f32, `to_pixels` rounds its input and weight).
pub fn emulate_style_vit_fast(
    net: &StyleVit,
    content: &Tensor,
    style: &Tensor,
    alpha: f32,
) -> Result<Tensor> {
    let (p, heads) = (net.cfg.patch_size, net.cfg.num_heads);
    let encode = |img: &Tensor| -> Result<Tensor> {
        // f16 columns (the image rounded) and weights, f32 accumulation, as patch_embed_f16.
        let mut x = ops::patch_embed(
            &round_tensor_f16(img),
            &round_tensor_f16(&net.patch_w),
            &net.patch_b,
            p,
        )?;
        let (n, d) = (x.shape[1], x.shape[2]);
        let pe = ops::sinusoidal(n, d);
        for row in x.data.chunks_exact_mut(n * d) {
            for (v, q) in row.iter_mut().zip(&pe.data) {
                *v += q;
            }
        }
        for blk in &net.encoder {
            x = emulate_block(blk, &x, heads)?;
        }
        Ok(x)
    };
    // AdaIN reads the encoders' f16 tokens (adain_f16).
    let c = round_tensor_f16(&encode(content)?);
    let t = ops::adain(&c, &round_tensor_f16(&encode(style)?))?;
    let mut x = c.clone();
    for (xv, (tv, cv)) in x.data.iter_mut().zip(t.data.iter().zip(&c.data)) {
        *xv = alpha * tv + (1.0 - alpha) * cv;
    }
    for blk in &net.decoder {
        x = emulate_block(blk, &x, heads)?;
    }
    let px = ops::linear(
        &round_tensor_f16(&x),
        &round_tensor_f16(&net.to_pixels_w),
        Some(&net.to_pixels_b),
    )?;
    let (hp, wp) = (content.shape[2] / p, content.shape[3] / p);
    let y = ops::unpatch(&px, hp, wp, p)?;
    let y = ops::relu(&ops::conv2d(
        &y,
        &net.final0_w,
        Some(&net.final0_b),
        1,
        Padding::Zero(1),
        1,
    )?);
    Ok(ops::conv2d(
        &y,
        &net.final2_w,
        Some(&net.final2_b),
        1,
        Padding::Zero(0),
        1,
    )?)
}

/// Cases of the whole-network check: (blocks, content shape, style shape, alpha).
/// (blocks, content, style, alpha). The last three have content and style of one size: the net encodes
/// them as one batch (style batch B, and 1 broadcast to B).
const NET_CASES: [(usize, [usize; 4], [usize; 4], f32); 6] = [
    (1, [1, 3, 32, 48], [1, 3, 24, 24], 1.0),
    (1, [1, 3, 32, 48], [1, 3, 24, 24], 0.6),
    (2, [2, 3, 16, 24], [1, 3, 16, 16], 1.0),
    (2, [2, 3, 16, 24], [2, 3, 16, 24], 1.0),
    (1, [1, 3, 32, 48], [1, 3, 32, 48], 0.7),
    (2, [2, 3, 16, 16], [1, 3, 16, 16], 1.0),
];

fn check_style_vit_fast(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for (blocks, cs, ss, alpha) in NET_CASES {
        let name = format!("{blocks}blk c{cs:?} s{ss:?} a{alpha}");
        let run = |rng: &mut Rng64| -> Result<Vec<CheckResult>> {
            let net = super::vit::random_style_vit(rng, blocks);
            let content = random(rng, &cs, 0.0, 1.0);
            let style = random(rng, &ss, 0.0, 1.0);
            let exact = net.forward(&content, &style, alpha)?;
            let emulated = emulate_style_vit_fast(&net, &content, &style, alpha)?;
            let mut g = GpuStyleVitFast::new(gpu, &net)?;
            // Run twice: the second call (graph replay) reuses the first's buffers and must agree with it.
            let first = g.forward(&content, &style, alpha)?;
            let got = g.forward(&content, &style, alpha)?;
            let mut r = compare(
                "style_vit_fast",
                &format!("{name} vs fp32"),
                &got.data,
                &exact.data,
                STYLE_VIT_FAST,
            );
            let again = compare(
                "style_vit_fast",
                &name,
                &got.data,
                &first.data,
                Tolerance {
                    rel_l2: 1e-6,
                    max_rel: 1e-5,
                },
            );
            if !again.passed {
                r.passed = false;
                r.detail = format!("second forward differs from the first: {}", again.detail);
            }
            let e = compare(
                "style_vit_fast",
                &format!("{name} vs f16 emul"),
                &got.data,
                &emulated.data,
                STYLE_VIT_FAST_VS_EMULATION,
            );
            Ok(vec![r, e])
        };
        out.extend(run(rng).unwrap_or_else(|e| vec![super::errored("style_vit_fast", &name, e)]));
    }
    out
}

// ---------------------------------------------------------------- kernel micro-benchmark
/// One row of [`bench_kernels`]: kernel, shape, median milliseconds, TFLOP/s.
#[derive(Clone, Debug)]
pub struct KernelTiming {
    pub kernel: &'static str,
    pub shape: String,
    pub ms: f64,
    pub tflops: f64,
}

/// Times the four StyleViT GEMMs at few rows: M = `m` tokens, model width `d` (FFN 4d), each as the
/// 128 x 128 kernel, `linear_tc` (its dispatch, no split) and `linear_tc_ws` (split K); the row's
/// `kernel` names the variant and its shape the plan. Each sample is `reps` back-to-back launches
/// between two CUDA events divided by `reps` (direct launches, as a stream of kernels sees them); median
/// of `iters` samples after a warm-up. Not a check (no assertions), e.g.
/// `bench_linear_tc_small(&gpu, 64, 512, 20, 50)`.
pub fn bench_linear_tc_small(
    gpu: &Gpu,
    m: usize,
    d: usize,
    iters: usize,
    reps: usize,
) -> Result<Vec<KernelTiming>> {
    use crate::error::CudaContext;
    use cust::event::{Event, EventFlags};
    let mut rng = <Rng64 as rand::SeedableRng>::seed_from_u64(2);
    let f = 4 * d;
    let gemms: [(&'static str, usize, usize, bool, bool); 4] = [
        ("qkv", 3 * d, d, false, false),
        ("out+res", d, d, false, true),
        ("fc1+gelu", f, d, true, false),
        ("fc2+res", d, f, false, true),
    ];
    let mut ws = LinearTcWorkspace::for_shapes(&gemms.map(|(_, n, k, _, _)| (m, n, k)))?;
    let reps = reps.max(1);
    let start = Event::new(EventFlags::DEFAULT).during("creating an event")?;
    let stop = Event::new(EventFlags::DEFAULT).during("creating an event")?;
    let mut rows = Vec::new();
    for (name, n, k, gelu, with_res) in gemms {
        let x =
            DeviceTensor::from_host_f16(&round_tensor_f16(&random(&mut rng, &[m, k], -1.0, 1.0)))?;
        let bound = 1.0 / (k as f32).sqrt();
        let w = DeviceTensor::from_host_f16(&random(&mut rng, &[n, k], -bound, bound))?;
        let b = random(&mut rng, &[n], -0.1, 0.1);
        let b = DeviceTensor::from_f32(&[n], &b.data, Layout::RowMajor)?;
        let r = random(&mut rng, &[m, n], -1.0, 1.0);
        let r = DeviceTensor::from_f32(&[m, n], &r.data, Layout::RowMajor)?;
        let mut y32 = DeviceTensor::empty(&[m, n], DType::F32, Layout::RowMajor)?;
        let mut y16 = DeviceTensor::empty(&[m, n], DType::F16, Layout::RowMajor)?;
        let ep = EpilogueTc {
            bias: Some(&b),
            gelu,
            residual: with_res.then_some(&r),
            accumulate: false,
        };
        let flops = 2.0 * (m * n * k) as f64;
        for (kernel, path) in [
            ("linear_tc big", Path::Big),
            ("linear_tc", Path::Auto),
            ("linear_tc_ws", Path::Ws),
        ] {
            let plan = path.plan(m, n, k);
            let mut run = || -> Result<()> {
                let (o32, o16) = if with_res {
                    (Some(&mut y32), None)
                } else {
                    (None, Some(&mut y16))
                };
                match path {
                    Path::Ws => linear_tc_ws(gpu, &x, &w, ep, o32, o16, &mut ws),
                    _ => linear_tc_plan(gpu, &x, &w, ep, o32, o16, plan, None),
                }
            };
            run()?;
            gpu.synchronize()?;
            let mut t = Vec::with_capacity(iters.max(1));
            for _ in 0..iters.max(1) {
                start.record(gpu.stream()).during("recording an event")?;
                for _ in 0..reps {
                    run()?;
                }
                stop.record(gpu.stream()).during("recording an event")?;
                stop.synchronize()
                    .during("waiting for the kernel (it may have faulted)")?;
                let ms = stop
                    .elapsed_time_f32(&start)
                    .during("reading the event timer")? as f64;
                t.push(ms / reps as f64);
            }
            t.sort_by(f64::total_cmp);
            let ms = t[t.len() / 2];
            rows.push(KernelTiming {
                kernel,
                shape: format!("{name} {m}x{n}x{k} [{}]", plan_name(plan)),
                ms,
                tflops: flops / ms / 1e9,
            });
        }
    }
    Ok(rows)
}

/// Times `linear_tc` and `attention_tc` (and the fp32 `linear` / `attention` at the same shapes) at
/// StyleViT base shapes: `batch` sequences of `tokens` tokens, D 512, 8 heads of 64, FFN 2048. Median of
/// `iters` runs after one warm-up, CUDA events on the GPU's stream. Not a check (no assertions): for
/// `styleforge bench`-style reporting, e.g. `bench_kernels(&gpu, 8, 4096, 20)`.
pub fn bench_kernels(
    gpu: &Gpu,
    batch: usize,
    tokens: usize,
    iters: usize,
) -> Result<Vec<KernelTiming>> {
    use crate::error::{CudaContext, Error};
    use crate::ops::attention::attention_qkv;
    use crate::ops::linear::{linear_ex, Epilogue};
    use cust::event::{Event, EventFlags};
    use rand::Rng;
    let (d, f, heads) = (512usize, 2048usize, 8usize);
    let m = batch * tokens;
    let mut rng = <Rng64 as rand::SeedableRng>::seed_from_u64(1);
    let mut host = |shape: &[usize], hi: f32| {
        let n: usize = shape.iter().product();
        Tensor::new(shape, (0..n).map(|_| rng.gen_range(-hi..hi)).collect())
    };
    let up32 = |t: &Tensor| DeviceTensor::from_f32(&t.shape, &t.data, Layout::RowMajor);
    let time = |run: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        run()?;
        gpu.synchronize()?;
        let start = Event::new(EventFlags::DEFAULT).during("creating an event")?;
        let stop = Event::new(EventFlags::DEFAULT).during("creating an event")?;
        let mut t = Vec::with_capacity(iters.max(1));
        for _ in 0..iters.max(1) {
            start.record(gpu.stream()).during("recording an event")?;
            run()?;
            stop.record(gpu.stream()).during("recording an event")?;
            stop.synchronize()
                .during("waiting for the kernel (it may have faulted)")?;
            t.push(
                stop.elapsed_time_f32(&start)
                    .during("reading the event timer")? as f64,
            );
        }
        t.sort_by(f64::total_cmp);
        Ok(t[t.len() / 2])
    };
    let mut rows = Vec::new();
    // (name, N, K, gelu, residual)
    let gemms: [(&'static str, usize, usize, bool, bool); 4] = [
        ("qkv", 3 * d, d, false, false),
        ("out+res", d, d, false, true),
        ("fc1+gelu", f, d, true, false),
        ("fc2+res", d, f, false, true),
    ];
    let xs = [host(&[m, d], 1.0), host(&[m, f], 1.0)];
    let res = up32(&host(&[m, d], 1.0))?;
    for (name, n, k, gelu, with_res) in gemms {
        let x = &xs[usize::from(k == f)];
        let w = host(&[n, k], 1.0 / (k as f32).sqrt());
        let b = up32(&host(&[n], 0.1))?;
        let flops = 2.0 * (m * n * k) as f64;
        let shape = format!("{name} {m}x{n}x{k}");
        {
            let (x16, w16) = (
                DeviceTensor::from_host_f16(x)?,
                DeviceTensor::from_host_f16(&w)?,
            );
            let mut y32 = DeviceTensor::empty(&[m, n], DType::F32, Layout::RowMajor)?;
            let mut y16 = DeviceTensor::empty(&[m, n], DType::F16, Layout::RowMajor)?;
            let ep = EpilogueTc {
                bias: Some(&b),
                gelu,
                residual: with_res.then_some(&res),
                accumulate: false,
            };
            let ms = time(&mut || {
                if with_res {
                    linear_tc(gpu, &x16, &w16, ep, Some(&mut y32), None)
                } else {
                    linear_tc(gpu, &x16, &w16, ep, None, Some(&mut y16))
                }
            })?;
            rows.push(KernelTiming {
                kernel: "linear_tc",
                shape: shape.clone(),
                ms,
                tflops: flops / ms / 1e9,
            });
        }
        {
            let (x32, w32) = (up32(x)?, up32(&w)?);
            let mut y = DeviceTensor::empty(&[m, n], DType::F32, Layout::RowMajor)?;
            let ep = Epilogue {
                bias: Some(&b),
                gelu,
                residual: with_res.then_some(&res),
            };
            let ms = time(&mut || linear_ex(gpu, &x32, &w32, ep, &mut y))?;
            rows.push(KernelTiming {
                kernel: "linear (fp32)",
                shape,
                ms,
                tflops: flops / ms / 1e9,
            });
        }
    }
    let qkv = host(&[batch, tokens, 3 * d], 2.0);
    let flops = 4.0 * (batch * tokens * tokens * d) as f64;
    let shape = format!("B{batch} H{heads} N{tokens} dh{}", d / heads);
    {
        let q16 = DeviceTensor::from_host_f16(&qkv)?;
        let mut o = DeviceTensor::empty(&[batch, tokens, d], DType::F16, Layout::RowMajor)?;
        let ms = time(&mut || attention_tc_qkv(gpu, &q16, heads, &mut o))?;
        rows.push(KernelTiming {
            kernel: "attention_tc",
            shape: shape.clone(),
            ms,
            tflops: flops / ms / 1e9,
        });
    }
    {
        let q32 = up32(&qkv)?;
        let mut o = DeviceTensor::empty(&[batch, tokens, d], DType::F32, Layout::RowMajor)?;
        let ms = time(&mut || attention_qkv(gpu, &q32, heads, &mut o))?;
        rows.push(KernelTiming {
            kernel: "attention (fp32)",
            shape,
            ms,
            tflops: flops / ms / 1e9,
        });
    }
    if rows.iter().any(|r| !r.ms.is_finite()) {
        return Err(Error::Other("a kernel timing was not finite".into()));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::half::round_f16;
    use rand::SeedableRng;

    /// The kernel's arithmetic on the CPU for one (batch, head): q [nq, dh], k and v [nk, dh] (f16
    /// values): key tiles of 64, running max, p = 2^(s·c − m·c) in f32, row sums of the f32 p, PV with p
    /// rounded to f16, output rounded to f16.
    fn flash_emulate(q: &[f32], k: &[f32], v: &[f32], nk: usize, dh: usize) -> Vec<f32> {
        let c = (std::f64::consts::LOG2_E / (dh as f64).sqrt()) as f32;
        let mut out = Vec::with_capacity(q.len());
        for qr in q.chunks_exact(dh) {
            let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
            let mut o = vec![0f32; dh];
            for k0 in (0..nk).step_by(64) {
                let keys = k0..(k0 + 64).min(nk);
                let s: Vec<f32> = keys
                    .clone()
                    .map(|j| {
                        qr.iter()
                            .zip(&k[j * dh..(j + 1) * dh])
                            .map(|(a, b)| a * b)
                            .sum()
                    })
                    .collect();
                let m_new = s.iter().cloned().fold(m, f32::max);
                let alpha = (m * c - m_new * c).exp2();
                m = m_new;
                l *= alpha;
                o.iter_mut().for_each(|x| *x *= alpha);
                for (j, sj) in keys.zip(&s) {
                    let p = (sj * c - m * c).exp2();
                    l += p;
                    let ph = round_f16(p);
                    for (x, vv) in o.iter_mut().zip(&v[j * dh..(j + 1) * dh]) {
                        *x += ph * vv;
                    }
                }
            }
            out.extend(o.iter().map(|x| round_f16(x / l)));
        }
        out
    }

    #[test]
    fn attention_tolerance_covers_the_emulated_kernel() {
        let mut rng = Rng64::seed_from_u64(7);
        for &(nq, nk, dh) in &[
            (64usize, 1000usize, 64usize),
            (40, 4099, 64),
            (64, 300, 32),
            (32, 300, 128),
            (16, 1, 64),
        ] {
            let q = round_tensor_f16(&random(&mut rng, &[1, 1, nq, dh], -2.0, 2.0));
            let k = round_tensor_f16(&random(&mut rng, &[1, 1, nk, dh], -2.0, 2.0));
            let v = round_tensor_f16(&random(&mut rng, &[1, 1, nk, dh], -2.0, 2.0));
            let want = ops::attention(&q, &k, &v).unwrap();
            let got = flash_emulate(&q.data, &k.data, &v.data, nk, dh);
            let half = Tolerance {
                rel_l2: ATTENTION_TC.rel_l2 / 2.0,
                max_rel: ATTENTION_TC.max_rel / 2.0,
            };
            let r = compare("attention_tc", "emulation", &got, &want.data, half);
            eprintln!(
                "emulated attention nq {nq} nk {nk} dh {dh}: rel L2 {:.2e}, max rel {:.2e}",
                r.rel_l2, r.max_rel
            );
            assert!(r.passed, "nq {nq} nk {nk} dh {dh}: {r:?}");
        }
    }

    #[test]
    fn linear_f16_tolerance_covers_output_rounding() {
        let mut rng = Rng64::seed_from_u64(8);
        let x = round_tensor_f16(&random(&mut rng, &[300, 512], -1.0, 1.0));
        let w = round_tensor_f16(&random(&mut rng, &[256, 512], -0.044, 0.044));
        let b = random(&mut rng, &[256], -0.5, 0.5);
        for gelu in [false, true] {
            let mut y = ops::linear(&x, &w, Some(&b)).unwrap();
            if gelu {
                y = ops::gelu_tanh(&y);
            }
            let rounded: Vec<f32> = y.data.iter().map(|&v| round_f16(v)).collect();
            let half = Tolerance {
                rel_l2: LINEAR_TC_F16.rel_l2 / 2.0,
                max_rel: LINEAR_TC_F16.max_rel / 2.0,
            };
            let r = compare("linear_tc", "emulation", &rounded, &y.data, half);
            eprintln!(
                "f16 output rounding (gelu {gelu}): rel L2 {:.2e}, max rel {:.2e}",
                r.rel_l2, r.max_rel
            );
            assert!(r.passed, "{r:?}");
        }
    }

    #[test]
    fn style_vit_fast_tolerance_covers_the_emulated_rounding() {
        let mut rng = Rng64::seed_from_u64(9);
        for (blocks, cs, ss, alpha) in NET_CASES {
            let net = crate::selfcheck::vit::random_style_vit(&mut rng, blocks);
            let content = random(&mut rng, &cs, 0.0, 1.0);
            let style = random(&mut rng, &ss, 0.0, 1.0);
            let exact = net.forward(&content, &style, alpha).unwrap();
            let emulated = emulate_style_vit_fast(&net, &content, &style, alpha).unwrap();
            let half = Tolerance {
                rel_l2: STYLE_VIT_FAST.rel_l2 / 2.0,
                max_rel: STYLE_VIT_FAST.max_rel / 2.0,
            };
            let r = compare(
                "style_vit_fast",
                "emulation",
                &emulated.data,
                &exact.data,
                half,
            );
            eprintln!(
                "emulated fast StyleViT {blocks}blk {cs:?} a{alpha}: rel L2 {:.2e}, max rel {:.2e}",
                r.rel_l2, r.max_rel
            );
            assert!(r.passed, "{r:?}");
        }
    }
}
