//! Launch constants shared by the kernels and the host launchers (compiled for both targets).

/// Threads per block of the 1-D elementwise kernels (grid-stride loops).
pub const ELEMENTWISE_BLOCK: u32 = 256;
/// Threads per block of the per-(sample, channel) reduction kernels (instance norm statistics).
pub const REDUCE_BLOCK: u32 = 256;

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

/// `adain`: channels per block (threadIdx.x) and token rows per block (threadIdx.y).
pub const ADAIN_COLS: u32 = 32;
pub const ADAIN_ROWS: u32 = 8;
/// AdaIN epsilon (added to the unbiased variance).
pub const ADAIN_EPS: f32 = 1e-5;
