//! `conv2d_tma` launcher: the fast TransformerNet's residual-block convs (3x3, stride 1, C % 64 == 0
//! inputs, 128 outputs) as a persistent, warp-specialised `wgmma` implicit GEMM fed by the bulk tensor
//! copy engine (sm_90a: H100/H200 only). See `gpu-kernels/src/kernels/conv2d_tma.rs`.
//!
//! Five kernels: `conv2d_tma_m64` (one consumer warpgroup, 64-pixel tiles, 3 stages, two blocks per SM:
//! small images), `conv2d_tma_m64_deep` (the same with 7 stages and one block per SM, where there are no
//! more tiles than SMs: [`TmaTiling::deep`]), `conv2d_tma_n64` (the same tiles with each tile's 128 channels
//! split over two jobs, where even twice the tiles leave an SM for every job: [`TmaTiling::split_n`]; plain
//! convs only), `conv2d_tma_m128` (two warpgroups sharing each 128-pixel tile) and `conv2d_tma_pp` (the same
//! tiles with the ping-pong schedule: each warpgroup multiplies a whole tile while the other runs its
//! epilogue), the default where the tiles are of 128 pixels ([`conv2d_tma_tiling`], [`TmaTiling::pingpong`]).
//!
//! The input is an explicitly padded NHWC f16 image, [`PaddedInput`] (written by
//! `ops::nhwc::nhwc_in_apply_pad`), so each GEMM-K step's A tile is one rectangular box of it. The
//! weight is a [`TmaConvWeight`] (a `conv2d_tc` [`TcWeight`] with its tensor map). Both own the memory
//! their tensor map names. Output: y NHWC f16 `[N, H, W, 128]` and the InstanceNorm partials, tiled as
//! the returned [`PartTiling`] says (`PartTiling::blocks(H, W, R, Wt)`).
//!
//! A 2x nearest upsampling + reflection pad + 3x3 conv with 32 outputs (TransformerNet's deconv2) runs
//! in sub-pixel form on the same kernel ([`TmaConvWeight::upload_upsample`]): the input is the
//! low-resolution image replicate-padded ([`PadMode::Replicate`]), the four output parities' 32 channels
//! are the GEMM's 128 columns, and the epilogue scatters them to `[N, 2H, 2W, 32]`.
use gpu_kernels::launch::{
    conv2d_tma_kernel, conv2d_tma_layout, Conv2dTmaArgs, conv2d_tma_n64_layout, conv2d_tma_pp_layout, conv2d_tma_stages, conv2d_tma_threads,
    CONV2D_TMA_BK, CONV2D_TMA_K, CONV2D_TMA_M64_DEEP_STAGES, CONV2D_TMA_N64_BN, CONV2D_TMA_N64_STAGES, CONV2D_TMA_PP_STAGES,
    SMEM_PER_SM, SMEM_RESERVED_PER_BLOCK,
};
use models::Tensor;

use crate::error::{ensure, Error, Result};
use crate::gpu::{DType, DeviceTensor, DeviceTensorMap, Gpu, Layout};
use crate::kernel_args;
use crate::ops::conv2d_tc::{PartTiling, TcWeight, SUBPIXEL_TAPS};
use crate::ops::nhwc::NormStats;

const OP: &str = "conv2d_tma";
/// Environment variable: `64` or `128` forces the tile height (consumer warpgroups 1 or 2) instead of
/// picking by grid size (A/B).
pub const CONV_TMA_M_ENV: &str = "STYLEFORGE_CONV_TMA_M";
/// Environment variable: `0` runs 128-pixel tiles with both warpgroups on each tile (`conv2d_tma_m128`)
/// instead of the ping-pong schedule (`conv2d_tma_pp`) (A/B).
pub const CONV_TMA_PP_ENV: &str = "STYLEFORGE_CONV_TMA_PP";
/// Environment variable: `0` keeps 64-pixel tiles on the 3-stage kernel sized for two blocks per SM
/// (`conv2d_tma_m64`) even where one block per SM is enough (`conv2d_tma_m64_deep`) (A/B).
pub const CONV_TMA_DEEP_ENV: &str = "STYLEFORGE_CONV_TMA_DEEP";
/// Environment variable: `0` keeps each 64-pixel tile's 128 output channels in one job (the deep ring) even
/// where splitting them over two jobs (`conv2d_tma_n64`) still gives every job its own SM (A/B).
pub const CONV_TMA_N64_ENV: &str = "STYLEFORGE_CONV_TMA_N64";

/// How `conv2d_tma` tiles an `H x W` output: tiles of `box_r` rows x `box_w` columns (≤ 64·consumers
/// pixels), `tiles_x` per row of tiles, `tiles` per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmaTiling {
    pub consumers: u32,
    /// Shared-memory ring stages (`conv2d_tma_stages`, `CONV2D_TMA_PP_STAGES` ping-pong, or
    /// `CONV2D_TMA_M64_DEEP_STAGES`).
    pub stages: u32,
    /// Two consumer warpgroups taking turns on whole tiles (`conv2d_tma_pp`) instead of sharing each tile.
    pub pingpong: bool,
    /// GEMM columns per job: 128 (every output channel of a tile), or 64 (`conv2d_tma_n64`: two jobs per
    /// tile, one per half of the channels).
    pub bn: u32,
    pub box_w: usize,
    pub box_r: usize,
    pub tiles_x: usize,
    pub tiles: usize,
}

impl TmaTiling {
    /// Tiles of up to 64·`consumers` pixels: whole rows of them when W is at least that wide, else
    /// as many full rows of W as fit.
    pub fn new(h: usize, w: usize, consumers: u32) -> Self {
        let bm = 64 * consumers as usize;
        let (box_w, box_r) = if w >= bm { (bm, 1) } else { (w.max(1), bm / w.max(1)) };
        let tiles_x = w.div_ceil(box_w);
        let stages = conv2d_tma_stages(consumers);
        TmaTiling { consumers, stages, pingpong: false, bn: CONV2D_TMA_K, box_w, box_r, tiles_x, tiles: tiles_x * h.div_ceil(box_r) }
    }

    /// The same tiles (of up to 128 pixels: two consumer warpgroups) with the ping-pong schedule.
    pub fn pingpong(self) -> Self {
        TmaTiling { pingpong: true, stages: CONV2D_TMA_PP_STAGES, ..self }
    }

    /// The same tiles (of up to 64 pixels: one consumer warpgroup) on the deep ring (`conv2d_tma_m64_deep`:
    /// one block per SM).
    pub fn deep(self) -> Self {
        TmaTiling { stages: CONV2D_TMA_M64_DEEP_STAGES, bn: CONV2D_TMA_K, ..self }
    }

    /// The same tiles (of up to 64 pixels: one consumer warpgroup) with each tile's 128 output channels
    /// split over two jobs (`conv2d_tma_n64`: one block per SM). Plain convs only: a sub-pixel weight runs
    /// these tiles on the deep ring instead ([`Self::for_up`]).
    pub fn split_n(self) -> Self {
        TmaTiling { stages: CONV2D_TMA_N64_STAGES, bn: CONV2D_TMA_N64_BN, ..self }
    }

    /// The tiling that runs a weight with upsampling factor `up` over this input: itself, or for a sub-pixel
    /// weight (`up` = 2, whose epilogue scatters 128-column blocks) the deep ring instead of split channels.
    /// The A boxes are the same, so the input's map serves both.
    pub fn for_up(self, up: usize) -> Self {
        if up != 1 && self.bn != CONV2D_TMA_K {
            self.deep()
        } else {
            self
        }
    }

    /// The kernel that runs this tiling.
    fn kernel(&self) -> Option<&'static str> {
        conv2d_tma_kernel(self.consumers, self.stages, self.pingpong, self.bn)
    }

    /// The partials' tiling for `nhwc_in_coef_tiled` of a conv over an `h x w` input whose output is `up`
    /// times larger (1, or 2 for the sub-pixel form) with `n_tiles` GEMM N tiles: each tile's `box_r x
    /// box_w` input pixels give `up·box_r x up·box_w` output pixels; with two N tiles (sub-pixel, 64
    /// outputs) N tile py covers the output rows of parity py: `box_r x 2·box_w` tiles of a plane of the even
    /// rows then the odd ones, exact when `box_r` divides `h` ([`Self::splits_rows`]).
    pub fn part_tiling(&self, h: usize, w: usize, up: usize, n_tiles: usize) -> PartTiling {
        if n_tiles == 2 {
            PartTiling::blocks(2 * h, 2 * w, self.box_r, 2 * self.box_w)
        } else {
            PartTiling::blocks(up * h, up * w, up * self.box_r, up * self.box_w)
        }
    }

    /// Whether the tile rows divide `h` (needed by a two-N-tile sub-pixel conv's partials).
    pub fn splits_rows(&self, h: usize) -> bool {
        h.is_multiple_of(self.box_r)
    }

    /// Blocks of this kernel that fit on one SM by shared memory (`SMEM_PER_SM`, `SMEM_RESERVED_PER_BLOCK`
    /// of it per block): two of the 3-stage one-warpgroup kernel, one of the others.
    fn blocks_per_sm(&self) -> usize {
        (SMEM_PER_SM / (self.smem() + SMEM_RESERVED_PER_BLOCK)).max(1) as usize
    }

    /// Dynamic shared memory of this tiling's kernel.
    fn smem(&self) -> u32 {
        if self.pingpong {
            conv2d_tma_pp_layout().smem
        } else if self.bn == CONV2D_TMA_N64_BN {
            conv2d_tma_n64_layout().smem
        } else {
            conv2d_tma_layout(self.consumers, self.stages).smem
        }
    }
}

/// The tiling for N samples of `h x w` on a GPU with `sm_count` SMs: two consumer warpgroups (128-pixel
/// tiles, ping-pong) when that still gives every SM two tiles, else one (64-pixel tiles, twice as many; with
/// the channels split over two jobs when even that leaves an SM for every job, else on the deep ring when
/// there are no more tiles than SMs); [`CONV_TMA_M_ENV`], [`CONV_TMA_PP_ENV`], [`CONV_TMA_N64_ENV`] and
/// [`CONV_TMA_DEEP_ENV`] override.
pub fn conv2d_tma_tiling(n: usize, h: usize, w: usize, sm_count: u32) -> TmaTiling {
    let forced = std::env::var(CONV_TMA_M_ENV).ok().and_then(|v| match v.trim() {
        "64" => Some(1),
        "128" => Some(2),
        _ => None,
    });
    let consumers = forced.unwrap_or_else(|| {
        if n * TmaTiling::new(h, w, 2).tiles >= 2 * sm_count as usize {
            2
        } else {
            1
        }
    });
    let tl = TmaTiling::new(h, w, consumers);
    let on = crate::gpu::env_on;
    if consumers == 2 && on(CONV_TMA_PP_ENV) {
        tl.pingpong()
    } else if consumers == 1 && 2 * n * tl.tiles <= sm_count as usize && on(CONV_TMA_N64_ENV) {
        tl.split_n()
    } else if consumers == 1 && n * tl.tiles <= sm_count as usize && on(CONV_TMA_DEEP_ENV) {
        tl.deep()
    } else {
        tl
    }
}

/// How a [`PaddedInput`]'s one-pixel border is filled (by `nhwc_in_apply_pad`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// Reflection (index -1 reads 1): a 3x3 conv's reflection padding.
    Reflect,
    /// Replication (index -1 reads 0): the low-resolution view of a 2x nearest upsampling followed by a
    /// reflection pad of 1, for the sub-pixel form of an upsampling conv.
    Replicate,
}

/// A padded NHWC f16 activation `[N, H + 2, W + 2, C]` (the padded view of an `[N, H, W, C]` image,
/// border as `mode` says) with the tensor map `conv2d_tma` reads its A tiles through.
pub struct PaddedInput {
    /// Declared before `t`: the map names `t`'s memory.
    map: DeviceTensorMap,
    /// The padded tensor, shape `[N, H + 2, W + 2, C]`.
    pub t: DeviceTensor,
    /// The unpadded image's N, H, W, C.
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub tiling: TmaTiling,
    pub mode: PadMode,
}

impl PaddedInput {
    /// Allocates the padded buffer for an `[n, h, w, c]` image and encodes its map with `tiling`'s box.
    pub fn new(n: usize, h: usize, w: usize, c: usize, tiling: TmaTiling, mode: PadMode) -> Result<Self> {
        ensure(n > 0 && h >= 2 && w >= 2 && c > 0 && c.is_multiple_of(CONV2D_TMA_BK as usize), OP, || {
            format!("padded input [{n}, {h}, {w}, {c}]: needs N ≥ 1, H, W ≥ 2 and C a multiple of {CONV2D_TMA_BK}")
        })?;
        let plain = TmaTiling::new(h, w, tiling.consumers);
        let same = tiling == plain || tiling == plain.pingpong() || tiling == plain.deep() || tiling == plain.split_n();
        ensure(same && tiling.kernel().is_some(), OP, || {
            format!("tiling {tiling:?} is not conv2d_tma's for {h}x{w}")
        })?;
        let (hp, wp) = (h + 2, w + 2);
        ensure((n * hp * wp * c) < (1 << 31), OP, || format!("padded input [{n}, {hp}, {wp}, {c}] needs 64-bit indexing"))?;
        let t = DeviceTensor::empty(&[n, hp, wp, c], DType::F16, Layout::Nhwc)?;
        let row = (c * 2) as u64;
        let map = DeviceTensorMap::tiled_f16(
            t.ptr(),
            &[c as u64, wp as u64, hp as u64, n as u64],
            &[row, row * wp as u64, row * (wp * hp) as u64],
            &[CONV2D_TMA_BK, tiling.box_w as u32, tiling.box_r as u32, 1],
        )?;
        Ok(PaddedInput { map, t, n, h, w, c, tiling, mode })
    }

    /// The unpadded image's shape `[N, H, W, C]`.
    pub fn image_shape(&self) -> [usize; 4] {
        [self.n, self.h, self.w, self.c]
    }
}

/// A 3x3 conv weight with 128 GEMM columns packed for `conv2d_tc` (`[128, 9C]`, k = tap·C + c) and the
/// tensor map of its 128 x 64 B tiles: a conv with 128 outputs, or the sub-pixel form of a 2x upsampling
/// conv with 32 ([`Self::upload_upsample`]).
pub struct TmaConvWeight {
    /// Declared before `w`: the maps name `w`'s memory. Box 64 x 128 (one job per tile).
    map: DeviceTensorMap,
    /// Box 64 x 64, for `conv2d_tma_n64` (plain convs only: `up` = 1).
    map_n64: Option<DeviceTensorMap>,
    pub w: TcWeight,
    /// 1, or 2 for the sub-pixel form of a 2x upsampling conv.
    pub up: usize,
    /// GEMM N tiles of 128 columns (the packed weight's rows / 128).
    pub n_tiles: usize,
    /// The layer's output channels (128; with `up` = 2, 32 or 64).
    pub k_out: usize,
}

impl TmaConvWeight {
    /// Packs and uploads a `[128, C, 3, 3]` weight (C % 64 == 0) rounded to f16, with its map.
    pub fn upload(weight: &Tensor) -> Result<Self> {
        Self::packed(weight, 1)
    }

    /// The sub-pixel form of a `[K, C, 3, 3]` weight (K = 32 or 64, C % 64 == 0) that follows a 2x nearest
    /// upsampling and a reflection pad of 1: a `[4K, C, 3, 3]` conv of the replicate-padded low-resolution
    /// input whose row K·(2py + px) + k holds output parity (py, px)'s filter for channel k, the original taps summed
    /// in f32 (rounded to f16 once) into the low-resolution taps they land on (`SUBPIXEL_TAPS`: parity a's
    /// tap r adds into low-resolution tap `SUBPIXEL_TAPS[a][r] + a`); the others are zero.
    pub fn upload_upsample(weight: &Tensor) -> Result<Self> {
        Self::packed(&upsample_weight(weight)?, 2)
    }

    fn packed(weight: &Tensor, up: usize) -> Result<Self> {
        let w = TcWeight::upload(weight, 0, 0)?;
        let bn = CONV2D_TMA_K as usize;
        ensure(
            (w.k == bn || (up == 2 && w.k == 2 * bn)) && w.r == 3 && w.c % CONV2D_TMA_BK as usize == 0 && w.kw == 9 * w.c && !w.subpixel,
            OP,
            || format!("weight {:?} is not a 3x3 conv with 128 outputs and a multiple of 64 inputs", weight.shape),
        )?;
        let map = DeviceTensorMap::tiled_f16(
            w.data.ptr(),
            &[w.kw as u64, w.k as u64],
            &[(w.kw * 2) as u64],
            &[CONV2D_TMA_BK, CONV2D_TMA_K],
        )?;
        let map_n64 = if up == 1 {
            Some(DeviceTensorMap::tiled_f16(w.data.ptr(), &[w.kw as u64, w.k as u64], &[(w.kw * 2) as u64], &[CONV2D_TMA_BK, CONV2D_TMA_N64_BN])?)
        } else {
            None
        };
        let n_tiles = w.k / bn;
        Ok(TmaConvWeight { map, map_n64, w, up, n_tiles, k_out: bn * n_tiles / (up * up) })
    }
}

/// The `[4K, C, 3, 3]` f32 weight of [`TmaConvWeight::upload_upsample`]'s sub-pixel form of a
/// `[K, C, 3, 3]` upsampling conv weight (K = 32 or 64, C % 64 == 0).
pub fn upsample_weight(weight: &Tensor) -> Result<Tensor> {
    let s = &weight.shape;
    let k = s.first().copied().unwrap_or(0);
    ensure(s.len() == 4 && (k == 32 || k == 64) && s[1] > 0 && s[1].is_multiple_of(CONV2D_TMA_BK as usize) && s[2..] == [3, 3], OP, || {
        format!("upsampling weight {s:?} is not a 3x3 conv with 32 or 64 outputs and a multiple of {CONV2D_TMA_BK} inputs")
    })?;
    let c = s[1];
    let mut data = vec![0f32; 4 * k * c * 9];
    for q in 0..4 {
        let (a, b) = (q / 2, q % 2);
        for ki in 0..k {
            for ci in 0..c {
                for (r, &ta) in SUBPIXEL_TAPS[a].iter().enumerate() {
                    for (t, &tb) in SUBPIXEL_TAPS[b].iter().enumerate() {
                        let (lr, lt) = (ta + a, tb + b);
                        data[(((q * k + ki) * c + ci) * 3 + lr) * 3 + lt] += weight.data[((ki * c + ci) * 3 + r) * 3 + t];
                    }
                }
            }
        }
    }
    Ok(Tensor { shape: vec![4 * k, c, 3, 3], data })
}

/// conv3x3(x, w) over the padded input `x` (already normalised and padded), stride 1: y NHWC
/// f16 `[N, H, W, 128]` plus the InstanceNorm statistics in `stats` (partials, or added to f64 plane sums);
/// returns the partials' tiling. With a sub-pixel
/// weight ([`TmaConvWeight::upload_upsample`], `x` replicate-padded) the conv of the 2x upsampled,
/// reflection-padded input: y `[N, 2H, 2W, 32]`. Every shape violation is an error and nothing is
/// launched.
pub fn conv2d_tma<'a>(
    gpu: &Gpu,
    x: &PaddedInput,
    w: &TmaConvWeight,
    y: &mut DeviceTensor,
    stats: impl Into<NormStats<'a>>,
) -> Result<PartTiling> {
    let (n, h, wd, c) = (x.n, x.h, x.w, x.c);
    ensure(w.w.c == c, OP, || format!("weight has {} input channels, the input {c}", w.w.c))?;
    let want_mode = if w.up == 2 { PadMode::Replicate } else { PadMode::Reflect };
    ensure(x.mode == want_mode, OP, || format!("a weight with up = {} needs a {want_mode:?} input, got {:?}", w.up, x.mode))?;
    let (k, up, ntn) = (w.k_out, w.up, w.n_tiles);
    let out = [n, up * h, up * wd, k];
    ensure(y.dtype == DType::F16 && y.layout == Layout::Nhwc && y.shape == out, OP, || {
        format!("y must be NHWC f16 {out:?}, got {:?} {:?} {:?}", y.layout, y.dtype, y.shape)
    })?;
    let tl = x.tiling.for_up(up);
    ensure(ntn == 1 || tl.splits_rows(h), OP, || {
        format!("a two-N-tile sub-pixel conv needs tiles of whole rows dividing H = {h} (tiles of {} rows)", tl.box_r)
    })?;
    let tiling = tl.part_tiling(h, wd, up, ntn);
    let part_len = tiling.part_len(n, k);
    let (part, sums) = match stats.into() {
        NormStats::Partials(part) => {
            ensure(part.dtype == DType::F32 && part.numel() >= part_len, OP, || {
                format!("partials need {part_len} f32, got {:?} {:?}", part.dtype, part.shape)
            })?;
            (part.ptr(), 0)
        }
        NormStats::Sums(s) => {
            ensure(s.planes >= n * k, OP, || format!("norm sums hold {} planes, {n}x{k} needed", s.planes))?;
            (0, s.ptr)
        }
    };
    // Jobs per tile: the weight's 128-column N tiles, each split in two by conv2d_tma_n64.
    let jobs = ntn * (CONV2D_TMA_K / tl.bn) as usize;
    let wmap = if tl.bn == CONV2D_TMA_K {
        &w.map
    } else {
        w.map_n64.as_ref().ok_or_else(|| Error::Shape { op: OP, msg: "split-channel tiling without the weight's 64-row map".into() })?
    };
    let total = n * tl.tiles * jobs;
    ensure(out.iter().product::<usize>() < (1 << 31) && part_len < (1 << 31), OP, || {
        format!("output {out:?} needs 64-bit indexing")
    })?;
    let Some(name) = tl.kernel() else {
        return Err(Error::Shape { op: OP, msg: format!("no kernel for tiling {tl:?}") });
    };
    let grid = total.min(tl.blocks_per_sm() * gpu.sm_count as usize) as u32;
    let smem = tl.smem();
    let args = Conv2dTmaArgs {
        xmap: x.map.ptr(),
        wmap: wmap.ptr(),
        h: h as u32,
        wd: wd as u32,
        c: c as u32,
        up: up as u32,
        n_tiles: jobs as u32,
        box_w: tl.box_w as u32,
        box_r: tl.box_r as u32,
        tiles_x: tl.tiles_x as u32,
        tiles: tl.tiles as u32,
        total: total as u32,
        y16: y.ptr(),
        part,
        sums,
    };
    // SAFETY: conv2d_tma_m128 / _m64 / _m64_deep / _pp / _n64 (`name`, the kernel for tl.consumers warpgroups,
    // tl.stages stages, tl.pingpong and tl.bn) take one Conv2dTmaArgs by value (the struct of the kernel crate,
    // so its layout is theirs), `args` here. xmap is a tensor map
    // over x.t, [N, H + 2, W + 2, C] f16 with box 64 x box_w x box_r x 1 (made by PaddedInput::new for these
    // boxes, checked there; for_up only changes the ring, not the boxes); the kernel's box origins are (c0 < C,
    // x0 + s ≤ W + 1, y0 + r ≤ H + 1, n < N), and anything past the tensor is zero-filled by the copy engine,
    // never read from outside it. wmap covers w.w.data, [128·ntn, 9C] f16 (checked at upload, C equal to the
    // input's, checked here) with box 64 x bn at (64·kt < 9C, bn·nt < 128·ntn), the kernel's n_tiles being
    // jobs = ntn·128/bn (bn = 64 only with up = 1: for_up, and map_n64 exists exactly for up = 1). The kernel
    // writes y16 words of pixels (n, y < up·H, x < up·W) only (y is f16 [N, up·H, up·W, k_out] with k_out·up²
    // = 128·ntn, checked; up and ntn are the weight's) and part[((n·k_out + ch)·tiles·ntn + nt·tiles +
    // tile)·2 ..+2] with ch < k_out, nt < ntn, tile < tiles (_n64: ((n·128 + ch)·tiles + tile), ntn = 1; part_len
    // checked), or, with sums (part then 0 and unused), adds to sums[(n·k_out + ch)·NORM_SUMS_STRIDE ..+2] (N·k_out planes
    // checked); y and part are exclusive borrows, distinct from the inputs, and a sums slot is a buffer the
    // caller orders like any output (no kernel in flight reads it).
    // Every index fits 31 bits (checked here and in PaddedInput::new). Block conv2d_tma_threads(consumers)
    // (the warpgroups the kernel's roles assume; 2 · 128 + 32 = CONV2D_TMA_PP_THREADS for _pp) with smem ≤ 227 KB (a const of the kernel crate;
    // `launch` opts in above 48 KB); grid ≤ total, each block striding over the jobs.
    unsafe {
        gpu.launch(
            name,
            (grid, 1, 1),
            (conv2d_tma_threads(tl.consumers), 1, 1),
            smem,
            kernel_args!(args),
        )?;
    }
    Ok(tiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilings() {
        let t = TmaTiling::new(256, 256, 2);
        assert_eq!((t.box_w, t.box_r, t.tiles_x, t.tiles), (128, 1, 2, 512));
        let t = TmaTiling::new(64, 64, 2);
        assert_eq!((t.box_w, t.box_r, t.tiles_x, t.tiles), (64, 2, 1, 32));
        let t = TmaTiling::new(64, 64, 1);
        assert_eq!((t.box_w, t.box_r, t.tiles_x, t.tiles), (64, 1, 1, 64));
        // Odd sizes: partial tiles at the right and bottom edges.
        let t = TmaTiling::new(47, 250, 2);
        assert_eq!((t.box_w, t.box_r, t.tiles_x, t.tiles), (128, 1, 2, 94));
        let t = TmaTiling::new(9, 50, 2);
        assert_eq!((t.box_w, t.box_r, t.tiles_x, t.tiles), (50, 2, 1, 5));
        let p = t.part_tiling(9, 50, 1, 1);
        assert!(p.is_valid_for(450));
        assert_eq!((p.count(0), p.count(4)), (100, 50));
        let sm = 132;
        assert_eq!(conv2d_tma_tiling(1, 256, 256, sm).consumers, 2);
        assert!(conv2d_tma_tiling(1, 256, 256, sm).pingpong && !conv2d_tma_tiling(1, 64, 64, sm).pingpong);
        let pp = TmaTiling::new(256, 256, 2).pingpong();
        assert_eq!((pp.box_w, pp.box_r, pp.tiles, pp.kernel()), (128, 1, 512, Some("conv2d_tma_pp")));
        assert_eq!(TmaTiling::new(64, 64, 1).pingpong().kernel(), None, "ping-pong needs two warpgroups");
        assert_eq!(conv2d_tma_tiling(1, 64, 64, sm).consumers, 1);
        // 96 tiles of 64 pixels: one block per SM is enough, the deep ring; 256 tiles: two per SM.
        let deep = conv2d_tma_tiling(1, 96, 64, sm);
        assert_eq!((deep.stages, deep.kernel(), deep.blocks_per_sm()), (7, Some("conv2d_tma_m64_deep"), 1));
        let mid = conv2d_tma_tiling(1, 128, 128, sm);
        assert_eq!((mid.consumers, mid.kernel(), mid.blocks_per_sm()), (1, Some("conv2d_tma_m64"), 2));
        assert_eq!(pp.blocks_per_sm(), 1);
        assert_eq!(TmaTiling::new(64, 64, 2).blocks_per_sm(), 1);
        assert_eq!(conv2d_tma_tiling(4, 256, 256, sm).consumers, 2);
        // 64 tiles of 64 pixels: the channels split over 128 jobs, one per SM; 96 tiles (192 jobs) would not fit.
        let small = TmaTiling::new(64, 64, 1);
        assert_eq!(conv2d_tma_tiling(1, 64, 64, sm), small.split_n());
        assert_eq!((small.split_n().kernel(), small.split_n().blocks_per_sm()), (Some("conv2d_tma_n64"), 1));
        assert_eq!(conv2d_tma_tiling(1, 96, 64, sm), TmaTiling::new(96, 64, 1).deep());
        // A sub-pixel weight over a split-channel input runs the deep ring on the same boxes.
        assert_eq!(small.split_n().for_up(2), small.deep());
        assert_eq!(small.split_n().for_up(1), small.split_n());
        assert_eq!(small.deep().for_up(2), small.deep());
    }
}
