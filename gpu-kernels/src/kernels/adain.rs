//! `adain` kernels (see host/src/ops/adain.rs for the launcher, models::ops::adain for the CPU reference).
//!
//! AdaIN over token statistics with the StyleViT blend fused:
//! `out = α·((c − μc)/√(σ²c + ε)·√(σ²s + ε) + μs) + (1 − α)·c`, per sample and channel, unbiased variances
//! over the tokens. A block owns 32 channels of one sample (threadIdx.x = channel, coalesced) and
//! ADAIN_ROWS token rows (threadIdx.y strides the tokens); column sums are finished through shared memory.
//! Two-pass statistics (mean, then Σ(v − mean)²). The style batch may be 1 (broadcast to every sample).
//!
//! `adain_stats_f16` + `adain_apply_f16`: the same on the fast StyleViT's f16 tokens, output f16 (may
//! overwrite the content in place). The statistics are spread over the GPU: one `adain_stats_f16` block
//! per (128 channels, `ADAIN_F16_CHUNK` tokens, sample) writes each channel's (mean, M2) of its chunk; each
//! `adain_apply_f16` block combines its channels' chunks (Chan et al.'s pairwise update, exact in real
//! arithmetic) and applies the blend to its `ADAIN_F16_APPLY_ROWS` tokens. Within a chunk each thread sums
//! its 16 tokens shifted by its first one (the shift keeps Σ(v − shift)² − (Σ(v − shift))²/n well
//! conditioned: the shift is a sample of the same channel), and the block's 8 warps are combined as the
//! chunks are. One warp row is 128 channels x 2 bytes: lane l loads channels 4l .. 4l + 4 (8 bytes).
use crate::device::mma::pack_f16x2;
use super::layer_norm::LnIn;
use crate::device::unroll::unroll;
use crate::device::{
    block_idx_x, block_idx_y, block_idx_z, math, shared, sync_threads, thread_idx_x, thread_idx_y,
};
use crate::launch::{ADAIN_COLS, ADAIN_EPS, ADAIN_F16_APPLY_ROWS, ADAIN_F16_CH, ADAIN_F16_CHUNK, ADAIN_F16_THREADS, ADAIN_ROWS};

const COLS: usize = ADAIN_COLS as usize;
const ROWS: usize = ADAIN_ROWS as usize;

/// Sum of `v` over the ROWS threads of column tx; every thread of the column gets it. All threads call it.
#[inline(always)]
unsafe fn column_sum(v: f32, red: u32, tx: usize, ty: usize) -> f32 {
    shared::st_f32(red + ((ty * COLS + tx) * 4) as u32, v);
    sync_threads();
    let mut s = 0f32;
    for r in 0..ROWS {
        s += shared::ld_f32(red + ((r * COLS + tx) * 4) as u32);
    }
    // The scratch is reused by the next call.
    sync_threads();
    s
}

/// Mean and Σ(v − mean)² of column `ch` of the [n, d] matrix at `p` (zeros when `!valid`).
#[inline(always)]
unsafe fn column_stats(
    p: *const f32,
    n: usize,
    d: usize,
    ch: usize,
    valid: bool,
    red: u32,
    tx: usize,
    ty: usize,
) -> (f32, f32) {
    let mut s = 0f32;
    if valid {
        let mut t = ty;
        while t < n {
            s += *p.add(t * d + ch);
            t += ROWS;
        }
    }
    let mean = math::div(column_sum(s, red, tx, ty), n as f32);
    let mut s2 = 0f32;
    if valid {
        let mut t = ty;
        while t < n {
            let dv = *p.add(t * d + ch) - mean;
            s2 = math::fma(dv, dv, s2);
            t += ROWS;
        }
    }
    (mean, column_sum(s2, red, tx, ty))
}

/// Grid (ceil(d/32), B), block (32, ADAIN_ROWS), shared 4·32·ADAIN_ROWS bytes.
/// c, out: [B, nc, d]; s: [B or 1, ns, d] (`style_bstride` = ns·d, or 0 to broadcast one style sample).
/// nc, ns ≥ 2 (unbiased variance).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn adain(
    c: *const f32,
    s: *const f32,
    out: *mut f32,
    nc: u32,
    ns: u32,
    d: u32,
    style_bstride: usize,
    alpha: f32,
) {
    crate::device::grid_dependency_wait();
    let (nc, ns, d) = (nc as usize, ns as usize, d as usize);
    let (tx, ty) = (thread_idx_x() as usize, thread_idx_y() as usize);
    let ch = block_idx_x() as usize * COLS + tx;
    let b = block_idx_y() as usize;
    let valid = ch < d;
    let red = shared::dynamic_smem_addr();
    let cb = c.add(b * nc * d);
    let sb = s.add(b * style_bstride);
    let (cm, cm2) = column_stats(cb, nc, d, ch, valid, red, tx, ty);
    let (sm, sm2) = column_stats(sb, ns, d, ch, valid, red, tx, ty);
    if !valid {
        return;
    }
    let c_sd = math::sqrt(math::div(cm2, (nc - 1) as f32) + ADAIN_EPS);
    let s_sd = math::sqrt(math::div(sm2, (ns - 1) as f32) + ADAIN_EPS);
    let ob = out.add(b * nc * d);
    let mut t = ty;
    while t < nc {
        let x = *cb.add(t * d + ch);
        let styled = math::div(x - cm, c_sd) * s_sd + sm;
        *ob.add(t * d + ch) = alpha * styled + (1.0 - alpha) * x;
        t += ROWS;
    }
}

const _: () = assert!(ADAIN_F16_THREADS == 256 && ADAIN_F16_CH == 128 && ADAIN_F16_CHUNK == 128 && ADAIN_F16_APPLY_ROWS == 256);

/// (count, mean, M2) of one set of values, combined by [`math::chan`].
type Moments = (f32, f32, f32);
const EMPTY: Moments = (0.0, 0.0, 0.0);

/// Four f16 channels (8 bytes) as f32: `layer_norm`'s f16 row load.
#[inline(always)]
unsafe fn load4_f16(p: *const u16) -> [f32; 4] {
    <u16 as LnIn>::load4(p, 0)
}

/// Per-chunk channel statistics of two token tensors in one launch (the content's and the style's): x1
/// [samples1, n1, d] and x2 [gridDim.z − samples1, n2, d] f16 (token-major, d % 4 == 0, 8-byte aligned).
/// Block (x, y, z) = channels 128x .. 128x + 128 (< d), tokens 128y .. 128y + 128 of sample z of x1 (z <
/// samples1) or sample z − samples1 of x2; it writes `part[((s · chunks + y) · d + ch) · 2 ..+ 2]` =
/// (mean, M2) of those tokens into that tensor's `part1` / `part2`, chunks = ceil(n / 128). Blocks with y
/// past their tensor's chunks return at once (gridDim.y is the larger count). Block `ADAIN_F16_THREADS`,
/// dynamic shared memory `ADAIN_F16_STATS_SMEM`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn adain_stats_f16(
    x1: *const u16,
    part1: *mut f32,
    n1: u32,
    samples1: u32,
    x2: *const u16,
    part2: *mut f32,
    n2: u32,
    d: u32,
) {
    crate::device::grid_dependency_wait_then_trigger();
    let t = thread_idx_x();
    let (warp, lane) = (t / 32, t % 32);
    let ch0 = block_idx_x() * ADAIN_F16_CH;
    let ch = ch0 + 4 * lane;
    let (chunk, z) = (block_idx_y(), block_idx_z());
    let (x, part, n, b) = if z < samples1 { (x1, part1, n1, z) } else { (x2, part2, n2, z - samples1) };
    let chunks = n.div_ceil(ADAIN_F16_CHUNK);
    if chunk >= chunks {
        return;
    }
    let (n, d) = (n as usize, d as usize);
    let t0 = (chunk * ADAIN_F16_CHUNK + warp) as usize;
    let base = x.add(b as usize * n * d + ch as usize);
    let mut acc = [EMPTY; 4];
    if (ch as usize) < d && t0 < n {
        let shift = load4_f16(base.add(t0 * d));
        let mut s1 = [0f32; 4];
        let mut s2 = [0f32; 4];
        let mut cnt = 0f32;
        unroll!(16, |i| {
            let tok = t0 + 8 * i;
            if tok < n {
                let v = load4_f16(base.add(tok * d));
                unroll!(4, |e| {
                    let dv = v[e] - shift[e];
                    s1[e] += dv;
                    s2[e] = math::fma(dv, dv, s2[e]);
                });
                cnt += 1.0;
            }
        });
        unroll!(4, |e| {
            let m = math::div(s1[e], cnt);
            let m2 = math::fma(-s1[e], m, s2[e]);
            acc[e] = (cnt, shift[e] + m, if m2 > 0.0 { m2 } else { 0.0 });
        });
    }
    // [warp][channel] (n, mean, M2) in the dynamic shared memory.
    let red: *mut [f32; 3] = shared::dynamic_smem();
    unroll!(4, |e| {
        let (n, mean, m2) = acc[e];
        *red.add((warp * ADAIN_F16_CH + 4 * lane) as usize + e) = [n, mean, m2];
    });
    sync_threads();
    if t < ADAIN_F16_CH && ((ch0 + t) as usize) < d {
        let mut m = EMPTY;
        for w in 0..8 {
            let [n, mean, m2] = *red.add((w * ADAIN_F16_CH + t) as usize);
            m = math::chan(m, (n, mean, m2));
        }
        let at = ((b * chunks + chunk) as usize * d + (ch0 + t) as usize) * 2;
        *part.add(at) = m.1;
        *part.add(at + 1) = m.2;
    }
}

/// Combines chunks `0 .. ceil(n / 128)` of one sample's channel `ch` (`part` laid out as
/// [`adain_stats_f16`] writes it, `chunks` per sample).
#[inline(always)]
unsafe fn combine(part: *const f32, sample: usize, chunks: usize, d: usize, ch: usize, n: usize) -> Moments {
    let mut m = EMPTY;
    for k in 0..chunks {
        let at = ((sample * chunks + k) * d + ch) * 2;
        let cnt = (n - k * ADAIN_F16_CHUNK as usize).min(ADAIN_F16_CHUNK as usize);
        m = math::chan(m, (cnt as f32, *part.add(at), *part.add(at + 1)));
    }
    m
}

/// AdaIN + blend on f16 tokens: out = α·((c − μc)/σc·σs + μs) + (1 − α)·c per sample and channel (σ from
/// the unbiased variance + ε), from the chunk statistics of c (`cpart`, ceil(nc / 128) chunks per sample)
/// and of the style (`spart`, ceil(ns / 128) chunks per style sample; sample z uses style sample
/// `z · style_per_sample`, so 0 broadcasts the first). c, out: [B, nc, d] f16 (out may be c: every
/// element is read and then written by the same thread). Block (x, y, z) = channels 128x .. + 128, tokens
/// 256y .. + 256 of sample z; `ADAIN_F16_THREADS` threads, dynamic shared memory `ADAIN_F16_APPLY_SMEM`. nc, ns ≥ 2.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn adain_apply_f16(
    c: *const u16,
    out: *mut u16,
    cpart: *const f32,
    spart: *const f32,
    nc: u32,
    ns: u32,
    d: u32,
    style_per_sample: u32,
    alpha: f32,
) {
    crate::device::grid_dependency_wait_then_trigger();
    let t = thread_idx_x();
    let (warp, lane) = (t / 32, t % 32);
    let ch0 = block_idx_x() * ADAIN_F16_CH;
    let b = block_idx_z() as usize;
    let (nc, ns, d) = (nc as usize, ns as usize, d as usize);
    // [channel] (μc, σs/σc, μs) in the dynamic shared memory.
    let coef: *mut [f32; 3] = shared::dynamic_smem();
    if t < ADAIN_F16_CH && ((ch0 + t) as usize) < d {
        let ch = (ch0 + t) as usize;
        let cm = combine(cpart, b, nc.div_ceil(ADAIN_F16_CHUNK as usize), d, ch, nc);
        let sm = combine(spart, b * style_per_sample as usize, ns.div_ceil(ADAIN_F16_CHUNK as usize), d, ch, ns);
        let c_sd = math::sqrt(math::div(cm.2, (nc - 1) as f32) + ADAIN_EPS);
        let s_sd = math::sqrt(math::div(sm.2, (ns - 1) as f32) + ADAIN_EPS);
        *coef.add(t as usize) = [cm.1, math::div(s_sd, c_sd), sm.1];
    }
    sync_threads();
    let ch = ch0 + 4 * lane;
    if ch as usize >= d {
        return;
    }
    let k = [0, 1, 2, 3].map(|e| *coef.add(4 * lane as usize + e));
    let t0 = block_idx_y() as usize * ADAIN_F16_APPLY_ROWS as usize + warp as usize;
    let off = b * nc * d + ch as usize;
    unroll!(4, |batch| {
        let mut v = [[0f32; 4]; 8];
        unroll!(8, |i| {
            let tok = t0 + 8 * (8 * batch + i);
            if tok < nc {
                v[i] = load4_f16(c.add(off + tok * d));
            }
        });
        unroll!(8, |i| {
            let tok = t0 + 8 * (8 * batch + i);
            if tok < nc {
                let mut o = [0f32; 4];
                unroll!(4, |e| {
                    let [mc, ratio, ms] = k[e];
                    let styled = math::fma(v[i][e] - mc, ratio, ms);
                    o[e] = math::fma(alpha, styled, (1.0 - alpha) * v[i][e]);
                });
                *(out.add(off + tok * d) as *mut [u32; 2]) = [pack_f16x2(o[0], o[1]), pack_f16x2(o[2], o[3])];
            }
        });
    });
}
