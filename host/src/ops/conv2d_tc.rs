//! `conv2d_tc` launcher: f16 implicit-GEMM convolution on tensor cores (fp32 accumulation), plus the host
//! helpers it needs (weight packing, NCHW <-> NHWC).
//!
//! Tensor conventions (shapes are in memory order):
//! * x: `[N, H, W, C]` f16, `Layout::Nhwc`, C a multiple of 8, or C = 4 (the packed RGB input, K = 32);
//! * w: a [`TcWeight`]: f16 `[K, kw]`, each row the `[R][S][C]` filter zero-padded to kw (a multiple of
//!   `CONV2D_TC_BK`), K in {8, 32, 64, 128}, R = S in {3, 9};
//! * output, one of [`ConvOut`]: NHWC f16 `[N, P, Q, K]` plus InstanceNorm partials (for
//!   `ops::nhwc::nhwc_in_coef`), or NCHW f32 `[N, k_real, P, Q]` plus bias (the last layer).
//!
//! Two halo-staged 9x9 special cases: [`conv2d_tc_halo9`] (the last layer, 32 -> 3, NCHW f32 + bias) and
//! [`conv2d_tc_c4_halo9`] (conv1, 4 packed channels -> 32, NHWC f16 + InstanceNorm partials over 2-D tiles,
//! described by a [`PartTiling`]; `STYLEFORGE_CONV1=gather` keeps the fast net on [`conv2d_tc`] for A/B).
//!
//! Padding is reflection by `pad` = R / 2 in upsampled coordinates; `upsample` (1 or 2) repeats every
//! input pixel (nearest) before padding, as `models::ops::conv2d(.., Padding::Reflect(pad), upsample)`.
//!
//! Optionally ([`ConvOpts::input_norm`], through [`conv2d_tc_opts`] / [`conv2d_tc_halo9_in`]) the input is the raw
//! output of the previous conv and its InstanceNorm + ReLU is applied to every element as it lands in
//! shared memory (C % 8 == 0 inputs), instead of by a separate `nhwc_in_apply` pass.
use gpu_kernels::launch::{
    conv2d_tc_bm, conv2d_tc_in_norm_smem, conv2d_tc_kw, conv2d_tc_smem, conv2d_tc_variant, Conv2dTcVariant, CONV2D_TC_C4H_K, CONV2D_TC_C4H_SMEM, CONV2D_TC_C4H_TH, CONV2D_TC_C4H_TW,
    CONV2D_TC_C4H_W_ELEMS, CONV2D_TC_HALO_C, conv2d_tc_alternative, CONV2D_TC_HALO_SMEM, CONV2D_TC_HALO_TH, CONV2D_TC_HALO_TW,
    CONV2D_TC_HALO_W_ELEMS, CONV2D_TC_OUT_F16_STATS, CONV2D_TC_OUT_NCHW_BIAS, CONV2D_TC_SUBPIXEL, CONV2D_TC_THREADS, InNorm,
};
use models::ops::Padding;
use models::Tensor;

use crate::error::{ensure, Error, Result};
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::kernel_args;
use crate::ops::conv2d::conv2d_output_size;
use crate::ops::nhwc::{NormCoef, NormStats, SumsSlot};

const OP: &str = "conv2d_tc";
/// Most dynamic shared memory a block may opt in to (sm_90: 227 KB).
const MAX_SMEM: u32 = gpu_kernels::launch::MAX_SMEM_PER_BLOCK;
/// Environment variable choosing the K = 32, 256-pixel kernel for A/B timing: `bk64` selects
/// `conv2d_tc_k32` (GEMM-K step 64, one block per SM) instead of the default `conv2d_tc_k32_bk32` (step
/// 32, two blocks per SM; measured faster: deconv2 at 1024x1024 0.347 vs 0.371 ms, H200). Both use the
/// same tiles, so the InstanceNorm partials are unchanged. Read once per process.
pub const K32_VARIANT_ENV: &str = "STYLEFORGE_CONV_TC_K32";

/// The kernel variant [`conv2d_tc`] launches for `k` output channels, `c` input channels and `bm`-pixel
/// tiles (`launch::conv2d_tc_variant`, with the [`K32_VARIANT_ENV`] override), or `None`.
pub fn conv2d_tc_pick(k: u32, c: u32, bm: u32) -> Option<Conv2dTcVariant> {
    static K32_BK64: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let v = conv2d_tc_variant(k, c, bm)?;
    if *K32_BK64.get_or_init(|| std::env::var(K32_VARIANT_ENV).is_ok_and(|s| s == "bk64")) {
        if let Some(alt) = conv2d_tc_alternative(v) {
            return Some(alt);
        }
    }
    Some(v)
}

fn dims4(what: &str, t: &Tensor) -> Result<[usize; 4]> {
    match t.shape[..] {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(Error::Shape { op: OP, msg: format!("{what} must be 4-D, got {:?}", t.shape) }),
    }
}

/// A weight packed for [`conv2d_tc`]: f16 `[K, kw]` on the device.
pub struct TcWeight {
    pub data: DeviceTensor,
    /// Output channels (padded), filter size, input channels (padded), padded row length.
    pub k: usize,
    pub r: usize,
    pub c: usize,
    pub kw: usize,
    /// The sub-pixel form of an upsample-2 3x3 conv ([`pack_weight_subpixel`]): `data` is `[4K, kw]`
    /// (one `[K, kw]` matrix of summed 2x2 weights per output parity) and `r` is 2.
    pub subpixel: bool,
}

/// Packs an NCHW-style f32 weight `[K, C, R, R]` as rows `[R][R][C']` zero-padded to C' = max(C, c_pad)
/// input channels, max(K, k_pad) rows, each row zero-padded to `conv2d_tc_kw(R*R*C')`. Returns
/// (K', C', kw, data) with the values still f32 (rounded to f16 on upload).
pub fn pack_weight(w: &Tensor, c_pad: usize, k_pad: usize) -> Result<(usize, usize, usize, Vec<f32>)> {
    let [k, c, r, s] = dims4("weight", w)?;
    ensure(r == s, OP, || format!("square filters only, got {:?}", w.shape))?;
    let (kp, cp) = (k.max(k_pad), c.max(c_pad));
    let kg = r * r * cp;
    let kw = conv2d_tc_kw(u32::try_from(kg).map_err(|_| Error::Shape { op: OP, msg: format!("weight {:?} too large", w.shape) })?) as usize;
    let mut out = vec![0f32; kp * kw];
    for ki in 0..k {
        for ci in 0..c {
            for ri in 0..r {
                for si in 0..r {
                    out[ki * kw + (ri * r + si) * cp + ci] = w.data[((ki * c + ci) * r + ri) * r + si];
                }
            }
        }
    }
    Ok((kp, cp, kw, out))
}

impl TcWeight {
    /// Packs (see [`pack_weight`]) and uploads `w` rounded to f16.
    pub fn upload(w: &Tensor, c_pad: usize, k_pad: usize) -> Result<Self> {
        let (k, c, kw, data) = pack_weight(w, c_pad, k_pad)?;
        Ok(TcWeight { data: DeviceTensor::from_f32_as_f16(&[k, kw], &data, Layout::RowMajor)?, k, r: w.shape[2], c, kw, subpixel: false })
    }

    /// Packs (see [`pack_weight_subpixel`]) and uploads `w` (a 3x3 conv that follows a nearest 2x upsample)
    /// in sub-pixel form, rounded to f16.
    pub fn upload_subpixel(w: &Tensor) -> Result<Self> {
        let (k, c, kw, data) = pack_weight_subpixel(w)?;
        Ok(TcWeight { data: DeviceTensor::from_f32_as_f16(&[4 * k, kw], &data, Layout::RowMajor)?, k, r: 2, c, kw, subpixel: true })
    }
}

/// The source rows (or columns) an upsampled 3x3 tap lands on, per output parity: for parity 0 the taps
/// r = 0 | r = 1, 2 fall on source offsets -1 | 0, for parity 1 the taps r = 0, 1 | r = 2 on 0 | +1
/// (`launch::CONV2D_TC_SUBPIXEL`). `SUBPIXEL_TAPS[parity][r]` = the 2x2 tap (0 or 1) tap r adds into.
pub const SUBPIXEL_TAPS: [[usize; 3]; 2] = [[0, 1, 1], [0, 0, 1]];

/// Packs a `[K, C, 3, 3]` weight that follows a nearest 2x upsample (reflection pad 1) as four `[K, kw]`
/// matrices, parity (a, b) = output row and column parity at index 2a + b, each row in the (dr, ds, c)
/// order of a 2x2 filter with the 3x3 taps summed in f32 as [`SUBPIXEL_TAPS`] says, zero-padded to
/// kw = `conv2d_tc_kw(4C)`. Returns (K, C, kw, data).
pub fn pack_weight_subpixel(w: &Tensor) -> Result<(usize, usize, usize, Vec<f32>)> {
    let [k, c, r, s] = dims4("weight", w)?;
    ensure(r == 3 && s == 3, OP, || format!("sub-pixel packing needs a 3x3 filter, got {:?}", w.shape))?;
    let kw = conv2d_tc_kw(u32::try_from(4 * c).map_err(|_| Error::Shape { op: OP, msg: format!("weight {:?} too large", w.shape) })?) as usize;
    let mut out = vec![0f32; 4 * k * kw];
    for parity in 0..4 {
        let (ta, tb) = (SUBPIXEL_TAPS[parity >> 1], SUBPIXEL_TAPS[parity & 1]);
        for ki in 0..k {
            let row = &mut out[(parity * k + ki) * kw..][..kw];
            for ci in 0..c {
                for ri in 0..3 {
                    for si in 0..3 {
                        row[(ta[ri] * 2 + tb[si]) * c + ci] += w.data[((ki * c + ci) * 3 + ri) * 3 + si];
                    }
                }
            }
        }
    }
    Ok((k, c, kw, out))
}

/// The partial tiling of a sub-pixel conv ([`TcWeight::upload_subpixel`]) with output `[N, 2H, 2W, K]`:
/// the four parity planes of H*W pixels each cut into tiles of [`conv2d_tc_tiling`]'s size, parity-major
/// (a 4 x H*W plane in 1 x BM tiles for `ops::nhwc::nhwc_in_coef_tiled`).
pub fn conv2d_tc_subpixel_tiling(out: &[usize; 4]) -> PartTiling {
    let (bm, _) = conv2d_tc_tiling(out);
    PartTiling::blocks(4, out[1] / 2 * (out[2] / 2), 1, bm)
}

/// An NCHW f32 tensor as NHWC data `[N, H, W, C]` (values unchanged) with its shape.
pub fn nchw_to_nhwc(x: &Tensor) -> Result<([usize; 4], Vec<f32>)> {
    let [n, c, h, w] = dims4("input", x)?;
    let mut out = vec![0f32; x.data.len()];
    for ni in 0..n {
        for ci in 0..c {
            for hi in 0..h {
                for wi in 0..w {
                    out[((ni * h + hi) * w + wi) * c + ci] = x.data[((ni * c + ci) * h + hi) * w + wi];
                }
            }
        }
    }
    Ok(([n, h, w, c], out))
}

/// NHWC f32 data of shape `[N, H, W, C]` as an NCHW tensor `[N, C, H, W]`.
pub fn nhwc_to_nchw(shape: [usize; 4], data: &[f32]) -> Result<Tensor> {
    let [n, h, w, c] = shape;
    ensure(n * h * w * c == data.len(), OP, || format!("NHWC shape {shape:?} does not match {} elements", data.len()))?;
    let mut out = vec![0f32; data.len()];
    for ni in 0..n {
        for hi in 0..h {
            for wi in 0..w {
                for ci in 0..c {
                    out[((ni * c + ci) * h + hi) * w + wi] = data[((ni * h + hi) * w + wi) * c + ci];
                }
            }
        }
    }
    Ok(Tensor { shape: vec![n, c, h, w], data: out })
}

/// Output shape `[N, P, Q, K]` of [`conv2d_tc`] for x `[N, H, W, C]` and a `k`-channel `r`x`r` filter, or
/// `None` when the filter does not fit the padded input.
pub fn conv2d_tc_output_shape(x: &[usize], k: usize, r: usize, stride: usize, pad: usize, upsample: usize) -> Option<[usize; 4]> {
    match x {
        [n, h, wd, _] => {
            let (p, q) = conv2d_output_size(*h, *wd, r, stride, Padding::Reflect(pad), upsample)?;
            Some([*n, p, q, k])
        }
        _ => None,
    }
}

/// (pixels per tile, tiles per sample) [`conv2d_tc`] uses for an output `[N, P, Q, K]` (see
/// `gpu_kernels::launch::conv2d_tc_bm`; sizes past u32 give the largest tile, and the launcher refuses them).
pub fn conv2d_tc_tiling(out: &[usize; 4]) -> (usize, usize) {
    let [n, p, q, k] = *out;
    let bm = match (u32::try_from(k), u32::try_from(n), u32::try_from(p * q)) {
        (Ok(k), Ok(n), Ok(pq)) if n.checked_mul(pq).is_some() => conv2d_tc_bm(k, n, pq) as usize,
        _ => 128,
    };
    (bm, (p * q).div_ceil(bm))
}

/// f32 elements of the InstanceNorm partials for an output `[N, P, Q, K]`: (mean, M2) per sample, channel
/// and tile.
pub fn conv2d_tc_part_len(out: &[usize; 4]) -> usize {
    out[0] * out[3] * conv2d_tc_tiling(out).1 * 2
}

/// How a conv's InstanceNorm partials tile one output plane (what `ops::nhwc::nhwc_in_coef_tiled` needs to
/// weigh them): the plane seen as `p_rows` x `q_cols` pixels, cut into `tile_h` x `tile_w` tiles, `tiles_x`
/// per tile row and `tiles` in all; tile i covers rows (i / tiles_x)·tile_h .. and columns
/// (i % tiles_x)·tile_w .. (clipped to the plane). Partials of sample n, channel ch, tile i:
/// `part[((n*K + ch)*tiles + i)*2 ..+2]` = (mean, M2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartTiling {
    pub tiles: usize,
    pub tiles_x: usize,
    pub tile_w: usize,
    pub tile_h: usize,
    pub q_cols: usize,
    pub p_rows: usize,
}

impl PartTiling {
    /// 1-D tiles of `bm` pixels of the flattened plane of `pq` pixels ([`conv2d_tc`]).
    pub fn linear(pq: usize, bm: usize) -> Self {
        let tiles = pq.div_ceil(bm.max(1));
        PartTiling { tiles, tiles_x: tiles, tile_w: bm, tile_h: 1, q_cols: pq, p_rows: 1 }
    }
    /// 2-D tiles of `th` x `tw` pixels of a `p` x `q` plane, row-major ([`conv2d_tc_c4_halo9`]).
    pub fn blocks(p: usize, q: usize, th: usize, tw: usize) -> Self {
        let tiles_x = q.div_ceil(tw.max(1));
        PartTiling { tiles: tiles_x * p.div_ceil(th.max(1)), tiles_x, tile_w: tw, tile_h: th, q_cols: q, p_rows: p }
    }
    /// f32 elements of the partials of `n` samples with `k` channels.
    pub fn part_len(&self, n: usize, k: usize) -> usize {
        n * k * self.tiles * 2
    }
    /// Pixels of tile `i`.
    pub fn count(&self, i: usize) -> usize {
        let (ty, tx) = (i / self.tiles_x.max(1), i % self.tiles_x.max(1));
        self.tile_w.min(self.q_cols.saturating_sub(tx * self.tile_w)) * self.tile_h.min(self.p_rows.saturating_sub(ty * self.tile_h))
    }
    /// Whether the fields describe a tiling of a `pq`-pixel plane that `nhwc_in_coef` can combine: non-empty
    /// tiles covering the plane exactly once.
    pub fn is_valid_for(&self, pq: usize) -> bool {
        self.tile_w > 0
            && self.tile_h > 0
            && self.p_rows.checked_mul(self.q_cols) == Some(pq)
            && self.tiles_x == self.q_cols.div_ceil(self.tile_w)
            && self.tiles == self.tiles_x * self.p_rows.div_ceil(self.tile_h)
    }
}

/// The tiling of [`conv2d_tc`]'s partials for an output `[N, P, Q, K]` (1-D tiles of [`conv2d_tc_tiling`]).
pub fn conv2d_tc_part_tiling(out: &[usize; 4]) -> PartTiling {
    PartTiling::linear(out[1] * out[2], conv2d_tc_tiling(out).0)
}

/// Where [`conv2d_tc`] writes.
pub enum ConvOut<'a> {
    /// y: NHWC f16 `[N, P, Q, K]`; part: f32 with at least [`conv2d_tc_part_len`] elements.
    F16Stats { y: &'a mut DeviceTensor, part: &'a mut DeviceTensor },
    /// y: NHWC f16 `[N, P, Q, K]`; the InstanceNorm statistics added to the f64 plane sums of `sums` (zeroed
    /// before; at least N·K planes), for a consumer taking [`NormCoef::Sums`].
    F16Sums { y: &'a mut DeviceTensor, sums: SumsSlot },
    /// y: NCHW f32 `[N, k_real, P, Q]` (k_real ≤ K) = channels 0..k_real + bias `[k_real]`.
    NchwBias { y: &'a mut DeviceTensor, bias: &'a DeviceTensor },
}

/// Checks a `NormCoef::Coef` input norm for an input `[N, H, W, C]` (the `conv2d_wg` kernels, which read
/// coefficients only); the device pointer (0 = no input norm).
pub(crate) fn input_norm_ptr(norm: Option<NormCoef<'_>>, n: usize, c: usize) -> Result<u64> {
    match norm {
        None => Ok(0),
        Some(NormCoef::Coef(coef)) => {
            ensure(coef.dtype == DType::F32 && coef.numel() >= n * c * 2 && n * c * 2 < (1 << 31), OP, || {
                format!("input norm: coef needs {} f32 ((a, b) per sample and input channel), got {:?} {:?}", n * c * 2, coef.dtype, coef.shape)
            })?;
            Ok(coef.ptr())
        }
        Some(NormCoef::Sums { .. }) => Err(Error::Shape { op: OP, msg: "input norm: this kernel takes coefficients, not plane sums".into() }),
    }
}

/// Checks an input norm for an input `[N, H, W, C]`; the kernel argument (`InNorm`, both pointers 0 = none).
pub(crate) fn input_norm_arg(norm: Option<NormCoef<'_>>, n: usize, h: usize, w: usize, c: usize) -> Result<InNorm> {
    match norm {
        None => Ok(InNorm::default()),
        Some(nc) => {
            ensure(n * c * 2 < (1 << 31) && h * w < (1 << 31), OP, || format!("input norm: [{n}, {h}, {w}, {c}] too large"))?;
            nc.in_norm("input norm", n, c, h * w)
        }
    }
}

/// Options of [`conv2d_tc_opts`].
#[derive(Clone, Copy, Default)]
pub struct ConvOpts<'a> {
    /// A kernel variant instead of the default choice (see [`conv2d_tc_with`]).
    pub variant: Option<Conv2dTcVariant>,
    /// Normalise (+ReLU) the input while loading it (C % 8 == 0 inputs only): every input element x of
    /// sample n, channel c is read as relu(a·x + b) with the coefficients of [`NormCoef`] (given, or computed
    /// by the kernel from the producing conv's plane sums), in f32 and rounded once to f16, exactly as
    /// `ops::nhwc::nhwc_in_apply(.., relu = true)` would have stored it. The transform commutes with the
    /// reflection padding and the nearest upsampling (both only copy elements), so the result is the conv
    /// of the normalised input.
    pub input_norm: Option<NormCoef<'a>>,
}

/// conv(upsample(x) reflect-padded by `pad_reflect`, w) on tensor cores, written as `out` says.
/// Shapes and types as in the module comment; every violation is an error, nothing is launched.
pub fn conv2d_tc(gpu: &Gpu, x: &DeviceTensor, w: &TcWeight, stride: usize, pad_reflect: usize, upsample: usize, out: ConvOut<'_>) -> Result<()> {
    conv2d_tc_launch(gpu, x, w, stride, pad_reflect, upsample, out, ConvOpts::default())
}

/// [`conv2d_tc`] with [`ConvOpts`]: a forced kernel variant and/or an input norm.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_tc_opts(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &TcWeight,
    stride: usize,
    pad_reflect: usize,
    upsample: usize,
    out: ConvOut<'_>,
    opts: ConvOpts<'_>,
) -> Result<()> {
    conv2d_tc_launch(gpu, x, w, stride, pad_reflect, upsample, out, opts)
}

/// [`conv2d_tc`] through a given kernel variant instead of the default choice (for the self-check and
/// device A/B runs): `variant` must be `launch::conv2d_tc_variant`'s for this shape's (K, C, tile) or its
/// `launch::conv2d_tc_alternative`; anything else is an error.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_tc_with(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &TcWeight,
    stride: usize,
    pad_reflect: usize,
    upsample: usize,
    variant: Conv2dTcVariant,
    out: ConvOut<'_>,
) -> Result<()> {
    conv2d_tc_launch(gpu, x, w, stride, pad_reflect, upsample, out, ConvOpts { variant: Some(variant), input_norm: None })
}

#[allow(clippy::too_many_arguments)]
fn conv2d_tc_launch(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &TcWeight,
    stride: usize,
    pad_reflect: usize,
    upsample: usize,
    out: ConvOut<'_>,
    opts: ConvOpts<'_>,
) -> Result<()> {
    let forced = opts.variant;
    ensure(x.dtype == DType::F16 && x.layout == Layout::Nhwc, OP, || format!("x must be NHWC f16, got {:?} {:?}", x.layout, x.dtype))?;
    ensure(x.shape.len() == 4, OP, || format!("x must be [N, H, W, C], got {:?}", x.shape))?;
    let (n, h, wd, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    // Sub-pixel weights: R = 2 in the GEMM, the layer itself is the 3x3 upsample-2 conv.
    let sub = w.subpixel;
    let (k, r) = (w.k, if sub { 3 } else { w.r });
    let rows = if sub { 4 * w.k } else { w.k };
    ensure(w.data.dtype == DType::F16 && w.data.shape == [rows, w.kw], OP, || format!("w must be f16 [{rows}, {}], got {:?} {:?}", w.kw, w.data.dtype, w.data.shape))?;
    ensure(!sub || (w.r == 2 && stride == 1 && upsample == 2 && pad_reflect == 1 && matches!(out, ConvOut::F16Stats { .. }) && opts.variant.is_none()), OP, || {
        format!("sub-pixel weights need stride 1, upsample 2, padding 1, the F16Stats output and the default kernel (got stride {stride}, upsample {upsample}, padding {pad_reflect})")
    })?;
    ensure(n > 0 && h > 0 && wd > 0, OP, || format!("empty input {:?}", x.shape))?;
    ensure(w.c == c, OP, || format!("w has {} input channels, x {:?}", w.c, x.shape))?;
    let out_guess = conv2d_tc_output_shape(&x.shape, k, r, stride, pad_reflect, upsample).unwrap_or([n, 1, 1, k]);
    let (bm, tiles) = conv2d_tc_tiling(&out_guess);
    // Sub-pixel: four parity planes of (P/2)(Q/2) pixels, each in tiles of bm.
    let tiles = if sub { conv2d_tc_subpixel_tiling(&out_guess).tiles } else { tiles };
    let variant = u32::try_from(k).ok().zip(u32::try_from(c).ok()).and_then(|(k, c)| conv2d_tc_pick(k, c, bm as u32));
    let Some(variant) = variant else {
        return Err(Error::Shape { op: OP, msg: format!("no kernel for {k} output and {c} input channels (K in 8/32/64/128 with C % 8 == 0, or K = 32 with C = 4)") });
    };
    let variant = match forced {
        None => variant,
        Some(f) => {
            let default = conv2d_tc_variant(k as u32, c as u32, bm as u32);
            ensure(Some(f) == default || default.and_then(conv2d_tc_alternative) == Some(f), OP, || {
                format!("kernel {} does not fit K {k}, C {c} with {bm}-pixel tiles (default {variant:?})", f.name)
            })?;
            f
        }
    };
    ensure(r == 3 || r == 9, OP, || format!("3x3 or 9x9 filters only, got {r}x{r}"))?;
    let kg = w.r * w.r * c;
    ensure(w.kw >= kg && w.kw as u32 == conv2d_tc_kw(kg as u32), OP, || format!("weight rows of {} for GEMM-K {kg}", w.kw))?;
    ensure(pad_reflect == r / 2, OP, || format!("reflection padding must be {} for a {r}x{r} filter, got {pad_reflect}", r / 2))?;
    ensure(stride == 1 || stride == 2, OP, || format!("stride {stride} not 1 or 2"))?;
    ensure(upsample == 1 || upsample == 2, OP, || format!("upsample factor {upsample} not 1 or 2"))?;
    let (hu, wu) = (h * upsample, wd * upsample);
    ensure(pad_reflect < hu && pad_reflect < wu, OP, || {
        format!("reflection padding {pad_reflect} needs an input larger than {pad_reflect} (got {hu}x{wu} after upsampling)")
    })?;
    let Some(out_shape) = conv2d_tc_output_shape(&x.shape, k, r, stride, pad_reflect, upsample) else {
        return Err(Error::Shape { op: OP, msg: format!("{r}x{r} filter larger than the padded input of {:?}", x.shape) });
    };
    let [_, p, q, _] = out_shape;
    let pq = p * q;
    let (mode, y16, part, sums, y32, bias, k_real) = match out {
        ConvOut::F16Sums { y, sums } => {
            ensure(y.dtype == DType::F16 && y.layout == Layout::Nhwc && y.shape == out_shape, OP, || {
                format!("y must be NHWC f16 {out_shape:?}, got {:?} {:?} {:?}", y.layout, y.dtype, y.shape)
            })?;
            ensure(sums.planes >= n * k, OP, || format!("norm sums hold {} planes, {n}x{k} needed", sums.planes))?;
            let mode = if sub { CONV2D_TC_OUT_F16_STATS | CONV2D_TC_SUBPIXEL } else { CONV2D_TC_OUT_F16_STATS };
            (mode, y.ptr(), 0u64, sums.ptr, 0u64, 0u64, k)
        }
        ConvOut::F16Stats { y, part } => {
            ensure(y.dtype == DType::F16 && y.layout == Layout::Nhwc && y.shape == out_shape, OP, || {
                format!("y must be NHWC f16 {out_shape:?}, got {:?} {:?} {:?}", y.layout, y.dtype, y.shape)
            })?;
            let part_len = n * k * tiles * 2;
            ensure(part.dtype == DType::F32 && part.numel() >= part_len, OP, || {
                format!("partials need {part_len} f32, got {:?} {:?}", part.dtype, part.shape)
            })?;
            let mode = if sub { CONV2D_TC_OUT_F16_STATS | CONV2D_TC_SUBPIXEL } else { CONV2D_TC_OUT_F16_STATS };
            (mode, y.ptr(), part.ptr(), 0u64, 0u64, 0u64, k)
        }
        ConvOut::NchwBias { y, bias } => {
            let kr = bias.numel();
            ensure(bias.dtype == DType::F32 && bias.shape == [kr] && (1..=k).contains(&kr), OP, || {
                format!("bias must be f32 [k_real ≤ {k}], got {:?} {:?}", bias.dtype, bias.shape)
            })?;
            ensure(y.dtype == DType::F32 && y.layout != Layout::Nhwc && y.shape == [n, kr, p, q], OP, || {
                format!("y must be NCHW f32 {:?}, got {:?} {:?} {:?}", [n, kr, p, q], y.layout, y.dtype, y.shape)
            })?;
            (CONV2D_TC_OUT_NCHW_BIAS, 0u64, 0u64, 0u64, y.ptr(), bias.ptr(), kr)
        }
    };
    // The kernel indexes pixels, weights, outputs and (upsampled, padded) coordinates with 32-bit integers.
    let fits = |v: usize| v < (1 << 31);
    ensure(fits(x.numel()) && fits(w.data.numel()) && fits(n * pq * k) && fits(n * k * tiles * 2) && hu < (1 << 30) && wu < (1 << 30), OP, || {
        format!("sizes too large for 32-bit indexing: x {:?}, output {out_shape:?}", x.shape)
    })?;
    ensure(n < 65536, OP, || format!("batch {n} above the grid's 65535"))?;
    ensure(opts.input_norm.is_none() || variant.piece == 16, OP, || format!("input norm: not for the {c}-channel 8-byte gather ({})", variant.name))?;
    let in_norm = input_norm_arg(opts.input_norm, n, h, wd, c)?;
    let smem = conv2d_tc_smem(&variant, k as u32, w.r as u32, w.kw as u32) + if in_norm.is_some() { conv2d_tc_in_norm_smem(c as u32) } else { 0 };
    ensure(smem <= MAX_SMEM, OP, || format!("{}: {smem} B of shared memory for weight rows of {} (at most {MAX_SMEM})", variant.name, w.kw))?;
    // Sub-pixel: the kernel's P x Q is one parity plane (= the source's H x W) and its R the 2x2 taps.
    let (p_k, q_k) = if sub { (h, wd) } else { (p, q) };
    let (h32, w32, c32, kw32, p32, q32, r32) = (h as u32, wd as u32, c as u32, w.kw as u32, p_k as u32, q_k as u32, w.r as u32);
    let (s32, pad32, up32, kr32) = (stride as u32, pad_reflect as u32, upsample as u32, k_real as u32);
    // SAFETY: conv2d_tc_*(x, w: *const u16, h, w, c, kw, p, q, r, stride, pad, up, mode: u32, y16: *mut u32,
    // part: *mut f32, sums: *mut f64, y32: *mut f32, bias: *const f32, k_real: u32, in_norm: InNorm) match the
    // argument list in order and type (InNorm is the #[repr(C)] struct the kernel declares), and `variant` is
    // the one compiled for exactly this K, tile and gather width. With an input norm (16-byte pieces only,
    // checked) it reads, for its sample n < N, coef[n*C*2 .. (n+1)*C*2] (N*C*2 f32 checked) or the N*C
    // planes of sums and γ, β [C] (checked by NormCoef::in_norm) into the C*8 bytes added to `smem`. The kernel reads
    // x[n][ih][iw][c0..c0+8 (or 4)] with n < N (grid y) and ih/iw reflected into range (pad < H*up, W*up
    // checked; rows past P*Q clamped to the last pixel; GEMM-K positions past R*S*C not read), w[0..K*kw]
    // (rows padded to kw on the host, checked), and, by mode, writes y16[pixel][0..K] and part[.. N*K*tiles*2]
    // (sized above) or adds to sums[(n*K + ch)*NORM_SUMS_STRIDE ..+2] (N*K planes checked; part then 0) or y32[n][0..k_real][pixel] and reads bias[0..k_real]; only pixels < P*Q are written;
    // a trailing half GEMM-K step past kw (BK = 64 variants) is zero-filled, not read.
    // Allocations are 256-byte aligned and C % 8 == 0 (16-byte pieces) or C == 4 (8-byte pieces), so every
    // cp.async source is aligned to its width. Block = CONV2D_TC_THREADS threads and `smem` =
    // conv2d_tc_smem(variant, K, R, kw) (+ conv2d_tc_in_norm_smem(C) with an input norm), the layout the
    // kernel carves (stages, then its gather tables for R and kw, then the norm's table), within the opt-in limit (checked; `launch` raises the function's limit above 48 KB);
    // grid (tiles, N) with the variant's BM = bm. Sub-pixel weights (mode | CONV2D_TC_SUBPIXEL, checked: F16Stats
    // only, stride 1, upsample 2): the kernel gets P x Q = H x W and R = 2, reads the parity's rows
    // w[(parity*K ..+K)*kw] of the [4K, kw] weight (shape checked), clamps source rows/columns into 0..H /
    // 0..W, writes y16 at output pixel (2i + a, 2j + b) < 2H x 2W = y's shape (checked) and partials for
    // tiles = 4 * ceil(H*W / bm) = the grid's x (part length n*K*tiles*2 checked).
    unsafe {
        gpu.launch(
            variant.name,
            (tiles as u32, n as u32, 1),
            (CONV2D_TC_THREADS, 1, 1),
            smem,
            kernel_args!(x.ptr(), w.data.ptr(), h32, w32, c32, kw32, p32, q32, r32, s32, pad32, up32, mode, y16, part, sums, y32, bias, kr32, in_norm),
        )
    }
}

/// The last layer's weight for [`conv2d_tc_halo9`]: `[K ≤ 8, 32, 9, 9]` in mma-fragment order (f16).
pub struct HaloWeight {
    pub data: DeviceTensor,
    /// Real output channels.
    pub k: usize,
}

/// Packs `[K ≤ 8, 32, 9, 9]` into the fragment order `conv2d_tc_halo9_k8` reads: for tap t = r*9 + s, k16
/// step kc and lane (g = lane/4, q = lane%4), four values w[g][kc*16 + 2q + {0, 1, 8, 9}][r][s] (zero for
/// g ≥ K) at `((t*2 + kc)*32 + lane)*4`.
pub fn pack_weight_halo9(w: &Tensor) -> Result<Vec<f32>> {
    let [k, c, r, s] = dims4("weight", w)?;
    ensure(k <= 8 && k > 0 && c == CONV2D_TC_HALO_C as usize && r == 9 && s == 9, OP, || {
        format!("the halo kernel takes a [1..8, {CONV2D_TC_HALO_C}, 9, 9] weight, got {:?}", w.shape)
    })?;
    let mut out = vec![0f32; CONV2D_TC_HALO_W_ELEMS as usize];
    for tap in 0..81 {
        for kc in 0..2 {
            for lane in 0..32 {
                let (g, q) = (lane / 4, lane % 4);
                if g >= k {
                    continue;
                }
                for (j, dc) in [0, 1, 8, 9].into_iter().enumerate() {
                    let ci = kc * 16 + 2 * q + dc;
                    out[((tap * 2 + kc) * 32 + lane) * 4 + j] = w.data[((g * c + ci) * 9 + tap / 9) * 9 + tap % 9];
                }
            }
        }
    }
    Ok(out)
}

impl HaloWeight {
    /// Packs (see [`pack_weight_halo9`]) and uploads `w` rounded to f16.
    pub fn upload(w: &Tensor) -> Result<Self> {
        let data = pack_weight_halo9(w)?;
        Ok(HaloWeight { data: DeviceTensor::from_f32_as_f16(&[data.len()], &data, Layout::RowMajor)?, k: w.shape[0] })
    }
}

/// y `[N, k_real, H, W]` (NCHW f32) = conv9x9(x reflect-padded by 4, w) channels 0..k_real + bias, for x
/// NHWC f16 `[N, H, W, 32]` (the network's last layer), with the input tile staged in shared memory once.
pub fn conv2d_tc_halo9(gpu: &Gpu, x: &DeviceTensor, w: &HaloWeight, bias: &DeviceTensor, y: &mut DeviceTensor) -> Result<()> {
    conv2d_tc_halo9_in(gpu, x, None, w, bias, y)
}

/// [`conv2d_tc_halo9`] with an optional input norm (+ReLU, [`ConvOpts::input_norm`]'s) applied to the input as it is staged.
/// The checks the 9x9 halo launchers share ([`conv2d_tc_halo9_in`], `conv2d_tc_halo9_taps`; `what` names
/// the kernel in messages): x NHWC f16 `[N, H, W, 32]` with H, W ≥ 5, the packed f16 weight of `w_elems`
/// values for 1..=`k_max` real output channels, bias f32 `[k]`, y NCHW f32 `[N, k, H, W]`, 32-bit sizes.
/// Returns N and the grid of `tile` = (rows, columns) output tiles per block.
#[allow(clippy::too_many_arguments)]
pub(crate) fn halo9_check(what: &str, x: &DeviceTensor, w: &DeviceTensor, w_elems: u32, k: usize, k_max: usize, bias: &DeviceTensor, y: &DeviceTensor, tile: (u32, u32)) -> Result<(usize, (u32, u32, u32))> {
    ensure(x.dtype == DType::F16 && x.layout == Layout::Nhwc && x.shape.len() == 4, OP, || {
        format!("{what}: x must be NHWC f16 [N, H, W, 32], got {:?} {:?} {:?}", x.layout, x.dtype, x.shape)
    })?;
    let (n, h, wd, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    ensure(c == CONV2D_TC_HALO_C as usize, OP, || format!("{what}: x must have {CONV2D_TC_HALO_C} channels, got {:?}", x.shape))?;
    ensure(n > 0 && h >= 5 && wd >= 5, OP, || format!("{what}: input {:?} needs H, W ≥ 5 for the reflection pad of 4", x.shape))?;
    ensure(w.dtype == DType::F16 && w.numel() == w_elems as usize && (1..=k_max).contains(&k), OP, || {
        format!("{what}: weight must be the packed f16 [{w_elems}], got {:?} {:?}", w.dtype, w.shape)
    })?;
    ensure(bias.dtype == DType::F32 && bias.shape == [k], OP, || format!("{what}: bias must be f32 [{k}], got {:?} {:?}", bias.dtype, bias.shape))?;
    ensure(y.dtype == DType::F32 && y.layout != Layout::Nhwc && y.shape == [n, k, h, wd], OP, || {
        format!("{what}: y must be NCHW f32 {:?}, got {:?} {:?} {:?}", [n, k, h, wd], y.layout, y.dtype, y.shape)
    })?;
    let fits = |v: usize| v < (1 << 31);
    ensure(fits(x.numel()) && fits(y.numel()) && n < 65536, OP, || format!("{what}: input {:?} too large for 32-bit indexing", x.shape))?;
    let grid = (wd.div_ceil(tile.1 as usize) as u32, h.div_ceil(tile.0 as usize) as u32, n as u32);
    ensure(grid.1 < 65536, OP, || format!("{what}: {h} rows exceed the grid"))?;
    Ok((n, grid))
}

pub fn conv2d_tc_halo9_in(gpu: &Gpu, x: &DeviceTensor, norm: Option<NormCoef<'_>>, w: &HaloWeight, bias: &DeviceTensor, y: &mut DeviceTensor) -> Result<()> {
    let (n, grid) = halo9_check("halo9", x, &w.data, CONV2D_TC_HALO_W_ELEMS, w.k, 8, bias, y, (CONV2D_TC_HALO_TH, CONV2D_TC_HALO_TW))?;
    let (h, wd, c, kr) = (x.shape[1], x.shape[2], x.shape[3], w.k);
    let in_norm = input_norm_arg(norm, n, h, wd, c)?;
    let (h32, w32, kr32) = (h as u32, wd as u32, kr as u32);
    // SAFETY: conv2d_tc_halo9_k8(x, w: *const u16, h, wd: u32, y32: *mut f32, bias: *const f32, k_real: u32,
    // in_norm: InNorm) match the arguments in order and type; an input norm is read for block sample n < N:
    // coef[n*64 .. (n+1)*64] (N*32*2 f32 checked) or sums planes n*32 ..+32 and γ, β [32] (checked). Block (tx, ty, n) reads x[n][ih][iw][0..32] with ih, iw
    // clamped to H+3 / W+3 and reflected into 0..H / 0..W (H, W ≥ 5 checked, so one reflection of a
    // distance ≤ 4 stays in range), the whole packed weight (CONV2D_TC_HALO_W_ELEMS f16, checked),
    // bias[0..k_real], and writes y[n][0..k_real][oh][ow] only for oh < H, ow < W (y's shape checked).
    // x rows are 64 bytes and allocations 256-byte aligned, so the 16-byte cp.async sources are aligned.
    // Block = 256 threads, CONV2D_TC_HALO_SMEM bytes of dynamic shared memory (opted in by `launch`).
    unsafe {
        gpu.launch("conv2d_tc_halo9_k8", grid, (CONV2D_TC_THREADS, 1, 1), CONV2D_TC_HALO_SMEM,
            kernel_args!(x.ptr(), w.data.ptr(), h32, w32, y.ptr(), bias.ptr(), kr32, in_norm))
    }
}

/// Environment variable choosing conv1's kernel in the fast net: `gather` selects the implicit-GEMM
/// `conv2d_tc_c4_k32` (through [`conv2d_tc`]); anything else, or unset, the halo-staged
/// `conv2d_tc_c4_halo9_k32` ([`conv2d_tc_c4_halo9`]). Read when the net is built (A/B timing).
pub const CONV1_ENV: &str = "STYLEFORGE_CONV1";

/// Whether [`CONV1_ENV`] leaves conv1 on the halo-staged kernel (the default).
pub fn conv1_use_halo() -> bool {
    std::env::var(CONV1_ENV).map_or(true, |s| s != "gather")
}

/// The first layer's weight for [`conv2d_tc_c4_halo9`]: `[32, C ≤ 4, 9, 9]` in mma-fragment order (f16).
pub struct C4HaloWeight {
    pub data: DeviceTensor,
}

/// Packs `[32, C ≤ 4, 9, 9]` (input channels zero-padded to 4) into the order `conv2d_tc_c4_halo9_k32`
/// reads. GEMM-K of filter row r is k = (s − s0)·4 + c for the taps s0 .. of a step; with g = lane / 4,
/// t = lane % 4 an mma B register holds k = 2t, 2t+1 (b0) or 2t+8, 2t+9 (b1) of output channel nt·8 + g,
/// i.e. tap s0 + t/2 (+2 for b1), channels 2(t%2), 2(t%2)+1. Chunk ((r*5 + j)*32 + lane)*8 ..+8 (f16):
/// j = 2st + p (k16 step st: taps 4st .. 4st+3): b0, b1 of n-tile 2p, then b0, b1 of n-tile 2p+1;
/// j = 4 (k8 step: tap 8 and a zero tap 9): b of n-tiles 0, 1, 2, 3.
pub fn pack_weight_c4_halo9(w: &Tensor) -> Result<Vec<f32>> {
    let [k, c, r, s] = dims4("weight", w)?;
    ensure(k == CONV2D_TC_C4H_K as usize && (1..=4).contains(&c) && r == 9 && s == 9, OP, || {
        format!("the c4 halo kernel takes a [{CONV2D_TC_C4H_K}, ≤ 4, 9, 9] weight, got {:?}", w.shape)
    })?;
    let val = |ko: usize, ri: usize, si: usize, ci: usize| if si < 9 && ci < c { w.data[((ko * c + ci) * 9 + ri) * 9 + si] } else { 0.0 };
    let mut out = vec![0f32; CONV2D_TC_C4H_W_ELEMS as usize];
    for ri in 0..9 {
        for lane in 0..32 {
            let (g, t) = (lane / 4, lane % 4);
            let (dt, c0) = (t / 2, 2 * (t % 2));
            for j in 0..5 {
                let o = ((ri * 5 + j) * 32 + lane) * 8;
                let chunk = &mut out[o..o + 8];
                if j < 4 {
                    let (st, p) = (j / 2, j % 2);
                    for (h, nt) in [2 * p, 2 * p + 1].into_iter().enumerate() {
                        for (b, tap) in [4 * st + dt, 4 * st + 2 + dt].into_iter().enumerate() {
                            for e in 0..2 {
                                chunk[h * 4 + b * 2 + e] = val(nt * 8 + g, ri, tap, c0 + e);
                            }
                        }
                    }
                } else {
                    for nt in 0..4 {
                        for e in 0..2 {
                            chunk[nt * 2 + e] = val(nt * 8 + g, ri, 8 + dt, c0 + e);
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

impl C4HaloWeight {
    /// Packs (see [`pack_weight_c4_halo9`]) and uploads `w` rounded to f16.
    pub fn upload(w: &Tensor) -> Result<Self> {
        let data = pack_weight_c4_halo9(w)?;
        Ok(C4HaloWeight { data: DeviceTensor::from_f32_as_f16(&[data.len()], &data, Layout::RowMajor)? })
    }
}

/// The tiling of [`conv2d_tc_c4_halo9`]'s partials for an output `[N, P, Q, 32]`: `CONV2D_TC_C4H_TH` x
/// `CONV2D_TC_C4H_TW` blocks, row-major.
pub fn conv2d_tc_c4_halo_tiling(out: &[usize; 4]) -> PartTiling {
    PartTiling::blocks(out[1], out[2], CONV2D_TC_C4H_TH as usize, CONV2D_TC_C4H_TW as usize)
}

/// conv1 on tensor cores with the halo-staged kernel: y NHWC f16 `[N, H, W, 32]` = conv9x9(x reflect-padded
/// by 4, w) for x NHWC f16 `[N, H, W, 4]` (the packed input), plus the InstanceNorm partials of the 2-D
/// tiles it returns (combine them with `ops::nhwc::nhwc_in_coef_tiled`; part needs `tiling.part_len(N, 32)`
/// f32), or added to plane sums ([`NormStats::Sums`]). Every violation is an error, nothing is launched.
pub fn conv2d_tc_c4_halo9<'a>(gpu: &Gpu, x: &DeviceTensor, w: &C4HaloWeight, y: &mut DeviceTensor, stats: impl Into<NormStats<'a>>) -> Result<PartTiling> {
    ensure(x.dtype == DType::F16 && x.layout == Layout::Nhwc && x.shape.len() == 4 && x.shape[3] == 4, OP, || {
        format!("c4 halo9: x must be NHWC f16 [N, H, W, 4], got {:?} {:?} {:?}", x.layout, x.dtype, x.shape)
    })?;
    let (n, h, wd) = (x.shape[0], x.shape[1], x.shape[2]);
    ensure(n > 0 && h >= 5 && wd >= 5, OP, || format!("c4 halo9: input {:?} needs N ≥ 1 and H, W ≥ 5 for the reflection pad of 4", x.shape))?;
    ensure(w.data.dtype == DType::F16 && w.data.numel() == CONV2D_TC_C4H_W_ELEMS as usize, OP, || {
        format!("c4 halo9: weight must be the packed f16 [{CONV2D_TC_C4H_W_ELEMS}], got {:?} {:?}", w.data.dtype, w.data.shape)
    })?;
    let k = CONV2D_TC_C4H_K as usize;
    let out_shape = [n, h, wd, k];
    ensure(y.dtype == DType::F16 && y.layout == Layout::Nhwc && y.shape == out_shape, OP, || {
        format!("c4 halo9: y must be NHWC f16 {out_shape:?}, got {:?} {:?} {:?}", y.layout, y.dtype, y.shape)
    })?;
    let tiling = conv2d_tc_c4_halo_tiling(&out_shape);
    let part_len = tiling.part_len(n, k);
    let (part, sums) = match stats.into() {
        NormStats::Partials(part) => {
            ensure(part.dtype == DType::F32 && part.numel() >= part_len, OP, || format!("c4 halo9: partials need {part_len} f32, got {:?} {:?}", part.dtype, part.shape))?;
            (part.ptr(), 0u64)
        }
        NormStats::Sums(s) => {
            ensure(s.planes >= n * k, OP, || format!("c4 halo9: norm sums hold {} planes, {n}x{k} needed", s.planes))?;
            (0, s.ptr)
        }
    };
    let fits = |v: usize| v < (1 << 31);
    ensure(fits(x.numel()) && fits(y.numel()) && fits(part_len) && n < 65536, OP, || format!("c4 halo9: input {:?} too large for 32-bit indexing", x.shape))?;
    let grid = (tiling.tiles_x as u32, h.div_ceil(CONV2D_TC_C4H_TH as usize) as u32, n as u32);
    ensure((grid.1 as usize) < 65536, OP, || format!("c4 halo9: {h} rows exceed the grid"))?;
    let (h32, w32) = (h as u32, wd as u32);
    // SAFETY: conv2d_tc_c4_halo9_k32(x, w: *const u16, h, wd: u32, y16: *mut u32, part: *mut f32, sums: *mut f64) match the
    // arguments in order and type. Block (tx, ty, n) reads x[n][ih][iw][0..4] with ih, iw clamped to H+3 /
    // W+3 and reflected into 0..H / 0..W (H, W ≥ 5 checked, so one reflection of a distance ≤ 4 stays in
    // range) and the whole packed weight (CONV2D_TC_C4H_W_ELEMS f16, checked); it writes y[n][oh][ow][0..32]
    // only for oh < H, ow < W (y's shape checked) and part[((n*32 + ch)*tiles + tile)*2 ..+2] with tiles =
    // gridDim.x * gridDim.y = tiling.tiles (part holds tiling.part_len(N, 32), checked), or with sums (part then 0)
    // adds to sums[(n*32 + ch)*NORM_SUMS_STRIDE ..+2] (N*32 planes checked). Pixels are 8 bytes
    // and allocations 256-byte aligned, so the 8-byte (input) and 16-byte (weight) cp.async sources are
    // aligned. Block = 256 threads, CONV2D_TC_C4H_SMEM bytes of dynamic shared memory (the layout the kernel
    // carves; `launch` raises the limit when above 48 KB).
    unsafe {
        gpu.launch("conv2d_tc_c4_halo9_k32", grid, (CONV2D_TC_THREADS, 1, 1), CONV2D_TC_C4H_SMEM, kernel_args!(x.ptr(), w.data.ptr(), h32, w32, y.ptr(), part, sums))?;
    }
    Ok(tiling)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpu_kernels::launch::{CONV2D_TC_K32_BK32, CONV2D_TC_K32_BK64};

    /// The sub-pixel weights reproduce "nearest 2x upsample, reflection pad 1, 3x3 conv" exactly when the
    /// 2x2 convs of each parity read the source with clamped coordinates (what the kernel does), on odd
    /// sizes, both borders, several channels.
    #[test]
    fn subpixel_packing_matches_the_upsampled_conv() {
        let (n, c, h, w, k) = (2, 3, 5, 4, 2);
        let val = |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 1000) as f32 / 500.0 - 1.0;
        let x = Tensor { shape: vec![n, c, h, w], data: (0..n * c * h * w).map(|i| val(i, 1)).collect() };
        let wt = Tensor { shape: vec![k, c, 3, 3], data: (0..k * c * 9).map(|i| val(i, 2)).collect() };
        let want = models::ops::conv2d(&x, &wt, None, 1, models::ops::Padding::Reflect(1), 2).unwrap();
        assert_eq!(want.shape, [n, k, 2 * h, 2 * w]);
        let (kp, cp, kw, packed) = pack_weight_subpixel(&wt).unwrap();
        assert_eq!((kp, cp, kw, packed.len()), (k, c, 32, 4 * k * 32));
        let clamp = |v: isize, m: usize| v.clamp(0, m as isize - 1) as usize;
        for ni in 0..n {
            for ki in 0..k {
                for oy in 0..2 * h {
                    for ox in 0..2 * w {
                        let (i, a, j, b) = (oy / 2, oy % 2, ox / 2, ox % 2);
                        let row = &packed[((2 * a + b) * k + ki) * kw..][..kw];
                        let mut acc = 0f32;
                        for dr in 0..2 {
                            for ds in 0..2 {
                                let iy = clamp(i as isize + a as isize - 1 + dr as isize, h);
                                let ix = clamp(j as isize + b as isize - 1 + ds as isize, w);
                                for ci in 0..c {
                                    acc += x.data[((ni * c + ci) * h + iy) * w + ix] * row[(dr * 2 + ds) * c + ci];
                                }
                            }
                        }
                        let e = want.data[((ni * k + ki) * 2 * h + oy) * 2 * w + ox];
                        assert!((acc - e).abs() < 1e-5, "n {ni} k {ki} ({oy}, {ox}): {acc} vs {e}");
                    }
                }
            }
        }
        let tiling = conv2d_tc_subpixel_tiling(&[1, 2 * h, 2 * w, 64]);
        assert!(tiling.is_valid_for(4 * h * w) && tiling.tiles == 4 * (h * w).div_ceil(tiling.tile_w));
    }

    #[test]
    fn weight_packing_is_krsc_padded() {
        let (k, c, r) = (2, 3, 3);
        let data: Vec<f32> = (0..k * c * r * r).map(|i| i as f32 + 1.0).collect();
        let w = Tensor { shape: vec![k, c, r, r], data };
        let (kp, cp, kw, packed) = pack_weight(&w, 4, 8).unwrap();
        assert_eq!((kp, cp, kw), (8, 4, 64));
        for ki in 0..kp {
            for t in 0..kw {
                let (tap, ci) = (t / cp, t % cp);
                let want = if ki < k && ci < c && tap < r * r { (((ki * c + ci) * r + tap / r) * r + tap % r + 1) as f32 } else { 0.0 };
                assert_eq!(packed[ki * kw + t], want, "k {ki} t {t}");
            }
        }
    }

    #[test]
    fn halo_weight_is_in_fragment_order() {
        let w = Tensor { shape: vec![3, 32, 9, 9], data: (0..3 * 32 * 81).map(|i| i as f32).collect() };
        let p = pack_weight_halo9(&w).unwrap();
        assert_eq!(p.len(), CONV2D_TC_HALO_W_ELEMS as usize);
        // Tap (r, s) = (2, 5), k16 step 1, lane 9 (g = 2, q = 1): channels 16 + 2 + {0, 1, 8, 9} of output 2.
        let (tap, kc, lane) = (2 * 9 + 5, 1, 9);
        for (j, dc) in [0, 1, 8, 9].into_iter().enumerate() {
            let ci = 16 + 2 + dc;
            assert_eq!(p[((tap * 2 + kc) * 32 + lane) * 4 + j], ((2 * 32 + ci) * 81 + tap) as f32);
        }
        // Lanes of output channels 3..7 are zero.
        assert!(p[(tap * 2 * 32 + 12) * 4..(tap * 2 * 32 + 32) * 4].iter().all(|&v| v == 0.0));
        assert!(pack_weight_halo9(&Tensor { shape: vec![3, 16, 9, 9], data: vec![0.0; 3 * 16 * 81] }).is_err());
        assert!(pack_weight_halo9(&Tensor { shape: vec![9, 32, 9, 9], data: vec![0.0; 9 * 32 * 81] }).is_err());
    }

    /// The fast net's conv1 weight packing and the halo kernel's indexing, emulated on the CPU: pair slots
    /// staged as the kernel stages them (clamp, reflect), A rows read as its ldmatrix reads them, B values
    /// looked up through the mma fragment layout (b0/b1 of lane 4g + t hold k = 2t, 2t+1 / 2t+8, 2t+9 of
    /// column g); the result must equal the reference convolution, and the 2-D tiles' partials combined
    /// with the tiling's counts must give each channel's mean and variance.
    #[test]
    fn c4_halo_emulation_matches_conv() {
        use gpu_kernels::launch::CONV2D_TC_C4H_SLOTS as SLOTS;
        let (th, tw) = (CONV2D_TC_C4H_TH as usize, CONV2D_TC_C4H_TW as usize);
        let mut seed = 12345u64;
        let mut rnd = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for (n, h, wd, c) in [(1usize, 5usize, 5usize, 3usize), (2, 9, 9, 4), (1, 37, 53, 3), (1, 16, 32, 3)] {
            let x = Tensor { shape: vec![n, c, h, wd], data: (0..n * c * h * wd).map(|_| rnd()).collect() };
            let w = Tensor { shape: vec![32, c, 9, 9], data: (0..32 * c * 81).map(|_| rnd() * 0.1).collect() };
            let want = models::ops::conv2d(&x, &w, None, 1, Padding::Reflect(4), 1).unwrap();
            let packed = pack_weight_c4_halo9(&w).unwrap();
            assert_eq!(packed.len(), CONV2D_TC_C4H_W_ELEMS as usize);
            let b16 = |r: usize, st: usize, kk: usize, o: usize| {
                let (nt, g, t, reg, e) = (o / 8, o % 8, (kk % 8) / 2, kk / 8, kk % 2);
                packed[((r * 5 + 2 * st + nt / 2) * 32 + 4 * g + t) * 8 + (nt % 2) * 4 + reg * 2 + e]
            };
            let b8 = |r: usize, kk: usize, o: usize| {
                let (nt, g, t, e) = (o / 8, o % 8, kk / 2, kk % 2);
                packed[((r * 5 + 4) * 32 + 4 * g + t) * 8 + nt * 2 + e]
            };
            // The packed input: 4 channels, channel 3 nonzero garbage when the weight has 3 (must be ignored).
            let px = |ni: usize, ih: usize, iw: usize, ci: usize| if ci < c { x.data[((ni * c + ci) * h + ih) * wd + iw] } else { 7.0 };
            let refl = |v: i64, ext: usize| {
                let e = ext as i64;
                let v = v.min(e + 3).abs();
                (if v > e - 1 { 2 * (e - 1) - v } else { v }) as usize
            };
            let tiling = conv2d_tc_c4_halo_tiling(&[n, h, wd, 32]);
            assert_eq!(tiling.tiles, h.div_ceil(th) * wd.div_ceil(tw));
            assert_eq!((0..tiling.tiles).map(|i| tiling.count(i)).sum::<usize>(), h * wd);
            assert!(tiling.is_valid_for(h * wd));
            let mut got = vec![0f32; n * 32 * h * wd];
            let mut part = vec![0f64; tiling.part_len(n, 32)];
            for ni in 0..n {
                for tile in 0..tiling.tiles {
                    let (ty0, tx0) = ((tile / tiling.tiles_x) * th, (tile % tiling.tiles_x) * tw);
                    let slot = |hy: usize, j: usize| -> [f32; 8] {
                        let ih = refl((ty0 + hy) as i64 - 4, h);
                        let mut v = [0f32; 8];
                        for (half, hx) in [j, j + 1].into_iter().enumerate() {
                            let iw = refl((tx0 + hx) as i64 - 4, wd);
                            for ci in 0..4 {
                                v[half * 4 + ci] = px(ni, ih, iw, ci);
                            }
                        }
                        v
                    };
                    let mut vals = vec![Vec::new(); 32];
                    for oy in 0..th {
                        for ox in 0..tw {
                            if ty0 + oy >= h || tx0 + ox >= wd {
                                continue;
                            }
                            for (o, vo) in vals.iter_mut().enumerate() {
                                let mut acc = 0f64;
                                for r in 0..9 {
                                    for st in 0..2 {
                                        assert!(ox + 4 * st + 2 < SLOTS as usize);
                                        let (lo, hi) = (slot(oy + r, ox + 4 * st), slot(oy + r, ox + 4 * st + 2));
                                        for kk in 0..16 {
                                            let a = if kk < 8 { lo[kk] } else { hi[kk - 8] };
                                            acc += (a * b16(r, st, kk, o)) as f64;
                                        }
                                    }
                                    assert!(ox + 8 < SLOTS as usize && oy + r < th + 8);
                                    let a = slot(oy + r, ox + 8);
                                    for (kk, &av) in a.iter().enumerate() {
                                        acc += (av * b8(r, kk, o)) as f64;
                                    }
                                }
                                got[((ni * 32 + o) * h + ty0 + oy) * wd + tx0 + ox] = acc as f32;
                                vo.push(acc);
                            }
                        }
                    }
                    for (o, v) in vals.iter().enumerate() {
                        assert_eq!(v.len(), tiling.count(tile));
                        let mean = v.iter().sum::<f64>() / v.len() as f64;
                        let i = ((ni * 32 + o) * tiling.tiles + tile) * 2;
                        part[i] = mean;
                        part[i + 1] = v.iter().map(|a| (a - mean).powi(2)).sum();
                    }
                }
            }
            for (i, (g, e)) in got.iter().zip(&want.data).enumerate() {
                assert!((g - e).abs() <= 1e-4 * (1.0 + e.abs()), "{n}x{c}x{h}x{wd} element {i}: {g} vs {e}");
            }
            // Chan's combination of the tiles (as nhwc_in_coef) against direct statistics.
            for plane in 0..n * 32 {
                let (mut cnt, mut mean, mut m2) = (0f64, 0f64, 0f64);
                for tile in 0..tiling.tiles {
                    let (nb, mb, m2b) = (tiling.count(tile) as f64, part[(plane * tiling.tiles + tile) * 2], part[(plane * tiling.tiles + tile) * 2 + 1]);
                    let tot = cnt + nb;
                    let d = mb - mean;
                    mean += d * nb / tot;
                    m2 += m2b + d * d * cnt * nb / tot;
                    cnt = tot;
                }
                let v = &want.data[plane * h * wd..(plane + 1) * h * wd];
                let wm = v.iter().map(|&a| a as f64).sum::<f64>() / (h * wd) as f64;
                let wv = v.iter().map(|&a| (a as f64 - wm).powi(2)).sum::<f64>() / (h * wd) as f64;
                assert!((mean - wm).abs() < 1e-4 && (m2 / cnt - wv).abs() < 1e-4 * (1.0 + wv), "plane {plane}: {mean} {} vs {wm} {wv}", m2 / cnt);
            }
        }
        assert!(pack_weight_c4_halo9(&Tensor { shape: vec![32, 5, 9, 9], data: vec![0.0; 32 * 5 * 81] }).is_err());
        assert!(pack_weight_c4_halo9(&Tensor { shape: vec![16, 3, 9, 9], data: vec![0.0; 16 * 3 * 81] }).is_err());
        assert!(pack_weight_c4_halo9(&Tensor { shape: vec![32, 3, 3, 3], data: vec![0.0; 32 * 3 * 9] }).is_err());
    }

    #[test]
    fn part_tilings() {
        // 1-D: conv2d_tc's tiles as a tiling of one row of P*Q pixels.
        let out = [2, 20, 17, 128];
        let t = conv2d_tc_part_tiling(&out);
        assert_eq!((t.tiles, t.tile_w), (conv2d_tc_tiling(&out).1, conv2d_tc_tiling(&out).0));
        assert!(t.is_valid_for(340));
        assert_eq!((t.count(0), t.count(10)), (32, 340 - 320));
        assert_eq!(t.part_len(2, 128), conv2d_tc_part_len(&out));
        // 2-D: 37x53 in 16x32 blocks: 3 x 2 tiles, the last row 5 high, the last column 21 wide.
        let b = conv2d_tc_c4_halo_tiling(&[1, 37, 53, 32]);
        assert_eq!((b.tiles, b.tiles_x), (6, 2));
        assert_eq!([b.count(0), b.count(1), b.count(4), b.count(5)], [512, 16 * 21, 5 * 32, 5 * 21]);
        assert!(b.is_valid_for(37 * 53));
        assert!(!b.is_valid_for(37 * 52));
        assert!(!PartTiling { tiles: 5, ..b }.is_valid_for(37 * 53));
        assert!(!PartTiling { tile_h: 0, ..b }.is_valid_for(37 * 53));
        // At 1024x1024 the 2-D tiles need no more partials than the 1-D ones.
        let big = [1, 1024, 1024, 32];
        assert!(conv2d_tc_c4_halo_tiling(&big).part_len(1, 32) <= conv2d_tc_part_len(&big));
    }

    #[test]
    fn nhwc_round_trip() {
        let data: Vec<f32> = (0..2 * 3 * 4 * 5).map(|i| i as f32).collect();
        let x = Tensor { shape: vec![2, 3, 4, 5], data: data.clone() };
        let (shape, nhwc) = nchw_to_nhwc(&x).unwrap();
        assert_eq!(shape, [2, 4, 5, 3]);
        assert_eq!(nhwc[1], data[20]);
        let back = nhwc_to_nchw(shape, &nhwc).unwrap();
        assert_eq!(back.shape, x.shape);
        assert_eq!(back.data, data);
    }

    #[test]
    fn output_shapes_and_partials() {
        assert_eq!(conv2d_tc_output_shape(&[1, 33, 29, 32], 64, 3, 2, 1, 1), Some([1, 17, 15, 64]));
        assert_eq!(conv2d_tc_output_shape(&[1, 9, 11, 128], 64, 3, 1, 1, 2), Some([1, 18, 22, 64]));
        assert_eq!(conv2d_tc_output_shape(&[2, 19, 23, 128], 128, 3, 1, 1, 1), Some([2, 19, 23, 128]));
        assert_eq!(conv2d_tc_output_shape(&[1, 2, 2, 16], 32, 9, 1, 3, 1), None);
        assert_eq!(conv2d_tc_part_len(&[2, 16, 9, 32]), 2 * 32 * 2 * 2);
        assert_eq!(conv2d_tc_part_len(&[1, 8, 16, 8]), 8 * 2);
        // K = 128 at 20x17 (340 pixels): 32-pixel tiles, 11 per sample.
        assert_eq!(conv2d_tc_tiling(&[1, 20, 17, 128]), (32, 11));
    }

    #[test]
    fn kernels_exist_and_smem_fits() {
        use gpu_kernels::launch::conv2d_tc_kernel;
        // Every (K, C, R) the network uses has a kernel for every tile the choice can make, within the
        // opt-in shared-memory limit; the tile is one the variant was compiled for.
        for (k, c, r) in [(8u32, 32u32, 9u32), (32, 64, 3), (64, 32, 3), (64, 128, 3), (128, 128, 3), (128, 64, 3), (32, 4, 9)] {
            let kw = conv2d_tc_kw(r * r * c);
            for (n, pq) in [(1u32, 16u32), (1, 4096), (1, 16384), (4, 65536), (1, 1 << 20)] {
                let bm = conv2d_tc_bm(k, n, pq);
                let v = conv2d_tc_variant(k, c, bm).unwrap_or_else(|| panic!("k {k} c {c} bm {bm}"));
                assert_eq!(v.bm, bm);
                assert_eq!(conv2d_tc_kernel(k, c, bm), Some(v.name));
                assert!(conv2d_tc_smem(&v, k, r, kw) <= MAX_SMEM, "{v:?}");
            }
        }
        // The big variants' shared memory (two blocks per SM need ≤ 113 KB each; one of 228 KB per SM).
        let smem = |k, c, bm, r| conv2d_tc_smem(&conv2d_tc_variant(k, c, bm).unwrap(), k, r, conv2d_tc_kw(r * r * c));
        assert_eq!(smem(128, 128, 128, 3), 3 * 256 * 128 + 2 * 3 * 132 * 4 + 1152 / 8 * 8);
        assert!(smem(128, 128, 128, 3) <= 113 * 1024);
        assert!(smem(64, 128, 128, 3) <= 113 * 1024);
        assert!(smem(32, 4, 256, 9) <= 113 * 1024);
        assert!(conv2d_tc_smem(&CONV2D_TC_K32_BK32, 32, 3, 576) <= 113 * 1024);
        assert_eq!(conv2d_tc_smem(&CONV2D_TC_K32_BK64, 32, 3, 576), 4 * 288 * 128 + 2 * 3 * 260 * 4 + 576 / 8 * 8);
        // A trailing half step (kw = 288 with BK = 64) still has table entries for the whole step.
        assert_eq!(smem(64, 32, 128, 3), 4 * 192 * 128 + 2 * 3 * 132 * 4 + 320 / 8 * 8);
        // Small grids take smaller tiles where a variant exists; large ones the largest tile.
        assert_eq!(conv2d_tc_bm(128, 1, 64 * 64), 32);
        assert_eq!(conv2d_tc_bm(128, 1, 128 * 128), 64);
        assert_eq!(conv2d_tc_bm(128, 1, 256 * 256), 128);
        assert_eq!(conv2d_tc_bm(64, 1, 64 * 64), 64);
        assert_eq!(conv2d_tc_bm(32, 1, 64 * 64), 128);
        assert_eq!(conv2d_tc_bm(32, 1, 1 << 20), 256);
        assert_eq!(conv2d_tc_bm(32, 1, 256 * 256), 256);
        assert_eq!(conv2d_tc_bm(32, 1, 128 * 256), 128);
        assert_eq!(conv2d_tc_bm(32, 1, 128 * 128), 128);
        assert!(conv2d_tc_variant(48, 32, 128).is_none());
        assert!(conv2d_tc_variant(64, 4, 128).is_none());
        assert!(conv2d_tc_variant(32, 12, 128).is_none());
        assert!(conv2d_tc_variant(32, 64, 64).is_none());
    }
}
