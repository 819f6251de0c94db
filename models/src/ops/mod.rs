//! CPU reference ops: the semantics of `../shared/reference/torch_reference.py`, written for clarity and
//! reasonable speed (the fixture tests run whole networks on 2 cores). Every function checks its shapes and
//! returns `Error::Shape2` with the op's name on a mismatch. Images are NCHW, tokens [B, N, D], row-major.
//!
//! Each op has the same name as its GPU kernel and launcher (`host/src/ops/<op>.rs`).
use crate::{Result, Tensor};

/// Padding mode of [`conv2d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// `nn.ReflectionPad2d(pad)` then the convolution (TransformerNet).
    Reflect(usize),
    /// Zero padding (`nn.Conv2d(padding=p)`, StyleViT's final 3x3 conv; 0 for patch embedding).
    Zero(usize),
}

/// 2-D convolution, NCHW input [N, C, H, W], weight [K, C, R, S], optional bias [K], given stride.
/// `upsample` = 2 applies nearest x2 upsampling to the input first (UpsampleConvLayer); 1 = none.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: Padding, upsample: usize) -> Result<Tensor> {
    todo!()
}
/// Nearest-neighbour x`factor` upsampling (`F.interpolate(mode="nearest", scale_factor=factor)`).
pub fn upsample_nearest(x: &Tensor, factor: usize) -> Result<Tensor> { todo!() }
/// InstanceNorm2d(affine): per sample and channel, biased variance over H*W, eps 1e-5, then γ, β.
/// `relu` applies ReLU after; `residual` (same shape) is added last (after the optional ReLU).
pub fn instance_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, relu: bool, residual: Option<&Tensor>) -> Result<Tensor> { todo!() }
pub fn relu(x: &Tensor) -> Tensor { todo!() }
/// Elementwise a + b (same shape).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> { todo!() }
/// y = x Wᵀ + b over the last dimension: x [.., in], w [out, in], b [out] (`F.linear`).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> { todo!() }
/// LayerNorm over the last dimension, eps 1e-5, biased variance, weight and bias [D].
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> { todo!() }
/// Exact GELU: 0.5 x (1 + erf(x/√2)).
pub fn gelu(x: &Tensor) -> Tensor { todo!() }
/// Scaled dot-product attention per head: q [B, H, Nq, Dh], k and v [B, H, Nk, Dh] -> [B, H, Nq, Dh],
/// scale 1/√Dh, softmax over keys (Nq and Nk may differ).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> { todo!() }
/// Multi-head self-attention block of the reference (`Attention.forward`): x [B, N, D], w_qkv [3D, D],
/// b_qkv [3D], w_out [D, D], b_out [D], `heads` heads.
pub fn multi_head_attention(x: &Tensor, w_qkv: &Tensor, b_qkv: &Tensor, w_out: &Tensor, b_out: &Tensor, heads: usize) -> Result<Tensor> { todo!() }
/// AdaIN over tokens: c [B, Nc, D], s [B, Ns, D]; per sample and channel, unbiased variance + 1e-5.
pub fn adain(c: &Tensor, s: &Tensor) -> Result<Tensor> { todo!() }
/// Sinusoidal positions [n, d]: pe[t, 2i] = sin(t / 10000^(2i/d)), pe[t, 2i+1] = cos(same).
pub fn sinusoidal(n: usize, d: usize) -> Tensor { todo!() }
/// Patch embedding: Conv2d(3, D, p, stride p) then flatten to tokens [B, (H/p)(W/p), D].
pub fn patch_embed(img: &Tensor, w: &Tensor, b: &Tensor, p: usize) -> Result<Tensor> { todo!() }
/// Unpatch: tokens [B, hp*wp, p*p*3] (already through `to_pixels`) -> image [B, 3, hp*p, wp*p], the
/// reference's reshape(B, hp, wp, p, p, 3).permute(0, 5, 1, 3, 2, 4).
pub fn unpatch(tokens: &Tensor, hp: usize, wp: usize, p: usize) -> Result<Tensor> { todo!() }
