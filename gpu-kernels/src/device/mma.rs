//! Tensor-core and asynchronous-copy wrappers (sm_80+): `ldmatrix`, `mma.sync` m16n8k16 bf16 and f16
//! with f32 accumulators, `cp.async` with commit/wait groups, and bf16/f16 packing/conversion.
//!
//! Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with
//! `g = lane / 4`, `t = lane % 4`, two bf16 per 32-bit register, the lower index in the low half:
//! A (16x16): `a[0]` row g cols 2t..2t+1, `a[1]` row g+8 cols 2t.., `a[2]` row g cols 2t+8..,
//! `a[3]` row g+8 cols 2t+8..; B (16x8): `b[0]` k 2t..2t+1 col g, `b[1]` k 2t+8.. col g;
//! C/D (16x8 f32): `d[0], d[1]` row g cols 2t, 2t+1; `d[2], d[3]` row g+8 cols 2t, 2t+1.
use core::arch::asm;

/// `ldmatrix.sync.aligned.m8n8.x4.shared.b16`: lanes 8i..8i+7 give the 16-byte row addresses of
/// matrix i; the result's register i holds this lane's part of matrix i (row lane/4, elements
/// 2(lane%4), 2(lane%4)+1).
///
/// # Safety
/// Every lane of the warp must execute it (converged) with a 16-byte aligned shared-window address
/// whose 16 bytes lie inside the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn ldmatrix_x4(addr: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    asm!(
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{{0}, {1}, {2}, {3}}}, [{4}];",
        out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr,
        options(nostack)
    );
    [a, b, c, d]
}

/// `ldmatrix ... .x2`: lanes 0..16 give the row addresses of two 8x8 matrices (lanes 16..32 are
/// ignored but must still hold valid addresses to be safe).
///
/// # Safety
/// As [`ldmatrix_x4`].
#[inline(always)]
pub unsafe fn ldmatrix_x2(addr: u32) -> [u32; 2] {
    let (a, b): (u32, u32);
    asm!(
        "ldmatrix.sync.aligned.m8n8.x2.shared.b16 {{{0}, {1}}}, [{2}];",
        out(reg32) a, out(reg32) b, in(reg32) addr,
        options(nostack)
    );
    [a, b]
}

/// `d += a * b` with `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` (fragments as in the
/// module comment).
///
/// # Safety
/// Every lane of the warp must execute it (converged); needs sm_80 or later.
#[inline(always)]
pub unsafe fn mma_bf16_16816(d: &mut [f32; 4], a: [u32; 4], b: [u32; 2]) {
    asm!(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{{0}, {1}, {2}, {3}}}, {{{4}, {5}, {6}, {7}}}, {{{8}, {9}}}, {{{0}, {1}, {2}, {3}}};",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3],
        in(reg32) a[0], in(reg32) a[1], in(reg32) a[2], in(reg32) a[3],
        in(reg32) b[0], in(reg32) b[1],
        options(nomem, nostack)
    );
}

/// `d += a * b` with `mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32` (fragments as in the module
/// comment, two f16 per register).
///
/// # Safety
/// As [`mma_bf16_16816`].
#[inline(always)]
pub unsafe fn mma_f16_16816(d: &mut [f32; 4], a: [u32; 4], b: [u32; 2]) {
    asm!(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {{{0}, {1}, {2}, {3}}}, {{{4}, {5}, {6}, {7}}}, {{{8}, {9}}}, {{{0}, {1}, {2}, {3}}};",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3],
        in(reg32) a[0], in(reg32) a[1], in(reg32) a[2], in(reg32) a[3],
        in(reg32) b[0], in(reg32) b[1],
        options(nomem, nostack)
    );
}

/// `cp.async.ca.shared.global [dst], [src], 8, src_size`: copies `src_size` bytes (0 or 8) and
/// zero-fills the rest of the 8 bytes at `dst`.
///
/// # Safety
/// As [`cp_async_16`] with 8-byte alignment.
#[inline(always)]
pub unsafe fn cp_async_8(dst: u32, src: *const u8, src_size: u32) {
    asm!(
        "cp.async.ca.shared.global [{0}], [{1}], 8, {2};",
        in(reg32) dst, in(reg64) src, in(reg32) src_size,
        options(nostack)
    );
}

/// `cp.async.ca.shared.global [dst], [src], 16, src_size`: as [`cp_async_16`] but cached in L1 too (for
/// gathers that re-read their neighbours' data, such as convolution taps).
///
/// # Safety
/// As [`cp_async_16`].
#[inline(always)]
pub unsafe fn cp_async_16_ca(dst: u32, src: *const u8, src_size: u32) {
    asm!(
        "cp.async.ca.shared.global [{0}], [{1}], 16, {2};",
        in(reg32) dst, in(reg64) src, in(reg32) src_size,
        options(nostack)
    );
}

/// `cp.async.cg.shared.global [dst], [src], 16, src_size`: copies `src_size` bytes (0 or 16) from
/// global memory and zero-fills the rest of the 16 bytes at `dst`.
///
/// # Safety
/// `dst` must be a 16-byte aligned shared-window address inside dynamic shared memory; `src` a
/// 16-byte aligned global address whose first `src_size` bytes are readable. The data may only be
/// read after [`cp_async_wait_group`] and a barrier.
#[inline(always)]
pub unsafe fn cp_async_16(dst: u32, src: *const u8, src_size: u32) {
    asm!(
        "cp.async.cg.shared.global [{0}], [{1}], 16, {2};",
        in(reg32) dst, in(reg64) src, in(reg32) src_size,
        options(nostack)
    );
}

/// `cp.async.commit_group`: closes the group of this thread's outstanding `cp.async`s.
///
/// # Safety
/// None beyond sm_80; `unsafe` only because it orders memory operations.
#[inline(always)]
pub unsafe fn cp_async_commit() {
    asm!("cp.async.commit_group;", options(nostack));
}

/// `cp.async.wait_group N`: waits until at most `N` of this thread's committed groups are pending.
///
/// # Safety
/// As [`cp_async_commit`]. Other threads' copies need a barrier after this to become visible.
#[inline(always)]
pub unsafe fn cp_async_wait_group<const N: u32>() {
    asm!("cp.async.wait_group {n};", n = const N, options(nostack));
}

/// Packs two f32 into bf16x2 (round to nearest even): `lo` in the low half, `hi` in the high half.
#[inline(always)]
pub fn pack_bf16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // SAFETY: pure arithmetic instruction (sm_80+).
    unsafe {
        asm!("cvt.rn.bf16x2.f32 {0}, {1}, {2};", out(reg32) r, in(reg32) hi, in(reg32) lo, options(pure, nomem, nostack))
    };
    r
}

/// bf16 bits -> f32 (exact).
#[inline(always)]
pub fn bf16_to_f32(v: u16) -> f32 {
    f32::from_bits((v as u32) << 16)
}

/// Packs two f32 into f16x2 (round to nearest even), saturating to ±65504 (NaN stays NaN): `lo` in the
/// low half, `hi` in the high half. One `cvt.rn.satfinite.f16x2.f32` (PTX ISA 8.1), as cheap as the plain
/// `cvt.rn`: until session 19 the saturation was two clamps per value before it, and values known to be in
/// range (softmax probabilities) had an unsaturated twin.
#[inline(always)]
pub fn pack_f16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // SAFETY: pure arithmetic instruction (sm_80+, PTX ISA 8.1).
    unsafe {
        asm!("cvt.rn.satfinite.f16x2.f32 {0}, {1}, {2};", out(reg32) r, in(reg32) hi, in(reg32) lo, options(pure, nomem, nostack))
    };
    r
}

/// Unpacks f16x2 into two f32 (exact): (low half, high half).
#[inline(always)]
pub fn unpack_f16x2(v: u32) -> (f32, f32) {
    let (lo, hi): (f32, f32);
    // SAFETY: pure conversion instructions.
    unsafe {
        asm!(
            "{{ .reg .b16 l, h; mov.b32 {{l, h}}, {2}; cvt.f32.f16 {0}, l; cvt.f32.f16 {1}, h; }}",
            out(reg32) lo, out(reg32) hi, in(reg32) v,
            options(pure, nomem, nostack)
        )
    };
    (lo, hi)
}

/// `ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16`: as [`ldmatrix_x4`], but each matrix is transposed
/// on the way: register i holds elements (row 2(lane%4), col lane/4) and (row 2(lane%4)+1, col lane/4)
/// of matrix i (the B fragment of an mma when the rows are the GEMM-K index and n is contiguous).
///
/// # Safety
/// As [`ldmatrix_x4`].
#[inline(always)]
pub unsafe fn ldmatrix_x4_trans(addr: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    asm!(
        "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{{0}, {1}, {2}, {3}}}, [{4}];",
        out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr,
        options(nostack)
    );
    [a, b, c, d]
}
