//! `linear_tma` launcher: the `linear_tc` product (y = epilogue(x Wᵀ), f16 inputs, f32 accumulation,
//! bias / GELU (tanh form) / residual, f32 and/or f16 outputs; see [`crate::ops::linear_tc`]) on the Hopper
//! TMA + warp-specialised ping-pong `wgmma` kernel (persistent: one block per SM over 128 x 128 output
//! tiles; PTX target `sm_90a`, so H100/H200 only). Meant for many rows.
//!
//! Shape rules on top of `linear_tc`'s: K and N multiples of 8 (the tensor maps' row strides are 16-byte
//! multiples; N even for the paired stores). M, N and K tails are zero-filled by the copy engine.
//! x and w are read through tensor maps kept in a [`TmaMapCache`] (one per workspace), so a repeated
//! forward pass over the same buffers encodes each map once.
//! [`crate::ops::linear_tc::linear_tc_ws`] routes its many-row plan here unless `STYLEFORGE_LINEAR_TMA=0`
//! ([`LINEAR_TMA_ENV`]; then `linear_wg` runs), when [`supports`] says yes.
//!
//! Three entries share the main loop: `linear_tma_store` (and `linear_tma_store_gelu`, GELU being a
//! compile-time choice) when y16 is the only output and there is no residual or the residual is y16 itself
//! ([`crate::ops::linear_tc::EpilogueTc::accumulate`]; then a TMA reduce-add), writing the tile through
//! shared memory and TMA stores (5 ring stages); `linear_tma` (4 stages, the register epilogue) otherwise,
//! or for every product with [`LINEAR_TMA_STORE_ENV`] = `0`. Run 95 (H100,
//! StyleViT p16 b8): GEMMs 6.01 ms against 7.05 on the register epilogue.
use gpu_kernels::launch::{
    LinearTmaArgs, LINEAR_TC_GELU, LINEAR_TC_RESIDUAL, LINEAR_TMA, LINEAR_TMA_BK, LINEAR_TMA_BM, LINEAR_TMA_BN, LINEAR_TMA_PREFETCH_RES,
    LINEAR_TMA_REDUCE, LINEAR_TMA_STORE, LINEAR_TMA_THREADS, MAX_SMEM_PER_BLOCK,
};

use crate::error::{ensure, Result};
use crate::gpu::{DeviceTensor, Gpu, TmaMapCache};
use crate::kernel_args;
use crate::ops::linear_tc::{check_args_for, EpilogueTc};

const OP: &str = "linear_tma";

const _: () = assert!(
    LINEAR_TMA.smem <= MAX_SMEM_PER_BLOCK && LINEAR_TMA_STORE.smem <= MAX_SMEM_PER_BLOCK
);

/// Environment variable: unless it is `0`, [`crate::ops::linear_tc::linear_tc_ws`]'s many-row plan runs
/// on `linear_tma` when [`supports`] allows (with `0`, on `linear_wg`). Read once per process.
pub const LINEAR_TMA_ENV: &str = "STYLEFORGE_LINEAR_TMA";

/// Whether [`LINEAR_TMA_ENV`] leaves `linear_tma` on (anything but `0`; read once).
pub fn linear_tma_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::gpu::env_on(LINEAR_TMA_ENV))
}

/// Environment switch: `0` keeps GELU epilogues off `linear_tma` (on `linear_wg`, as in session 12).
pub const LINEAR_TMA_GELU_ENV: &str = "STYLEFORGE_LINEAR_TMA_GELU";

/// Whether GELU epilogues run on `linear_tma` (unless [`LINEAR_TMA_GELU_ENV`] is `0`; read once).
pub fn linear_tma_gelu() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::gpu::env_on(LINEAR_TMA_GELU_ENV))
}

/// Whether `linear_tma` takes a weight of `n` rows and `k` columns: both positive multiples of 8.
pub fn supports(n: usize, k: usize) -> bool {
    n > 0 && n.is_multiple_of(8) && k > 0 && k.is_multiple_of(8)
}

/// (jobs, column tiles) for M rows and N columns: ceil(M / 128)·ceil(N / 128) tiles of 128 x 128.
pub fn jobs(m: usize, n: usize) -> (usize, usize) {
    let nt = n.div_ceil(LINEAR_TMA_BN as usize);
    (m.div_ceil(LINEAR_TMA_BM as usize) * nt, nt)
}

/// Whether `linear_tma` prefetches its jobs' residual tiles into L2 (`STYLEFORGE_LINEAR_TMA_PREFETCH=0`:
/// no). Read once.
fn prefetch_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::gpu::env_on("STYLEFORGE_LINEAR_TMA_PREFETCH"))
}

/// Environment switch: `0` keeps every `linear_tma` epilogue on the register path (f32 staging, global
/// stores from the warpgroup, residual loads), as before session 19. Otherwise f16-only outputs without a
/// residual, and in-place residuals ([`EpilogueTc::accumulate`]), go through TMA stores / reduce-adds.
pub const LINEAR_TMA_STORE_ENV: &str = "STYLEFORGE_LINEAR_TMA_STORE";

/// Whether [`LINEAR_TMA_STORE_ENV`] leaves the TMA-store epilogue on (anything but `0`; read once).
pub fn tma_store_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::gpu::env_on(LINEAR_TMA_STORE_ENV))
}

/// y = epilogue(x Wᵀ) on `linear_tma`; writes `y32` (f32) and/or `y16` (f16), at least one. Shapes and
/// types as `linear_tc` (x f16 `[.., K]`, w f16 `[N, K]`, bias f32 `[N]`, residual f32/f16 `[R, N]` with R
/// dividing M) plus K % 8 == 0 and N % 8 == 0; every violation is an error and nothing is launched. The
/// maps of x and w come from `maps`.
pub fn linear_tma(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    ep: EpilogueTc<'_>,
    y32: Option<&mut DeviceTensor>,
    y16: Option<&mut DeviceTensor>,
    maps: &mut TmaMapCache,
) -> Result<()> {
    let a = check_args_for(OP, x, w, ep, y32.as_deref(), y16.as_deref())?;
    let (m, n, k) = (a.m, a.n, a.k);
    ensure(supports(n, k), OP, || format!("N = {n} and K = {k} must be multiples of 8"))?;
    let (total, n_tiles) = jobs(m, n);
    ensure(total < (1 << 31) && m * n < (1 << 31) && m * k < (1 << 31), OP, || {
        format!("M = {m}, N = {n}, K = {k} need 64-bit indexing")
    })?;
    let bx = [LINEAR_TMA_BK, LINEAR_TMA_BM];
    let bw = [LINEAR_TMA_BK, LINEAR_TMA_BN];
    let row = [2 * k as u64];
    let xmap = maps.tiled_f16(x.ptr(), &[k as u64, m as u64], &row, &bx)?;
    let wmap = maps.tiled_f16(w.ptr(), &[k as u64, n as u64], &row, &bw)?;
    // The TMA-store epilogue: f16 output only, and no residual unless it is the output itself.
    let store = tma_store_enabled() && a.y32_ptr == 0 && (a.flags & LINEAR_TC_RESIDUAL == 0 || a.accumulate);
    let ymap = if store {
        maps.tiled_f16(a.y16_ptr, &[n as u64, m as u64], &[2 * n as u64], &[64, 64])?
    } else {
        0
    };
    let mut flags = a.flags;
    if store && a.accumulate {
        flags |= LINEAR_TMA_REDUCE;
    } else if !store && prefetch_enabled() {
        flags |= LINEAR_TMA_PREFETCH_RES;
    }
    let args = LinearTmaArgs {
        xmap,
        wmap,
        ymap,
        bias: a.b_ptr,
        res: a.r_ptr,
        y32: a.y32_ptr,
        y16: a.y16_ptr,
        m: m as u32,
        n: n as u32,
        k: k as u32,
        res_rows: a.r_rows as u32,
        flags,
        n_tiles: n_tiles as u32,
        total: total as u32,
        _pad: 0,
    };
    let (entry, lay) = match (store, flags & LINEAR_TC_GELU != 0) {
        (true, false) => ("linear_tma_store", LINEAR_TMA_STORE),
        (true, true) => ("linear_tma_store_gelu", LINEAR_TMA_STORE),
        (false, _) => ("linear_tma", LINEAR_TMA),
    };
    let grid = total.min(gpu.sm_count as usize) as u32;
    // SAFETY: each entry (linear_tma, linear_tma_store, linear_tma_store_gelu) takes one LinearTmaArgs by
    // value (the kernel crate's struct, so its layout is the kernel's). xmap is a map over x's m·k f16 ([M, K], row stride 2K bytes, box 64 x 128) and wmap over
    // w's n·k f16 ([N, K], box 64 x 128), both made just now (or earlier, for the same address, dims,
    // strides and box: the same bytes) from the live tensors, which outlive the launch in stream order; the
    // copy engine reads only inside them and zero-fills the rest of each box. ymap (only for
    // linear_tma_store, else 0) is a map over y16's m·n f16 ([M, N], row stride 2N bytes, box 64 x 64): the
    // TMA stores / reduce-adds write only inside it (clipping rows ≥ M, columns ≥ N); with
    // LINEAR_TMA_REDUCE the residual is y16 itself (res = y16, as `accumulate` set up). bias[0..n] is read only with
    // LINEAR_TC_BIAS, res[0..r_rows·n] (f32, or f16 with LINEAR_TC_RES_F16) only with LINEAR_TC_RESIDUAL
    // (r_rows ≥ 1, dividing m); y32/y16[0..m·n] are written only when non-null, rows < m and columns < n
    // (n even: paired stores stay inside rows and aligned). Sizes were checked against the tensors in
    // `check_args_for` and fit 31 bits; outputs are exclusive borrows distinct from the inputs. Block =
    // LINEAR_TMA_THREADS (2 consumer warpgroups + the producer warp, the roles the kernel assumes), smem
    // lay.smem ≤ 227 KB, the layout the entry was compiled for (opted in by `launch`), grid ≤ total, each
    // block striding over jobs.
    unsafe {
        gpu.launch(
            entry,
            (grid, 1, 1),
            (LINEAR_TMA_THREADS, 1, 1),
            lay.smem,
            kernel_args!(args),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_rules() {
        assert!(supports(512, 2048));
        assert!(supports(1536, 520));
        assert!(supports(8, 8));
        assert!(!supports(512, 12));
        assert!(!supports(0, 64));
        assert!(!supports(45, 64));
        assert_eq!(jobs(32768, 1536), (256 * 12, 12));
        assert_eq!(jobs(200, 136), (4, 2));
    }
}
