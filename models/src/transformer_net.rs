//! TransformerNet (Johnson et al. 2016) with pytorch/examples fast_neural_style's layout and key names.
use crate::weights::Weights;
use crate::{Result, Tensor};

/// A conv layer: weight [K, C, R, R], bias [K], stride; reflection padding R/2.
pub struct ConvLayer { pub weight: Tensor, pub bias: Tensor, pub stride: usize, pub upsample: usize }
/// InstanceNorm2d(affine) parameters.
pub struct Norm { pub gamma: Tensor, pub beta: Tensor }
pub struct ResidualBlock { pub conv1: ConvLayer, pub in1: Norm, pub conv2: ConvLayer, pub in2: Norm }

/// The network's parameters (fields named as the state dict's prefixes).
pub struct TransformerNet {
    pub conv1: ConvLayer, pub in1: Norm,
    pub conv2: ConvLayer, pub in2: Norm,
    pub conv3: ConvLayer, pub in3: Norm,
    pub res: [ResidualBlock; 5],
    pub deconv1: ConvLayer, pub in4: Norm,
    pub deconv2: ConvLayer, pub in5: Norm,
    pub deconv3: ConvLayer,
}

impl TransformerNet {
    /// Takes every parameter from `weights` (shape-checked), skips the stale `inN.running_mean/var`
    /// entries of old checkpoints, and refuses unknown keys.
    pub fn new(weights: Weights) -> Result<Self> { todo!() }
    /// CPU forward: x [N, 3, H, W] in 0..255 -> raw output [N, 3, H', W'] (H' = H rounded as PyTorch does:
    /// two stride-2 convs then two x2 upsamplings; 250x190 gives 252x192).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> { todo!() }
    /// Output size for an input size, as PyTorch's arithmetic gives it.
    pub fn output_size(h: usize, w: usize) -> (usize, usize) { todo!() }
}
