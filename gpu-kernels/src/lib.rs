//! StyleForge GPU kernels.
//!
//! Built twice:
//! * for `nvptx64-nvidia-cuda` by `cargo xtask build-kernels` (nightly, `-Zbuild-std=core`, cdylib, fat LTO,
//!   emitted as PTX): `device` (the part of `cuda_std` we need) and the kernels in `kernels`;
//! * for the host as an ordinary rlib: only [`launch`], the block sizes and tile shapes the kernels are
//!   compiled for, so the host's launch checks and the kernels cannot disagree.
#![cfg_attr(target_arch = "nvptx64", no_std)]
#![cfg_attr(
    target_arch = "nvptx64",
    feature(abi_ptx, stdarch_nvptx, asm_experimental_arch, core_intrinsics)
)]
#![cfg_attr(target_arch = "nvptx64", allow(internal_features))]

pub mod approx;
pub mod launch;

#[cfg(not(target_arch = "nvptx64"))]
pub mod source_hash;

#[cfg(target_arch = "nvptx64")]
pub mod device;

#[cfg(target_arch = "nvptx64")]
mod kernels;

#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    device::trap()
}
