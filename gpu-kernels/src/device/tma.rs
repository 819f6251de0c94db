//! Hopper bulk tensor copies (TMA, `cp.async.bulk.tensor`, sm_90) completing on shared-memory
//! `mbarrier`s, and the named barriers a warp-specialised kernel synchronises its consumers with.
//!
//! # Tensor maps
//! A tensor map (`CUtensorMap`, 128 opaque bytes, 64-byte aligned) is made on the host with
//! `cuTensorMapEncodeTiled` and copied to global memory; kernels take its generic address (the PTX ISA
//! accepts a generic address of a `.global` tensor map as the `tensorMap` operand). It names the tensor's
//! base address, dimensions (innermost first, in elements), byte strides, the box copied per request
//! and the shared-memory swizzle. Requests give the box's first element per dimension as signed 32-bit
//! coordinates; elements outside the tensor are written as zeros, and the transaction still counts the
//! whole box's bytes.
//!
//! With the 128-byte swizzle and a box whose innermost extent is 128 bytes (64 f16), the copy lands as
//! rows of 128 bytes with 16-byte chunk `j` of row `r` at chunk `j ^ (r % 8)` (the pattern applied to
//! address bits 4-6 from bits 7-9): exactly the K-major layout `device::wgmma` describes, provided the
//! destination is 1024-byte aligned.
//!
//! # mbarrier protocol used here (a "full" and an "empty" barrier per pipeline stage)
//! * full[s]: count 1. The producer's [`arrive_expect_tx`] announces the stage's bytes, the copies
//!   complete them; the phase completes when both happened. Consumers [`wait_parity`] on it.
//! * empty[s]: count = the consumers that release a stage; each [`arrive`]s once it no longer reads the
//!   stage. The producer waits on it (parity flipped: a fresh barrier's "previous phase" counts as
//!   complete, so the first pass over the stages does not block).
//!
//! Every wrapper takes 32-bit shared-window addresses (as `device::shared::dynamic_smem_addr` gives);
//! an `mbarrier` object is 8 bytes, 8-byte aligned.
use core::arch::asm;

/// `mbarrier.init.shared::cta.b64 [bar], count`.
///
/// # Safety
/// `bar` must be an 8-byte aligned shared address of the launch, not in use by any other operation; one
/// thread initialises, then [`fence_mbarrier_init`] and a block barrier before anyone else uses it.
#[inline(always)]
pub unsafe fn mbarrier_init(bar: u32, count: u32) {
    asm!("mbarrier.init.shared::cta.b64 [{0}], {1};", in(reg32) bar, in(reg32) count, options(nostack));
}

/// `fence.mbarrier_init.release.cluster`: makes this thread's `mbarrier.init`s visible to the async proxy
/// (the copy engine's `complete_tx`) and to the other threads once a barrier follows.
///
/// # Safety
/// None beyond sm_90; `unsafe` because it orders memory operations.
#[inline(always)]
pub unsafe fn fence_mbarrier_init() {
    asm!("fence.mbarrier_init.release.cluster;", options(nostack));
}

/// `mbarrier.arrive.expect_tx.shared::cta.b64`: this thread arrives on `bar` and adds `bytes` to the
/// transaction count the current phase waits for.
///
/// # Safety
/// `bar` must be an initialised mbarrier of the launch.
#[inline(always)]
pub unsafe fn arrive_expect_tx(bar: u32, bytes: u32) {
    asm!(
        "{{",
        ".reg .b64 st;",
        "mbarrier.arrive.expect_tx.shared::cta.b64 st, [{0}], {1};",
        "}}",
        in(reg32) bar, in(reg32) bytes, options(nostack)
    );
}

/// `mbarrier.arrive.shared::cta.b64`: this thread arrives on `bar` (release semantics: its earlier
/// memory accesses are ordered before the phase completes).
///
/// # Safety
/// `bar` must be an initialised mbarrier of the launch whose current phase expects this arrival.
#[inline(always)]
pub unsafe fn arrive(bar: u32) {
    asm!(
        "{{",
        ".reg .b64 st;",
        "mbarrier.arrive.shared::cta.b64 st, [{0}];",
        "}}",
        in(reg32) bar, options(nostack)
    );
}

/// Spins on `mbarrier.try_wait.parity.shared::cta.b64` (which itself suspends for a while) until the
/// phase of `bar` with parity `parity` has completed (acquire semantics: what the arriving threads and
/// the completed copies wrote is visible afterwards).
///
/// # Safety
/// `bar` must be an initialised mbarrier of the launch.
#[inline(always)]
pub unsafe fn wait_parity(bar: u32, parity: u32) {
    loop {
        let done: u32;
        asm!(
            "{{",
            ".reg .pred p;",
            "mbarrier.try_wait.parity.shared::cta.b64 p, [{1}], {2};",
            "selp.u32 {0}, 1, 0, p;",
            "}}",
            out(reg32) done, in(reg32) bar, in(reg32) parity, options(nostack)
        );
        if done != 0 {
            return;
        }
    }
}

/// `cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes`: copies the box of
/// the tensor map at generic address `map` whose first element is at (`x0`, `x1`) (innermost first) to
/// shared address `dst`, completing `bar`'s transaction count by the box's bytes.
///
/// # Safety
/// `map` must point to a valid tensor map in global memory for the whole copy; `dst` must be a shared
/// address of the launch with room for the box (1024-byte aligned for the 128-byte swizzle); `bar` an
/// initialised mbarrier whose current phase expects these bytes ([`arrive_expect_tx`]).
#[inline(always)]
pub unsafe fn load_2d(dst: u32, map: *const u8, x0: i32, x1: i32, bar: u32) {
    asm!(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{0}], [{1}, {{{2}, {3}}}], [{4}];",
        in(reg32) dst, in(reg64) map, in(reg32) x0, in(reg32) x1, in(reg32) bar, options(nostack)
    );
}

/// As [`load_2d`] for a 4-D tensor map, box origin (`x0`, `x1`, `x2`, `x3`), innermost first.
///
/// # Safety
/// As [`load_2d`].
#[inline(always)]
pub unsafe fn load_4d(dst: u32, map: *const u8, x: [i32; 4], bar: u32) {
    asm!(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{0}], [{1}, {{{2}, {3}, {4}, {5}}}], [{6}];",
        in(reg32) dst, in(reg64) map, in(reg32) x[0], in(reg32) x[1], in(reg32) x[2], in(reg32) x[3], in(reg32) bar,
        options(nostack)
    );
}

/// `prefetch.tensormap`: brings the tensor map at generic address `map` into the descriptor cache.
///
/// # Safety
/// `map` must point to a tensor map in global memory.
#[inline(always)]
pub unsafe fn prefetch_map(map: *const u8) {
    asm!("prefetch.tensormap [{0}];", in(reg64) map, options(nostack));
}

/// `bar.sync id, threads`: a named barrier for `threads` threads (a multiple of 32) of the block, e.g.
/// the consumer warpgroups of a warp-specialised kernel while the producer warp runs on.
///
/// # Safety
/// Exactly `threads` threads (whole warps) must reach barrier `id` (1..16; 0 is `__syncthreads`'s).
#[inline(always)]
pub unsafe fn named_barrier(id: u32, threads: u32) {
    asm!("bar.sync {0}, {1};", in(reg32) id, in(reg32) threads, options(nostack));
}

/// `cp.async.bulk.tensor.2d.global.shared::cta.tile.bulk_group`: writes the box of the tensor map at generic
/// address `map` whose first element is at (`x0`, `x1`) (innermost first) from shared address `src` (laid
/// out as the map's swizzle says). Elements outside the tensor are not written. Completes in this thread's
/// bulk async-group ([`bulk_commit_group`], [`bulk_wait_group_read`], [`bulk_wait_group`]).
///
/// # Safety
/// `map` must point to a valid tensor map in global memory for the whole copy, over memory the launch may
/// write; `src` a shared address of the launch holding the box (1024-byte aligned for the 128-byte swizzle),
/// whose earlier generic-proxy writes were made visible to the async proxy (`fence.proxy.async.shared::cta`
/// by each writer, then a barrier) and which nobody writes until [`bulk_wait_group_read`] says it was read.
#[inline(always)]
pub unsafe fn store_2d(map: *const u8, x0: i32, x1: i32, src: u32) {
    asm!(
        "cp.async.bulk.tensor.2d.global.shared::cta.tile.bulk_group [{0}, {{{1}, {2}}}], [{3}];",
        in(reg64) map, in(reg32) x0, in(reg32) x1, in(reg32) src, options(nostack)
    );
}

/// As [`store_2d`], but each element of the box is added to the global element it lands on
/// (`cp.reduce.async.bulk.tensor.2d.global.shared::cta.add.tile.bulk_group`; the addition happens in L2,
/// in the map's element type, and is atomic per element).
///
/// # Safety
/// As [`store_2d`].
#[inline(always)]
pub unsafe fn reduce_add_2d(map: *const u8, x0: i32, x1: i32, src: u32) {
    asm!(
        "cp.reduce.async.bulk.tensor.2d.global.shared::cta.add.tile.bulk_group [{0}, {{{1}, {2}}}], [{3}];",
        in(reg64) map, in(reg32) x0, in(reg32) x1, in(reg32) src, options(nostack)
    );
}

/// `cp.async.bulk.commit_group`: closes this thread's bulk async-group of the bulk stores issued since the
/// last commit.
///
/// # Safety
/// None beyond `sm_90`.
#[inline(always)]
pub unsafe fn bulk_commit_group() {
    asm!("cp.async.bulk.commit_group;", options(nostack));
}

/// `cp.async.bulk.wait_group.read N`: waits until at most `N` of this thread's committed bulk groups still
/// read their shared-memory sources (the older ones' sources may be rewritten).
///
/// # Safety
/// None beyond `sm_90`.
#[inline(always)]
pub unsafe fn bulk_wait_group_read<const N: u32>() {
    asm!("cp.async.bulk.wait_group.read {n};", n = const N, options(nostack));
}

/// `cp.async.bulk.wait_group N`: waits until at most `N` of this thread's committed bulk groups are
/// incomplete (the older ones' global writes are performed).
///
/// # Safety
/// None beyond `sm_90`.
#[inline(always)]
pub unsafe fn bulk_wait_group<const N: u32>() {
    asm!("cp.async.bulk.wait_group {n};", n = const N, options(nostack));
}
