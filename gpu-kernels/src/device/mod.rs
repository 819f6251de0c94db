//! Device support: the part of Rust-CUDA's `cuda_std` that StyleForge needs, written on top of
//! `core::arch::nvptx` and small typed wrappers around inline PTX.
//!
//! Every `unsafe fn` here is a thin wrapper over one PTX instruction; the caller's obligations are the
//! instruction's (valid addresses, all threads of the block/warp reaching a barrier or shuffle).
use core::arch::asm;
use core::arch::nvptx;

/// Four f32 that the compiler loads and stores as one 16-byte vector (the alignment says it may).
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct F32x4(pub [f32; 4]);

pub mod math;
pub mod mma;
pub mod shared;
pub mod smem_vec;
pub mod unroll;
pub mod warp;
pub mod pingpong;
pub mod tma;
pub mod wgmma;

/// Stops the kernel with an error the host sees at the next synchronisation.
#[inline(always)]
pub fn trap() -> ! {
    // SAFETY: `trap` has no operands; it ends the kernel.
    unsafe { nvptx::trap() }
}

#[inline(always)]
pub fn thread_idx_x() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_thread_idx_x() as u32 }
}
#[inline(always)]
pub fn thread_idx_y() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_thread_idx_y() as u32 }
}
#[inline(always)]
pub fn block_idx_x() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_idx_x() as u32 }
}
#[inline(always)]
pub fn block_idx_y() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_idx_y() as u32 }
}
#[inline(always)]
pub fn block_idx_z() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_idx_z() as u32 }
}
#[inline(always)]
pub fn block_dim_x() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_dim_x() as u32 }
}
#[inline(always)]
pub fn block_dim_y() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_dim_y() as u32 }
}
#[inline(always)]
pub fn grid_dim_x() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_grid_dim_x() as u32 }
}
#[inline(always)]
pub fn grid_dim_y() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_grid_dim_y() as u32 }
}
/// Lane index within the warp (0..32).
#[inline(always)]
pub fn lane_id() -> u32 {
    let r: u32;
    // SAFETY: reads a special register.
    unsafe { asm!("mov.u32 {0}, %laneid;", out(reg32) r, options(nomem, nostack, pure)) };
    r
}

/// Global thread index along x and the grid-wide stride, for grid-stride loops.
#[inline(always)]
pub fn global_index_x() -> (usize, usize) {
    let i = block_idx_x() as usize * block_dim_x() as usize + thread_idx_x() as usize;
    let stride = grid_dim_x() as usize * block_dim_x() as usize;
    (i, stride)
}

/// Block-wide barrier (`bar.sync 0`). Every thread of the block must reach it.
#[inline(always)]
pub fn sync_threads() {
    // SAFETY: a barrier; correctness depends on all threads reaching it, which callers ensure by only
    // calling it outside divergent control flow.
    unsafe { nvptx::_syncthreads() }
}

#[inline(always)]
pub fn block_dim_z() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_dim_z() as u32 }
}
#[inline(always)]
pub fn grid_dim_z() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_grid_dim_z() as u32 }
}

/// `ld.global.nc.v2.f32 [p]`: two consecutive floats of read-only data (weights, biases) through the
/// non-coherent cache path. Pure: the compiler may move it across other memory operations.
///
/// # Safety
/// `p` must be 8-byte aligned and point to 8 readable bytes of global memory that no kernel writes while
/// this one runs.
#[inline(always)]
pub unsafe fn ld_global_nc_v2_f32(p: *const f32) -> [f32; 2] {
    let (a, b): (f32, f32);
    asm!("ld.global.nc.v2.f32 {{{0}, {1}}}, [{2}];", out(reg32) a, out(reg32) b, in(reg64) p, options(pure, readonly, nostack));
    [a, b]
}

/// `red.global.add.f64 [p], v`: adds `v` to the double at `p` atomically, without returning the old value
/// (fire and forget: the issuing thread does not wait for it).
///
/// # Safety
/// `p` must be 8-byte aligned and point to a writable double of global memory.
#[inline(always)]
pub unsafe fn red_add_f64(p: *mut f64, v: f64) {
    asm!("red.global.add.f64 [{0}], {1};", in(reg64) p, in(reg64) v, options(nostack));
}

/// `prefetch.global.L2 [p]`: asks for the 128-byte line holding global address `p` to be brought into L2
/// (a hint: no result, no fault).
///
/// # Safety
/// `p` should point into a live global allocation; `unsafe` because it is a memory operation.
#[inline(always)]
pub unsafe fn prefetch_l2(p: *const u8) {
    asm!("prefetch.global.L2 [{0}];", in(reg64) p, options(nostack, readonly));
}

/// `setmaxnreg.inc.sync.aligned.u32 N` (sm_90a): raises this warpgroup's per-thread register limit to `N`
/// (a multiple of 8 in 24..=256), waiting until the block's pool has the registers, which other
/// warpgroups hand back with [`set_max_nreg_dec`]. ptxas allocates the code after it with up to `N`.
///
/// # Safety
/// All threads of the warpgroup must execute it convergently, in a kernel whose entry register count
/// (ptxas' report) times the block size is what the pool holds: the increases and decreases of all
/// warpgroups of the block must balance, or it waits forever.
#[inline(always)]
pub unsafe fn set_max_nreg_inc<const N: u32>() {
    asm!("setmaxnreg.inc.sync.aligned.u32 {n};", n = const N, options(nostack));
}

/// `setmaxnreg.dec.sync.aligned.u32 N` (sm_90a): lowers this warpgroup's per-thread register limit to
/// `N`, releasing the rest to the block's pool (see [`set_max_nreg_inc`]).
///
/// # Safety
/// As [`set_max_nreg_inc`]; the code after it must fit in `N` registers (ptxas allocates it so).
#[inline(always)]
pub unsafe fn set_max_nreg_dec<const N: u32>() {
    asm!("setmaxnreg.dec.sync.aligned.u32 {n};", n = const N, options(nostack));
}

/// Programmatic dependent launch (sm_90, PTX `griddepcontrol.wait`): blocks until every grid this one
/// depends on has completed and its memory operations are visible. Every kernel calls it first, before it
/// touches memory a predecessor may write, so the host may launch any kernel with the
/// programmatic-stream-serialization attribute (the next grid is then scheduled as this one's blocks
/// exit, hiding part of the launch latency). Without such a dependency it returns at once. The host
/// launches a kernel that way only when its PTX body contains this instruction (`Gpu::launch`).
/// An early `griddepcontrol.launch_dependents` at kernel start was measured slower (run 8, H200:
/// TransformerNet 256 0.39 vs 0.31 ms, StyleViT base 64 tokens 0.66 vs 0.585): the dependents' waiting
/// blocks get in the way. Placed right after this wait instead (run 68, H100, PTX variants through
/// `STYLEFORGE_PTX`, same run) it was no faster either: in every kernel, TransformerNet 256 / 1024 0.237 /
/// 1.24-1.29 ms against 0.225 / 1.20, StyleViT base 64 tokens 0.556-0.561 against 0.545-0.553; in all but
/// the persistent TMA / wgmma kernels, 0.236-0.239 / 1.197 and 0.561-0.562. It does pay where the
/// dependent kernel has independent work for before its wait ([`grid_dependency_wait_then_trigger`]).
#[inline(always)]
pub fn grid_dependency_wait() {
    // SAFETY: no operands; it only orders this grid after its prerequisite grids. Not `nomem`: memory
    // accesses must not be moved above it.
    unsafe { asm!("griddepcontrol.wait;", options(nostack)) };
}

/// [`grid_dependency_wait`], then `griddepcontrol.launch_dependents`: once every block of this grid has
/// passed its wait, the next grid may launch and run up to its own wait (its blocks take SM room while
/// this grid runs). It pays only where the next kernel has work that does not depend on this one:
/// `linear_tc_small` copies its first weight tiles before its wait. The few-token StyleViT kernels
/// (`linear_tc_small`, `linear_tc_layer_norm_h`, `attention_tc_d32_m1` / `_d64_m1`, the f16 AdaIN and
/// patch kernels) trigger. Run 112 (H100, same binary, PTX variants): StyleViT 64 tokens base
/// 0.402-0.406 ms against 0.412-0.415 without trigger and early weights, small 0.234-0.239 against
/// 0.242-0.245; the trigger without the early weights was slower (base 0.427-0.430).
#[inline(always)]
pub fn grid_dependency_wait_then_trigger() {
    grid_dependency_wait();
    // SAFETY: no operands; it only lets the dependent grid launch early. That grid's own
    // `griddepcontrol.wait` still waits for this grid's completion and memory before it reads anything
    // this grid writes (every kernel waits before touching such memory).
    unsafe { asm!("griddepcontrol.launch_dependents;", options(nostack)) };
}
