//! Fast and exact math that `core` lacks on nvptx64.
use core::arch::asm;

/// `2^x`, approximate (`ex2.approx.ftz.f32`, ~2 ulp).
#[inline(always)]
pub fn ex2_approx(x: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic instruction.
    unsafe {
        asm!("ex2.approx.ftz.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack))
    };
    r
}
/// `e^x` through `ex2.approx` (used by the softmax, where the fp32 path keeps 1e-4 parity).
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    ex2_approx(x * core::f32::consts::LOG2_E)
}
/// Correctly rounded `e^x`-quality exponential for paths that need it.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    libm::expf(x)
}
/// `1/sqrt(x)`, approximate (`rsqrt.approx.f32`).
#[inline(always)]
pub fn rsqrt(x: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic instruction.
    unsafe {
        asm!("rsqrt.approx.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack))
    };
    r
}
/// IEEE square root (`sqrt.rn.f32`).
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic instruction.
    unsafe {
        asm!("sqrt.rn.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack))
    };
    r
}
/// IEEE division (`div.rn.f32`).
#[inline(always)]
pub fn div(a: f32, b: f32) -> f32 {
    a / b
}
/// Fused multiply-add `a * b + c` (`fma.rn.f32`); rustc never contracts by itself.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    core::intrinsics::fmaf32(a, b, c)
}
/// Exact (erf) GELU: `0.5 x (1 + erf(x / sqrt 2))`, as PyTorch's default; erf within 2e-7 absolute
/// (`crate::approx::erf_with`: two short polynomials and one `ex2.approx`, no branches into libm).
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    let e = crate::approx::erf_with(x * core::f32::consts::FRAC_1_SQRT_2, fma, ex2_approx);
    0.5 * x * (1.0 + e)
}
/// GELU, tanh form (PyTorch's `approximate='tanh'`): `0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))`,
/// evaluated as `x / (1 + 2^(-2 log2(e) u))` (the same function: 0.5(1 + tanh u) = sigmoid(2u)) with one
/// `ex2.approx` and one `rcp.approx` (a few ulp relative); the tensor-core GEMMs' epilogue (the fast
/// path). It differs from exact GELU by at most 4.7e-4 absolute (near |x| = 2), below one f16 ulp of the
/// output there. Large negative x: 2^(...) = inf, rcp = 0, result -0.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    // -2·log2(e)·√(2/π) and that times 0.044715.
    const C1: f32 = -2.0 * core::f32::consts::LOG2_E * 0.797_884_6;
    const C3: f32 = C1 * 0.044_715;
    let e = ex2_approx(x * fma(C3, x * x, C1));
    x * rcp_approx(1.0 + e)
}
/// [`gelu_tanh`] through the hardware tanh (`tanh.approx.f32`, one MUFU instruction where [`gelu_tanh`]
/// takes two): `0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))`, `linear_tma`'s GELU. The approximate tanh's
/// error is scaled by 0.5 |x|; the self-check measured `linear_tma`'s GELU outputs within 4.1e-7 rel L2
/// of the CPU's tanh-form GELU in f32 (run 82, H100), far below the f16 rounding of the stored result.
#[inline(always)]
pub fn gelu_tanh_hw(x: f32) -> f32 {
    const C1: f32 = 0.797_884_6;
    const C3: f32 = C1 * 0.044_715;
    let t: f32;
    let u = x * fma(C3, x * x, C1);
    // SAFETY: pure arithmetic instruction.
    unsafe { asm!("tanh.approx.f32 {0}, {1};", out(reg32) t, in(reg32) u, options(pure, nomem, nostack)) };
    let h = 0.5 * x;
    fma(h, t, h)
}
/// `1 / x` (`rcp.approx.ftz.f32`, 1 ulp).
#[inline(always)]
pub fn rcp_approx(x: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic instruction.
    unsafe {
        asm!("rcp.approx.ftz.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack))
    };
    r
}
/// `max.f32`: one FMNMX (NaN-ignoring, unlike [`max`]'s compare and select, which is two instructions).
#[inline(always)]
pub fn fmax(a: f32, b: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic instruction.
    unsafe { asm!("max.f32 {0}, {1}, {2};", out(reg32) r, in(reg32) a, in(reg32) b, options(pure, nomem, nostack)) };
    r
}
/// Chan et al.'s combination of two (count, mean, M2) summaries (either count may be 0).
#[inline(always)]
pub fn chan(a: (f32, f32, f32), b: (f32, f32, f32)) -> (f32, f32, f32) {
    let n = a.0 + b.0;
    if b.0 == 0.0 {
        return a;
    }
    if a.0 == 0.0 {
        return b;
    }
    let delta = b.1 - a.1;
    (
        n,
        a.1 + delta * (b.0 / n),
        a.2 + b.2 + delta * delta * (a.0 * b.0 / n),
    )
}
#[inline(always)]
pub fn max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}
