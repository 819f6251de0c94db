//! `linear_tc` kernels (host launcher: host/src/ops/linear_tc.rs; CPU reference: models::ops::linear).
//!
//! `y[m, n] = epilogue(Σ_k x[m, k] · w[n, k])` on tensor cores: x [M, K] f16 row-major, w [N, K] f16
//! (PyTorch `Linear` layout: k contiguous, which is the "col" B operand of `mma.m16n8k16.row.col`, read
//! with plain `ldmatrix`), f32 accumulation. Epilogue (flags from `launch.rs`), in this order: + bias
//! (f32), tanh-form GELU (`math::gelu_tanh`), + residual (f32 or f16, row `m % res_rows` of a contiguous [res_rows, N]
//! tensor), then store to `y32` (f32) and/or `y16` (f16, round to nearest even, saturating), each
//! written only when its pointer is non-null.
//!
//! Block: `LINEAR_TC_THREADS` = 8 warps, a `LINEAR_TC_BM` x `LINEAR_TC_BN` = 128 x 128 output tile;
//! the warps form a 2 (m) x 4 (n) grid, each computing 64 x 32 (4 m-tiles x 4 n-tiles of m16n8k16).
//! Grid: (ceil(N / BN), ceil(M / BM)), so consecutive blocks share the same x rows (L2 reuse).
//! Each GEMM-K step of `BK` = 32 stages an x tile [128][32] and a w tile [128][32] in shared memory
//! through a `LINEAR_TC_STAGES`-deep cp.async pipeline (the one of `conv2d_tc`). A row is 64 bytes =
//! four 16-byte chunks; chunk `j` of row `row` lives at `row * 64 + ((j ^ ((row >> 1) & 3)) * 16)`, so
//! 8 consecutive rows of one chunk column hit 8 different bank groups (ldmatrix and cp.async are
//! conflict-free). K must be a multiple of 8 (host-checked), so a 16-byte chunk is either entirely
//! inside K or entirely past it (zero-filled). Rows past M (x) or N (w) are zero-filled and not stored.
//!
//! `linear_tc_small` (few rows, see its doc) computes the same thing with 64 x 32 tiles of 4 warps and
//! 64-wide K steps, optionally splitting K over `gridDim.z` with a last-block reduction through a
//! workspace; the host picks the kernel (`LinearTcPlan` in `launch.rs`). Both share `Epilogue`.
use crate::device::mma::{
    cp_async_16, cp_async_commit, cp_async_wait_group, ldmatrix_x4, mma_f16_16816, pack_f16x2,
    unpack_f16x2,
};
use crate::device::unroll::unroll;
use crate::device::{
    block_idx_x, block_idx_y, block_idx_z, grid_dim_x, grid_dim_z, math, shared, sync_threads,
    thread_idx_x,
};
use crate::launch::{
    LINEAR_TC_BIAS, LINEAR_TC_BK, LINEAR_TC_BM, LINEAR_TC_BN, LINEAR_TC_GELU, LINEAR_TC_RESIDUAL,
    LINEAR_TC_RES_F16, LINEAR_TC_STAGES, LINEAR_TC_S_BK, LINEAR_TC_S_BM, LINEAR_TC_S_BN,
    LINEAR_TC_S_PARTIAL, LINEAR_TC_S_SMEM_BYTES, LINEAR_TC_S_STAGES, LINEAR_TC_S_THREADS,
    LINEAR_TC_THREADS,
};
use core::arch::asm;

const BM: u32 = LINEAR_TC_BM;
const BN: u32 = LINEAR_TC_BN;
const BK: u32 = LINEAR_TC_BK;
const STAGES: u32 = LINEAR_TC_STAGES;
const THREADS: u32 = LINEAR_TC_THREADS;
/// Bytes of one shared-memory row (BK f16).
const ROW_BYTES: u32 = BK * 2;
/// 16-byte chunks per row.
const CHUNKS: u32 = ROW_BYTES / 16;
/// Rows one loader pass covers (each thread copies chunk `t % CHUNKS` of rows `t / CHUNKS + ROW_STEP i`).
const ROW_STEP: u32 = THREADS / CHUNKS;
const A_BYTES: u32 = BM * ROW_BYTES;
const STAGE_BYTES: u32 = (BM + BN) * ROW_BYTES;

const _: () = assert!(
    BM == 128
        && BN == 128
        && CHUNKS == 4
        && THREADS == 256
        && BM == 2 * ROW_STEP
        && BN == 2 * ROW_STEP
);
const _: () = assert!(STAGES >= 2);

/// Byte offset of 16-byte chunk `chunk` of row `row` in a tile (XOR swizzle, see the module comment).
#[inline(always)]
fn swz(row: u32, chunk: u32) -> u32 {
    row * ROW_BYTES + ((chunk ^ ((row >> 1) & 3)) << 4)
}

/// Two f32 that the compiler may store with one `st.global.v2.f32`.
#[repr(C, align(8))]
struct F32x2(f32, f32);

/// f16 bits -> f32.
#[inline(always)]
fn h2f(v: u16) -> f32 {
    unpack_f16x2(v as u32).0
}

/// y = epilogue(x · wᵀ) for x [M, K] f16, w [N, K] f16. Grid (ceil(N/128), ceil(M/128)), block
/// `LINEAR_TC_THREADS`, dynamic shared memory `LINEAR_TC_SMEM_BYTES`. Requires K % 8 == 0, M, N, K ≥ 1
/// and every size below 2^31 (host-checked). `bias` [N] is read only with `LINEAR_TC_BIAS`, `res`
/// ([res_rows, N], f32 or with `LINEAR_TC_RES_F16` f16) only with `LINEAR_TC_RESIDUAL`; `y32` [M, N]
/// f32 and `y16` [M, N] f16 are written when non-null.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn linear_tc(
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
    let warp = t / 32;
    let lane = t % 32;
    let n0 = block_idx_x() * BN;
    let m0 = block_idx_y() * BM;
    let ktiles = k.div_ceil(BK);
    let smem = shared::dynamic_smem_addr();

    // Loader: chunk j of rows r0 and r0 + ROW_STEP of both tiles. Rows past M / N read row 0 with
    // src_size 0 (zero fill), so every source address stays inside the tensors.
    let j = t % CHUNKS;
    let r0 = t / CHUNKS;
    let mut a_src = [x; 2];
    let mut a_ok = [false; 2];
    let mut b_src = [w; 2];
    let mut b_ok = [false; 2];
    unroll!(2, |i| {
        let row = r0 + ROW_STEP * i as u32;
        a_ok[i] = m0 + row < m;
        b_ok[i] = n0 + row < n;
        a_src[i] = x.add(if a_ok[i] {
            (m0 + row) as usize * k as usize
        } else {
            0
        });
        b_src[i] = w.add(if b_ok[i] {
            (n0 + row) as usize * k as usize
        } else {
            0
        });
    });
    let load = |stage: u32, kt: u32| {
        let base = smem + stage * STAGE_BYTES;
        let kk = kt * BK + j * 8;
        let kin = kk < k;
        let koff = if kin { kk as usize } else { 0 };
        unroll!(2, |i| {
            let row = r0 + ROW_STEP * i as u32;
            let sa = if a_ok[i] && kin { 16 } else { 0 };
            let sb = if b_ok[i] && kin { 16 } else { 0 };
            cp_async_16(base + swz(row, j), a_src[i].add(koff) as *const u8, sa);
            cp_async_16(
                base + A_BYTES + swz(row, j),
                b_src[i].add(koff) as *const u8,
                sb,
            );
        });
    };

    // Prologue: the first STAGES - 1 steps (one commit group each, possibly empty).
    for s in 0..STAGES - 1 {
        if s < ktiles {
            load(s, s);
        }
        cp_async_commit();
    }

    // Warp tile: rows wm*64 .. +64 of the block, columns wn*32 .. +32.
    let wm = warp % 2;
    let wn = warp / 2;
    let a_row = wm * 64 + (lane % 16);
    let a_chunk = lane / 16;
    let b_row = wn * 32 + (lane & 7) + ((lane >> 4) << 3);
    let b_chunk = (lane >> 3) & 1;

    let mut acc = [[[0f32; 4]; 4]; 4];
    let mut kt = 0;
    while kt < ktiles {
        // Step kt has landed (at most STAGES - 2 younger groups pending) for this thread; the barrier
        // makes every thread's copies visible and guarantees step kt - 1's stage is no longer read.
        cp_async_wait_group::<{ STAGES - 2 }>();
        sync_threads();
        let next = kt + STAGES - 1;
        if next < ktiles {
            load(next % STAGES, next);
        }
        cp_async_commit();

        let a_base = smem + (kt % STAGES) * STAGE_BYTES;
        let b_base = a_base + A_BYTES;
        unroll!(2, |half| {
            let half = half as u32;
            let mut a = [[0u32; 4]; 4];
            unroll!(4, |mi| {
                a[mi] = ldmatrix_x4(a_base + swz(a_row + mi as u32 * 16, half * 2 + a_chunk));
            });
            // One ldmatrix.x4 gives the B fragments of n-tiles 2 jp and 2 jp + 1.
            unroll!(2, |jp| {
                let bf = ldmatrix_x4(b_base + swz(b_row + jp as u32 * 16, half * 2 + b_chunk));
                unroll!(4, |mi| {
                    mma_f16_16816(&mut acc[mi][2 * jp], a[mi], [bf[0], bf[1]]);
                    mma_f16_16816(&mut acc[mi][2 * jp + 1], a[mi], [bf[2], bf[3]]);
                });
            });
        });
        kt += 1;
    }
    // Drain the (empty) trailing groups before the block exits.
    cp_async_wait_group::<0>();

    // Epilogue: per m-tile rows g and g + 8; per n-tile columns 2t and 2t + 1.
    let g = lane / 4;
    let tq = lane % 4;
    let ep = Epilogue {
        bias,
        res,
        y32,
        y16,
        n,
        res_rows,
        flags,
    };
    unroll!(4, |mi| {
        unroll!(2, |half| {
            let row = m0 + wm * 64 + mi as u32 * 16 + g + 8 * half as u32;
            if row < m {
                let (out, rrow) = ep.row(row);
                unroll!(4, |ni| {
                    let col = n0 + wn * 32 + ni as u32 * 8 + tq * 2;
                    ep.pair(
                        out,
                        rrow,
                        col,
                        [acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1]],
                    );
                });
            }
        });
    });
}

/// The fused epilogue of both GEMM kernels (see the module comment): + bias, GELU, + residual, stores.
/// Also used by `linear_wg` (same contract).
pub(crate) struct Epilogue {
    pub(crate) bias: *const f32,
    pub(crate) res: *const u8,
    pub(crate) y32: *mut f32,
    pub(crate) y16: *mut u16,
    pub(crate) n: u32,
    pub(crate) res_rows: u32,
    pub(crate) flags: u32,
}

impl Epilogue {
    /// Element offsets of output row `row` (< M) and of its residual row `row % res_rows`.
    #[inline(always)]
    pub(crate) fn row(&self, row: u32) -> (usize, usize) {
        let out = row as usize * self.n as usize;
        let rrow = if self.flags & LINEAR_TC_RESIDUAL != 0 {
            (row % self.res_rows) as usize * self.n as usize
        } else {
            0
        };
        (out, rrow)
    }

    /// Finishes and stores columns `col`, `col + 1` (`col` even; either may be past N and is then
    /// skipped) of the row at offsets `out` / `rrow` ([`Epilogue::row`]) from the accumulators `v`,
    /// loading the pair's bias and residual here ([`Epilogue::store`] has the store rules).
    ///
    /// # Safety
    /// The pointers must be valid as the kernels' contracts say, `out`/`rrow` from [`Epilogue::row`].
    #[inline(always)]
    pub(crate) unsafe fn pair(&self, out: usize, rrow: usize, col: u32, mut v: [f32; 2]) {
        let n = self.n;
        if col >= n {
            return;
        }
        let flags = self.flags;
        let pair = col + 1 < n;
        let c = col as usize;
        if flags & LINEAR_TC_BIAS != 0 {
            v[0] += *self.bias.add(c);
            if pair {
                v[1] += *self.bias.add(c + 1);
            }
        }
        if flags & LINEAR_TC_GELU != 0 {
            v[0] = math::gelu_tanh(v[0]);
            v[1] = math::gelu_tanh(v[1]);
        }
        if flags & LINEAR_TC_RESIDUAL != 0 {
            if flags & LINEAR_TC_RES_F16 != 0 {
                let r = self.res as *const u16;
                v[0] += h2f(*r.add(rrow + c));
                if pair {
                    v[1] += h2f(*r.add(rrow + c + 1));
                }
            } else {
                let r = self.res as *const f32;
                v[0] += *r.add(rrow + c);
                if pair {
                    v[1] += *r.add(rrow + c + 1);
                }
            }
        }
        self.store(out, col, v);
    }

    /// [`Epilogue::pair`] with the pair's bias `b` and residual `r` already loaded (0 where the flags
    /// leave them out; [`Epilogue::preload`]): v = GELU?(v + b) + r, then stored.
    ///
    /// # Safety
    /// As [`Epilogue::pair`].
    #[inline(always)]
    pub(crate) unsafe fn pair_loaded(&self, out: usize, col: u32, v: [f32; 2], b: [f32; 2], r: [f32; 2]) {
        let mut v = [v[0] + b[0], v[1] + b[1]];
        if self.flags & LINEAR_TC_GELU != 0 {
            v[0] = math::gelu_tanh(v[0]);
            v[1] = math::gelu_tanh(v[1]);
        }
        self.store(out, col, [v[0] + r[0], v[1] + r[1]]);
    }

    /// Loads the bias of columns `cols[i]`, `cols[i] + 1` and the residual of rows `rows[h]` (< M) at
    /// those columns (`linear_tc_small`'s 2 rows x 4 column pairs per thread), all at once (no load
    /// waits for another or for a store: in the per-pair epilogue each pair's loads wait for the
    /// previous pair's arithmetic, a chain of L2 round trips when few blocks run). Indices past N are
    /// clamped to N - 1 (an address inside the tensor) and their values are never stored; what the
    /// flags leave out is 0. Returns (bias[i], res[h][i]).
    ///
    /// # Safety
    /// As [`Epilogue::pair`]; `rows[h] < M`, N ≥ 1.
    #[inline(always)]
    pub(crate) unsafe fn preload(&self, rows: [u32; 2], cols: [u32; 4]) -> ([[f32; 2]; 4], [[[f32; 2]; 4]; 2]) {
        let last = self.n - 1;
        let cl = |c: u32| (if c < last { c } else { last }) as usize;
        let mut b = [[0f32; 2]; 4];
        let mut r = [[[0f32; 2]; 4]; 2];
        if self.flags & LINEAR_TC_BIAS != 0 {
            unroll!(4, |i| {
                b[i] = [*self.bias.add(cl(cols[i])), *self.bias.add(cl(cols[i] + 1))];
            });
        }
        if self.flags & LINEAR_TC_RESIDUAL != 0 {
            let rr = |h: usize| self.row(rows[h]).1;
            if self.flags & LINEAR_TC_RES_F16 != 0 {
                let p = self.res as *const u16;
                unroll!(2, |h| {
                    unroll!(4, |i| {
                        r[h][i] = [h2f(*p.add(rr(h) + cl(cols[i]))), h2f(*p.add(rr(h) + cl(cols[i] + 1)))];
                    });
                });
            } else {
                let p = self.res as *const f32;
                unroll!(2, |h| {
                    unroll!(4, |i| {
                        r[h][i] = [*p.add(rr(h) + cl(cols[i])), *p.add(rr(h) + cl(cols[i] + 1))];
                    });
                });
            }
        }
        (b, r)
    }

    /// Stores the finished pair `v` at columns `col`, `col + 1` (`col` even; either may be past N and is
    /// then skipped) of the row at offset `out` to y32 and/or y16 (those non-null). Pairs use vector
    /// stores when N is even, so that every pair is 8-byte / 4-byte aligned.
    ///
    /// # Safety
    /// As [`Epilogue::pair`].
    #[inline(always)]
    unsafe fn store(&self, out: usize, col: u32, v: [f32; 2]) {
        let n = self.n;
        if col >= n {
            return;
        }
        let pair = col + 1 < n;
        let vec = n % 2 == 0;
        let c = col as usize;
        if !self.y32.is_null() {
            let p = self.y32.add(out + c);
            if pair && vec {
                *(p as *mut F32x2) = F32x2(v[0], v[1]);
            } else {
                *p = v[0];
                if pair {
                    *p.add(1) = v[1];
                }
            }
        }
        if !self.y16.is_null() {
            let h = pack_f16x2(v[0], v[1]);
            let p = self.y16.add(out + c);
            if pair && vec {
                *(p as *mut u32) = h;
            } else {
                *p = h as u16;
                if pair {
                    *p.add(1) = (h >> 16) as u16;
                }
            }
        }
    }
}

// ---------------------------------------------------------------- few rows: split-K
/// Bytes of one shared-memory row of `linear_tc_small` (S_BK f16).
const S_ROW_BYTES: u32 = LINEAR_TC_S_BK * 2;
/// 16-byte chunks per `linear_tc_small` row.
const S_CHUNKS: u32 = S_ROW_BYTES / 16;
/// Rows one `linear_tc_small` loader pass covers.
const S_ROW_STEP: u32 = LINEAR_TC_S_THREADS / S_CHUNKS;
const S_A_BYTES: u32 = LINEAR_TC_S_BM * S_ROW_BYTES;
const S_STAGE_BYTES: u32 = (LINEAR_TC_S_BM + LINEAR_TC_S_BN) * S_ROW_BYTES;
/// x rows / w rows each thread loads per K step.
const S_A_LOADS: u32 = LINEAR_TC_S_BM / S_ROW_STEP;
const S_B_LOADS: u32 = LINEAR_TC_S_BN / S_ROW_STEP;

const _: () = assert!(
    LINEAR_TC_S_BM == 64
        && LINEAR_TC_S_BN == 32
        && S_CHUNKS == 8
        && LINEAR_TC_S_THREADS == 128
        && S_A_LOADS == 4
        && S_B_LOADS == 2
        && LINEAR_TC_S_PARTIAL == LINEAR_TC_S_THREADS * 16
        && LINEAR_TC_S_SMEM_BYTES == LINEAR_TC_S_STAGES * S_STAGE_BYTES
);
const _: () = assert!(LINEAR_TC_S_STAGES >= 2);

/// Byte offset of 16-byte chunk `chunk` of row `row` in a `linear_tc_small` tile: 128-byte rows, chunk
/// index XOR (row % 8), so the 8 rows of one ldmatrix 8x8 matrix (or 8 consecutive cp.async rows of one
/// chunk column) land in 8 different 16-byte bank groups.
#[inline(always)]
fn swz8(row: u32, chunk: u32) -> u32 {
    row * S_ROW_BYTES + ((chunk ^ (row & 7)) << 4)
}

// Cross-block hand-off of the split-K partial sums (PTX ISA, "Memory Consistency Model"). Writer blocks:
// every thread stores its partials (weak stores), then `fence.acq_rel.gpu` (the PTX form of
// `__threadfence()`: its own stores are ordered before whatever it does next, at GPU scope), then a
// block barrier, then thread 0 increments the tile's counter with `atom.acq_rel.gpu`: a release of
// everything the block wrote (the barrier puts every thread's fence before it) and, for the block that
// sees `splits - 1`, an acquire of every earlier arrival's release (each arrival's RMW reads the
// previous one's value, so the acq_rel RMWs chain the releases together). The last block then passes the
// decision on through shared memory and a barrier, and reads the other partials with
// `ld.relaxed.gpu` (strong GPU-scope loads, served by L2, never by a stale L1 line).

/// `st.global.v4.f32`: four floats at a 16-byte aligned global address.
///
/// # Safety
/// `p` must be 16-byte aligned and valid for 16 bytes of writes.
#[inline(always)]
unsafe fn st_global_v4(p: *mut f32, v: [f32; 4]) {
    asm!(
        "st.global.v4.f32 [{0}], {{{1}, {2}, {3}, {4}}};",
        in(reg64) p, in(reg32) v[0], in(reg32) v[1], in(reg32) v[2], in(reg32) v[3],
        options(nostack)
    );
}

/// `ld.relaxed.gpu.global.v4.f32`: four floats another block wrote (strong load at GPU scope: it is
/// ordered by the acquire that precedes it in causality order and does not hit a stale L1 line).
///
/// # Safety
/// `p` must be 16-byte aligned and valid for 16 bytes of reads.
#[inline(always)]
unsafe fn ld_relaxed_gpu_v4(p: *const f32) -> [f32; 4] {
    let (a, b, c, d): (f32, f32, f32, f32);
    asm!(
        "ld.relaxed.gpu.global.v4.f32 {{{0}, {1}, {2}, {3}}}, [{4}];",
        out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg64) p,
        options(nostack, readonly)
    );
    [a, b, c, d]
}

/// `fence.acq_rel.gpu` (`__threadfence()`): this thread's earlier memory operations are ordered before
/// its later ones for every thread of the GPU; here, its partial-sum stores before the barrier that
/// precedes the block's counter increment.
#[inline(always)]
fn fence_acq_rel_gpu() {
    // SAFETY: a fence has no operands and touches no memory of its own.
    unsafe { asm!("fence.acq_rel.gpu;", options(nostack)) };
}

/// `atom.acq_rel.gpu.global.add.u32`: adds `v` to `*p` and returns the old value; releases this
/// thread's (and, through the preceding barrier, its block's) earlier writes and acquires those of the
/// arrivals it reads after.
///
/// # Safety
/// `p` must be a 4-byte aligned global address valid for reads and writes.
#[inline(always)]
unsafe fn atom_add_acq_rel_gpu(p: *mut u32, v: u32) -> u32 {
    let old: u32;
    asm!(
        "atom.acq_rel.gpu.global.add.u32 {0}, [{1}], {2};",
        out(reg32) old, in(reg64) p, in(reg32) v,
        options(nostack)
    );
    old
}

/// `st.relaxed.gpu.global.u32`: resets a counter (no other block of the launch touches it afterwards;
/// the next launch on the stream sees the store).
///
/// # Safety
/// `p` must be a 4-byte aligned global address valid for writes.
#[inline(always)]
unsafe fn st_relaxed_gpu_u32(p: *mut u32, v: u32) {
    asm!("st.relaxed.gpu.global.u32 [{0}], {1};", in(reg64) p, in(reg32) v, options(nostack));
}

/// y = epilogue(x · wᵀ) for few rows: the `linear_tc` contract (x [M, K] f16, w [N, K] f16, K % 8 == 0,
/// epilogue flags, bias, res, y32, y16 as there) with 64 x 32 output tiles and K optionally split. The
/// first `STAGES - 1` weight tiles are copied before `griddepcontrol.wait` (w must not be an output of
/// the grid this launch depends on); everything else is read after it, and the kernel then lets its
/// dependent launch (`device::grid_dependency_wait_then_trigger`).
/// Grid (ceil(N/32), ceil(M/64), splits); block `LINEAR_TC_S_THREADS` (4 warps, warp i owns rows
/// 16i..16i+16 and all 32 columns, four m16n8k16 n-tiles); dynamic shared memory
/// `LINEAR_TC_S_SMEM_BYTES` (a `LINEAR_TC_S_STAGES`-deep cp.async pipeline of [64][64] x and [32][64] w
/// tiles, `swz8` layout). Split z walks K steps `z·kps .. min((z+1)·kps, ceil(K/64))` (host: none empty).
///
/// With one split the block applies the epilogue directly (`ws` and `counters` unused). Otherwise the
/// block stores its partial tile to `ws` (slot `tile·splits + z` of `LINEAR_TC_S_PARTIAL` floats, tile =
/// blockIdx.y·gridDim.x + blockIdx.x, thread t's float4 q at `(q·128 + t)·4`, coalesced), and bumps
/// `counters[tile]`; the block that arrives last sums the `splits` partials in split order (its own from
/// registers: the result does not depend on the arrival order), applies the epilogue and resets the
/// counter to 0 for the next launch. `counters[0..tiles]` must be 0 at launch (the workspace is zeroed
/// at creation and every launch leaves it so); one workspace must not serve two launches at once.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn linear_tc_small(
    x: *const u16,
    w: *const u16,
    bias: *const f32,
    res: *const u8,
    y32: *mut f32,
    y16: *mut u16,
    ws: *mut f32,
    counters: *mut u32,
    m: u32,
    n: u32,
    k: u32,
    res_rows: u32,
    flags: u32,
    kps: u32,
) {
    const STAGES: u32 = LINEAR_TC_S_STAGES;
    let t = thread_idx_x();
    let warp = t / 32;
    let lane = t % 32;
    let n0 = block_idx_x() * LINEAR_TC_S_BN;
    let m0 = block_idx_y() * LINEAR_TC_S_BM;
    let z = block_idx_z();
    let splits = grid_dim_z();
    let ktiles = k.div_ceil(LINEAR_TC_S_BK);
    let kt0 = z * kps;
    let kt1 = if kt0 + kps < ktiles {
        kt0 + kps
    } else {
        ktiles
    };
    let nkt = kt1.saturating_sub(kt0);
    let smem = shared::dynamic_smem_addr();

    // Loader: chunk j of x rows r0 + 16i (i < 4) and w rows r0 + 16i (i < 2). Rows past M / N read row 0
    // with src_size 0 (zero fill), so every source address stays inside the tensors.
    let j = t % S_CHUNKS;
    let r0 = t / S_CHUNKS;
    let mut a_src = [x; 4];
    let mut a_ok = [false; 4];
    unroll!(4, |i| {
        let row = r0 + S_ROW_STEP * i as u32;
        a_ok[i] = m0 + row < m;
        a_src[i] = x.add(if a_ok[i] {
            (m0 + row) as usize * k as usize
        } else {
            0
        });
    });
    let mut b_src = [w; 2];
    let mut b_ok = [false; 2];
    unroll!(2, |i| {
        let row = r0 + S_ROW_STEP * i as u32;
        b_ok[i] = n0 + row < n;
        b_src[i] = w.add(if b_ok[i] {
            (n0 + row) as usize * k as usize
        } else {
            0
        });
    });
    let load_a = |stage: u32, kt: u32| {
        let base = smem + stage * S_STAGE_BYTES;
        let kk = kt * LINEAR_TC_S_BK + j * 8;
        let kin = kk < k;
        let koff = if kin { kk as usize } else { 0 };
        unroll!(4, |i| {
            let row = r0 + S_ROW_STEP * i as u32;
            let sa = if a_ok[i] && kin { 16 } else { 0 };
            cp_async_16(base + swz8(row, j), a_src[i].add(koff) as *const u8, sa);
        });
    };
    let load_b = |stage: u32, kt: u32| {
        let base = smem + stage * S_STAGE_BYTES;
        let kk = kt * LINEAR_TC_S_BK + j * 8;
        let kin = kk < k;
        let koff = if kin { kk as usize } else { 0 };
        unroll!(2, |i| {
            let row = r0 + S_ROW_STEP * i as u32;
            let sb = if b_ok[i] && kin { 16 } else { 0 };
            cp_async_16(
                base + S_A_BYTES + swz8(row, j),
                b_src[i].add(koff) as *const u8,
                sb,
            );
        });
    };
    let load = |stage: u32, kt: u32| {
        load_a(stage, kt);
        load_b(stage, kt);
    };

    // The weights do not depend on the previous grid: the first stages' are copied before the
    // dependency wait (they join the first commit group below), while the previous kernel, which let
    // this one launch early (`grid_dependency_wait_then_trigger`), finishes.
    for s in 0..STAGES - 1 {
        if s < nkt {
            load_b(s, kt0 + s);
        }
    }
    crate::device::grid_dependency_wait_then_trigger();
    for s in 0..STAGES - 1 {
        if s < nkt {
            load_a(s, kt0 + s);
        }
        cp_async_commit();
    }

    // The epilogue's bias and residual (rows g and g + 8 of the warp's m-tile, n-tile ni's columns 2tq,
    // 2tq + 1), loaded now, together and while the first copies fly: loaded pair by pair after the
    // reduction they were a chain of dependent L2 round trips at the end of every launch. Every block
    // loads them (only the last arrival of a split tile uses them): the residual is read before this
    // launch writes y16 (in place or not), whichever block arrives last.
    let g = lane / 4;
    let tq = lane % 4;
    let ep = Epilogue {
        bias,
        res,
        y32,
        y16,
        n,
        res_rows,
        flags,
    };
    let row_of = |half: u32| m0 + warp * 16 + g + 8 * half;
    let clamp_m = |row: u32| if row < m { row } else { m - 1 };
    let (ep_bias, ep_res) = ep.preload(
        [clamp_m(row_of(0)), clamp_m(row_of(1))],
        [n0 + tq * 2, n0 + 8 + tq * 2, n0 + 16 + tq * 2, n0 + 24 + tq * 2],
    );

    // Warps whose 16 rows all lie past M skip the tensor-core work (warp-uniform branch); they still
    // load and reach every barrier.
    let active = m0 + warp * 16 < m;
    let a_row = warp * 16 + (lane % 16);
    let a_chunk = lane / 16;
    let b_row = (lane & 7) + ((lane >> 4) << 3);
    let b_chunk = (lane >> 3) & 1;

    let mut acc = [[0f32; 4]; 4];
    let mut i = 0;
    while i < nkt {
        // As `linear_tc`: step i has landed for this thread; the barrier publishes every thread's copies
        // and retires step i - 1's stage before it is refilled.
        cp_async_wait_group::<{ STAGES - 2 }>();
        sync_threads();
        let next = i + STAGES - 1;
        if next < nkt {
            load(next % STAGES, kt0 + next);
        }
        cp_async_commit();

        if active {
            let a_base = smem + (i % STAGES) * S_STAGE_BYTES;
            let b_base = a_base + S_A_BYTES;
            unroll!(4, |ks| {
                let ks = ks as u32;
                let a = ldmatrix_x4(a_base + swz8(a_row, ks * 2 + a_chunk));
                unroll!(2, |jp| {
                    let bf = ldmatrix_x4(b_base + swz8(b_row + jp as u32 * 16, ks * 2 + b_chunk));
                    mma_f16_16816(&mut acc[2 * jp], a, [bf[0], bf[1]]);
                    mma_f16_16816(&mut acc[2 * jp + 1], a, [bf[2], bf[3]]);
                });
            });
        }
        i += 1;
    }
    cp_async_wait_group::<0>();

    if splits > 1 {
        let tile = block_idx_y() * grid_dim_x() + block_idx_x();
        let slot = |zz: u32| {
            ws.add((tile as usize * splits as usize + zz as usize) * LINEAR_TC_S_PARTIAL as usize)
        };
        let mine = slot(z);
        unroll!(4, |q| {
            st_global_v4(
                mine.add((q * LINEAR_TC_S_THREADS as usize + t as usize) * 4),
                acc[q],
            );
        });
        fence_acq_rel_gpu();
        // Every thread's partials and fence precede thread 0's increment; the barrier also retires the
        // main loop's last shared-memory reads before thread 0 reuses word 0 below.
        sync_threads();
        if t == 0 {
            let ctr = counters.add(tile as usize);
            let last = atom_add_acq_rel_gpu(ctr, 1) == splits - 1;
            if last {
                st_relaxed_gpu_u32(ctr, 0);
            }
            shared::st_f32(smem, if last { 1.0 } else { 0.0 });
        }
        sync_threads();
        if shared::ld_f32(smem) == 0.0 {
            // Not the last arrival: the block's work is in `ws`. (Block-uniform exit after the last
            // barrier.)
            return;
        }
        // Sum the partials in split order (a fixed order whichever block arrived last), four splits'
        // loads (16 float4 per thread) in flight at a time.
        let mut sum = [[0f32; 4]; 4];
        let mut zz = 0;
        while zz < splits {
            let mut p = [[[0f32; 4]; 4]; 4];
            unroll!(4, |u| {
                let zu = zz + u as u32;
                if zu == z {
                    p[u] = acc;
                } else if zu < splits {
                    let src = slot(zu);
                    unroll!(4, |q| {
                        p[u][q] = ld_relaxed_gpu_v4(
                            src.add((q * LINEAR_TC_S_THREADS as usize + t as usize) * 4),
                        );
                    });
                }
            });
            unroll!(4, |u| {
                unroll!(4, |q| {
                    unroll!(4, |e| {
                        sum[q][e] += p[u][q][e];
                    });
                });
            });
            zz += 4;
        }
        acc = sum;
    }

    // Epilogue: rows g and g + 8 of the warp's m-tile; n-tile ni's columns 2tq, 2tq + 1.
    unroll!(2, |half| {
        let row = row_of(half as u32);
        if row < m {
            let out = ep.row(row).0;
            unroll!(4, |ni| {
                let col = n0 + ni as u32 * 8 + tq * 2;
                ep.pair_loaded(
                    out,
                    col,
                    [acc[ni][2 * half], acc[ni][2 * half + 1]],
                    ep_bias[ni],
                    ep_res[half][ni],
                );
            });
        }
    });
}

/// `y = LayerNorm(x + res) · γ + β` over rows of `d` (the `layer_norm` kernel's row routine,
/// `layer_norm::layer_norm_row`: one warp per row, two-pass statistics, eps `LAYER_NORM_EPS`), writing the f32 result to `y` when non-null and its f16
/// rounding to `y16` when non-null (the next GEMM's operand). `res` is read only when `has_res != 0`.
/// Grid ceil(rows / LAYER_NORM_ROWS), block 32 · LAYER_NORM_ROWS.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn linear_tc_layer_norm(
    x: *const f32,
    res: *const f32,
    gamma: *const f32,
    beta: *const f32,
    y: *mut f32,
    y16: *mut u16,
    rows: u32,
    d: u32,
    has_res: u32,
) {
    crate::device::grid_dependency_wait();
    super::layer_norm::layer_norm_row(x, res, gamma, beta, y, y16, rows, d, has_res != 0);
}

/// `linear_tc_layer_norm_h` for the fast StyleViT's plain LayerNorm (no residual, f16 output only) on
/// rows of D % 8 == 0, D ≤ `LAYER_NORM_HV_MAX_D`: 16-byte loads and stores, `LAYER_NORM_HV_ROWS` rows per
/// warp with all their loads in flight at once and γ, β loaded once per warp
/// ([`super::layer_norm::rows_f16_vec8`]). Grid ceil(rows / (LAYER_NORM_ROWS · LAYER_NORM_HV_ROWS)),
/// block 32 · LAYER_NORM_ROWS; x, y16 16-byte aligned.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn linear_tc_layer_norm_hv(
    x: *const u16,
    gamma: *const f32,
    beta: *const f32,
    y16: *mut u16,
    rows: u32,
    d: u32,
) {
    crate::device::grid_dependency_wait();
    super::layer_norm::rows_f16_vec8(x, gamma, beta, y16, rows, d);
}

/// `linear_tc_layer_norm` on f16 inputs: `y = LayerNorm(x + res) · γ + β` with x and res f16 (`u16`
/// bits; the fast StyleViT's f16 residual stream), statistics and normalisation in f32, the f32 result to
/// `y` when non-null and its f16 rounding to `y16` when non-null. Same grid, block and row rules.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn linear_tc_layer_norm_h(
    x: *const u16,
    res: *const u16,
    gamma: *const f32,
    beta: *const f32,
    y: *mut f32,
    y16: *mut u16,
    rows: u32,
    d: u32,
    has_res: u32,
) {
    crate::device::grid_dependency_wait_then_trigger();
    super::layer_norm::layer_norm_row(x, res, gamma, beta, y, y16, rows, d, has_res != 0);
}
