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
/// `CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION` (value: three unsigned ints, x y z).
const CLUSTER_DIMENSION: u32 = 4;

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
    // In libcuda since CUDA 12.0.
    fn cuOccupancyMaxActiveClusters(num_clusters: *mut i32, f: CUfunction, config: *const LaunchConfig) -> CUresult;
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
    cc_major >= 9 && std::env::var("STYLEFORGE_PDL").map_or(true, |v| v != "0")
}

/// The launch attributes: programmatic stream serialization when `pdl`, a cluster of `cluster` blocks
/// along x when given.
fn attributes(pdl: bool, cluster: Option<u32>) -> Vec<LaunchAttribute> {
    let mut attrs = Vec::with_capacity(2);
    if pdl {
        let mut a = LaunchAttribute { id: PROGRAMMATIC_STREAM_SERIALIZATION, _pad: 0, value: [0; 16] };
        a.value[0] = 1;
        attrs.push(a);
    }
    if let Some(x) = cluster {
        let mut a = LaunchAttribute { id: CLUSTER_DIMENSION, _pad: 0, value: [0; 16] };
        a.value[..3].copy_from_slice(&[x, 1, 1]);
        attrs.push(a);
    }
    attrs
}

/// Launches `f` through `cuLaunchKernelEx`, with programmatic stream serialization when `pdl` and as
/// clusters of `cluster` blocks along x when given.
///
/// # Safety
/// As `Gpu::launch`: `args` matches the kernel's parameters and its pointers are valid for the launch;
/// `f` and `stream` are live handles of the current context; with `pdl` the kernel waits on
/// `griddepcontrol.wait` before reading memory its predecessors write (checked by the caller through
/// [`pdl_kernels`]); with `cluster`, grid.0 is a multiple of it (else the driver refuses the launch).
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_ex(
    f: CUfunction,
    stream: CUstream,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared_mem_bytes: u32,
    args: &[*mut c_void],
    pdl: bool,
    cluster: Option<u32>,
) -> CUresult {
    let mut attrs = attributes(pdl, cluster);
    let cfg = LaunchConfig {
        grid: [grid.0, grid.1, grid.2],
        block: [block.0, block.1, block.2],
        shared_mem_bytes,
        stream,
        attrs: attrs.as_mut_ptr(),
        num_attrs: attrs.len() as u32,
    };
    // SAFETY: `cfg` and `attrs` live across the call; the driver copies the parameters before returning.
    cuLaunchKernelEx(&cfg, f, args.as_ptr() as *mut *mut c_void, std::ptr::null_mut())
}

/// How many clusters of `cluster` blocks of `f` (`block` threads, `shared_mem_bytes` dynamic shared memory,
/// already opted in) can be resident at once (`cuOccupancyMaxActiveClusters`).
///
/// # Safety
/// `f` must be a live function handle of the current context.
pub unsafe fn max_active_clusters(f: CUfunction, block: (u32, u32, u32), shared_mem_bytes: u32, cluster: u32) -> (CUresult, u32) {
    let mut attrs = attributes(false, Some(cluster));
    let cfg = LaunchConfig {
        grid: [cluster, 1, 1],
        block: [block.0, block.1, block.2],
        shared_mem_bytes,
        stream: std::ptr::null_mut(),
        attrs: attrs.as_mut_ptr(),
        num_attrs: attrs.len() as u32,
    };
    let mut n = 0i32;
    // SAFETY: `cfg`, `attrs` and `n` live across the call; it only reads them and writes `n`.
    let r = cuOccupancyMaxActiveClusters(&mut n, f, &cfg);
    (r, n.max(0) as u32)
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
