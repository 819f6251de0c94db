//! TransformerNet on the GPU (fp32 path).
use models::{Tensor, TransformerNet};

use crate::error::Result;
use crate::gpu::{DeviceTensor, Gpu};

/// TransformerNet's weights on the device plus per-shape activation buffers (reallocated only when the
/// input shape changes). Borrows the [`Gpu`] so it cannot outlive the context.
pub struct GpuTransformerNet<'g> {
    gpu: &'g Gpu,
    // weights and buffers: added by the implementation
}

impl<'g> GpuTransformerNet<'g> {
    /// Uploads the weights.
    pub fn new(gpu: &'g Gpu, net: &TransformerNet) -> Result<Self> { todo!() }
    /// Queues the forward pass for `x` [N, 3, H, W] (already on the device) on the GPU's stream, with no
    /// host synchronisation; returns the output buffer [N, 3, H', W'] (valid until the next call).
    pub fn forward_device(&mut self, x: &DeviceTensor) -> Result<&DeviceTensor> { todo!() }
    /// Convenience: host tensor in, host tensor out (uploads, runs, synchronises, downloads).
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> { todo!() }
}
