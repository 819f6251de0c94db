//! `conv2d_tma`: the residual blocks' 3x3 convs (C input channels, 128 outputs, stride 1) as a
//! warp-specialised, persistent implicit GEMM on Hopper: bulk tensor copies (TMA) feed a multi-stage
//! shared-memory ring, `wgmma` multiplies, and the epilogue writes NHWC f16 plus the InstanceNorm
//! partials, as `conv2d_wg` does.
//!
//! # Input: an explicitly padded image
//! x is NHWC f16 `[N, H + 2, W + 2, C]`, the reflection-padded (already normalised) input
//! (`nhwc_in_apply_pad` writes it). Output pixel (y, x) and tap (r, s) read padded pixel (y + r, x + s),
//! so the A operand of one GEMM-K step (one tap, 64 channels) for a tile of R rows x Wt columns of output
//! pixels starting at (y0, x0) is the box [c0 .. c0 + 64] x [x0 + s .. + Wt] x [y0 + r .. + R] of sample n:
//! one 4-D TMA request (tensor map dims C, W + 2, H + 2, N, innermost first; box 64 x Wt x R x 1, 128-byte
//! swizzle). It lands as Wt·R rows of 128 bytes, tile row i = pixel (y0 + i / Wt, x0 + i % Wt), in the
//! K-major swizzled layout `device::wgmma` describes. Rows outside the tensor are zero-filled; tile rows
//! past Wt·R or outside the H x W image are computed on whatever the stage holds and never stored.
//! The B operand is the `conv2d_tc` `TcWeight` f16 `[128][9C]` (k = tap·C + c), a 2-D tensor map with
//! box 64 x 128: 128 rows of one 64-wide K slice.
//!
//! # Sub-pixel upsampling convs (`up` = 2)
//! A nearest 2x upsampling, reflection pad 1 and 3x3 conv to 32 channels (deconv2) is, per output parity
//! (py, px), a conv of the low-resolution image replicate-padded by 1 (`nhwc_in_apply_pad` mode 2) whose
//! 3x3 taps are the original taps summed as `conv2d_tc::SUBPIXEL_TAPS` says (some of them zero). With the
//! four parities' 32 channels side by side as the GEMM's 128 columns (column 32·(2py + px) + k, the
//! host's `TmaConvWeight::upload_upsample`), the A operand is the same as a plain 3x3 conv's: the tile
//! rows are low-resolution pixels (yl, xl), and the epilogue stores column block q to output pixel
//! (2yl + py, 2xl + px) of y16 `[N, 2H, 2W, 32]`. Channel k's partials combine its four columns over the
//! tile's rows, a tile of 2R x 2Wt output pixels (`PartTiling::blocks(2H, 2W, 2R, 2Wt)`). This computes
//! 9/4 of the sub-pixel form's products (the zero taps) at the 128-wide tile's speed.
//!
//! With 64 outputs (deconv1) the GEMM has 256 columns, two N tiles (`n_tiles` = 2): N tile py holds
//! parities (py, 0) and (py, 1), so its partials cover output rows 2yl + py of the tile; they are stored
//! N tile major (partial tile nt·tiles + tile), i.e. tiles of R x 2Wt pixels of a plane whose rows are
//! the even output rows then the odd ones (`PartTiling::blocks(2H, 2W, R, 2Wt)`, exact when R divides H;
//! the host checks that).
//!
//! # Roles (block = `NC` consumer warpgroups + 1 producer warp)
//! * Producer (the last warp, one lane): for each tile of the block and each K step, waits until the
//!   ring's next stage is empty, arms its "full" mbarrier with the stage's byte count and issues the two
//!   copies.
//! * Consumer warpgroup g (tile rows 64g .. 64g + 64): per K step waits on "full", four
//!   `wgmma.m64n128k16`, commit, `wgmma.wait_group 1` (the previous step's batch has retired), then each
//!   warp's lane 0 arrives on the previous stage's "empty" mbarrier (count 4·NC).
//! * Tiles: block b takes tiles b, b + gridDim.x, ... of the N·tiles (persistent; the grid is at most the
//!   SMs times the blocks that fit on one). The producer runs ahead into the next tile while the
//!   consumers do the epilogue.
//!
//! # Epilogue (consumers; named barrier 1 among them)
//! y16 NHWC f16 `[N, H, W, 128]` (saturated; `up` = 2: the pixel shuffle above) and per channel the tile's (mean, M2) over its valid
//! pixels, `part[((n·128 + ch)·tiles + tile)·2 ..+2]` in the order of `PartTiling::blocks(H, W, R, Wt)`
//! (tile = ty·tiles_x + tx). Two passes as `conv2d_wg`'s: sums reduced over the 8 lanes of a row group by
//! shuffles and over the consumer warps through a scratch area outside the ring (the producer keeps
//! filling the ring meanwhile). With `sums` set (`Conv2dTmaArgs`), each tile's (mean, M2) is instead added
//! to its plane's f64 sums (Σx, Σx²) by two atomics (`put_stats`, `nhwc::in_sums_add`), which the norm's
//! consumer turns into coefficients itself: no `nhwc_in_coef` launch between (TransformerNet 256x256
//! 0.214-0.217 -> 0.194-0.195 ms, run 120).
use crate::device::math::fma;
use crate::device::mma::pack_f16x2;
use crate::device::shared::{ld_f32, ld_v4_f32, st_f32};
use crate::device::pingpong::{self, consume_steps, PingPongRing, RingPos, StageRing};
use crate::device::tma::{
    arrive, arrive_expect_tx, fence_mbarrier_init, load_2d, load_4d, mbarrier_init, named_barrier,
    prefetch_map, wait_parity,
};
use crate::device::unroll::unroll;
use crate::device::wgmma::{
    aligned_smem, fence_acc32, fence_acc64, mma_m64n128k16_f16, mma_m64n64k16_f16, smem_desc_sw128, splat32,
    splat64, wait_acc32, wait_acc64, SW128_ROW_BYTES,
};
use crate::device::{block_idx_x, grid_dim_x, sync_threads, thread_idx_x};
use crate::kernels::nhwc::{in_sums_add, H8};
use crate::launch::{
    conv2d_tma_layout, conv2d_tma_n64_layout, conv2d_tma_pp_layout, Conv2dTmaArgs, Conv2dTmaPpLayout, CONV2D_TMA_BK, CONV2D_TMA_K,
    CONV2D_TMA_M64_DEEP_STAGES, CONV2D_TMA_N64_BN, CONV2D_TMA_N64_STAGES, CONV2D_TMA_PP_STAGES, CONV2D_TMA_PP_STAGING,
    CONV2D_TMA_PP_THREADS, CONV2D_TMA_SROW, NORM_SUMS_STRIDE,
};

const BK: u32 = CONV2D_TMA_BK;
const BN: u32 = CONV2D_TMA_K;
/// Bytes of the B tile of one stage (128 rows of one 64-wide K slice).
const B_BYTES: u32 = BN * SW128_ROW_BYTES;
/// Bytes of one consumer warpgroup's 64 A rows.
const WG_A_BYTES: u32 = 64 * SW128_ROW_BYTES;
/// Named barrier of the consumer warpgroups (0 is `bar.sync 0`, the whole block).
const CONSUMER_BARRIER: u32 = 1;
/// Floats per row of the epilogue's staging tile (128 columns + 8 of padding against bank conflicts).
const SROW: u32 = CONV2D_TMA_SROW;

const _: () = assert!(BK == 64 && BN == 128);

/// Block tile `tile` of the N·tiles: (sample n, tile index ti within it, first output row y0, first
/// column x0), tiles row-major with `tiles_x` per row of `box_r` x `box_w` boxes.
#[inline(always)]
fn tile_origin(tile: u32, tiles: u32, tiles_x: u32, box_r: u32, box_w: u32) -> (u32, u32, u32, u32) {
    let n = tile / tiles;
    let ti = tile - n * tiles;
    let ty = ti / tiles_x;
    (n, ti, ty * box_r, (ti - ty * tiles_x) * box_w)
}

/// The launch's tiling parameters the producer needs (kernel arguments of the same names).
#[derive(Clone, Copy)]
struct Shape {
    c: u32,
    n_tiles: u32,
    box_w: u32,
    box_r: u32,
    tiles_x: u32,
    tiles: u32,
    total: u32,
}

/// The shared-memory ring: `stages` stages of `stage_bytes` from `base` (the A tile, `a_bytes`, then the B
/// tile of `b_rows` weight rows), their "full" mbarriers from `full` and "empty" ones from `empty` (8 bytes
/// each).
#[derive(Clone, Copy)]
struct Ring {
    base: u32,
    full: u32,
    empty: u32,
    stages: u32,
    stage_bytes: u32,
    a_bytes: u32,
    b_rows: u32,
}

impl Ring {
    /// The ring as its consumers see it.
    #[inline(always)]
    fn steps(&self) -> StageRing {
        StageRing { base: self.base, full: self.full, empty: self.empty, stages: self.stages, stage_bytes: self.stage_bytes }
    }
}

/// The producer lane: for the block's jobs (block b takes b, b + gridDim.x, ...) and each K step in order,
/// waits until the ring's next stage is empty, arms its "full" mbarrier with the stage's byte count and
/// issues the A box (one tap, 64 channels of `box_w` x `box_r` padded-input pixels) and the B box (the
/// weight's `b_rows` rows of N tile `job % n_tiles`, the same 64-wide K slice; the weight map's box has
/// `b_rows` rows).
///
/// # Safety
/// One lane of the block calls it; the maps, ring and mbarriers as the kernels' comments say.
#[inline(always)]
unsafe fn produce(xmap: *const u8, wmap: *const u8, sh: &Shape, ring: Ring) {
    prefetch_map(xmap);
    prefetch_map(wmap);
    let ktiles = 9 * sh.c / BK;
    let tx = (sh.box_w * sh.box_r + ring.b_rows) * SW128_ROW_BYTES;
    let mut pos = RingPos::at(0, ring.stages);
    let mut tile = block_idx_x();
    while tile < sh.total {
        let nt = tile % sh.n_tiles;
        let (n, _, y0, x0) = tile_origin(tile / sh.n_tiles, sh.tiles, sh.tiles_x, sh.box_r, sh.box_w);
        let mut kt = 0;
        while kt < ktiles {
            let k0 = kt * BK;
            let tap = k0 / sh.c;
            let r = tap / 3;
            let s = tap - 3 * r;
            wait_parity(ring.empty + 8 * pos.stage, pos.phase ^ 1);
            let bar = ring.full + 8 * pos.stage;
            arrive_expect_tx(bar, tx);
            let dst = ring.base + pos.stage * ring.stage_bytes;
            load_4d(dst, xmap, [(k0 - tap * sh.c) as i32, (x0 + s) as i32, (y0 + r) as i32, n as i32], bar);
            load_2d(dst + ring.a_bytes, wmap, k0 as i32, (nt * ring.b_rows) as i32, bar);
            pos.advance(ring.stages);
            kt += 1;
        }
        tile += grid_dim_x();
    }
}

/// Pixels of the tile at (y0, x0) inside the `h x wd` image: the valid tile rows are a prefix (whole rows of
/// the `box_r x box_w` box, or rows cut at the right or bottom edge).
#[inline(always)]
fn valid_pixels(h: u32, wd: u32, y0: u32, x0: u32, box_r: u32, box_w: u32) -> u32 {
    let cols_x = if wd - x0 < box_w { wd - x0 } else { box_w };
    let rows_y = if h - y0 < box_r { h - y0 } else { box_r };
    cols_x * rows_y
}

/// Where a tile's GEMM rows and columns go in y16 (`[N, up·H, up·W, kc]` f16): sample `n`, N tile `nt`,
/// first low-resolution pixel (y0, x0), `box_w` pixels per tile row.
#[derive(Clone, Copy)]
struct OutTile {
    n: u32,
    h: u32,
    wd: u32,
    up: u32,
    kc: u32,
    nt: u32,
    y0: u32,
    x0: u32,
    box_w: u32,
}

/// Stores `rows` rows of the f32 staging tile `stg` ([row][SROW]), which hold tile rows `row0 ..` of the
/// `COLS` GEMM columns of N tile `o.nt`, to y16 as f16: `COLS / 8` threads per row (thread `i` of the storing
/// ones, `step` = their number / (COLS / 8) rows per pass). Thread i % (COLS / 8) = j stores the tile's
/// columns 8j .. 8j + 8, global GEMM column g = COLS·nt + 8j: channels g % kc .. of parity q = g / kc =
/// (py, px), output pixel (up·yl + py, up·xl + px) of tile row (yl, xl).
#[inline(always)]
unsafe fn store_rows<const COLS: u32>(stg: u32, y16: *mut u32, o: &OutTile, row0: u32, rows: u32, i: u32, step: u32) {
    let j = i % (COLS / 8);
    let g = COLS * o.nt + 8 * j;
    let q = g / o.kc;
    let (py, px) = (q / o.up, q % o.up);
    let mut rr = i / (COLS / 8);
    while rr < rows {
        let r = row0 + rr;
        let dy = r / o.box_w;
        let (yl, xl) = (o.y0 + dy, o.x0 + r - dy * o.box_w);
        let p = (o.n * o.up * o.h + o.up * yl + py) * o.up * o.wd + o.up * xl + px;
        let src = stg + (rr * SROW + 8 * j) * 4;
        let (v0, v1) = (ld_v4_f32(src), ld_v4_f32(src + 16));
        // H8 (16-byte aligned) makes it one 16-byte store; the offset is a multiple of 8 halves.
        let dst = y16.add((p * (o.kc / 2) + g % o.kc / 2) as usize) as *mut H8;
        *dst = H8([pack_f16x2(v0[0], v0[1]), pack_f16x2(v0[2], v0[3]), pack_f16x2(v1[0], v1[1]), pack_f16x2(v1[2], v1[3])]);
        rr += step;
    }
}

/// Where a tile's InstanceNorm statistics of plane `plane` (n·kc + channel) go: with `args.sums` set, added
/// to the plane's f64 sums (Σx, Σx²) at `sums[NORM_SUMS_STRIDE·plane ..]` (`nhwc::in_sums_add`; `part` unused), else
/// written as the (mean, M2) partial at `part[2·part_index ..]`.
///
/// # Safety
/// The pointer used must address the plane's two values (the launcher sizes both buffers).
#[inline(always)]
unsafe fn put_stats(args: &Conv2dTmaArgs, plane: u32, part_index: u32, count: f32, mean: f32, m2: f32) {
    if args.sums != 0 {
        in_sums_add((args.sums as *mut f64).add((NORM_SUMS_STRIDE * plane) as usize), count, mean, m2);
    } else {
        let o = (args.part as *mut f32).add(2 * part_index as usize);
        *o = mean;
        *o.add(1) = m2;
    }
}

/// Initialises the ring's mbarriers (thread 0: each stage's "full" one with one arrival, its "empty" one with
/// `empty_arrivals`) and makes them visible to the block (a block-wide barrier).
///
/// # Safety
/// Every thread of the block calls it once, before any use of the barriers; `full` and `empty` address
/// `stages` 8-byte mbarriers each in shared memory.
#[inline(always)]
unsafe fn init_ring(full: u32, empty: u32, stages: u32, empty_arrivals: u32) {
    if thread_idx_x() == 0 {
        for s in 0..stages {
            mbarrier_init(full + 8 * s, 1);
            mbarrier_init(empty + 8 * s, empty_arrivals);
        }
        fence_mbarrier_init();
    }
    sync_threads();
}

macro_rules! conv2d_tma_entry {
    ($(#[$doc:meta])* $name:ident, consumers $nc:expr, stages $st:expr) => {
$(#[$doc])*
///
/// `args` (`Conv2dTmaArgs`): x: the tensor map of the padded input (module comment), w: the weight's; `up`
/// 1 (a 3x3 conv) or 2 (the sub-pixel form of a 2x upsampling conv: module comment), `n_tiles` the
/// 128-column GEMM N tiles (the weight has 128·n_tiles rows; output channels kc = 128·n_tiles / up²), job =
/// tile·n_tiles + N tile. Writes y16 (f16 pairs) and `part` (or adds to `sums`: `put_stats`). Block `conv2d_tma_threads(NC)`, dynamic shared memory `conv2d_tma_layout(NC, STAGES).smem`, grid
/// (≤ total, 1, 1). Requires (host-checked): c % 64 == 0, box_w·box_r ≤ 64·NC, every index below 2^31.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn $name(args: Conv2dTmaArgs) {
    let Conv2dTmaArgs { h, wd, c, up, n_tiles, box_w, box_r, tiles_x, tiles, total, .. } = args;
    let (xmap, wmap, y16) = args.pointers();
    const NC: u32 = $nc;
    const STAGES: u32 = $st;
    const L: crate::launch::Conv2dTmaLayout = conv2d_tma_layout(NC, STAGES);
    const A_BYTES: u32 = L.a_bytes;
    const WARPS: u32 = NC * 4;
    const _: () = assert!(NC * 128 == 2 * BN || NC * 128 == BN);
    const _: () = assert!(L.stage_bytes == A_BYTES + B_BYTES && A_BYTES == NC * WG_A_BYTES && STAGES >= 2);
    crate::device::grid_dependency_wait();
    let t = thread_idx_x();
    let warp = t / 32;
    let lane = t % 32;
    let smem = aligned_smem();
    let full = smem + L.bars;
    let empty = full + STAGES * 8;
    init_ring(full, empty, STAGES, WARPS);
    let ktiles = 9 * c / BK;
    let sh = Shape { c, n_tiles, box_w, box_r, tiles_x, tiles, total };
    let ring = Ring { base: smem, full, empty, stages: STAGES, stage_bytes: L.stage_bytes, a_bytes: A_BYTES, b_rows: BN };

    if warp == WARPS {
        if lane == 0 {
            produce(xmap, wmap, &sh, ring);
        }
        return;
    }

    // Consumers.
    let wg = warp / 4;
    let wq = warp % 4;
    let col0 = (lane % 4) * 2;
    let red = smem + L.red; // [NC][BN] sums
    let red2 = red + NC * BN * 4; // [NC][BN] M2
    let stg = smem + L.staging; // [64·NC][SROW] f32
    let mut pos = RingPos::at(0, STAGES);
    let mut tile = block_idx_x();
    // Output channels, and the GEMM columns of one channel within an N tile (one, or one per parity).
    let kc = BN * n_tiles / (up * up);
    let cpt = BN / kc;
    while tile < total {
        let nt = tile % n_tiles;
        let (n, ti, y0, x0) = tile_origin(tile / n_tiles, tiles, tiles_x, box_r, box_w);

        let mut acc = splat64(0.0);
        let prev = consume_steps!(&mut pos, &ring.steps(), ktiles, lane, |_kt, base| {
            let a_base = base + wg * WG_A_BYTES;
            let b_base = base + A_BYTES;
            fence_acc64(&mut acc);
            unroll!(4, |s| {
                let off = 32 * s as u32;
                mma_m64n128k16_f16(&mut acc, smem_desc_sw128(a_base + off), smem_desc_sw128(b_base + off), true);
            });
        });
        wait_acc64::<0>(&mut acc);
        if lane == 0 {
            arrive(empty + 8 * prev);
        }

        // Epilogue. The valid tile rows are a prefix: rows < count (whole rows of the box, or one row cut
        // at the right edge). The accumulators go to the f32 staging tile [row][SROW] (rows 64 wg + 16 wq +
        // lane/4 (+ 8), columns 8i + 2(lane % 4) (+ 1) of n8 block i), then every thread works on column
        // t % 128 over its warpgroup's 64 rows: sum, mean, sum of squared deviations; then the f16 rows
        // leave the staging tile as 16-byte stores.
        let count = valid_pixels(h, wd, y0, x0, box_r, box_w);
        // No barrier before writing the staging tile: every read of it for the previous tile came before
        // that tile's last barrier, which this thread has passed.
        pingpong::stage_acc(stg + (wg * 64 + wq * 16 + lane / 4) * SROW * 4 + col0 * 4, SROW * 4, &acc);
        named_barrier(CONSUMER_BARRIER, NC * 128);
        let col = t % BN;
        let r_lo = wg * 64;
        let r_hi = if count < r_lo + 64 { if count > r_lo { count } else { r_lo } } else { r_lo + 64 };
        let mut sum = 0f32;
        let mut r = r_lo;
        while r < r_hi {
            sum += ld_f32(stg + (r * SROW + col) * 4);
            r += 1;
        }
        st_f32(red + t * 4, sum);
        named_barrier(CONSUMER_BARRIER, NC * 128);
        // The GEMM columns of this thread's output channel in this N tile: col % kc + q·kc, q < cpt.
        let ch = col % kc;
        let mut tot = 0f32;
        for g in 0..NC {
            let mut q = 0;
            while q < cpt {
                tot += ld_f32(red + (g * BN + q * kc + ch) * 4);
                q += 1;
            }
        }
        let mean = tot / (count * cpt) as f32;
        let mut m2 = 0f32;
        let mut r = r_lo;
        while r < r_hi {
            let d = ld_f32(stg + (r * SROW + col) * 4) - mean;
            m2 += d * d;
            r += 1;
        }
        st_f32(red2 + t * 4, m2);
        // f16 output: 16 threads per 256-byte tile row, 8·NC rows per pass.
        let out = OutTile { n, h, wd, up, kc, nt, y0, x0, box_w };
        store_rows::<BN>(stg, y16, &out, 0, count, t, NC * 8);
        named_barrier(CONSUMER_BARRIER, NC * 128);
        if t < kc {
            let mut m2 = 0f32;
            for g in 0..NC {
                let mut q = 0;
                while q < cpt {
                    m2 += ld_f32(red2 + (g * BN + q * kc + t) * 4);
                    q += 1;
                }
            }
            // Partial tiles per plane: tiles·n_tiles, N tile major.
            put_stats(&args, n * kc + t, (n * kc + t) * tiles * n_tiles + nt * tiles + ti, (count * cpt) as f32, mean, m2);
        }
        tile += grid_dim_x();
    }
}
    };
}

conv2d_tma_entry!(
    /// Tiles of up to 128 pixels: two consumer warpgroups (the large images), 4 stages, one block per SM.
    conv2d_tma_m128, consumers 2, stages 4
);
conv2d_tma_entry!(
    /// Tiles of up to 64 pixels: one consumer warpgroup (small images: twice the tiles), 3 stages, two
    /// blocks per SM.
    conv2d_tma_m64, consumers 1, stages 3
);
conv2d_tma_entry!(
    /// Tiles of up to 64 pixels, one consumer warpgroup, `CONV2D_TMA_M64_DEEP_STAGES` stages: one block per
    /// SM (grids of at most one job per SM: the 256x256 images' residual convs), more copies in flight.
    conv2d_tma_m64_deep, consumers 1, stages CONV2D_TMA_M64_DEEP_STAGES
);

/// `conv2d_tma` with the 128 output channels split over two jobs (small grids): one consumer warpgroup,
/// tiles of up to 64 pixels, job = tile·2 + N tile, N tile nt computing channels 64nt .. 64nt + 64 (one
/// `wgmma.m64n64k16` per k16 step, 32 accumulators per thread; the weight map's box is 64 x 64). Twice
/// the jobs of `conv2d_tma_m64`, each streaming half the weight: where one warpgroup's tiles would leave
/// SMs idle (the 256x256 image's residual convs: 64 tiles, now 128 jobs), the grid fills the GPU and each
/// block's copies halve. Ring of `CONV2D_TMA_N64_STAGES` stages; epilogue: every thread t < 64 takes column
/// t: (mean, M2) over the tile's valid rows in one shifted pass (`column_stats`) into
/// `part[((n·128 + 64nt + t)·tiles + tile)·2 ..+2]` (the partials of `conv2d_tma_m64`'s tiling: channels
/// split, not pixels), and the f16 rows leave the staging tile as 16-byte stores.
///
/// Arguments as `conv2d_tma_m64` with `up` = 1 and `n_tiles` = 2 (host-checked); block
/// `conv2d_tma_threads(1)`, dynamic shared memory `conv2d_tma_n64_layout().smem`, grid (≤ total, 1, 1).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn conv2d_tma_n64(args: Conv2dTmaArgs) {
    let Conv2dTmaArgs { h, wd, c, up, n_tiles, box_w, box_r, tiles_x, tiles, total, .. } = args;
    let (xmap, wmap, y16) = args.pointers();
    const STAGES: u32 = CONV2D_TMA_N64_STAGES;
    const NB: u32 = CONV2D_TMA_N64_BN;
    const L: crate::launch::Conv2dTmaLayout = conv2d_tma_n64_layout();
    const _: () = assert!(NB == 64 && L.a_bytes == WG_A_BYTES && L.stage_bytes == WG_A_BYTES + NB * SW128_ROW_BYTES);
    crate::device::grid_dependency_wait();
    let t = thread_idx_x();
    let warp = t / 32;
    let lane = t % 32;
    let smem = aligned_smem();
    let full = smem + L.bars;
    let empty = full + STAGES * 8;
    init_ring(full, empty, STAGES, 4);
    let ktiles = 9 * c / BK;
    let sh = Shape { c, n_tiles, box_w, box_r, tiles_x, tiles, total };
    let ring = Ring { base: smem, full, empty, stages: STAGES, stage_bytes: L.stage_bytes, a_bytes: L.a_bytes, b_rows: NB };

    if warp == 4 {
        if lane == 0 {
            produce(xmap, wmap, &sh, ring);
        }
        return;
    }

    let stg = smem + L.staging; // [64][SROW] f32, columns 0 .. 64 used
    let mut pos = RingPos::at(0, STAGES);
    let mut tile = block_idx_x();
    while tile < total {
        let nt = tile % n_tiles;
        let (n, ti, y0, x0) = tile_origin(tile / n_tiles, tiles, tiles_x, box_r, box_w);
        let mut acc = splat32(0.0);
        let prev = consume_steps!(&mut pos, &ring.steps(), ktiles, lane, |_kt, a_base| {
            let b_base = a_base + L.a_bytes;
            fence_acc32(&mut acc);
            unroll!(4, |s| {
                let off = 32 * s as u32;
                mma_m64n64k16_f16(&mut acc, smem_desc_sw128(a_base + off), smem_desc_sw128(b_base + off), true);
            });
        });
        wait_acc32::<0>(&mut acc);
        if lane == 0 {
            arrive(empty + 8 * prev);
        }

        // Epilogue. No barrier before writing the staging tile: every read of it for the previous job
        // came before that job's last barrier, which this thread has passed.
        let count = valid_pixels(h, wd, y0, x0, box_r, box_w);
        pingpong::stage_acc(stg + ((warp * 16 + lane / 4) * SROW + (lane % 4) * 2) * 4, SROW * 4, &acc);
        named_barrier(CONSUMER_BARRIER, 128);
        if t < NB {
            let (mean, m2) = column_stats(stg, t, count);
            let plane = n * BN + NB * nt + t;
            put_stats(&args, plane, plane * tiles + ti, count as f32, mean, m2);
        }
        let out = OutTile { n, h, wd, up, kc: BN, nt, y0, x0, box_w };
        store_rows::<NB>(stg, y16, &out, 0, count, t, 128 / (NB / 8));
        named_barrier(CONSUMER_BARRIER, 128);
        tile += grid_dim_x();
    }
}

/// (mean, M2) of staged column `col` over rows 0 .. `rows` (≥ 1) in one pass: sums of d = v - v₀ and d²
/// (shifted by the first row's value, so the difference Σd² - (Σd)²/rows does not cancel when the mean is
/// large against the spread), four independent chains so the loads overlap.
#[inline(always)]
unsafe fn column_stats(stg: u32, col: u32, rows: u32) -> (f32, f32) {
    let a = stg + col * 4;
    let shift = ld_f32(a);
    let mut s = [0f32; 4];
    let mut q = [0f32; 4];
    let mut r = 0;
    while r + 4 <= rows {
        unroll!(4, |k| {
            let d = ld_f32(a + (r + k as u32) * SROW * 4) - shift;
            s[k] += d;
            q[k] = fma(d, d, q[k]);
        });
        r += 4;
    }
    while r < rows {
        let d = ld_f32(a + r * SROW * 4) - shift;
        s[0] += d;
        q[0] = fma(d, d, q[0]);
        r += 1;
    }
    let (s, q) = ((s[0] + s[1]) + (s[2] + s[3]), (q[0] + q[1]) + (q[2] + q[3]));
    let m = s / rows as f32;
    (shift + m, q - s * m)
}

/// `conv2d_tma` with the ping-pong schedule (the large images): the same GEMM, operands, outputs and
/// arguments as `conv2d_tma_m128` (tiles of up to 128 pixels), but each of the two consumer warpgroups
/// multiplies a whole tile (two `wgmma.m64n128k16` per k16 step, 128 accumulators per thread) and the
/// warpgroups take turns: while one runs its tile's epilogue, the other's `wgmma`s keep the tensor cores
/// busy (in `conv2d_tma_m128` both warpgroups run the epilogue at once and the tensor cores idle).
///
/// * Jobs and mainloop: `device::pingpong` (the block's jobs b, b + gridDim.x, ... are numbered i = 0, 1, 2,
///   ...; warpgroup i % 2 takes job i; the producer is `produce`, unchanged).
/// * Epilogue: each warpgroup stages the tile's two 64-row halves in turn in its own f32 staging tile (so
///   the two epilogues may overlap). Per half, each thread takes one GEMM column: (mean, M2) over the valid
///   rows in one shifted pass (`column_stats`), the channel's `cpt` columns combined, then merged across the
///   halves with Chan's formula: the tile's partials as `conv2d_tma_m128` writes them. Two barriers per half.
///
/// Block `CONV2D_TMA_PP_THREADS` (warpgroups 0 and 1, then the producer warp), dynamic shared memory
/// `conv2d_tma_pp_layout().smem`, grid (≤ total, 1, 1), one block per SM. Requires (host-checked): c % 64
/// == 0, box_w·box_r ≤ 128, every index below 2^31.
#[no_mangle]
#[allow(unused_assignments)]
pub unsafe extern "ptx-kernel" fn conv2d_tma_pp(args: Conv2dTmaArgs) {
    let Conv2dTmaArgs { h, wd, c, up, n_tiles, box_w, box_r, tiles_x, tiles, total, .. } = args;
    let (xmap, wmap, y16) = args.pointers();
    const STAGES: u32 = CONV2D_TMA_PP_STAGES;
    const L: Conv2dTmaPpLayout = conv2d_tma_pp_layout();
    const A_BYTES: u32 = pingpong::A_BYTES;
    const _: () = assert!(L.stage_bytes == A_BYTES + B_BYTES && A_BYTES == 2 * WG_A_BYTES && CONV2D_TMA_PP_THREADS == 2 * 128 + 32);
    crate::device::grid_dependency_wait();
    let t = thread_idx_x();
    let warp = t / 32;
    let lane = t % 32;
    let smem = aligned_smem();
    let full = smem + L.bars;
    let steps = StageRing { base: smem, full, empty: full + STAGES * 8, stages: STAGES, stage_bytes: L.stage_bytes };
    let ring = PingPongRing { steps, order: full + 2 * STAGES * 8 };
    pingpong::init(&ring);
    let ktiles = 9 * c / BK;
    let sh = Shape { c, n_tiles, box_w, box_r, tiles_x, tiles, total };

    if warp == 8 {
        if lane == 0 {
            produce(xmap, wmap, &sh, Ring { base: smem, full, empty: steps.empty, stages: STAGES, stage_bytes: L.stage_bytes, a_bytes: A_BYTES, b_rows: BN });
        }
        return;
    }

    // Consumers: warpgroup wg, thread tw of it.
    let wg = warp / 4;
    let wq = warp % 4;
    let tw = t % 128;
    let bar_id = 1 + wg;
    let col0 = (lane % 4) * 2;
    let red = smem + L.red + wg * 2 * BN * 4; // [128] column means
    let red2 = red + BN * 4; // [128] column M2
    let stg = smem + L.staging + wg * CONV2D_TMA_PP_STAGING; // [64][SROW] f32
    let kc = BN * n_tiles / (up * up);
    let cpt = BN / kc;
    let col = tw;
    let mut i = wg;
    let mut tile = block_idx_x() + wg * grid_dim_x();
    while tile < total {
        let nt = tile % n_tiles;
        let (n, ti, y0, x0) = tile_origin(tile / n_tiles, tiles, tiles_x, box_r, box_w);
        let mut acc0 = [0f32; 64];
        let mut acc1 = [0f32; 64];
        pingpong::mainloop(&ring, i, ktiles, tw, lane, &mut acc0, &mut acc1);

        // Epilogue.
        let count = valid_pixels(h, wd, y0, x0, box_r, box_w);
        let out = OutTile { n, h, wd, up, kc, nt, y0, x0, box_w };
        let row = wq * 16 + lane / 4;
        // Running (values, mean, M2) of channel tw's columns over the halves so far (threads tw < kc).
        let (mut n_a, mut mean_a, mut m2_a) = (0f32, 0f32, 0f32);
        unroll!(2, |half| {
            let acc = if half == 0 { &acc0 } else { &acc1 };
            let r0 = 64 * half as u32;
            // Valid rows of this half: uniform across the warpgroup, so are the barriers below.
            let rows = if count <= r0 { 0 } else if count - r0 < 64 { count - r0 } else { 64 };
            if rows > 0 {
                // Every read of the staging tile and of red for the previous half came before the last
                // barrier, which this thread has passed.
                pingpong::stage_acc(stg + row * SROW * 4 + col0 * 4, SROW * 4, acc);
                named_barrier(bar_id, 128);
                let (mc, m2c) = column_stats(stg, col, rows);
                store_rows::<BN>(stg, y16, &out, r0, rows, tw, 8);
                if cpt > 1 {
                    st_f32(red + col * 4, mc);
                    st_f32(red2 + col * 4, m2c);
                }
                named_barrier(bar_id, 128);
                if tw < kc {
                    // Channel tw over its cpt columns q·kc + tw (rows values each).
                    let (mut mean, mut m2) = (mc, m2c);
                    if cpt > 1 {
                        let mut msum = 0f32;
                        let mut q = 0;
                        while q < cpt {
                            msum += ld_f32(red + (q * kc + tw) * 4);
                            q += 1;
                        }
                        mean = msum / cpt as f32;
                        m2 = 0.0;
                        let mut q = 0;
                        while q < cpt {
                            let d = ld_f32(red + (q * kc + tw) * 4) - mean;
                            m2 += ld_f32(red2 + (q * kc + tw) * 4) + rows as f32 * d * d;
                            q += 1;
                        }
                    }
                    // Chan: merge (nb, mean, m2) into the running (n_a, mean_a, m2_a).
                    let nb = (rows * cpt) as f32;
                    let nn = n_a + nb;
                    let d = mean - mean_a;
                    mean_a += d * (nb / nn);
                    m2_a += m2 + d * d * (n_a * nb / nn);
                    n_a = nn;
                }
            }
        });
        if tw < kc {
            // Partial tiles per plane: tiles·n_tiles, N tile major.
            put_stats(&args, n * kc + tw, (n * kc + tw) * tiles * n_tiles + nt * tiles + ti, n_a, mean_a, m2_a);
        }
        i += 2;
        tile += 2 * grid_dim_x();
    }
}
