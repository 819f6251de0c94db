//! Programmatic dependent launch (PDL, sm_90): a kernel launched with the
//! programmatic-stream-serialization attribute may be scheduled while the kernel before it on the stream
//! is still draining; it waits for that kernel's results at its `griddepcontrol.wait`. This hides most of
//! the launch latency between dependent kernels, which is what the small images (dozens of
//! few-microsecond kernels per forward) are made of. Stream capture records the dependency as a
//! programmatic graph edge, so CUDA graph replays keep the overlap.
//!
//! cust 0.3.2 (CUDA 11.4 bindings) has no `cuLaunchKernelEx`; the declarations below follow CUDA 12's
//! `cuda.h` (`CUlaunchConfig`, `CUlaunchAttribute` with its 64-byte value union).
use std::collections::HashSet;
use std::ffi::c_void;

use cust::sys::{CUfunction, CUresult, CUstream};

/// `CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION`.
const PROGRAMMATIC_STREAM_SERIALIZATION: u32 = 6;

/// `CUlaunchAttribute`: the id, padding to 8 bytes, a 64-byte value union (here: one int, zero-padded).
#[repr(C)]
struct LaunchAttribute {
    id: u32,
    _pad: u32,
    value: [u32; 16],
}

/// `CUlaunchConfig`.
#[repr(C)]
struct LaunchConfig {
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem_bytes: u32,
    stream: CUstream,
    attrs: *mut LaunchAttribute,
    num_attrs: u32,
}

extern "C" {
    // In libcuda since CUDA 12.0 (driver 525); the crate links libcuda through cust_raw.
    fn cuLaunchKernelEx(
        config: *const LaunchConfig,
        f: CUfunction,
        kernel_params: *mut *mut c_void,
        extra: *mut *mut c_void,
    ) -> CUresult;
}

/// Names of the module's kernels whose body waits on `griddepcontrol.wait` (every StyleForge kernel calls
/// `grid_dependency_wait` first; a kernel without it must not be launched programmatically, since it
/// could read its predecessor's output early).
pub fn pdl_kernels(ptx: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for part in ptx.split(".entry ").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '$')
            .collect();
        // The entry's body ends at the first line holding only the closing brace.
        let body = part.split("\n}").next().unwrap_or("");
        if !name.is_empty() && body.contains("griddepcontrol.wait") {
            out.insert(name);
        }
    }
    out
}

/// Whether PDL launches are on: yes on sm_90+ unless `STYLEFORGE_PDL=0`.
pub fn pdl_enabled(cc_major: u32) -> bool {
    cc_major >= 9 && super::env_on("STYLEFORGE_PDL")
}

/// Launches `f` with the programmatic-stream-serialization attribute.
///
/// # Safety
/// As `Gpu::launch`: `args` matches the kernel's parameters and its pointers are valid for the launch;
/// `f` and `stream` are live handles of the current context; the kernel waits on `griddepcontrol.wait`
/// before reading memory its predecessors write (checked by the caller through [`pdl_kernels`]).
pub unsafe fn launch_pdl(
    f: CUfunction,
    stream: CUstream,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared_mem_bytes: u32,
    args: &[*mut c_void],
) -> CUresult {
    let mut attr = LaunchAttribute {
        id: PROGRAMMATIC_STREAM_SERIALIZATION,
        _pad: 0,
        value: [0; 16],
    };
    attr.value[0] = 1;
    let cfg = LaunchConfig {
        grid: [grid.0, grid.1, grid.2],
        block: [block.0, block.1, block.2],
        shared_mem_bytes,
        stream,
        attrs: &mut attr,
        num_attrs: 1,
    };
    // SAFETY: `cfg` and `attr` live across the call; the driver copies the parameters before returning.
    cuLaunchKernelEx(&cfg, f, args.as_ptr() as *mut *mut c_void, std::ptr::null_mut())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_cuda_h() {
        assert_eq!(std::mem::size_of::<LaunchAttribute>(), 72);
        assert_eq!(std::mem::size_of::<LaunchConfig>(), 56);
    }

    #[test]
    fn finds_waiting_kernels_only() {
        let ptx = ".visible .entry a(\n.param .u64 p\n)\n{\n\tgriddepcontrol.wait;\n\tret;\n}\n\
                   .visible .entry b(\n)\n{\n\tret;\n}\n.func c()\n{\n griddepcontrol.wait;\n}\n";
        let k = pdl_kernels(ptx);
        assert!(k.contains("a"));
        assert!(!k.contains("b"), "b's body has no wait (c's does not count)");
        assert_eq!(k.len(), 1);
    }
}
