//! StyleViT on the GPU (fp32 path).
use models::{StyleVit, Tensor};

use crate::error::Result;
use crate::gpu::{DeviceTensor, Gpu};

/// StyleViT's weights on the device plus per-shape buffers. Borrows the [`Gpu`].
pub struct GpuStyleVit<'g> {
    gpu: &'g Gpu,
}

impl<'g> GpuStyleVit<'g> {
    pub fn new(gpu: &'g Gpu, net: &StyleVit) -> Result<Self> { todo!() }
    /// Queues the forward pass on the stream with no host sync; content [B, 3, H, W], style [B or 1, 3, Hs, Ws]
    /// (multiples of the patch size). Returns the output buffer [B, 3, H, W].
    pub fn forward_device(&mut self, content: &DeviceTensor, style: &DeviceTensor, alpha: f32) -> Result<&DeviceTensor> { todo!() }
    pub fn forward(&mut self, content: &Tensor, style: &Tensor, alpha: f32) -> Result<Tensor> { todo!() }
}
