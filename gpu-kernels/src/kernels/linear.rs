//! `linear` kernels (see host/src/ops/linear.rs for the launcher, models::ops::linear for the CPU reference).
//!
//! fp32 tiled GEMM `y[m, n] = epilogue(Σ_k x[m, k] · w[n, k])` (`F.linear`: w is [N, K], row-major):
//! 64 x 64 output tile per block, 256 threads in a 16 x 16 grid, each computing a 4 x 4 micro-tile
//! (rows `ty*4..`, columns `tx*4..`); K is staged 16 at a time through two shared-memory stages, both
//! operands stored transposed (`[k][row]`, rows padded to 68 floats) so the inner loop does two 16-byte
//! shared loads per 16 FMAs. The next K slice is fetched into registers while the current one is used.
//! Every global access is guarded, so any M, N, K work. Epilogue (flags from `launch.rs`): + bias, exact
//! GELU, + residual (row `m % res_rows` of a contiguous [res_rows, N] tensor; res_rows = M for a plain add,
//! smaller to broadcast e.g. positional embeddings over the batch).
use crate::device::unroll::unroll;
use crate::device::{block_idx_x, block_idx_y, math, shared, smem_vec, sync_threads, thread_idx_x};
use crate::launch::{
    LINEAR_BIAS, LINEAR_BK, LINEAR_BM, LINEAR_BN, LINEAR_GELU, LINEAR_LDS, LINEAR_RESIDUAL,
    LINEAR_THREADS,
};

const BM: usize = LINEAR_BM as usize;
const BN: usize = LINEAR_BN as usize;
const BK: usize = LINEAR_BK as usize;
const LDS: usize = LINEAR_LDS as usize;
const THREADS: usize = LINEAR_THREADS as usize;
/// Rows of a tile that one loader pass covers (each thread loads one k column of `LOADS` rows).
const ROW_STEP: usize = THREADS / BK;
const LOADS: usize = BM / ROW_STEP;
/// Floats per stage: the x tile [BK][LDS] then the w tile [BK][LDS].
const STAGE: usize = 2 * BK * LDS;

const _: () =
    assert!(BM == BN && BM == 16 * 4 && THREADS == 256 && BM % ROW_STEP == 0 && LDS % 4 == 0);

/// Loads the K slice starting at `k0` of the x rows `m0..m0+BM` and w rows `n0..n0+BN` into registers
/// (zero outside the matrices).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fetch(
    x: *const f32,
    w: *const f32,
    m: usize,
    n: usize,
    kd: usize,
    ldx: usize,
    m0: usize,
    n0: usize,
    k0: usize,
    lk: usize,
    lr: usize,
    xr: &mut [f32; LOADS],
    wr: &mut [f32; LOADS],
) {
    let kk = k0 + lk;
    for e in 0..LOADS {
        let r = lr + ROW_STEP * e;
        xr[e] = if m0 + r < m && kk < kd {
            *x.add((m0 + r) * ldx + kk)
        } else {
            0.0
        };
        wr[e] = if n0 + r < n && kk < kd {
            *w.add((n0 + r) * kd + kk)
        } else {
            0.0
        };
    }
}

/// Stores the fetched registers transposed into shared stage `stage`.
#[inline(always)]
unsafe fn store(
    smem: u32,
    stage: usize,
    lk: usize,
    lr: usize,
    xr: &[f32; LOADS],
    wr: &[f32; LOADS],
) {
    let xs = stage * STAGE + lk * LDS;
    let ws = xs + BK * LDS;
    for e in 0..LOADS {
        let r = lr + ROW_STEP * e;
        shared::st_f32(smem + ((xs + r) * 4) as u32, xr[e]);
        shared::st_f32(smem + ((ws + r) * 4) as u32, wr[e]);
    }
}

/// `y[m*ldy + n] = epilogue(Σ_k x[m*ldx + k] · w[n*k_dim + k])` for m < M, n < N.
/// Grid (ceil(N/64), ceil(M/64)), block 256, dynamic shared memory `LINEAR_SMEM_BYTES`.
/// `bias` [N] is read only with `LINEAR_BIAS`, `res` [res_rows, N] only with `LINEAR_RESIDUAL` (res_rows ≥ 1).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn linear(
    x: *const f32,
    w: *const f32,
    bias: *const f32,
    res: *const f32,
    y: *mut f32,
    m: u32,
    n: u32,
    k_dim: u32,
    ldx: u32,
    ldy: u32,
    res_rows: u32,
    flags: u32,
) {
    crate::device::grid_dependency_wait();
    let (m, n, kd, ldx, ldy) = (
        m as usize,
        n as usize,
        k_dim as usize,
        ldx as usize,
        ldy as usize,
    );
    let t = thread_idx_x() as usize;
    let (tx, ty) = (t % 16, t / 16);
    let m0 = block_idx_y() as usize * BM;
    let n0 = block_idx_x() as usize * BN;
    let (lk, lr) = (t % BK, t / BK);
    let smem = shared::dynamic_smem_addr();

    let mut xr = [0f32; LOADS];
    let mut wr = [0f32; LOADS];
    let ntiles = kd.div_ceil(BK);
    fetch(x, w, m, n, kd, ldx, m0, n0, 0, lk, lr, &mut xr, &mut wr);
    store(smem, 0, lk, lr, &xr, &wr);
    sync_threads();

    let mut acc = [[0f32; 4]; 4];
    for tile in 0..ntiles {
        let stage = tile & 1;
        let more = tile + 1 < ntiles;
        if more {
            fetch(
                x,
                w,
                m,
                n,
                kd,
                ldx,
                m0,
                n0,
                (tile + 1) * BK,
                lk,
                lr,
                &mut xr,
                &mut wr,
            );
        }
        let xs = smem + (stage * STAGE * 4) as u32;
        let ws = xs + (BK * LDS * 4) as u32;
        for kk in 0..BK {
            let a = smem_vec::ld_v4(xs + ((kk * LDS + ty * 4) * 4) as u32);
            let b = smem_vec::ld_v4(ws + ((kk * LDS + tx * 4) * 4) as u32);
            unroll!(4, |i| {
                unroll!(4, |j| {
                    acc[i][j] = math::fma(a[i], b[j], acc[i][j]);
                });
            });
        }
        // The other stage was last read before the previous iteration's barrier: safe to overwrite.
        if more {
            store(smem, stage ^ 1, lk, lr, &xr, &wr);
        }
        sync_threads();
    }

    let res_rows = res_rows as usize;
    unroll!(4, |i| {
        let row = m0 + ty * 4 + i;
        unroll!(4, |j| {
            let col = n0 + tx * 4 + j;
            if row < m && col < n {
                let mut v = acc[i][j];
                if flags & LINEAR_BIAS != 0 {
                    v += *bias.add(col);
                }
                if flags & LINEAR_GELU != 0 {
                    v = math::gelu_erf(v);
                }
                if flags & LINEAR_RESIDUAL != 0 {
                    v += *res.add((row % res_rows) * n + col);
                }
                *y.add(row * ldy + col) = v;
            }
        });
    });
}
