//! Tensor maps for the Hopper bulk tensor copy engine (TMA): `cuTensorMapEncodeTiled` (CUDA 12.0+,
//! driver 525+; cust 0.3.2's bindings predate it, so it is declared here from CUDA 12's `cuda.h`) and a
//! device copy of the 128-byte map that kernels take by generic address (`gpu_kernels::device::tma`).
use std::ffi::c_void;

use cust::memory::{CopyDestination, DeviceBuffer};
use cust::sys::CUresult;

use crate::error::{CudaContext, Error, Result};

/// `CUtensorMap`: 16 opaque 64-bit words, 64-byte aligned.
#[repr(C, align(64))]
struct RawTensorMap([u64; 16]);

/// `CU_TENSOR_MAP_DATA_TYPE_FLOAT16`.
const DATA_TYPE_F16: u32 = 6;
/// `CU_TENSOR_MAP_INTERLEAVE_NONE`.
const INTERLEAVE_NONE: u32 = 0;
/// `CU_TENSOR_MAP_SWIZZLE_128B`.
const SWIZZLE_128B: u32 = 3;
/// `CU_TENSOR_MAP_L2_PROMOTION_L2_256B`.
const L2_PROMOTION_256B: u32 = 3;
/// `CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE` (out-of-bounds elements read as zeros).
const OOB_FILL_ZERO: u32 = 0;

extern "C" {
    // In libcuda since CUDA 12.0; the crate links libcuda through cust_raw. The enums are C enums (u32).
    fn cuTensorMapEncodeTiled(
        tensor_map: *mut RawTensorMap,
        data_type: u32,
        rank: u32,
        global_address: *mut c_void,
        global_dim: *const u64,
        global_strides: *const u64,
        box_dim: *const u32,
        element_strides: *const u32,
        interleave: u32,
        swizzle: u32,
        l2_promotion: u32,
        oob_fill: u32,
    ) -> CUresult;
}

/// Why a tiled f16 map with 128-byte swizzle over `dims` (elements, innermost first), row `strides`
/// (bytes, dims 1..) and `box_dims` would be refused, checked before the driver sees it (the driver's
/// own refusal is only `CUDA_ERROR_INVALID_VALUE`).
pub fn map_problem(addr: u64, dims: &[u64], strides: &[u64], box_dims: &[u32]) -> Option<String> {
    let rank = dims.len();
    if !(2..=5).contains(&rank) || strides.len() != rank - 1 || box_dims.len() != rank {
        return Some(format!("rank {rank} with {} strides and {} box dims", strides.len(), box_dims.len()));
    }
    if !addr.is_multiple_of(16) {
        return Some(format!("base address {addr:#x} not 16-byte aligned"));
    }
    if dims.iter().any(|&d| d == 0 || d > 1 << 32) {
        return Some(format!("dims {dims:?} must be in 1..=2^32"));
    }
    if strides.iter().any(|&s| s % 16 != 0 || s >= 1 << 40) {
        return Some(format!("strides {strides:?} must be multiples of 16 below 2^40"));
    }
    if box_dims.iter().any(|&b| b == 0 || b > 256) {
        return Some(format!("box {box_dims:?} must be in 1..=256"));
    }
    // 128-byte swizzle: the innermost box extent is at most 128 bytes (and a multiple of 16).
    if box_dims[0] as usize * 2 > 128 || !(box_dims[0] as usize * 2).is_multiple_of(16) {
        return Some(format!("innermost box extent {} f16 must be 16..128 bytes, a multiple of 16", box_dims[0]));
    }
    None
}

/// A tensor map in device memory (128 bytes), for kernels that take it by address.
///
/// It names a device address without owning it: the types that hold one (`ops::conv2d_tma`) also own
/// the tensor it describes, so the map cannot outlive its memory.
pub struct DeviceTensorMap {
    buf: DeviceBuffer<u64>,
}

impl DeviceTensorMap {
    /// Encodes a tiled f16 map with 128-byte swizzle and zero fill over the device memory at `addr` and
    /// copies it to the device. `dims`: elements per dimension, innermost first; `strides`: bytes between
    /// consecutive indices of dims 1.. ; `box_dims`: the box one copy moves.
    pub fn tiled_f16(addr: u64, dims: &[u64], strides: &[u64], box_dims: &[u32]) -> Result<Self> {
        if let Some(msg) = map_problem(addr, dims, strides, box_dims) {
            return Err(Error::Shape { op: "tensor map", msg });
        }
        let mut map = RawTensorMap([0; 16]);
        let elem_strides = [1u32; 5];
        // SAFETY: the pointers are to live arrays of the rank's length (checked by map_problem: dims and
        // box_dims have `rank` entries, strides rank - 1, elem_strides 5 ≥ rank); `map` is a writable,
        // 64-byte aligned CUtensorMap. The driver only encodes: it does not dereference `addr`.
        let r = unsafe {
            cuTensorMapEncodeTiled(
                &mut map,
                DATA_TYPE_F16,
                dims.len() as u32,
                addr as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                box_dims.as_ptr(),
                elem_strides.as_ptr(),
                INTERLEAVE_NONE,
                SWIZZLE_128B,
                L2_PROMOTION_256B,
                OOB_FILL_ZERO,
            )
        };
        if r != cust::sys::cudaError_enum::CUDA_SUCCESS {
            return Err(Error::Shape {
                op: "tensor map",
                msg: format!("cuTensorMapEncodeTiled refused dims {dims:?} strides {strides:?} box {box_dims:?}: {r:?}"),
            });
        }
        let mut buf = DeviceBuffer::from_slice(&[0u64; 16]).during("allocating a tensor map")?;
        buf.copy_from(&map.0[..]).during("uploading a tensor map")?;
        Ok(DeviceTensorMap { buf })
    }

    /// The map's device address (cudaMalloc memory: 256-byte aligned, as the 64 bytes the ISA asks).
    pub fn ptr(&self) -> u64 {
        self.buf.as_device_ptr().as_raw()
    }
}

/// Tensor maps by what they encode (address, dims, strides, box): a map is a pure function of these, so a
/// cached one is always right for a request with the same key, whatever happened to the memory in between
/// (a map names memory without owning it; the kernel's caller keeps the tensor alive for the launch).
/// Launchers of kernels that read activations through TMA keep one, so that a forward pass over the same
/// buffers encodes and uploads each map once (the upload is a synchronous copy: the first pass, which runs
/// before any graph capture, fills the cache).
#[derive(Default)]
pub struct TmaMapCache {
    maps: std::collections::HashMap<MapKey, DeviceTensorMap>,
}

/// What a map encodes: (address, dims, strides, box), zero-padded to rank 5.
type MapKey = (u64, [u64; 5], [u64; 4], [u32; 5]);

impl TmaMapCache {
    /// The device address of the map [`DeviceTensorMap::tiled_f16`] makes for these arguments, made on the
    /// first request.
    pub fn tiled_f16(&mut self, addr: u64, dims: &[u64], strides: &[u64], box_dims: &[u32]) -> Result<u64> {
        if let Some(msg) = map_problem(addr, dims, strides, box_dims) {
            return Err(Error::Shape { op: "tensor map", msg });
        }
        // Rank ≤ 5 (checked): the unused entries stay 0, and the rank is dims' nonzero prefix (dims ≥ 1).
        let mut key: MapKey = (addr, [0; 5], [0; 4], [0; 5]);
        key.1[..dims.len()].copy_from_slice(dims);
        key.2[..strides.len()].copy_from_slice(strides);
        key.3[..box_dims.len()].copy_from_slice(box_dims);
        if let Some(m) = self.maps.get(&key) {
            return Ok(m.ptr());
        }
        let m = DeviceTensorMap::tiled_f16(addr, dims, strides, box_dims)?;
        let ptr = m.ptr();
        self.maps.insert(key, m);
        Ok(ptr)
    }

    /// Maps held.
    pub fn len(&self) -> usize {
        self.maps.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_map_layout() {
        assert_eq!(std::mem::size_of::<RawTensorMap>(), 128);
        assert_eq!(std::mem::align_of::<RawTensorMap>(), 64);
    }

    #[test]
    fn map_rules() {
        assert!(map_problem(256, &[128, 258, 258, 1], &[256, 258 * 256, 258 * 258 * 256], &[64, 128, 1, 1]).is_none());
        assert!(map_problem(8, &[128, 10], &[256], &[64, 8]).is_some(), "misaligned base");
        assert!(map_problem(256, &[100, 10], &[200], &[64, 8]).is_some(), "stride not a multiple of 16");
        assert!(map_problem(256, &[128, 10], &[256], &[128, 8]).is_some(), "256-byte inner box");
        assert!(map_problem(256, &[128, 1000], &[256], &[64, 300]).is_some(), "box above 256");
        assert!(map_problem(256, &[128, 10], &[256, 1], &[64, 8]).is_some(), "stride count");
    }
}
