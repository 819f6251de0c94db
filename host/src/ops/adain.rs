//! `adain` launcher: AdaIN over token statistics with the content/style blend alpha. [`adain_f16`] /
//! [`adain_f16_split`]: the same on f16 tokens (`adain_stats_f16` + `adain_apply_f16`, two launches; the
//! fast StyleViT).
use gpu_kernels::launch::{
    ADAIN_COLS, ADAIN_F16_APPLY_ROWS, ADAIN_F16_APPLY_SMEM, ADAIN_F16_CH, ADAIN_F16_CHUNK, ADAIN_F16_STATS_SMEM,
    ADAIN_F16_THREADS, ADAIN_ROWS,
};

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

const OP_F16: &str = "adain_f16";

/// f32 elements of the statistics scratch [`adain_f16`] needs for content [B, Nc, D] and style [Bs, Ns, D]:
/// (mean, M2) per sample, channel and chunk of `ADAIN_F16_CHUNK` tokens.
pub fn adain_f16_part_len(b: usize, nc: usize, bs: usize, ns: usize, d: usize) -> usize {
    let chunk = ADAIN_F16_CHUNK as usize;
    2 * d * (b * nc.div_ceil(chunk) + bs * ns.div_ceil(chunk))
}

/// [`adain`] on f16 tokens, in place: x16 [B, Nc, D] f16 becomes α·adain(x16, s16) + (1 − α)·x16 (f32
/// arithmetic, one f16 rounding), s16 [B or 1, Ns, D] f16. D % 4 == 0; `part` an f32 scratch of at least
/// [`adain_f16_part_len`] elements. Every violation is an error and nothing is launched.
pub fn adain_f16(gpu: &Gpu, x16: &mut DeviceTensor, s16: &DeviceTensor, alpha: f32, part: &mut DeviceTensor) -> Result<()> {
    ensure(x16.shape.len() == 3 && s16.shape.len() == 3 && s16.dtype == DType::F16, OP_F16, || {
        format!("x16 {:?} and s16 {:?} must be [B, N, D] f16", x16.shape, s16.shape)
    })?;
    let cs = [x16.shape[0], x16.shape[1], x16.shape[2]];
    let ss = [s16.shape[0], s16.shape[1], s16.shape[2]];
    adain_f16_raw(gpu, (x16.ptr(), cs), (s16.ptr(), ss), alpha, x16, part)
}

/// [`adain_f16`] on one tensor holding both, as the fast StyleViT's batched encoder leaves them: `both`
/// [B + Bs, N, D] f16 is content samples 0..B then the style's Bs (1 or B); out [B, N, D] f16.
pub fn adain_f16_split(
    gpu: &Gpu,
    both: &DeviceTensor,
    b: usize,
    alpha: f32,
    out: &mut DeviceTensor,
    part: &mut DeviceTensor,
) -> Result<()> {
    ensure(both.dtype == DType::F16 && both.shape.len() == 3 && b > 0 && both.shape[0] > b, OP_F16, || {
        format!("{:?} must be [B + Bs, N, D] f16 with B = {b} content samples and at least one style sample", both.shape)
    })?;
    let (n, d) = (both.shape[1], both.shape[2]);
    let style = both.ptr() + (b * n * d * 2) as u64;
    adain_f16_raw(gpu, (both.ptr(), [b, n, d]), (style, [both.shape[0] - b, n, d]), alpha, out, part)
}

/// The launches: content and style as (device address, [B, N, D]) of f16 rows inside live tensors (the
/// content may be `out` itself).
fn adain_f16_raw(
    gpu: &Gpu,
    c: (u64, [usize; 3]),
    s: (u64, [usize; 3]),
    alpha: f32,
    out: &mut DeviceTensor,
    part: &mut DeviceTensor,
) -> Result<()> {
    let (c_ptr, [b, nc, d]) = c;
    let (s_ptr, [bs, ns, sd]) = s;
    ensure(sd == d && d > 0 && d.is_multiple_of(4), OP_F16, || {
        format!("c [{b}, {nc}, {d}] and s [{bs}, {ns}, {sd}]: D must match and be a multiple of 4")
    })?;
    ensure(bs == b || bs == 1, OP_F16, || format!("style batch {bs} must be 1 or the content batch {b}"))?;
    ensure(out.dtype == DType::F16 && out.shape == [b, nc, d], OP_F16, || {
        format!("out {:?} {:?} must be f16 [{b}, {nc}, {d}]", out.dtype, out.shape)
    })?;
    ensure(nc >= 2 && ns >= 2, OP_F16, || {
        format!("need at least 2 tokens for an unbiased variance (content {nc}, style {ns})")
    })?;
    let chunk = ADAIN_F16_CHUNK as usize;
    let (cchunks, schunks) = (nc.div_ceil(chunk), ns.div_ceil(chunk));
    ensure(
        b + bs <= 65_535 && cchunks.max(schunks).max(nc.div_ceil(ADAIN_F16_APPLY_ROWS as usize)) <= 65_535 && (b * nc * d).max(bs * ns * d) <= i32::MAX as usize,
        OP_F16,
        || format!("c [{b}, {nc}, {d}] / s [{bs}, {ns}, {d}] exceed the grid or 2^31 elements"),
    )?;
    let need = adain_f16_part_len(b, nc, bs, ns, d);
    ensure(part.dtype == DType::F32 && part.numel() >= need, OP_F16, || {
        format!("scratch {:?} {:?} must be f32 with at least {need} elements", part.dtype, part.shape)
    })?;
    let gx = d.div_ceil(ADAIN_F16_CH as usize) as u32;
    let (cpart, spart) = (part.ptr(), part.ptr() + (2 * d * b * cchunks * 4) as u64);
    // SAFETY: adain_stats_f16(x1: f16 pointer, part1: f32 pointer, n1, samples1: u32, x2, part2, n2, d),
    // grid (ceil(d/128), max(cchunks, schunks), b + bs), block ADAIN_F16_THREADS, ADAIN_F16_STATS_SMEM bytes
    // of shared memory. Block (cx, k, z) reads the content's x[(z·nc + t)·d + ch .. + 4] (z < b) or the
    // style's (sample z − b < bs, t < ns) for t < n, ch < d (8-byte loads: d % 4 == 0 and both are tensor
    // bases or whole-sample offsets of one, so 8-byte aligned) inside the rows the callers pass (live
    // tensors), and writes part[((s·chunks + k)·d + ch)·2 ..+ 2] for k < chunks, ch < d into the content's
    // or the style's half of the scratch (checked length; the style's after the content's).
    unsafe {
        gpu.launch(
            "adain_stats_f16",
            (gx, cchunks.max(schunks) as u32, (b + bs) as u32),
            (ADAIN_F16_THREADS, 1, 1),
            ADAIN_F16_STATS_SMEM,
            kernel_args!(c_ptr, cpart, nc as u32, b as u32, s_ptr, spart, ns as u32, d as u32),
        )?;
    }
    let grid = (gx, nc.div_ceil(ADAIN_F16_APPLY_ROWS as usize) as u32, b as u32);
    // SAFETY: adain_apply_f16(c, out: f16 pointers, cpart, spart: f32 pointers, nc, ns, d, style_per_sample:
    // u32, alpha: f32), grid (ceil(d/128), ceil(nc/256), b), block ADAIN_F16_THREADS, ADAIN_F16_APPLY_SMEM
    // bytes. It reads the partials the two launches above wrote (stream order) for samples < b (style:
    // sample z·style_per_sample < bs), and c / writes out at [(z·nc + t)·d + ch .. + 4], t < nc, ch < d: out
    // is [b, nc, d] f16 (checked); out may be the content itself (each element is read, then written, by
    // one thread, and nothing else reads it in this launch).
    unsafe {
        gpu.launch(
            "adain_apply_f16",
            grid,
            (ADAIN_F16_THREADS, 1, 1),
            ADAIN_F16_APPLY_SMEM,
            kernel_args!(c_ptr, out.ptr(), cpart, spart, nc as u32, ns as u32, d as u32, u32::from(bs == b), alpha),
        )
    }
}
