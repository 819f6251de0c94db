//! `conv2d_tc` kernels (host launcher: host/src/ops/conv2d_tc.rs; CPU reference: models::ops::conv2d).
//!
//! Implicit-GEMM convolution on tensor cores: x NHWC bf16, w [K][R][S][C] bf16, y NHWC f32, reflection
//! padding, stride, optional nearest upsampling folded into the gather. GEMM: M = N*P*Q output pixels,
//! N_gemm = K output channels (all of them in one block), K_gemm = R*S*C ordered (r, s, c), c innermost.
//!
//! Block: `CONV2D_TC_THREADS` = 8 warps, `CONV2D_TC_BM` = 128 pixels x all K = 32 W channels; the warps
//! form an (8 / W) x W grid, each computing 16 W pixels x 32 channels (W m-tiles x 4 n-tiles of mma
//! m16n8k16). Grid: x = ceil(M / BM).
//! Each GEMM-K step of `BK` = 32 bf16 stages an A tile [BM][32] and a B tile [K][32] in shared memory
//! through a `CONV2D_TC_STAGES`-deep cp.async pipeline. A row is 64 bytes = four 16-byte chunks
//! (8 channels each; C % 16 == 0 keeps a chunk inside one filter tap); chunk `j` of row `row` lives at
//! `row * 64 + ((j ^ ((row >> 1) & 3)) * 16)` so that 8 consecutive rows of one chunk column hit 8
//! different bank groups (ldmatrix and cp.async are conflict-free). GEMM-K positions past R*S*C (the
//! last step when R*S*C % 32 == 16) are zero-filled in both tiles. Rows past M gather pixel M-1 (in
//! range) and are not stored.
use crate::device::mma::{cp_async_16, cp_async_commit, cp_async_wait_group, ldmatrix_x4, mma_bf16_16816};
use crate::device::unroll::unroll;
use crate::device::{block_idx_x, shared, sync_threads, thread_idx_x};
use crate::launch::{CONV2D_TC_BK, CONV2D_TC_BM, CONV2D_TC_STAGES, CONV2D_TC_THREADS};

/// Bytes of one shared-memory row (BK bf16).
const ROW_BYTES: u32 = CONV2D_TC_BK * 2;
/// 16-byte chunks per row.
const CHUNKS: u32 = ROW_BYTES / 16;
/// A-tile rows gathered per thread (each thread copies chunk `t % 4` of rows `t / 4 + 64 i`).
const A_ROWS: usize = (CONV2D_TC_BM * CHUNKS / CONV2D_TC_THREADS) as usize;
const A_ROW_STEP: u32 = CONV2D_TC_THREADS / CHUNKS;

/// Byte offset of 16-byte chunk `chunk` of row `row` in a tile (XOR swizzle, see the module comment).
#[inline(always)]
fn swz(row: u32, chunk: u32) -> u32 {
    row * ROW_BYTES + ((chunk ^ ((row >> 1) & 3)) << 4)
}

/// Reflects `v` into `0..extent` (one reflection; the host ensures the padding is smaller than `extent`).
#[inline(always)]
fn reflect(v: i32, extent: i32) -> i32 {
    let mut v = v;
    if v < 0 {
        v = -v;
    }
    if v > extent - 1 {
        v = 2 * (extent - 1) - v;
    }
    v
}

/// The kernel body for K = 32 * W output channels: the 8 warps form a (8 / W) x W grid, each warp
/// computing W m-tiles (16 W pixels) x 4 n-tiles (32 channels).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn conv2d_tc_body<const W: usize>(
    x: *const u16,
    w: *const u16,
    b: *const f32,
    y: *mut f32,
    h: u32,
    wd: u32,
    c: u32,
    p_out: u32,
    q_out: u32,
    r: u32,
    stride: u32,
    pad: u32,
    up: u32,
    m_total: u32,
) {
    const { assert!((W == 1 || W == 2 || W == 4) && A_ROWS == 2 && CHUNKS == 4 && CONV2D_TC_BM == 128) };
    const { assert!(CONV2D_TC_THREADS == 256) };
    let k_out = W as u32 * 32;
    // Repeats a block for mi in 0..W (fully unrolled, so the fragment arrays stay in registers).
    macro_rules! unroll_w {
        (|$i:ident| $body:block) => {
            match W {
                1 => { let $i: usize = 0; $body }
                2 => unroll!(2, |$i| $body),
                _ => unroll!(4, |$i| $body),
            }
        };
    }
    let t = thread_idx_x();
    let warp = t / 32;
    let lane = t % 32;
    let kg = r * r * c; // GEMM-K
    let ktiles = kg.div_ceil(CONV2D_TC_BK);
    let m0 = block_idx_x() * CONV2D_TC_BM;

    let smem = shared::dynamic_smem_addr();
    let a_bytes = CONV2D_TC_BM * ROW_BYTES;
    let stage_bytes = a_bytes + k_out * ROW_BYTES;

    // A gather: this thread's chunk column and its rows' pixel coordinates.
    let j = t % CHUNKS;
    let hu = (h * up) as i32;
    let wu = (wd * up) as i32;
    let up_shift = up >> 1; // up is 1 or 2 (host-checked): source = upsampled >> up_shift
    let mut a_img = [0u32; A_ROWS]; // n * H * W (pixel index of the image's first pixel)
    let mut a_bh = [0i32; A_ROWS]; // oh * stride - pad (upsampled coordinates)
    let mut a_bw = [0i32; A_ROWS];
    let pq = p_out * q_out;
    for i in 0..A_ROWS {
        let row = t / CHUNKS + A_ROW_STEP * i as u32;
        let mut m = m0 + row;
        if m >= m_total {
            m = m_total - 1;
        }
        let n = m / pq;
        let rem = m - n * pq;
        let oh = rem / q_out;
        let ow = rem - oh * q_out;
        a_img[i] = n * h * wd;
        a_bh[i] = (oh * stride) as i32 - pad as i32;
        a_bw[i] = (ow * stride) as i32 - pad as i32;
    }

    // Issues the copies of GEMM-K step `kt` into pipeline stage `stage`.
    let load = |stage: u32, kt: u32| {
        let base = smem + stage * stage_bytes;
        let k0 = kt * CONV2D_TC_BK;
        // A: chunk j of each of this thread's rows.
        let kk = k0 + j * 8;
        let a_ok = kk < kg;
        let kk_c = if a_ok { kk } else { 0 };
        let tap = kk_c / c;
        let ci = kk_c - tap * c;
        let rr = tap / r;
        let ss = tap - rr * r;
        for i in 0..A_ROWS {
            let row = t / CHUNKS + A_ROW_STEP * i as u32;
            let ih = reflect(a_bh[i] + rr as i32, hu) as u32 >> up_shift;
            let iw = reflect(a_bw[i] + ss as i32, wu) as u32 >> up_shift;
            let pix = a_img[i] + ih * wd + iw;
            let src = x.add(pix as usize * c as usize + ci as usize);
            cp_async_16(base + swz(row, j), src as *const u8, if a_ok { 16 } else { 0 });
        }
        // B: K rows x 4 chunks, spread over the block.
        let mut id = t;
        while id < k_out * CHUNKS {
            let n = id / CHUNKS;
            let jj = id % CHUNKS;
            let kk = k0 + jj * 8;
            let ok = kk < kg;
            let off = if ok { n as usize * kg as usize + kk as usize } else { 0 };
            cp_async_16(base + a_bytes + swz(n, jj), w.add(off) as *const u8, if ok { 16 } else { 0 });
            id += CONV2D_TC_THREADS;
        }
    };

    let mut acc = [[[0f32; 4]; 4]; W];

    // Prologue: the first STAGES - 1 steps (one commit group each, possibly empty).
    for s in 0..CONV2D_TC_STAGES - 1 {
        if s < ktiles {
            load(s, s);
        }
        cp_async_commit();
    }

    // Warp tile: rows wm*16W .. +16W of the block, output channels wn*32 .. +32.
    let wm = warp % (8 / W as u32);
    let wn = warp / (8 / W as u32);
    let row0 = wm * 16 * W as u32;
    let col0 = wn * 32;
    // ldmatrix row addresses of this lane (before the stage base, the m-tile and the k16 half).
    let a_row = row0 + (lane % 16);
    let a_chunk = lane / 16;
    let b_row = col0 + (lane & 7) + ((lane >> 4) << 3);
    let b_chunk = (lane >> 3) & 1;

    let mut kt = 0;
    while kt < ktiles {
        // Step kt has landed (at most STAGES - 2 younger groups pending) for this thread; the barrier
        // makes every thread's copies visible and guarantees step kt - 1's stage is no longer read.
        cp_async_wait_group::<{ CONV2D_TC_STAGES - 2 }>();
        sync_threads();
        let next = kt + CONV2D_TC_STAGES - 1;
        if next < ktiles {
            load(next % CONV2D_TC_STAGES, next);
        }
        cp_async_commit();

        let a_base = smem + (kt % CONV2D_TC_STAGES) * stage_bytes;
        let b_base = a_base + a_bytes;
        unroll!(2, |half| {
            let half = half as u32;
            let mut a = [[0u32; 4]; W];
            unroll_w!(|mi| {
                a[mi] = ldmatrix_x4(a_base + swz(a_row + mi as u32 * 16, half * 2 + a_chunk));
            });
            // One ldmatrix.x4 gives the B fragments of n-tiles 2 jp and 2 jp + 1.
            unroll!(2, |jp| {
                let bf = ldmatrix_x4(b_base + swz(b_row + jp as u32 * 16, half * 2 + b_chunk));
                unroll_w!(|mi| {
                    mma_bf16_16816(&mut acc[mi][2 * jp], a[mi], [bf[0], bf[1]]);
                    mma_bf16_16816(&mut acc[mi][2 * jp + 1], a[mi], [bf[2], bf[3]]);
                });
            });
        });
        kt += 1;
    }
    // Drain the (empty) trailing groups before the block exits.
    cp_async_wait_group::<0>();

    // Epilogue: per m-tile, rows g and g + 8; per n-tile, columns 2t and 2t + 1.
    let g = lane / 4;
    let tq = lane % 4;
    unroll_w!(|mi| {
        unroll!(2, |half| {
            let m = m0 + row0 + mi as u32 * 16 + g + 8 * half as u32;
            if m < m_total {
                let out = y.add(m as usize * k_out as usize);
                unroll!(4, |jn| {
                    let col = (col0 + tq * 2) as usize + jn * 8;
                    let mut v0 = acc[mi][jn][2 * half];
                    let mut v1 = acc[mi][jn][2 * half + 1];
                    if !b.is_null() {
                        v0 += *b.add(col);
                        v1 += *b.add(col + 1);
                    }
                    *out.add(col) = v0;
                    *out.add(col + 1) = v1;
                });
            }
        });
    });
}

macro_rules! conv2d_tc_entry {
    ($name:ident, $w:expr) => {
        /// `conv2d_tc` for K = 32 * W output channels. `b` may be null. Block: `CONV2D_TC_THREADS`;
        /// dynamic shared memory: `conv2d_tc_smem_bytes(K)`. Requires C % 16 == 0, reflection padding
        /// `pad` < H * up and < W * up, and every size below 2^31 (checked by the host).
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "ptx-kernel" fn $name(
            x: *const u16,
            w: *const u16,
            b: *const f32,
            y: *mut f32,
            h: u32,
            wd: u32,
            c: u32,
            p_out: u32,
            q_out: u32,
            r: u32,
            stride: u32,
            pad: u32,
            up: u32,
            m_total: u32,
        ) {
            conv2d_tc_body::<$w>(x, w, b, y, h, wd, c, p_out, q_out, r, stride, pad, up, m_total)
        }
    };
}

conv2d_tc_entry!(conv2d_tc_k32, 1);
conv2d_tc_entry!(conv2d_tc_k64, 2);
conv2d_tc_entry!(conv2d_tc_k128, 4);
