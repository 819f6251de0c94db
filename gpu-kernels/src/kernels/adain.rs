//! `adain` kernels (see host/src/ops/adain.rs for the launcher, models::ops::adain for the CPU reference).
//!
//! AdaIN over token statistics with the StyleViT blend fused:
//! `out = α·((c − μc)/√(σ²c + ε)·√(σ²s + ε) + μs) + (1 − α)·c`, per sample and channel, unbiased variances
//! over the tokens. A block owns 32 channels of one sample (threadIdx.x = channel, coalesced) and
//! ADAIN_ROWS token rows (threadIdx.y strides the tokens); column sums are finished through shared memory.
//! Two-pass statistics (mean, then Σ(v − mean)²). The style batch may be 1 (broadcast to every sample).
use crate::device::{
    block_idx_x, block_idx_y, math, shared, sync_threads, thread_idx_x, thread_idx_y,
};
use crate::launch::{ADAIN_COLS, ADAIN_EPS, ADAIN_ROWS};

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
