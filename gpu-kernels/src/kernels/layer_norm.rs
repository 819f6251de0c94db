//! `layer_norm` kernels (see host/src/ops/layer_norm.rs for the launcher, models::ops::layer_norm for the CPU reference).
//!
//! `y = LayerNorm(x + residual) · γ + β` over the last dimension (biased variance, eps inside the square
//! root, as `nn.LayerNorm`), fused with the post-norm block's residual add. One warp per row, two-pass
//! statistics (mean, then Σ(v − mean)²) for accuracy; rows are re-read from cache rather than held in
//! registers so any D works.
use crate::device::{block_idx_x, lane_id, math, thread_idx_x, warp};
use crate::launch::{LAYER_NORM_EPS, LAYER_NORM_ROWS};

/// Grid ceil(rows / LAYER_NORM_ROWS), block 32 * LAYER_NORM_ROWS. `res` is read only when `has_res != 0`.
/// x, res, y: [rows, d] contiguous; gamma, beta: [d].
#[no_mangle]
pub unsafe extern "ptx-kernel" fn layer_norm(
    x: *const f32,
    res: *const f32,
    gamma: *const f32,
    beta: *const f32,
    y: *mut f32,
    rows: u32,
    d: u32,
    has_res: u32,
) {
    let row = (block_idx_x() * LAYER_NORM_ROWS + thread_idx_x() / 32) as usize;
    if row >= rows as usize {
        // Whole warps leave together; the kernel has no block barrier.
        return;
    }
    let d = d as usize;
    let lane = lane_id() as usize;
    let xr = x.add(row * d);
    let rr = res.wrapping_add(row * d);
    let val = |j: usize| -> f32 {
        if has_res != 0 {
            *xr.add(j) + *rr.add(j)
        } else {
            *xr.add(j)
        }
    };
    let mut s = 0.0f32;
    let mut j = lane;
    while j < d {
        s += val(j);
        j += 32;
    }
    let mean = math::div(warp::warp_sum(s), d as f32);
    let mut s2 = 0.0f32;
    j = lane;
    while j < d {
        let dv = val(j) - mean;
        s2 = math::fma(dv, dv, s2);
        j += 32;
    }
    let var = math::div(warp::warp_sum(s2), d as f32);
    let rstd = math::div(1.0, math::sqrt(var + LAYER_NORM_EPS));
    let yr = y.add(row * d);
    j = lane;
    while j < d {
        *yr.add(j) = math::fma((val(j) - mean) * rstd, *gamma.add(j), *beta.add(j));
        j += 32;
    }
}
