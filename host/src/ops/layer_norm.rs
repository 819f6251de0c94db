//! `layer_norm` launcher (optionally fused with the residual add before it).
use gpu_kernels::launch::LAYER_NORM_ROWS;

use crate::error::{ensure, Result};
use crate::gpu::{DType, DeviceTensor, Gpu};
use crate::kernel_args;

const OP: &str = "layer_norm";

/// y = LayerNorm(x + residual) · γ + β over the last dimension D (eps 1e-5, biased variance).
/// x, residual, y: same element count, last dimension D; gamma, beta: [D].
pub fn layer_norm(
    gpu: &Gpu,
    x: &DeviceTensor,
    residual: Option<&DeviceTensor>,
    gamma: &DeviceTensor,
    beta: &DeviceTensor,
    y: &mut DeviceTensor,
) -> Result<()> {
    let all_f32 = [Some(x), residual, Some(gamma), Some(beta), Some(&*y)]
        .iter()
        .flatten()
        .all(|t| t.dtype == DType::F32);
    ensure(all_f32, OP, || "f32 tensors only".into())?;
    let d = *x.shape.last().unwrap_or(&0);
    ensure(d > 0 && x.numel() > 0, OP, || {
        format!("x {:?} is empty", x.shape)
    })?;
    let rows = x.numel() / d;
    ensure(
        y.numel() == x.numel() && y.shape.last() == Some(&d),
        OP,
        || format!("y {:?} vs x {:?}", y.shape, x.shape),
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
    ensure(
        rows <= u32::MAX as usize && d <= u32::MAX as usize,
        OP,
        || format!("{rows} rows of {d} are too many"),
    )?;
    let blocks = rows.div_ceil(LAYER_NORM_ROWS as usize);
    ensure(blocks <= i32::MAX as usize, OP, || {
        format!("{rows} rows exceed the grid")
    })?;
    let (r_ptr, has_res) = residual.map_or((0u64, 0u32), |r| (r.ptr(), 1));
    // SAFETY: layer_norm(x, res, gamma, beta, y: f32 pointers, rows, d, has_res: u32): warp w of block b
    // handles row b*LAYER_NORM_ROWS + w < rows, reading x and res (only if has_res) at [row*d, row*d + d)
    // and writing y there; gamma/beta are read at [0, d). All tensors hold rows*d (or d) f32 (checked).
    unsafe {
        gpu.launch(
            "layer_norm",
            (blocks as u32, 1, 1),
            (32 * LAYER_NORM_ROWS, 1, 1),
            0,
            kernel_args!(
                x.ptr(),
                r_ptr,
                gamma.ptr(),
                beta.ptr(),
                y.ptr(),
                rows as u32,
                d as u32,
                has_res
            ),
        )
    }
}
