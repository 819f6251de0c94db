//! Device tensors: a device allocation with a shape, an element type and a layout.
//!
//! Ordering: the copies and memsets here are cust's synchronous calls, which run on the legacy default
//! stream. The StyleForge stream is a blocking stream (see [`crate::Gpu::new`]), so these calls wait for
//! kernels queued earlier on it, and kernels queued later wait for them: no context-wide synchronisation is
//! needed between an upload and a launch. `Gpu::synchronize` is still the place where kernel faults surface.
use cust::memory::{CopyDestination, DeviceBuffer, DevicePointer};

use crate::error::{CudaContext, Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    BF16,
    F16,
    /// f64: only the InstanceNorm plane sums (`ops::nhwc::NormSums`).
    F64,
}
impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F64 => 8,
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }
}

/// Memory layout of a 4-D image tensor (ignored for token tensors [B, N, D], which are row-major).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
    RowMajor,
}

/// An owned device tensor. Must be dropped before the [`crate::Gpu`] whose context made it.
pub struct DeviceTensor {
    buf: DeviceBuffer<u8>,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub layout: Layout,
}

impl DeviceTensor {
    /// Uninitialised device memory for `shape` (callers write before reading; tests poison it).
    pub fn empty(shape: &[usize], dtype: DType, layout: Layout) -> Result<Self> {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        // SAFETY: u8 has no invalid bit patterns; the contents are written by a kernel or a copy before use.
        let buf =
            unsafe { DeviceBuffer::uninitialized(bytes.max(1)) }.map_err(|e| Error::Cuda {
                what: format!("allocating {bytes} bytes for {shape:?}"),
                source: e,
            })?;
        Ok(DeviceTensor {
            buf,
            shape: shape.to_vec(),
            dtype,
            layout,
        })
    }

    /// Copies a host f32 slice to a new device tensor.
    pub fn from_f32(shape: &[usize], data: &[f32], layout: Layout) -> Result<Self> {
        let n: usize = shape.iter().product();
        crate::error::ensure(n == data.len(), "DeviceTensor::from_f32", || {
            format!("shape {shape:?} has {n} elements, data has {}", data.len())
        })?;
        let mut t = Self::empty(shape, DType::F32, layout)?;
        t.copy_from_f32(data)?;
        Ok(t)
    }

    /// A new f16 tensor holding `data` rounded to f16 (see [`super::half::f32_to_f16`]); blocking copy.
    pub fn from_f32_as_f16(shape: &[usize], data: &[f32], layout: Layout) -> Result<Self> {
        let n: usize = shape.iter().product();
        crate::error::ensure(n == data.len(), "DeviceTensor::from_f32_as_f16", || {
            format!("shape {shape:?} has {n} elements, data has {}", data.len())
        })?;
        let t = Self::empty(shape, DType::F16, layout)?;
        if n > 0 {
            let bytes: Vec<u8> = data
                .iter()
                .flat_map(|&v| super::half::f32_to_f16(v).to_le_bytes())
                .collect();
            t.buf
                .index(..bytes.len())
                .copy_from(&bytes[..])
                .during("copying to the device")?;
        }
        Ok(t)
    }

    /// Copies this f16 tensor to the host as f32 values (exact); blocking, like [`Self::to_vec_f32`].
    pub fn to_vec_f16_as_f32(&self) -> Result<Vec<f32>> {
        crate::error::ensure(self.dtype == DType::F16, "to_vec_f16_as_f32", || {
            format!("tensor is {:?}", self.dtype)
        })?;
        let mut bytes = vec![0u8; self.numel() * 2];
        if !bytes.is_empty() {
            self.buf
                .index(..bytes.len())
                .copy_to(&mut bytes[..])
                .during("copying to the host")?;
        }
        Ok(bytes
            .chunks_exact(2)
            .map(|b| super::half::f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect())
    }

    /// Uploads a host tensor as row-major f16 (GEMM operands), same shape.
    pub fn from_host_f16(t: &models::tensor::Tensor) -> Result<Self> {
        Self::from_f32_as_f16(&t.shape, &t.data, Layout::RowMajor)
    }

    pub fn from_host(t: &models::tensor::Tensor) -> Result<Self> {
        Self::from_f32(&t.shape, &t.data, Layout::Nchw)
    }

    /// Copies host data into this (f32) tensor; blocking.
    pub fn copy_from_f32(&mut self, data: &[f32]) -> Result<()> {
        crate::error::ensure(
            self.dtype == DType::F32 && data.len() == self.numel(),
            "copy_from_f32",
            || {
                format!(
                    "{:?} tensor of {} elements, {} given",
                    self.dtype,
                    self.numel(),
                    data.len()
                )
            },
        )?;
        if data.is_empty() {
            return Ok(());
        }
        let bytes: &[u8] = f32_bytes(data);
        self.buf
            .index(..bytes.len())
            .copy_from(bytes)
            .during("copying to the device")
    }

    /// Copies this (f32) tensor to the host; blocking, ordered after the work queued on the StyleForge stream
    /// (call [`crate::Gpu::synchronize`] first anyway to get a kernel fault reported as such).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        crate::error::ensure(self.dtype == DType::F32, "to_vec_f32", || {
            format!("tensor is {:?}", self.dtype)
        })?;
        let mut out = vec![0f32; self.numel()];
        if out.is_empty() {
            return Ok(out);
        }
        let bytes = f32_bytes_mut(&mut out);
        self.buf
            .index(..bytes.len())
            .copy_to(bytes)
            .during("copying to the host")?;
        Ok(out)
    }

    pub fn to_host(&self) -> Result<models::tensor::Tensor> {
        Ok(models::tensor::Tensor {
            shape: self.shape.clone(),
            data: self.to_vec_f32()?,
        })
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
    /// Raw device address, for kernel arguments.
    pub fn ptr(&self) -> u64 {
        self.buf.as_device_ptr().as_raw()
    }
    pub fn device_ptr(&self) -> DevicePointer<u8> {
        self.buf.as_device_ptr()
    }
    /// Reinterprets the shape (same element count).
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        crate::error::ensure(n == self.numel(), "reshape", || {
            format!("{:?} -> {shape:?}", self.shape)
        })?;
        self.shape = shape.to_vec();
        Ok(self)
    }
    /// Downloads an f64 tensor.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        crate::error::ensure(self.dtype == DType::F64, "to_vec_f64", || format!("tensor is {:?}", self.dtype))?;
        let mut bytes = vec![0u8; self.numel() * 8];
        if !bytes.is_empty() {
            self.buf.index(..bytes.len()).copy_to(&mut bytes[..]).during("copying to the host")?;
        }
        Ok(bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect())
    }
    /// Queues a zero fill of the whole tensor on `gpu`'s stream (a memset node when a graph is being
    /// captured; unlike [`Self::fill_bytes`], which uses the legacy default stream).
    pub fn zero_async(&mut self, gpu: &crate::Gpu) -> Result<()> {
        // SAFETY: the pointer and byte count are this tensor's own allocation; the stream is the GPU's, alive
        // for the call; the memset is ordered after the stream's earlier work and before its later work.
        let r = unsafe {
            cust::sys::cuMemsetD8Async(self.buf.as_device_ptr().as_raw(), 0, self.bytes(), gpu.stream().as_inner())
        };
        crate::gpu::graph::check(r, "cuMemsetD8Async")
    }
    /// Fills every byte with `byte` (tests poison outputs with 0xff = NaN before a kernel writes them).
    pub fn fill_bytes(&mut self, byte: u8) -> Result<()> {
        self.buf.set_8(byte).during("memset")
    }
}

fn f32_bytes(d: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte view of it is valid; lengths are multiplied by 4.
    unsafe { std::slice::from_raw_parts(d.as_ptr() as *const u8, d.len() * 4) }
}
fn f32_bytes_mut(d: &mut [f32]) -> &mut [u8] {
    // SAFETY: every byte pattern is a valid f32 bit pattern; lengths are multiplied by 4.
    unsafe { std::slice::from_raw_parts_mut(d.as_mut_ptr() as *mut u8, d.len() * 4) }
}
