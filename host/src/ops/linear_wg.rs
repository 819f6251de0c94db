//! `linear_wg` launcher: the `linear_tc` product (y = epilogue(x Wᵀ), f16 inputs, f32 accumulation,
//! bias / GELU (tanh form) / residual, f32 and/or f16 outputs; see [`crate::ops::linear_tc`]) on the Hopper
//! `wgmma` kernel (128 x 128 tiles, two blocks per SM; PTX target `sm_90a`, so H100/H200 only). Meant
//! for many rows: the grid has ceil(M/128)·ceil(N/128) blocks.
//!
//! Extra shape rules on top of `linear_tc`'s: K a positive multiple of 64 (the kernel's K step, no
//! tail handling) and N a multiple of 8. M is arbitrary (rows past M are zero-filled and not stored).
//! [`crate::ops::linear_tc::linear_tc`] / `linear_tc_ws` route their many-row plan here unless
//! `STYLEFORGE_LINEAR_WG=0` ([`crate::ops::linear_tc::LINEAR_WG_ENV`]), when [`supports`] says yes.
//!
//! Also the launcher of `wgmma_probe`, the one-MMA layout probe of the self-check.
use gpu_kernels::launch::{
    LINEAR_WG_BK, LINEAR_WG_BM, LINEAR_WG_BN, LINEAR_WG_SMEM_BYTES, LINEAR_WG_THREADS,
    WGMMA_PROBE_SMEM_BYTES, WGMMA_PROBE_THREADS,
};

use crate::error::{ensure, Result};
use crate::gpu::{DType, DeviceTensor, Gpu};
use crate::kernel_args;
use crate::ops::linear_tc::{check_args_for, EpilogueTc};

const OP: &str = "linear_wg";

// The kernel's shared memory fits the sm_90 opt-in limit (227 KB); the probe's needs no opt-in.
const _: () = assert!(LINEAR_WG_SMEM_BYTES <= gpu_kernels::launch::MAX_SMEM_PER_BLOCK && WGMMA_PROBE_SMEM_BYTES <= 48 * 1024);

/// Whether `linear_wg` takes a weight of `n` rows and `k` columns: K a positive multiple of 64, N a
/// positive multiple of 8.
pub fn supports(n: usize, k: usize) -> bool {
    n > 0 && n.is_multiple_of(8) && k > 0 && k.is_multiple_of(LINEAR_WG_BK as usize)
}

/// Grid of `linear_wg` for M rows and N columns: (ceil(N / 128), ceil(M / 128)).
pub fn grid(m: usize, n: usize) -> (usize, usize) {
    (
        n.div_ceil(LINEAR_WG_BN as usize),
        m.div_ceil(LINEAR_WG_BM as usize),
    )
}

/// y = epilogue(x Wᵀ) on `wgmma`; writes `y32` (f32) and/or `y16` (f16), at least one. Shapes and
/// types as `linear_tc` (x f16 `[.., K]`, w f16 `[N, K]`, bias f32 `[N]`, residual f32/f16 `[R, N]`
/// with R dividing M) plus K % 64 == 0 and N % 8 == 0; every violation is an error and nothing is
/// launched.
pub fn linear_wg(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    ep: EpilogueTc<'_>,
    y32: Option<&mut DeviceTensor>,
    y16: Option<&mut DeviceTensor>,
) -> Result<()> {
    let a = check_args_for(OP, x, w, ep, y32.as_deref(), y16.as_deref())?;
    let (m, n, k) = (a.m, a.n, a.k);
    ensure(k.is_multiple_of(LINEAR_WG_BK as usize), OP, || {
        format!("K = {k} must be a multiple of {LINEAR_WG_BK}")
    })?;
    ensure(n.is_multiple_of(8), OP, || {
        format!("N = {n} must be a multiple of 8")
    })?;
    let (gx, gy) = grid(m, n);
    ensure(gy <= 65_535, OP, || {
        format!("M = {m} needs {gy} row tiles, more than the grid's 65535")
    })?;
    let (m32, n32, k32, rr32, flags) = (m as u32, n as u32, k as u32, a.r_rows as u32, a.flags);
    // SAFETY: linear_wg(x, w: *const u16, bias: *const f32, res: *const u8, y32: *mut f32, y16: *mut
    // u16, m, n, k, res_rows, flags: u32) matches the argument list in order and type. The kernel reads
    // x[0..m*k] and w[0..n*k] in 16-byte chunks at multiples of 8 elements of rows of k (k % 64 == 0
    // checked, so no chunk crosses K; allocations are 256-byte aligned), reading row 0 with a zero-byte
    // copy for rows past M/N; bias[0..n] only with LINEAR_TC_BIAS; res[0..r_rows*n] (f32, or f16 with
    // LINEAR_TC_RES_F16) only with LINEAR_TC_RESIDUAL (r_rows ≥ 1); and writes y32/y16[0..m*n] only
    // when non-null, only rows < m and columns < n. Every size was checked against the tensors in
    // `check_args_for` and fits 32 bits; the outputs are exclusive borrows, distinct from the inputs.
    // Block = LINEAR_WG_THREADS (2 warpgroups, as the kernel's wgmma needs) with LINEAR_WG_SMEM_BYTES of
    // dynamic shared memory (the stages plus 1 KB alignment slack the kernel carves; ≤ 227 KB, opted
    // in by `Gpu::launch`); the grid covers ceil(N/128) x ceil(M/128) ≤ 65535 tiles.
    unsafe {
        gpu.launch(
            "linear_wg",
            (gx as u32, gy as u32, 1),
            (LINEAR_WG_THREADS, 1, 1),
            LINEAR_WG_SMEM_BYTES,
            kernel_args!(
                x.ptr(),
                w.ptr(),
                a.b_ptr,
                a.r_ptr,
                a.y32_ptr,
                a.y16_ptr,
                m32,
                n32,
                k32,
                rr32,
                flags
            ),
        )
    }
}

/// `wgmma_probe`: d `[64, n]` f32 = a `[64, k]` · b `[n, k]`ᵀ (a, b f16 row-major) through one
/// warpgroup's `wgmma.m64n{n}k16` MMAs, k / 16 of them, on tiles staged like `linear_wg`'s. n must be
/// 128 or 256 and k one of 16, 32, 48, 64. Isolates descriptor, swizzle and fragment-layout mistakes
/// from the pipeline.
pub fn wgmma_probe(
    gpu: &Gpu,
    a: &DeviceTensor,
    b: &DeviceTensor,
    d: &mut DeviceTensor,
) -> Result<()> {
    const OP: &str = "wgmma_probe";
    ensure(a.dtype == DType::F16 && b.dtype == DType::F16, OP, || {
        format!("a and b must be f16, got {:?} and {:?}", a.dtype, b.dtype)
    })?;
    let (ka, n, k) = match (a.shape.as_slice(), b.shape.as_slice()) {
        (&[64, ka], &[n, k]) => (ka, n, k),
        _ => {
            return Err(crate::error::Error::Shape {
                op: OP,
                msg: format!(
                    "a must be [64, k] and b [n, k], got {:?} and {:?}",
                    a.shape, b.shape
                ),
            })
        }
    };
    ensure(ka == k && matches!(k, 16 | 32 | 48 | 64), OP, || {
        format!("k must be 16, 32, 48 or 64 in both, got {ka} and {k}")
    })?;
    ensure(n == 128 || n == 256, OP, || {
        format!("n must be 128 or 256, got {n}")
    })?;
    ensure(
        d.dtype == DType::F32 && d.shape.as_slice() == [64, n],
        OP,
        || format!("d must be f32 [64, {n}], got {:?} {:?}", d.dtype, d.shape),
    )?;
    let (n32, k32) = (n as u32, k as u32);
    // SAFETY: wgmma_probe(a, b: *const u16, d: *mut f32, n, k: u32) matches the argument list in order
    // and type. It reads a[0..64*k] and b[0..n*k] (16-byte chunks of rows of k, k a multiple of 16; chunks
    // past k are zero-filled without reading) and writes d[0..64*n]; the shapes were checked above and d
    // is an exclusive borrow. One block of WGMMA_PROBE_THREADS = one warpgroup, with
    // WGMMA_PROBE_SMEM_BYTES (< 48 KB) of dynamic shared memory for the 64- and 256-row tiles.
    unsafe {
        gpu.launch(
            "wgmma_probe",
            (1, 1, 1),
            (WGMMA_PROBE_THREADS, 1, 1),
            WGMMA_PROBE_SMEM_BYTES,
            kernel_args!(a.ptr(), b.ptr(), d.ptr(), n32, k32),
        )
    }
}

/// The MMA tile shapes `wgmma_peak` times (its `mode`): name and MACs per k16 step.
pub const WGMMA_PEAK_MODES: [(&str, u64); 3] = [
    ("128x128 (2x m64n128, B shared)", 128 * 128 * 16),
    ("64x256 (1x m64n256)", 64 * 256 * 16),
    ("64x256 (2x m64n128, A shared)", 64 * 256 * 16),
];

/// Launches `wgmma_peak` (the tensor pipe's ceiling for one issue pattern, see the kernel) on `blocks`
/// blocks (one per SM with its shared memory) with `iters` 64-wide K stages per warpgroup, `mode` an
/// index of [`WGMMA_PEAK_MODES`] and `active` (1 or 2) warpgroups per block issuing; `out` f32
/// [blocks · 256] receives the accumulator sums. FLOPs = 2 · blocks · active · iters · 4 · MACs per step.
pub fn wgmma_peak(gpu: &Gpu, out: &mut DeviceTensor, blocks: u32, iters: u32, mode: u32, active: u32) -> Result<()> {
    const OP: &str = "wgmma_peak";
    use gpu_kernels::launch::{WGMMA_PEAK_SMEM_BYTES, WGMMA_PEAK_THREADS};
    ensure((mode as usize) < WGMMA_PEAK_MODES.len() && (active == 1 || active == 2) && blocks > 0, OP, || {
        format!("mode {mode} (0..3), active {active} (1 or 2), blocks {blocks} (> 0)")
    })?;
    ensure(
        out.dtype == DType::F32 && out.numel() == (blocks * WGMMA_PEAK_THREADS) as usize,
        OP,
        || format!("out must be f32 with {} elements, got {:?} {:?}", blocks * WGMMA_PEAK_THREADS, out.dtype, out.shape),
    )?;
    // SAFETY: wgmma_peak(out: *mut f32, iters, mode, active: u32) matches the argument list in order and
    // type; it writes out[block * 256 + thread] for each of the `blocks` x WGMMA_PEAK_THREADS threads
    // (checked above: out holds that many f32) and reads only its own shared memory
    // (WGMMA_PEAK_SMEM_BYTES, within the opt-in limit).
    unsafe {
        gpu.launch(
            OP,
            (blocks, 1, 1),
            (WGMMA_PEAK_THREADS, 1, 1),
            WGMMA_PEAK_SMEM_BYTES,
            kernel_args!(out.ptr(), iters, mode, active),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_rules() {
        assert!(supports(512, 2048));
        assert!(supports(1536, 512));
        assert!(supports(8, 64));
        assert!(!supports(512, 520));
        assert!(!supports(512, 32));
        assert!(!supports(0, 64));
        assert!(!supports(45, 64));
        assert!(!supports(512, 0));
        assert_eq!(grid(32768, 1536), (12, 256));
        assert_eq!(grid(200, 128), (1, 2));
        assert_eq!(grid(4100, 2048), (16, 33));
    }
}
