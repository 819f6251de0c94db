//! `attention_tma`: flash attention for head_dim 64 on Hopper (host launcher: host/src/ops/attention_tma.rs;
//! CPU reference: models::ops::attention). f16 q, k, v and output, f32 scores, softmax and accumulation,
//! the numerics of `attention_tc` (log2-domain online softmax, `ex2.approx`, P rounded to f16 for P·V)
//! except that the reference row max moves lazily (`RESCALE_LOG2`, FA4's rescaling: P ≤ 2^8 instead of ≤ 1,
//! O rescaled only when a row of the warp moved its reference; run 92, H100, same run: StyleViT base p16 b8
//! 15.07-15.11 ms against 15.29-15.38, attention 7.28 against 7.50 ms, ncu 697 against 727 us per launch).
//!
//! # Roles (block = W consumer warpgroups + 1 producer warpgroup; `launch::AttnTmaLayout`)
//! * Variants: `attention_tma` and `attention_tma_serial` have W = 2 (`ATTN_TMA`), `attention_tma_wg3` W = 3
//!   (`ATTN_TMA_WG3`, FA3's 192-query blocks for head_dim 64; the default, see below).
//! * Block (x, h, b): queries x·64W .. x·64W + 64W of head h of sample b; warpgroup g takes 64 of them.
//!   Warpgroups whose 64 queries all lie past nq (the last block of a sequence) return at once.
//! * Registers: the producer warpgroup drops to `ATTN_TMA_PRODUCER_REGS` per thread (`setmaxnreg`) and the
//!   consumers rise to the layout's `consumer_regs` (at launch every thread has the layout's `regs`, what
//!   `.maxntid` leaves: 168 for W = 2, where the consumers then take 240; 128 for W = 3, then 160).
//! * Producer (the producer warpgroup's first lane): the Q tile (one 2-D TMA box of 64W rows x 64 f16,
//!   128-byte swizzle) on the "q" mbarrier, then per key tile j (128 keys) the K box and the V box into the
//!   ring's next stage once it is empty ("full"/"empty" mbarriers as `device::tma` says; "empty" counts the
//!   warps of the active consumer warpgroups: each reads every stage).
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
//!
//!   `attention_tma` pipelines this (FA3's intra-warpgroup overlap): tile j's S and tile j − 1's P·V are
//!   issued together, the softmax of tile j runs while P_{j−1} V_{j−1} is still on the tensor cores, and
//!   O is rescaled once that product retires. `attention_tma_serial` runs the steps in order. Both add the
//!   same products in the same order, so their outputs are the same bits. Any plain write to a register
//!   that some wgmma takes as an operand while a product is in flight makes ptxas serialise every wgmma
//!   of the kernel (its C7513 note); the code is arranged so that none does (tile 0 peeled, P packed after
//!   the wait) and `cargo xtask build-kernels` reports such notes.
//! * Rows past nq (query rows of the next sample, or zero-filled past the tensor) are computed and not
//!   stored; keys past nk get probability 0 (the V rows they pair with are finite: another sample's rows
//!   or the copy engine's zeros).
//!
//! One block per SM (~145 KB of shared memory for W = 2, ~153 KB for W = 3: `AttnTmaLayout::smem`); the warpgroups also
//! interleave, so one's softmax overlaps the others' MMAs. Three warpgroups (12 consumer warps per SM
//! instead of 8) hide more of the loop's latency: run 89 (H100, same binary), StyleViT base p16 b8
//! 15.64-15.70 ms against 16.59-16.64 with two; ncu 727 us per attention launch against ~787 (runs 87-88).
//! With three, 160 registers fit the pipelined loop only just: the masking of a partial last tile compares
//! 8i + e against valid − 2tq (immediates) so that ptxas keeps no key indices in registers. Putting P
//! through shared memory instead (FA3's choice for head_dim 64: `stmatrix`, A-from-shared `wgmma`; commit
//! 937ef55) measured slower: run 88, 799 us against 787 for two warpgroups with P in registers. FA3's explicit ping-pong (named barriers making the warpgroups take turns issuing S_i
//! and the deferred P_{i-1}V_{i-1}) was slower here: run 64 (H100, same run) attention 13.37 ms against
//! 8.9 with this loop, tensor pipe 25.5% against 38.7% under ncu (commit a82af36 has it).
//! Also slower (session 17, H100, same run; docs/PERF.md): a share of the exponentials on the FMA pipe
//! (FA4's polynomial exp2, commit f5af3e5: 900 us against 781 at 4 of 16 blocks), a tree row max (831
//! against 786 us), and the exponentials in f16 pairs (`ex2.approx.f16x2`, commit 6a4d171: 918 against 791
//! us): the loop is latency-bound (issue slots ~43%), so longer dependency chains cost more than the MUFU
//! cycles saved. The row max is one `max.f32` per pair (`math::fmax`), not a compare and a select.
use crate::device::math;
use crate::device::mma::pack_f16x2;
use crate::device::pingpong::RingPos;
use crate::device::tma::{
    arrive, arrive_expect_tx, fence_mbarrier_init, load_2d, mbarrier_init, prefetch_map, wait_parity,
};
use crate::device::unroll::unroll;
use crate::device::wgmma::{
    self, aligned_smem, fence_acc32, fence_acc64, keep_acc32, keep_regs32, mma_m64n128k16_f16, mma_m64n64k16_f16_rs_tb,
    smem_desc_sw128, smem_desc_sw128_mn, splat32, wait_acc32, wait_acc64,
};
use crate::device::{block_idx_x, block_idx_y, block_idx_z, sync_threads, thread_idx_x, warp};
use crate::launch::{
    AttentionTmaArgs, AttnTmaLayout, ATTN_TMA, ATTN_TMA_BK, ATTN_TMA_DH, ATTN_TMA_KV_BYTES, ATTN_TMA_PRODUCER_REGS,
    ATTN_TMA_Q, ATTN_TMA_STAGES, ATTN_TMA_WG3,
};

const BK: u32 = ATTN_TMA_BK;
const STAGES: u32 = ATTN_TMA_STAGES;
const KV: u32 = ATTN_TMA_KV_BYTES;

const _: () = assert!(BK == 128 && ATTN_TMA_DH == 64 && ATTN_TMA.wgs == 2 && ATTN_TMA_WG3.wgs == 3);

/// `attention_tma` (module comment), with the pipelined consumer loop and two consumer warpgroups. Grid
/// (ceil(nq / 128), heads, B), block `ATTN_TMA.threads`, dynamic shared memory `ATTN_TMA.smem`. Requires
/// (host-checked): the maps as `AttentionTmaArgs` says (Q's box `ATTN_TMA.bq` rows), nq, nk ≥ 1, ld_o even,
/// every index below 2^31.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn attention_tma(args: AttentionTmaArgs) {
    attention_tma_body::<true, 2>(args)
}

/// `attention_tma` with the serial consumer loop (each tile's P·V waited for before the next S): the
/// same contract and results, bit for bit.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn attention_tma_serial(args: AttentionTmaArgs) {
    attention_tma_body::<false, 2>(args)
}

/// `attention_tma` with three consumer warpgroups (FA3's 192-query tiles for head_dim 64: 12 consumer warps
/// per SM instead of 8, at 160 registers each instead of 240). Grid (ceil(nq / 192), heads, B), block
/// `ATTN_TMA_WG3.threads`, dynamic shared memory `ATTN_TMA_WG3.smem`, Q's box `ATTN_TMA_WG3.bq` rows;
/// otherwise `attention_tma`'s contract, and the same results bit for bit (each query row's arithmetic does
/// not depend on the block it is in).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn attention_tma_wg3(args: AttentionTmaArgs) {
    attention_tma_body::<true, 3>(args)
}

/// How far (in log2 units, i.e. a factor 2^8) a row's maximum may grow past the reference maximum the
/// exponentials use before the reference moves (FA4's lazy rescaling). Until then the probabilities are
/// at most 2^8 (exact in f16 and f32 alike: the final O / ℓ uses the same reference for both) and O is not
/// rescaled.
const RESCALE_LOG2: f32 = 8.0;

/// The online softmax of one key tile's scores (step 2 of the module comment): masks keys ≥ `valid` to
/// −∞, moves the reference row max `m_run` where the tile's max exceeds it by more than `RESCALE_LOG2`
/// (log2 units), and returns, per row half, the factor α that rescales what was accumulated before (1
/// where the reference stays) and the tile's partial row sum, and whether any α of this thread is not
/// 1; P = 2^(s·c − m·c) is left in `s` (in [0, 2^8]).
#[inline(always)]
unsafe fn softmax_tile(s: &mut [f32; 64], m_run: &mut [f32; 2], valid: u32, tq: u32, scale_log2: f32) -> ([f32; 2], [f32; 2], bool) {
    if valid < BK {
        // Key 8i + 2tq + e is masked when 8i + e ≥ valid − 2tq: one register for the limit, the column
        // offsets immediates (comparing full key indices made ptxas keep them in registers, and spill).
        let lim = valid as i32 - 2 * tq as i32;
        unroll!(16, |i| {
            unroll!(2, |e| {
                if (8 * i + e) as i32 >= lim {
                    s[4 * i + e] = f32::NEG_INFINITY;
                    s[4 * i + 2 + e] = f32::NEG_INFINITY;
                }
            });
        });
    }
    let mut alpha = [1f32; 2];
    let mut rsum = [0f32; 2];
    let mut moved = false;
    unroll!(2, |hh| {
        let mut mx = f32::NEG_INFINITY;
        unroll!(16, |i| {
            mx = math::fmax(mx, math::fmax(s[4 * i + 2 * hh], s[4 * i + 2 * hh + 1]));
        });
        mx = math::fmax(mx, warp::shfl_xor_f32(mx, 1));
        mx = math::fmax(mx, warp::shfl_xor_f32(mx, 2));
        // First tile: m_run = −∞, so the reference moves (the difference is +∞) and α = 2^−∞ = 0
        // (nothing accumulated yet anyway). Every row has a finite max (module comment).
        if (mx - m_run[hh]) * scale_log2 > RESCALE_LOG2 {
            alpha[hh] = math::ex2_approx((m_run[hh] - mx) * scale_log2);
            m_run[hh] = mx;
            moved = true;
        }
        let ms = m_run[hh] * scale_log2;
        let mut rs = 0f32;
        unroll!(16, |i| {
            unroll!(2, |e| {
                let p = math::ex2_approx(math::fma(s[4 * i + 2 * hh + e], scale_log2, -ms));
                s[4 * i + 2 * hh + e] = p;
                rs += p;
            });
        });
        rsum[hh] = rs;
    });
    (alpha, rsum, moved)
}

/// P packed to f16 straight from the probabilities in `s` (in [0, 2^8]: no saturation needed): k16 step kk
/// of P·V is S's n8 blocks 2kk, 2kk + 1, registers 4kk .. 4kk + 4 of the A fragments.
#[inline(always)]
fn pack_p(s: &[f32; 64]) -> [u32; 32] {
    let mut p = [0u32; 32];
    unroll!(16, |i| {
        unroll!(2, |e| {
            let m = 2 * i + e;
            p[m] = pack_f16x2(s[2 * m], s[2 * m + 1]);
        });
    });
    p
}

/// Issues S = Q Kᵀ for one key tile (four `wgmma.m64n128k16`, Q and K K-major) as one commit group.
#[inline(always)]
unsafe fn issue_scores(s: &mut [f32; 64], q_tile: u32, ks: u32) {
    fence_acc64(s);
    unroll!(4, |kk| {
        let off = 32 * kk as u32;
        mma_m64n128k16_f16(s, smem_desc_sw128(q_tile + off), smem_desc_sw128(ks + off), kk > 0);
    });
    wgmma::commit_group();
}

/// Issues O += P V for one key tile (eight `wgmma.m64n64k16`, P from registers, V N-major) as one commit
/// group. `p` must stay unmodified until a wait retires the group ([`keep_regs32`] after it).
#[inline(always)]
unsafe fn issue_pv(o: &mut [f32; 32], p: &[u32; 32], vs: u32) {
    fence_acc32(o);
    unroll!(8, |kk| {
        let a = [p[4 * kk], p[4 * kk + 1], p[4 * kk + 2], p[4 * kk + 3]];
        mma_m64n64k16_f16_rs_tb(o, a, smem_desc_sw128_mn(vs + 2048 * kk as u32));
    });
    wgmma::commit_group();
}

/// Waits until this warpgroup's P·V has retired (then `p` may change again: [`keep_regs32`] holds it until
/// here) and releases the ring stage it read (each warp's lane 0 arrives on `empty`; S of that stage has
/// retired before).
#[inline(always)]
unsafe fn retire_pv(o: &mut [f32; 32], p: &mut [u32; 32], empty_bar: u32, lane: u32) {
    wait_acc32::<0>(o);
    keep_regs32(p);
    if lane == 0 {
        arrive(empty_bar);
    }
}

/// The kernel body; `PIPE` picks the consumer loop, `WGS` the consumer warpgroups (2 or 3).
/// Consumer warpgroups whose 64 queries all lie past nq (the last block of a sequence, with 3) return at
/// once; the "empty" barriers count the warps of the others. Serial: per tile, S, wait, softmax, P·V, wait.
/// Pipelined (FA3's intra-warpgroup overlap): tile j's S and tile j − 1's P·V are issued together, the
/// wait retires S only, and the softmax of tile j runs while the tensor cores still multiply P_{j−1} V_{j−1};
/// O is rescaled by α_j after that product retires. The accumulation order is the serial loop's
/// (O = (O·α_{j−1} + P_{j−1}V_{j−1})·α_j + P_j V_j), so both give the same bits.
#[inline(always)]
unsafe fn attention_tma_body<const PIPE: bool, const WGS: u32>(args: AttentionTmaArgs) {
    let AttentionTmaArgs { nq, nk, ld_o, q_col, k_col, v_col, scale_log2, .. } = args;
    const fn layout(wgs: u32) -> AttnTmaLayout {
        if wgs == 3 { ATTN_TMA_WG3 } else { ATTN_TMA }
    }
    let l = layout(WGS);
    let bq = l.bq;
    crate::device::grid_dependency_wait();
    let t = thread_idx_x();
    let warp_id = t / 32;
    let lane = t % 32;
    let q0 = block_idx_x() * bq;
    // Consumer warpgroups with at least one query row below nq (≥ 1: the grid has ceil(nq / bq) blocks).
    let active = (nq - q0).div_ceil(64).min(WGS);
    let h = block_idx_y();
    let b = block_idx_z();
    let smem = aligned_smem();
    let qs = smem + ATTN_TMA_Q;
    let full = smem + l.bars;
    let empty = full + 8 * STAGES;
    let qbar = empty + 8 * STAGES;
    if t == 0 {
        for s in 0..STAGES {
            mbarrier_init(full + 8 * s, 1);
            mbarrier_init(empty + 8 * s, 4 * active);
        }
        mbarrier_init(qbar, 1);
        fence_mbarrier_init();
    }
    sync_threads();
    let ntiles = nk.div_ceil(BK);

    if warp_id >= 4 * WGS {
        // The producer warpgroup: one thread issues every copy; the others only hand their registers over.
        crate::device::set_max_nreg_dec::<ATTN_TMA_PRODUCER_REGS>();
        if warp_id == 4 * WGS && lane == 0 {
            let (qmap, kmap, vmap) = (args.qmap as *const u8, args.kmap as *const u8, args.vmap as *const u8);
            prefetch_map(qmap);
            prefetch_map(kmap);
            prefetch_map(vmap);
            arrive_expect_tx(qbar, bq * 128);
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
    if wg >= active {
        // Only queries past nq: nothing to compute or store (the producer's "empty" barriers do not count
        // this warpgroup's warps). It leaves without taking registers from the pool.
        return;
    }
    if WGS == 3 {
        crate::device::set_max_nreg_inc::<{ ATTN_TMA_WG3.consumer_regs }>();
    } else {
        crate::device::set_max_nreg_inc::<{ ATTN_TMA.consumer_regs }>();
    }
    let wq = warp_id % 4;
    let tq = lane % 4;
    let q_tile = qs + wg * 64 * 128;
    let mut o = splat32(0.0);
    let mut m_run = [f32::NEG_INFINITY; 2];
    let mut l_run = [0f32; 2];
    wait_parity(qbar, 0);
    let mut pos = RingPos::at(0, STAGES);
    // O ← O·α + 0 and ℓ ← ℓ·α + Σp for one tile's row statistics (the P·V product is added apart). O is
    // multiplied only where some row of the warp moved its reference max (α = 1 elsewhere): after the
    // first tiles, hardly ever.
    let rescale = |o: &mut [f32; 32], l_run: &mut [f32; 2], (alpha, rsum, moved): ([f32; 2], [f32; 2], bool)| {
        unroll!(2, |hh| {
            l_run[hh] = math::fma(l_run[hh], alpha[hh], rsum[hh]);
        });
        if warp::any(moved) {
            unroll!(2, |hh| {
                unroll!(8, |i| {
                    o[4 * i + 2 * hh] *= alpha[hh];
                    o[4 * i + 2 * hh + 1] *= alpha[hh];
                });
            });
        }
    };
    if PIPE {
        // Tile 0 alone (no product to defer yet), so that the loop below has no branch around its
        // waits: ptxas tracks the wgmma pipeline per path and would serialise every wgmma if a path
        // reached the next plain-register write with a product still in flight (C7513).
        wait_parity(full + 8 * pos.stage, pos.phase);
        let mut s = [0f32; 64];
        issue_scores(&mut s, q_tile, smem + pos.stage * 2 * KV);
        wait_acc64::<0>(&mut s);
        let st = softmax_tile(&mut s, &mut m_run, nk, tq, scale_log2);
        rescale(&mut o, &mut l_run, st);
        let mut p = pack_p(&s);
        // `prev`: the stage of tile j − 1, whose V the deferred product reads; `p` its probabilities.
        let mut prev = pos;
        pos.advance(STAGES);
        let mut j = 1;
        while j < ntiles {
            wait_parity(full + 8 * pos.stage, pos.phase);
            let mut s = [0f32; 64];
            // P_{j−1} and the rescaled O are the deferred product's register operands: pin their
            // definitions before S's MMAs so that none lands between the two groups.
            keep_regs32(&mut p);
            keep_acc32(&mut o);
            issue_scores(&mut s, q_tile, smem + pos.stage * 2 * KV);
            issue_pv(&mut o, &p, smem + prev.stage * 2 * KV + KV);
            wait_acc64::<1>(&mut s);
            let st = softmax_tile(&mut s, &mut m_run, nk - j * BK, tq, scale_log2);
            retire_pv(&mut o, &mut p, empty + 8 * prev.stage, lane);
            rescale(&mut o, &mut l_run, st);
            // P_j packed only now: its registers must not be written while P_{j−1} V_{j−1} is in flight
            // (ptxas would serialise every wgmma, C7513).
            p = pack_p(&s);
            prev = pos;
            pos.advance(STAGES);
            j += 1;
        }
        // The last tile's product.
        issue_pv(&mut o, &p, smem + prev.stage * 2 * KV + KV);
        retire_pv(&mut o, &mut p, empty + 8 * prev.stage, lane);
    } else {
        let mut j = 0;
        while j < ntiles {
            wait_parity(full + 8 * pos.stage, pos.phase);
            let ks = smem + pos.stage * 2 * KV;
            let mut s = [0f32; 64];
            issue_scores(&mut s, q_tile, ks);
            wait_acc64::<0>(&mut s);
            let st = softmax_tile(&mut s, &mut m_run, nk - j * BK, tq, scale_log2);
            rescale(&mut o, &mut l_run, st);
            let mut p = pack_p(&s);
            issue_pv(&mut o, &p, ks + KV);
            retire_pv(&mut o, &mut p, empty + 8 * pos.stage, lane);
            pos.advance(STAGES);
            j += 1;
        }
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
