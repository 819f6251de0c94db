//! Warp shuffles and reductions (`shfl.sync`), full-warp mask.
use core::arch::asm;

pub const FULL_MASK: u32 = 0xffff_ffff;

/// `shfl.sync.bfly.b32`: the value of lane `lane ^ xor_mask`. All 32 lanes must call it.
#[inline(always)]
pub fn shfl_xor_f32(v: f32, xor_mask: u32) -> f32 {
    let r: f32;
    // SAFETY: every lane of the warp executes the shuffle with the full mask (callers are warp-uniform).
    unsafe {
        asm!("shfl.sync.bfly.b32 {0}, {1}, {2}, 0x1f, {3};",
             out(reg32) r, in(reg32) v, in(reg32) xor_mask, const FULL_MASK, options(nomem, nostack))
    };
    r
}
/// `shfl.sync.idx.b32`: the value of lane `src`.
#[inline(always)]
pub fn shfl_idx_f32(v: f32, src: u32) -> f32 {
    let r: f32;
    // SAFETY: as `shfl_xor_f32`.
    unsafe {
        asm!("shfl.sync.idx.b32 {0}, {1}, {2}, 0x1f, {3};",
             out(reg32) r, in(reg32) v, in(reg32) src, const FULL_MASK, options(nomem, nostack))
    };
    r
}
/// Sum over the 32 lanes; every lane gets the result.
#[inline(always)]
pub fn warp_sum(mut v: f32) -> f32 {
    let mut m = 16;
    while m > 0 {
        v += shfl_xor_f32(v, m);
        m >>= 1;
    }
    v
}
/// Max over the 32 lanes; every lane gets the result.
#[inline(always)]
pub fn warp_max(mut v: f32) -> f32 {
    let mut m = 16;
    while m > 0 {
        v = super::math::max(v, shfl_xor_f32(v, m));
        m >>= 1;
    }
    v
}
/// Sum over groups of `width` consecutive lanes (width a power of two ≤ 32).
#[inline(always)]
pub fn group_sum(mut v: f32, width: u32) -> f32 {
    let mut m = width >> 1;
    while m > 0 {
        v += shfl_xor_f32(v, m);
        m >>= 1;
    }
    v
}

/// `vote.sync.any.pred` over the whole warp: whether `p` holds in any lane.
#[inline(always)]
pub fn any(p: bool) -> bool {
    let r: u32;
    // SAFETY: a warp vote; every caller's warp is converged here (full mask). No memory access.
    unsafe {
        asm!(
            "{{", ".reg .pred pi, po;", "setp.ne.u32 pi, {1}, 0;", "vote.sync.any.pred po, pi, {2};", "selp.u32 {0}, 1, 0, po;", "}}",
            out(reg32) r, in(reg32) p as u32, in(reg32) FULL_MASK, options(nostack, nomem)
        )
    };
    r != 0
}
