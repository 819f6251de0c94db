//! `conv2d` launcher (fp32 direct convolution; reflection or zero padding, stride, optional nearest x2
//! upsampling folded into the input addressing).
use gpu_kernels::launch::{
    Conv2dVariant, CONV2D_MAX_CHUNK, CONV2D_NARROW, CONV2D_THREADS, CONV2D_TILE_Q, CONV2D_WIDE,
};
use models::ops::Padding;

use crate::error::{ensure, Result};
use crate::gpu::{DType, DeviceTensor, Gpu};
use crate::kernel_args;

const OP: &str = "conv2d";
/// Shared memory a conv2d block aims to stay under (more blocks per SM), and the most it may use.
const SMEM_TARGET: u32 = 48 * 1024;
const SMEM_MAX: u32 = 96 * 1024;

/// Output size `(P, Q)` of [`conv2d`] for an input of `h x w`, or `None` when the padded (upsampled)
/// input is smaller than the filter or the arguments are degenerate.
pub fn conv2d_output_size(
    h: usize,
    w: usize,
    r: usize,
    stride: usize,
    pad: Padding,
    upsample: usize,
) -> Option<(usize, usize)> {
    let p = match pad {
        Padding::Reflect(p) | Padding::Zero(p) => p,
    };
    if stride == 0 || upsample == 0 || r == 0 {
        return None;
    }
    let (hp, wp) = (h * upsample + 2 * p, w * upsample + 2 * p);
    if hp < r || wp < r {
        return None;
    }
    Some(((hp - r) / stride + 1, (wp - r) / stride + 1))
}

/// The kernel variant and the number of input channels staged per step for a convolution.
fn plan(c: u32, k: u32, r: u32, stride: u32) -> (Conv2dVariant, u32, u32) {
    let v = if k <= CONV2D_NARROW.channels() {
        CONV2D_NARROW
    } else {
        CONV2D_WIDE
    };
    let per_channel = v.smem_floats_per_channel(r, stride) * 4;
    let cc = (SMEM_TARGET / per_channel)
        .clamp(1, CONV2D_MAX_CHUNK)
        .min(c.max(1));
    (v, cc, cc * per_channel)
}

/// y [N, K, P, Q] = conv(upsample(x) padded, w [K, C, R, S]) + b, NCHW f32.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    b: Option<&DeviceTensor>,
    stride: usize,
    pad: Padding,
    upsample: usize,
    y: &mut DeviceTensor,
) -> Result<()> {
    let all_f32 = x.dtype == DType::F32
        && w.dtype == DType::F32
        && y.dtype == DType::F32
        && b.is_none_or(|b| b.dtype == DType::F32);
    ensure(all_f32, OP, || "f32 tensors only".into())?;
    ensure(x.shape.len() == 4, OP, || {
        format!("x must be [N, C, H, W], got {:?}", x.shape)
    })?;
    ensure(w.shape.len() == 4, OP, || {
        format!("w must be [K, C, R, S], got {:?}", w.shape)
    })?;
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (k, wc, r, s) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    ensure(n > 0 && c > 0 && h > 0 && wd > 0, OP, || {
        format!("empty input {:?}", x.shape)
    })?;
    ensure(k > 0 && wc == c, OP, || {
        format!(
            "w {:?} does not match x {:?} (input channels)",
            w.shape, x.shape
        )
    })?;
    ensure(r == s && (1..=11).contains(&r), OP, || {
        format!("square filters of size 1..=11 only, got {r}x{s}")
    })?;
    ensure((1..=4).contains(&stride), OP, || {
        format!("stride {stride} not in 1..=4")
    })?;
    ensure((1..=4).contains(&upsample), OP, || {
        format!("upsample factor {upsample} not in 1..=4")
    })?;
    let (p, reflect) = match pad {
        Padding::Reflect(p) => (p, true),
        Padding::Zero(p) => (p, false),
    };
    let (hu, wu) = (h * upsample, wd * upsample);
    ensure(p <= 64, OP, || format!("padding {p} larger than 64"))?;
    ensure(!reflect || (p < hu && p < wu), OP, || {
        format!("reflection padding {p} needs an input larger than {p} (got {hu}x{wu} after upsampling)")
    })?;
    let (po, qo) =
        conv2d_output_size(h, wd, r, stride, pad, upsample).ok_or_else(|| crate::Error::Shape {
            op: OP,
            msg: format!(
                "{r}x{r} filter larger than the padded input of {:?}",
                x.shape
            ),
        })?;
    if let Some(b) = b {
        ensure(b.shape == [k], OP, || {
            format!("bias must be [{k}], got {:?}", b.shape)
        })?;
    }
    ensure(y.shape == [n, k, po, qo], OP, || {
        format!("y must be {:?}, got {:?}", [n, k, po, qo], y.shape)
    })?;
    // The kernel indexes one plane, the weights and upsampled coordinates with 32-bit integers.
    let fits = |v: usize| v < (1 << 31);
    ensure(
        fits(hu * wu) && fits(po * qo) && fits(w.numel()) && fits(c * r * r) && fits(k),
        OP,
        || {
            format!(
                "sizes too large for 32-bit indexing: x {:?}, w {:?}, upsample {upsample}",
                x.shape, w.shape
            )
        },
    )?;

    let (c32, k32, r32, s32) = (c as u32, k as u32, r as u32, stride as u32);
    let (v, cc, smem) = plan(c32, k32, r32, s32);
    ensure(smem <= SMEM_MAX, OP, || {
        format!("{r}x{r} stride {stride} needs {smem} B of shared memory")
    })?;
    let tiles = po.div_ceil(v.tile_p() as usize) * qo.div_ceil(CONV2D_TILE_Q as usize);
    let k_blocks = k.div_ceil(v.channels() as usize);
    ensure(
        tiles <= i32::MAX as usize && k_blocks <= 65_535 && n <= 65_535,
        OP,
        || format!("grid {tiles} x {k_blocks} x {n} too large"),
    )?;
    let b_ptr: u64 = b.map_or(0, |b| b.ptr());
    let (h32, w32, p32, q32) = (h as u32, wd as u32, po as u32, qo as u32);
    let (pad32, refl32, up32) = (p as u32, reflect as u32, upsample as u32);
    // SAFETY: conv2d_k32/conv2d_k4(x, w, b, y: pointers; c, h, w, k, p, q, r, stride, pad, reflect, up,
    // cc_chunk: u32) match the argument list in order and type. The kernel reads x[n][c][0..h][0..w] for
    // n < grid.z = N (source coordinates are reflected or zero-filled into range, upsampled coordinates
    // divided by `up`), w[0..K*C*R*R], b[0..K] only when b is non-null, and writes y[n][k][oy][ox] only
    // for k < K, oy < P, ox < Q; all four tensors have exactly those shapes (checked above). Shared
    // memory: `smem` = cc * smem_floats_per_channel(r, stride) * 4 bytes, the layout the kernel carves,
    // and the block is CONV2D_THREADS threads as the kernel assumes.
    unsafe {
        gpu.launch(
            v.name,
            (tiles as u32, k_blocks as u32, n as u32),
            (CONV2D_THREADS, 1, 1),
            smem,
            kernel_args!(
                x.ptr(),
                w.ptr(),
                b_ptr,
                y.ptr(),
                c32,
                h32,
                w32,
                k32,
                p32,
                q32,
                r32,
                s32,
                pad32,
                refl32,
                up32,
                cc
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_matches_pytorch_arithmetic() {
        // TransformerNet on 250x190: conv1 keeps, two stride-2 convs, two upsample convs, conv_out keeps.
        assert_eq!(
            conv2d_output_size(250, 190, 9, 1, Padding::Reflect(4), 1),
            Some((250, 190))
        );
        assert_eq!(
            conv2d_output_size(250, 190, 3, 2, Padding::Reflect(1), 1),
            Some((125, 95))
        );
        assert_eq!(
            conv2d_output_size(125, 95, 3, 2, Padding::Reflect(1), 1),
            Some((63, 48))
        );
        assert_eq!(
            conv2d_output_size(63, 48, 3, 1, Padding::Reflect(1), 2),
            Some((126, 96))
        );
        assert_eq!(
            conv2d_output_size(126, 96, 3, 1, Padding::Reflect(1), 2),
            Some((252, 192))
        );
        assert_eq!(
            conv2d_output_size(1, 1, 3, 1, Padding::Zero(1), 1),
            Some((1, 1))
        );
        assert_eq!(
            conv2d_output_size(13, 17, 1, 4, Padding::Zero(0), 1),
            Some((4, 5))
        );
        assert_eq!(conv2d_output_size(2, 2, 9, 1, Padding::Zero(1), 1), None);
        assert_eq!(conv2d_output_size(8, 8, 3, 0, Padding::Zero(1), 1), None);
    }

    #[test]
    fn plan_fits_shared_memory_and_picks_the_variant() {
        for &(c, k, r, s) in &[
            (3, 32, 9, 1),
            (32, 64, 3, 2),
            (64, 128, 3, 2),
            (128, 128, 3, 1),
            (32, 3, 9, 1),
            (3, 3, 1, 1),
            (1, 5, 11, 4),
        ] {
            let (v, cc, smem) = plan(c, k, r, s);
            assert!(
                cc >= 1 && cc <= c && cc <= CONV2D_MAX_CHUNK,
                "{c} {k} {r} {s}: cc {cc}"
            );
            assert_eq!(smem, cc * v.smem_floats_per_channel(r, s) * 4);
            assert!(smem <= SMEM_MAX, "{c} {k} {r} {s}: {smem} B");
            assert_eq!(v == CONV2D_NARROW, k <= 4);
        }
        // The 3x3 layers stage 8 channels per step within 48 KB.
        assert_eq!(plan(128, 128, 3, 1).1, 8);
        assert!(plan(128, 128, 3, 1).2 <= SMEM_TARGET);
        assert!(plan(64, 128, 3, 2).2 <= SMEM_TARGET);
    }

    #[test]
    fn variants_tile_the_block() {
        for v in [CONV2D_WIDE, CONV2D_NARROW] {
            assert_eq!(v.kx % 4, 0, "weights are read as float4");
            assert_eq!(v.pixel_threads() * v.kg, CONV2D_THREADS);
            assert_eq!(
                v.pixel_threads() % 32,
                0,
                "a warp shares one channel group and one row"
            );
            assert_eq!(
                v.tile_p() * CONV2D_TILE_Q * v.channels(),
                CONV2D_THREADS * v.px * v.kx
            );
        }
    }
}
