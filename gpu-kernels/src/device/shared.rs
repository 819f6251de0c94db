//! Dynamic shared memory. Rust has no `addrspace(3)` statics, so the module declares one extern shared
//! array (`SMEM`) and kernels carve it; the host sizes it per launch (`shared_mem_bytes`).
use core::arch::{asm, global_asm};

global_asm!(".extern .shared .align 16 .b8 SMEM[];");

/// Generic pointer to the start of the block's dynamic shared memory.
#[inline(always)]
pub fn dynamic_smem<T>() -> *mut T {
    let p: u64;
    // SAFETY: converts the address of the module's shared array into a generic address.
    unsafe { asm!("cvta.shared.u64 {0}, SMEM;", out(reg64) p, options(pure, nomem, nostack)) };
    p as *mut T
}

/// 32-bit shared-window address of the start of dynamic shared memory (for `ld.shared`, `ldmatrix`, `cp.async`).
#[inline(always)]
pub fn dynamic_smem_addr() -> u32 {
    let p: u32;
    // SAFETY: as above.
    unsafe { asm!("mov.u32 {0}, SMEM;", out(reg32) p, options(pure, nomem, nostack)) };
    p
}

/// `ld.shared.f32` at a shared-window byte address.
///
/// # Safety
/// `addr` must lie inside the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn ld_f32(addr: u32) -> f32 {
    let r: f32;
    asm!("ld.shared.f32 {0}, [{1}];", out(reg32) r, in(reg32) addr, options(nostack, readonly));
    r
}
/// `st.shared.f32` at a shared-window byte address.
///
/// # Safety
/// `addr` must lie inside the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn st_f32(addr: u32, v: f32) {
    asm!("st.shared.f32 [{0}], {1};", in(reg32) addr, in(reg32) v, options(nostack));
}

/// Block-wide sum through `scratch` (at least 32 floats of shared memory); every thread gets the result.
/// All threads of the block must call it; blockDim.x must be a multiple of 32.
///
/// # Safety
/// `scratch` must point to ≥ 32 floats of shared memory not used concurrently by anything else.
#[inline(always)]
pub unsafe fn block_sum(v: f32, scratch: *mut f32) -> f32 {
    use super::{block_dim_x, sync_threads, thread_idx_x, warp::warp_sum};
    let warps = block_dim_x() / 32;
    let w = thread_idx_x() / 32;
    let lane = thread_idx_x() % 32;
    let s = warp_sum(v);
    if lane == 0 {
        *scratch.add(w as usize) = s;
    }
    sync_threads();
    let mut t = if lane < warps {
        *scratch.add(lane as usize)
    } else {
        0.0
    };
    t = warp_sum(t);
    sync_threads();
    t
}

/// `ld.shared.v4.f32` at a 16-byte aligned shared-window byte address: four consecutive floats.
///
/// # Safety
/// `addr` must be 16-byte aligned and `addr .. addr + 16` must lie inside the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn ld_v4_f32(addr: u32) -> [f32; 4] {
    let (a, b, c, d): (f32, f32, f32, f32);
    asm!("ld.shared.v4.f32 {{{0}, {1}, {2}, {3}}}, [{4}];",
         out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr, options(nostack, readonly));
    [a, b, c, d]
}

/// `ld.shared.v2.b32` at an 8-byte aligned shared-window byte address: two consecutive 32-bit words.
///
/// # Safety
/// `addr` must be 8-byte aligned and `addr .. addr + 8` must lie inside the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn ld_v2_u32(addr: u32) -> [u32; 2] {
    let (a, b): (u32, u32);
    asm!("ld.shared.v2.b32 {{{0}, {1}}}, [{2}];", out(reg32) a, out(reg32) b, in(reg32) addr, options(nostack, readonly));
    [a, b]
}

/// `st.shared.v2.f32` at an 8-byte aligned shared-window byte address: two consecutive floats.
///
/// # Safety
/// `addr` must be 8-byte aligned and `addr .. addr + 8` must lie inside the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn st_v2_f32(addr: u32, a: f32, b: f32) {
    asm!("st.shared.v2.f32 [{0}], {{{1}, {2}}};", in(reg32) addr, in(reg32) a, in(reg32) b, options(nostack));
}

/// `st.shared.b32` at a 4-byte aligned shared-window byte address.
///
/// # Safety
/// `addr` must be 4-byte aligned and `addr .. addr + 4` must lie inside the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn st_u32(addr: u32, v: u32) {
    asm!("st.shared.b32 [{0}], {1};", in(reg32) addr, in(reg32) v, options(nostack));
}
