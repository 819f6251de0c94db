//! `instance_norm` kernels (see host/src/ops/instance_norm.rs for the launcher, models::ops::instance_norm for the CPU reference).
//!
//! Three launches: `instance_norm_partial` (grid `splits x N*C`: each block takes one chunk of one plane
//! and writes its mean and sum of squared deviations, both computed in two passes over the chunk),
//! `instance_norm_finalize` (one thread per plane: combines the chunks with Chan's formula, writes mean and
//! 1/sqrt(var + eps), biased variance) and `instance_norm_apply` (elementwise; in-place safe).
use crate::device::{
    block_dim_x, block_idx_x, block_idx_y, global_index_x, grid_dim_x, math, shared, thread_idx_x,
};

/// `part[(plane * splits + s) * 2 + {0, 1}] = (mean, M2)` of elements `s*chunk .. min(hw, (s+1)*chunk)`
/// of plane `blockIdx.y` of `x` (planes of `hw` contiguous floats). Block: a multiple of 32 threads;
/// dynamic shared memory: 32 floats.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn instance_norm_partial(
    x: *const f32,
    part: *mut f32,
    hw: usize,
    chunk: usize,
    splits: u32,
) {
    crate::device::grid_dependency_wait();
    let s = block_idx_x() as usize;
    let plane = block_idx_y() as usize;
    let start = s * chunk;
    let end = if start + chunk < hw {
        start + chunk
    } else {
        hw
    };
    let src = x.add(plane * hw);
    let t = thread_idx_x() as usize;
    let bd = block_dim_x() as usize;
    let scratch = shared::dynamic_smem::<f32>();

    let mut sum = 0f32;
    let mut i = start + t;
    while i < end {
        sum += *src.add(i);
        i += bd;
    }
    let count = end.saturating_sub(start);
    let mean = shared::block_sum(sum, scratch) / count as f32;

    let mut m2 = 0f32;
    let mut i = start + t;
    while i < end {
        let d = *src.add(i) - mean;
        m2 = math::fma(d, d, m2);
        i += bd;
    }
    let m2 = shared::block_sum(m2, scratch);
    if t == 0 {
        let o = part.add((plane * splits as usize + s) * 2);
        *o = mean;
        *o.add(1) = m2;
    }
}

/// `stats[plane * 2 + {0, 1}] = (mean, 1/sqrt(var + eps))` for planes `0..planes`, from the partials of
/// `instance_norm_partial` (same `hw`, `chunk`, `splits`). One thread per plane.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn instance_norm_finalize(
    part: *const f32,
    stats: *mut f32,
    planes: u32,
    hw: usize,
    chunk: usize,
    splits: u32,
    eps: f32,
) {
    crate::device::grid_dependency_wait();
    let (plane, _) = global_index_x();
    if plane >= planes as usize {
        return;
    }
    let p = part.add(plane * splits as usize * 2);
    let (mut n_a, mut mean, mut m2) = (0f32, 0f32, 0f32);
    for s in 0..splits as usize {
        let start = s * chunk;
        let end = if start + chunk < hw {
            start + chunk
        } else {
            hw
        };
        let n_b = end.saturating_sub(start) as f32;
        if n_b == 0.0 {
            continue;
        }
        let mean_b = *p.add(2 * s);
        let m2_b = *p.add(2 * s + 1);
        let n = n_a + n_b;
        let delta = mean_b - mean;
        mean += delta * (n_b / n);
        m2 += m2_b + delta * delta * (n_a * n_b / n);
        n_a = n;
    }
    let var = m2 / hw as f32;
    let var = if var > 0.0 { var } else { 0.0 };
    *stats.add(plane * 2) = mean;
    *stats.add(plane * 2 + 1) = 1.0 / math::sqrt(var + eps);
}

/// `y = gamma[c] * (x - mean) * rstd + beta[c]`, then ReLU if `relu` != 0, then `+ residual` if
/// `residual` is not null. Grid: `blocks x N*C` (`blockIdx.y` = plane, channel = plane % `channels`),
/// grid-stride over the plane. Each element is read and written by the same thread, so `y` may equal `x`
/// or `residual`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn instance_norm_apply(
    x: *const f32,
    y: *mut f32,
    residual: *const f32,
    gamma: *const f32,
    beta: *const f32,
    stats: *const f32,
    hw: usize,
    channels: u32,
    relu: u32,
) {
    crate::device::grid_dependency_wait();
    let plane = block_idx_y() as usize;
    let ch = plane % channels as usize;
    let mean = *stats.add(plane * 2);
    let rstd = *stats.add(plane * 2 + 1);
    let g = *gamma.add(ch);
    let bt = *beta.add(ch);
    let base = plane * hw;
    let stride = grid_dim_x() as usize * block_dim_x() as usize;
    let mut i = block_idx_x() as usize * block_dim_x() as usize + thread_idx_x() as usize;
    while i < hw {
        let mut v = math::fma((*x.add(base + i) - mean) * rstd, g, bt);
        if relu != 0 {
            v = math::relu(v);
        }
        if !residual.is_null() {
            v += *residual.add(base + i);
        }
        *y.add(base + i) = v;
        i += stride;
    }
}
