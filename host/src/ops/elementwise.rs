use gpu_kernels::launch::ELEMENTWISE_BLOCK;

use crate::error::{ensure, Result};
use crate::gpu::{blocks_for, DType, DeviceTensor, Gpu};
use crate::kernel_args;

/// y = max(x, 0), elementwise (same shape).
pub fn relu(gpu: &Gpu, x: &DeviceTensor, y: &mut DeviceTensor) -> Result<()> {
    ensure(
        x.dtype == DType::F32 && y.dtype == DType::F32,
        "relu",
        || "f32 tensors only".into(),
    )?;
    ensure(x.shape == y.shape, "relu", || {
        format!("x {:?} vs y {:?}", x.shape, y.shape)
    })?;
    let n = x.numel();
    if n == 0 {
        return Ok(());
    }
    // SAFETY: relu(x: *const f32, y: *mut f32, n: usize) reads x[0..n] and writes y[0..n]; both hold n
    // f32 elements (checked above).
    unsafe {
        gpu.launch(
            "relu",
            (blocks_for(n, ELEMENTWISE_BLOCK), 1, 1),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            kernel_args!(x.ptr(), y.ptr(), n),
        )
    }
}

/// y = a + b, elementwise (all three the same shape).
pub fn add(gpu: &Gpu, a: &DeviceTensor, b: &DeviceTensor, y: &mut DeviceTensor) -> Result<()> {
    let f32s = a.dtype == DType::F32 && b.dtype == DType::F32 && y.dtype == DType::F32;
    ensure(f32s, "add", || "f32 tensors only".into())?;
    ensure(a.shape == b.shape && a.shape == y.shape, "add", || {
        format!(
            "a {:?}, b {:?}, y {:?} must have one shape",
            a.shape, b.shape, y.shape
        )
    })?;
    let n = a.numel();
    if n == 0 {
        return Ok(());
    }
    // SAFETY: add(a: *const f32, b: *const f32, y: *mut f32, n: usize) reads a[0..n], b[0..n] and writes
    // y[0..n]; all three hold n f32 elements (checked above).
    unsafe {
        gpu.launch(
            "add",
            (blocks_for(n, ELEMENTWISE_BLOCK), 1, 1),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            kernel_args!(a.ptr(), b.ptr(), y.ptr(), n),
        )
    }
}
