//! NHWC glue kernels for the bf16 TransformerNet (see host/src/ops/nhwc.rs for the launchers).
//!
//! * `nhwc_pack_input`: NCHW f32 [N, 3, H, W] -> NHWC bf16 [N, H, W, 16], channels 3..15 zero;
//! * `nhwc_in_stats`: per (sample, channel, pixel chunk) mean and M2 of an NHWC f32 tensor, two passes
//!   over the chunk (the existing `instance_norm_finalize` combines the chunks with Chan's formula);
//! * `nhwc_in_apply`: y = γ(x − mean)·rstd + β (+ReLU) (+residual), written as f32 and/or bf16;
//! * `nhwc_unpack_output`: NHWC f32 [N, P, Q, Cx] channels 0..3 + bias -> NCHW f32 [N, 3, P, Q].
use crate::device::{block_idx_x, block_idx_y, block_idx_z, global_index_x, math, shared, sync_threads, thread_idx_x};

/// f32 -> bf16 bits, round to nearest even on the bit pattern (NaN stays a quiet NaN).
#[inline(always)]
fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    if (bits & 0x7fff_ffff) > 0x7f80_0000 {
        return ((bits >> 16) as u16) | 0x0040;
    }
    let lsb = (bits >> 16) & 1;
    (bits.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// One thread per pixel of `n_pix` = N*H*W: reads x[(n*3 + c)*hw + i] for c < 3, writes the 16 bf16
/// channels of y[pix*16 ..] (3..15 zero) as eight 32-bit words (y is 4-byte aligned: 32 bytes per pixel).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn nhwc_pack_input(x: *const f32, y: *mut u32, n_pix: usize, hw: usize) {
    let (mut pix, stride) = global_index_x();
    while pix < n_pix {
        let n = pix / hw;
        let i = pix - n * hw;
        let src = x.add(n * 3 * hw + i);
        let c0 = to_bf16(*src) as u32;
        let c1 = to_bf16(*src.add(hw)) as u32;
        let c2 = to_bf16(*src.add(2 * hw)) as u32;
        let dst = y.add(pix * 8);
        *dst = c0 | (c1 << 16);
        *dst.add(1) = c2;
        let mut k = 2;
        while k < 8 {
            *dst.add(k) = 0;
            k += 1;
        }
        pix += stride;
    }
}

/// Rows of pixels a `nhwc_in_stats` block walks at once (block = 32 x NHWC_ROWS threads).
const ROWS: usize = 8;

/// Partial statistics. Grid (splits, C/32, N), block 256 threads: lane = channel c = 32*blockIdx.y +
/// tid % 32, row = tid / 32 walks pixels start+row, start+row+8, .. of chunk blockIdx.x
/// (`start = s*chunk .. min(pq, start+chunk)`). Writes part[((n*C + c)*splits + s)*2 ..+2] = (mean, M2),
/// both from two passes over the chunk. Dynamic shared memory: 2*256 floats.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn nhwc_in_stats(x: *const f32, part: *mut f32, pq: usize, c: u32, chunk: usize, splits: u32) {
    let s = block_idx_x() as usize;
    let cg = block_idx_y() as usize;
    let n = block_idx_z() as usize;
    let t = thread_idx_x() as usize;
    let lane = t % 32;
    let row = t / 32;
    let cs = c as usize;
    let ch = cg * 32 + lane;
    let start = s * chunk;
    let end = if start + chunk < pq { start + chunk } else { pq };
    let count = end.saturating_sub(start);
    let base = x.add(n * pq * cs + ch);
    let red = shared::dynamic_smem::<f32>();

    let mut sum = 0f32;
    let mut p = start + row;
    while p < end {
        sum += *base.add(p * cs);
        p += ROWS;
    }
    *red.add(t) = sum;
    sync_threads();
    let mut tot = 0f32;
    let mut r = 0;
    while r < ROWS {
        tot += *red.add(r * 32 + lane);
        r += 1;
    }
    let mean = if count > 0 { tot / count as f32 } else { 0.0 };

    let mut m2 = 0f32;
    let mut p = start + row;
    while p < end {
        let d = *base.add(p * cs) - mean;
        m2 = math::fma(d, d, m2);
        p += ROWS;
    }
    *red.add(256 + t) = m2;
    sync_threads();
    if row == 0 {
        let mut tot2 = 0f32;
        let mut r = 0;
        while r < ROWS {
            tot2 += *red.add(256 + r * 32 + lane);
            r += 1;
        }
        let o = part.add(((n * cs + ch) * splits as usize + s) * 2);
        *o = mean;
        *o.add(1) = tot2;
    }
}

/// Elementwise over `total` = N*P*Q*C elements of NHWC f32 `x`: channel ch = i % C, sample n = i / pqc
/// (pqc = P*Q*C), v = γ[ch]·(x − mean)·rstd + β[ch] with (mean, rstd) = stats[(n*C + ch)*2 ..+2], then
/// ReLU when `relu` != 0, then + residual[i] when `residual` is not null. Writes y32[i] (f32) when not
/// null and y16[i] (bf16) when not null. The launcher keeps `total` below 2^31 and the grid at most
/// 8192 x 256 threads, so the 32-bit index and its increment cannot overflow. Each index is read and written by one thread, so y32 may equal
/// x or residual.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn nhwc_in_apply(
    x: *const f32,
    y32: *mut f32,
    y16: *mut u16,
    residual: *const f32,
    gamma: *const f32,
    beta: *const f32,
    stats: *const f32,
    total: usize,
    c: u32,
    pqc: usize,
    relu: u32,
) {
    // total < 2^31 (checked by the launcher), so 32-bit index arithmetic is exact and cheaper.
    let (i0, stride) = global_index_x();
    let (mut i, stride, total32, pqc32) = (i0 as u32, stride as u32, total as u32, pqc as u32);
    while i < total32 {
        let n = i / pqc32;
        let ch = (i % c) as usize;
        let st = stats.add((n as usize * c as usize + ch) * 2);
        let e = i as usize;
        let a = *gamma.add(ch) * *st.add(1);
        let b = *beta.add(ch) - *st * a;
        let mut v = math::fma(*x.add(e), a, b);
        if relu != 0 {
            v = math::relu(v);
        }
        if !residual.is_null() {
            v += *residual.add(e);
        }
        if !y32.is_null() {
            *y32.add(e) = v;
        }
        if !y16.is_null() {
            *y16.add(e) = to_bf16(v);
        }
        i += stride;
    }
}

/// One thread per output pixel of `n_pix` = N*P*Q: y[(n*3 + c)*pq + i] = x[pix*cx + c] + bias[c], c < 3.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn nhwc_unpack_output(x: *const f32, y: *mut f32, bias: *const f32, n_pix: usize, pq: usize, cx: u32) {
    let (mut pix, stride) = global_index_x();
    let (b0, b1, b2) = (*bias, *bias.add(1), *bias.add(2));
    while pix < n_pix {
        let n = pix / pq;
        let i = pix - n * pq;
        let src = x.add(pix * cx as usize);
        let dst = y.add(n * 3 * pq + i);
        *dst = *src + b0;
        *dst.add(pq) = *src.add(1) + b1;
        *dst.add(2 * pq) = *src.add(2) + b2;
        pix += stride;
    }
}
