//! `conv2d_wg` launcher: the fast TransformerNet's 3x3 convs with 128 (residual blocks: `conv2d_wg_k128`)
//! or 64 (deconv1: `conv2d_wg_k64`) output channels on the Hopper `wgmma` kernels (PTX target `sm_90a`, so
//! H100/H200 only): `linear_wg`'s pipeline with the A tile gathered from the image.
//!
//! Contract (a subset of [`conv2d_tc`](crate::ops::conv2d_tc::conv2d_tc)'s `F16Stats` output):
//! * x: `[N, H, W, C]` f16, `Layout::Nhwc`, C a positive multiple of 64;
//! * w: a [`TcWeight`] with K = 128 or 64 output channels, 3x3, `c` == C and rows of exactly kw = 9C (what
//!   `TcWeight::upload(w, 0, 0)` gives for such a C);
//! * reflection padding 1, stride 1, `upsample` 1 or 2 (nearest, before padding);
//! * output y NHWC f16 `[N, H·up, W·up, K]` (saturated to ±65504) and the InstanceNorm partials (mean, M2)
//!   per sample, channel and 128-pixel tile in `part` (at least [`PartTiling::part_len`] f32), tiled as the
//!   returned [`PartTiling`] (`PartTiling::linear(P*Q, 128)`) says, for `ops::nhwc::nhwc_in_coef_tiled`;
//! * optionally the input norm (+ReLU) on load (`conv2d_tc`'s `NormCoef::Coef`, as `conv2d_tc`'s: f32 math, one f16 rounding).
//!
//! [`conv2d_wg_fits`] tells whether a shape is taken; the net uses it with `STYLEFORGE_CONV_WG=1`
//! ([`CONV_WG_ENV`]).
use gpu_kernels::launch::{
    conv2d_wg_in_norm_smem, conv2d_wg_kernel, conv2d_wg_smem, CONV2D_WG_BK, CONV2D_WG_BM, CONV2D_WG_TAPS,
    CONV2D_WG_THREADS,
};

use crate::error::{ensure, Error, Result};
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::kernel_args;
use crate::ops::nhwc::NormCoef;
use crate::ops::conv2d_tc::{input_norm_ptr, PartTiling, TcWeight};

const OP: &str = "conv2d_wg";
/// Most dynamic shared memory a block may opt in to (sm_90: 227 KB).
const MAX_SMEM: u32 = gpu_kernels::launch::MAX_SMEM_PER_BLOCK;
/// Environment variable: `1` puts the fast net's residual convs on `conv2d_wg` (off by default: run 21,
/// H200, 1024x1024 b1 1.826 ms with it against 1.783 without; residual block 0.217 vs 0.207 ms).
pub const CONV_WG_ENV: &str = "STYLEFORGE_CONV_WG";

/// Output shape `[N, H·up, W·up, k]` for an input `[N, H, W, C]`, if 4-D.
fn out_shape(x: &[usize], k: usize, upsample: usize) -> Option<[usize; 4]> {
    match *x {
        [n, h, w, _] => Some([n, h.checked_mul(upsample)?, w.checked_mul(upsample)?, k]),
        _ => None,
    }
}

/// A weight's (K, R, C, kw) as [`TcWeight`] describes it.
fn dims(w: &TcWeight) -> [usize; 4] {
    [w.k, w.r, w.c, w.kw]
}

/// Why `conv2d_wg` refuses input shape `x` (`[N, H, W, C]`), a weight of (K, R, C, kw) = `wdims` and
/// `upsample`, or `None` when it takes them (tensor dtypes and layouts aside).
fn shape_problem(x: &[usize], wdims: [usize; 4], upsample: usize) -> Option<String> {
    let [wk, wr, wc, wkw] = wdims;
    let &[n, h, wd, c] = x else {
        return Some(format!("x must be [N, H, W, C], got {x:?}"));
    };
    let bk = CONV2D_WG_BK as usize;
    if n == 0 || h == 0 || wd == 0 || c == 0 {
        return Some(format!("empty input {x:?}"));
    }
    if !c.is_multiple_of(bk) {
        return Some(format!("C = {c} must be a multiple of {bk}"));
    }
    if wr != 3 || !(wk == 64 || wk == 128) {
        return Some(format!("weight must be 3x3 with 64 or 128 output channels, got {wr}x{wr} with {wk}"));
    }
    if wc != c || wkw != CONV2D_WG_TAPS as usize * c {
        return Some(format!("weight rows must be 9·C = {} for C = {c}, got {wc} input channels and rows of {wkw}", 9 * c));
    }
    if upsample != 1 && upsample != 2 {
        return Some(format!("upsample factor {upsample} not 1 or 2"));
    }
    let (p, q) = (h * upsample, wd * upsample);
    if p < 2 || q < 2 {
        return Some(format!("reflection padding 1 needs an input larger than 1 (got {p}x{q} after upsampling)"));
    }
    // The kernel indexes x, w, y and the partials with 32-bit integers.
    let fits = |v: Option<usize>| v.is_some_and(|v| v < (1 << 31));
    let tiles = (p * q).div_ceil(CONV2D_WG_BM as usize);
    let k = wk;
    if !(fits(n.checked_mul(h).and_then(|v| v.checked_mul(wd)).and_then(|v| v.checked_mul(c)))
        && fits(n.checked_mul(p).and_then(|v| v.checked_mul(q)).and_then(|v| v.checked_mul(k)))
        && fits(n.checked_mul(k).and_then(|v| v.checked_mul(tiles)).and_then(|v| v.checked_mul(2)))
        && fits(k.checked_mul(wkw)))
    {
        return Some(format!("sizes too large for 32-bit indexing: x {x:?}, upsample {upsample}"));
    }
    if n >= 65536 {
        return Some(format!("batch {n} above the grid's 65535"));
    }
    let smem = conv2d_wg_smem(k as u32) as usize + c * 8;
    if smem > MAX_SMEM as usize {
        return Some(format!("{smem} B of shared memory for C = {c} (at most {MAX_SMEM})"));
    }
    None
}

/// Whether [`conv2d_wg`] takes an input of shape `x_shape` (`[N, H, W, C]`) with weight `w` and `upsample`
/// (3x3, 128 or 64 output channels, C % 64 == 0, rows of 9C, upsample 1 or 2, sizes within 32-bit indexing).
pub fn conv2d_wg_fits(x_shape: &[usize], w: &TcWeight, upsample: usize) -> bool {
    shape_problem(x_shape, dims(w), upsample).is_none()
}

/// The tiling of [`conv2d_wg`]'s partials for an output `[N, P, Q, K]`: 1-D tiles of 128 pixels.
pub fn conv2d_wg_part_tiling(out: &[usize; 4]) -> PartTiling {
    PartTiling::linear(out[1] * out[2], CONV2D_WG_BM as usize)
}

/// Blocks `conv2d_wg` launches for an input `[N, H, W, C]` and `upsample`: ceil(P*Q / 128) tiles per sample
/// times N (0 for a malformed shape).
pub fn conv2d_wg_blocks(x_shape: &[usize], upsample: usize) -> usize {
    out_shape(x_shape, 0, upsample).map_or(0, |o| o[0] * (o[1] * o[2]).div_ceil(CONV2D_WG_BM as usize))
}

/// conv3x3(upsample(x) reflect-padded by 1, w), stride 1, on `wgmma`: y NHWC f16 `[N, H·up, W·up, K]`
/// plus the InstanceNorm partials in `part`; returns their tiling. With `input_norm` every input element
/// is normalised (+ReLU) as it is loaded. Shapes as in the module comment; every violation is an error
/// and nothing is launched.
pub fn conv2d_wg(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &TcWeight,
    upsample: usize,
    input_norm: Option<NormCoef<'_>>,
    y: &mut DeviceTensor,
    part: &mut DeviceTensor,
) -> Result<PartTiling> {
    ensure(x.dtype == DType::F16 && x.layout == Layout::Nhwc, OP, || {
        format!("x must be NHWC f16, got {:?} {:?}", x.layout, x.dtype)
    })?;
    ensure(w.data.dtype == DType::F16 && w.data.shape == [w.k, w.kw], OP, || {
        format!("w must be f16 [{}, {}], got {:?} {:?}", w.k, w.kw, w.data.dtype, w.data.shape)
    })?;
    if let Some(msg) = shape_problem(&x.shape, dims(w), upsample) {
        return Err(Error::Shape { op: OP, msg });
    }
    let (n, h, wd, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let Some(name) = conv2d_wg_kernel(w.k as u32) else {
        return Err(Error::Shape { op: OP, msg: format!("no kernel for {} output channels", w.k) });
    };
    let Some(out) = out_shape(&x.shape, w.k, upsample) else {
        return Err(Error::Shape { op: OP, msg: format!("x must be [N, H, W, C], got {:?}", x.shape) });
    };
    ensure(y.dtype == DType::F16 && y.layout == Layout::Nhwc && y.shape == out, OP, || {
        format!("y must be NHWC f16 {out:?}, got {:?} {:?} {:?}", y.layout, y.dtype, y.shape)
    })?;
    let tiling = conv2d_wg_part_tiling(&out);
    let part_len = tiling.part_len(n, w.k);
    ensure(part.dtype == DType::F32 && part.numel() >= part_len, OP, || {
        format!("partials need {part_len} f32, got {:?} {:?}", part.dtype, part.shape)
    })?;
    let in_coef = input_norm_ptr(input_norm, n, c)?;
    let smem = conv2d_wg_smem(w.k as u32) + if in_coef != 0 { conv2d_wg_in_norm_smem(c as u32) } else { 0 };
    let (h32, w32, c32, up32) = (h as u32, wd as u32, c as u32, upsample as u32);
    // SAFETY: conv2d_wg_k128 / conv2d_wg_k64 (`name`, the kernel compiled for exactly K = w.k output
    // channels, 128 or 64, checked) take (x, w: *const u16, h, w, c, up: u32, y16: *mut u32, part: *mut f32, in_coef:
    // *const f32), matching the argument list in order and type. The kernel reads x[n][ih][iw][c0 .. c0 + 64]
    // in 16-byte chunks with n < N (grid y), ih < H and iw < W (reflected into the upsampled image by 1 <
    // H·up, W·up, checked, then divided by up ∈ {1, 2}, checked; rows past P*Q clamped to the last pixel),
    // c0 a multiple of 64 below C (C % 64 == 0 checked), and w[0 .. K·9C] (w is f16 [K, 9C], checked);
    // with in_coef non-null it reads in_coef[n·C·2 .. (n+1)·C·2] (N·C·2 f32 checked by input_norm_ptr)
    // into the C·8 bytes added to `smem`. It writes y16[pixel][0..K] for pixels < P*Q of its sample
    // (y is f16 [N, P, Q, K], checked) and part[((n·K + ch)·tiles + tile)·2 ..+2] for tiles =
    // ceil(P*Q / 128) (part_len checked); y and part are exclusive borrows, distinct from the inputs.
    // Allocations are 256-byte aligned and every chunk offset is a multiple of 8 elements, so every
    // cp.async source is 16-byte aligned. Every element index fits 31 bits (checked), as the kernel's
    // 32-bit arithmetic needs. Block = CONV2D_WG_THREADS (2 warpgroups, as its wgmma needs) with
    // conv2d_wg_smem(K) (3 stages + 1 KB alignment slack + the 9 x 128 gather table) + C·8 with the
    // norm, ≤ 227 KB (checked; `launch` opts in above 48 KB); grid (ceil(P*Q / 128), N < 65536).
    unsafe {
        gpu.launch(
            name,
            (tiling.tiles as u32, n as u32, 1),
            (CONV2D_WG_THREADS, 1, 1),
            smem,
            kernel_args!(x.ptr(), w.data.ptr(), h32, w32, c32, up32, y.ptr(), part.ptr(), in_coef),
        )?;
    }
    Ok(tiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_rules() {
        let ok = |x: &[usize], w: [usize; 4], up: usize| shape_problem(x, w, up).is_none();
        let w128 = [128, 3, 128, 1152];
        let w64 = [128, 3, 64, 576];
        assert!(ok(&[1, 256, 256, 128], w128, 1));
        assert!(ok(&[2, 9, 13, 128], w128, 2));
        assert!(ok(&[2, 9, 13, 64], w64, 1));
        assert!(ok(&[1, 1, 1, 128], w128, 2));
        assert!(!ok(&[1, 1, 1, 128], w128, 1), "reflection of a 1-pixel input");
        assert!(!ok(&[1, 256, 256, 128], w128, 3), "upsample 3");
        assert!(!ok(&[1, 256, 256, 64], w128, 1), "channel mismatch");
        assert!(!ok(&[1, 16, 16, 32], [128, 3, 32, 288], 1), "C = 32");
        assert!(ok(&[1, 16, 16, 128], [64, 3, 128, 1152], 2), "K = 64 (deconv1)");
        assert!(!ok(&[1, 16, 16, 128], [32, 3, 128, 1152], 1), "K = 32");
        assert!(!ok(&[1, 16, 16, 128], [128, 9, 128, 10368], 1), "9x9");
        assert!(!ok(&[1, 16, 16, 128], [128, 3, 128, 1184], 1), "padded rows");
        assert!(!ok(&[256, 256, 128], w128, 1), "3-D input");
        assert!(!ok(&[0, 16, 16, 128], w128, 1), "empty batch");
        assert!(!ok(&[70000, 2, 2, 128], w128, 1), "grid y");
        assert!(!ok(&[1, 8192, 8192, 128], w128, 1), "32-bit indexing");
        assert!(!ok(&[1, 16, 16, 32768], [128, 3, 32768, 9 * 32768], 1), "shared memory");
    }

    #[test]
    fn tiling_and_blocks() {
        assert_eq!(conv2d_wg_blocks(&[1, 256, 256, 128], 1), 512);
        assert_eq!(conv2d_wg_blocks(&[1, 64, 64, 128], 1), 32);
        assert_eq!(conv2d_wg_blocks(&[2, 9, 13, 128], 2), 2 * 4);
        let t = conv2d_wg_part_tiling(&[2, 18, 26, 128]);
        assert_eq!((t.tiles, t.count(0), t.count(3)), (4, 128, 468 - 384));
        assert!(t.is_valid_for(468));
    }
}
