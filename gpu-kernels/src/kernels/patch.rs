//! `patch` kernels (see host/src/ops/patch.rs for the launcher, models::ops::patch for the CPU reference).
//!
//! * `patch_im2col`: the patch-embedding convolution (kernel = stride = p, no padding) as a gather
//!   [B·hp·wp, 3·p·p] (columns ordered c, ky, kx, i.e. the [D, 3, p, p] weight flattened), followed on the
//!   host by `linear` (whose residual epilogue adds the positional table, broadcast over the batch).
//! * `patch_unpatch_tail`: tokens [B, hp·wp, p·p·3] -> image [B, 3, hp·p, wp·p] (the reference's
//!   `reshape(B, hp, wp, p, p, 3).permute(0, 5, 1, 3, 2, 4)`) fused with StyleViT's `final_conv`
//!   (3x3 conv, ReLU, 1x1 conv), the unpatched image never stored.
//!
//! `patch_im2col*` are grid-stride loops over patch rows (coalesced writes); `patch_unpatch_tail` takes
//! one output column of `PATCH_TAIL_ROWS` rows per thread.
use crate::device::mma::pack_f16x2;
use crate::device::unroll::unroll;
use crate::device::{block_dim_x, block_idx_x, block_idx_y, global_index_x, math, thread_idx_x, F32x4};
use crate::launch::PATCH_TAIL_ROWS as TAIL_ROWS;

/// The im2col gather shared by the f32 and f16 kernels, one thread per (token, channel, ky): `row(src,
/// dst)` copies that patch row, the p image elements at `src` (contiguous) to columns `dst ..+ p`
/// (contiguous): the index arithmetic is per row of p elements, in 32 bits (the host checks that every
/// index fits).
#[inline(always)]
unsafe fn im2col_body(img: *const f32, batch: u32, hp: u32, wp: u32, p: u32, row: impl Fn(*const f32, usize)) {
    let (h, w) = (hp * p, wp * p);
    let items = (batch * hp * wp * 3 * p) as usize;
    let (mut i, stride) = global_index_x();
    while i < items {
        let iu = i as u32;
        let (ky, rest) = (iu % p, iu / p);
        let (c, tok) = (rest % 3, rest / 3);
        let (px, rest) = (tok % wp, tok / wp);
        let (py, b) = (rest % hp, rest / hp);
        let src = img.add((((b * 3 + c) * h + py * p + ky) * w + px * p) as usize);
        row(src, (tok * 3 * p * p + (c * p + ky) * p) as usize);
        i += stride;
    }
}

/// cols[(b·hp·wp + py·wp + px)·3p² + (c·p + ky)·p + kx] = img[b, c, py·p + ky, px·p + kx].
/// img [B, 3, H, W] with H = hp·p, W = wp·p. Grid-stride over the B·hp·wp·3·p patch rows.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn patch_im2col(
    img: *const f32,
    cols: *mut f32,
    batch: u32,
    hp: u32,
    wp: u32,
    p: u32,
) {
    crate::device::grid_dependency_wait();
    im2col_body(img, batch, hp, wp, p, |src, dst| {
        for kx in 0..p as usize {
            *cols.add(dst + kx) = *src.add(kx);
        }
    });
}

/// As `patch_im2col`, the columns rounded to f16 (the `linear_tc` operand of the fast StyleViT). For p a
/// multiple of 8 (the image rows and the column rows then start 16-byte aligned), 8 elements per pair of
/// 16-byte loads and one 16-byte store.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn patch_im2col_f16(
    img: *const f32,
    cols: *mut u16,
    batch: u32,
    hp: u32,
    wp: u32,
    p: u32,
) {
    crate::device::grid_dependency_wait_then_trigger();
    if p.is_multiple_of(8) {
        // Up to four 8-element groups loaded before their stores (one pass for p ≤ 32): a load after a
        // store waits for it to issue, so group by group the row was a chain of round trips.
        im2col_body(img, batch, hp, wp, p, |src, dst| {
            let groups = (p / 8) as usize;
            let mut g0 = 0;
            while g0 < groups {
                let mut v = [[0u32; 4]; 4];
                unroll!(4, |u| {
                    let g = g0 + u;
                    if g < groups {
                        let (a, b) = (*(src.add(8 * g) as *const F32x4), *(src.add(8 * g + 4) as *const F32x4));
                        v[u] = [pack_f16x2(a.0[0], a.0[1]), pack_f16x2(a.0[2], a.0[3]), pack_f16x2(b.0[0], b.0[1]), pack_f16x2(b.0[2], b.0[3])];
                    }
                });
                unroll!(4, |u| {
                    if g0 + u < groups {
                        *(cols.add(dst + 8 * (g0 + u)) as *mut [u32; 4]) = v[u];
                    }
                });
                g0 += 4;
            }
        });
    } else {
        im2col_body(img, batch, hp, wp, p, |src, dst| {
            for kx in 0..p as usize {
                *cols.add(dst + kx) = pack_f16x2(*src.add(kx), 0.0) as u16;
            }
        });
    }
}

/// StyleViT's whole tail in one pass: unpatch, 3x3 conv (3 -> 3 channels, zero padding 1, bias), ReLU,
/// 1x1 conv (3 -> 3, bias). The unpatched image is never stored: output pixel (b, y, x) reads its 3x3
/// neighbourhood straight from the tokens, img[b, c, py·p + ky, px·p + kx] = tok[b, py·wp + px,
/// (ky·p + kx)·3 + c] (the reference's reshape(B, hp, wp, p, p, 3).permute(0, 5, 1, 3, 2, 4)).
/// tok [B, hp·wp, 3p²]; w0 [3, 3, 3, 3] (k, c, ky, kx), b0 [3], w2 [3, 3], b2 [3]; y [B, 3, hp·p, wp·p].
/// Grid (B · ceil(H / TAIL_ROWS), ceil(W / blockDim.x)), one thread per column x of TAIL_ROWS output rows
/// (all three channels): the weights are loaded into registers once per thread, and each pixel's nine
/// token addresses come from three row and three column offsets (the patch index and the offset in the
/// patch divided out once per row and column, not per tap). The sums run in the order of the CPU
/// reference's loops (bias, then dy, dx, output channel, input channel).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn patch_unpatch_tail(
    tok: *const f32,
    w0: *const f32,
    b0: *const f32,
    w2: *const f32,
    b2: *const f32,
    y: *mut f32,
    batch: u32,
    hp: u32,
    wp: u32,
    p: u32,
) {
    crate::device::grid_dependency_wait_then_trigger();
    let (h, w) = (hp * p, wp * p);
    let x = block_idx_y() * block_dim_x() + thread_idx_x();
    let bands = h.div_ceil(TAIL_ROWS);
    let (b, y0) = (block_idx_x() / bands, (block_idx_x() % bands) * TAIL_ROWS);
    if x >= w || b >= batch {
        return;
    }
    let mut k0 = [0f32; 81];
    for (i, k) in k0.iter_mut().enumerate() {
        *k = *w0.add(i);
    }
    let bias0 = [*b0, *b0.add(1), *b0.add(2)];
    let mut k2 = [0f32; 9];
    for (i, k) in k2.iter_mut().enumerate() {
        *k = *w2.add(i);
    }
    let bias2 = [*b2, *b2.add(1), *b2.add(2)];
    let kp = (3 * p * p) as usize; // floats per token
    // Column dx (ix = x + dx − 1): offset of its token column and element, and whether it is inside.
    let (px, kx) = (x / p, x % p);
    let mut coff = [0usize; 3];
    let mut cok = [false; 3];
    for dx in 0..3usize {
        let ix = (x + dx as u32).wrapping_sub(1);
        cok[dx] = ix < w;
        let (tpx, tkx) = step(px, kx, dx as u32, p);
        coff[dx] = tpx as usize * kp + tkx as usize * 3;
    }
    let tb = tok.add(b as usize * (hp * wp) as usize * kp);
    let plane = (h * w) as usize;
    let mut r = 0;
    while r < TAIL_ROWS && y0 + r < h {
        let yy = y0 + r;
        let (py, ky) = (yy / p, yy % p);
        let mut acc = bias0;
        for dy in 0..3usize {
            let iy = (yy + dy as u32).wrapping_sub(1);
            if iy < h {
                let (tpy, tky) = step(py, ky, dy as u32, p);
                let row = tb.add(tpy as usize * wp as usize * kp + (tky * p) as usize * 3);
                for dx in 0..3usize {
                    if cok[dx] {
                        let t = row.add(coff[dx]);
                        let v = [*t, *t.add(1), *t.add(2)];
                        for k in 0..3usize {
                            for c in 0..3usize {
                                acc[k] = math::fma(k0[((k * 3 + c) * 3 + dy) * 3 + dx], v[c], acc[k]);
                            }
                        }
                    }
                }
            }
        }
        let rl = [math::relu(acc[0]), math::relu(acc[1]), math::relu(acc[2])];
        for k in 0..3usize {
            let mut o = bias2[k];
            for c in 0..3usize {
                o = math::fma(k2[k * 3 + c], rl[c], o);
            }
            *y.add((b as usize * 3 + k) * plane + (yy * w + x) as usize) = o;
        }
        r += 1;
    }
}

/// Patch index and offset in the patch of coordinate (patch `q`, offset `k`) moved by `d − 1` (d in
/// 0..3), without a division: one patch back, the same, or one forward. Out-of-image results are
/// computed with wrapping arithmetic and never used.
#[inline(always)]
fn step(q: u32, k: u32, d: u32, p: u32) -> (u32, u32) {
    if k + d == 0 {
        (q.wrapping_sub(1), p - 1)
    } else if k + d > p {
        (q + 1, 0)
    } else {
        (q, k + d - 1)
    }
}
