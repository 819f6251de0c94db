//! `patch_embed` / `unpatch` / positional-embedding launchers.
use gpu_kernels::launch::{ELEMENTWISE_BLOCK, PATCH_TAIL_ROWS};

use crate::error::{ensure, Result};
use crate::gpu::{blocks_for, DType, DeviceTensor, Gpu};
use crate::kernel_args;
use crate::ops::linear::{linear_ex, Epilogue};

/// Patch grid (hp, wp) of an image [B, 3, H, W] for patch size p (H, W multiples of p).
pub fn patch_grid(img_shape: &[usize], p: usize) -> Result<(usize, usize, usize)> {
    ensure(
        img_shape.len() == 4 && img_shape[1] == 3,
        "patch_embed",
        || format!("image {img_shape:?} must be [B, 3, H, W]"),
    )?;
    let (b, h, w) = (img_shape[0], img_shape[2], img_shape[3]);
    ensure(
        p > 0 && h.is_multiple_of(p) && w.is_multiple_of(p) && h > 0 && w > 0 && b > 0,
        "patch_embed",
        || format!("image {img_shape:?}: H and W must be positive multiples of the patch size {p}"),
    )?;
    Ok((b, h / p, w / p))
}

fn f32_only(op: &'static str, ts: &[&DeviceTensor]) -> Result<()> {
    ensure(ts.iter().all(|t| t.dtype == DType::F32), op, || {
        "f32 tensors only".into()
    })
}

fn fits(op: &'static str, n: usize) -> Result<()> {
    ensure(n <= i32::MAX as usize, op, || {
        format!("{n} elements exceed the kernel's range")
    })
}

/// im2col for the patch convolution: img [B, 3, H, W] -> cols [B·hp·wp, 3·p·p] (any shape with that many
/// elements), columns ordered (c, ky, kx) like the flattened [D, 3, p, p] weight.
pub fn patch_im2col(
    gpu: &Gpu,
    img: &DeviceTensor,
    p: usize,
    cols: &mut DeviceTensor,
) -> Result<()> {
    const OP: &str = "patch_im2col";
    f32_only(OP, &[img])?;
    // f16 columns feed linear_tc (the fast StyleViT), f32 ones `linear`.
    let kernel = match cols.dtype {
        DType::F32 => "patch_im2col",
        DType::F16 => "patch_im2col_f16",
        other => {
            return Err(crate::error::Error::Other(format!(
                "{OP}: cols must be f32 or f16, got {other:?}"
            )))
        }
    };
    let (b, hp, wp) = patch_grid(&img.shape, p)?;
    let total = b * hp * wp * 3 * p * p;
    ensure(
        cols.numel() == total && cols.shape.last() == Some(&(3 * p * p)),
        OP,
        || {
            format!(
                "cols {:?} must be [{}, {}]",
                cols.shape,
                b * hp * wp,
                3 * p * p
            )
        },
    )?;
    fits(OP, total)?;
    // SAFETY: patch_im2col(_f16)(img: f32 pointer, cols: f32 / f16 pointer of cols' dtype, batch, hp, wp,
    // p: u32) writes cols[0..total) and reads img at (b, c, py*p + ky, px*p + kx) with every coordinate
    // inside [B, 3, hp*p, wp*p] = img's shape; its 32-bit index arithmetic stays below total ≤ i32::MAX
    // (checked). The f16 kernel's 16-byte accesses (p % 8 == 0) start at multiples of 8 elements from the
    // tensors' bases (256-byte aligned allocations). One thread per patch row of p elements (grid-stride).
    unsafe {
        gpu.launch(
            kernel,
            (blocks_for(total / p, ELEMENTWISE_BLOCK), 1, 1),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            kernel_args!(
                img.ptr(),
                cols.ptr(),
                b as u32,
                hp as u32,
                wp as u32,
                p as u32
            ),
        )
    }
}

/// The fast StyleViT's patch embedding: `x = im2col(img) · Wᵀ + b + pos` on tensor cores (`linear_tc`,
/// the positions as its broadcast residual), written as f16 `x16` [B, hp·wp, D].
/// w [D, 3·p·p] f16, b [D] f32, pos [hp·wp, D] f32, `cols16` an f16 scratch [B·hp·wp, 3·p·p]; `ws` the
/// split-K workspace of the GEMM (few tokens).
#[allow(clippy::too_many_arguments)]
pub fn patch_embed_f16(
    gpu: &Gpu,
    ws: &mut crate::ops::linear_tc::LinearTcWorkspace,
    img: &DeviceTensor,
    w: &DeviceTensor,
    b: &DeviceTensor,
    pos: &DeviceTensor,
    p: usize,
    cols16: &mut DeviceTensor,
    x16: &mut DeviceTensor,
) -> Result<()> {
    let (_, hp, wp) = patch_grid(&img.shape, p)?;
    ensure(cols16.dtype == DType::F16, "patch_embed_f16", || {
        format!("cols must be f16, got {:?}", cols16.dtype)
    })?;
    ensure(
        pos.shape.first() == Some(&(hp * wp)),
        "patch_embed_f16",
        || format!("positions {:?} must be [{}, D]", pos.shape, hp * wp),
    )?;
    patch_im2col(gpu, img, p, cols16)?;
    let ep = crate::ops::linear_tc::EpilogueTc {
        bias: Some(b),
        gelu: false,
        residual: Some(pos),
        accumulate: false,
    };
    crate::ops::linear_tc::linear_tc_ws(gpu, cols16, w, ep, None, Some(x16), ws)
}

/// Patch embedding plus positions: out [B, hp·wp, D] = im2col(img) · Wᵀ + b + pos, with w [D, 3·p·p] (the
/// conv weight [D, 3, p, p] flattened), b [D], pos [hp·wp, D] (added to every sample; None = no positions)
/// and `cols` a scratch [B·hp·wp, 3·p·p].
#[allow(clippy::too_many_arguments)]
pub fn patch_embed(
    gpu: &Gpu,
    img: &DeviceTensor,
    w: &DeviceTensor,
    b: &DeviceTensor,
    pos: Option<&DeviceTensor>,
    p: usize,
    cols: &mut DeviceTensor,
    out: &mut DeviceTensor,
) -> Result<()> {
    let (bn, hp, wp) = patch_grid(&img.shape, p)?;
    ensure(
        w.shape.len() == 2 && w.shape[1] == 3 * p * p,
        "patch_embed",
        || {
            format!(
                "weight {:?} must be [D, {}] (the [D, 3, {p}, {p}] conv weight flattened)",
                w.shape,
                3 * p * p
            )
        },
    )?;
    let d = w.shape[0];
    ensure(out.shape == [bn, hp * wp, d], "patch_embed", || {
        format!("out {:?} must be [{bn}, {}, {d}]", out.shape, hp * wp)
    })?;
    if let Some(pos) = pos {
        ensure(pos.numel() == hp * wp * d, "patch_embed", || {
            format!("positions {:?} must be [{}, {d}]", pos.shape, hp * wp)
        })?;
    }
    patch_im2col(gpu, img, p, cols)?;
    linear_ex(
        gpu,
        cols,
        w,
        Epilogue {
            bias: Some(b),
            gelu: false,
            residual: pos,
        },
        out,
    )
}

/// StyleViT's tail, fused: unpatch tokens [B, hp·wp, 3p²] into the image [B, 3, hp·p, wp·p] (the
/// reference's reshape(B, hp, wp, p, p, 3).permute(0, 5, 1, 3, 2, 4)), then `final_conv`: 3x3 conv
/// `w0` [3, 3, 3, 3] + `b0` [3] with zero padding 1, ReLU, 1x1 conv `w2` [3, 3, 1, 1] + `b2` [3], into
/// `y` [B, 3, hp·p, wp·p]. One launch; the unpatched image is not stored.
#[allow(clippy::too_many_arguments)]
pub fn unpatch_tail(
    gpu: &Gpu,
    tokens: &DeviceTensor,
    hp: usize,
    wp: usize,
    p: usize,
    (w0, b0): (&DeviceTensor, &DeviceTensor),
    (w2, b2): (&DeviceTensor, &DeviceTensor),
    y: &mut DeviceTensor,
) -> Result<()> {
    const OP: &str = "unpatch_tail";
    f32_only(OP, &[tokens, w0, b0, w2, b2, y])?;
    ensure(
        tokens.shape.len() == 3
            && tokens.shape[1] == hp * wp
            && tokens.shape[2] == 3 * p * p
            && p > 0
            && hp > 0
            && wp > 0,
        OP,
        || {
            format!(
                "tokens {:?} must be [B, {}, {}]",
                tokens.shape,
                hp * wp,
                3 * p * p
            )
        },
    )?;
    ensure(
        w0.shape == [3, 3, 3, 3]
            && b0.numel() == 3
            && w2.numel() == 9
            && w2.shape[..2] == [3, 3]
            && b2.numel() == 3,
        OP,
        || {
            format!(
                "final_conv weights {:?} / {:?} / {:?} / {:?} must be [3, 3, 3, 3], [3], [3, 3, 1, 1], [3]",
                w0.shape, b0.shape, w2.shape, b2.shape
            )
        },
    )?;
    let b = tokens.shape[0];
    ensure(y.shape == [b, 3, hp * p, wp * p], OP, || {
        format!("y {:?} must be [{b}, 3, {}, {}]", y.shape, hp * p, wp * p)
    })?;
    fits(OP, y.numel().max(tokens.numel()))?;
    let (h, w) = (hp * p, wp * p);
    let grid = ((b * h.div_ceil(PATCH_TAIL_ROWS as usize)) as u32, w.div_ceil(ELEMENTWISE_BLOCK as usize) as u32, 1);
    ensure(b * h.div_ceil(PATCH_TAIL_ROWS as usize) <= i32::MAX as usize && grid.1 <= 65_535, OP, || {
        format!("image [{b}, 3, {h}, {w}] exceeds the launch grid")
    })?;
    // SAFETY: patch_unpatch_tail(tok, w0, b0, w2, b2, y: f32 pointers, batch, hp, wp, p: u32) writes
    // y[(b*3 + k)*H*W + i] for pixel (b, i) < B*H*W, k < 3, and reads tok[(b*hp*wp + py*wp + px)*3p² +
    // (ky*p + kx)*3 + c] (py < hp, px < wp, ky, kx < p, c < 3: inside tokens; neighbours outside the
    // image are skipped), w0[0..81), w2[0..9), b0[0..3), b2[0..3): all shapes checked above. Grid (B ·
    // ceil(H / PATCH_TAIL_ROWS), ceil(W / ELEMENTWISE_BLOCK)) as the kernel expects, checked against the
    // limits; its 32-bit pixel arithmetic stays below the element counts (≤ i32::MAX, checked).
    unsafe {
        gpu.launch(
            "patch_unpatch_tail",
            grid,
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            kernel_args!(
                tokens.ptr(),
                w0.ptr(),
                b0.ptr(),
                w2.ptr(),
                b2.ptr(),
                y.ptr(),
                b as u32,
                hp as u32,
                wp as u32,
                p as u32
            ),
        )
    }
}
