//! `vit_stack` kernels (host launcher: host/src/ops/vit_stack.rs; CPU reference: the blocks of
//! `models::StyleVit`, through the fast StyleViT's emulation in host/src/selfcheck/vit_fast.rs).
//!
//! A run of post-norm transformer blocks on few tokens (StyleViT at 256 x 256: 64 tokens per image) in one
//! persistent launch. Per block the fast StyleViT queues seven kernels (qkv GEMM, attention, out-projection
//! + residual, LayerNorm, fc1 + GELU, fc2 + residual, LayerNorm), each a few microseconds of work behind a
//! launch; here they are seven phases of one grid, separated by grid-wide barriers. A phase runs the
//! very device code of its kernel (`linear_tc_small_tile`, `attention_tc_body`, `layer_norm_row`) over
//! that kernel's blocks as work items, item `i` on block `i mod gridDim.x`, so the result is bit-identical
//! to the seven launches' (same tiles, same K splits, same split-K summation order).
//!
//! The grid must be co-resident (the host sizes it from the occupancy API, at most 2 blocks per SM). The
//! barrier is cooperative groups' grid sync: a block barrier, then thread 0 publishes the block's writes
//! (`fence.acq_rel.gpu`), adds to one counter (block 0 adds `2^31 − (gridDim.x − 1)`, the others 1, so
//! every completed barrier flips bit 31 and leaves the low bits as they were), spins until bit 31 differs
//! from the value its own add returned, and fences again (acquire) before the block barrier that releases
//! the other threads.
use crate::device::{block_idx_x, grid_dim_x, sync_threads, thread_idx_x};
use crate::launch::{
    VitBlockPtrs, VitStackArgs, LINEAR_TC_BIAS, LINEAR_TC_GELU, LINEAR_TC_RESIDUAL,
    LINEAR_TC_RES_F16, LINEAR_TC_S_BM, LINEAR_TC_S_BN, VIT_STACK_BQ, VIT_STACK_LN_ROWS,
};
use core::arch::asm;

use super::attention_tc::attention_tc_body;
use super::layer_norm::layer_norm_row;
use super::linear_tc::{
    atom_add_acq_rel_gpu, fence_acq_rel_gpu, linear_tc_small_tile, Epilogue, SmallGemm,
};

/// `ld.acquire.gpu.global.u32`.
///
/// # Safety
/// `p` must be a 4-byte aligned global address valid for reads.
#[inline(always)]
unsafe fn ld_acquire_gpu_u32(p: *const u32) -> u32 {
    let v: u32;
    asm!("ld.acquire.gpu.global.u32 {0}, [{1}];", out(reg32) v, in(reg64) p, options(nostack));
    v
}

/// The grid-wide barrier of the module comment. Every thread of every block must reach it.
///
/// # Safety
/// `bar` as [`VitStackArgs::barrier`]; the grid co-resident.
#[inline(always)]
unsafe fn grid_barrier(bar: *mut u32) {
    sync_threads();
    if thread_idx_x() == 0 {
        let inc = if block_idx_x() == 0 {
            0x8000_0000u32 - (grid_dim_x() - 1)
        } else {
            1
        };
        fence_acq_rel_gpu();
        let old = atom_add_acq_rel_gpu(bar, inc);
        while (ld_acquire_gpu_u32(bar) ^ old) & 0x8000_0000 == 0 {}
        fence_acq_rel_gpu();
    }
    sync_threads();
}

/// Runs `$body` with `$i` bound to each of this block's items of `0..$items` (item i on block i mod
/// gridDim.x), with a block barrier before each (the previous item's warps may still read the shared
/// memory the next one refills). A macro, not a closure: the bodies must inline into the kernel (an
/// outlined closure puts its captures in local memory).
macro_rules! for_items {
    ($items:expr, |$i:ident| $body:block) => {{
        let items: u32 = $items;
        let mut $i = block_idx_x();
        while $i < items {
            sync_threads();
            $body
            $i += grid_dim_x();
        }
    }};
}

/// One GEMM phase: `y16 = epilogue(x · wᵀ)` on `linear_tc_small`'s tiles, split `splits` ways (`kps` K
/// steps each), its blocks (bx, by, z) as items in the hardware's order (x fastest).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    a: &VitStackArgs,
    x: u64,
    w: u64,
    ep: Epilogue,
    m: u32,
    k: u32,
    splits: u32,
    kps: u32,
) {
    let tiles_x = ep.n.div_ceil(LINEAR_TC_S_BN);
    let tiles_y = m.div_ceil(LINEAR_TC_S_BM);
    let g = SmallGemm {
        x: x as *const u16,
        w: w as *const u16,
        ep,
        ws: a.ws as *mut f32,
        counters: a.counters as *mut u32,
        m,
        k,
        kps,
        tiles_x,
        splits,
    };
    // At least 1 (the host checks M, N > 0): no division-by-zero path in the kernel.
    let tiles = (tiles_x * tiles_y).max(1);
    let tx = tiles_x.max(1);
    for_items!(tiles * splits, |i| {
        let t = i % tiles;
        linear_tc_small_tile(&g, t % tx, t / tx, i / tiles);
    });
}

/// One LayerNorm phase over `m` rows of `d` (f16 in, no residual), `VIT_STACK_LN_ROWS` rows per item.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn layer_norm(x: u64, gamma: u64, beta: u64, y32: u64, y16: u64, m: u32, d: u32) {
    for_items!(m.div_ceil(VIT_STACK_LN_ROWS), |i| {
        layer_norm_row::<u16>(
            x as *const u16,
            core::ptr::null(),
            gamma as *const f32,
            beta as *const f32,
            y32 as *mut f32,
            y16 as *mut u16,
            i * VIT_STACK_LN_ROWS + thread_idx_x() / 32,
            m,
            d,
            false,
        );
    });
}

/// The kernel body for head dimension `DH`.
#[inline(always)]
unsafe fn vit_stack_body<const DH: usize>(a: &VitStackArgs) {
    crate::device::grid_dependency_wait();
    let (d, f) = (a.d, a.f);
    let m = a.batch * a.tokens;
    let bar = a.barrier as *mut u32;
    let res_f16 = LINEAR_TC_BIAS | LINEAR_TC_RESIDUAL | LINEAR_TC_RES_F16;
    let ep = |bias: u64, res: u64, y16: u64, n: u32, flags: u32| Epilogue {
        bias: bias as *const f32,
        res: res as *const u8,
        y32: core::ptr::null_mut(),
        y16: y16 as *mut u16,
        n,
        res_rows: m,
        flags,
    };
    let q_tiles = a.tokens.div_ceil(VIT_STACK_BQ).max(1);
    let heads = a.heads.max(1);
    let qkv = a.qkv16 as *const u16;
    for blk in 0..a.nblocks {
        let w: VitBlockPtrs = *(a.blocks as *const VitBlockPtrs).add(blk as usize);
        let last = blk + 1 == a.nblocks;
        gemm(a, a.x16, w.w_qkv, ep(w.b_qkv, 0, a.qkv16, 3 * d, LINEAR_TC_BIAS), m, d, a.splits[0], a.kps[0]);
        grid_barrier(bar);
        for_items!(q_tiles * heads * a.batch, |i| {
            let (qt, h, b) = (i % q_tiles, (i / q_tiles) % heads, i / (q_tiles * heads));
            attention_tc_body::<DH, 1>(
                qt,
                h,
                b,
                qkv,
                qkv.add(d as usize),
                qkv.add(2 * d as usize),
                a.a16 as *mut u16,
                a.tokens,
                a.tokens,
                3 * d,
                3 * d,
                d,
                a.scale_log2,
            );
        });
        grid_barrier(bar);
        gemm(a, a.a16, w.w_out, ep(w.b_out, a.x16, a.t16, d, res_f16), m, d, a.splits[1], a.kps[1]);
        grid_barrier(bar);
        layer_norm(a.t16, w.n1_w, w.n1_b, 0, a.x2_16, m, d);
        grid_barrier(bar);
        gemm(
            a,
            a.x2_16,
            w.fc1_w,
            ep(w.fc1_b, 0, a.h16, f, LINEAR_TC_BIAS | LINEAR_TC_GELU),
            m,
            d,
            a.splits[2],
            a.kps[2],
        );
        grid_barrier(bar);
        gemm(a, a.h16, w.fc2_w, ep(w.fc2_b, a.x2_16, a.t16, d, res_f16), m, f, a.splits[3], a.kps[3]);
        grid_barrier(bar);
        let y32 = if last { a.x32 } else { 0 };
        layer_norm(a.t16, w.n2_w, w.n2_b, y32, a.x16, m, d);
        if !last {
            grid_barrier(bar);
        }
    }
}

macro_rules! vit_stack_entry {
    ($name:ident, $dh:expr) => {
        /// `vit_stack` for one head dimension: grid co-resident (see the module comment), block
        /// `VIT_STACK_THREADS`, dynamic shared memory `vit_stack_smem_bytes(dh)`; `a` as [`VitStackArgs`].
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(a: VitStackArgs) {
            vit_stack_body::<$dh>(&a)
        }
    };
}

vit_stack_entry!(vit_stack_d32, 32);
vit_stack_entry!(vit_stack_d64, 64);
