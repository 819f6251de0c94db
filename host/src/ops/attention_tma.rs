//! `attention_tma` launcher: flash attention for head_dim 64 on Hopper (TMA-fed `wgmma`; f16 q, k, v and
//! output, f32 softmax and accumulation; the numerics of [`crate::ops::attention_tc`]). Same addressing as
//! `attention_tc`: q, k, v read in place from token-major [B, N, C] tensors (usually the fused QKV
//! projection), output head-interleaved [B, Nq, heads·64]. The tensors are read through 2-D tensor maps
//! kept in a [`TmaMapCache`].
//!
//! [`attention_qkv`] is what the fast StyleViT calls: `attention_tma` when the head dimension is 64, the
//! sequence has at least [`ATTN_TMA_MIN_TOKENS`] tokens and `STYLEFORGE_ATTENTION_TMA` is not `0`
//! ([`ATTENTION_TMA_ENV`]), `attention_tc` otherwise.
use gpu_kernels::launch::{
    AttentionTmaArgs, ATTN_TMA_BK, ATTN_TMA_BQ, ATTN_TMA_DH, ATTN_TMA_SMEM_BYTES, ATTN_TMA_THREADS,
};

use crate::error::{ensure, Result};
use crate::gpu::{DType, DeviceTensor, Gpu, TmaMapCache};
use crate::kernel_args;
use crate::ops::attention::{attention_dims, check_aligned_16, AttnDims, Heads};
use crate::ops::attention_tc::attention_tc;

const OP: &str = "attention_tma";

/// Environment variable: unless it is `0`, [`attention_qkv`] runs head_dim 64 on `attention_tma` (with
/// `0`, on `attention_tc`). Read once per process.
pub const ATTENTION_TMA_ENV: &str = "STYLEFORGE_ATTENTION_TMA";

/// Shortest sequence [`attention_qkv`] runs on `attention_tma`. Run 59 (H100, same run): StyleViT base p16
/// b8 (4096 tokens) 21.48 ms with it against 25.22 on `attention_tc` (attention 8.82 against 12.5 ms); at
/// 64 tokens (one 128-query block per head, half of it padding) base b1 0.594 against 0.582 ms.
pub const ATTN_TMA_MIN_TOKENS: usize = 512;

/// Whether [`ATTENTION_TMA_ENV`] leaves `attention_tma` on (anything but `0`; read once).
pub fn attention_tma_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::gpu::env_on(ATTENTION_TMA_ENV))
}

/// Whether `attention_tma` takes the pipelined consumer loop (`STYLEFORGE_ATTENTION_TMA_PIPE=0`: the serial
/// one). Read once.
fn pipe_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::gpu::env_on("STYLEFORGE_ATTENTION_TMA_PIPE"))
}

/// The map of a token-major [B, N, C] f16 tensor: dims (C, B·N), row stride 2C bytes, box 64 x 128.
fn map(maps: &mut TmaMapCache, t: &DeviceTensor) -> Result<u64> {
    let c = *t.shape.last().unwrap_or(&0) as u64;
    let rows = t.numel() as u64 / c.max(1);
    maps.tiled_f16(t.ptr(), &[c, rows], &[2 * c], &[ATTN_TMA_DH, ATTN_TMA_BK.max(ATTN_TMA_BQ)])
}

/// Multi-head scaled-dot-product attention with head_dim 64 (scale 1/8, softmax over keys), read in place:
/// q [B, Nq, Cq], k and v [B, Nk, Ckv] (one shape), o [B, Nq, heads·64], all f16, head h at columns
/// `col + 64h`. Column offsets and row lengths must be multiples of 8 (16-byte map strides and boxes).
/// Every violation is an error and nothing is launched.
pub fn attention_tma(
    gpu: &Gpu,
    q: Heads<'_>,
    k: Heads<'_>,
    v: Heads<'_>,
    heads: usize,
    o: &mut DeviceTensor,
    maps: &mut TmaMapCache,
) -> Result<()> {
    attention_tma_pipe(gpu, q, k, v, heads, o, maps, pipe_enabled())
}

/// [`attention_tma`] on the kernel with the pipelined consumer loop (`pipelined`, the default unless
/// `STYLEFORGE_ATTENTION_TMA_PIPE=0`) or on `attention_tma_serial` (same results, bit for bit; the
/// self-check runs both).
#[allow(clippy::too_many_arguments)]
pub fn attention_tma_pipe(
    gpu: &Gpu,
    q: Heads<'_>,
    k: Heads<'_>,
    v: Heads<'_>,
    heads: usize,
    o: &mut DeviceTensor,
    maps: &mut TmaMapCache,
    pipelined: bool,
) -> Result<()> {
    let AttnDims { b, nq, nk, cq, ckv, d, dh } = attention_dims(OP, DType::F16, q, k, v, heads, o)?;
    ensure(dh == ATTN_TMA_DH as usize, OP, || format!("head_dim {dh} is not {ATTN_TMA_DH}"))?;
    check_aligned_16(OP, q, k, v, cq, ckv)?;
    ensure(b * nq.max(nk) + ATTN_TMA_BQ as usize <= i32::MAX as usize, OP, || {
        format!("B = {b}, N = {} need 64-bit row coordinates", nq.max(nk))
    })?;
    let args = AttentionTmaArgs {
        qmap: map(maps, q.t)?,
        kmap: map(maps, k.t)?,
        vmap: map(maps, v.t)?,
        o: o.ptr(),
        nq: nq as u32,
        nk: nk as u32,
        ld_o: d as u32,
        q_col: q.col as u32,
        k_col: k.col as u32,
        v_col: v.col as u32,
        scale_log2: (std::f64::consts::LOG2_E / (dh as f64).sqrt()) as f32,
        _pad: 0,
    };
    let grid = (nq.div_ceil(ATTN_TMA_BQ as usize) as u32, heads as u32, b as u32);
    let kernel = if pipelined { "attention_tma" } else { "attention_tma_serial" };
    // SAFETY: both entries take one AttentionTmaArgs by value (the kernel crate's struct). The maps were
    // made (or found, for the same address, dims, strides and box: the same bytes) for the live tensors
    // q.t, k.t, v.t ([rows, C] f16 with row stride 2C, box 64 x 128); the kernel's boxes start at column
    // col + 64h (+ 64 ≤ C: attention_dims checked the column ranges) and rows b·n + i with i < n rounded
    // up to a tile, and the copy engine zero-fills anything past the tensor, never reading outside it. It
    // writes o[(bb·nq + i)·d + 64h + [0, 64)] for i < nq only, 4 bytes at a time (d = heads·64 even, o
    // 256-byte aligned); o is an exclusive borrow distinct from the inputs. Grid (ceil(nq/128), heads, b)
    // within the limits (attention_dims), block ATTN_TMA_THREADS (two consumer warpgroups + the producer
    // warpgroup the kernel's roles and its setmaxnreg balance assume), ATTN_TMA_SMEM_BYTES ≤ 227 KB of dynamic shared memory (opted in by
    // `launch`).
    unsafe { gpu.launch(kernel, grid, (ATTN_TMA_THREADS, 1, 1), ATTN_TMA_SMEM_BYTES, kernel_args!(args)) }
}

/// Self-attention straight from the fused QKV projection (qkv [B, N, 3D] f16, q, k, v at columns 0, D,
/// 2D; o [B, N, D] f16): `attention_tma` for head_dim 64 and N ≥ [`ATTN_TMA_MIN_TOKENS`] unless
/// `STYLEFORGE_ATTENTION_TMA=0`, `attention_tc` otherwise.
pub fn attention_qkv(gpu: &Gpu, qkv: &DeviceTensor, heads: usize, o: &mut DeviceTensor, maps: &mut TmaMapCache) -> Result<()> {
    let d = o.shape.last().copied().unwrap_or(0);
    ensure(qkv.shape.len() == 3 && qkv.shape[2] == 3 * d, OP, || format!("qkv {:?} must be [B, N, 3·{d}]", qkv.shape))?;
    let (q, k, v) = (Heads { t: qkv, col: 0 }, Heads { t: qkv, col: d }, Heads { t: qkv, col: 2 * d });
    let long = qkv.shape[1] >= ATTN_TMA_MIN_TOKENS;
    if long && heads > 0 && d == heads * ATTN_TMA_DH as usize && attention_tma_enabled() {
        attention_tma(gpu, q, k, v, heads, o, maps)
    } else {
        attention_tc(gpu, q, k, v, heads, o)
    }
}
