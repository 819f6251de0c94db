//! `instance_norm` launchers: per-(sample, channel) statistics, then normalise + affine (+ReLU) (+residual).
//!
//! Three kernels on the stream: partial statistics per chunk of each plane, a combination per plane
//! (mean, 1/sqrt(biased var + 1e-5)), and the elementwise apply. `stats` is caller-owned scratch of at
//! least [`instance_norm_stats_len`] f32 elements, so a network allocates it once per shape.
use gpu_kernels::launch::{
    instance_norm_splits, ELEMENTWISE_BLOCK, INSTANCE_NORM_EPS, REDUCE_BLOCK,
};

use crate::error::{ensure, Result};
use crate::gpu::{blocks_for, DType, DeviceTensor, Gpu};
use crate::kernel_args;

const OP: &str = "instance_norm";

/// f32 elements of scratch `stats` that [`instance_norm`] needs for an [N, C, H, W] input:
/// `N*C*splits*2` partials followed by `N*C*2` (mean, rstd).
pub fn instance_norm_stats_len(shape: &[usize]) -> usize {
    if shape.len() != 4 {
        return 0;
    }
    let planes = shape[0] * shape[1];
    let (splits, _) = instance_norm_splits(shape[2] * shape[3]);
    planes * splits * 2 + planes * 2
}

/// y = γ (x − mean) / sqrt(var + 1e-5) + β per sample and channel (biased variance over H*W), then ReLU
/// when `relu`, then `+ residual` when given (same shape as x). x, y: [N, C, H, W] f32; γ, β: [C].
#[allow(clippy::too_many_arguments)]
pub fn instance_norm(
    gpu: &Gpu,
    x: &DeviceTensor,
    gamma: &DeviceTensor,
    beta: &DeviceTensor,
    relu: bool,
    residual: Option<&DeviceTensor>,
    y: &mut DeviceTensor,
    stats: &mut DeviceTensor,
) -> Result<()> {
    ensure(y.shape == x.shape, OP, || {
        format!("y {:?} must have the shape of x {:?}", y.shape, x.shape)
    })?;
    ensure(y.dtype == DType::F32, OP, || "f32 tensors only".into())?;
    launch(gpu, x, y.ptr(), gamma, beta, relu, residual, stats)
}

/// [`instance_norm`] in place: x = norm(x) (+ReLU) (+residual).
pub fn instance_norm_inplace(
    gpu: &Gpu,
    x: &mut DeviceTensor,
    gamma: &DeviceTensor,
    beta: &DeviceTensor,
    relu: bool,
    residual: Option<&DeviceTensor>,
    stats: &mut DeviceTensor,
) -> Result<()> {
    let y = x.ptr();
    launch(gpu, x, y, gamma, beta, relu, residual, stats)
}

/// Checks everything but `y` (which has x's shape and dtype: checked by the callers) and launches.
#[allow(clippy::too_many_arguments)]
fn launch(
    gpu: &Gpu,
    x: &DeviceTensor,
    y: u64,
    gamma: &DeviceTensor,
    beta: &DeviceTensor,
    relu: bool,
    residual: Option<&DeviceTensor>,
    stats: &mut DeviceTensor,
) -> Result<()> {
    let all_f32 = [x, gamma, beta, &*stats]
        .iter()
        .all(|t| t.dtype == DType::F32)
        && residual.is_none_or(|r| r.dtype == DType::F32);
    ensure(all_f32, OP, || "f32 tensors only".into())?;
    ensure(x.shape.len() == 4, OP, || {
        format!("x must be [N, C, H, W], got {:?}", x.shape)
    })?;
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (planes, hw) = (n * c, h * w);
    ensure(planes > 0 && hw > 0, OP, || {
        format!("empty input {:?}", x.shape)
    })?;
    ensure(gamma.shape == [c] && beta.shape == [c], OP, || {
        format!(
            "gamma {:?} and beta {:?} must be [{c}]",
            gamma.shape, beta.shape
        )
    })?;
    if let Some(r) = residual {
        ensure(r.shape == x.shape, OP, || {
            format!(
                "residual {:?} must have the shape of x {:?}",
                r.shape, x.shape
            )
        })?;
    }
    let need = instance_norm_stats_len(&x.shape);
    ensure(stats.numel() >= need, OP, || {
        format!(
            "stats scratch has {} elements, {need} needed",
            stats.numel()
        )
    })?;
    ensure(planes <= 65_535, OP, || {
        format!("N*C = {planes} planes exceed the grid's 65535")
    })?;
    let (splits, chunk) = instance_norm_splits(hw);
    let part = stats.ptr();
    let fin = part + (planes * splits * 2 * 4) as u64;
    let (splits32, planes32, c32) = (splits as u32, planes as u32, c as u32);

    // SAFETY: instance_norm_partial(x: *const f32, part: *mut f32, hw: usize, chunk: usize, splits: u32):
    // block (s, plane) reads x[plane*hw + s*chunk .. min(hw, (s+1)*chunk)] for plane < N*C (x holds N*C*hw
    // floats) and writes part[(plane*splits + s)*2 ..+2] (stats holds ≥ planes*splits*2 + planes*2 floats,
    // checked). The block is REDUCE_BLOCK (a multiple of 32) threads, with 32 floats of shared scratch.
    unsafe {
        gpu.launch(
            "instance_norm_partial",
            (splits32, planes32, 1),
            (REDUCE_BLOCK, 1, 1),
            32 * 4,
            kernel_args!(x.ptr(), part, hw, chunk, splits32),
        )?;
    }
    let fin_blocks = blocks_for(planes, 128);
    // SAFETY: instance_norm_finalize(part: *const f32, stats: *mut f32, planes: u32, hw: usize,
    // chunk: usize, splits: u32, eps: f32): thread `plane < planes` reads part[plane*splits*2 ..+splits*2]
    // and writes stats[planes*splits*2 + plane*2 ..+2], inside the checked scratch length.
    unsafe {
        gpu.launch(
            "instance_norm_finalize",
            (fin_blocks, 1, 1),
            (128, 1, 1),
            0,
            kernel_args!(part, fin, planes32, hw, chunk, splits32, INSTANCE_NORM_EPS),
        )?;
    }
    let res_ptr: u64 = residual.map_or(0, |r| r.ptr());
    let apply_blocks = blocks_for(hw, ELEMENTWISE_BLOCK).min(4096);
    // SAFETY: instance_norm_apply(x, y, residual, gamma, beta, stats: pointers; hw: usize, channels: u32,
    // relu: u32): block row `plane < N*C` reads stats[plane*2 ..+2] from the finalized region, gamma[c] and
    // beta[c] for c = plane % C < C, and x/residual/y at plane*hw + i for i < hw: all inside tensors of
    // N*C*hw floats (y has x's shape: checked by the callers). residual is null when absent.
    unsafe {
        gpu.launch(
            "instance_norm_apply",
            (apply_blocks, planes32, 1),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            kernel_args!(
                x.ptr(),
                y,
                res_ptr,
                gamma.ptr(),
                beta.ptr(),
                fin,
                hw,
                c32,
                relu as u32
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_every_plane_without_empty_chunks() {
        for hw in [
            1usize,
            2,
            4095,
            4096,
            4097,
            16_770,
            65_536,
            1 << 20,
            2048 * 2048,
            4096 * 4096 + 7,
        ] {
            let (splits, chunk) = instance_norm_splits(hw);
            assert!(
                (1..=gpu_kernels::launch::INSTANCE_NORM_MAX_SPLITS).contains(&splits),
                "{hw}"
            );
            assert!(
                splits * chunk >= hw,
                "{hw}: {splits} x {chunk} does not cover"
            );
            assert!((splits - 1) * chunk < hw, "{hw}: last chunk empty");
        }
        assert_eq!(
            instance_norm_stats_len(&[2, 3, 130, 129]),
            6 * 5 * 2 + 6 * 2
        );
        assert_eq!(instance_norm_stats_len(&[2, 3]), 0);
    }
}
