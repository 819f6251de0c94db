//! GPU-vs-CPU checks on fresh random inputs: the body of `styleforge self-check` and of the GPU tests.
//!
//! Each op module registers its cases in [`all_checks`]; a check runs the GPU launcher on random data
//! (outputs poisoned with NaN first, so an unwritten element fails), the CPU reference on the same data,
//! and compares with a tolerance preset. Failures report the index, the actual and the expected value.
pub mod cnn;
pub mod conv2d_tc;
pub mod conv2d_tc_taps;
pub mod conv2d_tma;
pub mod conv2d_wg;
pub mod fast;
pub mod graph;
pub mod linear_wg;
pub mod psnr;
pub mod random_weights;
pub mod vit;
pub mod vit_fast;

use models::Tensor;
use rand::{Rng, SeedableRng};

use crate::error::Result;
use crate::gpu::Gpu;

/// Tolerance presets (relative L2 ‖gpu − cpu‖/‖cpu‖, and max |gpu − cpu| / max |cpu|).
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub rel_l2: f64,
    pub max_rel: f64,
}
impl Tolerance {
    /// fp32 kernels whose summation order differs from the CPU's.
    pub const F32: Tolerance = Tolerance {
        rel_l2: 1e-5,
        max_rel: 1e-4,
    };
    /// fp32 with long reductions or approximate exponentials (attention, whole networks).
    pub const F32_LOOSE: Tolerance = Tolerance {
        rel_l2: 1e-4,
        max_rel: 1e-3,
    };
    /// bf16/fp16 tensor-core paths.
    pub const HALF: Tolerance = Tolerance {
        rel_l2: 1e-2,
        max_rel: 5e-2,
    };
}

/// One comparison's outcome.
#[derive(Clone, Debug)]
pub struct CheckResult {
    pub op: String,
    pub case: String,
    pub rel_l2: f64,
    pub max_rel: f64,
    pub tol: Tolerance,
    pub passed: bool,
    /// First offending element, or the error that stopped the check.
    pub detail: String,
}

/// A named check: runs on a GPU with a seed, returns one result per case.
pub struct Check {
    pub op: &'static str,
    pub run: fn(&Gpu, &mut Rng64) -> Vec<CheckResult>,
}

pub type Rng64 = rand::rngs::StdRng;

/// Every registered check.
pub fn all_checks() -> Vec<Check> {
    let mut v = cnn::checks();
    v.extend(vit::checks());
    v.extend(conv2d_tc::checks());
    v.extend(conv2d_tc_taps::checks());
    v.extend(conv2d_wg::checks());
    v.extend(conv2d_tma::checks());
    v.extend(graph::checks());
    v.extend(fast::checks());
    v.extend(vit_fast::checks());
    v.extend(linear_wg::checks());
    v
}

/// Runs the checks whose op name contains `filter` (all when `None`).
pub fn run(gpu: &Gpu, filter: Option<&str>, seed: u64) -> Vec<CheckResult> {
    let mut rng = Rng64::seed_from_u64(seed);
    let mut out = Vec::new();
    for c in all_checks() {
        if filter.is_some_and(|f| !c.op.contains(f)) {
            continue;
        }
        out.extend((c.run)(gpu, &mut rng));
    }
    out
}

/// Compares `actual` (GPU) with `expected` (CPU). NaN anywhere fails.
pub fn compare(
    op: &str,
    case: &str,
    actual: &[f32],
    expected: &[f32],
    tol: Tolerance,
) -> CheckResult {
    let mk = |rel_l2, max_rel, passed, detail: String| CheckResult {
        op: op.to_string(),
        case: case.to_string(),
        rel_l2,
        max_rel,
        tol,
        passed,
        detail,
    };
    if actual.len() != expected.len() {
        return mk(
            f64::NAN,
            f64::NAN,
            false,
            format!("length {} vs expected {}", actual.len(), expected.len()),
        );
    }
    let scale = expected
        .iter()
        .fold(0f64, |m, v| m.max(v.abs() as f64))
        .max(1e-30);
    let (mut num, mut den, mut worst, mut worst_i) = (0f64, 0f64, 0f64, 0usize);
    let mut first_bad: Option<usize> = None;
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let (a, e) = (*a as f64, *e as f64);
        let d = (a - e).abs();
        if !a.is_finite() || d.is_nan() {
            first_bad.get_or_insert(i);
            worst = f64::INFINITY;
            worst_i = i;
            continue;
        }
        num += d * d;
        den += e * e;
        if d / scale > worst {
            worst = d / scale;
            worst_i = i;
        }
        if d / scale > tol.max_rel {
            first_bad.get_or_insert(i);
        }
    }
    let rel = if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    };
    let passed = first_bad.is_none() && rel <= tol.rel_l2 && worst <= tol.max_rel;
    let i = first_bad.unwrap_or(worst_i);
    let detail = if expected.is_empty() {
        String::new()
    } else {
        format!("index {i}: actual {} expected {}", actual[i], expected[i])
    };
    mk(rel, worst, passed, detail)
}

/// A failed check carrying an error instead of numbers.
pub fn errored(op: &str, case: &str, e: impl std::fmt::Display) -> CheckResult {
    CheckResult {
        op: op.to_string(),
        case: case.to_string(),
        rel_l2: f64::NAN,
        max_rel: f64::NAN,
        tol: Tolerance::F32,
        passed: false,
        detail: format!("error: {e}"),
    }
}

/// Turns a fallible check body into a result.
pub fn catch(op: &str, case: &str, f: impl FnOnce() -> Result<CheckResult>) -> CheckResult {
    f().unwrap_or_else(|e| errored(op, case, e))
}

/// A device tensor filled with 0xff bytes (NaN in f32), so an element a kernel fails to write fails the check.
pub fn poisoned(
    shape: &[usize],
    dtype: crate::gpu::DType,
    layout: crate::gpu::Layout,
) -> Result<crate::gpu::DeviceTensor> {
    let mut t = crate::gpu::DeviceTensor::empty(shape, dtype, layout)?;
    t.fill_bytes(0xff)?;
    Ok(t)
}

/// Waits for the stream (surfacing kernel faults), then downloads an f32 or f16 tensor as f32 values.
pub fn download(gpu: &Gpu, t: &crate::gpu::DeviceTensor) -> Result<Vec<f32>> {
    gpu.synchronize()?;
    match t.dtype {
        crate::gpu::DType::F16 => t.to_vec_f16_as_f32(),
        _ => t.to_vec_f32(),
    }
}

/// Uniform random tensor in [lo, hi).
pub fn random(rng: &mut Rng64, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.gen_range(lo..hi)).collect())
}

/// Formats results as the table `self-check` prints.
pub fn table(results: &[CheckResult]) -> String {
    let mut s = format!(
        "{:<22} {:<34} {:>10} {:>10} {:>9}  {}\n",
        "op", "case", "rel L2", "max rel", "tol", "result"
    );
    for r in results {
        s += &format!(
            "{:<22} {:<34} {:>10.2e} {:>10.2e} {:>9.0e}  {}{}\n",
            r.op,
            r.case,
            r.rel_l2,
            r.max_rel,
            r.tol.rel_l2,
            if r.passed { "pass" } else { "FAIL" },
            if r.passed {
                String::new()
            } else {
                format!("  ({})", r.detail)
            }
        );
    }
    let passed = results.iter().filter(|r| r.passed).count();
    s += &format!("{} passed, {} failed\n", passed, results.len() - passed);
    s
}

/// The result of a "refuses bad shapes" check: passes when no bad call was `accepted` (their names) and the
/// control call (the same launch with valid arguments) was taken (`control_error` is None).
pub fn refusal_result(op: &str, accepted: &[&str], control_error: Option<String>) -> CheckResult {
    let mut detail = if accepted.is_empty() { String::new() } else { format!("accepted: {}", accepted.join(", ")) };
    if let Some(e) = &control_error {
        detail = format!("{detail} refused a valid call: {e}");
    }
    CheckResult {
        op: op.to_string(),
        case: "refuses bad shapes".to_string(),
        rel_l2: 0.0,
        max_rel: 0.0,
        tol: Tolerance::F32,
        passed: accepted.is_empty() && control_error.is_none(),
        detail,
    }
}
