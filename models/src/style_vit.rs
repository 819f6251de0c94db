//! StyleViT: patch embedding, sinusoidal positions, post-norm encoder shared by content and style, AdaIN,
//! decoder, unpatch, 3x3-ReLU-1x1 output conv (`../shared/reference/torch_reference.py`).
use crate::weights::Weights;
use crate::{Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StyleVitConfig { pub patch_size: usize, pub embed_dim: usize, pub num_heads: usize, pub num_blocks: usize, pub ffn_dim: usize }

impl StyleVitConfig {
    /// The seed's named variants (nano, small, base, large), patch 32, head_dim 64.
    pub fn variant(name: &str) -> Option<Self> { todo!() }
    /// From safetensors `__metadata__` if present, else inferred from shapes (heads = embed_dim / 64
    /// unless `heads` is given).
    pub fn from_weights(w: &Weights, heads: Option<usize>) -> Result<Self> { todo!() }
}

/// One post-norm transformer block (keys `attn.w_qkv`, `attn.bias_qkv`, `attn.w_out`, `attn.bias_out`,
/// `ffn.fc1_weight`, `ffn.fc1_bias`, `ffn.fc2_weight`, `ffn.fc2_bias`, `norm1.weight/bias`, `norm2.weight/bias`).
pub struct Block {
    pub w_qkv: Tensor, pub b_qkv: Tensor, pub w_out: Tensor, pub b_out: Tensor,
    pub fc1_w: Tensor, pub fc1_b: Tensor, pub fc2_w: Tensor, pub fc2_b: Tensor,
    pub norm1_w: Tensor, pub norm1_b: Tensor, pub norm2_w: Tensor, pub norm2_b: Tensor,
}

pub struct StyleVit {
    pub cfg: StyleVitConfig,
    /// `patch_embed.proj.weight` [D, 3, p, p], `.bias` [D]
    pub patch_w: Tensor, pub patch_b: Tensor,
    pub encoder: Vec<Block>, pub decoder: Vec<Block>,
    /// `unpatch.to_pixels.weight` [p*p*3, D], `.bias`
    pub to_pixels_w: Tensor, pub to_pixels_b: Tensor,
    /// `final_conv.0.weight` [3, 3, 3, 3], `.0.bias`, `final_conv.2.weight` [3, 3, 1, 1], `.2.bias`
    pub final0_w: Tensor, pub final0_b: Tensor, pub final2_w: Tensor, pub final2_b: Tensor,
}

impl StyleVit {
    pub fn new(cfg: StyleVitConfig, weights: Weights) -> Result<Self> { todo!() }
    /// Encoder on an image [B, 3, H, W] (H, W multiples of p) -> tokens [B, N, D].
    pub fn encode(&self, img: &Tensor) -> Result<Tensor> { todo!() }
    /// content [B, 3, H, W], style [B, 3, Hs, Ws] (multiples of p; B equal, or style batch 1 broadcast),
    /// alpha in 0..1 -> raw output [B, 3, H, W].
    pub fn forward(&self, content: &Tensor, style: &Tensor, alpha: f32) -> Result<Tensor> { todo!() }
}
