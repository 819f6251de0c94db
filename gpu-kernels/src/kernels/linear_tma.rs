//! `linear_tma`: the `linear_tc` GEMM as a TMA-fed, warp-specialised, persistent ping-pong `wgmma` kernel
//! (host launcher: host/src/ops/linear_tma.rs; CPU reference: models::ops::linear). Target `sm_90a`.
//!
//! `y[m, n] = epilogue(Σ_k x[m, k] · w[n, k])`: x [M, K] f16 row-major, w [N, K] f16 row-major (both
//! K-major wgmma operands), f32 accumulation, and `linear_tc`'s epilogue (`linear_tc::Epilogue`: + bias,
//! tanh-form GELU (here through `tanh.approx`: `math::gelu_tanh_hw`), + residual f32/f16 with row broadcast, f32 and/or f16 stores; flags `LINEAR_TC_*`).
//!
//! # Roles (block = 2 consumer warpgroups + 1 producer warp, one block per SM, `LINEAR_TMA_THREADS`)
//! * Jobs: 128 x 128 output tiles, job j = row tile j / n_tiles, column tile j % n_tiles (consecutive jobs
//!   share x rows); block b takes jobs b, b + gridDim.x, ...
//! * Producer (the last warp, one lane): per job and K step (ceil(K / 64) of them), waits until the ring's
//!   next stage is empty, arms its "full" mbarrier with 32 KB and issues two 2-D bulk tensor copies: the x
//!   box (64 K x 128 rows) and the w box (64 K x 128 rows), 128-byte swizzled (`device::wgmma`'s layout).
//!   Rows past M or N and K past K are zero-filled by the copy engine (and still counted in the bytes),
//!   so the tails need no code: zero products.
//! * Consumers: `device::pingpong` (job i to warpgroup i % 2, the "order" mbarrier, two
//!   `wgmma.m64n128k16` per k16 step), then the epilogue straight from the accumulators, as `linear_wg`'s:
//!   warp wq, lane l holds rows 64h + 16wq + l/4 (+ 8) of accumulator h, columns 8i + 2(l % 4) (+ 1);
//!   rows ≥ M and columns ≥ N are skipped. While one warpgroup runs its epilogue the other's MMAs run.
//! * `linear_tma_store` (f16 output only, no residual or the output itself as residual) runs
//!   `epilogue_tma` instead: bias and GELU in registers, f16 pairs into 128-byte swizzled boxes in shared memory,
//!   then one thread's TMA stores (or, with `LINEAR_TMA_REDUCE`, TMA reduce-adds into y16: the residual add
//!   happens in L2). No global load or store waits in the warpgroup; its only waits are the two barriers
//!   per half and, before a half's boxes are rewritten, the bulk read of the previous job's same half.
/// Four f16 (two pairs) as one 8-byte vector.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct H4([u32; 2]);
use crate::device::math::gelu_tanh_hw;
use crate::device::mma::{pack_f16x2, unpack_f16x2};
use crate::device::pingpong::{self, PingPongRing, RingPos, StageRing};
use crate::device::shared::{ld_v4_f32, st_u32};
use crate::device::tma::{
    arrive_expect_tx, bulk_commit_group, bulk_wait_group, bulk_wait_group_read, load_2d, named_barrier, prefetch_map, reduce_add_2d,
    store_2d, wait_parity,
};
use crate::device::wgmma::fence_proxy_async_shared;
use crate::device::unroll::unroll;
use crate::device::wgmma::aligned_smem;
use crate::device::{block_idx_x, grid_dim_x, thread_idx_x, F32x4};
use crate::launch::{
    LinearTmaArgs, LinearTmaLayout, LINEAR_TC_BIAS, LINEAR_TC_GELU, LINEAR_TC_RESIDUAL, LINEAR_TC_RES_F16, LINEAR_TMA, LINEAR_TMA_BK, LINEAR_TMA_BM,
    LINEAR_TMA_BN, LINEAR_TMA_HALF_F16, LINEAR_TMA_PREFETCH_RES, LINEAR_TMA_REDUCE, LINEAR_TMA_SROW, LINEAR_TMA_STAGE_BYTES, LINEAR_TMA_STORE,
    LINEAR_TMA_THREADS,
};

const BM: u32 = LINEAR_TMA_BM;
const BN: u32 = LINEAR_TMA_BN;
const BK: u32 = LINEAR_TMA_BK;
const SROW: u32 = LINEAR_TMA_SROW;

const _: () = assert!(
    BM == 128
        && BN == 128
        && BK == 64
        && LINEAR_TMA_THREADS == 2 * 128 + 32
        && LINEAR_TMA_STAGE_BYTES == pingpong::A_BYTES + BN * 128
);

/// y = epilogue(x · wᵀ) for x [M, K] f16, w [N, K] f16 (`args`: `LinearTmaArgs`). Block
/// `LINEAR_TMA_THREADS`, dynamic shared memory `LINEAR_TMA.smem`, grid (≤ total, 1, 1). Requires
/// (host-checked): K % 8 == 0, N % 8 == 0, M, N, K ≥ 1, every size below 2^31; the maps as
/// `LinearTmaArgs` says. Shared memory laid out as `LINEAR_TMA` (`LinearTmaLayout`).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn linear_tma(args: LinearTmaArgs) {
    linear_tma_body::<false, false>(args, LINEAR_TMA);
}

/// `linear_tma` with the TMA-store epilogue (`epilogue_tma`): y16 only (y32 = 0), no residual, or with
/// `LINEAR_TMA_REDUCE` y16 += the result (the residual is y16 itself). `args.ymap` is a map over y16
/// ([M, N] f16, box 64 x 64, 128-byte swizzle). Shared memory as `LINEAR_TMA_STORE`. Otherwise as
/// [`linear_tma`]. A separate entry: with both epilogues in one kernel ptxas spilled 5.6 KB at 168 registers.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn linear_tma_store(args: LinearTmaArgs) {
    linear_tma_body::<true, false>(args, LINEAR_TMA_STORE);
}

/// [`linear_tma_store`] with GELU (`LINEAR_TC_GELU` in `args.flags`). GELU is a compile-time choice of
/// the entry: as a runtime flag inside the unrolled epilogue it cost every element pair a branch.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn linear_tma_store_gelu(args: LinearTmaArgs) {
    linear_tma_body::<true, true>(args, LINEAR_TMA_STORE);
}

/// The body of the entries; `STORE` picks the epilogue, `lay` (a constant) the shared-memory layout.
///
/// # Safety
/// As [`linear_tma`] / [`linear_tma_store`], launched with `lay.smem` bytes of dynamic shared memory.
#[inline(always)]
unsafe fn linear_tma_body<const STORE: bool, const GELU: bool>(args: LinearTmaArgs, lay: LinearTmaLayout) {
    let stages = lay.stages;
    let LinearTmaArgs { k, n_tiles, total, .. } = args;
    let (xmap, wmap) = (args.xmap as *const u8, args.wmap as *const u8);
    crate::device::grid_dependency_wait();
    let t = thread_idx_x();
    let warp = t / 32;
    let lane = t % 32;
    let smem = aligned_smem();
    let full = smem + lay.bars;
    let steps = StageRing { base: smem, full, empty: full + stages * 8, stages, stage_bytes: LINEAR_TMA_STAGE_BYTES };
    let ring = PingPongRing { steps, order: full + 2 * stages * 8 };
    pingpong::init(&ring);
    let ktiles = k.div_ceil(BK);

    if warp == 8 {
        if lane == 0 {
            prefetch_map(xmap);
            prefetch_map(wmap);
            let mut pos = RingPos::at(0, stages);
            let mut job = block_idx_x();
            while job < total {
                let mt = job / n_tiles;
                let nt = job - mt * n_tiles;
                let mut kt = 0;
                while kt < ktiles {
                    wait_parity(steps.empty + 8 * pos.stage, pos.phase ^ 1);
                    let bar = steps.full + 8 * pos.stage;
                    arrive_expect_tx(bar, LINEAR_TMA_STAGE_BYTES);
                    let dst = smem + pos.stage * LINEAR_TMA_STAGE_BYTES;
                    let k0 = (kt * BK) as i32;
                    load_2d(dst, xmap, k0, (mt * BM) as i32, bar);
                    load_2d(dst + pingpong::A_BYTES, wmap, k0, (nt * BN) as i32, bar);
                    pos.advance(stages);
                    kt += 1;
                }
                job += grid_dim_x();
            }
        }
        return;
    }

    // Consumers: warpgroup wg, thread tw of it.
    let wg = warp / 4;
    let tw = t % 128;
    let stg = smem + lay.staging + wg * lay.staging_bytes;
    let mut i = wg;
    let mut job = block_idx_x() + wg * grid_dim_x();
    while job < total {
        let mt = job / n_tiles;
        let nt = job - mt * n_tiles;
        if !STORE && args.flags & (LINEAR_TC_RESIDUAL | LINEAR_TMA_PREFETCH_RES) == LINEAR_TC_RESIDUAL | LINEAR_TMA_PREFETCH_RES {
            prefetch_residual(&args, tw, mt * BM, nt * BN);
        }
        let mut acc0 = [0f32; 64];
        let mut acc1 = [0f32; 64];
        pingpong::mainloop(&ring, i, ktiles, tw, lane, &mut acc0, &mut acc1);

        if STORE {
            epilogue_tma::<GELU>(&args, stg, 1 + wg, tw, mt * BM, nt * BN, &acc0, &acc1);
        } else {
            epilogue(&args, stg, 1 + wg, tw, mt * BM, nt * BN, &acc0, &acc1);
        }
        i += 2;
        job += 2 * grid_dim_x();
    }
    if STORE && tw == 0 {
        // The stores' global writes are performed (and their shared sources read) before the block exits.
        bulk_wait_group::<0>();
    }
}

/// `epilogue_tma`'s staging: the f16 pair (row `r` < 64, columns `8i + 2q`, `8i + 2q + 1`) of a half's tile,
/// i < 16, q < 4, lies in column box i / 8 (8 KB, rows of 128 bytes) at 16-byte chunk (i % 8) ^ (r % 8) of
/// its row (the 128-byte swizzle the map's TMA store undoes). With `base` = `swizzle_base(buf, r, q)` (the
/// pair's address for i = 0, r % 8 folded into the chunk bits 4-6) that is
/// `(base ^ 16·(i % 8)) + 8192·(i / 8)`: one XOR with an immediate per store (computing every i's address
/// up front cost ptxas 13 registers and spilled).
#[inline(always)]
fn swizzle_base(buf: u32, r: u32, q: u32) -> u32 {
    buf + r * 128 + (r % 8) * 16 + 4 * q
}

/// The epilogue of one job through TMA stores (`linear_tma_store`): for each 64-row half (accumulator h)
/// thread 0 first waits until the bulk store that last read the half's buffer (the previous job's same
/// half) has read it, a barrier passes that on; each thread adds the bias to its pairs (rows
/// 16wq + l/4 (+ 8), columns 8i + 2(l % 4) (+ 1)), applies GELU, and writes the f16 pairs to the half's two
/// swizzled boxes (`swizzle_base`: the 8 rows of a warp's store land on 8 different chunks, so its 32
/// words hit 32 banks); fence.proxy.async and a barrier publish them; thread 0 issues the two boxes' TMA
/// stores (reduce-adds with `LINEAR_TMA_REDUCE`) and commits them as one bulk group. Rows ≥ M and
/// columns ≥ N are clipped by the copy engine; bias columns ≥ N are not read.
///
/// # Safety
/// All 128 threads of the warpgroup call it convergently; `stg` is the warpgroup's own 1024-byte aligned
/// staging area (two halves of `LINEAR_TMA_HALF_F16`); `args.ymap` is a map over y16 [M, N] f16 with box 64 x 64 and 128-byte swizzle;
/// thread `tw` 0 is the only one issuing bulk stores of the warpgroup.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn epilogue_tma<const GELU: bool>(args: &LinearTmaArgs, stg: u32, bar_id: u32, tw: u32, row0: u32, col0: u32, acc0: &[f32; 64], acc1: &[f32; 64]) {
    let LinearTmaArgs { n, flags, .. } = *args;
    let (warp, lane) = (tw / 32, tw % 32);
    let q = lane % 4;
    let r = warp * 16 + lane / 4;
    let ymap = args.ymap as *const u8;
    // Row r + 8 has the same r % 8: its pairs lie 8 rows (1024 bytes) further.
    unroll!(2, |h| {
        let acc = if h == 0 { acc0 } else { acc1 };
        let buf = stg + h as u32 * LINEAR_TMA_HALF_F16;
        let base = swizzle_base(buf, r, q);
        if tw == 0 {
            // Groups are committed per half, half h from buffer h: the other half's group may stay in
            // flight (one buffer and 6 ring stages instead of two and 5 was slower, run 96).
            bulk_wait_group_read::<1>();
        }
        named_barrier(bar_id, 128);
        unroll!(4, |g| {
            // Four n8 blocks (i = 4g .. 4g + 4, all in column box g / 2) at a time: their biases are loaded
            // together (pure `ld.global.nc.v2` asm, unconditional, so the loads overlap and need no branch),
            // and four at a time, not eight, fit ptxas's 168 registers without spilling.
            let mut bias = [[0f32; 2]; 4];
            if flags & LINEAR_TC_BIAS != 0 {
                unroll!(4, |ii| {
                    // Branch-free: columns ≥ N read pair 0 (in bounds) and add 0.
                    let c = col0 + 8 * (4 * g + ii) as u32 + 2 * q;
                    let ok = c < n;
                    let b = crate::device::ld_global_nc_v2_f32((args.bias as *const f32).add(if ok { c as usize } else { 0 }));
                    bias[ii] = if ok { b } else { [0.0; 2] };
                });
            }
            unroll!(4, |ii| {
                let i = 4 * g + ii;
                unroll!(2, |half8| {
                    let mut v = [acc[4 * i + 2 * half8] + bias[ii][0], acc[4 * i + 2 * half8 + 1] + bias[ii][1]];
                    if GELU {
                        v = v.map(gelu_tanh_hw);
                    }
                    let addr = (base ^ (16 * (i % 8) as u32)) + 8192 * (i / 8) as u32 + 1024 * half8 as u32;
                    st_u32(addr, pack_f16x2(v[0], v[1]));
                });
            });
        });
        fence_proxy_async_shared();
        named_barrier(bar_id, 128);
        if tw == 0 {
            let y0 = (row0 + 64 * h as u32) as i32;
            unroll!(2, |bx| {
                let (x0, src) = ((col0 + 64 * bx as u32) as i32, buf + 8192 * bx as u32);
                if flags & LINEAR_TMA_REDUCE != 0 {
                    reduce_add_2d(ymap, x0, y0, src);
                } else {
                    store_2d(ymap, x0, y0, src);
                }
            });
            bulk_commit_group();
        }
    });
}

/// L2 prefetch of one job's residual tile (rows `row0` .. + 128 that are < M, read as row `row % res_rows`;
/// columns `col0` .. + 128 that are < N): its 128-byte lines, spread over the warpgroup's 128 threads
/// (thread tw takes lines tw, tw + 128, ...). The job's main loop runs meanwhile.
///
/// # Safety
/// The pointers of `args` as `linear_tma`'s contract says (only in-bounds addresses are named).
#[inline(always)]
unsafe fn prefetch_residual(args: &LinearTmaArgs, tw: u32, row0: u32, col0: u32) {
    let LinearTmaArgs { m, n, res_rows, flags, .. } = *args;
    let elem = if flags & LINEAR_TC_RES_F16 != 0 { 2 } else { 4 };
    let per_line = 128 / elem; // columns per 128-byte line
    let lines_per_row = BN / per_line;
    let mut l = tw;
    while l < BM * lines_per_row {
        let row = row0 + l / lines_per_row;
        let col = col0 + (l % lines_per_row) * per_line;
        if row < m && col < n {
            let i = ((row % res_rows) * n + col) as usize;
            crate::device::prefetch_l2((args.res as *const u8).add(i * elem as usize));
        }
        l += 128;
    }
}

/// The epilogue of one job: each 64-row half (accumulator h) goes to the warpgroup's f32 staging tile `stg`,
/// then the warpgroup stores it row by row: thread tw takes columns 4j .. 4j + 4 (j = tw % 32) of rows
/// tw / 32 + 4p (p in 0..16), so each warp writes whole 512-byte (f32) or 256-byte (f16) row segments.
/// + bias (4 floats per thread, loaded once), tanh-form GELU, + residual row `row % res_rows`, then f32 and/or
/// f16 stores, as `linear_tc`'s epilogue. The residual loads are batched ahead of the stores (an f16
/// residual's 16 rows of a half at once, before the half's barrier; an f32 residual's 8 rows at a time):
/// the compiler may not move a load above a store through another pointer, and one at a time each global
/// load's latency would be paid in turn (run 57: a per-pair register epilogue made the GEMMs half as fast as
/// `linear_wg`; run 84: one batch of 16 f16 rows instead of two of 8, out+res 0.41 against 0.55 ms per 6). Rows ≥ M and columns ≥ N are not touched (N % 8 == 0: a 4-column chunk with its
/// first column < N is whole). Two named barriers (`bar_id`, the warpgroup's 128 threads) per half.
///
/// # Safety
/// All 128 threads of the warpgroup call it convergently; `stg` is the warpgroup's own staging tile; the
/// pointers of `args` as `linear_tma`'s contract says. `row0` = the job's first row, `col0` its first column.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn epilogue(args: &LinearTmaArgs, stg: u32, bar_id: u32, tw: u32, row0: u32, col0: u32, acc0: &[f32; 64], acc1: &[f32; 64]) {
    let LinearTmaArgs { m, n, res_rows, flags, .. } = *args;
    let (warp, lane) = (tw / 32, tw % 32);
    let j = tw % 32;
    let col = col0 + 4 * j;
    let col_ok = col < n;
    let mut bias = [0f32; 4];
    if flags & LINEAR_TC_BIAS != 0 && col_ok {
        bias = (*(args.bias as *const F32x4).add(col as usize / 4)).0;
    }
    let res_f16 = flags & LINEAR_TC_RES_F16 != 0;
    let res_on = flags & LINEAR_TC_RESIDUAL != 0;
    unroll!(2, |h| {
        let acc = if h == 0 { acc0 } else { acc1 };
        // Residual words: an f16 residual's 16 rows of this half (2 words each) are loaded all at once
        // after the staging (the accumulators it frees make room; ptxas caps this 9-warp kernel at 168
        // registers) and before the barrier, so one latency per half is exposed instead of two; an f32
        // residual's rows (4 words each) 8 at a time, batch by batch, in the same 32 registers.
        let mut r = [0u32; 32];
        let res_row = |p: u32| -> Option<usize> {
            let row = row0 + 64 * h as u32 + tw / 32 + 4 * p;
            (row < m && col_ok).then(|| ((row % res_rows) * n + col) as usize)
        };
        // Every read of the staging tile for the previous half came before the last barrier.
        pingpong::stage_acc(stg + ((warp * 16 + lane / 4) * SROW + (lane % 4) * 2) * 4, SROW * 4, acc);
        if res_on && res_f16 {
            unroll!(16, |p| {
                if let Some(i) = res_row(p as u32) {
                    let q = (*((args.res as *const u16).add(i) as *const H4)).0;
                    r[2 * p] = q[0];
                    r[2 * p + 1] = q[1];
                }
            });
        }
        named_barrier(bar_id, 128);
        unroll!(2, |batch| {
            if res_on && !res_f16 {
                unroll!(8, |q| {
                    if let Some(i) = res_row((8 * batch + q) as u32) {
                        let v = (*((args.res as *const f32).add(i) as *const F32x4)).0;
                        unroll!(4, |e| {
                            r[4 * q + e] = v[e].to_bits();
                        });
                    }
                });
            }
            unroll!(8, |q| {
                let p = 8 * batch + q;
                let rr = tw / 32 + 4 * p as u32;
                let row = row0 + 64 * h as u32 + rr;
                if row < m && col_ok {
                    let s = ld_v4_f32(stg + (rr * SROW + 4 * j) * 4);
                    let res = if res_f16 {
                        let (a, b) = (unpack_f16x2(r[2 * p]), unpack_f16x2(r[2 * p + 1]));
                        [a.0, a.1, b.0, b.1]
                    } else {
                        [0, 1, 2, 3].map(|e| f32::from_bits(r[4 * q + e]))
                    };
                    let mut v = [0f32; 4];
                    unroll!(4, |e| {
                        v[e] = s[e] + bias[e];
                        if flags & LINEAR_TC_GELU != 0 {
                            v[e] = gelu_tanh_hw(v[e]);
                        }
                        v[e] += res[e];
                    });
                    let i = (row * n + col) as usize;
                    if args.y32 != 0 {
                        *((args.y32 as *mut f32).add(i) as *mut F32x4) = F32x4(v);
                    }
                    if args.y16 != 0 {
                        *((args.y16 as *mut u16).add(i) as *mut H4) = H4([pack_f16x2(v[0], v[1]), pack_f16x2(v[2], v[3])]);
                    }
                }
            });
        });
        named_barrier(bar_id, 128);
    });
}
