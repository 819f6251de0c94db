//! `attention_tc` kernels (host launcher: host/src/ops/attention_tc.rs; CPU reference:
//! models::ops::attention).
//!
//! Flash attention (FlashAttention-2's schedule) on tensor cores: f16 Q, K, V, f32 accumulation and
//! softmax, f16 output. A block takes `BQ = 16 · ATTN_TC_WARPS · MT` queries of one (batch, head); warp
//! w owns the MT 16-row m-tiles starting at row `w · 16 · MT`. Keys are walked in tiles of
//! `ATTN_TC_BK` = 64, double-buffered in shared memory with cp.async (tile j + 1 is copied while tile j
//! is used). Per key tile and warp: S = Q Kᵀ with `mma.m16n8k16` (Q fragments re-read from shared
//! memory with `ldmatrix`, K rows are the "col" B operand: plain `ldmatrix`), the online softmax on the
//! S accumulators in registers, then O += P V where P is the S accumulator repacked to f16 A fragments
//! (the C layout of two adjacent n-tiles is the A layout of one k16 step) and V's fragments come from
//! `ldmatrix.trans` (V is [key][dh], dh contiguous).
//!
//! Softmax in the log2 domain: the row max `m` is kept in raw logits, `p = 2^(s · c − m · c)` with
//! `c = scale · log2(e)` folded on the host (one FMA + one `ex2.approx` per element); O and the per-thread
//! partial row sums `ℓ` are rescaled by `2^((m_old − m_new) · c)` when the max grows, and O is divided by
//! ℓ (summed over the 4 lanes of a row) once at the end. Rows are reduced over the 4 lanes that share
//! them (`shfl.xor` 1, 2). Row sums use the f32 probabilities; the PV product uses them rounded to f16.
//!
//! Layout (as the fp32 `attention`): element d of head h of token t of batch b is at
//! `ptr[(b·N + t)·ld + h·dh + d]`; for the fused QKV buffer [B, N, 3D] q = buffer, k = buffer + D,
//! v = buffer + 2D, ld = 3D. Output [B, Nq, ld_o], head h at columns h·dh. Shared tiles are rows of dh
//! f16 (dh/8 16-byte chunks), XOR-swizzled: chunk c of row r at `r·2dh + 16·(c ^ (r & 7))` (8+ chunks)
//! or `16·(c ^ ((r >> 1) & 3))` (4 chunks, dh 32), so ldmatrix and cp.async are conflict-free.
//! Query rows past Nq and key rows past Nk are zero-filled (cp.async src_size 0); keys past Nk get
//! probability 0 (masked to −∞ before the max; every tile holds at least one real key, so every row max
//! is finite); rows past Nq are not stored. So any Nq, Nk ≥ 1 work and nothing is read out of bounds.
use crate::device::mma::{
    cp_async_16, cp_async_commit, cp_async_wait_group, ldmatrix_x4, ldmatrix_x4_trans,
    mma_f16_16816, pack_f16x2,
};
use crate::device::unroll::unroll;
use crate::device::{
    block_idx_x, block_idx_y, block_idx_z, math, shared, sync_threads, thread_idx_x, warp,
};
use crate::launch::{attn_tc_queries, attn_tc_smem, ATTN_TC_BK, ATTN_TC_WARPS};

const BK: usize = ATTN_TC_BK as usize;
const THREADS: usize = 32 * ATTN_TC_WARPS as usize;
/// Key n-tiles (of 8) per key tile.
const NT: usize = BK / 8;

const _: () = assert!(BK == 64 && NT == 8 && ATTN_TC_WARPS == 4);

/// Repeats a block for `i` in 0..N, N one of 1, 2, 4, 8 (a const expression), fully unrolled so that
/// register arrays indexed by `i` stay in registers.
macro_rules! unroll_n {
    ($n:expr, |$i:ident| $body:block) => {
        match $n {
            1 => {
                let $i: usize = 0;
                $body
            }
            2 => unroll!(2, |$i| $body),
            4 => unroll!(4, |$i| $body),
            _ => unroll!(8, |$i| $body),
        }
    };
}

/// Byte offset of 16-byte chunk `chunk` of row `row` in a tile with `ch` chunks per row (a constant
/// after inlining).
#[inline(always)]
fn swz(ch: u32, row: u32, chunk: u32) -> u32 {
    let x = if ch >= 8 { row & 7 } else { (row >> 1) & 3 };
    row * ch * 16 + ((chunk ^ x) << 4)
}

/// The kernel body for head dimension `DH` with `MT` m-tiles per warp, needing `attn_tc_smem(DH, MT)`
/// bytes of dynamic shared memory: query tile `qt` (of `attn_tc_queries(MT)` rows) of head `h` of
/// sequence `b` (the entries pass their block index).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn attention_tc_body<const DH: usize, const MT: usize>(
    qt: u32,
    h: u32,
    b: u32,
    q: *const u16,
    k: *const u16,
    v: *const u16,
    o: *mut u16,
    nq: u32,
    nk: u32,
    ld_q: u32,
    ld_kv: u32,
    ld_o: u32,
    scale_log2: f32,
) {
    // Chunks per row, dh n-tiles, QKᵀ k16 steps.
    const { assert!(DH == 32 || DH == 64 || DH == 128) };
    const { assert!(MT == 1 || MT == 2) };
    let ch: u32 = DH as u32 / 8;
    let bq: u32 = attn_tc_queries(MT as u32);
    const { assert!(attn_tc_smem(DH as u32, MT as u32) as usize == (16 * 4 * MT + 4 * BK) * DH * 2) };
    let dt_pairs = DH / 16; // dh n-tile pairs (PV) = k16 steps (QKᵀ)

    let t = thread_idx_x();
    let warp_id = t / 32;
    let lane = t % 32;
    let q0 = qt * bq;
    let h = h as usize;
    let b = b as usize;
    let (nq_s, nk_s) = (nq as usize, nk as usize);

    let row_bytes = DH as u32 * 2;
    let qs = shared::dynamic_smem_addr();
    let kv_base = qs + bq * row_bytes;
    let tile_bytes = BK as u32 * row_bytes;
    // Stage s: K at kv_base + 2 s tile_bytes, V right after it.
    let k_tile = |s: u32| kv_base + 2 * s * tile_bytes;

    let qb = q.add(b * nq_s * ld_q as usize + h * DH);
    let kb = k.add(b * nk_s * ld_kv as usize + h * DH);
    let vb = v.add(b * nk_s * ld_kv as usize + h * DH);

    // Q tile (rows past Nq zero-filled).
    {
        let mut id = t;
        while id < bq * ch {
            let r = id / ch;
            let c = id % ch;
            let ok = q0 + r < nq;
            let src = qb.add(if ok {
                (q0 + r) as usize * ld_q as usize + c as usize * 8
            } else {
                0
            });
            cp_async_16(
                qs + swz(ch, r, c),
                src as *const u8,
                if ok { 16 } else { 0 },
            );
            id += THREADS as u32;
        }
    }
    // K and V tile `kt` into stage `s` (keys past Nk zero-filled).
    let load_kv = |s: u32, kt: u32| {
        let ks = k_tile(s);
        let vs = ks + tile_bytes;
        let mut id = t;
        while id < BK as u32 * ch {
            let r = id / ch;
            let c = id % ch;
            let key = kt * BK as u32 + r;
            let ok = key < nk;
            let off = if ok {
                key as usize * ld_kv as usize + c as usize * 8
            } else {
                0
            };
            let sz = if ok { 16 } else { 0 };
            let sw = swz(ch, r, c);
            cp_async_16(ks + sw, kb.add(off) as *const u8, sz);
            cp_async_16(vs + sw, vb.add(off) as *const u8, sz);
            id += THREADS as u32;
        }
    };
    load_kv(0, 0);
    cp_async_commit();

    // ldmatrix row addresses of this lane: A (Q) rows, B (K) rows, B (V, transposed) rows.
    let q_row = warp_id * 16 * MT as u32 + (lane % 16);
    let q_chunk = lane / 16;
    let k_row = (lane & 7) + ((lane >> 4) << 3);
    let k_chunk = (lane >> 3) & 1;
    let v_row = (lane & 7) + (((lane >> 3) & 1) << 3);
    let v_chunk = lane >> 4;
    let g = lane / 4;
    let tq = lane % 4;

    let mut o_acc = [[[0f32; 4]; 16]; MT]; // only DH / 8 n-tiles are used
    let mut m_run = [[f32::NEG_INFINITY; 2]; MT];
    let mut l_run = [[0f32; 2]; MT];
    let ntiles = nk.div_ceil(BK as u32);
    let mut kt = 0u32;
    while kt < ntiles {
        // Tile kt has landed; every warp is done with the stage tile kt + 1 goes to (used for kt - 1).
        cp_async_wait_group::<0>();
        sync_threads();
        if kt + 1 < ntiles {
            load_kv((kt + 1) & 1, kt + 1);
        }
        cp_async_commit();
        let ks = k_tile(kt & 1);
        let vs = ks + tile_bytes;

        // S = Q Kᵀ (raw logits), MT x 8 n-tiles of 16 x 8.
        let mut s = [[[0f32; 4]; NT]; MT];
        unroll_n!(dt_pairs, |kk| {
            let mut qa = [[0u32; 4]; MT];
            unroll_n!(MT, |mi| {
                qa[mi] = ldmatrix_x4(qs + swz(ch, q_row + 16 * mi as u32, 2 * kk as u32 + q_chunk));
            });
            unroll!(4, |jp| {
                let bf = ldmatrix_x4(ks + swz(ch, k_row + 16 * jp as u32, 2 * kk as u32 + k_chunk));
                unroll_n!(MT, |mi| {
                    mma_f16_16816(&mut s[mi][2 * jp], qa[mi], [bf[0], bf[1]]);
                    mma_f16_16816(&mut s[mi][2 * jp + 1], qa[mi], [bf[2], bf[3]]);
                });
            });
        });

        // Online softmax; keys past Nk (only in the last tile) get −∞.
        let valid = nk - kt * BK as u32;
        let partial = valid < BK as u32;
        unroll_n!(MT, |mi| {
            unroll!(2, |hh| {
                let mut mx = f32::NEG_INFINITY;
                unroll!(8, |nt| {
                    unroll!(2, |e| {
                        if partial && (nt as u32 * 8 + tq * 2 + e as u32) >= valid {
                            s[mi][nt][2 * hh + e] = f32::NEG_INFINITY;
                        }
                        mx = math::fmax(mx, s[mi][nt][2 * hh + e]);
                    });
                });
                mx = math::fmax(mx, warp::shfl_xor_f32(mx, 1));
                mx = math::fmax(mx, warp::shfl_xor_f32(mx, 2));
                let m_new = math::fmax(m_run[mi][hh], mx);
                let ms = m_new * scale_log2;
                // First tile: m_run = −∞, 2^−∞ = 0 (nothing accumulated yet anyway).
                let alpha = math::ex2_approx(m_run[mi][hh] * scale_log2 - ms);
                m_run[mi][hh] = m_new;
                let mut rs = 0f32;
                unroll!(8, |nt| {
                    unroll!(2, |e| {
                        let p = math::ex2_approx(math::fma(s[mi][nt][2 * hh + e], scale_log2, -ms));
                        s[mi][nt][2 * hh + e] = p;
                        rs += p;
                    });
                });
                l_run[mi][hh] = math::fma(l_run[mi][hh], alpha, rs);
                unroll_n!(dt_pairs, |dp| {
                    unroll!(2, |e| {
                        o_acc[mi][2 * dp + e][2 * hh] *= alpha;
                        o_acc[mi][2 * dp + e][2 * hh + 1] *= alpha;
                    });
                });
            });
        });

        // O += P V: key k16 step kk is S n-tiles 2 kk, 2 kk + 1.
        unroll!(4, |kk| {
            let mut pa = [[0u32; 4]; MT];
            unroll_n!(MT, |mi| {
                let (s0, s1) = (&s[mi][2 * kk], &s[mi][2 * kk + 1]);
                pa[mi] = [
                    pack_f16x2(s0[0], s0[1]),
                    pack_f16x2(s0[2], s0[3]),
                    pack_f16x2(s1[0], s1[1]),
                    pack_f16x2(s1[2], s1[3]),
                ];
            });
            unroll_n!(dt_pairs, |dp| {
                let bf = ldmatrix_x4_trans(
                    vs + swz(ch, v_row + 16 * kk as u32, 2 * dp as u32 + v_chunk),
                );
                unroll_n!(MT, |mi| {
                    mma_f16_16816(&mut o_acc[mi][2 * dp], pa[mi], [bf[0], bf[1]]);
                    mma_f16_16816(&mut o_acc[mi][2 * dp + 1], pa[mi], [bf[2], bf[3]]);
                });
            });
        });
        kt += 1;
    }
    cp_async_wait_group::<0>();

    let ob = o.add(b * nq_s * ld_o as usize + h * DH);
    unroll_n!(MT, |mi| {
        unroll!(2, |hh| {
            // Full row sum (≥ 1: the row max contributes 2^0) over the 4 lanes of the row.
            let mut l = l_run[mi][hh];
            l += warp::shfl_xor_f32(l, 1);
            l += warp::shfl_xor_f32(l, 2);
            let inv = math::div(1.0, l);
            let r = q0 + warp_id * 16 * MT as u32 + 16 * mi as u32 + g + 8 * hh as u32;
            if r < nq {
                let orow = ob.add(r as usize * ld_o as usize + tq as usize * 2);
                unroll_n!(dt_pairs, |dp| {
                    unroll!(2, |e| {
                        let dn = 2 * dp + e;
                        let hv = pack_f16x2(
                            o_acc[mi][dn][2 * hh] * inv,
                            o_acc[mi][dn][2 * hh + 1] * inv,
                        );
                        *(orow.add(dn * 8) as *mut u32) = hv;
                    });
                });
            }
        });
    });
}

macro_rules! attention_tc_entry {
    ($name:ident, $dh:expr, $mt:expr, $wait:ident) => {
        /// `attention_tc` for one head dimension and m-tile count (`attn_tc_kernel`). Grid
        /// (ceil(Nq / BQ), heads, B) with BQ = 16·ATTN_TC_WARPS·m_tiles, block 32·ATTN_TC_WARPS, dynamic
        /// shared memory `attn_tc_smem(dh, m_tiles)`. q [B, Nq, ld_q], k and v
        /// [B, Nk, ld_kv] f16 (pointers offset to their first column; columns and lds multiples of 8),
        /// o [B, Nq, ld_o] f16 (ld_o even); `scale_log2` = log2(e) / sqrt(dh).
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "ptx-kernel" fn $name(
            q: *const u16,
            k: *const u16,
            v: *const u16,
            o: *mut u16,
            nq: u32,
            nk: u32,
            ld_q: u32,
            ld_kv: u32,
            ld_o: u32,
            scale_log2: f32,
        ) {
            crate::device::$wait();
            attention_tc_body::<$dh, $mt>(
                block_idx_x(),
                block_idx_y(),
                block_idx_z(),
                q,
                k,
                v,
                o,
                nq,
                nk,
                ld_q,
                ld_kv,
                ld_o,
                scale_log2,
            )
        }
    };
}

attention_tc_entry!(attention_tc_d32, 32, 2, grid_dependency_wait);
attention_tc_entry!(attention_tc_d64, 64, 2, grid_dependency_wait);
attention_tc_entry!(attention_tc_d128, 128, 1, grid_dependency_wait);
// One m-tile per warp for grids that fill the GPU at most once (few tokens: at 64 tokens one block per
// (sequence, head) with all four warps busy instead of two). They let the next kernel (the few-row
// out-projection, which copies its weights before its wait) launch early.
attention_tc_entry!(attention_tc_d32_m1, 32, 1, grid_dependency_wait_then_trigger);
attention_tc_entry!(attention_tc_d64_m1, 64, 1, grid_dependency_wait_then_trigger);
