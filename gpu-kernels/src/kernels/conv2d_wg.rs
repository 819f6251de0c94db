//! `conv2d_wg`: the fast TransformerNet's 3x3 convolutions on Hopper warpgroup MMA (`wgmma.mma_async`,
//! target `sm_90a`) (host launcher: host/src/ops/conv2d_wg.rs; CPU reference: models::ops::conv2d).
//!
//! `linear_wg`'s GEMM with the A tile gathered from the image (implicit GEMM): GEMM M = the P*Q output
//! pixels of one sample (grid y = sample, so a tile never crosses samples), N = K output channels (all
//! of them in one block), GEMM-K = 9*C in `conv2d_tc`'s (r, s, c) order, c innermost. x NHWC f16
//! `[N, H, W, C]` with C % 64 == 0; w the `conv2d_tc` `TcWeight` f16 `[K][9C]` (for C % 64 == 0 its rows
//! need no padding: kw = 9C), i.e. already the K-major B operand. 3x3, stride 1, reflection padding 1 in
//! the (optionally nearest x2 upsampled) image: output P = H*up, Q = W*up; the reflected coordinate is
//! taken in the upsampled image and divided by `up`, exactly as `conv2d_tc`'s gather.
//!
//! Block: `CONV2D_WG_THREADS` = 2 warpgroups, tile `CONV2D_WG_BM` = 128 pixels x all K channels;
//! warpgroup g owns tile rows 64g .. 64g + 64 (`conv2d_wg_k128`: one `wgmma.m64n128k16` per k16 step, 64
//! f32 accumulators per thread; `conv2d_wg_k64`, deconv1: `wgmma.m64n64k16`, 32). Grid (ceil(P*Q / 128),
//! N). ptxas (sm_90a): k128 127 registers, k64 72, no spills (k128: two blocks of 256 threads per SM).
//!
//! GEMM-K step kt (BK = 64) is one tap (r, s) = (tap / 3, tap % 3), tap = 64kt / C, and the 64 channels
//! c0 .. c0 + 64, c0 = 64kt - tap*C: tile row `row` is the 128-byte run x[n][ih][iw][c0 .. c0 + 64] of
//! output pixel m0 + row, and thread t copies 16-byte chunk j = t % 8 of rows t / 8 + 32i (i < 4) with
//! `cp.async` (L1-cached: neighbouring pixels and taps re-read the same input) into the 128-byte-swizzle
//! layout of `device::wgmma`, the B rows the same way. The source offsets come from a table built at
//! block start: per tap and tile row the element offset `((n*H + ih)*W + iw)*C` of the reflected,
//! upsampled input pixel (one shared load per copied row and step). Rows past P*Q gather pixel P*Q - 1
//! (in range) and are neither stored nor counted in the statistics.
//!
//! Pipeline: exactly `linear_wg`'s (`CONV2D_WG_STAGES` = S = 3 stages): iteration kt waits for its own
//! copies of tile kt (`cp.async.wait_group(S - 3)`), [input norm, below], `fence.proxy.async`, barrier,
//! loads tile kt + S - 2 into the stage freed by tile kt - 2's retired MMA batch, then `wgmma.fence`,
//! four k16 MMAs, commit, `wgmma.wait_group 1`.
//!
//! Input norm (`in_coef` not null): the input is a raw conv output and each element is loaded as
//! relu(a_c x + b_c), (a, b) = `in_coef[(n*C + c)*2 ..+2]`, in f32 with one f16 rounding (`conv2d_tc`'s
//! `in_norm_relu`, bit-identical to `nhwc_in_apply`). The block stages its sample's C pairs in shared
//! memory after the gather table; after this thread's copies of tile kt have landed and BEFORE the
//! `fence.proxy.async` + barrier that publish them to the MMAs, the thread rewrites the four 16-byte chunks
//! it copied itself (one channel group, so one set of 8 coefficient pairs). Reflection and upsampling copy
//! elements, so they commute with the transform; the clamped rows past P*Q are transformed too (finite,
//! never stored).
//!
//! Epilogue (`conv2d_tc`'s `CONV2D_TC_OUT_F16_STATS`): y16 NHWC f16 (saturated to ±65504) and the tile's
//! InstanceNorm partials per channel from the f32 accumulators in two passes (the mean of the valid
//! pixels, then the sum of squared deviations from it), each reduced over the 8 lanes of a row group by
//! shuffles and over the 8 warps through shared memory (the drained pipeline's first stage):
//! `part[((n*K + ch)*tiles + tile)*2 ..+2]` = (mean, M2), tiles = ceil(P*Q / 128) (host:
//! `PartTiling::linear(P*Q, 128)`).
use super::conv2d_tc::{in_norm_relu, ld_u32, ld_v4_u32, reflect, st_v4_u32, sum_rows};
use crate::device::mma::{cp_async_16, cp_async_16_ca, cp_async_commit, cp_async_wait_group, pack_f16x2};
use crate::device::shared::{ld_f32, ld_v4_f32, st_f32, st_u32};
use crate::device::unroll::unroll;
use crate::device::wgmma::{
    aligned_smem,
    self, fence_acc32, fence_acc64, mma_m64n128k16_f16, mma_m64n64k16_f16, smem_desc_sw128, splat32,
    splat64, sw128_offset, wait_acc32, wait_acc64, SW128_ATOM_BYTES, SW128_ROW_BYTES,
};
use crate::device::{block_idx_x, block_idx_y, sync_threads, thread_idx_x};
use crate::launch::{
    conv2d_wg_smem, CONV2D_WG_BK, CONV2D_WG_BM, CONV2D_WG_STAGES, CONV2D_WG_TAPS, CONV2D_WG_THREADS,
};

const BM: u32 = CONV2D_WG_BM;
const BK: u32 = CONV2D_WG_BK;
const STAGES: u32 = CONV2D_WG_STAGES;
const THREADS: u32 = CONV2D_WG_THREADS;
const TAPS: u32 = CONV2D_WG_TAPS;
/// 16-byte chunks per tile row (BK f16 = 128 bytes).
const CHUNKS: u32 = BK * 2 / 16;
/// Rows one loader pass covers (thread t copies chunk t % CHUNKS of rows t / CHUNKS + ROW_STEP·i).
const ROW_STEP: u32 = THREADS / CHUNKS;
const A_BYTES: u32 = BM * SW128_ROW_BYTES;
/// Bytes of one warpgroup's 64 A-tile rows.
const WG_A_BYTES: u32 = 64 * SW128_ROW_BYTES;
/// Bytes of the gather table (u32 per tap and tile row).
const TAB_BYTES: u32 = TAPS * BM * 4;

const _: () = assert!(
    BM == 128
        && BK == 64
        && CHUNKS == 8
        && THREADS == 256
        && ROW_STEP == 32
        && STAGES == 3
        && A_BYTES % SW128_ATOM_BYTES == 0
);

macro_rules! conv2d_wg_entry {
    ($(#[$doc:meta])* $name:ident, k $bn:expr, acc $na:expr, $splat:ident, $fence:ident, $mma:ident, $wait:ident, n8x8 $no:tt, b_rows $nb:tt) => {
$(#[$doc])*
///
/// 3x3 conv, reflection padding 1, stride 1, optional nearest x2 upsampling (`up` 1 or 2), K output
/// channels, on `wgmma` (see the module comment). x NHWC f16 `[N, h, wd, c]`, w f16 `[K][9c]`; writes
/// y16 NHWC f16 `[N, h*up, wd*up, K]` (as f16 pairs) and the InstanceNorm partials `part`
/// `[N][K][tiles][2]`; `in_coef` f32 `[N][c][2]` or null. Grid (ceil(P*Q / 128), N), block
/// `CONV2D_WG_THREADS`, dynamic shared memory `conv2d_wg_smem(K)` (+ `conv2d_wg_in_norm_smem(c)` with
/// `in_coef`). Requires (host-checked): c % 64 == 0, c ≥ 64, 1 < h*up, 1 < wd*up, every element index
/// of x, w, y16 and part below 2^31.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn $name(
    x: *const u16,
    w: *const u16,
    h: u32,
    wd: u32,
    c: u32,
    up: u32,
    y16: *mut u32,
    part: *mut f32,
    in_coef: *const f32,
) {
    const BN: u32 = $bn;
    const B_BYTES: u32 = BN * SW128_ROW_BYTES;
    const STAGE_BYTES: u32 = A_BYTES + B_BYTES;
    const _: () = assert!(
        BN % 64 == 0
            && BN / ROW_STEP == $nb
            && $na == BN / 2
            && $no * 8 * 8 == BN
            && STAGE_BYTES % SW128_ATOM_BYTES == 0
            && conv2d_wg_smem(BN) == STAGES * STAGE_BYTES + SW128_ATOM_BYTES + TAB_BYTES
            // The epilogue's scratch (8 x K sums, K means, 8 x K M2) fits in the first stage.
            && (2 * 8 * BN + BN) * 4 <= STAGE_BYTES
    );
    crate::device::grid_dependency_wait();
    let t = thread_idx_x();
    let wg = t / 128;
    let tile = block_idx_x();
    let n_img = block_idx_y();
    let (p, q) = (h * up, wd * up);
    let pq = p * q;
    let m0 = tile * BM;
    let kw = TAPS * c;
    let ktiles = kw / BK;
    let smem = aligned_smem();
    let tab = smem + STAGES * STAGE_BYTES;
    let coef_tab = tab + TAB_BYTES;

    // Gather table [tap][row]: element offset of the input pixel tap (r, s) of output pixel m0 + row
    // (clamped to P*Q - 1) reads; reflection in the upsampled image, then / up (up is 1 or 2).
    {
        let up_shift = up >> 1;
        let mut id = t;
        while id < TAPS * BM {
            let (tap, row) = (id / BM, id % BM);
            let m = if m0 + row < pq { m0 + row } else { pq - 1 };
            let oh = m / q;
            let ow = m - oh * q;
            let rr = tap / 3;
            let ss = tap - rr * 3;
            let ih = reflect((oh + rr) as i32 - 1, p as i32) as u32 >> up_shift;
            let iw = reflect((ow + ss) as i32 - 1, q as i32) as u32 >> up_shift;
            st_u32(tab + id * 4, ((n_img * h + ih) * wd + iw) * c);
            id += THREADS;
        }
        // The input norm's (a, b) of this sample's C channels.
        if !in_coef.is_null() {
            let src = in_coef.add((n_img * c * 2) as usize);
            let mut id = t;
            while id < c * 2 {
                st_f32(coef_tab + id * 4, *src.add(id as usize));
                id += THREADS;
            }
        }
        sync_threads();
    }

    // Loader: chunk j of A rows r0 + 32i (i < 4) and B rows r0 + 32i (i < 4); the four rows share the
    // swizzle term r0 % 8. C % 64 == 0: a step never crosses a tap, and every chunk lies inside C.
    let j = t % CHUNKS;
    let r0 = t / CHUNKS;
    let dst0 = sw128_offset(r0, j);
    let tab0 = tab + r0 * 4;
    let w0 = w.add(r0 as usize * kw as usize + (j * 8) as usize);
    // (tap, channel of this thread's chunk) of GEMM-K step kt.
    let step = |kt: u32| {
        let k0 = kt * BK;
        let tap = k0 / c;
        (tap, k0 - tap * c + j * 8)
    };
    let load = |stage: u32, kt: u32| {
        let base = smem + stage * STAGE_BYTES + dst0;
        let (tap, ci) = step(kt);
        let row_t = tab0 + tap * (BM * 4);
        unroll!(4, |i| {
            let dr = ROW_STEP * i as u32;
            let src = x.add((ld_u32(row_t + dr * 4) + ci) as usize);
            cp_async_16_ca(base + dr * SW128_ROW_BYTES, src as *const u8, 16);
        });
        let wk = w0.add((kt * BK) as usize);
        unroll!($nb, |i| {
            let dr = ROW_STEP * i as u32;
            cp_async_16(
                base + A_BYTES + dr * SW128_ROW_BYTES,
                wk.add(dr as usize * kw as usize) as *const u8,
                16,
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

    let mut acc = $splat(0.0);
    let mut kt = 0;
    while kt < ktiles {
        // Groups committed so far: S - 2 + kt, group g holding K tile g; tile kt landed when at most
        // S - 3 are pending.
        cp_async_wait_group::<{ STAGES - 3 }>();
        // Input norm: this thread's own chunks of tile kt have landed; x -> relu(a_c x + b_c) in place,
        // before the proxy fence and the barrier publish them to the MMAs.
        if !in_coef.is_null() {
            let base = smem + (kt % STAGES) * STAGE_BYTES + dst0;
            let (_, ci) = step(kt);
            let cf = coef_tab + ci * 8;
            let ab = [ld_v4_f32(cf), ld_v4_f32(cf + 16), ld_v4_f32(cf + 32), ld_v4_f32(cf + 48)];
            unroll!(4, |i| {
                let addr = base + ROW_STEP * i as u32 * SW128_ROW_BYTES;
                st_v4_u32(addr, in_norm_relu(ld_v4_u32(addr), &ab));
            });
        }
        wgmma::fence_proxy_async_shared();
        sync_threads();
        let next = kt + STAGES - 2;
        if next < ktiles {
            load(next % STAGES, next);
        }
        cp_async_commit();

        let a_base = smem + (kt % STAGES) * STAGE_BYTES + wg * WG_A_BYTES;
        let b_base = smem + (kt % STAGES) * STAGE_BYTES + A_BYTES;
        $fence(&mut acc);
        unroll!(4, |s| {
            let off = 32 * s as u32;
            $mma(
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
    $wait::<0>(&mut acc);
    // Drain the (empty) trailing cp.async groups; the barrier retires both warpgroups' MMAs before the
    // epilogue reuses the first stage as scratch.
    cp_async_wait_group::<0>();
    sync_threads();

    // Epilogue (accumulator layout of `device::wgmma`): warp wq of the warpgroup, lane l: tile rows
    // 64 wg + 16 wq + l/4 (+ 8), columns 8i + 2(l % 4) (+ 1) of n8 block i.
    let lane = t % 32;
    let warp = t / 32;
    let row0 = m0 + wg * 64 + (warp % 4) * 16 + lane / 4;
    let ok = [row0 < pq, row0 + 8 < pq];
    let col0 = (lane % 4) * 2;
    let pix0 = n_img * pq;
    unroll!(2, |half| {
        let m = row0 + 8 * half as u32;
        if ok[half] {
            let out = y16.add(((pix0 + m) * (BN / 2)) as usize);
            unroll!($no, |ia| {
                unroll!(8, |ib| {
                    let i = ia * 8 + ib;
                    *out.add((col0 / 2 + 4 * i as u32) as usize) =
                        pack_f16x2(acc[4 * i + 2 * half], acc[4 * i + 2 * half + 1]);
                });
            });
        }
    });

    // InstanceNorm partials of the tile's valid pixels: per channel the sum (this thread's two rows, the
    // 8 lanes of its row groups, then the 8 warps through shared memory), the tile mean, then the sum
    // of squared deviations from it the same way.
    let count = if pq - m0 < BM { pq - m0 } else { BM };
    let red = smem; // [8 warps][BN] sums
    let mean_tab = smem + 8 * BN * 4; // [BN] means
    let red2 = mean_tab + BN * 4; // [8 warps][BN] M2
    let write_col = lane < 4;
    unroll!($no, |ia| {
        unroll!(8, |ib| {
            let i = ia * 8 + ib;
            unroll!(2, |e| {
                let mut v = 0f32;
                unroll!(2, |half| {
                    if ok[half] {
                        v += acc[4 * i + 2 * half + e];
                    }
                });
                let v = sum_rows(v);
                if write_col {
                    st_f32(red + (warp * BN + col0 + 8 * i as u32 + e as u32) * 4, v);
                }
            });
        });
    });
    sync_threads();
    let mut mean = 0f32;
    if t < BN {
        let mut tot = 0f32;
        for r in 0..8 {
            tot += ld_f32(red + (r * BN + t) * 4);
        }
        mean = tot / count as f32;
        st_f32(mean_tab + t * 4, mean);
    }
    sync_threads();
    unroll!($no, |ia| {
        unroll!(8, |ib| {
            let i = ia * 8 + ib;
            unroll!(2, |e| {
                let col = col0 + 8 * i as u32 + e as u32;
                let mu = ld_f32(mean_tab + col * 4);
                let mut v = 0f32;
                unroll!(2, |half| {
                    if ok[half] {
                        let d = acc[4 * i + 2 * half + e] - mu;
                        v += d * d;
                    }
                });
                let v = sum_rows(v);
                if write_col {
                    st_f32(red2 + (warp * BN + col) * 4, v);
                }
            });
        });
    });
    sync_threads();
    if t < BN {
        let mut m2 = 0f32;
        for r in 0..8 {
            m2 += ld_f32(red2 + (r * BN + t) * 4);
        }
        let tiles = pq.div_ceil(BM);
        let o = part.add((((n_img * BN + t) * tiles + tile) * 2) as usize);
        *o = mean;
        *o.add(1) = m2;
    }
}
    };
}

conv2d_wg_entry!(
    /// K = 128 (the residual blocks' convs): one `wgmma.m64n128k16` per warpgroup and k16 step.
    conv2d_wg_k128, k 128, acc 64, splat64, fence_acc64, mma_m64n128k16_f16, wait_acc64, n8x8 2, b_rows 4
);
conv2d_wg_entry!(
    /// K = 64 (deconv1: 128 -> 64 channels, upsampled x2): one `wgmma.m64n64k16` per warpgroup and k16 step.
    conv2d_wg_k64, k 64, acc 32, splat32, fence_acc32, mma_m64n64k16_f16, wait_acc32, n8x8 1, b_rows 2
);
