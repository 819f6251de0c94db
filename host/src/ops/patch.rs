//! `patch_embed` / `unpatch` / positional-embedding launchers.
use gpu_kernels::launch::ELEMENTWISE_BLOCK;

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
    // inside [B, 3, hp*p, wp*p] = img's shape.
    unsafe {
        gpu.launch(
            kernel,
            (blocks_for(total, ELEMENTWISE_BLOCK), 1, 1),
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
/// the positions as its broadcast residual), written as f32 `x` and its f16 copy `x16`, [B, hp·wp, D].
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
    x: &mut DeviceTensor,
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
    };
    crate::ops::linear_tc::linear_tc_ws(gpu, cols16, w, ep, Some(x), Some(x16), ws)
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

/// Unpatch: tokens [B, hp·wp, p·p·3] -> image [B, 3, hp·p, wp·p]
/// (the reference's reshape(B, hp, wp, p, p, 3).permute(0, 5, 1, 3, 2, 4)).
pub fn unpatch(
    gpu: &Gpu,
    tokens: &DeviceTensor,
    hp: usize,
    wp: usize,
    p: usize,
    img: &mut DeviceTensor,
) -> Result<()> {
    const OP: &str = "unpatch";
    f32_only(OP, &[tokens, img])?;
    ensure(
        tokens.shape.len() == 3
            && tokens.shape[1] == hp * wp
            && tokens.shape[2] == 3 * p * p
            && p > 0,
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
    let b = tokens.shape[0];
    ensure(img.shape == [b, 3, hp * p, wp * p], OP, || {
        format!(
            "image {:?} must be [{b}, 3, {}, {}]",
            img.shape,
            hp * p,
            wp * p
        )
    })?;
    let total = img.numel();
    fits(OP, total)?;
    // SAFETY: patch_unpatch(tok, img: f32 pointers, batch, hp, wp, p: u32) writes img[0..total) and reads
    // tok[(b*hp*wp + py*wp + px)*3p² + (ky*p + kx)*3 + c] with b < B, py < hp, px < wp, ky, kx < p, c < 3:
    // inside tokens [B, hp*wp, 3p²] (checked).
    unsafe {
        gpu.launch(
            "patch_unpatch",
            (blocks_for(total, ELEMENTWISE_BLOCK), 1, 1),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            kernel_args!(
                tokens.ptr(),
                img.ptr(),
                b as u32,
                hp as u32,
                wp as u32,
                p as u32
            ),
        )
    }
}

/// StyleViT's tail: y = conv1x1(relu(x)), x [N, C, H, W], w [K, C, 1, 1] (or [K, C]), b [K], y [N, K, H, W].
pub fn relu_conv1x1(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    b: &DeviceTensor,
    y: &mut DeviceTensor,
) -> Result<()> {
    const OP: &str = "relu_conv1x1";
    f32_only(OP, &[x, w, b, y])?;
    ensure(
        x.shape.len() == 4 && w.shape.len() >= 2 && w.shape[2..].iter().all(|&s| s == 1),
        OP,
        || {
            format!(
                "x {:?} must be [N, C, H, W] and w {:?} [K, C, 1, 1]",
                x.shape, w.shape
            )
        },
    )?;
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let k = w.shape[0];
    ensure(w.shape[1] == c && b.numel() == k, OP, || {
        format!("w {:?} / b {:?} do not match C = {c}", w.shape, b.shape)
    })?;
    ensure(y.shape == [n, k, h, wd], OP, || {
        format!("y {:?} must be [{n}, {k}, {h}, {wd}]", y.shape)
    })?;
    let total = y.numel();
    fits(OP, total.max(x.numel()))?;
    ensure(total > 0, OP, || "empty output".into())?;
    // SAFETY: patch_relu_conv1x1(x, w, b, y: f32 pointers, n, c_in, k_out: u32, hw: usize) writes
    // y[0..n*k*hw) and reads x[(img*c + ci)*hw + i], w[k*c + ci], b[k] for in-range indices (shapes checked).
    unsafe {
        gpu.launch(
            "patch_relu_conv1x1",
            (blocks_for(total, ELEMENTWISE_BLOCK), 1, 1),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            kernel_args!(
                x.ptr(),
                w.ptr(),
                b.ptr(),
                y.ptr(),
                n as u32,
                c as u32,
                k as u32,
                h * wd
            ),
        )
    }
}
