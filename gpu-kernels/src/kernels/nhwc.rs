//! NHWC glue kernels of the fast (f16) TransformerNet (see host/src/ops/nhwc.rs for the launchers).
//!
//! * `nhwc_pack_input`: NCHW f32 [N, 3, H, W] -> NHWC f16 [N, H, W, 4], channel 3 zero;
//! * `nhwc_in_coef`: combines the per-tile InstanceNorm partials that `conv2d_tc` writes into per
//!   (sample, channel) affine coefficients a = γ·rstd, b = β − mean·a;
//! * `in_sums_add` / `in_coef_from_sums`: the other route, without that launch: a conv epilogue adds each
//!   tile's statistics to f64 plane sums (Σx, Σx²) with atomics, one 128-byte line per plane
//!   (`NORM_SUMS_STRIDE`), and the norm's consumer (`nhwc_in_apply_pad`) computes (a, b) from them;
//! * `nhwc_in_apply`: y = a·x + b (+ReLU) (+residual, itself optionally normalised + ReLU) on NHWC f16,
//!   eight channels per thread.
use crate::device::mma::{pack_f16x2, unpack_f16x2};
use crate::device::unroll::unroll;
use crate::device::warp::shfl_xor_f32;
use crate::device::{block_idx_x, global_index_x, math, shared, sync_threads, thread_idx_x};
use crate::launch::{InNorm, NHWC_APPLY_PAD_THREADS, NHWC_COEF_THREADS, NORM_SUMS_STRIDE};

/// One thread per pixel of `n_pix` = N*H*W: reads x[(n*3 + c)*hw + i] for c < 3, writes the 4 f16
/// channels of y[pix*4 ..] (channel 3 zero) as two 32-bit words (8 bytes per pixel).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn nhwc_pack_input(
    x: *const f32,
    y: *mut u32,
    n_pix: usize,
    hw: usize,
) {
    crate::device::grid_dependency_wait();
    let (mut pix, stride) = global_index_x();
    while pix < n_pix {
        let n = pix / hw;
        let i = pix - n * hw;
        let src = x.add(n * 3 * hw + i);
        let dst = y.add(pix * 2);
        // All three loads before the first store (a load after it would wait for its own round trip).
        let (r, g, b) = (*src, *src.add(hw), *src.add(2 * hw));
        *dst = pack_f16x2(r, g);
        *dst.add(1) = pack_f16x2(b, 0.0);
        pix += stride;
    }
}

/// Block (`NHWC_COEF_THREADS` threads) per plane p = n*C + ch (grid x = N*C): combines
/// part[(p*tiles + i)*2 ..+2] = (mean, M2) of tile i, then writes coef[p*2 ..+2] = (a, b) with
/// rstd = 1/sqrt(M2/pq + eps), a = γ[ch]·rstd, b = β[ch] − mean·a. The plane is viewed as `p_rows` x
/// `q_cols` pixels (pq = their product) cut into tiles of `tile_h` x `tile_w`, `tiles_x` per tile row:
/// tile i counts min(tile_w, q_cols − (i % tiles_x)·tile_w) · min(tile_h, p_rows − (i / tiles_x)·tile_h)
/// pixels. The 1-D tiles of `conv2d_tc` (tile_px pixels of the flattened plane) are tiles_x = tiles,
/// tile_w = tile_px, tile_h = 1, q_cols = P·Q, p_rows = 1; `conv2d_tc_c4_halo9_k32`'s are its 2-D blocks.
/// Dynamic shared memory: 3 * NHWC_COEF_THREADS / 32 floats.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn nhwc_in_coef(
    part: *const f32,
    coef: *mut f32,
    gamma: *const f32,
    beta: *const f32,
    c: u32,
    tiles: u32,
    tiles_x: u32,
    tile_w: u32,
    tile_h: u32,
    q_cols: u32,
    p_rows: u32,
    eps: f32,
) {
    crate::device::grid_dependency_wait();
    let pq = p_rows * q_cols;
    let p = block_idx_x();
    let t = thread_idx_x();
    let ch = (p % c) as usize;
    // γ and β now (thread 0 uses them last): loaded at the end they were two more round trips in a row.
    let (ga, be) = if t == 0 {
        (*gamma.add(ch), *beta.add(ch))
    } else {
        (0.0, 0.0)
    };
    let src = part.add((p * tiles * 2) as usize);
    let mut acc = (0f32, 0f32, 0f32);
    let mut i = t;
    while i < tiles {
        // Four tiles' partials loaded at once, then combined in tile order (one round trip per four tiles
        // instead of one per tile; the same sums).
        let mut v = [(0f32, 0f32); 4];
        unroll!(4, |u| {
            let iu = i + u as u32 * NHWC_COEF_THREADS;
            if iu < tiles {
                v[u] = (*src.add(2 * iu as usize), *src.add(2 * iu as usize + 1));
            }
        });
        unroll!(4, |u| {
            let iu = i + u as u32 * NHWC_COEF_THREADS;
            if iu < tiles {
                let ty = iu / tiles_x;
                let (x0, y0) = ((iu - ty * tiles_x) * tile_w, ty * tile_h);
                let cw = if q_cols - x0 < tile_w {
                    q_cols - x0
                } else {
                    tile_w
                };
                let rh = if p_rows - y0 < tile_h {
                    p_rows - y0
                } else {
                    tile_h
                };
                acc = math::chan(acc, ((cw * rh) as f32, v[u].0, v[u].1));
            }
        });
        i += 4 * NHWC_COEF_THREADS;
    }
    let mut m = 16;
    while m > 0 {
        let o = (
            shfl_xor_f32(acc.0, m),
            shfl_xor_f32(acc.1, m),
            shfl_xor_f32(acc.2, m),
        );
        acc = math::chan(acc, o);
        m >>= 1;
    }
    let red = shared::dynamic_smem::<f32>();
    let warps = NHWC_COEF_THREADS / 32;
    if t % 32 == 0 {
        let w = (t / 32) as usize;
        *red.add(3 * w) = acc.0;
        *red.add(3 * w + 1) = acc.1;
        *red.add(3 * w + 2) = acc.2;
    }
    sync_threads();
    if t == 0 {
        let mut tot = (0f32, 0f32, 0f32);
        for w in 0..warps as usize {
            tot = math::chan(
                tot,
                (*red.add(3 * w), *red.add(3 * w + 1), *red.add(3 * w + 2)),
            );
        }
        let (a, b) = in_coef(tot.1, tot.2 / pq as f32, ga, be, eps);
        *coef.add(2 * p as usize) = a;
        *coef.add(2 * p as usize + 1) = b;
    }
}

/// The norm's affine coefficients from a plane's mean and biased variance: rstd = 1/sqrt(var + eps) (a
/// negative variance, from rounding, counts as 0), a = γ·rstd, b = β − mean·a.
#[inline(always)]
fn in_coef(mean: f32, var: f32, gamma: f32, beta: f32, eps: f32) -> (f32, f32) {
    let var = if var > 0.0 { var } else { 0.0 };
    let rstd = 1.0 / math::sqrt(var + eps);
    let a = gamma * rstd;
    (a, beta - mean * a)
}

/// Adds one tile's InstanceNorm partial of a plane, `count` values with mean `mean` and sum of squared
/// deviations `m2`, to the plane's f64 sums `sums[0..2]` = (Σx, Σx²): count·mean and m2 + count·mean².
/// In f64 the sums keep the variance Σx²/n − mean² exact to ~1e-16·mean²: no cancellation for any
/// activation a conv produces. Fire-and-forget atomics (`red.global.add.f64`): the order of the additions
/// varies between runs, the result only in its last f64 bits.
///
/// # Safety
/// `sums` must point to two writable, 8-byte aligned doubles of global memory.
#[inline(always)]
pub unsafe fn in_sums_add(sums: *mut f64, count: f32, mean: f32, m2: f32) {
    let (n, m) = (count as f64, mean as f64);
    crate::device::red_add_f64(sums, n * m);
    crate::device::red_add_f64(sums.add(1), m2 as f64 + n * m * m);
}

/// The norm's (a, b) for one plane of `count` values from its f64 sums (Σx, Σx²) (`in_sums_add`): mean
/// and biased variance in f64, then [`in_coef`]'s f32 arithmetic, as `nhwc_in_coef` does from partials.
#[inline(always)]
pub fn in_coef_from_sums(sx: f64, sxx: f64, count: u32, gamma: f32, beta: f32, eps: f32) -> (f32, f32) {
    let inv = 1.0 / count as f64;
    let mean = sx * inv;
    let var = sxx * inv - mean * mean;
    in_coef(mean as f32, var as f32, gamma, beta, eps)
}

/// An input norm's (a, b) for channel `ch` of sample `n` (`c` channels): read from `coef`, or computed from
/// the plane sums (`InNorm`'s comment). Call after `griddepcontrol.wait` (the producer writes either).
///
/// # Safety
/// `nrm.is_some()`; its pointers address the N·C pairs or planes and the C γ and β the launcher checked.
#[inline(always)]
pub unsafe fn in_norm_pair(nrm: &InNorm, n: u32, c: u32, ch: u32) -> (f32, f32) {
    if nrm.sums != 0 {
        let sp = (nrm.sums as *const f64).add(((n * c + ch) * NORM_SUMS_STRIDE) as usize);
        let (ga, be) = (*(nrm.gamma as *const f32).add(ch as usize), *(nrm.beta as *const f32).add(ch as usize));
        in_coef_from_sums(*sp, *sp.add(1), nrm.count, ga, be, nrm.eps)
    } else {
        let p = (nrm.coef as *const f32).add(((n * c + ch) * 2) as usize);
        (*p, *p.add(1))
    }
}

/// Eight f16 (16 bytes).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct H8(pub [u32; 4]);

/// Over `groups` = N*P*Q*C/8 groups of eight channels of NHWC f16 `x` (C % 8 == 0): group i covers
/// channels ch0 = (8i) % C .. +8 of sample n = 8i / pqc (pqc = P*Q*C). v = a·x + b with
/// (a, b) = coef[(n*C + ch)*2 ..+2], then ReLU when `relu` != 0, then + residual (f16, same layout) when
/// not null; written as f16 (saturated). With `res_coef` not null (and a residual) the residual is itself
/// a raw conv output whose norm + ReLU is applied first: r = f16(relu(a'·r + b')) with (a', b') =
/// res_coef[(n*C + ch)*2 ..+2], rounded to f16 as `nhwc_in_apply` with ReLU would have stored it (so the
/// trunk equals the value the next conv's input norm reads from the same raw tensor). Each group is read
/// and written by one thread, so `y` may equal `x` or `residual`. The launcher keeps `groups * 8` below 2^31.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn nhwc_in_apply(
    x: *const H8,
    y: *mut H8,
    residual: *const H8,
    coef: *const f32,
    groups: u32,
    c: u32,
    pqc: u32,
    relu: u32,
    res_coef: *const f32,
) {
    crate::device::grid_dependency_wait();
    let (i0, stride) = global_index_x();
    let (mut i, stride) = (i0 as u32, stride as u32);
    while i < groups {
        let e = i * 8;
        let n = e / pqc;
        let ch0 = e % c;
        let cf = coef.add(((n * c + ch0) * 2) as usize);
        let xv = *x.add(i as usize);
        let rv = if residual.is_null() {
            H8([0; 4])
        } else {
            *residual.add(i as usize)
        };
        let mut out = H8([0; 4]);
        for k in 0..4 {
            let (x0, x1) = unpack_f16x2(xv.0[k]);
            let mut v0 = math::fma(x0, *cf.add(4 * k), *cf.add(4 * k + 1));
            let mut v1 = math::fma(x1, *cf.add(4 * k + 2), *cf.add(4 * k + 3));
            if relu != 0 {
                v0 = math::relu(v0);
                v1 = math::relu(v1);
            }
            if !residual.is_null() {
                let (mut r0, mut r1) = unpack_f16x2(rv.0[k]);
                if !res_coef.is_null() {
                    let rc = res_coef.add(((n * c + ch0) * 2) as usize);
                    let r0n = math::relu(math::fma(r0, *rc.add(4 * k), *rc.add(4 * k + 1)));
                    let r1n = math::relu(math::fma(r1, *rc.add(4 * k + 2), *rc.add(4 * k + 3)));
                    (r0, r1) = unpack_f16x2(pack_f16x2(r0n, r1n));
                }
                v0 += r0;
                v1 += r1;
            }
            out.0[k] = pack_f16x2(v0, v1);
        }
        *y.add(i as usize) = out;
        i += stride;
    }
}

/// `nhwc_in_apply` written into a padded image: block b writes output row b of `y` (NHWC f16
/// `[N, H + 2p, W + 2p, C]`, p = 0 when `pad_mode` is 0, else 1; b = n·(H + 2p) + py). Padding 1 reflects
/// (`pad_mode` 1: source index -1 -> 1, H -> H - 2) or replicates (`pad_mode` 2: -1 -> 0, H -> H - 1, the
/// low-resolution view of a 2x nearest upsampling followed by a reflection pad). Thread t handles the
/// 16-byte channel group g = t % (C/8) of the output pixels px = t / (C/8), + T / (C/8), ... (T the block
/// size; threads past the last whole pixel group idle), two pixels per iteration (both loads issued before
/// the stores: one block per row leaves few threads per SM, so the loads in flight set the speed), each taken
/// from the source pixel (sy, sx) of the raw `x` `[N, H, W, C]`: v = a·x + b with (a, b) =
/// coef[(n*C + ch)*2 ..+2] or, when `sums` is not null, computed from the plane's f64 sums
/// sums[(n*C + ch)·NORM_SUMS_STRIDE ..+2] = (Σx, Σx²) over its H·W values and γ[ch], β[ch] (`in_coef_from_sums`, by thread
/// ch into 2·C floats of dynamic shared memory; C ≤ the block, coef then not read), ReLU when `relu` != 0, then + the residual's pixel (sy + 1, sx + 1) when
/// `residual` (padded `[N, H + 2, W + 2, C]`) is not null; stored as f16 (saturated), the arithmetic of
/// `nhwc_in_apply` exactly. `y` must not alias `x` or `residual` (border pixels read other pixels). Block
/// `NHWC_APPLY_PAD_THREADS`; the launcher keeps C/8 ≤ that and every element index below 2^31.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn nhwc_in_apply_pad(
    x: *const H8,
    coef: *const f32,
    residual: *const H8,
    y: *mut H8,
    h: u32,
    w: u32,
    c: u32,
    relu: u32,
    pad_mode: u32,
    sums: *const f64,
    gamma: *const f32,
    beta: *const f32,
    eps: f32,
) {
    let t = thread_idx_x();
    let row = block_idx_x();
    let pad = if pad_mode == 0 { 0 } else { 1 };
    let (ho, wo) = (h + 2 * pad, w + 2 * pad);
    let n = row / ho;
    // With sums: thread t < C computes channel t's (a, b) into shared memory (dynamic, 2·C floats). γ and β
    // are parameters, written by no kernel: loaded before the wait, so their round trip overlaps it.
    let ab_sh = shared::dynamic_smem::<f32>();
    let (ga, be) = if !sums.is_null() && t < c { (*gamma.add(t as usize), *beta.add(t as usize)) } else { (0.0, 0.0) };
    crate::device::grid_dependency_wait();
    if !sums.is_null() {
        if t < c {
            let sp = sums.add(((n * c + t) * NORM_SUMS_STRIDE) as usize);
            let (a, b) = in_coef_from_sums(*sp, *sp.add(1), h * w, ga, be, eps);
            *ab_sh.add(2 * t as usize) = a;
            *ab_sh.add(2 * t as usize + 1) = b;
        }
        sync_threads();
    }
    let cg = c / 8;
    let step = NHWC_APPLY_PAD_THREADS / cg;
    if t >= step * cg {
        return;
    }
    let g = t % cg;
    let src = |i: u32, e: u32| -> u32 {
        let v = i as i32 - pad as i32;
        if pad_mode == 2 {
            if v < 0 {
                0
            } else if v >= e as i32 {
                e - 1
            } else {
                v as u32
            }
        } else {
            super::conv2d_tc::reflect(v, e as i32) as u32
        }
    };
    let py = row - n * ho;
    let sy = src(py, h);
    let mut ab = [0f32; 8 * 2];
    let cf = if sums.is_null() { coef.add(((n * c + g * 8) * 2) as usize) } else { ab_sh.add((g * 8 * 2) as usize) as *const f32 };
    for (k, v) in ab.iter_mut().enumerate() {
        *v = *cf.add(k);
    }
    let x_row = x.add(((n * h + sy) * w * cg + g) as usize);
    let r_row = if residual.is_null() {
        residual
    } else {
        residual.add((((n * (h + 2) + sy + 1) * (w + 2) + 1) * cg + g) as usize)
    };
    let y_row = y.add((row * wo * cg + g) as usize);
    let apply = |xv: H8, rv: H8| -> H8 {
        let mut out = H8([0; 4]);
        for k in 0..4 {
            let (x0, x1) = unpack_f16x2(xv.0[k]);
            let mut v0 = math::fma(x0, ab[4 * k], ab[4 * k + 1]);
            let mut v1 = math::fma(x1, ab[4 * k + 2], ab[4 * k + 3]);
            if relu != 0 {
                v0 = math::relu(v0);
                v1 = math::relu(v1);
            }
            if !residual.is_null() {
                let (r0, r1) = unpack_f16x2(rv.0[k]);
                v0 += r0;
                v1 += r1;
            }
            out.0[k] = pack_f16x2(v0, v1);
        }
        out
    };
    let mut px = t / cg;
    while px < wo {
        let px2 = px + step;
        let (sx, sx2) = (src(px, w), src(if px2 < wo { px2 } else { px }, w));
        let (xv, xv2) = (*x_row.add((sx * cg) as usize), *x_row.add((sx2 * cg) as usize));
        let (rv, rv2) = if residual.is_null() {
            (H8([0; 4]), H8([0; 4]))
        } else {
            (*r_row.add((sx * cg) as usize), *r_row.add((sx2 * cg) as usize))
        };
        *y_row.add((px * cg) as usize) = apply(xv, rv);
        if px2 < wo {
            *y_row.add((px2 * cg) as usize) = apply(xv2, rv2);
        }
        px += 2 * step;
    }
}
