use crate::device::{global_index_x, math};

/// y[i] = max(x[i], 0); `y` may equal `x`.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn relu(x: *const f32, y: *mut f32, n: usize) {
    crate::device::grid_dependency_wait();
    let (mut i, stride) = global_index_x();
    while i < n {
        *y.add(i) = math::relu(*x.add(i));
        i += stride;
    }
}

/// y[i] = a[i] + b[i]; `y` may equal `a` or `b`.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn add(a: *const f32, b: *const f32, y: *mut f32, n: usize) {
    crate::device::grid_dependency_wait();
    let (mut i, stride) = global_index_x();
    while i < n {
        *y.add(i) = *a.add(i) + *b.add(i);
        i += stride;
    }
}
