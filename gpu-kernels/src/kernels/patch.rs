//! `patch` kernels (see host/src/ops/patch.rs for the launcher, models::ops::patch for the CPU reference).
//!
//! * `patch_im2col`: the patch-embedding convolution (kernel = stride = p, no padding) as a gather
//!   [B·hp·wp, 3·p·p] (columns ordered c, ky, kx, i.e. the [D, 3, p, p] weight flattened), followed on the
//!   host by `linear` (whose residual epilogue adds the positional table, broadcast over the batch).
//! * `patch_unpatch_tail`: tokens [B, hp·wp, p·p·3] -> image [B, 3, hp·p, wp·p] (the reference's
//!   `reshape(B, hp, wp, p, p, 3).permute(0, 5, 1, 3, 2, 4)`) fused with StyleViT's `final_conv`
//!   (3x3 conv, ReLU, 1x1 conv), the unpatched image never stored.
//!
//! All are grid-stride loops over the output (coalesced writes).
use crate::device::{global_index_x, math};

/// The im2col gather shared by the f32 and f16 kernels: `store(e, v)` for every column element e.
#[inline(always)]
unsafe fn im2col_body(
    img: *const f32,
    batch: u32,
    hp: u32,
    wp: u32,
    p: u32,
    store: impl Fn(usize, f32),
) {
    let (batch, hp, wp, p) = (batch as usize, hp as usize, wp as usize, p as usize);
    let (h, w) = (hp * p, wp * p);
    let kdim = 3 * p * p;
    let total = batch * hp * wp * kdim;
    let (mut e, stride) = global_index_x();
    while e < total {
        let col = e % kdim;
        let tok = e / kdim;
        let (c, rem) = (col / (p * p), col % (p * p));
        let (ky, kx) = (rem / p, rem % p);
        let (px, rest) = (tok % wp, tok / wp);
        let (py, b) = (rest % hp, rest / hp);
        store(
            e,
            *img.add(((b * 3 + c) * h + py * p + ky) * w + px * p + kx),
        );
        e += stride;
    }
}

/// cols[(b·hp·wp + py·wp + px)·3p² + (c·p + ky)·p + kx] = img[b, c, py·p + ky, px·p + kx].
/// img [B, 3, H, W] with H = hp·p, W = wp·p.
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
    im2col_body(img, batch, hp, wp, p, |e, v| *cols.add(e) = v);
}

/// As `patch_im2col`, the columns rounded to f16 (the `linear_tc` operand of the fast StyleViT).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn patch_im2col_f16(
    img: *const f32,
    cols: *mut u16,
    batch: u32,
    hp: u32,
    wp: u32,
    p: u32,
) {
    crate::device::grid_dependency_wait();
    im2col_body(img, batch, hp, wp, p, |e, v| {
        *cols.add(e) = crate::device::mma::pack_f16x2(v, 0.0) as u16
    });
}

/// StyleViT's whole tail in one pass: unpatch, 3x3 conv (3 -> 3 channels, zero padding 1, bias), ReLU,
/// 1x1 conv (3 -> 3, bias). The unpatched image is never stored: output pixel (b, y, x) reads its 3x3
/// neighbourhood straight from the tokens, img[b, c, py·p + ky, px·p + kx] = tok[b, py·wp + px,
/// (ky·p + kx)·3 + c] (the reference's reshape(B, hp, wp, p, p, 3).permute(0, 5, 1, 3, 2, 4)).
/// tok [B, hp·wp, 3p²]; w0 [3, 3, 3, 3] (k, c, ky, kx), b0 [3], w2 [3, 3], b2 [3]; y [B, 3, hp·p, wp·p].
/// One thread per output pixel (all three channels), grid-stride.
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
    crate::device::grid_dependency_wait();
    let (batch, hp, wp, p) = (batch as usize, hp as usize, wp as usize, p as usize);
    let (h, w) = (hp * p, wp * p);
    let plane = h * w;
    let total = batch * plane;
    let (mut e, stride) = global_index_x();
    while e < total {
        let x = e % w;
        let (yy, b) = ((e / w) % h, e / plane);
        let tb = tok.add(b * hp * wp * 3 * p * p);
        let mut acc = [*b0, *b0.add(1), *b0.add(2)];
        for dy in 0..3usize {
            let iy = yy as isize + dy as isize - 1;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let iy = iy as usize;
            for dx in 0..3usize {
                let ix = x as isize + dx as isize - 1;
                if ix < 0 || ix >= w as isize {
                    continue;
                }
                let ix = ix as usize;
                let t = tb.add(((iy / p) * wp + ix / p) * 3 * p * p + ((iy % p) * p + ix % p) * 3);
                let v = [*t, *t.add(1), *t.add(2)];
                for (k, a) in acc.iter_mut().enumerate() {
                    for (c, &vc) in v.iter().enumerate() {
                        *a = math::fma(*w0.add(((k * 3 + c) * 3 + dy) * 3 + dx), vc, *a);
                    }
                }
            }
        }
        let r = [math::relu(acc[0]), math::relu(acc[1]), math::relu(acc[2])];
        for k in 0..3usize {
            let mut o = *b2.add(k);
            for (c, &rc) in r.iter().enumerate() {
                o = math::fma(*w2.add(k * 3 + c), rc, o);
            }
            *y.add((b * 3 + k) * plane + yy * w + x) = o;
        }
        e += stride;
    }
}
