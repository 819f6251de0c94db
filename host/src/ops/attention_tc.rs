//! `attention_tc` launcher: flash attention on tensor cores (f16 q, k, v and output; f32 softmax and
//! accumulation). Same addressing as the fp32 [`crate::ops::attention`]: q, k, v are read in place from
//! token-major [B, N, C] tensors (usually the fused QKV projection), the output is head-interleaved
//! [B, Nq, heads·head_dim].
use std::sync::OnceLock;

use gpu_kernels::launch::{
    attn_tc_kernel, attn_tc_kernel_m1, attn_tc_m_tiles, attn_tc_queries, attn_tc_smem, ATTN_TC_WARPS,
};

use crate::error::{ensure, Error, Result};
use crate::gpu::{DType, DeviceTensor, Gpu};
use crate::kernel_args;
use crate::ops::attention::{attention_dims, check_aligned_16, AttnDims};
pub use crate::ops::attention::{Heads, HEAD_DIMS};

const OP: &str = "attention_tc";

/// Multi-head scaled-dot-product attention (scale 1/√head_dim, softmax over keys), read in place:
/// q [B, Nq, Cq], k and v [B, Nk, Ckv] (one shape; usually one tensor), o [B, Nq, heads·head_dim], all
/// f16, head h at columns `col + h·head_dim`. head_dim = o's last dimension / heads, one of
/// [`HEAD_DIMS`]. The kernel copies 16-byte chunks, so every column offset and row length (Cq, Ckv) must
/// be a multiple of 8. `allow_m1`: whether the one-m-tile kernels may run (see [`attn_tc_choice`]); the
/// nets pass [`attention_tc_m1_enabled`], the self-check both values.
pub fn attention_tc(
    gpu: &Gpu,
    q: Heads<'_>,
    k: Heads<'_>,
    v: Heads<'_>,
    heads: usize,
    o: &mut DeviceTensor,
    allow_m1: bool,
) -> Result<()> {
    let AttnDims {
        b,
        nq,
        nk,
        cq,
        ckv,
        d,
        dh,
    } = attention_dims(OP, DType::F16, q, k, v, heads, o)?;
    let Some((kernel, m_tiles)) = attn_tc_choice(dh, nq, heads, b, gpu.sm_count as usize, allow_m1) else {
        return Err(Error::Shape {
            op: OP,
            msg: format!("head_dim {dh} is not one of {HEAD_DIMS:?}"),
        });
    };
    check_aligned_16(OP, q, k, v, cq, ckv)?;
    let bq = attn_tc_queries(m_tiles) as usize;
    let scale_log2 = (std::f64::consts::LOG2_E / (dh as f64).sqrt()) as f32;
    let grid = (nq.div_ceil(bq) as u32, heads as u32, b as u32);
    let (q_ptr, k_ptr, v_ptr) = (
        q.t.ptr() + 2 * q.col as u64,
        k.t.ptr() + 2 * k.col as u64,
        v.t.ptr() + 2 * v.col as u64,
    );
    let (nq32, nk32, cq32, ckv32, d32) = (nq as u32, nk as u32, cq as u32, ckv as u32, d as u32);
    // SAFETY: attention_tc_dXX(q, k, v: *const u16, o: *mut u16, nq, nk, ld_q, ld_kv, ld_o: u32,
    // scale_log2: f32) matches the argument list, and `kernel` is the variant compiled for this head_dim
    // and m_tiles (BQ = 16·ATTN_TC_WARPS·m_tiles). Grid (ceil(nq/BQ), heads, b), block 32·ATTN_TC_WARPS,
    // attn_tc_smem(dh, m_tiles) of shared memory (the layout the kernel carves). Block (x, h, bb) reads 16-byte chunks of q[(bb*nq + i)*cq + q.col +
    // h*dh + [0, dh)] for i < nq only (rows past nq copy zero bytes from row 0), k/v likewise for keys
    // < nk with row stride ckv, and writes o[(bb*nq + i)*d + h*dh + [0, dh)] for i < nq, 4 bytes at a
    // time. The column ranges lie inside each row (col + heads*dh <= C checked); offsets and strides are
    // multiples of 8 elements and allocations 256-byte aligned, so every chunk is 16-byte aligned.
    unsafe {
        gpu.launch(
            kernel,
            grid,
            (32 * ATTN_TC_WARPS, 1, 1),
            attn_tc_smem(dh as u32, m_tiles),
            kernel_args!(
                q_ptr,
                k_ptr,
                v_ptr,
                o.ptr(),
                nq32,
                nk32,
                cq32,
                ckv32,
                d32,
                scale_log2
            ),
        )
    }
}

/// Whether `attention_tc` may take its one-m-tile kernels (`STYLEFORGE_ATTENTION_TC_M1=0`: never). Read once.
pub fn attention_tc_m1_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| crate::gpu::env_on("STYLEFORGE_ATTENTION_TC_M1"))
}

/// The kernel and its m-tiles per warp for head_dim `dh`, `nq` queries, `heads` heads and `b` sequences on
/// a GPU of `sms` SMs: one m-tile per warp (64 queries per block) when that grid fills the GPU at most once
/// and `m1` allows it, else the head dimension's default (`attn_tc_m_tiles`). At 64 tokens the default's
/// 128-query block leaves two of its four warps without rows. `None` for an unsupported head_dim.
pub fn attn_tc_choice(
    dh: usize,
    nq: usize,
    heads: usize,
    b: usize,
    sms: usize,
    m1: bool,
) -> Option<(&'static str, u32)> {
    let dh32 = u32::try_from(dh).ok()?;
    let default = attn_tc_kernel(dh32)?;
    let q64 = attn_tc_queries(1) as usize;
    match attn_tc_kernel_m1(dh32) {
        Some(k) if m1 && nq.div_ceil(q64) * heads * b <= sms => Some((k, 1)),
        _ => Some((default, attn_tc_m_tiles(dh32))),
    }
}

/// Self-attention straight from the fused QKV projection: qkv [B, N, 3D] f16 (q, k, v at columns 0, D,
/// 2D, heads within each), o [B, N, D] f16; the one-m-tile kernels as [`attention_tc_m1_enabled`] says.
pub fn attention_tc_qkv(
    gpu: &Gpu,
    qkv: &DeviceTensor,
    heads: usize,
    o: &mut DeviceTensor,
) -> Result<()> {
    let d = o.shape.last().copied().unwrap_or(0);
    ensure(qkv.shape.len() == 3 && qkv.shape[2] == 3 * d, OP, || {
        format!("qkv {:?} must be [B, N, 3·{d}]", qkv.shape)
    })?;
    attention_tc(
        gpu,
        Heads { t: qkv, col: 0 },
        Heads { t: qkv, col: d },
        Heads { t: qkv, col: 2 * d },
        heads,
        o,
        attention_tc_m1_enabled(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpu_kernels::launch::{attn_tc_bq, attn_tc_smem_bytes};

    #[test]
    fn kernels_and_shared_memory() {
        for dh in HEAD_DIMS {
            let dh = dh as u32;
            assert!(attn_tc_kernel(dh).is_some());
            // Fits the H100's 227 KB opt-in limit with room for two blocks per SM.
            assert!(attn_tc_smem_bytes(dh) <= 113 * 1024, "dh {dh}");
            assert_eq!(attn_tc_bq(dh), 16 * ATTN_TC_WARPS * attn_tc_m_tiles(dh));
        }
        assert!(attn_tc_kernel(48).is_none());
    }

    #[test]
    fn one_m_tile_for_grids_under_one_wave() {
        // StyleViT base at 64 tokens, content and style batched: 2 x 8 blocks of 64 queries.
        assert_eq!(attn_tc_choice(64, 64, 8, 2, 132, true), Some(("attention_tc_d64_m1", 1)));
        assert_eq!(attn_tc_choice(64, 64, 8, 2, 132, false), Some(("attention_tc_d64", 2)));
        assert_eq!(attn_tc_choice(32, 100, 2, 2, 132, true), Some(("attention_tc_d32_m1", 1)));
        // 132 blocks of 64 queries still fit one wave; 133 do not.
        assert_eq!(attn_tc_choice(64, 64 * 33, 4, 1, 132, true), Some(("attention_tc_d64_m1", 1)));
        assert_eq!(attn_tc_choice(64, 64 * 33 + 1, 4, 1, 132, true), Some(("attention_tc_d64", 2)));
        // head_dim 128 has one m-tile already; 48 has no kernel.
        assert_eq!(attn_tc_choice(128, 64, 1, 1, 132, true), Some(("attention_tc_d128", 1)));
        assert_eq!(attn_tc_choice(48, 64, 1, 1, 132, true), None);
        for dh in [32u32, 64] {
            assert!(attn_tc_smem(dh, 1) < attn_tc_smem_bytes(dh));
        }
    }
}
