//! `linear_tc` kernels (host launcher: host/src/ops/linear_tc.rs; CPU reference: models::ops::linear).
//!
//! `y[m, n] = epilogue(Σ_k x[m, k] · w[n, k])` on tensor cores: x [M, K] f16 row-major, w [N, K] f16
//! (PyTorch `Linear` layout: k contiguous, which is the "col" B operand of `mma.m16n8k16.row.col`, read
//! with plain `ldmatrix`), f32 accumulation. Epilogue (flags from `launch.rs`), in this order: + bias
//! (f32), exact erf GELU, + residual (f32 or f16, row `m % res_rows` of a contiguous [res_rows, N]
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
use crate::device::mma::{
    cp_async_16, cp_async_commit, cp_async_wait_group, ldmatrix_x4, mma_f16_16816, pack_f16x2,
    unpack_f16x2,
};
use crate::device::unroll::unroll;
use crate::device::{block_idx_x, block_idx_y, math, shared, sync_threads, thread_idx_x};
use crate::launch::{
    LINEAR_TC_BIAS, LINEAR_TC_BK, LINEAR_TC_BM, LINEAR_TC_BN, LINEAR_TC_GELU, LINEAR_TC_RESIDUAL,
    LINEAR_TC_RES_F16, LINEAR_TC_STAGES, LINEAR_TC_THREADS,
};

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

    // Epilogue: per m-tile rows g and g + 8; per n-tile columns 2t and 2t + 1 (pairs: vector stores
    // when N is even, so that every pair is 8-byte / 4-byte aligned).
    let g = lane / 4;
    let tq = lane % 4;
    let vec = n % 2 == 0;
    let has_bias = flags & LINEAR_TC_BIAS != 0;
    let gelu = flags & LINEAR_TC_GELU != 0;
    let has_res = flags & LINEAR_TC_RESIDUAL != 0;
    let res16 = flags & LINEAR_TC_RES_F16 != 0;
    unroll!(4, |mi| {
        unroll!(2, |half| {
            let row = m0 + wm * 64 + mi as u32 * 16 + g + 8 * half as u32;
            if row < m {
                let out = row as usize * n as usize;
                let rrow = if has_res {
                    (row % res_rows) as usize * n as usize
                } else {
                    0
                };
                unroll!(4, |ni| {
                    let col = n0 + wn * 32 + ni as u32 * 8 + tq * 2;
                    if col < n {
                        let pair = col + 1 < n;
                        let c = col as usize;
                        let mut v = [acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1]];
                        if has_bias {
                            v[0] += *bias.add(c);
                            if pair {
                                v[1] += *bias.add(c + 1);
                            }
                        }
                        if gelu {
                            v[0] = math::gelu_erf(v[0]);
                            v[1] = math::gelu_erf(v[1]);
                        }
                        if has_res {
                            if res16 {
                                let r = res as *const u16;
                                v[0] += h2f(*r.add(rrow + c));
                                if pair {
                                    v[1] += h2f(*r.add(rrow + c + 1));
                                }
                            } else {
                                let r = res as *const f32;
                                v[0] += *r.add(rrow + c);
                                if pair {
                                    v[1] += *r.add(rrow + c + 1);
                                }
                            }
                        }
                        if !y32.is_null() {
                            let p = y32.add(out + c);
                            if pair && vec {
                                *(p as *mut F32x2) = F32x2(v[0], v[1]);
                            } else {
                                *p = v[0];
                                if pair {
                                    *p.add(1) = v[1];
                                }
                            }
                        }
                        if !y16.is_null() {
                            let h = pack_f16x2(v[0], v[1]);
                            let p = y16.add(out + c);
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
                });
            }
        });
    });
}

// ---------------------------------------------------------------- f16 operands for the next GEMM
/// `y[i] = f16(x[i])` for i < n (round to nearest even, saturating): the f16 copy of an f32 activation
/// that feeds `linear_tc` or `attention_tc`. Grid-stride; block `ELEMENTWISE_BLOCK`.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn linear_tc_to_f16(x: *const f32, y: *mut u16, n: u32) {
    let (mut i, stride) = crate::device::global_index_x();
    let n = n as usize;
    while i < n {
        *y.add(i) = pack_f16x2(*x.add(i), 0.0) as u16;
        i += stride;
    }
}

/// `y = LayerNorm(x + res) · γ + β` over rows of `d` (as the `layer_norm` kernel: one warp per row,
/// two-pass statistics, eps `LAYER_NORM_EPS`), writing the f32 result to `y` when non-null and its f16
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
    use crate::launch::{LAYER_NORM_EPS, LAYER_NORM_ROWS};
    let row = (block_idx_x() * LAYER_NORM_ROWS + thread_idx_x() / 32) as usize;
    if row >= rows as usize {
        // Whole warps leave together; the kernel has no block barrier.
        return;
    }
    let d = d as usize;
    let lane = crate::device::lane_id() as usize;
    let xr = x.add(row * d);
    let rr = res.wrapping_add(row * d);
    let val = |j: usize| -> f32 {
        if has_res != 0 {
            *xr.add(j) + *rr.add(j)
        } else {
            *xr.add(j)
        }
    };
    let mut s = 0.0f32;
    let mut j = lane;
    while j < d {
        s += val(j);
        j += 32;
    }
    let mean = math::div(crate::device::warp::warp_sum(s), d as f32);
    let mut s2 = 0.0f32;
    j = lane;
    while j < d {
        let dv = val(j) - mean;
        s2 = math::fma(dv, dv, s2);
        j += 32;
    }
    let var = math::div(crate::device::warp::warp_sum(s2), d as f32);
    let rstd = math::div(1.0, math::sqrt(var + LAYER_NORM_EPS));
    j = lane;
    while j < d {
        let v = math::fma((val(j) - mean) * rstd, *gamma.add(j), *beta.add(j));
        if !y.is_null() {
            *y.add(row * d + j) = v;
        }
        if !y16.is_null() {
            *y16.add(row * d + j) = pack_f16x2(v, 0.0) as u16;
        }
        j += 32;
    }
}
