//! `upsample` kernels (see host/src/ops/upsample.rs for the launcher, models::ops::upsample for the CPU reference).
use crate::device::global_index_x;

/// Nearest upsampling by an integer `factor`: `y[plane, oy, ox] = x[plane, oy / factor, ox / factor]`,
/// `planes` planes of `h x w` in, `h*factor x w*factor` out. Grid-stride over the output.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn upsample_nearest(
    x: *const f32,
    y: *mut f32,
    planes: usize,
    h: usize,
    w: usize,
    factor: usize,
) {
    crate::device::grid_dependency_wait();
    let ho = h * factor;
    let wo = w * factor;
    let total = planes * ho * wo;
    let (mut i, stride) = global_index_x();
    while i < total {
        let ox = i % wo;
        let rest = i / wo;
        let oy = rest % ho;
        let plane = rest / ho;
        *y.add(i) = *x.add((plane * h + oy / factor) * w + ox / factor);
        i += stride;
    }
}
