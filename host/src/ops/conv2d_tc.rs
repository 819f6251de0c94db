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
//! Padding is reflection by `pad` = R / 2 in upsampled coordinates; `upsample` (1 or 2) repeats every
//! input pixel (nearest) before padding, as `models::ops::conv2d(.., Padding::Reflect(pad), upsample)`.
use gpu_kernels::launch::{
    conv2d_tc_bm, conv2d_tc_kw, conv2d_tc_smem, conv2d_tc_variant, Conv2dTcVariant, CONV2D_TC_HALO_C, CONV2D_TC_K32_BK32, CONV2D_TC_K32_BK64, CONV2D_TC_HALO_SMEM, CONV2D_TC_HALO_TH,
    CONV2D_TC_HALO_TW, CONV2D_TC_HALO_W_ELEMS, CONV2D_TC_OUT_F16_STATS, CONV2D_TC_OUT_NCHW_BIAS, CONV2D_TC_THREADS,
};
use models::ops::Padding;
use models::Tensor;

use crate::error::{ensure, Error, Result};
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::kernel_args;
use crate::ops::conv2d::conv2d_output_size;

const OP: &str = "conv2d_tc";
/// Most dynamic shared memory a block may opt in to (sm_90: 227 KB).
const MAX_SMEM: u32 = 227 * 1024;
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
    if v == CONV2D_TC_K32_BK32 && *K32_BK64.get_or_init(|| std::env::var(K32_VARIANT_ENV).is_ok_and(|s| s == "bk64")) {
        return Some(CONV2D_TC_K32_BK64);
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
        Ok(TcWeight { data: DeviceTensor::from_f32_as_f16(&[k, kw], &data, Layout::RowMajor)?, k, r: w.shape[2], c, kw })
    }
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

/// Where [`conv2d_tc`] writes.
pub enum ConvOut<'a> {
    /// y: NHWC f16 `[N, P, Q, K]`; part: f32 with at least [`conv2d_tc_part_len`] elements.
    F16Stats { y: &'a mut DeviceTensor, part: &'a mut DeviceTensor },
    /// y: NCHW f32 `[N, k_real, P, Q]` (k_real ≤ K) = channels 0..k_real + bias `[k_real]`.
    NchwBias { y: &'a mut DeviceTensor, bias: &'a DeviceTensor },
}

/// conv(upsample(x) reflect-padded by `pad_reflect`, w) on tensor cores, written as `out` says.
/// Shapes and types as in the module comment; every violation is an error, nothing is launched.
pub fn conv2d_tc(gpu: &Gpu, x: &DeviceTensor, w: &TcWeight, stride: usize, pad_reflect: usize, upsample: usize, out: ConvOut<'_>) -> Result<()> {
    conv2d_tc_launch(gpu, x, w, stride, pad_reflect, upsample, out, None)
}

/// [`conv2d_tc`] through a given kernel variant instead of the default choice (for the self-check and
/// device A/B runs): `variant` must be `launch::conv2d_tc_variant`'s for this shape's (K, C, tile) or, for
/// the K = 32 256-pixel tile, `CONV2D_TC_K32_BK32`; anything else is an error.
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
    conv2d_tc_launch(gpu, x, w, stride, pad_reflect, upsample, out, Some(variant))
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
    forced: Option<Conv2dTcVariant>,
) -> Result<()> {
    ensure(x.dtype == DType::F16 && x.layout == Layout::Nhwc, OP, || format!("x must be NHWC f16, got {:?} {:?}", x.layout, x.dtype))?;
    ensure(x.shape.len() == 4, OP, || format!("x must be [N, H, W, C], got {:?}", x.shape))?;
    let (n, h, wd, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (k, r) = (w.k, w.r);
    ensure(w.data.dtype == DType::F16 && w.data.shape == [w.k, w.kw], OP, || format!("w must be f16 [{}, {}], got {:?} {:?}", w.k, w.kw, w.data.dtype, w.data.shape))?;
    ensure(n > 0 && h > 0 && wd > 0, OP, || format!("empty input {:?}", x.shape))?;
    ensure(w.c == c, OP, || format!("w has {} input channels, x {:?}", w.c, x.shape))?;
    let out_guess = conv2d_tc_output_shape(&x.shape, k, r, stride, pad_reflect, upsample).unwrap_or([n, 1, 1, k]);
    let (bm, tiles) = conv2d_tc_tiling(&out_guess);
    let variant = u32::try_from(k).ok().zip(u32::try_from(c).ok()).and_then(|(k, c)| conv2d_tc_pick(k, c, bm as u32));
    let Some(variant) = variant else {
        return Err(Error::Shape { op: OP, msg: format!("no kernel for {k} output and {c} input channels (K in 8/32/64/128 with C % 8 == 0, or K = 32 with C = 4)") });
    };
    let variant = match forced {
        None => variant,
        Some(f) => {
            let default = conv2d_tc_variant(k as u32, c as u32, bm as u32);
            ensure(Some(f) == default || (f == CONV2D_TC_K32_BK64 && default == Some(CONV2D_TC_K32_BK32)), OP, || {
                format!("kernel {} does not fit K {k}, C {c} with {bm}-pixel tiles (default {variant:?})", f.name)
            })?;
            f
        }
    };
    ensure(r == 3 || r == 9, OP, || format!("3x3 or 9x9 filters only, got {r}x{r}"))?;
    let kg = r * r * c;
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
    let (mode, y16, part, y32, bias, k_real) = match out {
        ConvOut::F16Stats { y, part } => {
            ensure(y.dtype == DType::F16 && y.layout == Layout::Nhwc && y.shape == out_shape, OP, || {
                format!("y must be NHWC f16 {out_shape:?}, got {:?} {:?} {:?}", y.layout, y.dtype, y.shape)
            })?;
            ensure(part.dtype == DType::F32 && part.numel() >= conv2d_tc_part_len(&out_shape), OP, || {
                format!("partials need {} f32, got {:?} {:?}", conv2d_tc_part_len(&out_shape), part.dtype, part.shape)
            })?;
            (CONV2D_TC_OUT_F16_STATS, y.ptr(), part.ptr(), 0u64, 0u64, k)
        }
        ConvOut::NchwBias { y, bias } => {
            let kr = bias.numel();
            ensure(bias.dtype == DType::F32 && bias.shape == [kr] && (1..=k).contains(&kr), OP, || {
                format!("bias must be f32 [k_real ≤ {k}], got {:?} {:?}", bias.dtype, bias.shape)
            })?;
            ensure(y.dtype == DType::F32 && y.layout != Layout::Nhwc && y.shape == [n, kr, p, q], OP, || {
                format!("y must be NCHW f32 {:?}, got {:?} {:?} {:?}", [n, kr, p, q], y.layout, y.dtype, y.shape)
            })?;
            (CONV2D_TC_OUT_NCHW_BIAS, 0u64, 0u64, y.ptr(), bias.ptr(), kr)
        }
    };
    // The kernel indexes pixels, weights, outputs and (upsampled, padded) coordinates with 32-bit integers.
    let fits = |v: usize| v < (1 << 31);
    ensure(fits(x.numel()) && fits(w.data.numel()) && fits(n * pq * k) && fits(n * k * tiles * 2) && hu < (1 << 30) && wu < (1 << 30), OP, || {
        format!("sizes too large for 32-bit indexing: x {:?}, output {out_shape:?}", x.shape)
    })?;
    ensure(n < 65536, OP, || format!("batch {n} above the grid's 65535"))?;
    let smem = conv2d_tc_smem(&variant, k as u32, r as u32, w.kw as u32);
    ensure(smem <= MAX_SMEM, OP, || format!("{}: {smem} B of shared memory for weight rows of {} (at most {MAX_SMEM})", variant.name, w.kw))?;
    let (h32, w32, c32, kw32, p32, q32, r32) = (h as u32, wd as u32, c as u32, w.kw as u32, p as u32, q as u32, r as u32);
    let (s32, pad32, up32, kr32) = (stride as u32, pad_reflect as u32, upsample as u32, k_real as u32);
    // SAFETY: conv2d_tc_*(x, w: *const u16, h, w, c, kw, p, q, r, stride, pad, up, mode: u32, y16: *mut u32,
    // part: *mut f32, y32: *mut f32, bias: *const f32, k_real: u32) match the argument list in order and
    // type, and `variant` is the one compiled for exactly this K, tile and gather width. The kernel reads
    // x[n][ih][iw][c0..c0+8 (or 4)] with n < N (grid y) and ih/iw reflected into range (pad < H*up, W*up
    // checked; rows past P*Q clamped to the last pixel; GEMM-K positions past R*S*C not read), w[0..K*kw]
    // (rows padded to kw on the host, checked), and, by mode, writes y16[pixel][0..K] and part[.. N*K*tiles*2]
    // (sized above) or y32[n][0..k_real][pixel] and reads bias[0..k_real]; only pixels < P*Q are written;
    // a trailing half GEMM-K step past kw (BK = 64 variants) is zero-filled, not read.
    // Allocations are 256-byte aligned and C % 8 == 0 (16-byte pieces) or C == 4 (8-byte pieces), so every
    // cp.async source is aligned to its width. Block = CONV2D_TC_THREADS threads and `smem` =
    // conv2d_tc_smem(variant, K, R, kw), the layout the kernel carves (stages, then its gather tables for
    // R and kw), within the opt-in limit (checked; `launch` raises the function's limit above 48 KB);
    // grid (tiles, N) with the variant's BM = bm.
    unsafe {
        gpu.launch(
            variant.name,
            (tiles as u32, n as u32, 1),
            (CONV2D_TC_THREADS, 1, 1),
            smem,
            kernel_args!(x.ptr(), w.data.ptr(), h32, w32, c32, kw32, p32, q32, r32, s32, pad32, up32, mode, y16, part, y32, bias, kr32),
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
    ensure(x.dtype == DType::F16 && x.layout == Layout::Nhwc && x.shape.len() == 4, OP, || {
        format!("halo9: x must be NHWC f16 [N, H, W, 32], got {:?} {:?} {:?}", x.layout, x.dtype, x.shape)
    })?;
    let (n, h, wd, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    ensure(c == CONV2D_TC_HALO_C as usize, OP, || format!("halo9: x must have {CONV2D_TC_HALO_C} channels, got {:?}", x.shape))?;
    ensure(n > 0 && h >= 5 && wd >= 5, OP, || format!("halo9: input {:?} needs H, W ≥ 5 for the reflection pad of 4", x.shape))?;
    ensure(w.data.dtype == DType::F16 && w.data.numel() == CONV2D_TC_HALO_W_ELEMS as usize && (1..=8).contains(&w.k), OP, || {
        format!("halo9: weight must be the packed f16 [{CONV2D_TC_HALO_W_ELEMS}], got {:?} {:?}", w.data.dtype, w.data.shape)
    })?;
    let kr = w.k;
    ensure(bias.dtype == DType::F32 && bias.shape == [kr], OP, || format!("halo9: bias must be f32 [{kr}], got {:?} {:?}", bias.dtype, bias.shape))?;
    ensure(y.dtype == DType::F32 && y.layout != Layout::Nhwc && y.shape == [n, kr, h, wd], OP, || {
        format!("halo9: y must be NCHW f32 {:?}, got {:?} {:?} {:?}", [n, kr, h, wd], y.layout, y.dtype, y.shape)
    })?;
    let fits = |v: usize| v < (1 << 31);
    ensure(fits(x.numel()) && fits(y.numel()) && n < 65536, OP, || format!("halo9: input {:?} too large for 32-bit indexing", x.shape))?;
    let grid = (wd.div_ceil(CONV2D_TC_HALO_TW as usize) as u32, h.div_ceil(CONV2D_TC_HALO_TH as usize) as u32, n as u32);
    ensure(grid.1 < 65536, OP, || format!("halo9: {h} rows exceed the grid"))?;
    let (h32, w32, kr32) = (h as u32, wd as u32, kr as u32);
    // SAFETY: conv2d_tc_halo9_k8(x, w: *const u16, h, wd: u32, y32: *mut f32, bias: *const f32, k_real: u32)
    // match the arguments in order and type. Block (tx, ty, n) reads x[n][ih][iw][0..32] with ih, iw
    // clamped to H+3 / W+3 and reflected into 0..H / 0..W (H, W ≥ 5 checked, so one reflection of a
    // distance ≤ 4 stays in range), the whole packed weight (CONV2D_TC_HALO_W_ELEMS f16, checked),
    // bias[0..k_real], and writes y[n][0..k_real][oh][ow] only for oh < H, ow < W (y's shape checked).
    // x rows are 64 bytes and allocations 256-byte aligned, so the 16-byte cp.async sources are aligned.
    // Block = 256 threads, CONV2D_TC_HALO_SMEM bytes of dynamic shared memory (opted in by `launch`).
    unsafe {
        gpu.launch("conv2d_tc_halo9_k8", grid, (CONV2D_TC_THREADS, 1, 1), CONV2D_TC_HALO_SMEM,
            kernel_args!(x.ptr(), w.data.ptr(), h32, w32, y.ptr(), bias.ptr(), kr32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
