//! `attention_tma` launcher: flash attention for head_dim 64 on Hopper (TMA-fed `wgmma`; f16 q, k, v and
//! output, f32 softmax and accumulation; the numerics of [`crate::ops::attention_tc`]). Same addressing as
//! `attention_tc`: q, k, v read in place from token-major [B, N, C] tensors (usually the fused QKV
//! projection), output head-interleaved [B, Nq, heads·64]. The tensors are read through 2-D tensor maps
//! kept in a [`TmaMapCache`].
//!
//! [`attention_qkv`] is what the fast StyleViT calls: `attention_tma` when the head dimension is 64, the
//! sequence has at least [`ATTN_TMA_MIN_TOKENS`] tokens and `STYLEFORGE_ATTENTION_TMA` is not `0`
//! ([`ATTENTION_TMA_ENV`]), `attention_tc` otherwise. The `attention_tma` variant is
//! [`AttnTmaKernel::chosen`]: `attention_tma_wg3` (three consumer warpgroups) unless
//! `STYLEFORGE_ATTENTION_TMA_WG3=0`.
use gpu_kernels::launch::{AttentionTmaArgs, AttnTmaLayout, ATTN_TMA, ATTN_TMA_BK, ATTN_TMA_DH, ATTN_TMA_WG3};

use crate::error::{ensure, Result};
use crate::gpu::{DType, DeviceTensor, Gpu, TmaMapCache};
use crate::kernel_args;
use crate::ops::attention::{attention_dims, check_aligned_16, AttnDims, Heads};
use crate::ops::attention_tc::{attention_tc, attention_tc_m1_enabled};

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

/// The `attention_tma` kernel variants (one consumer loop each; all give the same bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnTmaKernel {
    /// `attention_tma`: two consumer warpgroups, the pipelined loop.
    Pipelined,
    /// `attention_tma_serial`: two consumer warpgroups, each tile's P·V waited for before the next S.
    Serial,
    /// `attention_tma_wg3`: three consumer warpgroups (192 queries per block), the pipelined loop.
    Wg3,
}

impl AttnTmaKernel {
    /// Every variant (the self-check runs each).
    pub const ALL: [AttnTmaKernel; 3] = [AttnTmaKernel::Wg3, AttnTmaKernel::Pipelined, AttnTmaKernel::Serial];

    /// The variant the nets run ([`attention_qkv`]): `attention_tma_wg3` unless `STYLEFORGE_ATTENTION_TMA_WG3=0`, then
    /// `attention_tma` unless `STYLEFORGE_ATTENTION_TMA_PIPE=0` (then `attention_tma_serial`). Read once.
    pub fn chosen() -> Self {
        static K: std::sync::OnceLock<AttnTmaKernel> = std::sync::OnceLock::new();
        *K.get_or_init(|| {
            if crate::gpu::env_on("STYLEFORGE_ATTENTION_TMA_WG3") {
                AttnTmaKernel::Wg3
            } else if crate::gpu::env_on("STYLEFORGE_ATTENTION_TMA_PIPE") {
                AttnTmaKernel::Pipelined
            } else {
                AttnTmaKernel::Serial
            }
        })
    }

    /// The PTX entry.
    pub fn entry(self) -> &'static str {
        match self {
            AttnTmaKernel::Pipelined => "attention_tma",
            AttnTmaKernel::Serial => "attention_tma_serial",
            AttnTmaKernel::Wg3 => "attention_tma_wg3",
        }
    }

    fn layout(self) -> AttnTmaLayout {
        match self {
            AttnTmaKernel::Pipelined | AttnTmaKernel::Serial => ATTN_TMA,
            AttnTmaKernel::Wg3 => ATTN_TMA_WG3,
        }
    }
}

/// The map of a token-major [B, N, C] f16 tensor: dims (C, B·N), row stride 2C bytes, box 64 x `box_rows`.
fn map(maps: &mut TmaMapCache, t: &DeviceTensor, box_rows: u32) -> Result<u64> {
    let c = *t.shape.last().unwrap_or(&0) as u64;
    let rows = t.numel() as u64 / c.max(1);
    maps.tiled_f16(t.ptr(), &[c, rows], &[2 * c], &[ATTN_TMA_DH, box_rows])
}

/// Multi-head scaled-dot-product attention with head_dim 64 (scale 1/8, softmax over keys), read in place:
/// q [B, Nq, Cq], k and v [B, Nk, Ckv] (one shape), o [B, Nq, heads·64], all f16, head h at columns
/// `col + 64h`. Column offsets and row lengths must be multiples of 8 (16-byte map strides and boxes).
/// Every violation is an error and nothing is launched. `kernel`: the variant ([`AttnTmaKernel::chosen`]
/// for the nets; all give the same bits, and the self-check runs each).
#[allow(clippy::too_many_arguments)]
pub fn attention_tma(
    gpu: &Gpu,
    q: Heads<'_>,
    k: Heads<'_>,
    v: Heads<'_>,
    heads: usize,
    o: &mut DeviceTensor,
    maps: &mut TmaMapCache,
    kernel: AttnTmaKernel,
) -> Result<()> {
    let l = kernel.layout();
    let AttnDims { b, nq, nk, cq, ckv, d, dh } = attention_dims(OP, DType::F16, q, k, v, heads, o)?;
    ensure(dh == ATTN_TMA_DH as usize, OP, || format!("head_dim {dh} is not {ATTN_TMA_DH}"))?;
    check_aligned_16(OP, q, k, v, cq, ckv)?;
    ensure(b * nq.max(nk) + l.bq as usize <= i32::MAX as usize, OP, || {
        format!("B = {b}, N = {} need 64-bit row coordinates", nq.max(nk))
    })?;
    let args = AttentionTmaArgs {
        qmap: map(maps, q.t, l.bq)?,
        kmap: map(maps, k.t, ATTN_TMA_BK)?,
        vmap: map(maps, v.t, ATTN_TMA_BK)?,
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
    let grid = (nq.div_ceil(l.bq as usize) as u32, heads as u32, b as u32);
    // SAFETY: the entries take one AttentionTmaArgs by value (the kernel crate's struct). The maps were
    // made (or found, for the same address, dims, strides and box: the same bytes) for the live tensors
    // q.t, k.t, v.t ([rows, C] f16 with row stride 2C, box 64 x bq for Q and 64 x 128 for K and V, the boxes
    // the variant's code copies); the kernel's boxes start at column
    // col + 64h (+ 64 ≤ C: attention_dims checked the column ranges) and rows b·n + i with i < n rounded
    // up to a tile, and the copy engine zero-fills anything past the tensor, never reading outside it. It
    // writes o[(bb·nq + i)·d + 64h + [0, 64)] for i < nq only, 4 bytes at a time (d = heads·64 even, o
    // 256-byte aligned); o is an exclusive borrow distinct from the inputs. Grid (ceil(nq/bq), heads, b)
    // within the limits (attention_dims), block l.threads (the variant's consumer warpgroups + the producer
    // warpgroup its roles and its setmaxnreg balance assume), l.smem ≤ 227 KB of dynamic shared memory
    // (launch.rs asserts it; opted in by `launch`).
    unsafe { gpu.launch(kernel.entry(), grid, (l.threads, 1, 1), l.smem, kernel_args!(args)) }
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
        attention_tma(gpu, q, k, v, heads, o, maps, AttnTmaKernel::chosen())
    } else {
        attention_tc(gpu, q, k, v, heads, o, attention_tc_m1_enabled())
    }
}
