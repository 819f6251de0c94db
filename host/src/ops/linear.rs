//! `linear` launcher: y = x Wᵀ + b with fused epilogues (GELU, residual add).
use gpu_kernels::launch::{
    LINEAR_BIAS, LINEAR_BM, LINEAR_BN, LINEAR_GELU, LINEAR_RESIDUAL, LINEAR_SMEM_BYTES,
    LINEAR_THREADS,
};

use crate::error::{ensure, Result};
use crate::gpu::{DType, DeviceTensor, Gpu};
use crate::kernel_args;

const OP: &str = "linear";

/// What `linear` does after the matrix product, in this order: + bias, exact GELU, + residual.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a DeviceTensor>,
    pub gelu: bool,
    /// [R, N] (any shape with R·N elements) where R divides M: row m gets residual row `m % R`
    /// (R = M is a plain residual add; R < M broadcasts, e.g. positions over the batch).
    pub residual: Option<&'a DeviceTensor>,
}

/// y = x Wᵀ + b (`F.linear`): x [.., K], w [N, K], b [N], y [.., N] with the same leading elements.
pub fn linear(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    b: Option<&DeviceTensor>,
    y: &mut DeviceTensor,
) -> Result<()> {
    linear_ex(
        gpu,
        x,
        w,
        Epilogue {
            bias: b,
            ..Default::default()
        },
        y,
    )
}

/// y = gelu(x Wᵀ + b) (the feed-forward network's first layer).
pub fn linear_gelu(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    b: Option<&DeviceTensor>,
    y: &mut DeviceTensor,
) -> Result<()> {
    linear_ex(
        gpu,
        x,
        w,
        Epilogue {
            bias: b,
            gelu: true,
            residual: None,
        },
        y,
    )
}

/// `linear` with an explicit epilogue.
pub fn linear_ex(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    ep: Epilogue<'_>,
    y: &mut DeviceTensor,
) -> Result<()> {
    let all_f32 = [Some(x), Some(w), ep.bias, ep.residual, Some(&*y)]
        .iter()
        .flatten()
        .all(|t| t.dtype == DType::F32);
    ensure(all_f32, OP, || "f32 tensors only".into())?;
    ensure(w.shape.len() == 2, OP, || {
        format!("weight must be [N, K], got {:?}", w.shape)
    })?;
    let (n, k) = (w.shape[0], w.shape[1]);
    ensure(n > 0 && k > 0, OP, || format!("empty weight {:?}", w.shape))?;
    ensure(x.shape.last() == Some(&k), OP, || {
        format!(
            "x {:?} does not end in K = {k} (weight {:?})",
            x.shape, w.shape
        )
    })?;
    let m = x.numel() / k;
    ensure(y.shape.last() == Some(&n) && y.numel() == m * n, OP, || {
        format!(
            "y {:?} must hold [{m}, {n}] (x {:?}, weight {:?})",
            y.shape, x.shape, w.shape
        )
    })?;
    ensure(m > 0, OP, || format!("x {:?} has no rows", x.shape))?;
    let fits = |v: usize| v <= i32::MAX as usize;
    ensure(fits(m) && fits(n) && fits(k), OP, || {
        format!("sizes M {m}, N {n}, K {k} exceed the kernel's 32-bit range")
    })?;
    let grid_y = m.div_ceil(LINEAR_BM as usize);
    ensure(grid_y <= 65_535, OP, || {
        format!(
            "M = {m} rows exceed the grid limit ({} rows)",
            65_535 * LINEAR_BM
        )
    })?;
    let mut flags = 0u32;
    let mut b_ptr = 0u64;
    if let Some(b) = ep.bias {
        ensure(b.numel() == n, OP, || {
            format!("bias {:?} must have N = {n} elements", b.shape)
        })?;
        flags |= LINEAR_BIAS;
        b_ptr = b.ptr();
    }
    if ep.gelu {
        flags |= LINEAR_GELU;
    }
    let mut r_ptr = 0u64;
    let mut r_rows = 1usize;
    if let Some(r) = ep.residual {
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
        flags |= LINEAR_RESIDUAL;
        r_ptr = r.ptr();
    }
    let grid = (n.div_ceil(LINEAR_BN as usize) as u32, grid_y as u32, 1);
    // SAFETY: linear(x, w, bias, res, y: f32 pointers, m, n, k_dim, ldx, ldy, res_rows, flags: u32) reads
    // x[0..m*k], w[0..n*k], bias[0..n] (only with LINEAR_BIAS), res[0..r_rows*n] (only with LINEAR_RESIDUAL)
    // and writes y[0..m*n]; every size was checked against the tensors above, and every access in the
    // kernel is guarded by m, n, k. Its shared memory is LINEAR_SMEM_BYTES with LINEAR_THREADS threads.
    unsafe {
        gpu.launch(
            "linear",
            grid,
            (LINEAR_THREADS, 1, 1),
            LINEAR_SMEM_BYTES,
            kernel_args!(
                x.ptr(),
                w.ptr(),
                b_ptr,
                r_ptr,
                y.ptr(),
                m as u32,
                n as u32,
                k as u32,
                k as u32,
                n as u32,
                r_rows as u32,
                flags
            ),
        )
    }
}
