//! `conv2d_tc` kernels (host launcher: host/src/ops/conv2d_tc.rs; CPU reference: models::ops::conv2d).
//!
//! Implicit-GEMM convolution on tensor cores for the fast TransformerNet: x NHWC f16, w [K][kw] f16 (each
//! row the (r, s, c) GEMM-K order, zero-padded to `kw`, a multiple of `CONV2D_TC_BK` = 32), fp32
//! accumulation, reflection padding, stride, optional nearest upsampling folded into the gather. GEMM:
//! M = P*Q output pixels of one sample (grid y = sample), N_gemm = K output channels (all of them in one
//! block), K_gemm = R*S*C, c innermost.
//!
//! Two epilogues (`mode`):
//! * `CONV2D_TC_OUT_F16_STATS`: y16 NHWC f16 (saturated to ±65504) and, per block, each channel's
//!   InstanceNorm partials of the block's pixels, computed from the f32 accumulators in two passes
//!   (`part[((n*K + ch)*tiles + tile)*2 ..+2]` = (mean, M2)); `nhwc_in_coef` combines them. With `sums`
//!   not null, each tile's (mean, M2) is added to its plane's f64 sums instead (`nhwc::in_sums_add`).
//! * `CONV2D_TC_OUT_NCHW_BIAS`: y32 NCHW f32 channels `0..k_real` plus bias (the network's last layer).
//!
//! Block: `CONV2D_TC_THREADS` = 8 warps, BM = 256, 128, 64 or 32 pixels x all K channels (see
//! `launch::conv2d_tc_variant`); the warps form a (8 / WN) x WN grid, each computing MT m-tiles x NT
//! n-tiles of mma m16n8k16 (K = 8 * NT * WN, BM = 16 * MT * 8 / WN; smaller tiles fill the GPU at small
//! sizes). Grid: x = ceil(P*Q / BM), y = N.
//!
//! Each GEMM-K step of `BK` (32 or 64) f16 stages an A tile [BM][BK] and a B tile [K][BK] in shared memory
//! through a `STAGES`-deep cp.async pipeline (one commit group per step, `wait_group(STAGES - 2)`, one
//! barrier per step). A row is BK * 2 bytes = BK / 8 16-byte chunks; chunk `j` of row `row` lives at
//! `row * 2BK + ((j ^ sw(row)) * 16)` with sw = `row & 7` (BK = 64) or `(row >> 1) & 3` (BK = 32), so that
//! 8 consecutive rows of one chunk column hit 8 different bank groups (ldmatrix and cp.async are
//! conflict-free). When kw is not a multiple of BK = 64 the last step's second half is zero (B
//! zero-filled, A past R*S*C) and its mma are skipped.
//!
//! Gather: before the main loop each block writes two small tables into shared memory: for every tile row
//! (output pixel) and filter offset r, the element offset of the reflected, upsampled input row
//! (`(n*H + ih) * W * C`), and for every s the column offset (`iw * C`); and for every GEMM-K piece the
//! channel and the (r, s) table offsets. A piece's source address is then two shared loads and two adds
//! instead of the reflections, divisions and multiplications per piece of the first version. The A
//! gather moves 16-byte pieces (8 channels of one tap; C % 8 == 0) or, for the 4-channel first layer
//! (`PIECE` = 8), 8-byte pieces (one whole tap). GEMM-K positions past R*S*C gather zeros. Rows past P*Q
//! gather pixel P*Q-1 (in range) and are neither stored nor counted in the statistics.
//!
//! Input norm (`in_norm`, an `InNorm`; 16-byte pieces only): the input is a raw conv output and each
//! element is loaded as relu(a_c x + b_c), (a, b) = `coef[(n*C + c)*2 ..+2]` (`nhwc_in_coef`'s layout) or
//! computed from the producer's plane sums (thread c for channel c, `nhwc::in_norm_pair`). The
//! block puts its sample's C pairs into shared memory after the gather tables (`C * 8` bytes more, see
//! `launch::conv2d_tc_in_norm_smem`); in the main loop, after step kt's copies have landed
//! (`cp.async.wait_group`) and before the barrier, each thread rewrites the 16-byte pieces it copied itself
//! (its piece column gives one channel group for all its rows) in f32 with one f16 rounding, as
//! `nhwc_in_apply` did. Zero-filled pieces past R*S*C are skipped; the clamped rows past P*Q are
//! transformed too (finite, never stored). Reflection and upsampling copy elements, so they commute with
//! the transform. ptxas (sm_90) registers without -> with the input norm: k8 38 -> 55, k32 114 -> 123,
//! k32_bk32 114 -> 116, k32_m128 80 -> 80, k64 72 -> 96, k64_m64 56 -> 71, k128 127 -> 128 (still two blocks
//! of 256 threads per SM), k128_m64 80 -> 80, k128_m32 64 -> 64; no spills.
use crate::device::mma::{cp_async_16, cp_async_16_ca, cp_async_8, cp_async_commit, cp_async_wait_group, ldmatrix_x2, ldmatrix_x4, mma_f16_16816, pack_f16x2, unpack_f16x2};
use crate::device::math;
use crate::device::shared::{ld_v2_u32, ld_v4_f32, st_u32};
use crate::device::unroll::unroll;
use crate::device::warp::{shfl_idx_f32, shfl_xor_f32};
use crate::device::{block_idx_x, block_idx_y, grid_dim_x, shared, sync_threads, thread_idx_x};
use crate::kernels::nhwc::{in_norm_pair, in_sums_add};
use crate::launch::{InNorm, CONV2D_TC_BM, CONV2D_TC_OUT_F16_STATS, CONV2D_TC_SUBPIXEL, CONV2D_TC_THREADS, NORM_SUMS_STRIDE};
use core::arch::asm;

/// Byte offset of 16-byte chunk `chunk` of row `row` in a tile of `BK`-element rows (XOR swizzle, see the
/// module comment).
#[inline(always)]
fn swz<const BK: u32>(row: u32, chunk: u32) -> u32 {
    if BK == 64 {
        row * 128 + ((chunk ^ (row & 7)) << 4)
    } else {
        row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4)
    }
}

/// `ld.shared.u32` at a shared-window byte address.
///
/// # Safety
/// `addr` must be 4-byte aligned inside the launch's dynamic shared memory.
#[inline(always)]
pub(super) unsafe fn ld_u32(addr: u32) -> u32 {
    let r: u32;
    asm!("ld.shared.u32 {0}, [{1}];", out(reg32) r, in(reg32) addr, options(nostack, readonly));
    r
}

/// `st.shared.v4.u32` at a shared-window byte address.
///
/// # Safety
/// `addr` must be 16-byte aligned with `addr .. addr + 16` inside the launch's dynamic shared memory.
#[inline(always)]
pub(super) unsafe fn st_v4_u32(addr: u32, v: [u32; 4]) {
    asm!("st.shared.v4.u32 [{0}], {{{1}, {2}, {3}, {4}}};", in(reg32) addr, in(reg32) v[0], in(reg32) v[1], in(reg32) v[2], in(reg32) v[3], options(nostack));
}

/// The input norm of 8 consecutive f16 channels: relu(a_i x_i + b_i) in f32, rounded once to f16 (as
/// `nhwc_in_apply` with ReLU: the same fma, ReLU and saturating round, so the result is bit-identical).
/// `ab[q]` = (a, b) of channels 2q, 2q + 1 as (a0, b0, a1, b1).
#[inline(always)]
pub(super) fn in_norm_relu(v: [u32; 4], ab: &[[f32; 4]; 4]) -> [u32; 4] {
    let mut out = [0u32; 4];
    unroll!(4, |q| {
        let (x0, x1) = unpack_f16x2(v[q]);
        let y0 = math::relu(math::fma(x0, ab[q][0], ab[q][1]));
        let y1 = math::relu(math::fma(x1, ab[q][2], ab[q][3]));
        out[q] = pack_f16x2(y0, y1);
    });
    out
}

/// Reflects `v` into `0..extent` (one reflection; the host ensures the padding is smaller than `extent`).
#[inline(always)]
pub(super) fn reflect(v: i32, extent: i32) -> i32 {
    let mut v = v;
    if v < 0 {
        v = -v;
    }
    if v > extent - 1 {
        v = 2 * (extent - 1) - v;
    }
    v
}

/// Sum over the 8 lanes sharing `lane % 4` (the mma row groups g = 0..7).
#[inline(always)]
pub(super) fn sum_rows(v: f32) -> f32 {
    let v = v + shfl_xor_f32(v, 4);
    let v = v + shfl_xor_f32(v, 8);
    v + shfl_xor_f32(v, 16)
}

/// Launch parameters shared by every `conv2d_tc` variant (passed as scalars: see KERNEL_NOTES §7).
struct Shape {
    h: u32,
    wd: u32,
    c: u32,
    kw: u32,
    p_out: u32,
    q_out: u32,
    r: u32,
    stride: u32,
    pad: u32,
    up: u32,
}

/// The kernel body. `MT` m-tiles x `NT` n-tiles per warp, `WN` warps along N (K = 8 NT WN), GEMM-K step
/// `BK`, `STAGES` pipeline stages, `PIECE` the gather width in bytes (16, or 8 for 4-channel inputs),
/// `A_ROWS` = A-tile rows gathered per thread and step.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn conv2d_tc_body<const MT: usize, const NT: usize, const WN: u32, const BK: u32, const STAGES: u32, const PIECE: u32, const A_ROWS: usize>(
    x: *const u16,
    w: *const u16,
    s: Shape,
    mode: u32,
    y16: *mut u32,
    part: *mut f32,
    sums: *mut f64,
    y32: *mut f32,
    bias: *const f32,
    k_real: u32,
    in_norm: &InNorm,
) {
    // Output pixels per block, bytes per smem row, 16-byte chunks per row, gather pieces per row.
    let bm: u32 = 16 * MT as u32 * (8 / WN);
    let row_bytes = BK * 2;
    let chunks = BK / 8;
    let pieces = row_bytes / PIECE;
    let piece_elems = PIECE / 2;
    let a_row_step = CONV2D_TC_THREADS / pieces;
    let k_out = 8 * NT as u32 * WN;
    // B tile: rows per pass of the block and passes.
    let b_row_step = CONV2D_TC_THREADS / chunks;
    let b_iters = (k_out * chunks).div_ceil(CONV2D_TC_THREADS);
    const { assert!(CONV2D_TC_THREADS == 256 && (BK == 32 || BK == 64) && (NT == 1 || NT == 4) && STAGES >= 2 && STAGES <= 4) };
    const { assert!(16 * MT as u32 * (8 / WN) <= CONV2D_TC_BM) };
    // The per-row steps keep the swizzle term (row & 7 or (row >> 1) & 3) of a thread's rows equal.
    const { assert!((PIECE == 16 || PIECE == 8) && (CONV2D_TC_THREADS / (BK * 2 / PIECE)) % 8 == 0 && (CONV2D_TC_THREADS / (BK / 8)) % 8 == 0) };
    // A_ROWS rows per thread cover the tile (for small tiles some threads have no row: skipped below).
    const { assert!(A_ROWS as u32 * CONV2D_TC_THREADS * PIECE >= 16 * MT as u32 * (8 / WN) * BK * 2) };
    const { assert!(A_ROWS == 1 || A_ROWS as u32 * CONV2D_TC_THREADS * PIECE == 16 * MT as u32 * (8 / WN) * BK * 2) };
    const { assert!(A_ROWS <= 8 && (8 * NT as u32 * WN * BK / 8).div_ceil(CONV2D_TC_THREADS) <= 8) };
    // Repeats a block for i in 0..N (fully unrolled, so fragment arrays stay in registers).
    macro_rules! unroll_n {
        ($n:expr, |$i:ident| $body:block) => {
            match $n {
                1 => { let $i: usize = 0; $body }
                2 => unroll!(2, |$i| $body),
                4 => unroll!(4, |$i| $body),
                _ => unroll!(8, |$i| $body),
            }
        };
    }
    let t = thread_idx_x();
    let warp = t / 32;
    let lane = t % 32;
    let kg = s.r * s.r * s.c; // GEMM-K (the weight rows are zero-padded to kw ≥ kg)
    let ktiles = s.kw.div_ceil(BK);
    // Sub-pixel mode (`CONV2D_TC_SUBPIXEL`): the grid's x covers the four parity planes of tiles.
    let sub = mode & CONV2D_TC_SUBPIXEL != 0;
    let mode = mode & !CONV2D_TC_SUBPIXEL;
    let (parity, tile) = if sub {
        let tpp = (s.p_out * s.q_out).div_ceil(bm);
        (block_idx_x() / tpp, block_idx_x() % tpp)
    } else {
        (0, block_idx_x())
    };
    let n_img = block_idx_y();
    let pq = s.p_out * s.q_out;
    let m0 = tile * bm;
    // The input norm's (a, b) of channel t, loaded (or computed from the plane sums) before the gather
    // tables are built (the prologue's copies wait for the barrier after the tables: loaded there, its
    // round trip came first).
    let norm = PIECE == 16 && in_norm.is_some();
    let pair_first = if norm && t < s.c { in_norm_pair(in_norm, n_img, s.c, t) } else { (0.0, 0.0) };

    let smem = shared::dynamic_smem_addr();
    let a_bytes = bm * row_bytes;
    let stage_bytes = a_bytes + k_out * row_bytes;
    // Gather tables after the stages: input-row offsets [r][ts], input-column offsets [r][ts], then a
    // (channel or u32::MAX past R*S*C, row-table | column-table byte offsets << 16) pair per piece.
    // Table rows are `ts` = bm + 4 words apart: the 8 lanes of one tile row reading up to 8 different
    // filter offsets (8-byte pieces) then hit 8 different banks.
    let ts = bm + 4;
    let tab = smem + STAGES * stage_bytes;
    let col_tab = s.r * ts * 4;
    let ktab = tab + 2 * col_tab;
    {
        let hu = (s.h * s.up) as i32;
        let wu = (s.wd * s.up) as i32;
        let up_shift = s.up >> 1; // up is 1 or 2 (host-checked): source = upsampled >> up_shift
        let mut id = t;
        while id < bm * s.r {
            let (rr, row) = (id / bm, id % bm);
            let mut m = m0 + row;
            if m >= pq {
                m = pq - 1;
            }
            let oh = m / s.q_out;
            let ow = m - oh * s.q_out;
            let (ih, iw) = if sub {
                // Source row i + a - 1 + rr and column j + b - 1 + rr, clamped (= reflected upsampled).
                let clamp = |v: i32, n: u32| if v < 0 { 0 } else if v as u32 >= n { n - 1 } else { v as u32 };
                (clamp((oh + (parity >> 1) + rr) as i32 - 1, s.h), clamp((ow + (parity & 1) + rr) as i32 - 1, s.wd))
            } else {
                (reflect((oh * s.stride + rr) as i32 - s.pad as i32, hu) as u32 >> up_shift, reflect((ow * s.stride + rr) as i32 - s.pad as i32, wu) as u32 >> up_shift)
            };
            st_u32(tab + (rr * ts + row) * 4, (n_img * s.h + ih) * s.wd * s.c);
            st_u32(tab + col_tab + (rr * ts + row) * 4, iw * s.c);
            id += CONV2D_TC_THREADS;
        }
        let n_pieces = ktiles * BK / piece_elems;
        let mut id = t;
        while id < n_pieces {
            let kk = id * piece_elems;
            let (ci, offs) = if kk < kg {
                let tap = kk / s.c;
                let rr = tap / s.r;
                (kk - tap * s.c, rr * ts * 4 | ((col_tab + (tap - rr * s.r) * ts * 4) << 16))
            } else {
                (u32::MAX, 0)
            };
            st_u32(ktab + id * 8, ci);
            st_u32(ktab + id * 8 + 4, offs);
            id += CONV2D_TC_THREADS;
        }
        // The input norm's (a, b) of this sample's C channels (16-byte aligned: n_pieces is a multiple of 4).
        if norm {
            let mut id = t;
            while id < s.c {
                let (a, b) = if id == t { pair_first } else { in_norm_pair(in_norm, n_img, s.c, id) };
                shared::st_f32(ktab + n_pieces * 8 + id * 8, a);
                shared::st_f32(ktab + n_pieces * 8 + id * 8 + 4, b);
                id += CONV2D_TC_THREADS;
            }
        }
        sync_threads();
    }
    let coef_tab = ktab + (ktiles * BK / piece_elems) * 8;

    // A gather: this thread's piece column j and rows a_row0 + i * a_row_step (same swizzle term).
    let j = t % pieces;
    let a_row0 = t / pieces;
    let a_dst0 = swz::<BK>(a_row0, (j * PIECE) / 16) + (j * PIECE) % 16;
    let a_tab0 = tab + a_row0 * 4;
    // B: chunk b_j of rows b_n0 + i * b_row_step.
    let b_j = t % chunks;
    let b_n0 = t / chunks;
    let b_dst0 = swz::<BK>(b_n0, b_j);
    // Sub-pixel mode: this parity's weight matrix.
    let w = w.wrapping_add((parity * k_out * s.kw) as usize);
    let b_src0 = w.wrapping_add(b_n0 as usize * s.kw as usize + b_j as usize * 8);

    // Issues the copies of GEMM-K step `kt` into pipeline stage `stage`.
    let load = |stage: u32, kt: u32| {
        let base = smem + stage * stage_bytes;
        let k0 = kt * BK;
        let [ci, offs] = ld_v2_u32(ktab + (k0 / piece_elems + j) * 8);
        let a_ok = ci != u32::MAX;
        let ci = if a_ok { ci } else { 0 };
        let row_t = a_tab0 + (offs & 0xffff);
        let col_t = a_tab0 + (offs >> 16);
        unroll_n!(A_ROWS, |i| {
            let dr = a_row_step * i as u32;
            if A_ROWS > 1 || a_row0 < bm {
                let off = ld_u32(row_t + dr * 4) + ld_u32(col_t + dr * 4) + ci;
                let src = x.add(off as usize) as *const u8;
                let dst = base + a_dst0 + dr * row_bytes;
                // L1-cached: neighbouring output pixels and taps re-read the same input.
                if PIECE == 16 {
                    cp_async_16_ca(dst, src, if a_ok { 16 } else { 0 });
                } else {
                    cp_async_8(dst, src, if a_ok { 8 } else { 0 });
                }
            }
        });
        // B: K rows x `chunks` chunks (rows zero-padded to kw on the host; a half step past kw zero-fills).
        let b_ok = k0 + b_j * 8 < s.kw;
        unroll_n!(b_iters, |i| {
            let n = b_n0 + b_row_step * i as u32;
            if b_iters * CONV2D_TC_THREADS == k_out * chunks || n < k_out {
                let src = if b_ok { b_src0.wrapping_add((b_row_step * i as u32) as usize * s.kw as usize + k0 as usize) } else { w };
                cp_async_16(base + a_bytes + b_dst0 + b_row_step * i as u32 * row_bytes, src as *const u8, if b_ok { 16 } else { 0 });
            }
        });
    };

    let mut acc = [[[0f32; 4]; NT]; MT];

    // Prologue: the first STAGES - 1 steps (one commit group each, possibly empty).
    for st in 0..STAGES - 1 {
        if st < ktiles {
            load(st, st);
        }
        cp_async_commit();
    }

    // Warp tile: rows wm*16MT .. +16MT of the block, output channels wn*8NT .. +8NT.
    let wm = warp % (8 / WN);
    let wn = warp / (8 / WN);
    let row0 = wm * 16 * MT as u32;
    let col0 = wn * 8 * NT as u32;
    // ldmatrix row addresses of this lane (before the stage base, the m-tile and the k16 step).
    let a_row = row0 + (lane % 16);
    let a_chunk = lane / 16;
    // NT = 4: one x4 gives n-tiles 2jp, 2jp+1 of one k16 step; NT = 1: one x2 (lanes 0..16) gives one step.
    let (b_row, b_chunk) = if NT == 4 { (col0 + (lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1) } else { (col0 + (lane & 7), (lane >> 3) & 1) };

    let mut kt = 0;
    while kt < ktiles {
        // Step kt has landed (at most STAGES - 2 younger groups pending) for this thread; the barrier
        // makes every thread's copies visible and guarantees step kt - 1's stage is no longer read.
        match STAGES {
            2 => cp_async_wait_group::<0>(),
            3 => cp_async_wait_group::<1>(),
            _ => cp_async_wait_group::<2>(),
        }
        // Input norm: this thread's own pieces of step kt have landed; x -> relu(a_c x + b_c) in place,
        // before the barrier publishes them to ldmatrix. Zero-filled pieces past R*S*C are left alone.
        if norm {
            let base = smem + (kt % STAGES) * stage_bytes;
            let [ci, _] = ld_v2_u32(ktab + (kt * BK / piece_elems + j) * 8);
            if ci != u32::MAX {
                let cf = coef_tab + ci * 8;
                let ab = [ld_v4_f32(cf), ld_v4_f32(cf + 16), ld_v4_f32(cf + 32), ld_v4_f32(cf + 48)];
                unroll_n!(A_ROWS, |i| {
                    if A_ROWS > 1 || a_row0 < bm {
                        let addr = base + a_dst0 + a_row_step * i as u32 * row_bytes;
                        st_v4_u32(addr, in_norm_relu(ld_v4_u32(addr), &ab));
                    }
                });
            }
        }
        sync_threads();
        let next = kt + STAGES - 1;
        if next < ktiles {
            load(next % STAGES, next);
        }
        cp_async_commit();

        let a_base = smem + (kt % STAGES) * stage_bytes;
        let b_base = a_base + a_bytes;
        // kw is a multiple of 32: with BK = 64 the last step may hold only two k16 steps.
        let full = BK == 32 || s.kw - kt * BK >= BK;
        unroll_n!(BK / 16, |ks| {
            let kc = ks as u32 * 2;
            if ks < 2 || full {
                let mut a = [[0u32; 4]; MT];
                unroll_n!(MT, |mi| {
                    a[mi] = ldmatrix_x4(a_base + swz::<BK>(a_row, kc + a_chunk) + mi as u32 * 16 * row_bytes);
                });
                if NT == 1 {
                    let b = ldmatrix_x2(b_base + swz::<BK>(b_row, kc + b_chunk));
                    unroll_n!(MT, |mi| {
                        mma_f16_16816(&mut acc[mi][0], a[mi], b);
                    });
                } else {
                    unroll!(2, |jp| {
                        let bf = ldmatrix_x4(b_base + swz::<BK>(b_row, kc + b_chunk) + jp as u32 * 16 * row_bytes);
                        unroll_n!(MT, |mi| {
                            mma_f16_16816(&mut acc[mi][(2 * jp) % NT], a[mi], [bf[0], bf[1]]);
                            mma_f16_16816(&mut acc[mi][(2 * jp + 1) % NT], a[mi], [bf[2], bf[3]]);
                        });
                    });
                }
            }
        });
        kt += 1;
    }
    // Drain the (empty) trailing groups; the barrier lets the epilogue reuse the pipeline's memory.
    cp_async_wait_group::<0>();
    sync_threads();

    // Epilogue: per m-tile, rows g and g + 8; per n-tile, columns 2tq and 2tq + 1.
    let g = lane / 4;
    let tq = lane % 4;
    let row_ok = |mi: usize, half: usize| m0 + row0 + mi as u32 * 16 + g + 8 * (half as u32) < pq;
    if mode == CONV2D_TC_OUT_F16_STATS {
        let pix0 = (n_img * pq) as usize;
        unroll_n!(MT, |mi| {
            unroll!(2, |half| {
                let m = m0 + row0 + mi as u32 * 16 + g + 8 * half as u32;
                if m < pq {
                    let opix = if sub {
                        // Output pixel (2i + a, 2j + b) of the 2H x 2W image.
                        let (i, j) = (m / s.q_out, m % s.q_out);
                        ((n_img * 2 * s.p_out + 2 * i + (parity >> 1)) * 2 * s.q_out + 2 * j + (parity & 1)) as usize
                    } else {
                        pix0 + m as usize
                    };
                    let out = y16.add(opix * (k_out / 2) as usize);
                    unroll_n!(NT, |jn| {
                        let col = col0 + tq * 2 + jn as u32 * 8;
                        *out.add((col / 2) as usize) = pack_f16x2(acc[mi][jn][2 * half], acc[mi][jn][2 * half + 1]);
                    });
                }
            });
        });
        // InstanceNorm partials of this tile: per channel, the sum over the valid rows (each warp's
        // rows reduced across its lanes, then across the 8 / WN warps of its column group through
        // shared memory), the tile mean, then the sum of squared deviations the same way.
        let count = if pq - m0 < bm { pq - m0 } else { bm };
        let red = shared::dynamic_smem::<f32>(); // [8 / WN][K] sums, then [8 / WN][K] M2
        let wms = (8 / WN) as usize;
        let mut mean = [[0f32; 2]; NT];
        unroll_n!(NT, |jn| {
            unroll!(2, |e| {
                let mut v = 0f32;
                unroll_n!(MT, |mi| {
                    unroll!(2, |half| {
                        if row_ok(mi, half) {
                            v += acc[mi][jn][2 * half + e];
                        }
                    });
                });
                let v = sum_rows(v);
                if g == 0 {
                    *red.add(wm as usize * k_out as usize + (col0 + tq * 2 + jn as u32 * 8) as usize + e) = v;
                }
            });
        });
        sync_threads();
        unroll_n!(NT, |jn| {
            unroll!(2, |e| {
                let col = (col0 + tq * 2 + jn as u32 * 8) as usize + e;
                let mut tot = 0f32;
                for r in 0..wms {
                    tot += *red.add(r * k_out as usize + col);
                }
                mean[jn][e] = tot / count as f32;
            });
        });
        let red2 = red.add(wms * k_out as usize);
        unroll_n!(NT, |jn| {
            unroll!(2, |e| {
                let mut v = 0f32;
                unroll_n!(MT, |mi| {
                    unroll!(2, |half| {
                        if row_ok(mi, half) {
                            let d = acc[mi][jn][2 * half + e] - mean[jn][e];
                            v += d * d;
                        }
                    });
                });
                let v = sum_rows(v);
                if g == 0 {
                    *red2.add(wm as usize * k_out as usize + (col0 + tq * 2 + jn as u32 * 8) as usize + e) = v;
                }
            });
        });
        sync_threads();
        if t < k_out {
            let (mut tot, mut m2) = (0f32, 0f32);
            for r in 0..wms {
                tot += *red.add(r * k_out as usize + t as usize);
                m2 += *red2.add(r * k_out as usize + t as usize);
            }
            if !sums.is_null() {
                // Added to the plane's f64 sums (the consumer computes the coefficients).
                in_sums_add(sums.add(((n_img * k_out + t) * NORM_SUMS_STRIDE) as usize), count as f32, tot / count as f32, m2);
            } else {
                // Tile index over the grid (= the plane's tile, or parity-major in sub-pixel mode).
                let (tiles, tile) = (grid_dim_x(), block_idx_x());
                let o = part.add((((n_img * k_out + t) * tiles + tile) * 2) as usize);
                *o = tot / count as f32;
                *o.add(1) = m2;
            }
        }
    } else {
        // NCHW f32 + bias, channels below k_real.
        unroll_n!(MT, |mi| {
            unroll!(2, |half| {
                let m = m0 + row0 + mi as u32 * 16 + g + 8 * half as u32;
                if m < pq {
                    unroll_n!(NT, |jn| {
                        unroll!(2, |e| {
                            let col = col0 + tq * 2 + jn as u32 * 8 + e as u32;
                            if col < k_real {
                                *y32.add(((n_img * k_real + col) * pq + m) as usize) = acc[mi][jn][2 * half + e] + *bias.add(col as usize);
                            }
                        });
                    });
                }
            });
        });
    }
}

macro_rules! conv2d_tc_entry {
    ($(#[$doc:meta])* $name:ident, mt $mt:expr, nt $nt:expr, wn $wn:expr, bk $bk:expr, stages $st:expr, piece $piece:expr, rows $rows:expr) => {
        $(#[$doc])*
        ///
        /// Block: `CONV2D_TC_THREADS`; grid (ceil(P*Q / BM), N); dynamic shared memory:
        /// `conv2d_tc_smem(variant, K, R, kw)` (the variant `launch::conv2d_tc_variant` names this kernel
        /// for). Requires the host's checks: C % 8 == 0 (or C == 4 for the 8-byte variants), kw % 32 == 0
        /// and kw ≥ R*S*C, reflection padding `pad` < H * up and < W * up, every index below 2^31; `mode`
        /// chooses the epilogue (see the module comment); `in_coef` is the optional input norm (null =
        /// none; with it, `launch::conv2d_tc_in_norm_smem(C)` more bytes of shared memory).
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "ptx-kernel" fn $name(
            x: *const u16,
            w: *const u16,
            h: u32,
            wd: u32,
            c: u32,
            kw: u32,
            p_out: u32,
            q_out: u32,
            r: u32,
            stride: u32,
            pad: u32,
            up: u32,
            mode: u32,
            y16: *mut u32,
            part: *mut f32,
            sums: *mut f64,
            y32: *mut f32,
            bias: *const f32,
            k_real: u32,
            in_norm: InNorm,
        ) {
            crate::device::grid_dependency_wait();
            let s = Shape { h, wd, c, kw, p_out, q_out, r, stride, pad, up };
            conv2d_tc_body::<$mt, $nt, $wn, $bk, $st, $piece, $rows>(x, w, s, mode, y16, part, sums, y32, bias, k_real, &in_norm)
        }
    };
}

conv2d_tc_entry!(
    /// K = 8 (fallback for the last layer; the network uses `conv2d_tc_halo9_k8`): BM 128, 8 warps of
    /// 16 pixels x 8 channels, BK 32, 3 stages.
    conv2d_tc_k8, mt 1, nt 1, wn 1, bk 32, stages 3, piece 16, rows 2
);
conv2d_tc_entry!(
    /// K = 32 (deconv2), 256-pixel tiles: 8 warps of 32 pixels x 32 channels (MT = 2), BK 64, 4 stages.
    /// Against the first version (16 x 32 warp tiles, BK 32, 3 stages, 8 mma per barrier and warp, 6
    /// ldmatrix per 8 mma, ~25 integer instructions per gathered piece) each barrier now covers 32 mma
    /// per warp at 4 ldmatrix per 8 mma, and a piece costs two shared loads and two adds (tables).
    /// Expected: about 2x on deconv2 (0.48 ms -> ~0.25 ms), the loop being issue-bound on gather
    /// arithmetic and barrier stalls, not on the tensor cores. 154 KB shared memory: one block per SM
    /// (see `conv2d_tc_k32_bk32` for the two-blocks-per-SM alternative).
    conv2d_tc_k32, mt 2, nt 4, wn 1, bk 64, stages 4, piece 16, rows 8
);
conv2d_tc_entry!(
    /// K = 32, 256-pixel tiles as `conv2d_tc_k32` but BK 32 (16 mma per barrier and warp) and 78 KB of
    /// shared memory for 3x3, so two blocks (16 warps) share an SM and hide each other's barrier stalls.
    /// The default K = 32 256-pixel kernel (`conv2d_tc_k32` with STYLEFORGE_CONV_TC_K32=bk64): deconv2 at
    /// 1024x1024 0.347 ms against 0.371 ms for BK 64 (H200, `bench --layers`).
    conv2d_tc_k32_bk32, mt 2, nt 4, wn 1, bk 32, stages 4, piece 16, rows 4
);
conv2d_tc_entry!(
    /// K = 32, 128-pixel tiles (small grids): 16 x 32 warp tiles, BK 64, 4 stages.
    conv2d_tc_k32_m128, mt 1, nt 4, wn 1, bk 64, stages 4, piece 16, rows 4
);
conv2d_tc_entry!(
    /// K = 64 (conv2, deconv1), 128-pixel tiles: 4 x 2 warps of 32 pixels x 32 channels, BK 64 (32 mma
    /// per barrier and warp instead of 16), 4 stages (~100 KB: two blocks per SM), table gather.
    /// Expected: 1.3-1.5x (fewer barriers and far cheaper address generation per piece).
    conv2d_tc_k64, mt 2, nt 4, wn 2, bk 64, stages 4, piece 16, rows 4
);
conv2d_tc_entry!(
    /// K = 64, 64-pixel tiles (small grids): 4 x 2 warps of 16 x 32, BK 64, 4 stages.
    conv2d_tc_k64_m64, mt 1, nt 4, wn 2, bk 64, stages 4, piece 16, rows 2
);
conv2d_tc_entry!(
    /// K = 128 (conv3, residual blocks), 128-pixel tiles: 2 x 4 warps of 64 pixels x 32 channels, BK 64
    /// (64 mma per barrier and warp instead of 32), 3 stages (~100 KB: still two blocks per SM), table
    /// gather (4 pieces per thread and step at two shared loads each instead of ~25 instructions).
    /// Expected: 1.3-1.6x on the residual convs (174 -> ~250 TFLOP/s).
    conv2d_tc_k128, mt 4, nt 4, wn 4, bk 64, stages 3, piece 16, rows 4
);
conv2d_tc_entry!(
    /// K = 128, 64-pixel tiles (small grids): 2 x 4 warps of 32 x 32, BK 64, 4 stages.
    conv2d_tc_k128_m64, mt 2, nt 4, wn 4, bk 64, stages 4, piece 16, rows 2
);
conv2d_tc_entry!(
    /// K = 128, 32-pixel tiles (small grids): 2 x 4 warps of 16 x 32, BK 64, 4 stages.
    conv2d_tc_k128_m32, mt 1, nt 4, wn 4, bk 64, stages 4, piece 16, rows 1
);
conv2d_tc_entry!(
    /// K = 32 from the 4-channel packed input (conv1, 9x9), 256-pixel tiles: 8 warps of 32 pixels x 32
    /// channels, BK 32 (kw = 352 stays a multiple of the step: no extra padding), 4 stages, 8-byte pieces
    /// (one tap each) through the tables: 8 pieces per thread and step at ~7 instructions instead of 4
    /// at ~30 plus two divisions, and 16 mma per barrier and warp instead of 8. ~91 KB: two blocks per SM.
    /// Expected: ~2x on conv1 (0.44 ms -> ~0.22 ms).
    conv2d_tc_c4_k32, mt 2, nt 4, wn 1, bk 32, stages 4, piece 8, rows 8
);
conv2d_tc_entry!(
    /// K = 32 from the 4-channel input, 128-pixel tiles (small grids): 16 x 32 warp tiles, BK 32, 4 stages.
    conv2d_tc_c4_k32_m128, mt 1, nt 4, wn 1, bk 32, stages 4, piece 8, rows 4
);

/// Shared-window address of 16-byte chunk `chunk` (0..4) of halo pixel `hp` in the 32-channel halo tiles of
/// `conv2d_tc_halo9_k8` and `conv2d_tc_halo9_taps`: 64-byte pixels, chunks swizzled by `(hp >> 1) & 3` so
/// that eight consecutive pixels of one chunk column are conflict-free for ldmatrix.
#[inline(always)]
pub(super) fn halo32_chunk(smem: u32, hp: u32, chunk: u32) -> u32 {
    smem + hp * 64 + ((chunk ^ ((hp >> 1) & 3)) << 4)
}

/// Issues (does not commit) the cp.async copies of a 32-channel halo tile for a 9x9 reflection-padded
/// conv: `hpix` pixels, `hw` per row, halo pixel (hy, hx) = input (ty0 + hy - 4, tx0 + hx - 4) of image
/// `n_img`, reflected; rows and columns past the output (partial tiles) are clamped first (their results
/// are not stored). Thread t copies chunks t, t + 256, ... (so always channel group t % 4).
///
/// # Safety
/// 256 threads; x NHWC f16 [N, h, wd, 32] with h, wd ≥ 5 and n_img < N; the tile lies inside the
/// launch's dynamic shared memory from `smem`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn halo32_load(x: *const u16, smem: u32, h: u32, wd: u32, tx0: u32, ty0: u32, n_img: u32, hw: u32, hpix: u32) {
    let mut id = thread_idx_x();
    while id < hpix * 4 {
        let (hp, ch) = (id / 4, id % 4);
        let (hy, hx) = (hp / hw, hp % hw);
        let ih = reflect(((ty0 + hy) as i32 - 4).min(h as i32 + 3), h as i32) as u32;
        let iw = reflect(((tx0 + hx) as i32 - 4).min(wd as i32 + 3), wd as i32) as u32;
        let src = x.add(((n_img * h + ih) * wd + iw) as usize * crate::launch::CONV2D_TC_HALO_C as usize + ch as usize * 8);
        cp_async_16_ca(halo32_chunk(smem, hp, ch), src as *const u8, 16);
        id += CONV2D_TC_THREADS;
    }
}

/// The input norm + ReLU (`in_norm_relu`, the coefficients of `nrm`, see `InNorm`) on the halo chunks
/// this thread copied with [`halo32_load`] (all of channel group t % 4: the stride 256 is a multiple of 4).
/// Call after this thread's cp.async wait and before the barrier that publishes the tile.
///
/// # Safety
/// As [`halo32_load`] and [`halo32_in_coef`].
#[inline(always)]
pub(super) unsafe fn halo32_in_norm(nrm: &InNorm, smem: u32, n_img: u32, hpix: u32) {
    halo32_in_norm_with(&halo32_in_coef(nrm, n_img), smem, hpix);
}

/// The (a, b) pairs of the 8 channels of this thread's 16-byte chunk column (`t % 4`) for
/// [`halo32_in_norm_with`]: load them before waiting for the tile, so their round trip overlaps its copies.
/// With plane sums, lane l of every warp computes channel l's pair (32 channels, one warp) and the lanes
/// exchange them by shuffles: 32 computations per warp instead of 8 per thread.
///
/// # Safety
/// All 32 lanes of each warp call it (converged); `nrm.is_some()` with image `n_img`'s 32 channels, after
/// `griddepcontrol.wait`.
#[inline(always)]
pub(super) unsafe fn halo32_in_coef(nrm: &InNorm, n_img: u32) -> [[f32; 4]; 4] {
    const C: u32 = crate::launch::CONV2D_TC_HALO_C;
    const { assert!(C == 32) };
    let ch = thread_idx_x() % 4;
    let mut ab = [[0f32; 4]; 4];
    if nrm.sums != 0 {
        let (a, b) = in_norm_pair(nrm, n_img, C, thread_idx_x() % 32);
        unroll!(8, |k| {
            let src = ch * 8 + k as u32;
            ab[k / 2][(k % 2) * 2] = shfl_idx_f32(a, src);
            ab[k / 2][(k % 2) * 2 + 1] = shfl_idx_f32(b, src);
        });
    } else {
        let cf = (nrm.coef as *const f32).add(((n_img * C + ch * 8) * 2) as usize);
        unroll!(4, |q| {
            unroll!(4, |e| {
                ab[q][e] = *cf.add(q * 4 + e);
            });
        });
    }
    ab
}

/// [`halo32_in_norm`] with the coefficients already loaded ([`halo32_in_coef`]).
///
/// # Safety
/// As [`halo32_load`].
#[inline(always)]
pub(super) unsafe fn halo32_in_norm_with(ab: &[[f32; 4]; 4], smem: u32, hpix: u32) {
    let t = thread_idx_x();
    let ch = t % 4;
    let mut id = t;
    while id < hpix * 4 {
        let addr = halo32_chunk(smem, id / 4, ch);
        st_v4_u32(addr, in_norm_relu(ld_v4_u32(addr), ab));
        id += CONV2D_TC_THREADS;
    }
}

/// `conv2d_tc` for the network's last layer: 9x9, stride 1, reflection pad 4, C = 32 input channels,
/// 8 computed output channels, NCHW f32 output of the first `k_real` plus bias. Unlike the gather kernels
/// above, each block stages its input tile with the halo in shared memory once (16-byte chunks swizzled
/// by `(pixel >> 1) & 3`, so 8 consecutive pixels of one chunk column are conflict-free for ldmatrix)
/// together with the whole weight in mma-fragment order (`w[((tap*2 + kc)*32 + lane)*4 ..+4]` = this
/// lane's b0..b3 for k16 step kc of the tap), and builds every tap's A fragments by pointing ldmatrix at
/// shifted pixels: the input is read from memory once per tile instead of 81 times.
/// Block: 256 threads = 8 warps, warp w computes output row ty0 + w, columns tx0 .. tx0 + 32 (two m-tiles).
/// Grid (ceil(Q / 32), ceil(P / 8), N); dynamic shared memory `CONV2D_TC_HALO_SMEM`. Requires (host):
/// H, W ≥ 5, k_real ≤ 8, every index below 2^31. `in_norm` (`InNorm`, optional): the input norm + ReLU of the
/// module comment, applied to the staged tile by the threads that staged it (ptxas: 31 -> 39 registers).
/// Halo pixels are reflected copies, so they get the same transform as the pixels they copy.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn conv2d_tc_halo9_k8(x: *const u16, w: *const u16, h: u32, wd: u32, y32: *mut f32, bias: *const f32, k_real: u32, in_norm: InNorm) {
    crate::device::grid_dependency_wait();
    use crate::device::{block_idx_z, shared::ld_v2_u32};
    use crate::launch::{CONV2D_TC_HALO_C, CONV2D_TC_HALO_TH, CONV2D_TC_HALO_TW, CONV2D_TC_HALO_W_ELEMS};
    const HW: u32 = CONV2D_TC_HALO_TW + 8; // halo tile width
    const HPIX: u32 = (CONV2D_TC_HALO_TH + 8) * HW;
    const PIX_BYTES: u32 = CONV2D_TC_HALO_C * 2; // 64: four 16-byte chunks
    const { assert!(CONV2D_TC_THREADS == 256 && CONV2D_TC_HALO_TH == 8 && CONV2D_TC_HALO_TW == 32 && PIX_BYTES == 64) };
    let t = thread_idx_x();
    let warp = t / 32;
    let lane = t % 32;
    let tx0 = block_idx_x() * CONV2D_TC_HALO_TW;
    let ty0 = block_idx_y() * CONV2D_TC_HALO_TH;
    let n_img = block_idx_z();
    let (p_out, q_out) = (h, wd); // stride 1, pad 4: same size
    let smem = shared::dynamic_smem_addr();
    let w_base = smem + HPIX * PIX_BYTES;
    let chunk_addr = |hp: u32, chunk: u32| halo32_chunk(smem, hp, chunk);

    // Stage the halo tile (input rows ty0-4 .. ty0+TH+4, columns tx0-4 .. tx0+TW+4) and the weight.
    halo32_load(x, smem, h, wd, tx0, ty0, n_img, HW, HPIX);
    let mut id = t;
    while id < CONV2D_TC_HALO_W_ELEMS / 8 {
        cp_async_16(w_base + id * 16, w.add(id as usize * 8) as *const u8, 16);
        id += CONV2D_TC_THREADS;
    }
    cp_async_commit();
    cp_async_wait_group::<0>();
    if in_norm.is_some() {
        halo32_in_norm(&in_norm, smem, n_img, HPIX);
    }
    sync_threads();

    let mut acc = [[0f32; 4]; 2];
    // This lane's ldmatrix row: pixel column mi*16 + lane%16 of the warp's row, chunk (kc*2 + lane/16).
    let col = lane % 16;
    let half = lane / 16;
    let mut r = 0;
    while r < 9 {
        let row_base = (warp + r) * HW;
        let mut s = 0;
        while s < 9 {
            let step0 = (r * 9 + s) * 2;
            unroll!(2, |kc| {
                let b = ld_v2_u32(w_base + ((step0 + kc as u32) * 32 + lane) * 8);
                unroll!(2, |mi| {
                    let hp = row_base + mi as u32 * 16 + col + s;
                    let a = ldmatrix_x4(chunk_addr(hp, kc as u32 * 2 + half));
                    mma_f16_16816(&mut acc[mi], a, b);
                });
            });
            s += 1;
        }
        r += 1;
    }

    // Epilogue: m-tile mi rows g, g+8 = output columns; fragment columns 2tq, 2tq+1 = output channels.
    let g = lane / 4;
    let tq = lane % 4;
    let oh = ty0 + warp;
    if oh < p_out {
        unroll!(2, |mi| {
            unroll!(2, |hf| {
                let ow = tx0 + mi as u32 * 16 + g + 8 * hf as u32;
                if ow < q_out {
                    unroll!(2, |e| {
                        let ch = tq * 2 + e as u32;
                        if ch < k_real {
                            *y32.add((((n_img * k_real + ch) * p_out + oh) * q_out + ow) as usize) = acc[mi][2 * hf + e] + *bias.add(ch as usize);
                        }
                    });
                }
            });
        });
    }
}

/// `mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32`: `d += a * b` with A 16x8 (`a[0]` row g, k 2t..2t+1;
/// `a[1]` row g+8) and B 8x8 (`b` k 2t..2t+1, column g), g = lane / 4, t = lane % 4.
///
/// # Safety
/// Every lane of the warp must execute it (converged); sm_80 or later.
#[inline(always)]
unsafe fn mma_f16_1688(d: &mut [f32; 4], a: [u32; 2], b: u32) {
    asm!(
        "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {{{0}, {1}, {2}, {3}}}, {{{4}, {5}}}, {{{6}}}, {{{0}, {1}, {2}, {3}}};",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3],
        in(reg32) a[0], in(reg32) a[1], in(reg32) b,
        options(nomem, nostack)
    );
}

/// Four u32 (16 bytes, aligned: stored as one vector).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct U32x4([u32; 4]);

/// `shfl.sync.bfly.b32` of a u32: the value of lane `lane ^ xor_mask`. All 32 lanes must call it.
#[inline(always)]
fn shfl_xor_u32(v: u32, xor_mask: u32) -> u32 {
    f32::to_bits(shfl_xor_f32(f32::from_bits(v), xor_mask))
}

/// `c ? a : b` as a `selp` (keeps the quad transposes branch-free).
#[inline(always)]
fn sel(c: bool, a: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: pure arithmetic on registers.
    unsafe {
        asm!("{{ .reg .pred p; setp.ne.u32 p, {1}, 0; selp.b32 {0}, {2}, {3}, p; }}",
             out(reg32) r, in(reg32) c as u32, in(reg32) a, in(reg32) b, options(pure, nomem, nostack))
    };
    r
}

/// `ld.shared.v4.u32` at a shared-window byte address.
///
/// # Safety
/// `addr` must be 16-byte aligned with `addr .. addr + 16` inside the launch's dynamic shared memory.
#[inline(always)]
pub(super) unsafe fn ld_v4_u32(addr: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    asm!("ld.shared.v4.u32 {{{0}, {1}, {2}, {3}}}, [{4}];",
         out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr, options(nostack, readonly));
    [a, b, c, d]
}

/// `conv2d_tc` for the network's first layer: 9x9, stride 1, reflection pad 4, x NHWC f16 with 4 (packed
/// RGB + 0) channels, all 32 output channels, NHWC f16 output (saturated) plus per-tile InstanceNorm
/// partials as `CONV2D_TC_OUT_F16_STATS` writes them, the tiles being 2-D: tile = blockIdx.y * gridDim.x
/// + blockIdx.x covers output rows ty0 .. ty0 + TH and columns tx0 .. tx0 + TW (clipped), and
/// `part[((n*32 + ch)*tiles + tile)*2 ..+2]` = (mean, M2) of its pixels (`nhwc_in_coef` is told the 2-D
/// tiling by the host).
///
/// Like `conv2d_tc_halo9_k8`, each block stages its input tile with the halo in shared memory once and the
/// whole weight in fragment order, instead of gathering every tap from memory (`conv2d_tc_c4_k32`: 81
/// reads of each input pixel, a table-driven gather per piece). A pixel is 8 bytes (4 channels), so one
/// ldmatrix row (8 f16) is two consecutive taps of one filter row and a k16 step of the GEMM
/// (k = tap * 4 + channel) is four taps: taps 4st .. 4st+3 of filter row r for st = 0, 1 (two
/// ldmatrix.x4 rows per pixel: taps 4st, 4st+1 and 4st+2, 4st+3), and tap 8 with a zero tap 9 as one
/// m16n8k8 step (ldmatrix.x2), so a filter row costs 2.5 k16 steps for 2.25 of real work (GEMM-K 360 for
/// 324, against 352 for the gather kernel). ldmatrix needs 16-byte aligned rows but half of the output
/// pixels start at an odd 8-byte pixel: the halo is staged as pair slots, slot j of a halo row holding
/// pixels j and j + 1 (16 bytes), so the row of output column ox for taps s, s+1 is slot ox + s; eight
/// consecutive columns read 8 consecutive slots (conflict-free).
///
/// Block: 256 threads = 8 warps; warp w computes output rows ty0 + 2w, ty0 + 2w + 1, each as two m-tiles
/// of 16 columns, x all 32 channels (4 n-tiles): per filter row, per k16 step, two ld.shared.v4 of weight
/// fragments feed 16 mma. Weight in shared memory (`w[((r*5 + j)*32 + lane)*8 ..+8]`, see
/// `host::ops::conv2d_tc::pack_weight_c4_halo9`): j = 2st + p holds (b0, b1) of n-tiles 2p and 2p+1 for
/// k16 step st, j = 4 the k8 step's b of n-tiles 0..3.
///
/// Expected: conv1 at 1024x1024 from 0.336 ms (`conv2d_tc_c4_k32`, H200) to ~0.10-0.12 ms: the mma work
/// is ~7M instructions (~0.05 ms at mma.sync rates), the rest the 64 MB f16 output and the staging; the
/// input is read from memory ~2.6x per tile (halo) instead of 81 times through L1/L2, with no gather
/// arithmetic.
///
/// Epilogue: the statistics two-pass from the f32 accumulators (3 barriers; the 8 warps' sums are combined
/// by one thread per channel, which keeps the kernel at 96 registers), then the f16 stores as 16-byte
/// vectors after a transpose within each lane quad. ptxas (sm_90): 96 registers, no spills, 40.6 KB of
/// shared memory: two blocks (16 warps) per SM, each staging while the other computes.
///
/// Grid (ceil(W / TW), ceil(H / TH), N); dynamic shared memory `CONV2D_TC_C4H_SMEM`. Requires (host):
/// H, W ≥ 5, N*H*W*32 < 2^31.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn conv2d_tc_c4_halo9_k32(x: *const u16, w: *const u16, h: u32, wd: u32, y16: *mut u32, part: *mut f32, sums: *mut f64) {
    crate::device::grid_dependency_wait();
    use crate::device::{block_idx_z, grid_dim_x, grid_dim_y};
    use crate::launch::{CONV2D_TC_C4H_K as K, CONV2D_TC_C4H_SLOTS as SLOTS, CONV2D_TC_C4H_TH as TH, CONV2D_TC_C4H_TW as TW, CONV2D_TC_C4H_W_ELEMS};
    const HROWS: u32 = TH + 8;
    const ROW_BYTES: u32 = SLOTS * 16;
    const W_CHUNKS: u32 = CONV2D_TC_C4H_W_ELEMS / 8;
    const { assert!(CONV2D_TC_THREADS == 256 && TH == 16 && TW == 32 && K == 32 && SLOTS == TW + 8) };
    let t = thread_idx_x();
    let warp = t / 32;
    let lane = t % 32;
    let tiles_x = grid_dim_x();
    let tile = block_idx_y() * tiles_x + block_idx_x();
    let tiles = tiles_x * grid_dim_y();
    let tx0 = block_idx_x() * TW;
    let ty0 = block_idx_y() * TH;
    let n_img = block_idx_z();
    let (p_out, q_out) = (h, wd); // stride 1, pad 4: same size
    let smem = shared::dynamic_smem_addr();
    let w_base = smem + HROWS * ROW_BYTES;

    // Stage the halo: halo row hy = input row ty0 + hy - 4, halo pixel hx = input column tx0 + hx - 4,
    // reflected (rows and columns past the output of partial tiles, and the zero-weight tap 9 of the last
    // column, are clamped to H+3 / W+3 first: finite values whose results are not stored or are multiplied
    // by zero). Piece `rem` of a halo row is half rem % 2 of slot rem / 2, i.e. pixel rem / 2 + rem % 2, at
    // byte rem * 8 of the row.
    let mut id = t;
    while id < HROWS * SLOTS * 2 {
        let hy = id / (SLOTS * 2);
        let rem = id - hy * SLOTS * 2;
        let hx = rem / 2 + rem % 2;
        let ih = reflect(((ty0 + hy) as i32 - 4).min(h as i32 + 3), h as i32) as u32;
        let iw = reflect(((tx0 + hx) as i32 - 4).min(wd as i32 + 3), wd as i32) as u32;
        let src = x.add(((n_img * h + ih) * wd + iw) as usize * 4);
        cp_async_8(smem + hy * ROW_BYTES + rem * 8, src as *const u8, 8);
        id += CONV2D_TC_THREADS;
    }
    let mut id = t;
    while id < W_CHUNKS {
        cp_async_16(w_base + id * 16, w.add(id as usize * 8) as *const u8, 16);
        id += CONV2D_TC_THREADS;
    }
    cp_async_commit();
    cp_async_wait_group::<0>();
    sync_threads();

    // acc[mi][nt]: m-tile mi = output row 2w + mi / 2, columns (mi % 2) * 16 .. +16; n-tile nt = channels
    // 8nt .. 8nt + 8.
    let mut acc = [[[0f32; 4]; 4]; 4];
    // This lane's ldmatrix row: column lane % 16 of the m-tile; lanes 16..32 give the k 8..15 half (the slot
    // two pixels on). The k8 step's x2 uses lanes 0..16 only (the others point at valid slots too).
    let a_lane = smem + (2 * warp * SLOTS + lane % 16) * 16;
    let a_half = (lane / 16) * 32;
    let a_off = |mi: usize| (mi as u32 / 2) * ROW_BYTES + (mi as u32 % 2) * 256;
    let mut r = 0;
    while r < 9 {
        let a_r = a_lane + r * ROW_BYTES;
        let w_r = w_base + (r * 5 * 32 + lane) * 16;
        unroll!(2, |st| {
            let b01 = ld_v4_u32(w_r + st as u32 * 2 * 512);
            let b23 = ld_v4_u32(w_r + (st as u32 * 2 + 1) * 512);
            unroll!(4, |mi| {
                let a = ldmatrix_x4(a_r + a_off(mi) + st as u32 * 64 + a_half);
                mma_f16_16816(&mut acc[mi][0], a, [b01[0], b01[1]]);
                mma_f16_16816(&mut acc[mi][1], a, [b01[2], b01[3]]);
                mma_f16_16816(&mut acc[mi][2], a, [b23[0], b23[1]]);
                mma_f16_16816(&mut acc[mi][3], a, [b23[2], b23[3]]);
            });
        });
        let b8 = ld_v4_u32(w_r + 4 * 512);
        unroll!(4, |mi| {
            let a = ldmatrix_x2(a_r + a_off(mi) + 8 * 16);
            unroll!(4, |nt| {
                mma_f16_1688(&mut acc[mi][nt], a, b8[nt]);
            });
        });
        r += 1;
    }

    // Epilogue: m-tile mi rows g, g + 8 = output columns; fragment columns 2tq, 2tq + 1 of n-tile nt =
    // output channels 8nt + 2tq ..+2.
    let g = lane / 4;
    let tq = lane % 4;
    let oy = |mi: usize| ty0 + 2 * warp + mi as u32 / 2;
    let ox = |mi: usize, hf: usize| tx0 + (mi as u32 % 2) * 16 + g + 8 * hf as u32;
    let ok = |mi: usize, hf: usize| oy(mi) < p_out && ox(mi, hf) < q_out;
    // InstanceNorm partials of this tile (as `conv2d_tc_body`): per channel the sum over the valid pixels
    // (lanes, then the 8 warps through shared memory), the mean, then the sum of squared deviations.
    let rows = if p_out - ty0 < TH { p_out - ty0 } else { TH };
    let cols = if q_out - tx0 < TW { q_out - tx0 } else { TW };
    let count = (rows * cols) as f32;
    let red = shared::dynamic_smem::<f32>().add(((HROWS * ROW_BYTES + CONV2D_TC_C4H_W_ELEMS * 2) / 4) as usize);
    let red2 = red.add(8 * K as usize);
    let red_mean = red.add(16 * K as usize);
    let col = |nt: usize, e: usize| nt * 8 + tq as usize * 2 + e;
    let mut mean = [[0f32; 2]; 4];
    unroll!(4, |nt| {
        unroll!(2, |e| {
            let mut v = 0f32;
            unroll!(4, |mi| {
                unroll!(2, |hf| {
                    if ok(mi, hf) {
                        v += acc[mi][nt][2 * hf + e];
                    }
                });
            });
            let v = sum_rows(v);
            if g == 0 {
                *red.add(warp as usize * K as usize + col(nt, e)) = v;
            }
        });
    });
    sync_threads();
    // One thread per channel sums the 8 warps' sums (instead of every lane loading 64 values while the
    // accumulators are live: that cost registers), then every lane reads its 8 channels' means.
    if t < K {
        let mut tot = 0f32;
        for wi in 0..8 {
            tot += *red.add(wi * K as usize + t as usize);
        }
        *red_mean.add(t as usize) = tot / count;
    }
    sync_threads();
    unroll!(4, |nt| {
        unroll!(2, |e| {
            mean[nt][e] = *red_mean.add(col(nt, e));
        });
    });
    unroll!(4, |nt| {
        unroll!(2, |e| {
            let mut v = 0f32;
            unroll!(4, |mi| {
                unroll!(2, |hf| {
                    if ok(mi, hf) {
                        let d = acc[mi][nt][2 * hf + e] - mean[nt][e];
                        v += d * d;
                    }
                });
            });
            let v = sum_rows(v);
            if g == 0 {
                *red2.add(warp as usize * K as usize + col(nt, e)) = v;
            }
        });
    });
    // The 4 lanes of a quad hold the 32 channels of one pixel as v[nt] = channels 8nt + 2tq ..+2; a 4x4
    // transpose within the quad (two butterfly stages, 4 shuffles) gives lane tq the 8 channels of n-tile
    // tq (v[i] from lane i), stored as one 16-byte vector: each store instruction writes 8 consecutive
    // pixels x 64 bytes = 512 contiguous bytes (instead of 32-bit pieces in 16-byte runs).
    let (bit1, bit0) = (tq & 2 != 0, tq & 1 != 0);
    unroll!(4, |mi| {
        unroll!(2, |hf| {
            let mut v = [0u32; 4];
            unroll!(4, |nt| {
                v[nt] = pack_f16x2(acc[mi][nt][2 * hf], acc[mi][nt][2 * hf + 1]);
            });
            // Selects only (no branches around the shuffles).
            let r0 = shfl_xor_u32(sel(bit1, v[0], v[2]), 2);
            let r1 = shfl_xor_u32(sel(bit1, v[1], v[3]), 2);
            v = [sel(bit1, r0, v[0]), sel(bit1, r1, v[1]), sel(bit1, v[2], r0), sel(bit1, v[3], r1)];
            let r0 = shfl_xor_u32(sel(bit0, v[0], v[1]), 1);
            let r1 = shfl_xor_u32(sel(bit0, v[2], v[3]), 1);
            v = [sel(bit0, r0, v[0]), sel(bit0, v[1], r0), sel(bit0, r1, v[2]), sel(bit0, v[3], r1)];
            if ok(mi, hf) {
                let out = y16.add(((n_img * p_out + oy(mi)) * q_out + ox(mi, hf)) as usize * (K / 2) as usize + tq as usize * 4);
                *(out as *mut U32x4) = U32x4(v);
            }
        });
    });
    sync_threads();
    if t < K {
        let mut m2 = 0f32;
        for wi in 0..8 {
            m2 += *red2.add(wi * K as usize + t as usize);
        }
        if !sums.is_null() {
            in_sums_add(sums.add(((n_img * K + t) * NORM_SUMS_STRIDE) as usize), count, *red_mean.add(t as usize), m2);
        } else {
            let o = part.add((((n_img * K + t) * tiles + tile) * 2) as usize);
            *o = *red_mean.add(t as usize);
            *o.add(1) = m2;
        }
    }
}
