use crate::device::{global_index_x, math};

/// y[i] = x[i] * a + b
#[no_mangle]
pub unsafe extern "ptx-kernel" fn scale_add(x: *const f32, y: *mut f32, n: usize, a: f32, b: f32) {
    let (mut i, stride) = global_index_x();
    while i < n {
        *y.add(i) = math::fma(*x.add(i), a, b);
        i += stride;
    }
}
