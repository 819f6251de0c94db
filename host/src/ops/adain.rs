//! `adain` launcher: AdaIN over token statistics with the content/style blend alpha.
use gpu_kernels::launch::{ADAIN_COLS, ADAIN_ROWS};

use crate::error::{ensure, Result};
use crate::gpu::{DType, DeviceTensor, Gpu};
use crate::kernel_args;

const OP: &str = "adain";

/// out = α·adain(c, s) + (1 − α)·c: c [B, Nc, D], s [B or 1, Ns, D] (batch 1 is broadcast), out [B, Nc, D].
/// Per sample and channel over the tokens, unbiased variance + 1e-5 (so Nc, Ns ≥ 2).
pub fn adain(
    gpu: &Gpu,
    c: &DeviceTensor,
    s: &DeviceTensor,
    alpha: f32,
    out: &mut DeviceTensor,
) -> Result<()> {
    ensure(
        [c, s, &*out].iter().all(|t| t.dtype == DType::F32),
        OP,
        || "f32 tensors only".into(),
    )?;
    ensure(c.shape.len() == 3 && s.shape.len() == 3, OP, || {
        format!("c {:?} and s {:?} must be [B, N, D]", c.shape, s.shape)
    })?;
    let cs = [c.shape[0], c.shape[1], c.shape[2]];
    let ss = [s.shape[0], s.shape[1], s.shape[2]];
    adain_raw(gpu, (c.ptr(), cs), (s.ptr(), ss), alpha, out)
}

/// [`adain`] on one tensor holding both: `both` [B + Bs, N, D] f32 is content samples 0..B then the
/// style's Bs (1 or B) samples, as the fast StyleViT's batched encoder leaves them; out [B, N, D].
pub fn adain_split(
    gpu: &Gpu,
    both: &DeviceTensor,
    b: usize,
    alpha: f32,
    out: &mut DeviceTensor,
) -> Result<()> {
    ensure(
        both.dtype == DType::F32 && out.dtype == DType::F32,
        OP,
        || "f32 tensors only".into(),
    )?;
    ensure(
        both.shape.len() == 3 && b > 0 && both.shape[0] > b,
        OP,
        || {
            format!("{:?} must be [B + Bs, N, D] with B = {b} content samples and at least one style sample", both.shape)
        },
    )?;
    let (n, d) = (both.shape[1], both.shape[2]);
    let style = both.ptr() + (b * n * d * 4) as u64;
    adain_raw(
        gpu,
        (both.ptr(), [b, n, d]),
        (style, [both.shape[0] - b, n, d]),
        alpha,
        out,
    )
}

/// The launch: content and style as (device address, [B, N, D]) of f32 rows inside live tensors.
fn adain_raw(
    gpu: &Gpu,
    c: (u64, [usize; 3]),
    s: (u64, [usize; 3]),
    alpha: f32,
    out: &mut DeviceTensor,
) -> Result<()> {
    let (c_ptr, [b, nc, d]) = c;
    let (s_ptr, [bs, ns, sd]) = s;
    ensure(sd == d, OP, || {
        format!("c [{b}, {nc}, {d}] and s [{bs}, {ns}, {sd}] differ in D")
    })?;
    ensure(bs == b || bs == 1, OP, || {
        format!("style batch {bs} must be 1 or the content batch {b}")
    })?;
    ensure(out.shape == [b, nc, d], OP, || {
        format!("out {:?} must be c's shape [{b}, {nc}, {d}]", out.shape)
    })?;
    ensure(nc >= 2 && ns >= 2, OP, || {
        format!("need at least 2 tokens for an unbiased variance (content {nc}, style {ns})")
    })?;
    ensure(b > 0 && d > 0 && b <= 65_535, OP, || {
        format!("batch {b} / D {d} out of range")
    })?;
    ensure(
        (b * nc * d).max(bs * ns * d) <= i32::MAX as usize,
        OP,
        || "tensors exceed 2^31 elements".into(),
    )?;
    let style_bstride = if bs == 1 { 0usize } else { ns * d };
    let grid = (d.div_ceil(ADAIN_COLS as usize) as u32, b as u32, 1);
    // SAFETY: adain(c, s, out: f32 pointers, nc, ns, d: u32, style_bstride: usize, alpha: f32), grid
    // (ceil(d/32), b), block (32, ADAIN_ROWS), 4*32*ADAIN_ROWS bytes of shared memory. Block (x, bb) reads
    // c[bb*nc*d + t*d + ch] (t < nc, ch < d), s[bb*style_bstride + t*d + ch] (t < ns; style_bstride is 0
    // for a broadcast style of batch 1) and writes out like c: all inside the checked shapes.
    unsafe {
        gpu.launch(
            "adain",
            grid,
            (ADAIN_COLS, ADAIN_ROWS, 1),
            4 * ADAIN_COLS * ADAIN_ROWS,
            kernel_args!(
                c_ptr,
                s_ptr,
                out.ptr(),
                nc as u32,
                ns as u32,
                d as u32,
                style_bstride,
                alpha
            ),
        )
    }
}
