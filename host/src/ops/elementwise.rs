use gpu_kernels::launch::ELEMENTWISE_BLOCK;

use crate::error::{ensure, Result};
use crate::gpu::{blocks_for, DType, DeviceTensor, Gpu};
use crate::kernel_args;

/// y = x * a + b, elementwise.
pub fn scale_add(gpu: &Gpu, x: &DeviceTensor, y: &mut DeviceTensor, a: f32, b: f32) -> Result<()> {
    ensure(x.dtype == DType::F32 && y.dtype == DType::F32, "scale_add", || "f32 tensors only".into())?;
    ensure(x.numel() == y.numel(), "scale_add", || format!("x {:?} vs y {:?}", x.shape, y.shape))?;
    let n = x.numel();
    // SAFETY: scale_add(x: *const f32, y: *mut f32, n: usize, a: f32, b: f32) reads x[0..n] and writes
    // y[0..n]; both tensors hold n f32 elements (checked above).
    unsafe {
        gpu.launch("scale_add", (blocks_for(n, ELEMENTWISE_BLOCK), 1, 1), (ELEMENTWISE_BLOCK, 1, 1), 0,
            kernel_args!(x.ptr(), y.ptr(), n, a, b))
    }
}
