//! `layer_norm` kernels (see host/src/ops/layer_norm.rs for the launcher, models::ops::layer_norm for the CPU reference).
//!
//! `y = LayerNorm(x + residual) · γ + β` over the last dimension (biased variance, eps inside the square
//! root, as `nn.LayerNorm`), fused with the post-norm block's residual add. One warp per row, two-pass
//! statistics (mean, then Σ(v − mean)²) for accuracy. [`layer_norm_row`] is the one row routine of this
//! kernel and of `linear_tc_layer_norm` (which also writes an f16 copy): rows of D ≤ 1024 with D % 4 == 0
//! are held in registers (every load issued before the first sum), other D are re-read from cache. The
//! two forms ([`rows_in_registers`], [`row_from_cache`]) also normalise the row bands of
//! `linear_tc_small_ln` (several rows per warp at once, read with strong loads).
use crate::device::mma::pack_f16x2;
use crate::device::unroll::unroll;
use crate::device::{block_idx_x, lane_id, math, thread_idx_x, warp};
use crate::launch::{LAYER_NORM_EPS, LAYER_NORM_ROWS};

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

/// Four f32 that the compiler loads / stores with one 16-byte access.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub(super) struct F32x4(pub [f32; 4]);

/// The row of this warp (`block · LAYER_NORM_ROWS + warp`, if below `rows`): `y` (f32, when non-null)
/// and `y16` (its f16 rounding, when non-null) = LayerNorm(x + res if `has_res`) · γ + β. Pointers as the
/// kernels' (tensor bases, so 16-byte aligned).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn layer_norm_row(
    x: *const f32,
    res: *const f32,
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
    let src = RowSrc { x, res, has_res };
    if d.is_multiple_of(4) && d <= 4 * 32 * LN_VEC {
        // γ, β read after the statistics (fewer live registers: occupancy for the bandwidth-bound
        // many-row case).
        let gb = GammaBeta::Ptr(gamma, beta);
        rows_in_registers::<1, LN_VEC, false>(src, gb, y, y16, row, 1, d, lane);
    } else {
        row_from_cache::<false>(src, gamma, beta, y, y16, row, d, lane);
    }
}

/// What a row routine normalises: `x` (+ `res` when `has_res`), [rows, d] f32 (16-byte aligned bases).
#[derive(Clone, Copy)]
pub(super) struct RowSrc {
    pub x: *const f32,
    pub res: *const f32,
    pub has_res: bool,
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

/// One f32 at `p`: a plain load, or with `STRONG` a `ld.relaxed.gpu` (data another block wrote before a
/// release that this block acquired; see "Cross-block hand-off" in linear_tc.rs).
#[inline(always)]
unsafe fn ld1<const STRONG: bool>(p: *const f32) -> f32 {
    if STRONG {
        super::linear_tc::ld_relaxed_gpu_f32(p)
    } else {
        *p
    }
}

/// Four f32 at the 16-byte aligned `p`, plain or (`STRONG`) `ld.relaxed.gpu`, as [`ld1`].
#[inline(always)]
unsafe fn ld4<const STRONG: bool>(p: *const f32) -> F32x4 {
    if STRONG {
        F32x4(super::linear_tc::ld_relaxed_gpu_v4(p))
    } else {
        *(p as *const F32x4)
    }
}

/// Any D: three strided passes over row `row`, re-read from cache (`STRONG`: [`ld1`]). In place (`y`
/// = `src.x`) is allowed: every element is read and written by the same lane, the write last.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn row_from_cache<const STRONG: bool>(
    src: RowSrc,
    gamma: *const f32,
    beta: *const f32,
    y: *mut f32,
    y16: *mut u16,
    row: usize,
    d: usize,
    lane: usize,
) {
    let xr = src.x.add(row * d);
    let rr = src.res.wrapping_add(row * d);
    let val = |j: usize| -> f32 {
        if src.has_res {
            ld1::<STRONG>(xr.add(j)) + *rr.add(j)
        } else {
            ld1::<STRONG>(xr.add(j))
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

/// Where [`rows_in_registers`] gets γ and β: read from memory at the stores, or already in registers.
#[derive(Clone, Copy)]
pub(super) enum GammaBeta<'a, const V: usize> {
    Ptr(*const f32, *const f32),
    Regs(&'a [[F32x4; V]; 2]),
}

/// γ and β groups `lane + 32 i` (i < V) of a row of D (D % 4 == 0, D ≤ 4·32·V; zeros past D): the
/// per-lane γ, β of [`rows_in_registers`], loaded once for any number of rows.
#[inline(always)]
pub(super) unsafe fn gamma_beta<const V: usize>(
    gamma: *const f32,
    beta: *const f32,
    d: usize,
    lane: usize,
) -> [[F32x4; V]; 2] {
    const { assert!(V >= 1 && V <= 8) };
    let (gv, bv) = (gamma as *const F32x4, beta as *const F32x4);
    let mut gb = [[F32x4([0.0; 4]); V]; 2];
    unroll!(8, |i| {
        let g = lane + 32 * i;
        if i < V && g < d / 4 {
            gb[0][i] = *gv.add(g);
            gb[1][i] = *bv.add(g);
        }
    });
    gb
}

/// D % 4 == 0, D ≤ 4·32·V: rows `row0 .. row0 + valid` (valid ≤ R) of the warp, each loaded into
/// registers (V float4 per lane: group g = lane + 32 i of the row) with every load of all R rows issued
/// before the first sum, so the warp waits for memory once per R rows instead of once per strided
/// iteration (the cache form cost ~9 µs per launch at 64 tokens, latency-bound), and the R rows'
/// reductions interleave. Two-pass statistics from the registers, per row exactly as the one-row form.
/// `STRONG`: loads of `src.x` as [`ld4`]. `gb`: γ and β, as pointers (loaded at the stores) or this
/// lane's groups in registers ([`gamma_beta`], loaded once by a caller that normalises many rows, so no
/// load waits after the statistics). In place (`y` = `src.x`) is
/// allowed: a lane writes only the groups it read, after reading all of them.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn rows_in_registers<const R: usize, const V: usize, const STRONG: bool>(
    src: RowSrc,
    gb: GammaBeta<'_, V>,
    y: *mut f32,
    y16: *mut u16,
    row0: usize,
    valid: usize,
    d: usize,
    lane: usize,
) {
    // R ≤ 4 and V ≤ 8 (checked at compile time): the loops are `unroll!`ed to 4 rows x 8 groups with
    // the indices past R / V folded away, so that `v` stays in registers.
    const { assert!(R >= 1 && R <= 4 && V >= 1 && V <= 8) };
    let groups = d / 4;
    let mut v = [[F32x4([0.0; 4]); V]; R];
    unroll!(4, |r| {
        if r < R && r < valid {
            let xr = src.x.add((row0 + r) * d);
            unroll!(8, |i| {
                let g = lane + 32 * i;
                if i < V && g < groups {
                    v[r][i] = ld4::<STRONG>(xr.add(4 * g));
                }
            });
        }
    });
    if src.has_res {
        unroll!(4, |r| {
            if r < R && r < valid {
                let rr = src.res.add((row0 + r) * d) as *const F32x4;
                unroll!(8, |i| {
                    let g = lane + 32 * i;
                    if i < V && g < groups {
                        let a = *rr.add(g);
                        unroll!(4, |e| {
                            v[r][i].0[e] += a.0[e];
                        });
                    }
                });
            }
        });
    }
    let mut mean = [0.0f32; R];
    unroll!(4, |r| {
        if r < R {
            let mut s = 0.0f32;
            unroll!(8, |i| {
                if i < V {
                    unroll!(4, |e| {
                        s += v[r][i].0[e]; // zeros past the row
                    });
                }
            });
            mean[r] = s;
        }
    });
    unroll!(4, |r| {
        if r < R {
            mean[r] = math::div(warp::warp_sum(mean[r]), d as f32);
        }
    });
    let mut rstd = [0.0f32; R];
    unroll!(4, |r| {
        if r < R {
            let mut s2 = 0.0f32;
            unroll!(8, |i| {
                if i < V && lane + 32 * i < groups {
                    unroll!(4, |e| {
                        let dv = v[r][i].0[e] - mean[r];
                        s2 = math::fma(dv, dv, s2);
                    });
                }
            });
            rstd[r] = s2;
        }
    });
    unroll!(4, |r| {
        if r < R {
            let var = math::div(warp::warp_sum(rstd[r]), d as f32);
            rstd[r] = math::div(1.0, math::sqrt(var + LAYER_NORM_EPS));
        }
    });
    unroll!(8, |i| {
        let g = lane + 32 * i;
        if i < V && g < groups {
            let (ga, be) = match gb {
                GammaBeta::Ptr(gp, bp) => (
                    *(gp as *const F32x4).add(g),
                    *(bp as *const F32x4).add(g),
                ),
                GammaBeta::Regs(r) => (r[0][i], r[1][i]),
            };
            unroll!(4, |r| {
                if r < R && r < valid {
                    let row = row0 + r;
                    let mut o = F32x4([0.0; 4]);
                    unroll!(4, |e| {
                        o.0[e] = math::fma((v[r][i].0[e] - mean[r]) * rstd[r], ga.0[e], be.0[e]);
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
    });
}
