//! `layer_norm` kernels (see host/src/ops/layer_norm.rs for the launcher, models::ops::layer_norm for the CPU reference).
//!
//! `y = LayerNorm(x + residual) · γ + β` over the last dimension (biased variance, eps inside the square
//! root, as `nn.LayerNorm`), fused with the post-norm block's residual add. One warp per row, two-pass
//! statistics (mean, then Σ(v − mean)²) for accuracy. [`layer_norm_row`] is the one row routine of this
//! kernel and of `linear_tc_layer_norm` (which also writes an f16 copy): rows of D ≤ 1024 with D % 4 == 0
//! are held in registers (every load issued before the first sum), other D are re-read from cache.
use crate::device::mma::{pack_f16x2, unpack_f16x2};
use crate::device::unroll::unroll;
use crate::device::{block_idx_x, lane_id, math, thread_idx_x, warp, F32x4};
use crate::launch::{LAYER_NORM_EPS, LAYER_NORM_HV_MAX_D, LAYER_NORM_HV_ROWS, LAYER_NORM_ROWS};

/// Grid ceil(rows / LAYER_NORM_ROWS), block 32 * LAYER_NORM_ROWS. `res` is read only when `has_res != 0`.
/// x, res, y: [rows, d] contiguous (16-byte aligned); gamma, beta: [d].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
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
    crate::device::grid_dependency_wait();
    layer_norm_row(x, res, gamma, beta, y, core::ptr::null_mut(), rows, d, has_res != 0);
}

/// Float4 groups per lane held in registers by the register form (rows up to 4·32·8 = 1024).
const LN_VEC: usize = 8;

/// An input element type of [`layer_norm_row`]: f32, or f16 (`u16` bits; the f16 residual stream of the
/// fast StyleViT). `load4` reads elements 4g .. 4g + 4 (16-byte or 8-byte aligned group), `load1` element j.
pub(super) trait LnIn: Copy {
    /// # Safety
    /// `p` + 4g .. 4g + 4 in bounds and aligned to 4 elements.
    unsafe fn load4(p: *const Self, g: usize) -> [f32; 4];
    /// # Safety
    /// `p` + j in bounds.
    unsafe fn load1(p: *const Self, j: usize) -> f32;
}

impl LnIn for f32 {
    #[inline(always)]
    unsafe fn load4(p: *const f32, g: usize) -> [f32; 4] {
        (*(p as *const F32x4).add(g)).0
    }
    #[inline(always)]
    unsafe fn load1(p: *const f32, j: usize) -> f32 {
        *p.add(j)
    }
}

impl LnIn for u16 {
    #[inline(always)]
    unsafe fn load4(p: *const u16, g: usize) -> [f32; 4] {
        let q = *(p.add(4 * g) as *const [u32; 2]);
        let (a, b) = (unpack_f16x2(q[0]), unpack_f16x2(q[1]));
        [a.0, a.1, b.0, b.1]
    }
    #[inline(always)]
    unsafe fn load1(p: *const u16, j: usize) -> f32 {
        unpack_f16x2(*p.add(j) as u32).0
    }
}

/// The row of this warp (`block · LAYER_NORM_ROWS + warp`, if below `rows`): `y` (f32, when non-null)
/// and `y16` (its f16 rounding, when non-null) = LayerNorm(x + res if `has_res`) · γ + β. Pointers as the
/// kernels' (tensor bases, so 16-byte aligned).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn layer_norm_row<T: LnIn>(
    x: *const T,
    res: *const T,
    gamma: *const f32,
    beta: *const f32,
    y: *mut f32,
    y16: *mut u16,
    rows: u32,
    d: u32,
    has_res: bool,
) {
    let row = (block_idx_x() * LAYER_NORM_ROWS + thread_idx_x() / 32) as usize;
    if row >= rows as usize {
        // Whole warps leave together; the kernels have no block barrier.
        return;
    }
    let d = d as usize;
    let lane = lane_id() as usize;
    if d.is_multiple_of(4) && d <= 4 * 32 * LN_VEC {
        row_in_registers(x, res, gamma, beta, y, y16, row, d, has_res, lane);
    } else {
        row_from_cache(x, res, gamma, beta, y, y16, row, d, has_res, lane);
    }
}

/// Stores element `j` of the row: f32 and / or f16.
#[inline(always)]
unsafe fn store(y: *mut f32, y16: *mut u16, at: usize, v: f32) {
    if !y.is_null() {
        *y.add(at) = v;
    }
    if !y16.is_null() {
        *y16.add(at) = pack_f16x2(v, 0.0) as u16;
    }
}

/// Any D: three strided passes over the row, re-read from cache.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn row_from_cache<T: LnIn>(
    x: *const T,
    res: *const T,
    gamma: *const f32,
    beta: *const f32,
    y: *mut f32,
    y16: *mut u16,
    row: usize,
    d: usize,
    has_res: bool,
    lane: usize,
) {
    let xr = x.add(row * d);
    let rr = res.wrapping_add(row * d);
    let val = |j: usize| -> f32 {
        if has_res {
            T::load1(xr, j) + T::load1(rr, j)
        } else {
            T::load1(xr, j)
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
    j = lane;
    while j < d {
        store(y, y16, row * d + j, math::fma((val(j) - mean) * rstd, *gamma.add(j), *beta.add(j)));
        j += 32;
    }
}

/// D % 4 == 0, D ≤ 1024: the row (and the residual's) loaded into registers with every load issued before
/// the first sum, so the warp waits for memory once instead of once per strided iteration (the cache form
/// cost ~9 µs per launch at 64 tokens, latency-bound). Two-pass statistics from the registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn row_in_registers<T: LnIn>(
    x: *const T,
    res: *const T,
    gamma: *const f32,
    beta: *const f32,
    y: *mut f32,
    y16: *mut u16,
    row: usize,
    d: usize,
    has_res: bool,
    lane: usize,
) {
    let groups = d / 4;
    let xr = x.add(row * d);
    let rr = res.wrapping_add(row * d);
    let mut v = [F32x4([0.0; 4]); LN_VEC];
    unroll!(8, |i| {
        let g = lane + 32 * i;
        if g < groups {
            v[i] = F32x4(T::load4(xr, g));
        }
    });
    // γ and β now, in flight with the row: loaded group by group between the stores at the end they
    // were a chain of dependent round trips (the stores may alias them), ~1 us per few-row launch.
    let (gv, bv) = (gamma as *const F32x4, beta as *const F32x4);
    let mut ga = [F32x4([0.0; 4]); LN_VEC];
    let mut be = [F32x4([0.0; 4]); LN_VEC];
    unroll!(8, |i| {
        let g = lane + 32 * i;
        if g < groups {
            ga[i] = *gv.add(g);
            be[i] = *bv.add(g);
        }
    });
    if has_res {
        unroll!(8, |i| {
            let g = lane + 32 * i;
            if g < groups {
                let r = T::load4(rr, g);
                unroll!(4, |e| {
                    v[i].0[e] += r[e];
                });
            }
        });
    }
    let mut s = 0.0f32;
    unroll!(8, |i| {
        unroll!(4, |e| {
            s += v[i].0[e]; // zeros past the row
        });
    });
    let mean = math::div(warp::warp_sum(s), d as f32);
    let mut s2 = 0.0f32;
    unroll!(8, |i| {
        if lane + 32 * i < groups {
            unroll!(4, |e| {
                let dv = v[i].0[e] - mean;
                s2 = math::fma(dv, dv, s2);
            });
        }
    });
    let var = math::div(warp::warp_sum(s2), d as f32);
    let rstd = math::div(1.0, math::sqrt(var + LAYER_NORM_EPS));
    unroll!(8, |i| {
        let g = lane + 32 * i;
        if g < groups {
            let mut o = F32x4([0.0; 4]);
            unroll!(4, |e| {
                o.0[e] = math::fma((v[i].0[e] - mean) * rstd, ga[i].0[e], be[i].0[e]);
            });
            if !y.is_null() {
                *(y.add(row * d) as *mut F32x4).add(g) = o;
            }
            if !y16.is_null() {
                let h = [pack_f16x2(o.0[0], o.0[1]), pack_f16x2(o.0[2], o.0[3])];
                *(y16.add(row * d + 4 * g) as *mut [u32; 2]) = h;
            }
        }
    });
}

/// 16-byte groups of 8 f16 per lane in [`rows_f16_vec8`].
const HV_GROUPS: usize = (LAYER_NORM_HV_MAX_D / 256) as usize;
const _: () = assert!(HV_GROUPS == 2 && LAYER_NORM_HV_ROWS == 4);

/// `LAYER_NORM_HV_ROWS` consecutive rows per warp (`(block · LAYER_NORM_ROWS + warp) · LAYER_NORM_HV_ROWS`
/// onwards, those below `rows`): y16 = LayerNorm(x) · γ + β, f16 in and out, two-pass f32 statistics.
/// Lane l holds the 8-element groups l and l + 32 of each row (16-byte loads and stores); every row's
/// loads are issued before the first sum, and γ, β are read once for all of them.
///
/// # Safety
/// x, y16: [rows, d] f16, 16-byte aligned, d % 8 == 0, d ≤ `LAYER_NORM_HV_MAX_D`; gamma, beta: [d] f32,
/// 16-byte aligned.
#[inline(always)]
pub(super) unsafe fn rows_f16_vec8(x: *const u16, gamma: *const f32, beta: *const f32, y16: *mut u16, rows: u32, d: u32) {
    let row0 = (block_idx_x() * LAYER_NORM_ROWS + thread_idx_x() / 32) * LAYER_NORM_HV_ROWS;
    if row0 >= rows {
        return;
    }
    let (rows, d) = (rows as usize, d as usize);
    let row0 = row0 as usize;
    let lane = lane_id() as usize;
    let groups = d / 8;
    let mut raw = [[[0u32; 4]; HV_GROUPS]; 4];
    unroll!(4, |r| {
        if row0 + r < rows {
            unroll!(2, |i| {
                let g = lane + 32 * i;
                if g < groups {
                    raw[r][i] = *(x.add((row0 + r) * d + 8 * g) as *const [u32; 4]);
                }
            });
        }
    });
    let mut gb = [[F32x4([0.0; 4]); 4]; HV_GROUPS]; // per group: γ lo, γ hi, β lo, β hi
    let (gv, bv) = (gamma as *const F32x4, beta as *const F32x4);
    unroll!(2, |i| {
        let g = lane + 32 * i;
        if g < groups {
            gb[i] = [*gv.add(2 * g), *gv.add(2 * g + 1), *bv.add(2 * g), *bv.add(2 * g + 1)];
        }
    });
    unroll!(4, |r| {
        if row0 + r < rows {
            let mut v = [[0f32; 8]; HV_GROUPS];
            unroll!(2, |i| {
                unroll!(4, |q| {
                    let (a, b) = unpack_f16x2(raw[r][i][q]);
                    v[i][2 * q] = a;
                    v[i][2 * q + 1] = b;
                });
            });
            let mut s = 0f32;
            unroll!(2, |i| {
                unroll!(8, |e| {
                    s += v[i][e]; // zeros past the row
                });
            });
            let mean = math::div(warp::warp_sum(s), d as f32);
            let mut s2 = 0f32;
            unroll!(2, |i| {
                if lane + 32 * i < groups {
                    unroll!(8, |e| {
                        let dv = v[i][e] - mean;
                        s2 = math::fma(dv, dv, s2);
                    });
                }
            });
            let var = math::div(warp::warp_sum(s2), d as f32);
            let rstd = math::div(1.0, math::sqrt(var + LAYER_NORM_EPS));
            unroll!(2, |i| {
                let g = lane + 32 * i;
                if g < groups {
                    let mut o = [0f32; 8];
                    unroll!(8, |e| {
                        let (gm, bt) = (gb[i][e / 4].0[e % 4], gb[i][2 + e / 4].0[e % 4]);
                        o[e] = math::fma((v[i][e] - mean) * rstd, gm, bt);
                    });
                    *(y16.add((row0 + r) * d + 8 * g) as *mut [u32; 4]) =
                        [pack_f16x2(o[0], o[1]), pack_f16x2(o[2], o[3]), pack_f16x2(o[4], o[5]), pack_f16x2(o[6], o[7])];
                }
            });
        }
    });
}
