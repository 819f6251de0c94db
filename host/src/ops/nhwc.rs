//! Launchers of the NHWC glue kernels (gpu-kernels/src/kernels/nhwc.rs) used by the bf16 TransformerNet:
//! input packing (NCHW f32 -> NHWC bf16, 16 channels), InstanceNorm on NHWC f32 (statistics + apply,
//! writing f32 and/or bf16) and output unpacking (NHWC f32, first 3 channels + bias -> NCHW f32).
use gpu_kernels::launch::{instance_norm_splits, ELEMENTWISE_BLOCK, INSTANCE_NORM_EPS};

use crate::error::{ensure, Result};
use crate::gpu::{blocks_for, DType, DeviceTensor, Gpu, Layout};
use crate::kernel_args;

const OP: &str = "nhwc";
/// Channels of the packed input (conv2d_tc needs a multiple of 16).
pub const PACKED_INPUT_CHANNELS: usize = 16;
/// Threads of an `nhwc_in_stats` block: 32 channels x 8 pixel rows (the kernel assumes exactly this).
const STATS_THREADS: u32 = 256;

fn fits32(v: usize) -> bool {
    v < (1 << 31)
}

/// NCHW f32 `x` [N, 3, H, W] -> NHWC bf16 `y` [N, H, W, 16] (channels 3..15 zero, round to nearest even).
pub fn nhwc_pack_input(gpu: &Gpu, x: &DeviceTensor, y: &mut DeviceTensor) -> Result<()> {
    ensure(x.dtype == DType::F32 && x.layout != Layout::Nhwc && x.shape.len() == 4 && x.shape[1] == 3, OP, || {
        format!("pack input: x must be NCHW f32 [N, 3, H, W], got {:?} {:?} {:?}", x.layout, x.dtype, x.shape)
    })?;
    let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3]);
    let want = [n, h, w, PACKED_INPUT_CHANNELS];
    ensure(y.dtype == DType::BF16 && y.layout == Layout::Nhwc && y.shape == want, OP, || {
        format!("pack input: y must be NHWC bf16 {want:?}, got {:?} {:?} {:?}", y.layout, y.dtype, y.shape)
    })?;
    let n_pix = n * h * w;
    ensure(n_pix > 0, OP, || format!("pack input: empty input {:?}", x.shape))?;
    let hw = h * w;
    // SAFETY: nhwc_pack_input(x: *const f32, y: *mut u32, n_pix: usize, hw: usize): thread `pix < n_pix`
    // reads x[(n*3 + c)*hw + i] (c < 3, n = pix / hw < N, i < hw: inside the N*3*H*W floats of x) and writes
    // the 8 words y[pix*8 ..+8] = 16 bf16 of pixel pix, inside y's N*H*W*16 bf16 (shapes checked above;
    // device allocations are 256-byte aligned, so the 32-bit stores are aligned).
    unsafe {
        gpu.launch("nhwc_pack_input", (blocks_for(n_pix, ELEMENTWISE_BLOCK), 1, 1), (ELEMENTWISE_BLOCK, 1, 1), 0,
            kernel_args!(x.ptr(), y.ptr(), n_pix, hw))
    }
}

/// f32 elements of InstanceNorm scratch for an NHWC tensor `[N, P, Q, C]`: `N*C*splits*2` partials
/// followed by `N*C*2` (mean, rstd) at [`nhwc_in_stats_offset`].
pub fn nhwc_in_stats_len(shape: &[usize]) -> usize {
    match shape {
        [n, _, _, c] => nhwc_in_stats_offset(shape) + n * c * 2,
        _ => 0,
    }
}

/// Element offset of the final (mean, rstd) pairs (index `(n*C + c)*2`) in the scratch of
/// [`nhwc_in_stats`].
pub fn nhwc_in_stats_offset(shape: &[usize]) -> usize {
    match shape {
        [n, p, q, c] => n * c * instance_norm_splits(p * q).0 * 2,
        _ => 0,
    }
}

/// Per (sample, channel) mean and 1/sqrt(biased var + 1e-5) of NHWC f32 `x` [N, P, Q, C] (C a multiple
/// of 32) into `stats` (at least [`nhwc_in_stats_len`] floats; result at [`nhwc_in_stats_offset`]).
pub fn nhwc_in_stats(gpu: &Gpu, x: &DeviceTensor, stats: &mut DeviceTensor) -> Result<()> {
    ensure(x.dtype == DType::F32 && x.layout == Layout::Nhwc && x.shape.len() == 4, OP, || {
        format!("in stats: x must be NHWC f32 [N, P, Q, C], got {:?} {:?} {:?}", x.layout, x.dtype, x.shape)
    })?;
    ensure(stats.dtype == DType::F32, OP, || "in stats: stats scratch must be f32".into())?;
    let (n, p, q, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    ensure(n > 0 && p * q > 0 && c > 0 && c % 32 == 0, OP, || format!("in stats: x {:?} must be non-empty with C a multiple of 32", x.shape))?;
    ensure(n <= 65_535 && n * c <= 65_535 * 128, OP, || format!("in stats: x {:?} exceeds the grid", x.shape))?;
    let need = nhwc_in_stats_len(&x.shape);
    ensure(stats.numel() >= need, OP, || format!("in stats: scratch has {} elements, {need} needed", stats.numel()))?;
    let pq = p * q;
    let (splits, chunk) = instance_norm_splits(pq);
    let part = stats.ptr();
    let fin = part + (nhwc_in_stats_offset(&x.shape) * 4) as u64;
    let (c32, splits32, planes) = (c as u32, splits as u32, n * c);
    // SAFETY: nhwc_in_stats(x: *const f32, part: *mut f32, pq: usize, c: u32, chunk: usize, splits: u32):
    // block (s, g, n) with s < splits, g < C/32, n < N reads x[(n*pq + pix)*C + 32g + lane] for pixels
    // pix in chunk s (< pq): inside x's N*P*Q*C floats; it writes part[((n*C + ch)*splits + s)*2 ..+2],
    // inside the N*C*splits*2 partials of the checked scratch. Block = 256 threads (32 channels x 8 rows,
    // as the kernel assumes) with 2*256 floats of dynamic shared memory.
    unsafe {
        gpu.launch("nhwc_in_stats", (splits32, c32 / 32, n as u32), (STATS_THREADS, 1, 1), 2 * STATS_THREADS * 4,
            kernel_args!(x.ptr(), part, pq, c32, chunk, splits32))?;
    }
    // The partials are laid out per plane n*C + c exactly as instance_norm_partial's, so the same
    // finalize kernel combines them (Chan's formula).
    // SAFETY: instance_norm_finalize(part: *const f32, stats: *mut f32, planes: u32, hw: usize,
    // chunk: usize, splits: u32, eps: f32): thread `plane < N*C` reads part[plane*splits*2 ..+splits*2] and
    // writes fin[plane*2 ..+2]; both regions lie inside the checked scratch (fin = offset N*C*splits*2).
    unsafe {
        gpu.launch("instance_norm_finalize", (blocks_for(planes, 128), 1, 1), (128, 1, 1), 0,
            kernel_args!(part, fin, planes as u32, pq, chunk, splits32, INSTANCE_NORM_EPS))
    }
}

/// InstanceNorm of NHWC f32 `x` [N, P, Q, C] (C a multiple of 32): v = γ(x − mean)·rstd + β, then ReLU
/// when `relu`, then + `residual` (NHWC f32, x's shape) when given. Writes v back into `x` (f32) when
/// `keep_f32`, and always as bf16 into `y16` (NHWC, x's shape). `stats`: scratch of at least
/// [`nhwc_in_stats_len`] floats.
#[allow(clippy::too_many_arguments)]
pub fn nhwc_instance_norm(
    gpu: &Gpu,
    x: &mut DeviceTensor,
    gamma: &DeviceTensor,
    beta: &DeviceTensor,
    relu: bool,
    residual: Option<&DeviceTensor>,
    keep_f32: bool,
    y16: &mut DeviceTensor,
    stats: &mut DeviceTensor,
) -> Result<()> {
    // Everything is checked before the first launch (nhwc_in_stats checks x and the scratch).
    ensure(x.shape.len() == 4, OP, || format!("in apply: x must be [N, P, Q, C], got {:?}", x.shape))?;
    let c = x.shape[3];
    ensure(gamma.dtype == DType::F32 && beta.dtype == DType::F32 && gamma.shape == [c] && beta.shape == [c], OP, || {
        format!("in apply: gamma {:?} and beta {:?} must be f32 [{c}]", gamma.shape, beta.shape)
    })?;
    if let Some(r) = residual {
        ensure(r.dtype == DType::F32 && r.layout == Layout::Nhwc && r.shape == x.shape, OP, || {
            format!("in apply: residual {:?} {:?} must be NHWC f32 {:?}", r.dtype, r.shape, x.shape)
        })?;
    }
    ensure(y16.dtype == DType::BF16 && y16.layout == Layout::Nhwc && y16.shape == x.shape, OP, || {
        format!("in apply: y16 must be NHWC bf16 {:?}, got {:?} {:?} {:?}", x.shape, y16.layout, y16.dtype, y16.shape)
    })?;
    let total = x.numel();
    ensure(fits32(total), OP, || format!("in apply: x {:?} too large", x.shape))?;
    nhwc_in_stats(gpu, x, stats)?;
    let pqc = x.shape[1] * x.shape[2] * c;
    let fin = stats.ptr() + (nhwc_in_stats_offset(&x.shape) * 4) as u64;
    let res_ptr: u64 = residual.map_or(0, |r| r.ptr());
    let y32: u64 = if keep_f32 { x.ptr() } else { 0 };
    let blocks = blocks_for(total, ELEMENTWISE_BLOCK).min(8192);
    // SAFETY: nhwc_in_apply(x, y32: *mut f32, y16: *mut u16, residual, gamma, beta, stats: pointers;
    // total: usize, c: u32, pqc: usize, relu: u32): index i < total = N*P*Q*C reads x[i], residual[i]
    // (when non-null; x's shape, checked), gamma/beta[i % C] (length C, checked) and
    // stats[fin + ((i / pqc)*C + i % C)*2 ..+2] (inside the finalized N*C*2 floats written by
    // nhwc_in_stats above), and writes y32[i] (= x itself or null: same index, same thread) and y16[i]
    // (x's shape, checked). total < 2^31 (checked) and blocks ≤ 8192, so the kernel's 32-bit index
    // arithmetic (i + grid stride < 2^32) cannot overflow.
    unsafe {
        gpu.launch("nhwc_in_apply", (blocks, 1, 1), (ELEMENTWISE_BLOCK, 1, 1), 0,
            kernel_args!(x.ptr(), y32, y16.ptr(), res_ptr, gamma.ptr(), beta.ptr(), fin, total, c as u32, pqc, relu as u32))
    }
}

/// NHWC f32 `x` [N, P, Q, Cx] (Cx ≥ 3) -> NCHW f32 `y` [N, 3, P, Q]: channels 0..3 plus `bias` [3].
pub fn nhwc_unpack_output(gpu: &Gpu, x: &DeviceTensor, bias: &DeviceTensor, y: &mut DeviceTensor) -> Result<()> {
    ensure(x.dtype == DType::F32 && x.layout == Layout::Nhwc && x.shape.len() == 4 && x.shape[3] >= 3, OP, || {
        format!("unpack output: x must be NHWC f32 [N, P, Q, C ≥ 3], got {:?} {:?} {:?}", x.layout, x.dtype, x.shape)
    })?;
    ensure(bias.dtype == DType::F32 && bias.shape == [3], OP, || format!("unpack output: bias must be f32 [3], got {:?}", bias.shape))?;
    let (n, p, q, cx) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let want = [n, 3, p, q];
    ensure(y.dtype == DType::F32 && y.layout != Layout::Nhwc && y.shape == want, OP, || {
        format!("unpack output: y must be NCHW f32 {want:?}, got {:?} {:?} {:?}", y.layout, y.dtype, y.shape)
    })?;
    let n_pix = n * p * q;
    ensure(n_pix > 0, OP, || format!("unpack output: empty x {:?}", x.shape))?;
    ensure(fits32(cx), OP, || format!("unpack output: {cx} channels"))?;
    let pq = p * q;
    // SAFETY: nhwc_unpack_output(x: *const f32, y: *mut f32, bias: *const f32, n_pix: usize, pq: usize,
    // cx: u32): thread `pix < N*P*Q` reads x[pix*Cx + c] (c < 3 ≤ Cx) and bias[0..3] (length 3, checked),
    // and writes y[(n*3 + c)*pq + i] with n = pix / pq < N, i < pq: inside y's N*3*P*Q floats (checked).
    unsafe {
        gpu.launch("nhwc_unpack_output", (blocks_for(n_pix, ELEMENTWISE_BLOCK), 1, 1), (ELEMENTWISE_BLOCK, 1, 1), 0,
            kernel_args!(x.ptr(), y.ptr(), bias.ptr(), n_pix, pq, cx as u32))
    }
}
