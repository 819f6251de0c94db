//! Launch constants shared by the kernels and the host launchers (compiled for both targets).

/// Threads per block of the 1-D elementwise kernels (grid-stride loops).
pub const ELEMENTWISE_BLOCK: u32 = 256;
/// Threads per block of the per-(sample, channel) reduction kernels (instance norm statistics).
pub const REDUCE_BLOCK: u32 = 256;

// ---------------------------------------------------------------------------------------------- conv2d
/// Threads per block of the direct convolution kernels.
pub const CONV2D_THREADS: u32 = 256;
/// Output columns per conv2d block: one per lane of a warp.
pub const CONV2D_TILE_Q: u32 = 32;
/// Input channels staged in shared memory per step, at most.
pub const CONV2D_MAX_CHUNK: u32 = 8;

/// One compiled shape of the direct convolution kernel. The block's 256 threads are split into `kg`
/// channel groups; each thread owns `kx` output channels and `px` output pixels (one column, rows
/// `rg, rg + row_groups, ...`), so a block computes `tile_p() x CONV2D_TILE_Q` pixels for `channels()`
/// output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dVariant {
    pub name: &'static str,
    pub kg: u32,
    pub kx: u32,
    pub px: u32,
}

/// Many output channels (K > 4): 32 channels x 8 x 32 pixels per block, 8 x 4 outputs per thread.
pub const CONV2D_WIDE: Conv2dVariant = Conv2dVariant { name: "conv2d_k32", kg: 4, kx: 8, px: 4 };
/// Few output channels (K <= 4, the last 9x9 layer): 4 channels x 32 x 32 pixels per block.
pub const CONV2D_NARROW: Conv2dVariant = Conv2dVariant { name: "conv2d_k4", kg: 1, kx: 4, px: 4 };

impl Conv2dVariant {
    /// Output channels per block.
    pub const fn channels(&self) -> u32 {
        self.kg * self.kx
    }
    /// Threads per channel group (pixel threads).
    pub const fn pixel_threads(&self) -> u32 {
        CONV2D_THREADS / self.kg
    }
    /// Rows of pixel threads (each warp of a channel group covers one row of 32 columns).
    pub const fn row_groups(&self) -> u32 {
        self.pixel_threads() / 32
    }
    /// Output rows per block.
    pub const fn tile_p(&self) -> u32 {
        self.row_groups() * self.px
    }
    /// Rows of the staged input tile (padded, upsampled coordinates) for filter height `r`.
    pub const fn in_rows(&self, r: u32, stride: u32) -> u32 {
        (self.tile_p() - 1) * stride + r
    }
    /// Columns of the staged input tile for filter width `r`.
    pub const fn in_cols(&self, r: u32, stride: u32) -> u32 {
        (CONV2D_TILE_Q - 1) * stride + r
    }
    /// Shared-memory floats per staged input channel: its weights (`r*r*channels`) and its input tile.
    pub const fn smem_floats_per_channel(&self, r: u32, stride: u32) -> u32 {
        r * r * self.channels() + self.in_rows(r, stride) * self.in_cols(r, stride)
    }
}

// ---------------------------------------------------------------------------------------- instance_norm
/// Elements of one (sample, channel) plane reduced by one block of `instance_norm_partial`, at least.
pub const INSTANCE_NORM_CHUNK: usize = 4096;
/// At most this many partial blocks per plane (larger planes get larger chunks).
pub const INSTANCE_NORM_MAX_SPLITS: usize = 1024;
/// InstanceNorm2d's epsilon.
pub const INSTANCE_NORM_EPS: f32 = 1e-5;

/// `(splits, chunk)` for a plane of `hw` elements: `splits` blocks of `chunk` elements (the last one
/// possibly shorter, none empty).
pub const fn instance_norm_splits(hw: usize) -> (usize, usize) {
    let mut splits = hw.div_ceil(INSTANCE_NORM_CHUNK);
    if splits > INSTANCE_NORM_MAX_SPLITS {
        splits = INSTANCE_NORM_MAX_SPLITS;
    }
    if splits == 0 {
        splits = 1;
    }
    let chunk = if hw == 0 { 1 } else { hw.div_ceil(splits) };
    (if hw == 0 { 1 } else { hw.div_ceil(chunk) }, chunk)
}

// ---------------------------------------------------------------- StyleViT kernels
/// `linear`: output tile rows (GEMM-M) per block.
pub const LINEAR_BM: u32 = 64;
/// `linear`: output tile columns (GEMM-N) per block.
pub const LINEAR_BN: u32 = 64;
/// `linear`: K slice staged in shared memory per step.
pub const LINEAR_BK: u32 = 16;
/// `linear`: threads per block (16 x 16, each computing a 4 x 4 micro-tile).
pub const LINEAR_THREADS: u32 = 256;
/// `linear`: padded row length (floats) of the transposed shared tiles (keeps 16-byte alignment).
pub const LINEAR_LDS: u32 = LINEAR_BM + 4;
/// `linear`: dynamic shared memory: 2 stages x (x tile + w tile), each BK x LDS floats.
pub const LINEAR_SMEM_BYTES: u32 = 2 * 2 * LINEAR_BK * LINEAR_LDS * 4;
/// `linear` flag: add the bias vector.
pub const LINEAR_BIAS: u32 = 1;
/// `linear` flag: exact (erf) GELU after the bias.
pub const LINEAR_GELU: u32 = 2;
/// `linear` flag: add a residual after the GELU (row `m % res_rows` of a contiguous [res_rows, N] tensor).
pub const LINEAR_RESIDUAL: u32 = 4;

/// `layer_norm`: rows per block (one warp per row).
pub const LAYER_NORM_ROWS: u32 = 8;
/// `linear_tc_layer_norm_hv`: rows per warp (their loads all issued before the first sum; γ and β loaded
/// once per warp).
pub const LAYER_NORM_HV_ROWS: u32 = 4;
/// `linear_tc_layer_norm_hv`: the longest row it takes (16-byte groups of 8 f16 per lane: two per lane).
pub const LAYER_NORM_HV_MAX_D: u32 = 512;
/// `linear_tc_layer_norm_hv`: the fewest rows the host runs it on. With fewer its 4 rows per warp leave
/// too few warps (run 81, H100: StyleViT at 64 tokens 0.308-0.351 ms small / 0.541-0.548 base on it
/// against 0.291-0.295 / 0.536-0.537 on `linear_tc_layer_norm_h`; the 2048-row style LayerNorms 0.045
/// against 0.044 ms per 6), with 32768 (p16 b8) it is faster (0.17 against 0.20 ms per 6).
pub const LAYER_NORM_HV_MIN_ROWS: u32 = 8192;
/// LayerNorm epsilon (PyTorch default).
pub const LAYER_NORM_EPS: f32 = 1e-5;

/// `attention`: queries per block.
pub const ATTN_BQ: u32 = 64;
/// `attention`: threads per block (16 x 16; each thread owns 4 query rows).
pub const ATTN_THREADS: u32 = 256;
/// `attention`: keys per shared-memory tile for a head dimension.
pub const fn attn_bk(head_dim: u32) -> u32 {
    if head_dim >= 128 { 32 } else { 64 }
}
/// `attention`: dynamic shared memory in bytes for a head dimension:
/// Q tile [dh][BQ+1], K tile [dh][BK+1], V tile [BK][dh], P tile [BQ][BK+1] (floats).
pub const fn attn_smem_bytes(head_dim: u32) -> u32 {
    let bk = attn_bk(head_dim);
    4 * (head_dim * (ATTN_BQ + 1) + head_dim * (bk + 1) + bk * head_dim + ATTN_BQ * (bk + 1))
}

/// `patch_unpatch_tail`: output rows per thread (the weights' loads into registers shared by them); grid
/// (B · ceil(H / PATCH_TAIL_ROWS), ceil(W / block)).
pub const PATCH_TAIL_ROWS: u32 = 4;

/// `adain`: channels per block (threadIdx.x) and token rows per block (threadIdx.y).
pub const ADAIN_COLS: u32 = 32;
pub const ADAIN_ROWS: u32 = 8;
/// AdaIN epsilon (added to the unbiased variance).
pub const ADAIN_EPS: f32 = 1e-5;
/// `adain_stats_f16` / `adain_apply_f16`: channels per block (4 per lane of a warp: 8-byte f16 loads).
pub const ADAIN_F16_CH: u32 = 128;
/// `adain_stats_f16`: tokens per statistics chunk (block y); each of the 8 warps takes every 8th.
pub const ADAIN_F16_CHUNK: u32 = 128;
/// `adain_apply_f16`: tokens per block (block y); each of the 8 warps takes every 8th.
pub const ADAIN_F16_APPLY_ROWS: u32 = 256;
/// `adain_stats_f16` / `adain_apply_f16`: threads per block (8 warps).
pub const ADAIN_F16_THREADS: u32 = 256;
/// `adain_stats_f16`: dynamic shared memory, (n, mean, M2) f32 per warp and channel.
pub const ADAIN_F16_STATS_SMEM: u32 = 8 * ADAIN_F16_CH * 12;
/// `adain_apply_f16`: dynamic shared memory, (μc, σs/σc, μs) f32 per channel.
pub const ADAIN_F16_APPLY_SMEM: u32 = ADAIN_F16_CH * 12;

// ------------------------------------------------------------------------------------------- conv2d_tc
/// `conv2d_tc` (f16 implicit GEMM on tensor cores): the largest output-pixel tile (GEMM-M) per block.
pub const CONV2D_TC_BM: u32 = 256;
/// `conv2d_tc`: weight rows are zero-padded to a multiple of this (the smallest GEMM-K step of any
/// variant; variants stepping by 64 treat a trailing half step as zeros and skip its mma).
pub const CONV2D_TC_BK: u32 = 32;
/// `conv2d_tc`: threads per block (8 warps).
pub const CONV2D_TC_THREADS: u32 = 256;
/// `conv2d_tc` epilogue: NHWC f16 output plus per-tile InstanceNorm partials.
pub const CONV2D_TC_OUT_F16_STATS: u32 = 0;
/// `conv2d_tc` epilogue: NCHW f32 output of the first `k_real` channels plus bias.
pub const CONV2D_TC_OUT_NCHW_BIAS: u32 = 1;
/// `conv2d_tc` mode flag (OR-ed into `CONV2D_TC_OUT_F16_STATS`): sub-pixel form of "nearest 2x upsample,
/// reflection pad 1, 3x3 conv". Output pixel (2i + a, 2j + b) only sees low-resolution rows i + a - 1,
/// i + a and columns j + b - 1, j + b (reflection in the upsampled image = clamping in the source), so each
/// of the four parities (a, b) is a 2x2 conv of the source with its own summed weights: 4 taps per output
/// instead of 9. The launch passes R = 2, up = 2, P x Q = the source's H x W (one parity plane), weights
/// `[4][K][kw]` (parity-major, `host::ops::conv2d_tc::pack_weight_subpixel`), and a grid of
/// 4 * ceil(H*W / BM) tiles per sample, parity-major; partial tile index = blockIdx.x.
pub const CONV2D_TC_SUBPIXEL: u32 = 2;

/// One compiled `conv2d_tc` kernel: `bm` output pixels x all K channels per block, GEMM-K steps of `bk`
/// f16 (32 or 64) through a `stages`-deep cp.async pipeline, A gathered in `piece`-byte pieces (16, or 8
/// for the 4-channel first layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dTcVariant {
    pub name: &'static str,
    pub bm: u32,
    pub bk: u32,
    pub stages: u32,
    pub piece: u32,
}

const fn tcv(name: &'static str, bm: u32, bk: u32, stages: u32, piece: u32) -> Conv2dTcVariant {
    Conv2dTcVariant { name, bm, bk, stages, piece }
}

/// K = 32, C % 8 == 0, 256-pixel tiles: GEMM-K step 64, 4 stages (154 KB for 3x3: one block per SM).
pub const CONV2D_TC_K32_BK64: Conv2dTcVariant = tcv("conv2d_tc_k32", 256, 64, 4, 16);
/// K = 32, C % 8 == 0, 256-pixel tiles: GEMM-K step 32, 4 stages (78 KB for 3x3: two blocks per SM).
pub const CONV2D_TC_K32_BK32: Conv2dTcVariant = tcv("conv2d_tc_k32_bk32", 256, 32, 4, 16);

/// `conv2d_tc`: the interchangeable kernel for default variant `v` (same tile, same partials), if any: the
/// K = 32 256-pixel tile's BK 64 kernel for its BK 32 default. The host's A/B switch, the launcher's check
/// of a forced variant and the self-check's coverage all ask this.
pub fn conv2d_tc_alternative(v: Conv2dTcVariant) -> Option<Conv2dTcVariant> {
    (v == CONV2D_TC_K32_BK32).then_some(CONV2D_TC_K32_BK64)
}

/// `conv2d_tc`: the variant for `k` output channels, `c` input channels (4 selects the 8-byte gather of
/// the 4-channel first layer; otherwise `c` must be a multiple of 8) and `bm`-pixel tiles, or `None`.
/// (The host may swap it for [`conv2d_tc_alternative`]. For the K = 32 256-pixel tile BK 32 is
/// the default: deconv2 at 1024x1024 took 0.347 ms with it against 0.371 ms with BK 64, H200, `bench --layers`.)
pub const fn conv2d_tc_variant(k: u32, c: u32, bm: u32) -> Option<Conv2dTcVariant> {
    if c == 4 {
        return match (k, bm) {
            (32, 256) => Some(tcv("conv2d_tc_c4_k32", 256, 32, 4, 8)),
            (32, 128) => Some(tcv("conv2d_tc_c4_k32_m128", 128, 32, 4, 8)),
            _ => None,
        };
    }
    if c == 0 || !c.is_multiple_of(8) {
        return None;
    }
    match (k, bm) {
        (8, 128) => Some(tcv("conv2d_tc_k8", 128, 32, 3, 16)),
        (32, 256) => Some(CONV2D_TC_K32_BK32),
        (32, 128) => Some(tcv("conv2d_tc_k32_m128", 128, 64, 4, 16)),
        (64, 128) => Some(tcv("conv2d_tc_k64", 128, 64, 4, 16)),
        (64, 64) => Some(tcv("conv2d_tc_k64_m64", 64, 64, 4, 16)),
        (128, 128) => Some(tcv("conv2d_tc_k128", 128, 64, 3, 16)),
        (128, 64) => Some(tcv("conv2d_tc_k128_m64", 64, 64, 4, 16)),
        (128, 32) => Some(tcv("conv2d_tc_k128_m32", 32, 64, 4, 16)),
        _ => None,
    }
}
/// `conv2d_tc`: kernel name for `k` output channels, `c` input channels and `bm`-pixel tiles, or `None`
/// (the name of [`conv2d_tc_variant`]).
pub const fn conv2d_tc_kernel(k: u32, c: u32, bm: u32) -> Option<&'static str> {
    match conv2d_tc_variant(k, c, bm) {
        Some(v) => Some(v.name),
        None => None,
    }
}
/// `conv2d_tc`: dynamic shared memory of variant `v` for `k` output channels, an `r`x`r` filter and weight
/// rows of `kw`: `stages` x (A tile [bm][bk] + B tile [k][bk]) f16, then the gather tables: input-row
/// offsets [r][bm + 4] and input-column offsets [r][bm + 4] (u32), then per GEMM-K piece (ceil(kw / bk) *
/// bk / (piece / 2) of them) a (channel, table offsets) pair of u32. The epilogue's reduction scratch
/// (2 x 8 x k floats) fits inside the first stage.
pub const fn conv2d_tc_smem(v: &Conv2dTcVariant, k: u32, r: u32, kw: u32) -> u32 {
    let pieces = kw.div_ceil(v.bk) * v.bk / (v.piece / 2);
    v.stages * (v.bm + k) * v.bk * 2 + 2 * r * (v.bm + 4) * 4 + pieces * 8
}
/// `conv2d_tc` with an input norm (`in_coef` not null): dynamic shared memory added after
/// [`conv2d_tc_smem`]'s for the (a, b) f32 pairs of the `c` input channels.
pub const fn conv2d_tc_in_norm_smem(c: u32) -> u32 {
    c * 8
}
/// `conv2d_tc`: SMs the tile choice aims to fill (H100 and H200 SXM have 132).
pub const CONV2D_TC_TARGET_BLOCKS: u32 = 132;
/// `conv2d_tc`: output pixels per block for `k` output channels and `n` samples of `pq` output pixels: the
/// largest tile (256 for K = 32, else 128; then halving while a variant exists for K) whose grid still fills
/// `CONV2D_TC_TARGET_BLOCKS` SMs, else the smallest. The launcher and `nhwc_in_coef` both use this.
pub const fn conv2d_tc_bm(k: u32, n: u32, pq: u32) -> u32 {
    let (largest, smallest) = match k {
        128 => (128, 32),
        64 => (128, 64),
        32 => (256, 128),
        _ => (128, 128),
    };
    let mut bm = largest;
    while bm > smallest && n * pq.div_ceil(bm) < CONV2D_TC_TARGET_BLOCKS {
        bm /= 2;
    }
    bm
}
/// `conv2d_tc`: the padded weight row length for GEMM-K = `kg` (a multiple of `CONV2D_TC_BK`).
pub const fn conv2d_tc_kw(kg: u32) -> u32 {
    kg.div_ceil(CONV2D_TC_BK) * CONV2D_TC_BK
}

// ------------------------------------------------------------------------------------------------ nhwc
/// `nhwc_in_coef`: threads per block (one block per (sample, channel) plane).
pub const NHWC_COEF_THREADS: u32 = 256;
/// Doubles per plane of the InstanceNorm plane sums (`nhwc::in_sums_add`): (Σx, Σx²) and padding to a
/// 128-byte line of their own. The conv epilogues add to them with atomics; packed, 128 channels' sums
/// share 16 lines (16 L2 slices), and a residual conv at 1024x1024 (131k additions) took 52.8 us
/// instead of 48.8 (ncu, run 119).
pub const NORM_SUMS_STRIDE: u32 = 16;

/// A conv's input norm as one kernel argument (`conv2d_tc`, `conv2d_tc_halo9_k8`, `conv2d_tc_halo9_taps`):
/// the raw input is loaded as relu(a·x + b) per (sample n, channel ch) of C channels, with (a, b) either
/// `coef[(n·C + ch)·2 ..+2]` (f32, `nhwc_in_coef`'s output) or, when `sums` is not 0, computed by the
/// kernel from the producing conv's f64 plane sums `sums[(n·C + ch)·NORM_SUMS_STRIDE ..+2]` = (Σx, Σx²)
/// over `count` = H·W values, `gamma[ch]`, `beta[ch]` (f32) and `eps` (`nhwc::in_coef_from_sums`, the
/// arithmetic `nhwc_in_apply_pad` uses). Both 0: no norm.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InNorm {
    pub coef: u64,
    pub sums: u64,
    pub gamma: u64,
    pub beta: u64,
    pub eps: f32,
    pub count: u32,
}

// The `.param .align 8 .b8 [40]` the kernels' PTX declares.
const _: () = assert!(core::mem::size_of::<InNorm>() == 40 && core::mem::align_of::<InNorm>() == 8);

impl InNorm {
    /// Whether a norm is given.
    pub fn is_some(&self) -> bool {
        self.coef != 0 || self.sums != 0
    }
}

// --------------------------------------------------------------------------------- conv2d_tc (halo9)
/// `conv2d_tc_halo9_k8`: output tile rows and columns per block (one row per warp, two m-tiles of 16).
pub const CONV2D_TC_HALO_TH: u32 = 8;
pub const CONV2D_TC_HALO_TW: u32 = 32;
/// `conv2d_tc_halo9_k8`: input channels (the kernel is specialised for the last layer, 32 -> 8 (3 real)).
pub const CONV2D_TC_HALO_C: u32 = 32;
/// `conv2d_tc_halo9_k8`: f16 elements of the fragment-ordered weight: 81 taps x 2 k16 steps x 32 lanes x 4.
pub const CONV2D_TC_HALO_W_ELEMS: u32 = 81 * 2 * 32 * 4;
/// `conv2d_tc_halo9_k8`: dynamic shared memory: the (TH+8) x (TW+8) x C f16 input tile with its halo, then
/// the weight.
pub const CONV2D_TC_HALO_SMEM: u32 = (CONV2D_TC_HALO_TH + 8) * (CONV2D_TC_HALO_TW + 8) * CONV2D_TC_HALO_C * 2 + CONV2D_TC_HALO_W_ELEMS * 2;

// ------------------------------------------------------------------------------ conv2d_tc (c4 halo9)
/// `conv2d_tc_c4_halo9_k32` (conv1: 9x9, 4 packed input channels -> 32): output tile rows and columns per
/// block (8 warps, each two rows of 32 columns = four m-tiles of 16 pixels).
pub const CONV2D_TC_C4H_TH: u32 = 16;
pub const CONV2D_TC_C4H_TW: u32 = 32;
/// `conv2d_tc_c4_halo9_k32`: output channels (all in one block).
pub const CONV2D_TC_C4H_K: u32 = 32;
/// `conv2d_tc_c4_halo9_k32`: 16-byte pair slots per staged halo row (slot j = halo pixels j and j + 1, so
/// every ldmatrix row address is 16-byte aligned whatever the pixel's parity).
pub const CONV2D_TC_C4H_SLOTS: u32 = CONV2D_TC_C4H_TW + 8;
/// `conv2d_tc_c4_halo9_k32`: f16 elements of the fragment-ordered weight: per filter row 5 chunks (two
/// k16 steps x two n-tile pairs, then the k8 step of tap 8 for all four n-tiles) x 32 lanes x 8 f16.
pub const CONV2D_TC_C4H_W_ELEMS: u32 = 9 * 5 * 32 * 8;
/// `conv2d_tc_c4_halo9_k32`: dynamic shared memory: the (TH+8) x SLOTS pair slots (16 bytes each), the
/// weight, then the epilogue's reduction scratch (2 x 8 warps x 32 floats, then 32 means).
pub const CONV2D_TC_C4H_SMEM: u32 =
    (CONV2D_TC_C4H_TH + 8) * CONV2D_TC_C4H_SLOTS * 16 + CONV2D_TC_C4H_W_ELEMS * 2 + (2 * 8 + 1) * CONV2D_TC_C4H_K * 4;


// ------------------------------------------------------------------------------------------- linear_tc
/// `linear_tc` (f16 tensor-core GEMM, f32 accumulation): output rows (GEMM-M) per block.
pub const LINEAR_TC_BM: u32 = 128;
/// `linear_tc`: output columns (GEMM-N) per block.
pub const LINEAR_TC_BN: u32 = 128;
/// `linear_tc`: GEMM-K slice (f16 elements) per pipeline stage: one 64-byte smem row per x/w row.
pub const LINEAR_TC_BK: u32 = 32;
/// `linear_tc`: threads per block (8 warps in a 2 x 4 grid, each 64 rows x 32 columns).
pub const LINEAR_TC_THREADS: u32 = 256;
/// `linear_tc`: cp.async pipeline depth (the kernel waits with `wait_group(STAGES - 2)`).
pub const LINEAR_TC_STAGES: u32 = 4;
/// `linear_tc`: dynamic shared memory: per stage an x tile [BM][BK] and a w tile [BN][BK] of f16.
pub const LINEAR_TC_SMEM_BYTES: u32 = LINEAR_TC_STAGES * (LINEAR_TC_BM + LINEAR_TC_BN) * LINEAR_TC_BK * 2;
/// `linear_tc` flag: add the f32 bias vector.
pub const LINEAR_TC_BIAS: u32 = 1;
/// `linear_tc` flag: GELU after the bias, tanh form (`device::math::gelu_tanh`; the fp32 path keeps exact erf).
pub const LINEAR_TC_GELU: u32 = 2;
/// `linear_tc` flag: add a residual after the GELU (row `m % res_rows` of a contiguous [res_rows, N] tensor).
pub const LINEAR_TC_RESIDUAL: u32 = 4;
/// `linear_tc` flag: the residual is f16 (otherwise f32).
pub const LINEAR_TC_RES_F16: u32 = 8;
/// `linear_tma` only (the other GEMM kernels ignore it): with `LINEAR_TC_RESIDUAL`, each consumer
/// warpgroup asks L2 for its job's residual tile (`prefetch.global.L2`) before the job's main loop, so the
/// epilogue's residual loads hit L2 instead of paying HBM latency batch after batch.
pub const LINEAR_TMA_PREFETCH_RES: u32 = 16;
/// `linear_tma_store` only (the kernel whose epilogue packs the f16 tile into 128-byte swizzled 64 x 64
/// boxes in shared memory and writes them with TMA stores over `ymap`): y16 += the tile (TMA reduce-add,
/// performed in L2 in f16) instead of y16 = tile. The host sets it for an in-place residual (res = y16,
/// res_rows = M).
pub const LINEAR_TMA_REDUCE: u32 = 64;

/// `linear_tc_small` (few rows: split-K tensor-core GEMM): output rows (GEMM-M) per block.
pub const LINEAR_TC_S_BM: u32 = 64;
/// `linear_tc_small`: output columns (GEMM-N) per block.
pub const LINEAR_TC_S_BN: u32 = 32;
/// `linear_tc_small`: GEMM-K slice (f16 elements) per pipeline stage: one 128-byte smem row per x/w row.
pub const LINEAR_TC_S_BK: u32 = 64;
/// `linear_tc_small`: threads per block (4 warps, warp i owning rows 16i..16i+16 x all 32 columns).
pub const LINEAR_TC_S_THREADS: u32 = 128;
/// `linear_tc_small`: cp.async pipeline depth (a split of ≤ STAGES - 1 K tiles is fetched at once).
pub const LINEAR_TC_S_STAGES: u32 = 4;
/// `linear_tc_small`: dynamic shared memory: per stage an x tile [BM][BK] and a w tile [BN][BK] of f16
/// (48 KB: no opt-in needed, four blocks fit on one SM).
pub const LINEAR_TC_S_SMEM_BYTES: u32 =
    LINEAR_TC_S_STAGES * (LINEAR_TC_S_BM + LINEAR_TC_S_BN) * LINEAR_TC_S_BK * 2;
/// `linear_tc_small`: f32 partial sums one block writes (its whole output tile) when K is split.
pub const LINEAR_TC_S_PARTIAL: u32 = LINEAR_TC_S_BM * LINEAR_TC_S_BN;
/// `linear_tc` plans: the `Big` kernel runs once its grid reaches this many blocks (H100 and H200 SXM
/// have 132 SMs).
pub const LINEAR_TC_TARGET_BLOCKS: usize = 132;
/// `linear_tc` plans: a `Small` plan splits K until its grid reaches this many blocks (half the SMs).
/// Measured (run 112, H100, StyleViT 64 tokens, same binary; once the epilogue's loads no longer
/// chained): targets 33 / 48 / 66 / 96 / 132 gave base 0.402-0.404 / 0.400-0.404 / 0.397-0.400 /
/// 0.396-0.400 / 0.412-0.415 ms, small 0.230-0.233 / 0.232-0.234 / 0.237-0.241 / 0.239-0.243 /
/// 0.242-0.245: past ~half the SMs, another split's reduction round trip costs more than its blocks
/// gain.
pub const LINEAR_TC_SPLIT_TARGET_BLOCKS: usize = 66;
/// `linear_tc` plans: at most this many K splits (the last block of a tile reads `splits - 1` partial tiles).
pub const LINEAR_TC_MAX_SPLITS: usize = 16;
/// `linear_tc` plans: a K split gets at least this many `LINEAR_TC_S_BK` steps (when K has them).
pub const LINEAR_TC_MIN_SPLIT_KTILES: usize = 2;

/// Which `linear_tc` kernel runs a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearTcKernel {
    /// `linear_tc`: 128 x 128 tiles, K walked serially (many rows).
    Big,
    /// `linear_tc_small`: 64 x 32 tiles, K optionally split over `gridDim.z` (few rows).
    Small,
}

/// How one `y[M, N] = x[M, K] · w[N, K]ᵀ` runs: the kernel, and for `Small` the number of K splits
/// (`gridDim.z`) and the `LINEAR_TC_S_BK`-wide K steps each split walks (split z covers steps
/// `z·ktiles_per_split .. min((z+1)·ktiles_per_split, ceil(K/BK))`; none is empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearTcPlan {
    pub kernel: LinearTcKernel,
    pub splits: usize,
    pub ktiles_per_split: usize,
}

impl LinearTcPlan {
    /// The big kernel (no split).
    pub const BIG: LinearTcPlan = LinearTcPlan {
        kernel: LinearTcKernel::Big,
        splits: 1,
        ktiles_per_split: 0,
    };

    /// The small kernel with at most `splits` K splits (clamped to 1..=ceil(K/BK)); the K steps are
    /// spread evenly and the split count is reduced so that no split is empty.
    pub const fn small(k: usize, splits: usize) -> LinearTcPlan {
        let ktiles = linear_tc_s_ktiles(k);
        let mut s = if splits < 1 { 1 } else { splits };
        if s > ktiles {
            s = ktiles;
        }
        let kps = ktiles.div_ceil(s);
        LinearTcPlan {
            kernel: LinearTcKernel::Small,
            splits: ktiles.div_ceil(kps),
            ktiles_per_split: kps,
        }
    }

    /// The rule (`allow_split`: a workspace is at hand):
    /// 1. `Big` when its grid, ceil(M/128)·ceil(N/128) blocks, already reaches `LINEAR_TC_TARGET_BLOCKS`;
    /// 2. else `Small` with tiles = ceil(M/64)·ceil(N/32) and ktiles = ceil(K/64): no split when
    ///    `!allow_split` or tiles ≥ TARGET (`LINEAR_TC_SPLIT_TARGET_BLOCKS`); otherwise
    ///    ceil(TARGET / tiles) splits, at most
    ///    `LINEAR_TC_MAX_SPLITS` and at most ktiles / `LINEAR_TC_MIN_SPLIT_KTILES` (at least 1), evened
    ///    out by [`LinearTcPlan::small`] (e.g. M 64: qkv N 1536 K 512 → 2 splits x 4 steps, 96 blocks;
    ///    fc2 N 512 K 2048 → 5 x 7, 80 blocks).
    pub const fn choose(m: usize, n: usize, k: usize, allow_split: bool) -> LinearTcPlan {
        let target = LINEAR_TC_SPLIT_TARGET_BLOCKS;
        let big_blocks = m.div_ceil(LINEAR_TC_BM as usize) * n.div_ceil(LINEAR_TC_BN as usize);
        if big_blocks >= LINEAR_TC_TARGET_BLOCKS {
            return LinearTcPlan::BIG;
        }
        let tiles = linear_tc_s_tiles(m, n);
        if !allow_split || tiles >= target || tiles == 0 {
            return LinearTcPlan::small(k, 1);
        }
        let mut s = target.div_ceil(tiles);
        if s > LINEAR_TC_MAX_SPLITS {
            s = LINEAR_TC_MAX_SPLITS;
        }
        let by_k = linear_tc_s_ktiles(k) / LINEAR_TC_MIN_SPLIT_KTILES;
        if s > by_k {
            s = by_k;
        }
        LinearTcPlan::small(k, s)
    }

    /// Grid of the plan for M rows and N columns: (x: column tiles, y: row tiles, z: splits).
    pub const fn grid(&self, m: usize, n: usize) -> (usize, usize, usize) {
        match self.kernel {
            LinearTcKernel::Big => (
                n.div_ceil(LINEAR_TC_BN as usize),
                m.div_ceil(LINEAR_TC_BM as usize),
                1,
            ),
            LinearTcKernel::Small => (
                n.div_ceil(LINEAR_TC_S_BN as usize),
                m.div_ceil(LINEAR_TC_S_BM as usize),
                self.splits,
            ),
        }
    }
}

/// `linear_tc_small`: output tiles (blocks per split) for M rows and N columns.
pub const fn linear_tc_s_tiles(m: usize, n: usize) -> usize {
    m.div_ceil(LINEAR_TC_S_BM as usize) * n.div_ceil(LINEAR_TC_S_BN as usize)
}
/// `linear_tc_small`: K steps of `LINEAR_TC_S_BK` for GEMM-K = k (at least 1).
pub const fn linear_tc_s_ktiles(k: usize) -> usize {
    let t = k.div_ceil(LINEAR_TC_S_BK as usize);
    if t == 0 {
        1
    } else {
        t
    }
}

// ------------------------------------------------------------------------------------------- linear_wg
/// `linear_wg` (Hopper `wgmma` GEMM, the `linear_tc` contract for many rows): output rows per block
/// (two consumer warpgroups of 64 rows).
pub const LINEAR_WG_BM: u32 = 128;
/// `linear_wg`: output columns per block (one `wgmma.m64n128k16` per warpgroup and k16 step). 128 rather
/// than 256 so that two blocks share an SM (97 KB of shared memory each with 3 stages): one block's
/// pipeline fill and epilogue overlap the other's MMAs. Run 12 (H200, 128 x 256, 4 stages, one block per
/// SM): 126 TFLOP/s over StyleViT's p16 b8 GEMMs against linear_tc's 178.
pub const LINEAR_WG_BN: u32 = 128;
/// `linear_wg`: GEMM-K slice per pipeline stage: one 128-byte (128B-swizzled) smem row per x/w row.
/// The host requires K % LINEAR_WG_BK == 0.
pub const LINEAR_WG_BK: u32 = 64;
/// `linear_wg`: threads per block (2 warpgroups; every thread also issues cp.async loads).
pub const LINEAR_WG_THREADS: u32 = 256;
/// `linear_wg`: pipeline stages (S): S - 2 loads in flight, one stage under MMA, one stage whose MMA batch
/// may still be running (the kernel waits with `wgmma.wait_group 1`).
pub const LINEAR_WG_STAGES: u32 = 3;
/// `linear_wg`: dynamic shared memory: per stage an x tile [BM][BK] and a w tile [BN][BK] of f16, plus
/// 1024 bytes so that the kernel can align the stages to the 1024-byte swizzle atom (97 KB in all).
pub const LINEAR_WG_SMEM_BYTES: u32 =
    LINEAR_WG_STAGES * (LINEAR_WG_BM + LINEAR_WG_BN) * LINEAR_WG_BK * 2 + 1024;
/// `wgmma_probe`: threads (one warpgroup).
pub const WGMMA_PROBE_THREADS: u32 = 128;
/// `wgmma_peak`: threads (two warpgroups).
pub const WGMMA_PEAK_THREADS: u32 = 256;
/// `wgmma_peak`: bytes of one shared-memory slot (A [128][64] + B [256][64] f16, 128B-swizzled rows).
pub const WGMMA_PEAK_STAGE_BYTES: u32 = (128 + 256) * 128;
/// `wgmma_peak`: slots cycled over.
pub const WGMMA_PEAK_STAGES: u32 = 4;
/// `wgmma_peak`: dynamic shared memory (the slots plus 1 KB of alignment slack).
pub const WGMMA_PEAK_SMEM_BYTES: u32 = WGMMA_PEAK_STAGES * WGMMA_PEAK_STAGE_BYTES + 1024;
/// `wgmma_probe`: dynamic shared memory: A [64][64] and B [256][64] f16 tiles (128B-swizzled) plus the
/// 1024-byte alignment slack.
pub const WGMMA_PROBE_SMEM_BYTES: u32 = (64 + 256) * 128 + 1024;

// ------------------------------------------------------------------------------------------ linear_tma
/// `linear_tma` (the `linear_tc` contract on Hopper: TMA-fed, warp-specialised, persistent, ping-pong
/// `wgmma`; `device::pingpong`): output tile rows and columns of one job.
pub const LINEAR_TMA_BM: u32 = 128;
pub const LINEAR_TMA_BN: u32 = 128;
/// `linear_tma`: GEMM-K slice per ring stage (the TMA box's inner extent: 64 f16 = one 128-byte row).
pub const LINEAR_TMA_BK: u32 = 64;
/// `linear_tma`: threads per block (two consumer warpgroups, then one producer warp).
pub const LINEAR_TMA_THREADS: u32 = 2 * 128 + 32;
/// `linear_tma`: bytes per ring stage (A and B tiles of 128 rows, one 64-wide K slice).
pub const LINEAR_TMA_STAGE_BYTES: u32 = (LINEAR_TMA_BM + LINEAR_TMA_BN) * LINEAR_TMA_BK * 2;
/// `linear_tma`: floats per row of the register epilogue's f32 staging tile (128 columns + 8 of padding).
pub const LINEAR_TMA_SROW: u32 = LINEAR_TMA_BN + 8;
/// Bytes of one 64-row half of a job's f16 tile as `linear_tma_store` stages it: two 128-byte swizzled
/// boxes of 64 rows x 64 columns (8 KB each).
pub const LINEAR_TMA_HALF_F16: u32 = 64 * LINEAR_TMA_BN * 2;

/// Shared memory of one `linear_tma` entry, from the 1024-byte aligned start of dynamic shared memory: the
/// ring's `stages` stages, the mbarriers (each stage's "full", each stage's "empty", "order"), then the two
/// consumer warpgroups' staging areas of `staging_bytes` each (1024-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearTmaLayout {
    pub stages: u32,
    /// Bytes of one warpgroup's staging area: the register epilogue's [64][LINEAR_TMA_SROW] f32 tile (one
    /// half of a job at a time), or `linear_tma_store`'s two f16 halves ([`LINEAR_TMA_HALF_F16`] each).
    pub staging_bytes: u32,
    pub bars: u32,
    pub staging: u32,
    /// Dynamic shared memory to launch with (1024 bytes of alignment slack included).
    pub smem: u32,
}

/// [`LinearTmaLayout`] with `stages` ring stages, for the TMA-store epilogue (`store`) or the register one.
pub const fn linear_tma_layout(stages: u32, store: bool) -> LinearTmaLayout {
    let staging_bytes = if store { 2 * LINEAR_TMA_HALF_F16 } else { 64 * LINEAR_TMA_SROW * 4 };
    let bars = stages * LINEAR_TMA_STAGE_BYTES;
    let staging = (bars + (2 * stages + 1) * 8).next_multiple_of(1024);
    let smem = staging + 2 * staging_bytes + 1024;
    LinearTmaLayout { stages, staging_bytes, bars, staging, smem }
}

/// `linear_tma` (register epilogue): 4 stages.
pub const LINEAR_TMA: LinearTmaLayout = linear_tma_layout(4, false);
/// `linear_tma_store`: 5 stages (its staging is smaller: 32 KB per warpgroup). Run 96 (H100, same run):
/// StyleViT p16 b8 14.01-14.04 ms against 14.13-14.16 with 4 stages, and 14.06-14.11 with 6 stages and one
/// half buffer per warpgroup.
pub const LINEAR_TMA_STORE: LinearTmaLayout = linear_tma_layout(5, true);
const _: () = assert!(
    LINEAR_TMA.smem <= MAX_SMEM_PER_BLOCK
        && LINEAR_TMA_STORE.smem <= MAX_SMEM_PER_BLOCK
        && LINEAR_TMA_STAGE_BYTES.is_multiple_of(1024)
        && (64 * LINEAR_TMA_SROW * 4).is_multiple_of(1024)
);

/// `linear_tma`'s kernel parameter (`#[repr(C)]`, shared with the host launcher): tensor maps of x
/// ([M, K] f16, box 64 x 128) and w ([N, K] f16, box 64 x 128) by device address, and with
/// `linear_tma_store` one of y16 ([M, N] f16, box 64 x 64; otherwise 0); `bias`, `res`, `y32`,
/// `y16` as `linear_tc`'s arguments of the same names (0 when unused); `n_tiles` = ceil(N / 128) and
/// `total` = ceil(M / 128)·n_tiles jobs (job j: row tile j / n_tiles, column tile j % n_tiles).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearTmaArgs {
    pub xmap: u64,
    pub wmap: u64,
    pub ymap: u64,
    pub bias: u64,
    pub res: u64,
    pub y32: u64,
    pub y16: u64,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub res_rows: u32,
    pub flags: u32,
    pub n_tiles: u32,
    pub total: u32,
    pub _pad: u32,
}

// The `.param .align 8 .b8 [88]` the kernel's PTX declares.
const _: () = assert!(core::mem::size_of::<LinearTmaArgs>() == 88 && core::mem::align_of::<LinearTmaArgs>() == 8);

// ------------------------------------------------------------------------------------------- conv2d_wg
/// `conv2d_wg` (3x3 reflect-padded implicit-GEMM convolution on `wgmma`, the `linear_wg` pipeline with the
/// A tile gathered from the NHWC image): output pixels per block (two warpgroups of 64 rows).
pub const CONV2D_WG_BM: u32 = 128;
/// `conv2d_wg_k128`: output channels (all of them in one block: one `wgmma.m64n128k16` per warpgroup and
/// k16 step). `conv2d_wg_k64` has 64 (`wgmma.m64n64k16`).
pub const CONV2D_WG_K: u32 = 128;
/// `conv2d_wg`: the kernel for `k` output channels (128 or 64), or `None`.
pub const fn conv2d_wg_kernel(k: u32) -> Option<&'static str> {
    match k {
        128 => Some("conv2d_wg_k128"),
        64 => Some("conv2d_wg_k64"),
        _ => None,
    }
}
/// `conv2d_wg`: GEMM-K slice per pipeline stage (one tap, 64 input channels; the host requires C % 64 == 0).
pub const CONV2D_WG_BK: u32 = 64;
/// `conv2d_wg`: threads per block (2 warpgroups; every thread also issues cp.async loads).
pub const CONV2D_WG_THREADS: u32 = 256;
/// `conv2d_wg`: pipeline stages (as `LINEAR_WG_STAGES`: S - 2 loads in flight, `wgmma.wait_group 1`).
pub const CONV2D_WG_STAGES: u32 = 3;
/// `conv2d_wg`: filter taps (3x3 only).
pub const CONV2D_WG_TAPS: u32 = 9;
/// `conv2d_wg` for `k` output channels: dynamic shared memory without the input norm: per stage an A tile
/// [BM][BK] and a B tile [k][BK] of f16, 1024 bytes of alignment slack (the swizzle atom), then the gather
/// table: per tap and tile row the u32 element offset of the reflected (upsampled) input pixel (K = 128:
/// ~102 KB, K = 64: ~78 KB; two blocks per SM either way).
pub const fn conv2d_wg_smem(k: u32) -> u32 {
    CONV2D_WG_STAGES * (CONV2D_WG_BM + k) * CONV2D_WG_BK * 2 + 1024 + CONV2D_WG_TAPS * CONV2D_WG_BM * 4
}
/// `conv2d_wg_k128`'s [`conv2d_wg_smem`].
pub const CONV2D_WG_SMEM_BYTES: u32 = conv2d_wg_smem(CONV2D_WG_K);
/// `conv2d_wg` with an input norm (`in_coef` not null): shared memory added after the gather table for the
/// (a, b) f32 pairs of the `c` input channels.
pub const fn conv2d_wg_in_norm_smem(c: u32) -> u32 {
    c * 8
}

/// `nhwc_in_apply_pad`: threads per block (one block per output row; C/8 must not exceed it). 544 = 17
/// warps: 34 pixels of 128 channels (68 of 64) per pass of two, so a 66-pixel padded row (130 for 64
/// channels: TransformerNet at 256) takes one pass, not two passes of which the second has 2 pixels.
pub const NHWC_APPLY_PAD_THREADS: u32 = 544;

/// Shared memory of one SM on sm_90 (H100/H200): 228 KB, of which the driver reserves
/// [`SMEM_RESERVED_PER_BLOCK`] per resident block; one block may opt into at most [`MAX_SMEM_PER_BLOCK`].
pub const SMEM_PER_SM: u32 = 228 * 1024;
/// Shared memory the driver reserves for each resident block (sm_90).
pub const SMEM_RESERVED_PER_BLOCK: u32 = 1024;
/// Dynamic shared memory one block may use on sm_90 (227 KB).
pub const MAX_SMEM_PER_BLOCK: u32 = SMEM_PER_SM - SMEM_RESERVED_PER_BLOCK;

// ------------------------------------------------------------------------------------------ conv2d_tma
/// `conv2d_tma` (3x3 conv on an explicitly reflection-padded NHWC f16 input, TMA-fed persistent
/// warp-specialised `wgmma` implicit GEMM): output channels (one `wgmma.m64n128k16` per consumer
/// warpgroup and k16 step).
pub const CONV2D_TMA_K: u32 = 128;
/// `conv2d_tma`: GEMM-K slice per stage (one tap, 64 input channels: C % 64 == 0).
pub const CONV2D_TMA_BK: u32 = 64;
/// The arguments of every `conv2d_tma` kernel, passed as their one kernel parameter (a `.param` struct
/// the host launcher fills in, so the kernels and the launcher share one list). Device addresses are the
/// host's 64-bit `CUdeviceptr`s; [`Self::pointers`] gives the kernels their typed views.
///
/// `xmap`, `wmap`: generic addresses of the padded input's and the weight's tensor maps; `h`, `wd`: the
/// output (= unpadded input) size; `c` the input channels; `up` 1 (a 3x3 conv) or 2 (the sub-pixel form of a
/// 2x upsampling conv); `n_tiles` the jobs per tile (the weight's 128-column N tiles, times 2 for
/// `conv2d_tma_n64`); tiles of `box_r` rows x `box_w` columns (the A map's box), `tiles_x` per row of tiles,
/// `tiles` per sample, `total` = N·tiles·n_tiles jobs; `y16` the NHWC f16 output (as f16 pairs), `part` the
/// InstanceNorm partials (f32), or, when `sums` is not 0, `sums` the f64 plane sums they are added to
/// (`conv2d_tma`'s `put_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dTmaArgs {
    pub xmap: u64,
    pub wmap: u64,
    pub h: u32,
    pub wd: u32,
    pub c: u32,
    pub up: u32,
    pub n_tiles: u32,
    pub box_w: u32,
    pub box_r: u32,
    pub tiles_x: u32,
    pub tiles: u32,
    pub total: u32,
    pub y16: u64,
    pub part: u64,
    pub sums: u64,
}

// The `.param .align 8 .b8 [80]` the kernels' PTX declares.
const _: () = assert!(core::mem::size_of::<Conv2dTmaArgs>() == 80 && core::mem::align_of::<Conv2dTmaArgs>() == 8);

impl Conv2dTmaArgs {
    /// (xmap, wmap, y16) as the kernels use them (`part` and `sums`: `conv2d_tma`'s `put_stats`).
    pub fn pointers(&self) -> (*const u8, *const u8, *mut u32) {
        (self.xmap as *const u8, self.wmap as *const u8, self.y16 as *mut u32)
    }
}

/// `conv2d_tma`: the kernel with `consumers` warpgroups (tiles of up to 64·consumers pixels), a ring of
/// `stages` shared-memory stages, the ping-pong schedule or not and GEMM N tiles of `bn` columns (128, or
/// 64: `conv2d_tma_n64`), or `None`.
pub const fn conv2d_tma_kernel(consumers: u32, stages: u32, pingpong: bool, bn: u32) -> Option<&'static str> {
    match (consumers, stages, pingpong, bn) {
        (2, 4, false, CONV2D_TMA_K) => Some("conv2d_tma_m128"),
        (1, 3, false, CONV2D_TMA_K) => Some("conv2d_tma_m64"),
        (1, CONV2D_TMA_M64_DEEP_STAGES, false, CONV2D_TMA_K) => Some("conv2d_tma_m64_deep"),
        (2, CONV2D_TMA_PP_STAGES, true, CONV2D_TMA_K) => Some("conv2d_tma_pp"),
        (1, CONV2D_TMA_N64_STAGES, false, CONV2D_TMA_N64_BN) => Some("conv2d_tma_n64"),
        _ => None,
    }
}
/// `conv2d_tma`: threads per block (the consumer warpgroups, then one producer warp; the ping-pong kernel's
/// too, with two).
pub const fn conv2d_tma_threads(consumers: u32) -> u32 {
    consumers * 128 + 32
}
/// `conv2d_tma`: the ring stages of the kernel with `consumers` warpgroups (4 with two: one block per SM;
/// 3 with one: two blocks per SM).
pub const fn conv2d_tma_stages(consumers: u32) -> u32 {
    if consumers == 2 {
        4
    } else {
        3
    }
}
/// `conv2d_tma_m64_deep`: the ring stages of the one-warpgroup kernel when one block per SM is enough (as
/// many jobs as SMs or fewer): 7 stages of 24 KB (~205 KB of shared memory) keep more of the operand
/// copies in flight than the 3 of `conv2d_tma_m64`, sized for two blocks per SM.
pub const CONV2D_TMA_M64_DEEP_STAGES: u32 = 7;
/// `conv2d_tma`: floats per row of the epilogue's f32 staging tile (128 columns + 8 of padding).
pub const CONV2D_TMA_SROW: u32 = CONV2D_TMA_K + 8;
/// Where `conv2d_tma` keeps things in dynamic shared memory, as byte offsets from the first 1024-byte
/// aligned address (the launch reserves 1024 bytes of slack for that alignment).
#[derive(Clone, Copy)]
pub struct Conv2dTmaLayout {
    /// A tile bytes per stage (64·consumers rows of 128 bytes); the B tile (128 rows) follows it.
    pub a_bytes: u32,
    /// Bytes per stage (A + B tiles; a multiple of 1024).
    pub stage_bytes: u32,
    /// The stages' "full" mbarriers (8 bytes each), then their "empty" ones.
    pub bars: u32,
    /// The epilogue's per-warpgroup column sums [consumers][128] f32, then the M2 [consumers][128].
    pub red: u32,
    /// The epilogue's f32 staging tile [64·consumers][CONV2D_TMA_SROW].
    pub staging: u32,
    /// Dynamic shared memory to launch with (slack included).
    pub smem: u32,
}
/// [`Conv2dTmaLayout`] for `consumers` warpgroups and `stages` stages.
pub const fn conv2d_tma_layout(consumers: u32, stages: u32) -> Conv2dTmaLayout {
    let a_bytes = consumers * 64 * 128;
    let stage_bytes = a_bytes + CONV2D_TMA_K * 128;
    let bars = stages * stage_bytes;
    let red = bars + 2 * stages * 8;
    let staging = red + 2 * consumers * CONV2D_TMA_K * 4;
    let end = staging + consumers * 64 * CONV2D_TMA_SROW * 4;
    Conv2dTmaLayout { a_bytes, stage_bytes, bars, red, staging, smem: end + 1024 }
}

const _: () = assert!(conv2d_tma_layout(1, CONV2D_TMA_M64_DEEP_STAGES).smem <= MAX_SMEM_PER_BLOCK);

/// `conv2d_tma_n64` (one consumer warpgroup, 64-pixel tiles, each job half of the 128 output channels: twice
/// the jobs of `conv2d_tma_m64` for grids that would leave SMs idle): GEMM columns per N tile.
pub const CONV2D_TMA_N64_BN: u32 = 64;
/// `conv2d_tma_n64`: ring stages (16 KB each; one block per SM).
pub const CONV2D_TMA_N64_STAGES: u32 = 10;
/// [`Conv2dTmaLayout`] of `conv2d_tma_n64`: stages of the A tile (64 rows of 128 bytes) and the B tile (64
/// rows); no column sums (`red` = `staging`: one pass over the staging tile per column); the staging tile
/// [64][CONV2D_TMA_SROW].
pub const fn conv2d_tma_n64_layout() -> Conv2dTmaLayout {
    let a_bytes = 64 * 128;
    let stage_bytes = a_bytes + CONV2D_TMA_N64_BN * 128;
    let bars = CONV2D_TMA_N64_STAGES * stage_bytes;
    let staging = (bars + 2 * CONV2D_TMA_N64_STAGES * 8).next_multiple_of(16);
    let end = staging + 64 * CONV2D_TMA_SROW * 4;
    Conv2dTmaLayout { a_bytes, stage_bytes, bars, red: staging, staging, smem: end + 1024 }
}
const _: () = {
    let l = conv2d_tma_n64_layout();
    assert!(l.smem <= MAX_SMEM_PER_BLOCK && l.stage_bytes.is_multiple_of(1024) && l.staging.is_multiple_of(16));
};

/// `conv2d_tma_pp` (the ping-pong schedule: two consumer warpgroups, each multiplying a whole tile of up to
/// 128 pixels while the other runs its epilogue): ring stages.
pub const CONV2D_TMA_PP_STAGES: u32 = 4;
/// `conv2d_tma_pp`: threads per block (two consumer warpgroups, then one producer warp).
pub const CONV2D_TMA_PP_THREADS: u32 = conv2d_tma_threads(2);
/// Where `conv2d_tma_pp` keeps things in dynamic shared memory (byte offsets from the first 1024-byte aligned
/// address; the launch reserves 1024 bytes of slack for that alignment).
#[derive(Clone, Copy)]
pub struct Conv2dTmaPpLayout {
    /// Bytes per stage: the A tile (128 rows of 128 bytes), then the B tile (128 rows); a multiple of 1024.
    pub stage_bytes: u32,
    /// The stages' "full" mbarriers (8 bytes each), their "empty" ones, then the "mainloop order" one.
    pub bars: u32,
    /// Per warpgroup: the epilogue's column means [128] f32, then the column M2 [128].
    pub red: u32,
    /// Per warpgroup: the epilogue's f32 staging tile [64][CONV2D_TMA_SROW] (one 64-row half of a tile at a
    /// time), `CONV2D_TMA_PP_STAGING` bytes each.
    pub staging: u32,
    /// Dynamic shared memory to launch with (slack included).
    pub smem: u32,
}
/// Kernels launched with more threads than 65536 / 255 registers allow, and that block size: `cargo xtask
/// build-kernels` writes it as `.maxntid` into their PTX entries, so ptxas (ours, and the driver's JIT)
/// keeps their registers within it.
pub const MAX_THREADS: &[(&str, u32)] = &[("conv2d_tma_pp", CONV2D_TMA_PP_THREADS), ("linear_tma", LINEAR_TMA_THREADS), ("linear_tma_store", LINEAR_TMA_THREADS), ("linear_tma_store_gelu", LINEAR_TMA_THREADS), ("attention_tma", ATTN_TMA.threads), ("attention_tma_serial", ATTN_TMA.threads), ("attention_tma_wg3", ATTN_TMA_WG3.threads), ("wgmma_peak", WGMMA_PEAK_THREADS)];
/// Bytes of one warpgroup's `conv2d_tma_pp` staging tile.
pub const CONV2D_TMA_PP_STAGING: u32 = 64 * CONV2D_TMA_SROW * 4;
/// [`Conv2dTmaPpLayout`].
pub const fn conv2d_tma_pp_layout() -> Conv2dTmaPpLayout {
    let stage_bytes = 2 * 64 * 128 + CONV2D_TMA_K * 128;
    let bars = CONV2D_TMA_PP_STAGES * stage_bytes;
    // 16-byte aligned: the staging tile takes 8- and 16-byte accesses.
    let red = bars + ((2 * CONV2D_TMA_PP_STAGES + 1) * 8).next_multiple_of(16);
    let staging = red + 2 * 2 * CONV2D_TMA_K * 4;
    let end = staging + 2 * CONV2D_TMA_PP_STAGING;
    Conv2dTmaPpLayout { stage_bytes, bars, red, staging, smem: end + 1024 }
}
const _: () = {
    let l = conv2d_tma_pp_layout();
    assert!(l.smem <= MAX_SMEM_PER_BLOCK && l.red.is_multiple_of(16) && l.staging.is_multiple_of(16) && CONV2D_TMA_PP_STAGING.is_multiple_of(16));
};

// --------------------------------------------------------------------------------------- attention_tma
/// `attention_tma` (flash attention on Hopper, head_dim 64: TMA-fed `wgmma`, consumer warpgroups of 64
/// queries each and a producer warpgroup): keys per K/V tile (one ring stage holds a K and a V tile).
pub const ATTN_TMA_BK: u32 = 128;
/// `attention_tma`: the head dimension it takes.
pub const ATTN_TMA_DH: u32 = 64;
/// `attention_tma`: ring stages of K/V tiles.
pub const ATTN_TMA_STAGES: u32 = 4;
/// `attention_tma`: bytes of one K (or V) tile: ATTN_TMA_BK rows of 64 f16 (128 bytes, 128-byte swizzle).
pub const ATTN_TMA_KV_BYTES: u32 = ATTN_TMA_BK * ATTN_TMA_DH * 2;
/// `attention_tma`: offset of the Q tile after the ring.
pub const ATTN_TMA_Q: u32 = ATTN_TMA_STAGES * 2 * ATTN_TMA_KV_BYTES;
/// `attention_tma`: registers the producer warpgroup keeps (`setmaxnreg.dec`).
pub const ATTN_TMA_PRODUCER_REGS: u32 = 24;

/// One `attention_tma` variant's block: `wgs` consumer warpgroups of 64 queries, then the producer
/// warpgroup (whole warpgroups, so that `setmaxnreg` can move registers from the producer to the consumers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnTmaLayout {
    /// Consumer warpgroups.
    pub wgs: u32,
    /// Queries per block (64 per consumer warpgroup).
    pub bq: u32,
    /// Threads per block.
    pub threads: u32,
    /// Registers per thread at launch: ptxas' allocation for `threads` threads, one block per SM (65536 /
    /// threads rounded down to 8; `.maxntid` makes ptxas keep to it).
    pub regs: u32,
    /// Registers per consumer thread after `setmaxnreg.inc`: what the producer's `ATTN_TMA_PRODUCER_REGS`
    /// leaves of the block's pool (`regs · threads`, not the SM's 65536: an increase the pool cannot
    /// cover waits forever), shared by the consumer warpgroups, rounded down to 8.
    pub consumer_regs: u32,
    /// Offset of the mbarriers (each stage's "full", each stage's "empty", then "q").
    pub bars: u32,
    /// Dynamic shared memory to launch with (1024 bytes of alignment slack included).
    pub smem: u32,
}

/// [`AttnTmaLayout`] for `wgs` consumer warpgroups.
pub const fn attn_tma_layout(wgs: u32) -> AttnTmaLayout {
    let bq = 64 * wgs;
    let threads = 128 * (wgs + 1);
    let regs = 65536 / threads / 8 * 8;
    let consumer_regs = (regs * threads - 128 * ATTN_TMA_PRODUCER_REGS) / (128 * wgs) / 8 * 8;
    let bars = ATTN_TMA_Q + bq * ATTN_TMA_DH * 2;
    let smem = bars + (2 * ATTN_TMA_STAGES + 1) * 8 + 1024;
    AttnTmaLayout { wgs, bq, threads, regs, consumer_regs, bars, smem }
}

/// `attention_tma` and `attention_tma_serial`: two consumer warpgroups (128 queries per block, 384
/// threads: 168 registers at launch, 240 per consumer thread).
pub const ATTN_TMA: AttnTmaLayout = attn_tma_layout(2);
/// `attention_tma_wg3`: three consumer warpgroups (FA3's 192-query tiles for head_dim 64; 512 threads: 128
/// registers at launch, 160 per consumer thread).
pub const ATTN_TMA_WG3: AttnTmaLayout = attn_tma_layout(3);
const _: () = {
    let ls = [ATTN_TMA, ATTN_TMA_WG3];
    let mut i = 0;
    while i < ls.len() {
        let l = ls[i];
        // setmaxnreg: what the consumers take must be in the pool the producer's decrease leaves.
        assert!(l.regs * l.threads <= 65536 && 128 * ATTN_TMA_PRODUCER_REGS + 128 * l.wgs * l.consumer_regs <= l.regs * l.threads);
        assert!(l.consumer_regs >= l.regs && l.smem <= MAX_SMEM_PER_BLOCK);
        i += 1;
    }
    assert!(ATTN_TMA.regs == 168 && ATTN_TMA.consumer_regs == 240 && ATTN_TMA_WG3.regs == 128 && ATTN_TMA_WG3.consumer_regs == 160);
    assert!(ATTN_TMA_KV_BYTES.is_multiple_of(1024) && ATTN_TMA_Q.is_multiple_of(1024));
};

/// `attention_tma`'s kernel parameter (`#[repr(C)]`, shared with the host launcher). `qmap`, `kmap`,
/// `vmap`: device addresses of 2-D tensor maps over the token-major f16 tensors holding q, k and v
/// (dims: the row length in elements, then rows = B·N; box 64 x 128), possibly one map for all three (the
/// fused QKV buffer); head h of q is at column `q_col + 64h` of row `b·nq + i` (k, v likewise with nk).
/// `o`: f16 output `[B, nq, ld_o]`, head h at columns 64h. `scale_log2` = log2(e) / 8.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionTmaArgs {
    pub qmap: u64,
    pub kmap: u64,
    pub vmap: u64,
    pub o: u64,
    pub nq: u32,
    pub nk: u32,
    pub ld_o: u32,
    pub q_col: u32,
    pub k_col: u32,
    pub v_col: u32,
    pub scale_log2: f32,
    pub _pad: u32,
}

// The `.param .align 8 .b8 [64]` the kernel's PTX declares.
const _: () = assert!(core::mem::size_of::<AttentionTmaArgs>() == 64 && core::mem::align_of::<AttentionTmaArgs>() == 8);

// ---------------------------------------------------------------------------------------- attention_tc
/// `attention_tc` (f16 flash attention on tensor cores): warps per block, each owning 16·m-tiles query rows.
pub const ATTN_TC_WARPS: u32 = 4;
/// `attention_tc`: keys per shared-memory tile (double-buffered).
pub const ATTN_TC_BK: u32 = 64;
/// `attention_tc`: 16-row m-tiles per warp for a head dimension (2 keeps 32 rows per warp, halving the
/// K/V shared-memory reads per FLOP; head_dim 128 uses 1 to stay within the register file).
pub const fn attn_tc_m_tiles(head_dim: u32) -> u32 {
    if head_dim >= 128 { 1 } else { 2 }
}
/// `attention_tc`: queries per block of the default kernel for a head dimension.
pub const fn attn_tc_bq(head_dim: u32) -> u32 {
    attn_tc_queries(attn_tc_m_tiles(head_dim))
}
/// `attention_tc`: queries per block with `m_tiles` 16-row m-tiles per warp.
pub const fn attn_tc_queries(m_tiles: u32) -> u32 {
    16 * ATTN_TC_WARPS * m_tiles
}
/// `attention_tc`: dynamic shared memory: the Q tile [BQ][dh] and two stages of K and V tiles [BK][dh], f16.
pub const fn attn_tc_smem_bytes(head_dim: u32) -> u32 {
    attn_tc_smem(head_dim, attn_tc_m_tiles(head_dim))
}
/// `attention_tc`'s dynamic shared memory with `m_tiles` m-tiles per warp (BQ = 16 · warps · m_tiles).
pub const fn attn_tc_smem(head_dim: u32, m_tiles: u32) -> u32 {
    (attn_tc_queries(m_tiles) + 4 * ATTN_TC_BK) * head_dim * 2
}
/// `attention_tc`: kernel name for a head dimension, or `None`.
pub const fn attn_tc_kernel(head_dim: u32) -> Option<&'static str> {
    match head_dim {
        32 => Some("attention_tc_d32"),
        64 => Some("attention_tc_d64"),
        128 => Some("attention_tc_d128"),
        _ => None,
    }
}
/// `attention_tc` with one m-tile per warp (BQ 64) for a head dimension whose default is two, or `None`:
/// the launcher's choice when the one-m-tile grid fills the GPU at most once (few tokens).
pub const fn attn_tc_kernel_m1(head_dim: u32) -> Option<&'static str> {
    match head_dim {
        32 => Some("attention_tc_d32_m1"),
        64 => Some("attention_tc_d64_m1"),
        _ => None,
    }
}

// ------------------------------------------------------------------------- conv2d_tc (halo9, taps in N)
/// `conv2d_tc_halo9_taps` (the last layer, 9x9, 32 -> at most 3 channels): output rows and columns per
/// block (8 warps, one output row each).
pub const CONV2D_TC_TAPS_TH: u32 = 8;
pub const CONV2D_TC_TAPS_TW: u32 = 56;
/// Halo columns staged per block (TW + 8): four m-tiles of 16.
pub const CONV2D_TC_TAPS_HW: u32 = CONV2D_TC_TAPS_TW + 8;
/// Output channels the GEMM's N holds per filter column (N = 9 columns x 3 channels = 27 of 32).
pub const CONV2D_TC_TAPS_K: u32 = 3;
/// f16 elements of the fragment-ordered weight: 18 k16 steps (9 filter rows x 32 channels) x 32 lanes x
/// 4 n-tiles x 2 registers x 2 halves.
pub const CONV2D_TC_TAPS_W_ELEMS: u32 = 18 * 32 * 4 * 4;
/// f32 row pitch of the staged per-column partial sums Z (32 columns + 8 padding: conflict-free v2 stores).
pub const CONV2D_TC_TAPS_ZP: u32 = 40;
/// Bytes of the region holding first the input halo tile ((TH + 8) x HW pixels x 64 B), then Z
/// (TH x HW x ZP f32), whichever is larger.
pub const CONV2D_TC_TAPS_TILE_BYTES: u32 = {
    let halo = (CONV2D_TC_TAPS_TH + 8) * CONV2D_TC_TAPS_HW * CONV2D_TC_HALO_C * 2;
    let z = CONV2D_TC_TAPS_TH * CONV2D_TC_TAPS_HW * CONV2D_TC_TAPS_ZP * 4;
    if halo > z {
        halo
    } else {
        z
    }
};
/// Dynamic shared memory of `conv2d_tc_halo9_taps`: the tile region, then the weight.
pub const CONV2D_TC_TAPS_SMEM: u32 = CONV2D_TC_TAPS_TILE_BYTES + CONV2D_TC_TAPS_W_ELEMS * 2;
