//! Vector shared-memory access (`ld.shared.v4.f32`), for register-tiled GEMM inner loops.
use core::arch::asm;

/// Four consecutive floats from a 16-byte aligned shared-window byte address.
///
/// # Safety
/// `addr` must be 16-byte aligned and `addr..addr + 16` must lie inside the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn ld_v4(addr: u32) -> [f32; 4] {
    let (a, b, c, d): (f32, f32, f32, f32);
    asm!("ld.shared.v4.f32 {{{0}, {1}, {2}, {3}}}, [{4}];",
         out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr, options(nostack, readonly));
    [a, b, c, d]
}
