//! `patch` kernels (see host/src/ops/patch.rs for the launcher, models::ops::patch for the CPU reference).
//!
//! * `patch_im2col`: the patch-embedding convolution (kernel = stride = p, no padding) as a gather
//!   [B·hp·wp, 3·p·p] (columns ordered c, ky, kx, i.e. the [D, 3, p, p] weight flattened), followed on the
//!   host by `linear` (whose residual epilogue adds the positional table, broadcast over the batch).
//! * `patch_unpatch`: tokens [B, hp·wp, p·p·3] -> image [B, 3, hp·p, wp·p], the reference's
//!   `reshape(B, hp, wp, p, p, 3).permute(0, 5, 1, 3, 2, 4)`.
//! * `patch_relu_conv1x1`: StyleViT's tail after the 3x3 conv: `y = W · relu(x) + b` per pixel (1x1 conv).
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

/// img[b, c, py·p + ky, px·p + kx] = tok[b, py·wp + px, (ky·p + kx)·3 + c]; tok [B, hp·wp, 3p²].
#[no_mangle]
pub unsafe extern "ptx-kernel" fn patch_unpatch(
    tok: *const f32,
    img: *mut f32,
    batch: u32,
    hp: u32,
    wp: u32,
    p: u32,
) {
    crate::device::grid_dependency_wait();
    let (batch, hp, wp, p) = (batch as usize, hp as usize, wp as usize, p as usize);
    let (h, w) = (hp * p, wp * p);
    let total = batch * 3 * h * w;
    let (mut e, stride) = global_index_x();
    while e < total {
        let x = e % w;
        let rest = e / w;
        let (y, rest) = (rest % h, rest / h);
        let (c, b) = (rest % 3, rest / 3);
        let (py, ky, px, kx) = (y / p, y % p, x / p, x % p);
        *img.add(e) = *tok.add((b * hp * wp + py * wp + px) * 3 * p * p + (ky * p + kx) * 3 + c);
        e += stride;
    }
}

/// y[n, k, i] = b[k] + Σ_c w[k, c] · relu(x[n, c, i]); x [N, C, HW], w [K, C], b [K], y [N, K, HW].
#[no_mangle]
pub unsafe extern "ptx-kernel" fn patch_relu_conv1x1(
    x: *const f32,
    w: *const f32,
    b: *const f32,
    y: *mut f32,
    n: u32,
    c_in: u32,
    k_out: u32,
    hw: usize,
) {
    crate::device::grid_dependency_wait();
    let (n, c_in, k_out) = (n as usize, c_in as usize, k_out as usize);
    let total = n * k_out * hw;
    let (mut e, stride) = global_index_x();
    while e < total {
        let i = e % hw;
        let rest = e / hw;
        let (k, img) = (rest % k_out, rest / k_out);
        let xb = x.add(img * c_in * hw + i);
        let mut acc = *b.add(k);
        for c in 0..c_in {
            acc = math::fma(*w.add(k * c_in + c), math::relu(*xb.add(c * hw)), acc);
        }
        *y.add(e) = acc;
        e += stride;
    }
}
