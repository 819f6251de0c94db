//! `upsample_nearest` launcher.
use gpu_kernels::launch::ELEMENTWISE_BLOCK;

use crate::error::{ensure, Result};
use crate::gpu::{blocks_for, DType, DeviceTensor, Gpu};
use crate::kernel_args;

const OP: &str = "upsample_nearest";

/// y [N, C, H*f, W*f] = nearest upsampling of x [N, C, H, W] by the integer factor `f` (1..=8), f32.
pub fn upsample_nearest(
    gpu: &Gpu,
    x: &DeviceTensor,
    factor: usize,
    y: &mut DeviceTensor,
) -> Result<()> {
    ensure(x.dtype == DType::F32 && y.dtype == DType::F32, OP, || {
        "f32 tensors only".into()
    })?;
    ensure(x.shape.len() == 4, OP, || {
        format!("x must be [N, C, H, W], got {:?}", x.shape)
    })?;
    ensure((1..=8).contains(&factor), OP, || {
        format!("factor {factor} not in 1..=8")
    })?;
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let want = [n, c, h * factor, w * factor];
    ensure(y.shape == want, OP, || {
        format!("y must be {want:?}, got {:?}", y.shape)
    })?;
    let total = y.numel();
    if total == 0 {
        return Ok(());
    }
    let planes = n * c;
    // SAFETY: upsample_nearest(x: *const f32, y: *mut f32, planes, h, w, factor: usize) writes y[i] for
    // i < planes*h*f*w*f = y.numel() and reads x[(plane*h + oy/f)*w + ox/f] < planes*h*w = x.numel().
    unsafe {
        gpu.launch(
            OP,
            (blocks_for(total, ELEMENTWISE_BLOCK), 1, 1),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            kernel_args!(x.ptr(), y.ptr(), planes, h, w, factor),
        )
    }
}
