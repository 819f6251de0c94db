//! `linear_tc` launcher: y = x Wᵀ + b on tensor cores (f16 inputs, f32 accumulation), with the fused
//! epilogues of `linear` (bias, exact GELU, residual) and f32 and/or f16 outputs (host f16 conversions:
//! `gpu::half`; uploads: `DeviceTensor::from_host_f16`).
//!
//! Tensor conventions (row-major, `DType::F16` stores IEEE binary16 bits):
//! * x: `[.., K]` f16 (M = numel / K rows), K a positive multiple of 8 (16-byte cp.async chunks);
//! * w: `[N, K]` f16 (PyTorch `Linear` layout);
//! * bias: `[N]` f32; residual: `[R, N]` f32 or f16 with R dividing M (row m gets residual row m % R);
//! * y32: `[.., N]` f32 and/or y16: `[.., N]` f16 with M·N elements.
use gpu_kernels::launch::{
    ELEMENTWISE_BLOCK, LAYER_NORM_ROWS, LINEAR_TC_BIAS, LINEAR_TC_BM, LINEAR_TC_BN, LINEAR_TC_GELU,
    LINEAR_TC_RESIDUAL, LINEAR_TC_RES_F16, LINEAR_TC_SMEM_BYTES, LINEAR_TC_THREADS,
};

use crate::error::{ensure, Result};
use crate::gpu::{DType, DeviceTensor, Gpu};
use crate::kernel_args;

const OP: &str = "linear_tc";

/// What `linear_tc` does after the matrix product, in this order: + bias, exact GELU, + residual.
#[derive(Clone, Copy, Default)]
pub struct EpilogueTc<'a> {
    /// f32 [N].
    pub bias: Option<&'a DeviceTensor>,
    pub gelu: bool,
    /// f32 or f16 [R, N] (any shape with R·N elements) where R divides M: row m gets residual row
    /// `m % R` (R = M is a plain residual add; R < M broadcasts, e.g. positions over the batch).
    pub residual: Option<&'a DeviceTensor>,
}

/// y = epilogue(x Wᵀ) on tensor cores; writes `y32` (f32) and/or `y16` (f16), at least one. Shapes and
/// types as in the module comment; every violation is an error and nothing is launched.
pub fn linear_tc(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    ep: EpilogueTc<'_>,
    y32: Option<&mut DeviceTensor>,
    y16: Option<&mut DeviceTensor>,
) -> Result<()> {
    ensure(x.dtype == DType::F16 && w.dtype == DType::F16, OP, || {
        format!("x and w must be f16, got {:?} and {:?}", x.dtype, w.dtype)
    })?;
    ensure(w.shape.len() == 2, OP, || {
        format!("weight must be [N, K], got {:?}", w.shape)
    })?;
    let (n, k) = (w.shape[0], w.shape[1]);
    ensure(n > 0 && k > 0, OP, || format!("empty weight {:?}", w.shape))?;
    ensure(k.is_multiple_of(8), OP, || {
        format!("K = {k} must be a multiple of 8 (16-byte f16 chunks)")
    })?;
    ensure(x.shape.last() == Some(&k), OP, || {
        format!(
            "x {:?} does not end in K = {k} (weight {:?})",
            x.shape, w.shape
        )
    })?;
    let m = x.numel() / k;
    ensure(m > 0, OP, || format!("x {:?} has no rows", x.shape))?;
    ensure(y32.is_some() || y16.is_some(), OP, || {
        "no output given (y32 and y16 are both None)".into()
    })?;
    let out_ok = |y: &DeviceTensor, dt: DType| {
        y.dtype == dt && y.shape.last() == Some(&n) && y.numel() == m * n
    };
    if let Some(y) = y32.as_deref() {
        ensure(out_ok(y, DType::F32), OP, || {
            format!(
                "y32 must be f32 holding [{m}, {n}], got {:?} {:?}",
                y.dtype, y.shape
            )
        })?;
    }
    if let Some(y) = y16.as_deref() {
        ensure(out_ok(y, DType::F16), OP, || {
            format!(
                "y16 must be f16 holding [{m}, {n}], got {:?} {:?}",
                y.dtype, y.shape
            )
        })?;
    }
    let fits = |v: usize| v < (1usize << 31);
    ensure(fits(m * k) && fits(n * k) && fits(m * n), OP, || {
        format!("sizes M {m}, N {n}, K {k} exceed the kernel's 32-bit range")
    })?;
    let grid_y = m.div_ceil(LINEAR_TC_BM as usize);
    ensure(grid_y <= 65_535, OP, || {
        format!(
            "M = {m} rows exceed the grid limit ({} rows)",
            65_535 * LINEAR_TC_BM
        )
    })?;
    let mut flags = 0u32;
    let mut b_ptr = 0u64;
    if let Some(b) = ep.bias {
        ensure(b.dtype == DType::F32 && b.numel() == n, OP, || {
            format!(
                "bias must be f32 with N = {n} elements, got {:?} {:?}",
                b.dtype, b.shape
            )
        })?;
        flags |= LINEAR_TC_BIAS;
        b_ptr = b.ptr();
    }
    if ep.gelu {
        flags |= LINEAR_TC_GELU;
    }
    let mut r_ptr = 0u64;
    let mut r_rows = 1usize;
    if let Some(r) = ep.residual {
        ensure(r.dtype == DType::F32 || r.dtype == DType::F16, OP, || {
            format!("residual must be f32 or f16, got {:?}", r.dtype)
        })?;
        r_rows = r.numel() / n;
        ensure(
            r.numel().is_multiple_of(n) && r_rows > 0 && m.is_multiple_of(r_rows),
            OP,
            || {
                format!(
                    "residual {:?} must be [R, {n}] with R dividing M = {m}",
                    r.shape
                )
            },
        )?;
        flags |= LINEAR_TC_RESIDUAL;
        if r.dtype == DType::F16 {
            flags |= LINEAR_TC_RES_F16;
        }
        r_ptr = r.ptr();
    }
    let y32_ptr = y32.map_or(0u64, |y| y.ptr());
    let y16_ptr = y16.map_or(0u64, |y| y.ptr());
    let grid = (n.div_ceil(LINEAR_TC_BN as usize) as u32, grid_y as u32, 1);
    let (m32, n32, k32, rr32) = (m as u32, n as u32, k as u32, r_rows as u32);
    // SAFETY: linear_tc(x, w: *const u16, bias: *const f32, res: *const u8, y32: *mut f32, y16: *mut u16,
    // m, n, k, res_rows, flags: u32) matches the argument list in order and type. The kernel reads
    // x[0..m*k] and w[0..n*k] in 16-byte chunks that start at multiples of 8 elements of rows of k
    // (k % 8 == 0 checked; allocations are 256-byte aligned), clamping rows past M/N to row 0 with a
    // zero-byte copy; bias[0..n] only with LINEAR_TC_BIAS; res[0..r_rows*n] (f32, or f16 with
    // LINEAR_TC_RES_F16) only with LINEAR_TC_RESIDUAL (r_rows ≥ 1); and writes y32/y16[0..m*n] only when
    // non-null. Every size was checked against the tensors above and fits 32 bits; the outputs are
    // exclusive borrows, distinct from the inputs. Block = LINEAR_TC_THREADS threads with
    // LINEAR_TC_SMEM_BYTES of dynamic shared memory (the layout the kernel carves); the grid covers
    // ceil(N/BN) x ceil(M/BM) tiles.
    unsafe {
        gpu.launch(
            "linear_tc",
            grid,
            (LINEAR_TC_THREADS, 1, 1),
            LINEAR_TC_SMEM_BYTES,
            kernel_args!(
                x.ptr(),
                w.ptr(),
                b_ptr,
                r_ptr,
                y32_ptr,
                y16_ptr,
                m32,
                n32,
                k32,
                rr32,
                flags
            ),
        )
    }
}

/// y16 = f16(x) elementwise (round to nearest even, saturating at ±65504): the f16 copy of an f32
/// activation for the next `linear_tc` / `attention_tc`. x f32 and y16 f16 with one element count.
pub fn to_f16(gpu: &Gpu, x: &DeviceTensor, y16: &mut DeviceTensor) -> Result<()> {
    const OP: &str = "linear_tc_to_f16";
    ensure(x.dtype == DType::F32 && y16.dtype == DType::F16, OP, || {
        format!(
            "x must be f32 and y16 f16, got {:?} and {:?}",
            x.dtype, y16.dtype
        )
    })?;
    ensure(x.numel() == y16.numel(), OP, || {
        format!("x {:?} and y16 {:?} differ in size", x.shape, y16.shape)
    })?;
    let n = x.numel();
    ensure(n < (1usize << 31), OP, || {
        format!("{n} elements exceed the kernel's 32-bit range")
    })?;
    if n == 0 {
        return Ok(());
    }
    let n32 = n as u32;
    // SAFETY: linear_tc_to_f16(x: *const f32, y: *mut u16, n: u32) reads x[0..n] and writes y[0..n]
    // (grid-stride loop bounded by n); both tensors hold exactly n elements of their type (checked).
    unsafe {
        gpu.launch(
            OP,
            (crate::gpu::blocks_for(n, ELEMENTWISE_BLOCK), 1, 1),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            kernel_args!(x.ptr(), y16.ptr(), n32),
        )
    }
}

/// LayerNorm(x + residual) · γ + β over the last dimension D (as [`crate::ops::layer_norm::layer_norm`]),
/// writing the f32 result to `y` (optional) and its f16 rounding to `y16` (the next GEMM's operand).
/// x, residual, y: f32 with one element count and last dimension D; gamma, beta: f32 [D]; y16 f16.
pub fn layer_norm_f16(
    gpu: &Gpu,
    x: &DeviceTensor,
    residual: Option<&DeviceTensor>,
    gamma: &DeviceTensor,
    beta: &DeviceTensor,
    y: Option<&mut DeviceTensor>,
    y16: &mut DeviceTensor,
) -> Result<()> {
    const OP: &str = "linear_tc_layer_norm";
    let all_f32 = [Some(x), residual, Some(gamma), Some(beta), y.as_deref()]
        .iter()
        .flatten()
        .all(|t| t.dtype == DType::F32);
    ensure(all_f32 && y16.dtype == DType::F16, OP, || {
        "f32 tensors and an f16 y16 only".into()
    })?;
    let d = *x.shape.last().unwrap_or(&0);
    ensure(d > 0 && x.numel() > 0, OP, || {
        format!("x {:?} is empty", x.shape)
    })?;
    let rows = x.numel() / d;
    if let Some(y) = y.as_deref() {
        ensure(
            y.numel() == x.numel() && y.shape.last() == Some(&d),
            OP,
            || format!("y {:?} vs x {:?}", y.shape, x.shape),
        )?;
    }
    ensure(
        y16.numel() == x.numel() && y16.shape.last() == Some(&d),
        OP,
        || format!("y16 {:?} vs x {:?}", y16.shape, x.shape),
    )?;
    ensure(gamma.numel() == d && beta.numel() == d, OP, || {
        format!(
            "gamma {:?} and beta {:?} must have D = {d} elements",
            gamma.shape, beta.shape
        )
    })?;
    if let Some(r) = residual {
        ensure(r.numel() == x.numel(), OP, || {
            format!("residual {:?} vs x {:?}", r.shape, x.shape)
        })?;
    }
    ensure(x.numel() < (1usize << 31), OP, || {
        format!("{rows} rows of {d} are too many")
    })?;
    let blocks = rows.div_ceil(LAYER_NORM_ROWS as usize);
    let (r_ptr, has_res) = residual.map_or((0u64, 0u32), |r| (r.ptr(), 1));
    let y_ptr = y.map_or(0u64, |y| y.ptr());
    let (rows32, d32) = (rows as u32, d as u32);
    // SAFETY: linear_tc_layer_norm(x, res, gamma, beta: *const f32, y: *mut f32, y16: *mut u16, rows, d,
    // has_res: u32): warp w of block b handles row b*LAYER_NORM_ROWS + w < rows, reading x and res (only
    // if has_res) at [row*d, row*d + d), gamma/beta at [0, d), and writing y (when non-null) and y16
    // there. Every tensor holds rows*d (or d) elements of its type (checked above).
    unsafe {
        gpu.launch(
            OP,
            (blocks as u32, 1, 1),
            (32 * LAYER_NORM_ROWS, 1, 1),
            0,
            kernel_args!(
                x.ptr(),
                r_ptr,
                gamma.ptr(),
                beta.ptr(),
                y_ptr,
                y16.ptr(),
                rows32,
                d32,
                has_res
            ),
        )
    }
}
