//! Self-checks of the Hopper `wgmma` kernels against the CPU reference: `wgmma_probe` (one warpgroup's
//! MMAs on one staged tile: descriptors, 128-byte swizzle, k16 steps, accumulator layout, scale-d),
//! `linear_wg` (the full GEMM with `linear_tc`'s epilogues, M/N tails, the StyleViT shapes) and
//! `linear_tma` (the same cases plus K tails, which only it takes).
//!
//! As in `vit_fast`: inputs are rounded to f16 on the host and the CPU reference runs on the rounded
//! values; outputs are poisoned (NaN) before each launch; the tolerances are `linear_tc`'s (the same
//! arithmetic: exact f16 products, f32 accumulation in another order, optional f16 rounding). Cases with
//! more than `FULL_ROWS` rows compare the first `HEAD_ROWS` and the last `TAIL_ROWS` rows only (rows are
//! independent; this covers whole tiles, tile boundaries and the partial last tile) to keep the CPU
//! reference short. Failures report the flat index within the compared rows, actual and expected.
use models::ops;
use models::Tensor;

use super::vit_fast::{Out, Res, LINEAR_TC_F16, LINEAR_TC_F16_ACC, LINEAR_TC_F32};
use super::{catch, compare, download, errored, poisoned, random, Check, CheckResult, Rng64};
use crate::error::Result;
use crate::gpu::half::round_tensor_f16;
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::ops::linear_tc::EpilogueTc;
use crate::gpu::TmaMapCache;
use crate::ops::linear_tma::linear_tma;
use crate::ops::linear_wg::{linear_wg, wgmma_probe};

pub fn checks() -> Vec<Check> {
    vec![
        Check {
            op: "wgmma_probe",
            run: check_probe,
        },
        Check {
            op: "wgmma_peak",
            run: check_peak,
        },
        Check {
            op: "linear_wg",
            run: check_linear_wg,
        },
        Check {
            op: "linear_tma",
            run: check_linear_tma,
        },
    ]
}

// ---------------------------------------------------------------- wgmma_peak
/// The throughput probe multiplies zeroed shared memory: every thread must write exactly 0 (a NaN left
/// by the poisoned output means a thread never wrote; anything else, that a tile was not zeroed).
fn check_peak(gpu: &Gpu, _rng: &mut Rng64) -> Vec<CheckResult> {
    const OP: &str = "wgmma_peak";
    let mut v = Vec::new();
    for mode in 0..crate::ops::linear_wg::WGMMA_PEAK_MODES.len() as u32 {
        for active in [1u32, 2] {
            let case = format!("mode {mode}, {active} warpgroup(s), 3 blocks x 9 stages");
            v.push(catch(OP, &case, || {
                let mut out = poisoned(&[3 * 256], DType::F32, Layout::RowMajor)?;
                crate::ops::linear_wg::wgmma_peak(gpu, &mut out, 3, 9, mode, active)?;
                Ok(compare(OP, &case, &download(gpu, &out)?, &[0.0; 3 * 256], crate::selfcheck::Tolerance::F32))
            }));
        }
    }
    v
}

// ---------------------------------------------------------------- wgmma_probe
fn check_probe(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    const OP: &str = "wgmma_probe";
    let mut v = Vec::new();
    for n in [128usize, 256] {
        for k in [16usize, 32, 64] {
            let case = format!("64x{n}x{k} ({} k16 steps)", k / 16);
            v.push(catch(OP, &case, || {
                let a = round_tensor_f16(&random(rng, &[64, k], -1.0, 1.0));
                let b = round_tensor_f16(&random(rng, &[n, k], -1.0, 1.0));
                let want = ops::linear(&a, &b, None)?;
                let (ad, bd) = (
                    DeviceTensor::from_host_f16(&a)?,
                    DeviceTensor::from_host_f16(&b)?,
                );
                let mut d = poisoned(&[64, n], DType::F32, Layout::RowMajor)?;
                wgmma_probe(gpu, &ad, &bd, &mut d)?;
                Ok(compare(
                    OP,
                    &case,
                    &download(gpu, &d)?,
                    &want.data,
                    LINEAR_TC_F32,
                ))
            }));
        }
    }
    // A structured case whose every output names its source: a = identity-like (row i has a 1 at
    // column i % k), so d[i][j] = b[j][i % k]; a wrong row/column mapping shows as a permutation.
    v.push(catch(OP, "64x256x64 one-hot a", || {
        let (n, k) = (256usize, 64usize);
        let mut a = Tensor::new(&[64, k], vec![0.0; 64 * k]);
        for i in 0..64 {
            a.data[i * k + i % k] = 1.0;
        }
        // b[j][c] = j + c / 64, rounded to f16 (distinct enough to tell rows and columns apart); every
        // output is one b element times 1, so the expected values are exact.
        let b = round_tensor_f16(&Tensor::new(
            &[n, k],
            (0..n * k)
                .map(|i| (i / k) as f32 + (i % k) as f32 / 64.0)
                .collect(),
        ));
        let want = ops::linear(&a, &b, None)?;
        let (ad, bd) = (
            DeviceTensor::from_host_f16(&a)?,
            DeviceTensor::from_host_f16(&b)?,
        );
        let mut d = poisoned(&[64, n], DType::F32, Layout::RowMajor)?;
        wgmma_probe(gpu, &ad, &bd, &mut d)?;
        Ok(compare(
            OP,
            "64x256x64 one-hot a",
            &download(gpu, &d)?,
            &want.data,
            LINEAR_TC_F32,
        ))
    }));
    v
}

// ---------------------------------------------------------------- linear_wg
/// Row counts above which only the head and tail rows are compared.
const FULL_ROWS: usize = 1024;
const HEAD_ROWS: usize = 256;
const TAIL_ROWS: usize = 300;

struct WgCase {
    m: usize,
    n: usize,
    k: usize,
    bias: bool,
    gelu: bool,
    res: Res,
    out: Out,
}

#[rustfmt::skip]
const WG_CASES: &[WgCase] = &[
    // Smallest legal shape: one row, one n8 block, one K step.
    WgCase { m: 1, n: 8, k: 64, bias: true, gelu: false, res: Res::None, out: Out::Both },
    // M tail (200 = 128 + 72), N = 128 (half of the 256-wide tile zero-filled), one K step.
    WgCase { m: 200, n: 128, k: 64, bias: true, gelu: false, res: Res::None, out: Out::Both },
    WgCase { m: 200, n: 512, k: 512, bias: true, gelu: true, res: Res::None, out: Out::F16 },
    // N = 136 (not a tile multiple), residual broadcast over 4 row blocks.
    WgCase { m: 256, n: 136, k: 128, bias: true, gelu: false, res: Res::F32(64), out: Out::Both },
    WgCase { m: 129, n: 1536, k: 64, bias: true, gelu: true, res: Res::F16(129), out: Out::Both },
    // Long K with an f16 residual broadcast (R = 65 divides 130), no bias.
    WgCase { m: 130, n: 2048, k: 2048, bias: false, gelu: false, res: Res::F16(65), out: Out::F32 },
    WgCase { m: 300, n: 512, k: 2048, bias: false, gelu: true, res: Res::None, out: Out::Both },
    // StyleViT shapes (D 512, FFN 2048) on 4100 tokens (M tail of 4 rows): qkv, fc1 (+gelu), fc2 (+res).
    WgCase { m: 4100, n: 1536, k: 512, bias: true, gelu: false, res: Res::None, out: Out::F16 },
    WgCase { m: 4100, n: 2048, k: 512, bias: true, gelu: true, res: Res::None, out: Out::F16 },
    WgCase { m: 4100, n: 512, k: 2048, bias: true, gelu: false, res: Res::F32(4100), out: Out::Both },
    // In-place residual (y16 += ..., StyleViT's out-projection and fc2): M and N tails, then fc2's shape.
    WgCase { m: 200, n: 136, k: 128, bias: true, gelu: false, res: Res::Acc, out: Out::F16 },
    WgCase { m: 4100, n: 512, k: 2048, bias: true, gelu: false, res: Res::Acc, out: Out::F16 },
];

/// The rows compared for M rows: all, or the head and the tail (as ranges).
#[allow(clippy::single_range_in_vec_init)]
fn compared_rows(m: usize) -> Vec<std::ops::Range<usize>> {
    if m <= FULL_ROWS {
        vec![0..m]
    } else {
        vec![0..HEAD_ROWS, m - TAIL_ROWS..m]
    }
}

/// Elements of `rows` of an [M, n] row-major buffer, concatenated.
fn take_rows(data: &[f32], n: usize, rows: &[std::ops::Range<usize>]) -> Vec<f32> {
    rows.iter()
        .flat_map(|r| data[r.start * n..r.end * n].iter().copied())
        .collect()
}

/// `linear_tma`'s own cases on top of `WG_CASES`: K tails (K % 64 != 0, zero-filled by the copy engine),
/// a K shorter than one step, and the p16 patch embedding's K = 768.
#[rustfmt::skip]
const TMA_CASES: &[WgCase] = &[
    WgCase { m: 77, n: 8, k: 8, bias: true, gelu: false, res: Res::None, out: Out::Both },
    WgCase { m: 300, n: 264, k: 72, bias: true, gelu: true, res: Res::F32(100), out: Out::Both },
    WgCase { m: 1000, n: 512, k: 520, bias: false, gelu: false, res: Res::F16(1000), out: Out::F16 },
    WgCase { m: 2048, n: 512, k: 768, bias: true, gelu: false, res: Res::None, out: Out::Both },
    // The TMA-store epilogue with N % 64 != 0 (the last column box clipped) and an M tail; then an in-place
    // residual with GELU, K and N tails.
    WgCase { m: 300, n: 264, k: 72, bias: true, gelu: true, res: Res::None, out: Out::F16 },
    WgCase { m: 77, n: 72, k: 520, bias: false, gelu: true, res: Res::Acc, out: Out::F16 },
];

/// The kernel a case runs on.
#[derive(Clone, Copy)]
enum Gemm {
    Wg,
    Tma,
}

fn check_linear_wg(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut v: Vec<CheckResult> = WG_CASES.iter().flat_map(|c| wg_case(gpu, rng, c, Gemm::Wg)).collect();
    v.push(refusals(gpu));
    v
}

fn check_linear_tma(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut v: Vec<CheckResult> =
        WG_CASES.iter().chain(TMA_CASES).flat_map(|c| wg_case(gpu, rng, c, Gemm::Tma)).collect();
    v.push(tma_refusals(gpu));
    v
}

fn wg_case(gpu: &Gpu, rng: &mut Rng64, cs: &WgCase, gemm: Gemm) -> Vec<CheckResult> {
    let op = match gemm {
        Gemm::Wg => "linear_wg",
        Gemm::Tma => "linear_tma",
    };
    let WgCase {
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
        // CPU reference on the compared rows only.
        let rows = compared_rows(m);
        let xs = Tensor::new(
            &[rows.iter().map(|r| r.len()).sum(), k],
            take_rows(&x.data, k, &rows),
        );
        let mut want = ops::linear(&xs, &w, bias.then_some(&b))?;
        if gelu {
            want = ops::gelu_tanh(&want);
        }
        if let Some(r) = &r {
            let rr = r.numel() / n;
            let mut i = 0;
            for range in &rows {
                for row in range.clone() {
                    let src = &r.data[(row % rr) * n..(row % rr + 1) * n];
                    for (o, s) in want.data[i..i + n].iter_mut().zip(src) {
                        *o += s;
                    }
                    i += n;
                }
            }
        }
        let (xd, wd) = (
            DeviceTensor::from_host_f16(&x)?,
            DeviceTensor::from_host_f16(&w)?,
        );
        let bd = DeviceTensor::from_f32(&[n], &b.data, Layout::RowMajor)?;
        let acc = matches!(res, Res::Acc);
        let rd = res.device(r.as_ref())?;
        let ep = EpilogueTc {
            bias: bias.then_some(&bd),
            gelu,
            residual: rd.as_ref(),
            accumulate: acc,
        };
        let mut y32 = poisoned(&[m, n], DType::F32, Layout::RowMajor)?;
        // With accumulate, y16 starts as the residual.
        let mut y16 = res.y16_start(r.as_ref(), m, n)?;
        let (o32, o16) = match out {
            Out::F32 => (Some(&mut y32), None),
            Out::F16 => (None, Some(&mut y16)),
            Out::Both => (Some(&mut y32), Some(&mut y16)),
        };
        match gemm {
            Gemm::Wg => linear_wg(gpu, &xd, &wd, ep, o32, o16)?,
            // A fresh cache: the maps are made for this case's buffers.
            Gemm::Tma => linear_tma(gpu, &xd, &wd, ep, o32, o16, &mut TmaMapCache::default())?,
        }
        let part = if m > FULL_ROWS {
            format!(" rows 0..{HEAD_ROWS}+{}..{m}", m - TAIL_ROWS)
        } else {
            String::new()
        };
        let mut v = Vec::new();
        if out != Out::F16 {
            v.push(compare(
                op,
                &format!("{name} y32{part}"),
                &take_rows(&download(gpu, &y32)?, n, &rows),
                &want.data,
                LINEAR_TC_F32,
            ));
        }
        if out != Out::F32 {
            v.push(compare(
                op,
                &format!("{name} y16{part}"),
                &take_rows(&download(gpu, &y16)?, n, &rows),
                &want.data,
                if acc { LINEAR_TC_F16_ACC } else { LINEAR_TC_F16 },
            ));
        }
        Ok(v)
    };
    run().unwrap_or_else(|e| vec![errored(op, &name, e)])
}

/// Shapes `linear_tma` must refuse (K or N not a multiple of 8), on top of the `linear_tc` contract's
/// checks that it shares.
fn tma_refusals(gpu: &Gpu) -> CheckResult {
    catch("linear_tma", "refuses bad shapes", || {
        let h = |s: &[usize]| DeviceTensor::empty(s, DType::F16, Layout::RowMajor);
        let f = |s: &[usize]| DeviceTensor::empty(s, DType::F32, Layout::RowMajor);
        let ep = EpilogueTc::default();
        let mut maps = TmaMapCache::default();
        let (x12, w12) = (h(&[4, 12])?, h(&[8, 12])?);
        let (x64, w12n, w) = (h(&[4, 64])?, h(&[12, 64])?, h(&[8, 64])?);
        let (mut y8, mut y12, mut y16_bad) = (f(&[4, 8])?, f(&[4, 12])?, f(&[4, 8])?);
        let attempts: Vec<(&str, bool)> = vec![
            ("K = 12", linear_tma(gpu, &x12, &w12, ep, Some(&mut y8), None, &mut maps).is_ok()),
            ("N = 12", linear_tma(gpu, &x64, &w12n, ep, Some(&mut y12), None, &mut maps).is_ok()),
            ("no output", linear_tma(gpu, &x64, &w, ep, None, None, &mut maps).is_ok()),
            ("f32 tensor as y16", linear_tma(gpu, &x64, &w, ep, None, Some(&mut y16_bad), &mut maps).is_ok()),
        ];
        let accepted: Vec<&str> = attempts.iter().filter(|(_, ok)| *ok).map(|(what, _)| *what).collect();
        Ok(CheckResult {
            op: "linear_tma".into(),
            case: "refuses bad shapes".into(),
            rel_l2: 0.0,
            max_rel: 0.0,
            tol: super::Tolerance::F32,
            passed: accepted.is_empty() && maps.is_empty(),
            detail: if accepted.is_empty() {
                String::new()
            } else {
                format!("accepted: {}", accepted.join(", "))
            },
        })
    })
}

/// Shapes `linear_wg` must refuse (K not a multiple of 64, N not a multiple of 8), on top of the
/// `linear_tc` contract's checks that it shares.
fn refusals(gpu: &Gpu) -> CheckResult {
    catch("linear_wg", "refuses bad shapes", || {
        let h = |s: &[usize]| DeviceTensor::empty(s, DType::F16, Layout::RowMajor);
        let f = |s: &[usize]| DeviceTensor::empty(s, DType::F32, Layout::RowMajor);
        let ep = EpilogueTc::default();
        let x96 = h(&[4, 96])?;
        let w96 = h(&[8, 96])?;
        let x64 = h(&[4, 64])?;
        let w12 = h(&[12, 64])?;
        let x8 = h(&[4, 8])?;
        let w8 = h(&[8, 8])?;
        let w = h(&[8, 64])?;
        let mut y8 = f(&[4, 8])?;
        let mut y12 = f(&[4, 12])?;
        let mut y16_bad = f(&[4, 8])?;
        let attempts: Vec<(&str, Result<()>)> = vec![
            (
                "K = 96",
                linear_wg(gpu, &x96, &w96, ep, Some(&mut y8), None),
            ),
            ("K = 8", linear_wg(gpu, &x8, &w8, ep, Some(&mut y8), None)),
            (
                "N = 12",
                linear_wg(gpu, &x64, &w12, ep, Some(&mut y12), None),
            ),
            ("no output", linear_wg(gpu, &x64, &w, ep, None, None)),
            (
                "f32 tensor as y16",
                linear_wg(gpu, &x64, &w, ep, None, Some(&mut y16_bad)),
            ),
        ];
        let accepted: Vec<&str> = attempts
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(what, _)| *what)
            .collect();
        Ok(CheckResult {
            op: "linear_wg".into(),
            case: "refuses bad shapes".into(),
            rel_l2: 0.0,
            max_rel: 0.0,
            tol: super::Tolerance::F32,
            passed: accepted.is_empty(),
            detail: if accepted.is_empty() {
                String::new()
            } else {
                format!("accepted: {}", accepted.join(", "))
            },
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_legal_and_cover_the_epilogues() {
        for c in WG_CASES {
            assert!(
                crate::ops::linear_wg::supports(c.n, c.k),
                "{}x{}x{}",
                c.m,
                c.n,
                c.k
            );
            if let Res::F32(r) | Res::F16(r) = c.res {
                assert!(c.m.is_multiple_of(r), "{}: residual rows {r}", c.m);
            }
        }
        let has = |f: &dyn Fn(&WgCase) -> bool| WG_CASES.iter().any(f);
        assert!(has(&|c| c.bias && c.gelu));
        assert!(has(&|c| !c.bias));
        assert!(has(&|c| matches!(c.res, Res::F32(r) if r < c.m)));
        assert!(has(&|c| matches!(c.res, Res::F16(r) if r < c.m)));
        assert!(has(&|c| matches!(c.res, Res::F16(r) if r == c.m)));
        for out in [Out::F32, Out::F16, Out::Both] {
            assert!(has(&|c| c.out == out));
        }
        for n in [128, 512, 1536, 2048] {
            assert!(has(&|c| c.n == n));
        }
        for k in [64, 512, 2048] {
            assert!(has(&|c| c.k == k));
        }
        // M tails: 200 and 4100 rows.
        assert!(has(&|c| c.m == 200) && has(&|c| c.m == 4100));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn compared_rows_cover_head_and_tail() {
        assert_eq!(compared_rows(200), vec![0..200]);
        assert_eq!(compared_rows(4100), vec![0..256, 3800..4100]);
        let data: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert_eq!(
            take_rows(&data, 3, &[0..1, 3..4]),
            vec![0.0, 1.0, 2.0, 9.0, 10.0, 11.0]
        );
    }
}
