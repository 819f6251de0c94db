//! `conv2d_tc_halo9_taps`: TransformerNet's last layer (9x9, stride 1, reflection pad 4, 32 -> 3
//! channels) on tensor cores with the filter columns moved into the GEMM's N.
//!
//! A direct implicit GEMM has N = 3 output channels, padded to the mma's 8 (`conv2d_tc_halo9_k8`: 5 of
//! every 8 tensor-core columns wasted, GEMM-K = 81 taps x 32 channels, one A fragment per mma). Here, for
//! each staged input column u and output row y,
//!
//!   Z[y, u, (dx, c)] = Σ_{dy, ci} x[y + dy − 4, u, ci] · w[c, ci, dy, dx]
//!
//! is a GEMM with M = (row, halo column), K = 9 filter rows x 32 channels = 288 and N = 9 filter columns
//! x 3 channels = 27 (of 32), and the output is a 9-term shifted sum along the row:
//!
//!   y[y, x, c] = bias[c] + Σ_dx Z[y, x + dx − 4, (dx, c)].
//!
//! Per output pixel that is 2.25x fewer tensor-core FLOPs (288 x 32 x (TW + 8)/TW against 2592 x 8),
//! and each A fragment feeds four mma (one per n-tile) instead of one.
//!
//! Block: 256 threads = 8 warps, output tile TH = 8 rows x TW = 56 columns; warp w owns output row
//! ty0 + w and the four m-tiles of 16 halo columns (HW = 64 = TW + 8). The input tile with its halo
//! ((TH + 8) x HW pixels of 64 bytes, 16-byte chunks swizzled by `(pixel >> 1) & 3` as in
//! `conv2d_tc_halo9_k8`, so that eight consecutive pixels of one chunk column are conflict-free for
//! ldmatrix) and the whole weight in fragment order are staged once with cp.async. Optionally the
//! producing layer's InstanceNorm + ReLU is applied to the staged input in shared memory
//! (`norm`, an `InNorm`: v = relu(a·x + b) with (a, b) = coef[(n·32 + ci)·2 ..+2] or from the plane sums, in f32, rounded once to
//! f16 as `nhwc_in_apply` does), so the normalised activation never goes through memory.
//! After the MMA loop, Z goes to shared memory (f32, row pitch `CONV2D_TC_TAPS_ZP`, over the dead input
//! tile) and the shifted sums are written as NCHW f32 plus bias, x fastest (coalesced).
use super::conv2d_tc::{halo32_chunk, halo32_in_coef, halo32_in_norm_with, halo32_load, ld_v4_u32};
use crate::device::mma::{cp_async_16, cp_async_commit, cp_async_wait_group, ldmatrix_x4, mma_f16_16816};
use crate::device::shared::{self, ld_f32};
use crate::device::unroll::unroll;
use crate::device::{block_idx_x, block_idx_y, block_idx_z, sync_threads, thread_idx_x};
use crate::launch::{
    InNorm, CONV2D_TC_HALO_C as C, CONV2D_TC_TAPS_HW as HW, CONV2D_TC_TAPS_K as KT, CONV2D_TC_TAPS_TH as TH, CONV2D_TC_TAPS_TILE_BYTES, CONV2D_TC_TAPS_TW as TW,
    CONV2D_TC_TAPS_W_ELEMS, CONV2D_TC_TAPS_ZP as ZP, CONV2D_TC_THREADS,
};
use core::arch::asm;

/// `st.shared.v2.f32`. # Safety: `addr` 8-byte aligned inside the dynamic shared memory.
#[inline(always)]
unsafe fn st_v2_f32(addr: u32, a: f32, b: f32) {
    asm!("st.shared.v2.f32 [{0}], {{{1}, {2}}};", in(reg32) addr, in(reg32) a, in(reg32) b, options(nostack));
}

/// y `[N, k_real, H, W]` NCHW f32 = bias + conv9x9(x reflect-padded by 4, w), x NHWC f16 `[N, H, W, 32]`,
/// optionally normalised on load (`norm`, see the module doc; none = x as is). `w`: the packed weight
/// (`host::ops::conv2d_tc::pack_weight_halo9_taps`): for k16 step s (filter row s / 2, channels
/// (s % 2)·16 ..+16), lane (g = lane / 4, q = lane % 4) and n-tile j, the mma B registers
/// (w[c][ci][dy][dx] at k = 2q + {0, 1} and 2q + 8 + {0, 1}, column n = 8j + g = dx·3 + c, zero for
/// n ≥ 27 or c ≥ k_real) at f16 `(((s·32 + lane)·4 + j)·2 + reg)·2`.
/// Grid (ceil(W / TW), ceil(H / TH), N); block `CONV2D_TC_THREADS` (256); dynamic shared memory
/// `CONV2D_TC_TAPS_SMEM`. Requires (host): H, W ≥ 5, 1 ≤ k_real ≤ 3, N·H·W·32 < 2^31.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn conv2d_tc_halo9_taps(x: *const u16, w: *const u16, norm: InNorm, h: u32, wd: u32, y32: *mut f32, bias: *const f32, k_real: u32) {
    crate::device::grid_dependency_wait();
    const HPIX: u32 = (TH + 8) * HW;
    const PIX_BYTES: u32 = C * 2; // 64: four 16-byte chunks
    const { assert!(CONV2D_TC_THREADS == 256 && TH == 8 && HW == 64 && PIX_BYTES == 64 && KT == 3) };
    let t = thread_idx_x();
    let warp = t / 32;
    let lane = t % 32;
    let tx0 = block_idx_x() * TW;
    let ty0 = block_idx_y() * TH;
    let n_img = block_idx_z();
    let smem = shared::dynamic_smem_addr();
    let w_base = smem + CONV2D_TC_TAPS_TILE_BYTES;
    let chunk_addr = |hp: u32, chunk: u32| halo32_chunk(smem, hp, chunk);

    // Stage the input tile rows ty0-4 .. ty0+TH+4, columns tx0-4 .. tx0+TW+4 (reflected) and the weight;
    // normalise it in shared memory when asked.
    halo32_load(x, smem, h, wd, tx0, ty0, n_img, HW, HPIX);
    let mut id = t;
    while id < CONV2D_TC_TAPS_W_ELEMS / 8 {
        cp_async_16(w_base + id * 16, w.add(id as usize * 8) as *const u8, 16);
        id += CONV2D_TC_THREADS;
    }
    cp_async_commit();
    // The input norm's coefficients and the biases while the tile's copies fly (after the wait their
    // round trips came one after another: coefficients, then a bias per output element).
    let ab = if norm.is_some() { halo32_in_coef(&norm, n_img) } else { [[0f32; 4]; 4] };
    let last = k_real - 1;
    let bv = [0u32, 1, 2].map(|c| *bias.add((if c < last { c } else { last }) as usize));
    cp_async_wait_group::<0>();
    if norm.is_some() {
        halo32_in_norm_with(&ab, smem, HPIX);
    }
    sync_threads();

    // Z for halo columns mi*16 .. +16 of output row ty0 + warp: acc[mi][j] = n-tile j (columns 8j .. 8j+8).
    let mut acc = [[[0f32; 4]; 4]; 4];
    let col = lane % 16;
    let half = lane / 16;
    let mut s = 0;
    while s < 18 {
        let dy = s / 2;
        let chunk = (s % 2) * 2 + half;
        let wb = w_base + (s * 32 + lane) * 32;
        let b01 = ld_v4_u32(wb);
        let b23 = ld_v4_u32(wb + 16);
        let b = [[b01[0], b01[1]], [b01[2], b01[3]], [b23[0], b23[1]], [b23[2], b23[3]]];
        let row = (warp + dy) * HW + col;
        unroll!(4, |mi| {
            let a = ldmatrix_x4(chunk_addr(row + mi as u32 * 16, chunk));
            unroll!(4, |j| {
                mma_f16_16816(&mut acc[mi][j], a, b[j]);
            });
        });
        s += 1;
    }

    // Z to shared memory over the input tile: Z[(warp*HW + hx)*ZP + n], fragment rows g, g+8 = halo
    // columns, fragment columns 2q, 2q+1 = n.
    sync_threads();
    let g = lane / 4;
    let q = lane % 4;
    unroll!(4, |mi| {
        unroll!(4, |j| {
            unroll!(2, |hf| {
                let hx = mi as u32 * 16 + g + 8 * hf as u32;
                let n = j as u32 * 8 + 2 * q;
                st_v2_f32(smem + ((warp * HW + hx) * ZP + n) * 4, acc[mi][j][2 * hf], acc[mi][j][2 * hf + 1]);
            });
        });
    });
    sync_threads();

    // y[n, c, ty0 + r, tx0 + xo] = bias[c] + Σ_dx Z[r][xo + dx][dx*3 + c].
    let mut id = t;
    while id < TH * TW * k_real {
        let xo = id % TW;
        let rest = id / TW;
        let (r, c) = (rest % TH, rest / TH);
        let (oy, ox) = (ty0 + r, tx0 + xo);
        if oy < h && ox < wd {
            let zb = smem + ((r * HW + xo) * ZP + c) * 4;
            let mut v = if c == 0 {
                bv[0]
            } else if c == 1 {
                bv[1]
            } else {
                bv[2]
            };
            let mut dx = 0;
            while dx < 9 {
                v += ld_f32(zb + (dx * ZP + dx * KT) * 4);
                dx += 1;
            }
            *y32.add((((n_img * k_real + c) * h + oy) * wd + ox) as usize) = v;
        }
        id += CONV2D_TC_THREADS;
    }
}
