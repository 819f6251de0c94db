//! `linear_wg`: the `linear_tc` GEMM on Hopper warpgroup MMA (`wgmma.mma_async`, target `sm_90a`), for
//! many rows (host launcher: host/src/ops/linear_wg.rs; CPU reference: models::ops::linear).
//!
//! `y[m, n] = epilogue(Σ_k x[m, k] · w[n, k])`: x [M, K] f16 row-major, w [N, K] f16 row-major (both
//! K-major wgmma operands), f32 accumulation, and `linear_tc`'s epilogue (`linear_tc::Epilogue`: + bias,
//! tanh-form GELU, + residual f32/f16 with row broadcast, f32 and/or f16 stores; flags `LINEAR_TC_*`).
//!
//! Block: `LINEAR_WG_THREADS` = 2 warpgroups, output tile `LINEAR_WG_BM` x `LINEAR_WG_BN` = 128 x 128;
//! warpgroup g owns rows 64g .. 64g + 64 and all 128 columns (one `wgmma.m64n128k16` per k16 step, 64
//! f32 accumulators per thread). Grid (ceil(N / 128), ceil(M / 128)): consecutive blocks share x rows.
//!
//! Pipeline (`LINEAR_WG_STAGES` = S stages of BK = 64, every thread loads; no warp specialisation): each
//! stage holds the x tile [128][64] and the w tile [128][64] in the 128-byte-swizzle layout of
//! `device::wgmma` (16-byte chunk j of row r at `r·128 + ((j ^ (r % 8))·16)`, tile bases 1024-byte
//! aligned), written by `cp.async` (rows past M or N: src-size 0, zero fill). Iteration kt:
//! 1. `cp.async.wait_group(S - 3)`: this thread's copies of K tile kt have landed;
//!    `fence.proxy.async.shared::cta` makes them visible to the wgmma (async) proxy; barrier: everyone's
//!    are, and every warpgroup has passed iteration kt - 1's `wgmma.wait_group 1`, so the MMA batch of
//!    tile kt - 2 has retired in both warpgroups and its stage is free;
//! 2. load K tile kt + S - 2 into that stage ((kt + S - 2) % S = (kt - 2) % S), commit (possibly empty);
//! 3. `wgmma.fence`, four k16 MMAs on stage kt % S (descriptor start + 32 bytes per k16 step), commit,
//!    `wgmma.wait_group 1`: the batch of tile kt - 1 has retired, the batch of tile kt keeps running
//!    while the next iteration waits for its data.
//!
//! So two K tiles are in flight from global memory and one MMA batch overlaps the next barrier. Requires
//! K % 64 == 0 and K ≥ 64 and N % 8 == 0 (host-checked; M arbitrary).
use super::linear_tc::Epilogue;
use crate::device::mma::{cp_async_16, cp_async_commit, cp_async_wait_group};
use crate::device::unroll::unroll;
use crate::device::wgmma::{
    aligned_smem,
    self, fence_acc128, fence_acc64, mma_m64n128k16_f16, mma_m64n256k16_f16, smem_desc_sw128,
    splat128, splat64, sw128_offset, wait_acc128, wait_acc64, SW128_ATOM_BYTES, SW128_ROW_BYTES,
};
use crate::device::{block_idx_x, block_idx_y, sync_threads, thread_idx_x};
use crate::launch::{
    LINEAR_WG_BK, LINEAR_WG_BM, LINEAR_WG_BN, LINEAR_WG_SMEM_BYTES, LINEAR_WG_STAGES,
    LINEAR_WG_THREADS, WGMMA_PROBE_SMEM_BYTES, WGMMA_PROBE_THREADS,
};

const BM: u32 = LINEAR_WG_BM;
const BN: u32 = LINEAR_WG_BN;
const BK: u32 = LINEAR_WG_BK;
const STAGES: u32 = LINEAR_WG_STAGES;
const THREADS: u32 = LINEAR_WG_THREADS;
/// 16-byte chunks per tile row (BK f16 = 128 bytes).
const CHUNKS: u32 = BK * 2 / 16;
/// Rows one loader pass covers (thread t copies chunk t % CHUNKS of rows t / CHUNKS + ROW_STEP·i).
const ROW_STEP: u32 = THREADS / CHUNKS;
/// x-tile and w-tile rows each thread copies per stage.
const A_LOADS: u32 = BM / ROW_STEP;
const B_LOADS: u32 = BN / ROW_STEP;
const A_BYTES: u32 = BM * SW128_ROW_BYTES;
const B_BYTES: u32 = BN * SW128_ROW_BYTES;
const STAGE_BYTES: u32 = A_BYTES + B_BYTES;
/// Bytes of one warpgroup's 64 x-tile rows.
const WG_A_BYTES: u32 = 64 * SW128_ROW_BYTES;

const _: () = assert!(
    BM == 128
        && BN == 128
        && BK == 64
        && CHUNKS == 8
        && THREADS == 256
        && ROW_STEP == 32
        && A_LOADS == 4
        && B_LOADS == 4
        && STAGES >= 3
        && A_BYTES % SW128_ATOM_BYTES == 0
        && STAGE_BYTES % SW128_ATOM_BYTES == 0
        && LINEAR_WG_SMEM_BYTES == STAGES * STAGE_BYTES + SW128_ATOM_BYTES
);

/// y = epilogue(x · wᵀ) for x [M, K] f16, w [N, K] f16 on `wgmma`. Grid (ceil(N/128), ceil(M/128)),
/// block `LINEAR_WG_THREADS`, dynamic shared memory `LINEAR_WG_SMEM_BYTES`. Requires K % 64 == 0,
/// K ≥ 64, N % 8 == 0, M, N ≥ 1 and every size below 2^31 (host-checked). Arguments and epilogue as
/// `linear_tc`: `bias` [N] only with `LINEAR_TC_BIAS`, `res` ([res_rows, N], f32 or with
/// `LINEAR_TC_RES_F16` f16) only with `LINEAR_TC_RESIDUAL`; `y32` / `y16` [M, N] written when non-null.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn linear_wg(
    x: *const u16,
    w: *const u16,
    bias: *const f32,
    res: *const u8,
    y32: *mut f32,
    y16: *mut u16,
    m: u32,
    n: u32,
    k: u32,
    res_rows: u32,
    flags: u32,
) {
    crate::device::grid_dependency_wait();
    let t = thread_idx_x();
    let wg = t / 128;
    let n0 = block_idx_x() * BN;
    let m0 = block_idx_y() * BM;
    let ktiles = k / BK;
    let smem = aligned_smem();

    // Loader: chunk j of x rows r0 + 32i (i < 4) and w rows r0 + 32i (i < 4). Rows past M / N read
    // row 0 with src_size 0 (zero fill), so every source address stays inside the tensors. K % 64 == 0:
    // every chunk lies inside K.
    let j = t % CHUNKS;
    let r0 = t / CHUNKS;
    let load = |stage: u32, kt: u32| {
        let base = smem + stage * STAGE_BYTES;
        let koff = (kt * BK + j * 8) as usize;
        unroll!(4, |i| {
            let row = r0 + ROW_STEP * i as u32;
            let ok = m0 + row < m;
            let src = if ok {
                x.add((m0 + row) as usize * k as usize + koff)
            } else {
                x
            };
            cp_async_16(
                base + sw128_offset(row, j),
                src as *const u8,
                if ok { 16 } else { 0 },
            );
        });
        unroll!(4, |i| {
            let row = r0 + ROW_STEP * i as u32;
            let ok = n0 + row < n;
            let src = if ok {
                w.add((n0 + row) as usize * k as usize + koff)
            } else {
                w
            };
            cp_async_16(
                base + A_BYTES + sw128_offset(row, j),
                src as *const u8,
                if ok { 16 } else { 0 },
            );
        });
    };

    // Prologue: K tiles 0 .. S - 2 (one commit group each, possibly empty).
    for s in 0..STAGES - 2 {
        if s < ktiles {
            load(s, s);
        }
        cp_async_commit();
    }

    let mut acc = splat64(0.0);
    let mut kt = 0;
    while kt < ktiles {
        // Groups committed so far: S - 2 + kt, group g holding K tile g; tile kt landed when at most
        // S - 3 are pending.
        cp_async_wait_group::<{ STAGES - 3 }>();
        wgmma::fence_proxy_async_shared();
        sync_threads();
        let next = kt + STAGES - 2;
        if next < ktiles {
            load(next % STAGES, next);
        }
        cp_async_commit();

        let a_base = smem + (kt % STAGES) * STAGE_BYTES + wg * WG_A_BYTES;
        let b_base = smem + (kt % STAGES) * STAGE_BYTES + A_BYTES;
        fence_acc64(&mut acc);
        unroll!(4, |s| {
            let off = 32 * s as u32;
            mma_m64n128k16_f16(
                &mut acc,
                smem_desc_sw128(a_base + off),
                smem_desc_sw128(b_base + off),
                true,
            );
        });
        wgmma::commit_group();
        wgmma::wait_group::<1>();
        kt += 1;
    }
    wait_acc64::<0>(&mut acc);
    // Drain the (empty) trailing cp.async groups before the block exits.
    cp_async_wait_group::<0>();

    // Epilogue (accumulator layout of `device::wgmma`): warp wq of the warpgroup, lane l: rows
    // 16 wq + l/4 (+ 8), columns 8i + 2(l % 4) (+ 1) of n8 block i.
    let lane = t % 32;
    let wq = (t / 32) % 4;
    let ep = Epilogue {
        bias,
        res,
        y32,
        y16,
        n,
        res_rows,
        flags,
    };
    let row0 = m0 + wg * 64 + wq * 16 + lane / 4;
    let col0 = n0 + (lane % 4) * 2;
    unroll!(2, |half| {
        let row = row0 + 8 * half as u32;
        if row < m {
            let (out, rrow) = ep.row(row);
            unroll!(2, |ia| {
                unroll!(8, |ib| {
                    let i = ia * 8 + ib;
                    ep.pair(
                        out,
                        rrow,
                        col0 + 8 * i as u32,
                        [acc[4 * i + 2 * half], acc[4 * i + 2 * half + 1]],
                    );
                });
            });
        }
    });
}

/// Layout probe for one warpgroup MMA (isolates descriptor / swizzle / fragment mistakes from the
/// pipeline of `linear_wg`): `d[64][n] = a[64][k] · b[n][k]ᵀ` for n ∈ {128, 256} and k ∈ {16, 32, 48,
/// 64} (host-checked), f16 inputs row-major, f32 output row-major. One block of `WGMMA_PROBE_THREADS`
/// (one warpgroup), dynamic shared memory `WGMMA_PROBE_SMEM_BYTES`. The tiles are staged exactly as in
/// `linear_wg` (cp.async into the 128B-swizzled layout, K beyond k zero-filled), then k / 16 MMAs with
/// the descriptor start advanced by 32 bytes per step; the first uses scale-d = false over accumulators
/// preset to 1e30, so a wrong scale-d shows. The result is stored straight from the accumulator
/// fragments in the documented layout.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn wgmma_probe(
    a: *const u16,
    b: *const u16,
    d: *mut f32,
    n: u32,
    k: u32,
) {
    crate::device::grid_dependency_wait();
    const _: () = assert!(WGMMA_PROBE_THREADS == 128 && WGMMA_PROBE_SMEM_BYTES == 320 * 128 + 1024);
    let t = thread_idx_x();
    let smem = aligned_smem();
    let b_smem = smem + 64 * SW128_ROW_BYTES;
    let j = t % CHUNKS;
    let kin = j * 8 < k;
    let koff = if kin { (j * 8) as usize } else { 0 };
    let size = if kin { 16 } else { 0 };
    // 128 threads: rows t/8 + 16i.
    let mut row = t / CHUNKS;
    while row < 64 {
        let src = if kin {
            a.add(row as usize * k as usize + koff)
        } else {
            a
        };
        cp_async_16(smem + sw128_offset(row, j), src as *const u8, size);
        row += 16;
    }
    let mut row = t / CHUNKS;
    while row < n {
        let src = if kin {
            b.add(row as usize * k as usize + koff)
        } else {
            b
        };
        cp_async_16(b_smem + sw128_offset(row, j), src as *const u8, size);
        row += 16;
    }
    cp_async_commit();
    cp_async_wait_group::<0>();
    wgmma::fence_proxy_async_shared();
    sync_threads();

    let lane = t % 32;
    let row0 = (t / 32) * 16 + lane / 4;
    let col0 = (lane % 4) * 2;
    let steps = k / 16;
    let store = |i: usize, half: usize, v0: f32, v1: f32| {
        let p =
            d.add((row0 + 8 * half as u32) as usize * n as usize + (col0 + 8 * i as u32) as usize);
        *p = v0;
        *p.add(1) = v1;
    };
    if n == 256 {
        let mut acc = splat128(1e30);
        fence_acc128(&mut acc);
        let mut s = 0;
        while s < steps {
            mma_m64n256k16_f16(
                &mut acc,
                smem_desc_sw128(smem + 32 * s),
                smem_desc_sw128(b_smem + 32 * s),
                s > 0,
            );
            s += 1;
        }
        wgmma::commit_group();
        wait_acc128::<0>(&mut acc);
        unroll!(4, |ia| {
            unroll!(8, |ib| {
                let i = ia * 8 + ib;
                unroll!(2, |half| {
                    store(i, half, acc[4 * i + 2 * half], acc[4 * i + 2 * half + 1]);
                });
            });
        });
    } else {
        let mut acc = splat64(1e30);
        fence_acc64(&mut acc);
        let mut s = 0;
        while s < steps {
            mma_m64n128k16_f16(
                &mut acc,
                smem_desc_sw128(smem + 32 * s),
                smem_desc_sw128(b_smem + 32 * s),
                s > 0,
            );
            s += 1;
        }
        wgmma::commit_group();
        wait_acc64::<0>(&mut acc);
        unroll!(2, |ia| {
            unroll!(8, |ib| {
                let i = ia * 8 + ib;
                unroll!(2, |half| {
                    store(i, half, acc[4 * i + 2 * half], acc[4 * i + 2 * half + 1]);
                });
            });
        });
    }
}

/// Tensor-pipe ceiling probe (a benchmark, not a layer): `iters` stages of back-to-back `wgmma` from
/// shared memory that is never refilled (no copies, no barriers but the accumulator fences), so its
/// rate is what the issue pattern and the shared-memory operand reads allow. Per stage (4 k16 steps of a
/// 64-wide K slice; stages cycle over `WGMMA_PEAK_STAGES` slots of A [128][64] + B [256][64], zeroed):
/// * `mode` 0: two `m64n128k16` per k16 sharing one B tile (rows 0..64 and 64..128 of A): the 128 x 128
///   warpgroup tile of `conv2d_tma_pp` / `linear_tma`;
/// * `mode` 1: one `m64n256k16` per k16: a 64 x 256 tile;
/// * `mode` 2: two `m64n128k16` per k16 sharing one A tile (B rows 0..128 and 128..256): the same 64 x
///   256 tile from the narrower instruction.
///
/// Then `wait_group 1` per stage, as the pipelines do. Warpgroups `< active` run (1: can one warpgroup
/// keep the tensor pipe busy, as the ping-pong schedule needs; 2: both at once). Writes one f32 per
/// thread (the accumulator sum, so nothing is dead) to `out[block · 256 + thread]`. Block
/// `WGMMA_PEAK_THREADS`, dynamic shared memory `WGMMA_PEAK_SMEM_BYTES`.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn wgmma_peak(out: *mut f32, iters: u32, mode: u32, active: u32) {
    use crate::launch::{WGMMA_PEAK_STAGES, WGMMA_PEAK_STAGE_BYTES, WGMMA_PEAK_THREADS};
    const _: () = assert!(WGMMA_PEAK_THREADS == 256 && WGMMA_PEAK_STAGE_BYTES == (128 + 256) * 128);
    crate::device::grid_dependency_wait();
    let t = thread_idx_x();
    let smem = aligned_smem();
    let mut a = t * 16;
    while a < WGMMA_PEAK_STAGES * WGMMA_PEAK_STAGE_BYTES {
        crate::device::shared::st_v2_f32(smem + a, 0.0, 0.0);
        crate::device::shared::st_v2_f32(smem + a + 8, 0.0, 0.0);
        a += WGMMA_PEAK_THREADS * 16;
    }
    wgmma::fence_proxy_async_shared();
    sync_threads();
    let wg = t / 128;
    let mut acc0 = splat64(0.0);
    let mut acc1 = splat64(0.0);
    let mut sum = 0.0f32;
    if wg < active {
        if mode == 1 {
            let mut acc = splat128(0.0);
            let mut it = 0;
            while it < iters {
                let base = smem + (it % WGMMA_PEAK_STAGES) * WGMMA_PEAK_STAGE_BYTES;
                fence_acc128(&mut acc);
                unroll!(4, |s| {
                    let off = 32 * s as u32;
                    mma_m64n256k16_f16(&mut acc, smem_desc_sw128(base + off), smem_desc_sw128(base + 128 * SW128_ROW_BYTES + off), true);
                });
                wgmma::commit_group();
                wait_acc128::<1>(&mut acc);
                it += 1;
            }
            wait_acc128::<0>(&mut acc);
            unroll!(2, |h| {
                unroll!(8, |i| {
                    unroll!(8, |j| {
                        sum += acc[64 * h + 8 * i + j];
                    });
                });
            });
        } else {
            let mut it = 0;
            while it < iters {
                let base = smem + (it % WGMMA_PEAK_STAGES) * WGMMA_PEAK_STAGE_BYTES;
                let b_base = base + 128 * SW128_ROW_BYTES;
                fence_acc64(&mut acc0);
                fence_acc64(&mut acc1);
                unroll!(4, |s| {
                    let off = 32 * s as u32;
                    if mode == 0 {
                        let b = smem_desc_sw128(b_base + off);
                        mma_m64n128k16_f16(&mut acc0, smem_desc_sw128(base + off), b, true);
                        mma_m64n128k16_f16(&mut acc1, smem_desc_sw128(base + 64 * SW128_ROW_BYTES + off), b, true);
                    } else {
                        let a = smem_desc_sw128(base + off);
                        mma_m64n128k16_f16(&mut acc0, a, smem_desc_sw128(b_base + off), true);
                        mma_m64n128k16_f16(&mut acc1, a, smem_desc_sw128(b_base + 128 * SW128_ROW_BYTES + off), true);
                    }
                });
                wgmma::commit_group();
                wgmma::wait_group::<1>();
                it += 1;
            }
            wait_acc64::<0>(&mut acc0);
            wait_acc64::<0>(&mut acc1);
            unroll!(8, |i| {
                unroll!(8, |j| {
                    sum += acc0[8 * i + j] + acc1[8 * i + j];
                });
            });
        }
    }
    *out.add((block_idx_x() * WGMMA_PEAK_THREADS + t) as usize) = sum;
}
