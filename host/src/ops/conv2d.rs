//! `conv2d` launcher (fp32 direct convolution; reflection or zero padding, stride, optional nearest x2
//! upsampling folded into the input addressing).
use models::ops::Padding;

use crate::error::Result;
use crate::gpu::{DeviceTensor, Gpu};

/// y [N, K, P, Q] = conv(upsample(x) padded, w [K, C, R, S]) + b, NCHW f32.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(gpu: &Gpu, x: &DeviceTensor, w: &DeviceTensor, b: Option<&DeviceTensor>, stride: usize, pad: Padding, upsample: usize, y: &mut DeviceTensor) -> Result<()> {
    todo!()
}
