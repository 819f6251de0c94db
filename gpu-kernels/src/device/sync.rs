//! GPU-scope memory ordering between the blocks of one launch: fences, atomics and strong loads and
//! stores for counters and the data they publish (the split-K reduction of `linear_tc`, the fused
//! InstanceNorm coefficients of `conv2d_tma`).
//!
//! The pattern: every writing thread stores its data, then `fence_acq_rel_gpu`, then a block barrier,
//! then one thread increments a counter with `atom_add_acq_rel_gpu` (a release of everything the block
//! wrote and an acquire of every earlier arrival's release: the RMWs chain them). A block that must read
//! the others' data acquires them (the RMW, or `ld_acquire_gpu_u32` on the counter), passes that on to its
//! threads through a barrier, and reads with the `ld_relaxed_gpu_*` loads (strong GPU-scope loads, served
//! by L2, never by a stale L1 line).
use core::arch::asm;

/// `ld.relaxed.gpu.global.v4.f32`: four floats another block wrote.
///
/// # Safety
/// `p` must be 16-byte aligned and valid for 16 bytes of reads.
#[inline(always)]
pub unsafe fn ld_relaxed_gpu_v4(p: *const f32) -> [f32; 4] {
    let (a, b, c, d): (f32, f32, f32, f32);
    asm!(
        "ld.relaxed.gpu.global.v4.f32 {{{0}, {1}, {2}, {3}}}, [{4}];",
        out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg64) p,
        options(nostack, readonly)
    );
    [a, b, c, d]
}

/// `ld.relaxed.gpu.global.v2.f32`: two floats another block wrote.
///
/// # Safety
/// `p` must be 8-byte aligned and valid for 8 bytes of reads.
#[inline(always)]
pub unsafe fn ld_relaxed_gpu_v2(p: *const f32) -> [f32; 2] {
    let (a, b): (f32, f32);
    asm!(
        "ld.relaxed.gpu.global.v2.f32 {{{0}, {1}}}, [{2}];",
        out(reg32) a, out(reg32) b, in(reg64) p,
        options(nostack, readonly)
    );
    [a, b]
}

/// `ld.acquire.gpu.global.u32`: reads a counter and acquires the releases it reads from.
///
/// # Safety
/// `p` must be a 4-byte aligned global address valid for reads.
#[inline(always)]
pub unsafe fn ld_acquire_gpu_u32(p: *const u32) -> u32 {
    let v: u32;
    asm!("ld.acquire.gpu.global.u32 {0}, [{1}];", out(reg32) v, in(reg64) p, options(nostack, readonly));
    v
}

/// `fence.acq_rel.gpu` (`__threadfence()`): this thread's earlier memory operations are ordered before
/// its later ones for every thread of the GPU (its data stores before the barrier that precedes the
/// block's counter increment).
#[inline(always)]
pub fn fence_acq_rel_gpu() {
    // SAFETY: a fence has no operands and touches no memory of its own.
    unsafe { asm!("fence.acq_rel.gpu;", options(nostack)) };
}

/// `atom.acq_rel.gpu.global.add.u32`: adds `v` to `*p` and returns the old value; releases this
/// thread's (and, through the preceding barrier, its block's) earlier writes and acquires those of the
/// arrivals it reads after.
///
/// # Safety
/// `p` must be a 4-byte aligned global address valid for reads and writes.
#[inline(always)]
pub unsafe fn atom_add_acq_rel_gpu(p: *mut u32, v: u32) -> u32 {
    let old: u32;
    asm!(
        "atom.acq_rel.gpu.global.add.u32 {0}, [{1}], {2};",
        out(reg32) old, in(reg64) p, in(reg32) v,
        options(nostack)
    );
    old
}

/// `st.relaxed.gpu.global.u32`: resets a counter (no other block of the launch touches it afterwards;
/// the next launch on the stream sees the store).
///
/// # Safety
/// `p` must be a 4-byte aligned global address valid for writes.
#[inline(always)]
pub unsafe fn st_relaxed_gpu_u32(p: *mut u32, v: u32) {
    asm!("st.relaxed.gpu.global.u32 [{0}], {1};", in(reg64) p, in(reg32) v, options(nostack));
}

/// `nanosleep.u32`: backs a spinning thread off for about `ns` nanoseconds.
#[inline(always)]
pub fn nanosleep(ns: u32) {
    // SAFETY: only delays the calling thread.
    unsafe { asm!("nanosleep.u32 {0};", in(reg32) ns, options(nostack)) };
}
