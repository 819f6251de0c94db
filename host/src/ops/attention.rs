//! `attention` launcher: flash-style multi-head attention.
use gpu_kernels::launch::{attn_smem_bytes, ATTN_BQ, ATTN_THREADS};

use crate::error::{ensure, Result};
use crate::gpu::{DType, DeviceTensor, Gpu};
use crate::kernel_args;

const OP: &str = "attention";

/// Head dimensions the kernel is compiled for.
pub const HEAD_DIMS: [usize; 3] = [32, 64, 128];

/// A token-major operand: `t` is [B, N, C] and head h's element d is at column `col + h·head_dim + d`.
#[derive(Clone, Copy)]
pub struct Heads<'a> {
    pub t: &'a DeviceTensor,
    pub col: usize,
}

/// Sizes of an attention call, checked by [`attention_dims`].
pub(crate) struct AttnDims {
    pub b: usize,
    pub nq: usize,
    pub nk: usize,
    pub cq: usize,
    pub ckv: usize,
    pub d: usize,
    pub dh: usize,
}

/// The shape checks shared by [`attention`] and `attention_tc` (named `op` in errors): every tensor of
/// `dtype`, q [B, Nq, Cq], k = v [B, Nk, Ckv], o [B, Nq, heads·head_dim] with head_dim in [`HEAD_DIMS`],
/// non-empty, column ranges inside the rows, below 2^31 elements and within the grid limits.
pub(crate) fn attention_dims(
    op: &'static str,
    dtype: DType,
    q: Heads<'_>,
    k: Heads<'_>,
    v: Heads<'_>,
    heads: usize,
    o: &DeviceTensor,
) -> Result<AttnDims> {
    let same = [q.t, k.t, v.t, o].iter().all(|t| t.dtype == dtype);
    ensure(same, op, || format!("{dtype:?} tensors only"))?;
    ensure(
        q.t.shape.len() == 3 && k.t.shape.len() == 3 && o.shape.len() == 3,
        op,
        || {
            format!(
                "q {:?}, k {:?} and o {:?} must be [B, N, C]",
                q.t.shape, k.t.shape, o.shape
            )
        },
    )?;
    ensure(k.t.shape == v.t.shape, op, || {
        format!(
            "k {:?} and v {:?} must have one shape",
            k.t.shape, v.t.shape
        )
    })?;
    let (b, nq, cq) = (q.t.shape[0], q.t.shape[1], q.t.shape[2]);
    let (nk, ckv) = (k.t.shape[1], k.t.shape[2]);
    let d = o.shape[2];
    ensure(heads > 0 && d.is_multiple_of(heads), op, || {
        format!("o's last dimension {d} is not a multiple of {heads} heads")
    })?;
    let dh = d / heads;
    ensure(HEAD_DIMS.contains(&dh), op, || {
        format!("head_dim {dh} is not one of {HEAD_DIMS:?}")
    })?;
    ensure(
        k.t.shape[0] == b && o.shape[0] == b && o.shape[1] == nq,
        op,
        || {
            format!(
                "batch/length mismatch: q {:?}, k {:?}, o {:?}",
                q.t.shape, k.t.shape, o.shape
            )
        },
    )?;
    ensure(b > 0 && nq > 0 && nk > 0, op, || {
        format!("empty input: q {:?}, k {:?}", q.t.shape, k.t.shape)
    })?;
    ensure(q.col + d <= cq, op, || {
        format!("q columns {}..{} exceed {cq}", q.col, q.col + d)
    })?;
    ensure(k.col + d <= ckv && v.col + d <= ckv, op, || {
        format!(
            "k columns {}.. / v columns {}.. (+{d}) exceed {ckv}",
            k.col, v.col
        )
    })?;
    let fits = |v: usize| v <= i32::MAX as usize;
    ensure(
        fits(b * nq * cq) && fits(b * nk * ckv) && fits(b * nq * d),
        op,
        || "tensors exceed 2^31 elements".into(),
    )?;
    ensure(b <= 65_535 && heads <= 65_535, op, || {
        format!("batch {b} or heads {heads} exceed the grid limit 65535")
    })?;
    Ok(AttnDims {
        b,
        nq,
        nk,
        cq,
        ckv,
        d,
        dh,
    })
}

/// The tensor-core kernels' rule (named `op` in errors): q, k, v column offsets and the row lengths `cq`,
/// `ckv` are multiples of 8 elements, so every row segment they copy starts 16-byte aligned.
pub(crate) fn check_aligned_16(op: &'static str, q: Heads<'_>, k: Heads<'_>, v: Heads<'_>, cq: usize, ckv: usize) -> Result<()> {
    let aligned = [q.col, k.col, v.col, cq, ckv].iter().all(|c| c.is_multiple_of(8));
    ensure(aligned, op, || {
        format!("column offsets ({}, {}, {}) and row lengths ({cq}, {ckv}) must be multiples of 8", q.col, k.col, v.col)
    })
}

/// Multi-head scaled-dot-product attention (scale 1/√head_dim, softmax over keys), read in place:
/// q [B, Nq, Cq], k and v [B, Nk, Ckv] (one shape; usually one tensor), o [B, Nq, heads·head_dim] with
/// head h at columns h·head_dim. head_dim = o's last dimension / heads, one of [`HEAD_DIMS`].
pub fn attention(
    gpu: &Gpu,
    q: Heads<'_>,
    k: Heads<'_>,
    v: Heads<'_>,
    heads: usize,
    o: &mut DeviceTensor,
) -> Result<()> {
    let AttnDims {
        b,
        nq,
        nk,
        cq,
        ckv,
        d,
        dh,
    } = attention_dims(OP, DType::F32, q, k, v, heads, o)?;
    let kernel = match dh {
        32 => "attention_d32",
        64 => "attention_d64",
        _ => "attention_d128",
    };
    let scale_log2 = (std::f64::consts::LOG2_E / (dh as f64).sqrt()) as f32;
    let grid = (nq.div_ceil(ATTN_BQ as usize) as u32, heads as u32, b as u32);
    let (q_ptr, k_ptr, v_ptr) = (
        q.t.ptr() + 4 * q.col as u64,
        k.t.ptr() + 4 * k.col as u64,
        v.t.ptr() + 4 * v.col as u64,
    );
    // SAFETY: attention_dXX(q, k, v, o: f32 pointers, nq, nk, ld_q, ld_kv, ld_o: u32, scale_log2: f32), grid
    // (ceil(nq/64), heads, b), block ATTN_THREADS, attn_smem_bytes(dh) of shared memory. Block (x, h, bb)
    // reads q[(bb*nq + i)*cq + q.col + h*dh + [0, dh)] for i < nq only, k/v likewise for keys < nk with row
    // stride ckv, and writes o[(bb*nq + i)*d + h*dh + [0, dh)] for i < nq. The column ranges were checked to
    // lie inside each row (col + heads*dh <= C), so every access stays inside its tensor.
    unsafe {
        gpu.launch(
            kernel,
            grid,
            (ATTN_THREADS, 1, 1),
            attn_smem_bytes(dh as u32),
            kernel_args!(
                q_ptr,
                k_ptr,
                v_ptr,
                o.ptr(),
                nq as u32,
                nk as u32,
                cq as u32,
                ckv as u32,
                d as u32,
                scale_log2
            ),
        )
    }
}

/// Self-attention straight from the fused QKV projection: qkv [B, N, 3D] (q, k, v at columns 0, D, 2D,
/// heads within each), o [B, N, D].
pub fn attention_qkv(
    gpu: &Gpu,
    qkv: &DeviceTensor,
    heads: usize,
    o: &mut DeviceTensor,
) -> Result<()> {
    let d = o.shape.last().copied().unwrap_or(0);
    ensure(qkv.shape.len() == 3 && qkv.shape[2] == 3 * d, OP, || {
        format!("qkv {:?} must be [B, N, 3·{d}]", qkv.shape)
    })?;
    attention(
        gpu,
        Heads { t: qkv, col: 0 },
        Heads { t: qkv, col: d },
        Heads { t: qkv, col: 2 * d },
        heads,
        o,
    )
}
