//! `attention_tma`: flash attention for head_dim 64 on Hopper (host launcher: host/src/ops/attention_tma.rs;
//! CPU reference: models::ops::attention). f16 q, k, v and output, f32 scores, softmax and accumulation,
//! the numerics of `attention_tc` (log2-domain online softmax, `ex2.approx`, P rounded to f16 for P·V).
//!
//! # Roles (block = 2 consumer warpgroups + 1 producer warp, `ATTN_TMA_THREADS`)
//! * Block (x, h, b): queries x·128 .. x·128 + 128 of head h of sample b; warpgroup g takes 64 of them.
//! * Producer (the last warp, one lane): the Q tile (one 2-D TMA box of 128 rows x 64 f16, 128-byte
//!   swizzle) on the "q" mbarrier, then per key tile j (128 keys) the K box and the V box into the ring's
//!   next stage once it is empty ("full"/"empty" mbarriers as `device::tma` says; "empty" counts the 8
//!   consumer warps: both warpgroups read every stage).
//! * Consumers, per key tile:
//!   1. S = Q Kᵀ: four `wgmma.m64n128k16` (Q and K both K-major in shared memory), 64 f32 per thread in
//!      the accumulator layout of `device::wgmma` (rows 16w + l/4 (+ 8), keys 8i + 2(l % 4) (+ 1)).
//!   2. Online softmax on them: keys ≥ nk masked to −∞ (only the last tile can have such keys; each tile
//!      has at least one real key, so every row max is finite); row max and sum over the 4 lanes of a row;
//!      p = 2^(s·c − m·c) with c = scale·log2(e); O and the partial row sums rescaled by 2^((m_old − m)·c).
//!   3. O += P V: P packed to f16 straight from the accumulators (two adjacent n8 blocks are one k16 A
//!      fragment), eight `wgmma.m64n64k16` with A in registers and V as an N-major B operand (the V box is
//!      [key][64] f16, dh contiguous: `smem_desc_sw128_mn`).
//!   4. Each warp's lane 0 releases the stage.
//! * Rows past nq (query rows of the next sample, or zero-filled past the tensor) are computed and not
//!   stored; keys past nk get probability 0 (the V rows they pair with are finite: another sample's rows
//!   or the copy engine's zeros).
//!
//! One block per SM (~161 KB of shared memory); the two warpgroups interleave, so one's softmax overlaps
//! the other's MMAs. FA3's explicit ping-pong (named barriers making the warpgroups take turns issuing S_i
//! and the deferred P_{i-1}V_{i-1}) was slower here: run 64 (H100, same run) attention 13.37 ms against
//! 8.9 with this loop, tensor pipe 25.5% against 38.7% under ncu (commit a82af36 has it).
use crate::device::math;
use crate::device::mma::pack_f16x2;
use crate::device::pingpong::RingPos;
use crate::device::tma::{
    arrive, arrive_expect_tx, fence_mbarrier_init, load_2d, mbarrier_init, prefetch_map, wait_parity,
};
use crate::device::unroll::unroll;
use crate::device::wgmma::{
    self, aligned_smem, fence_acc32, fence_acc64, keep_regs32, mma_m64n128k16_f16, mma_m64n64k16_f16_rs_tb,
    smem_desc_sw128, smem_desc_sw128_mn, splat32, wait_acc32, wait_acc64,
};
use crate::device::{block_idx_x, block_idx_y, block_idx_z, sync_threads, thread_idx_x, warp};
use crate::launch::{
    AttentionTmaArgs, ATTN_TMA_BARS, ATTN_TMA_BK, ATTN_TMA_BQ, ATTN_TMA_DH, ATTN_TMA_KV_BYTES, ATTN_TMA_Q,
    ATTN_TMA_STAGES, ATTN_TMA_THREADS,
};

const BQ: u32 = ATTN_TMA_BQ;
const BK: u32 = ATTN_TMA_BK;
const STAGES: u32 = ATTN_TMA_STAGES;
const KV: u32 = ATTN_TMA_KV_BYTES;

const _: () = assert!(BQ == 128 && BK == 128 && ATTN_TMA_DH == 64 && ATTN_TMA_THREADS == 2 * 128 + 32);

/// `attention_tma` (module comment). Grid (ceil(nq / 128), heads, B), block `ATTN_TMA_THREADS`, dynamic
/// shared memory `ATTN_TMA_SMEM_BYTES`. Requires (host-checked): the maps as `AttentionTmaArgs` says,
/// nq, nk ≥ 1, ld_o even, every index below 2^31.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn attention_tma(args: AttentionTmaArgs) {
    let AttentionTmaArgs { nq, nk, ld_o, q_col, k_col, v_col, scale_log2, .. } = args;
    crate::device::grid_dependency_wait();
    let t = thread_idx_x();
    let warp_id = t / 32;
    let lane = t % 32;
    let q0 = block_idx_x() * BQ;
    let h = block_idx_y();
    let b = block_idx_z();
    let smem = aligned_smem();
    let qs = smem + ATTN_TMA_Q;
    let full = smem + ATTN_TMA_BARS;
    let empty = full + 8 * STAGES;
    let qbar = empty + 8 * STAGES;
    if t == 0 {
        for s in 0..STAGES {
            mbarrier_init(full + 8 * s, 1);
            mbarrier_init(empty + 8 * s, 8);
        }
        mbarrier_init(qbar, 1);
        fence_mbarrier_init();
    }
    sync_threads();
    let ntiles = nk.div_ceil(BK);

    if warp_id == 8 {
        if lane == 0 {
            let (qmap, kmap, vmap) = (args.qmap as *const u8, args.kmap as *const u8, args.vmap as *const u8);
            prefetch_map(qmap);
            prefetch_map(kmap);
            prefetch_map(vmap);
            arrive_expect_tx(qbar, BQ * 128);
            load_2d(qs, qmap, (q_col + 64 * h) as i32, (b * nq + q0) as i32, qbar);
            let mut pos = RingPos::at(0, STAGES);
            let mut j = 0;
            while j < ntiles {
                wait_parity(empty + 8 * pos.stage, pos.phase ^ 1);
                let bar = full + 8 * pos.stage;
                arrive_expect_tx(bar, 2 * KV);
                let dst = smem + pos.stage * 2 * KV;
                let row = (b * nk + j * BK) as i32;
                load_2d(dst, kmap, (k_col + 64 * h) as i32, row, bar);
                load_2d(dst + KV, vmap, (v_col + 64 * h) as i32, row, bar);
                pos.advance(STAGES);
                j += 1;
            }
        }
        return;
    }

    let wg = warp_id / 4;
    let wq = warp_id % 4;
    let tq = lane % 4;
    let q_tile = qs + wg * 64 * 128;
    let mut o = splat32(0.0);
    let mut m_run = [f32::NEG_INFINITY; 2];
    let mut l_run = [0f32; 2];
    wait_parity(qbar, 0);
    let mut pos = RingPos::at(0, STAGES);
    let mut j = 0;
    while j < ntiles {
        wait_parity(full + 8 * pos.stage, pos.phase);
        let ks = smem + pos.stage * 2 * KV;
        let vs = ks + KV;

        // 1. S = Q Kᵀ.
        let mut s = [0f32; 64];
        fence_acc64(&mut s);
        unroll!(4, |kk| {
            let off = 32 * kk as u32;
            mma_m64n128k16_f16(&mut s, smem_desc_sw128(q_tile + off), smem_desc_sw128(ks + off), kk > 0);
        });
        wgmma::commit_group();
        wait_acc64::<0>(&mut s);

        // 2. Online softmax (rows hh = 0: lane/4, 1: lane/4 + 8 of the warp's 16).
        let valid = nk - j * BK;
        if valid < BK {
            unroll!(16, |i| {
                unroll!(2, |e| {
                    if 8 * i as u32 + 2 * tq + e as u32 >= valid {
                        s[4 * i + e] = f32::NEG_INFINITY;
                        s[4 * i + 2 + e] = f32::NEG_INFINITY;
                    }
                });
            });
        }
        unroll!(2, |hh| {
            let mut mx = f32::NEG_INFINITY;
            unroll!(16, |i| {
                mx = math::max(mx, math::max(s[4 * i + 2 * hh], s[4 * i + 2 * hh + 1]));
            });
            mx = math::max(mx, warp::shfl_xor_f32(mx, 1));
            mx = math::max(mx, warp::shfl_xor_f32(mx, 2));
            let m_new = math::max(m_run[hh], mx);
            let ms = m_new * scale_log2;
            // First tile: m_run = −∞, 2^−∞ = 0 (nothing accumulated yet anyway).
            let alpha = math::ex2_approx(m_run[hh] * scale_log2 - ms);
            m_run[hh] = m_new;
            let mut rs = 0f32;
            unroll!(16, |i| {
                unroll!(2, |e| {
                    let p = math::ex2_approx(math::fma(s[4 * i + 2 * hh + e], scale_log2, -ms));
                    s[4 * i + 2 * hh + e] = p;
                    rs += p;
                });
            });
            l_run[hh] = math::fma(l_run[hh], alpha, rs);
            unroll!(8, |i| {
                o[4 * i + 2 * hh] *= alpha;
                o[4 * i + 2 * hh + 1] *= alpha;
            });
        });

        // 3. O += P V: k16 step kk is S's n8 blocks 2kk, 2kk + 1.
        let mut p = [0u32; 32];
        unroll!(8, |kk| {
            let d = 8 * kk;
            p[4 * kk] = pack_f16x2(s[d], s[d + 1]);
            p[4 * kk + 1] = pack_f16x2(s[d + 2], s[d + 3]);
            p[4 * kk + 2] = pack_f16x2(s[d + 4], s[d + 5]);
            p[4 * kk + 3] = pack_f16x2(s[d + 6], s[d + 7]);
        });
        fence_acc32(&mut o);
        unroll!(8, |kk| {
            let a = [p[4 * kk], p[4 * kk + 1], p[4 * kk + 2], p[4 * kk + 3]];
            mma_m64n64k16_f16_rs_tb(&mut o, a, smem_desc_sw128_mn(vs + 2048 * kk as u32));
        });
        wgmma::commit_group();
        wait_acc32::<0>(&mut o);
        keep_regs32(&mut p);

        // 4. Both products of this stage have retired: release it.
        if lane == 0 {
            arrive(empty + 8 * pos.stage);
        }
        pos.advance(STAGES);
        j += 1;
    }

    // O / ℓ (ℓ summed over the row's 4 lanes; ≥ 1: the row max contributes 2^0), f16 pairs.
    let ob = (args.o as *mut u16).add(((b * nq) as usize) * ld_o as usize + 64 * h as usize);
    unroll!(2, |hh| {
        let mut l = l_run[hh];
        l += warp::shfl_xor_f32(l, 1);
        l += warp::shfl_xor_f32(l, 2);
        let inv = math::div(1.0, l);
        let r = q0 + wg * 64 + wq * 16 + lane / 4 + 8 * hh as u32;
        if r < nq {
            let orow = ob.add(r as usize * ld_o as usize + 2 * tq as usize);
            unroll!(8, |i| {
                *(orow.add(8 * i) as *mut u32) = pack_f16x2(o[4 * i + 2 * hh] * inv, o[4 * i + 2 * hh + 1] * inv);
            });
        }
    });
}
