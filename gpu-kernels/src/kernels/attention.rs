//! `attention` kernels (see host/src/ops/attention.rs for the launcher, models::ops::attention for the CPU reference).
//!
//! Flash-style fp32 multi-head attention (FlashAttention-2's schedule on CUDA cores): a block takes 64
//! queries of one (batch, head) and walks the keys in tiles staged in shared memory, keeping a running row
//! max `m`, a running (per-thread partial) row sum `l` and an unnormalised accumulator O, rescaled by
//! `2^(m_old − m_new)` whenever the max grows; O is divided by the sum once at the end. No Nq x Nk matrix
//! exists anywhere: only one 64 x BK tile of probabilities, in shared memory, per block.
//!
//! Logits are computed in the log2 domain: `s = (q·k) · scale · log2(e)` (scale folded on the host), so each
//! probability is one `ex2.approx`. Q, K and V are read in place from token-major buffers: element d of head
//! h of token t of batch b is at `ptr[(b·N + t)·ld + h·dh + d]` (for a fused QKV buffer [B, N, 3D]: the q
//! pointer is the buffer, k = buffer + D, v = buffer + 2D, ld = 3D). Output [B, Nq, ld_o] at the same place.
//!
//! Threads form a 16 x 16 grid: ty owns query rows `ty + 16i` (i < 4), tx owns key columns `tx + 16j` of the
//! score tile and head-dim columns `tx + 16j` of O. Row max/sum reductions are over the 16 lanes sharing ty
//! (half a warp). Shared tiles: Q [dh][65], K [dh][BK+1] (both transposed, padded against bank conflicts),
//! V [BK][dh], P [64][BK+1]. Query rows past Nq compute on zeros and are not stored; key columns past Nk
//! get probability 0 and zero K/V, so any Nq, Nk ≥ 1 work and nothing is read out of bounds.
use crate::device::unroll::unroll;
use crate::device::{
    block_idx_x, block_idx_y, block_idx_z, math, shared, sync_threads, thread_idx_x, warp,
};
use crate::launch::{attn_bk, ATTN_BQ, ATTN_THREADS};

const BQ: usize = ATTN_BQ as usize;
const THREADS: usize = ATTN_THREADS as usize;
/// Query rows per thread.
const RQ: usize = BQ / 16;

#[inline(always)]
fn group16_max(mut v: f32) -> f32 {
    let mut mask = 8;
    while mask > 0 {
        v = math::max(v, warp::shfl_xor_f32(v, mask));
        mask >>= 1;
    }
    v
}

/// The kernel body for head dimension `DH`, key tile `BK`, `JN = BK/16` score columns and `JD = DH/16`
/// output columns per thread.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn attention_impl<const DH: usize, const BK: usize, const JN: usize, const JD: usize>(
    q: *const f32,
    k: *const f32,
    v: *const f32,
    o: *mut f32,
    nq: u32,
    nk: u32,
    ld_q: u32,
    ld_kv: u32,
    ld_o: u32,
    scale_log2: f32,
) {
    const { assert!(BK == JN * 16 && DH == JD * 16 && BK == attn_bk(DH as u32) as usize) };
    const { assert!((BQ * DH) % THREADS == 0 && (BK * DH) % THREADS == 0 && RQ == 4 && RQ * 16 == BQ) };
    let (nq, nk) = (nq as usize, nk as usize);
    let (ld_q, ld_kv, ld_o) = (ld_q as usize, ld_kv as usize, ld_o as usize);
    let t = thread_idx_x() as usize;
    let (tx, ty) = (t % 16, t / 16);
    let q0 = block_idx_x() as usize * BQ;
    let h = block_idx_y() as usize;
    let b = block_idx_z() as usize;

    // Shared layout (byte addresses in the shared window).
    let qs = shared::dynamic_smem_addr();
    let ks = qs + (DH * (BQ + 1) * 4) as u32;
    let vs = ks + (DH * (BK + 1) * 4) as u32;
    let ps = vs + (BK * DH * 4) as u32;
    let at = |base: u32, idx: usize| base + (idx * 4) as u32;

    // Q tile, transposed: Qs[d][r]. Consecutive threads read consecutive d (coalesced).
    let qb = q.add(b * nq * ld_q + h * DH);
    for it in 0..BQ * DH / THREADS {
        let e = it * THREADS + t;
        let (r, d) = (e / DH, e % DH);
        let qi = q0 + r;
        let val = if qi < nq { *qb.add(qi * ld_q + d) } else { 0.0 };
        shared::st_f32(at(qs, d * (BQ + 1) + r), val);
    }

    let kb = k.add(b * nk * ld_kv + h * DH);
    let vb = v.add(b * nk * ld_kv + h * DH);
    let mut m_run = [f32::NEG_INFINITY; RQ];
    let mut l_run = [0f32; RQ];
    let mut acc = [[0f32; JD]; RQ];
    let mut k0 = 0usize;
    while k0 < nk {
        // Everyone is done reading the previous K/V/P tiles.
        sync_threads();
        for it in 0..BK * DH / THREADS {
            let e = it * THREADS + t;
            let (c, d) = (e / DH, e % DH);
            let key = k0 + c;
            let (kv, vv) = if key < nk {
                (*kb.add(key * ld_kv + d), *vb.add(key * ld_kv + d))
            } else {
                (0.0, 0.0)
            };
            shared::st_f32(at(ks, d * (BK + 1) + c), kv);
            shared::st_f32(at(vs, c * DH + d), vv);
        }
        sync_threads();

        // S = Q Kᵀ for this thread's RQ x JN entries.
        let mut s = [[0f32; JN]; RQ];
        for d in 0..DH {
            let mut kv = [0f32; JN];
            for (j, kvj) in kv.iter_mut().enumerate() {
                *kvj = shared::ld_f32(at(ks, d * (BK + 1) + tx + 16 * j));
            }
            unroll!(4, |i| {
                let qv = shared::ld_f32(at(qs, d * (BQ + 1) + ty + 16 * i));
                for j in 0..JN {
                    s[i][j] = math::fma(qv, kv[j], s[i][j]);
                }
            });
        }

        // Online softmax. Column 0 of the tile is a real key (k0 < nk), so every row's tile max is finite.
        unroll!(4, |i| {
            let mut mx = f32::NEG_INFINITY;
            for j in 0..JN {
                let valid = k0 + tx + 16 * j < nk;
                s[i][j] = if valid {
                    s[i][j] * scale_log2
                } else {
                    f32::NEG_INFINITY
                };
                mx = math::max(mx, s[i][j]);
            }
            let m_new = math::max(m_run[i], group16_max(mx));
            // First tile: m_run = -inf, ex2(-inf) = 0 (nothing accumulated yet anyway).
            let alpha = math::ex2_approx(m_run[i] - m_new);
            m_run[i] = m_new;
            let mut rs = 0f32;
            for j in 0..JN {
                let p = if s[i][j] == f32::NEG_INFINITY {
                    0.0
                } else {
                    math::ex2_approx(s[i][j] - m_new)
                };
                rs += p;
                shared::st_f32(at(ps, (ty + 16 * i) * (BK + 1) + tx + 16 * j), p);
            }
            // Per-thread partial sum over its columns; all 16 lanes of the row share m and alpha.
            l_run[i] = math::fma(l_run[i], alpha, rs);
            for a in acc[i].iter_mut() {
                *a *= alpha;
            }
        });
        sync_threads();

        // O += P V.
        for c in 0..BK {
            let mut vv = [0f32; JD];
            for (j, vvj) in vv.iter_mut().enumerate() {
                *vvj = shared::ld_f32(at(vs, c * DH + tx + 16 * j));
            }
            unroll!(4, |i| {
                let pv = shared::ld_f32(at(ps, (ty + 16 * i) * (BK + 1) + c));
                for j in 0..JD {
                    acc[i][j] = math::fma(pv, vv[j], acc[i][j]);
                }
            });
        }
        k0 += BK;
    }

    let ob = o.add(b * nq * ld_o + h * DH);
    unroll!(4, |i| {
        // Sum of the 16 partial sums of the row (≥ 1: the max element contributes 2^0).
        let l = warp::group_sum(l_run[i], 16);
        let r = q0 + ty + 16 * i;
        if r < nq {
            for j in 0..JD {
                *ob.add(r * ld_o + tx + 16 * j) = math::div(acc[i][j], l);
            }
        }
    });
}

/// Head dimension 32. Grid (ceil(Nq/64), heads, B), block 256, shared `attn_smem_bytes(32)`.
/// q [B, Nq, ld_q], k and v [B, Nk, ld_kv] (pointers already offset to their first column), o [B, Nq, ld_o].
#[no_mangle]
pub unsafe extern "ptx-kernel" fn attention_d32(
    q: *const f32,
    k: *const f32,
    v: *const f32,
    o: *mut f32,
    nq: u32,
    nk: u32,
    ld_q: u32,
    ld_kv: u32,
    ld_o: u32,
    scale_log2: f32,
) {
    crate::device::grid_dependency_wait();
    attention_impl::<32, 64, 4, 2>(q, k, v, o, nq, nk, ld_q, ld_kv, ld_o, scale_log2)
}

/// Head dimension 64 (as [`attention_d32`]).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn attention_d64(
    q: *const f32,
    k: *const f32,
    v: *const f32,
    o: *mut f32,
    nq: u32,
    nk: u32,
    ld_q: u32,
    ld_kv: u32,
    ld_o: u32,
    scale_log2: f32,
) {
    crate::device::grid_dependency_wait();
    attention_impl::<64, 64, 4, 4>(q, k, v, o, nq, nk, ld_q, ld_kv, ld_o, scale_log2)
}

/// Head dimension 128 (as [`attention_d32`]; key tiles of 32).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn attention_d128(
    q: *const f32,
    k: *const f32,
    v: *const f32,
    o: *mut f32,
    nq: u32,
    nk: u32,
    ld_q: u32,
    ld_kv: u32,
    ld_o: u32,
    scale_log2: f32,
) {
    crate::device::grid_dependency_wait();
    attention_impl::<128, 32, 2, 8>(q, k, v, o, nq, nk, ld_q, ld_kv, ld_o, scale_log2)
}
