//! `linear_tc` launcher: y = x Wᵀ + b on tensor cores (f16 inputs, f32 accumulation), with the fused
//! epilogues of `linear` (bias, GELU (tanh form), residual) and f32 and/or f16 outputs (host f16 conversions:
//! `gpu::half`; uploads: `DeviceTensor::from_host_f16`).
//!
//! Tensor conventions (row-major, `DType::F16` stores IEEE binary16 bits):
//! * x: `[.., K]` f16 (M = numel / K rows), K a positive multiple of 8 (16-byte cp.async chunks);
//! * w: `[N, K]` f16 (PyTorch `Linear` layout). `linear_tc_small` copies its first weight tiles before
//!   its programmatic-dependency wait (the weights are uploaded once; the copies overlap the previous
//!   kernel), so w must not be written by the kernel launched just before it on the stream;
//! * bias: `[N]` f32; residual: `[R, N]` f32 or f16 with R dividing M (row m gets residual row m % R);
//! * y32: `[.., N]` f32 and/or y16: `[.., N]` f16 with M·N elements.
//!
//! Two kernels ([`LinearTcPlan::choose`] picks): `linear_tc` (128 x 128 tiles, K walked serially) for
//! many rows, and `linear_tc_small` (64 x 32 tiles) when that grid would leave SMs idle. With a
//! [`LinearTcWorkspace`] ([`linear_tc_ws`]) the small kernel also splits K over `gridDim.z` so that a
//! product of a few dozen rows still spreads over ~132 blocks; the last block of each output tile sums
//! the partials (in split order: deterministic) and applies the epilogue. Same results either way up
//! to f32 summation order.
use gpu_kernels::launch::{
    linear_tc_s_ktiles, linear_tc_s_tiles, LAYER_NORM_HV_MAX_D, LAYER_NORM_HV_MIN_ROWS, LAYER_NORM_HV_ROWS, LAYER_NORM_ROWS, LINEAR_TC_BIAS,
    LINEAR_TC_GELU, LINEAR_TC_RESIDUAL, LINEAR_TC_RES_F16, LINEAR_TC_SMEM_BYTES,
    LINEAR_TC_S_PARTIAL, LINEAR_TC_S_SMEM_BYTES, LINEAR_TC_S_THREADS, LINEAR_TC_THREADS,
};
pub use gpu_kernels::launch::{LinearTcKernel, LinearTcPlan};

use crate::error::{ensure, Result};
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::kernel_args;

const OP: &str = "linear_tc";

/// What `linear_tc` does after the matrix product, in this order: + bias, GELU (tanh form, `models::ops::gelu_tanh`), + residual.
#[derive(Clone, Copy, Default)]
pub struct EpilogueTc<'a> {
    /// f32 [N].
    pub bias: Option<&'a DeviceTensor>,
    pub gelu: bool,
    /// f32 or f16 [R, N] (any shape with R·N elements) where R divides M: row m gets residual row
    /// `m % R` (R = M is a plain residual add; R < M broadcasts, e.g. positions over the batch).
    pub residual: Option<&'a DeviceTensor>,
    /// `y16 += result` instead of `y16 = result`: y16's own contents are the residual (f16, R = M), so a
    /// residual stream is updated in place. Excludes `residual` and `y32`. Every kernel reads an element's
    /// residual before it writes the element, in the same thread; `linear_tma` adds with TMA reduce-adds in
    /// L2 (f16 + f16: the result is rounded to f16 once more than with a separate residual).
    pub accumulate: bool,
}

/// Scratch of the split-K path ([`linear_tc_ws`]): f32 partial tiles and one u32 arrival counter per
/// output tile. Zeroed at creation; every launch leaves the counters at 0 again (the last block of a
/// tile resets its counter), so one workspace serves any number of calls and CUDA-graph replays in
/// stream order. It must not serve two launches that may run concurrently (another stream), and after
/// a kernel fault call [`LinearTcWorkspace::reset`] (an aborted launch can leave counters non-zero).
pub struct LinearTcWorkspace {
    /// `slots` partial tiles of `LINEAR_TC_S_PARTIAL` f32.
    partials: DeviceTensor,
    /// `tiles` u32 counters (stored as 4-byte elements of an f32-typed allocation; zero bits = 0).
    counters: DeviceTensor,
    tiles: usize,
    slots: usize,
    /// Tensor maps of `linear_tma`'s operands (the many-row plan's kernel on Hopper).
    maps: crate::gpu::TmaMapCache,
}

impl LinearTcWorkspace {
    /// Room for products of up to `max_m` rows and `max_n` columns split `max_splits` ways (more
    /// splits also fit when the product has fewer tiles: what counts is tiles·splits ≤
    /// tiles(max_m, max_n)·max_splits). Memory: 8 KB per tile and split, e.g. 16 MB for M 128, N 2048,
    /// 16 splits (the split rule never needs more than `LINEAR_TC_SPLIT_TARGET_BLOCKS + tiles` slots; see
    /// [`LinearTcWorkspace::for_shapes`] for the exact need of given shapes).
    pub fn new(max_m: usize, max_n: usize, max_splits: usize) -> Result<Self> {
        ensure(max_m > 0 && max_n > 0 && max_splits > 0, OP, || {
            format!("workspace for M {max_m}, N {max_n}, {max_splits} splits is empty")
        })?;
        let tiles = linear_tc_s_tiles(max_m, max_n);
        Self::with_capacity(tiles, tiles.saturating_mul(max_splits))
    }

    /// The smallest workspace for [`linear_tc_ws`] on each of `shapes` (M, N, K) with the default plan
    /// ([`LinearTcPlan::choose`]); at least one tile and slot.
    pub fn for_shapes(shapes: &[(usize, usize, usize)]) -> Result<Self> {
        let (tiles, slots) = workspace_need(
            shapes
                .iter()
                .map(|&(m, n, k)| (m, n, LinearTcPlan::choose(m, n, k, true))),
        );
        Self::with_capacity(tiles, slots)
    }

    /// Room for launches of up to `tiles` output tiles (64 x 32) and `slots` partial tiles (tiles ·
    /// splits); at least one of each is allocated.
    pub fn with_capacity(tiles: usize, slots: usize) -> Result<Self> {
        let (tiles, slots) = (tiles.max(1), slots.max(1));
        let floats = slots
            .checked_mul(LINEAR_TC_S_PARTIAL as usize)
            .filter(|&f| f < (1usize << 40))
            .ok_or_else(|| crate::error::Error::Shape {
                op: OP,
                msg: format!("workspace of {slots} partial tiles is too large"),
            })?;
        let partials = DeviceTensor::empty(&[floats], DType::F32, Layout::RowMajor)?;
        let mut counters = DeviceTensor::empty(&[tiles], DType::F32, Layout::RowMajor)?;
        counters.fill_bytes(0)?;
        Ok(LinearTcWorkspace {
            partials,
            counters,
            tiles,
            slots,
            maps: Default::default(),
        })
    }

    /// The tensor maps of the TMA kernels that run with this workspace (`linear_tma`'s operands, and those
    /// of `attention_tma` in the fast StyleViT).
    pub fn maps(&mut self) -> &mut crate::gpu::TmaMapCache {
        &mut self.maps
    }

    /// Zeroes the counters again (only needed after a launch was aborted by a fault).
    pub fn reset(&mut self) -> Result<()> {
        self.counters.fill_bytes(0)
    }

    /// Output tiles (64 x 32) one launch may have.
    pub fn tiles(&self) -> usize {
        self.tiles
    }

    /// Partial tiles (tiles · splits) one launch may write.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// How many counters are not 0 (downloads them; synchronise first). Every completed launch leaves
    /// all of them at 0, so anything else means a launch was aborted or is still running.
    pub fn pending_counters(&self) -> Result<usize> {
        Ok(self
            .counters
            .to_vec_f32()?
            .iter()
            .filter(|v| v.to_bits() != 0)
            .count())
    }
}

/// (tiles, slots) a workspace needs for launches of these (M, N, plan): the largest tile count and
/// tiles · splits among the split `Small` plans (at least 1 each).
pub fn workspace_need(
    plans: impl IntoIterator<Item = (usize, usize, LinearTcPlan)>,
) -> (usize, usize) {
    let (mut tiles, mut slots) = (1usize, 1usize);
    for (m, n, plan) in plans {
        if plan.kernel == LinearTcKernel::Small && plan.splits > 1 {
            let t = linear_tc_s_tiles(m, n);
            tiles = tiles.max(t);
            slots = slots.max(t.saturating_mul(plan.splits));
        }
    }
    (tiles, slots)
}

/// Checked arguments of one launch (also `linear_wg`'s, which shares the contract).
pub(crate) struct Args {
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) r_rows: usize,
    pub(crate) flags: u32,
    pub(crate) b_ptr: u64,
    pub(crate) r_ptr: u64,
    pub(crate) y32_ptr: u64,
    pub(crate) y16_ptr: u64,
    /// [`EpilogueTc::accumulate`]: `r_ptr` is `y16_ptr`.
    pub(crate) accumulate: bool,
}

fn check_args(
    x: &DeviceTensor,
    w: &DeviceTensor,
    ep: EpilogueTc<'_>,
    y32: Option<&DeviceTensor>,
    y16: Option<&DeviceTensor>,
) -> Result<Args> {
    check_args_for(OP, x, w, ep, y32, y16)
}

/// The checks of the `linear_tc` contract (module comment), errors naming `op`: f16 x [.., K] and w
/// [N, K], K a positive multiple of 8, bias / residual / outputs as documented, sizes below 2^31.
pub(crate) fn check_args_for(
    op: &'static str,
    x: &DeviceTensor,
    w: &DeviceTensor,
    ep: EpilogueTc<'_>,
    y32: Option<&DeviceTensor>,
    y16: Option<&DeviceTensor>,
) -> Result<Args> {
    ensure(x.dtype == DType::F16 && w.dtype == DType::F16, op, || {
        format!("x and w must be f16, got {:?} and {:?}", x.dtype, w.dtype)
    })?;
    ensure(w.shape.len() == 2, op, || {
        format!("weight must be [N, K], got {:?}", w.shape)
    })?;
    let (n, k) = (w.shape[0], w.shape[1]);
    ensure(n > 0 && k > 0, op, || format!("empty weight {:?}", w.shape))?;
    ensure(k.is_multiple_of(8), op, || {
        format!("K = {k} must be a multiple of 8 (16-byte f16 chunks)")
    })?;
    ensure(x.shape.last() == Some(&k), op, || {
        format!(
            "x {:?} does not end in K = {k} (weight {:?})",
            x.shape, w.shape
        )
    })?;
    let m = x.numel() / k;
    ensure(m > 0, op, || format!("x {:?} has no rows", x.shape))?;
    ensure(y32.is_some() || y16.is_some(), op, || {
        "no output given (y32 and y16 are both None)".into()
    })?;
    let out_ok = |y: &DeviceTensor, dt: DType| {
        y.dtype == dt && y.shape.last() == Some(&n) && y.numel() == m * n
    };
    if let Some(y) = y32 {
        ensure(out_ok(y, DType::F32), op, || {
            format!(
                "y32 must be f32 holding [{m}, {n}], got {:?} {:?}",
                y.dtype, y.shape
            )
        })?;
    }
    if let Some(y) = y16 {
        ensure(out_ok(y, DType::F16), op, || {
            format!(
                "y16 must be f16 holding [{m}, {n}], got {:?} {:?}",
                y.dtype, y.shape
            )
        })?;
    }
    let fits = |v: usize| v < (1usize << 31);
    ensure(fits(m * k) && fits(n * k) && fits(m * n), op, || {
        format!("sizes M {m}, N {n}, K {k} exceed the kernel's 32-bit range")
    })?;
    let mut flags = 0u32;
    let mut b_ptr = 0u64;
    if let Some(b) = ep.bias {
        ensure(b.dtype == DType::F32 && b.numel() == n, op, || {
            format!(
                "bias must be f32 with N = {n} elements, got {:?} {:?}",
                b.dtype, b.shape
            )
        })?;
        flags |= LINEAR_TC_BIAS;
        b_ptr = b.ptr();
    }
    if ep.gelu {
        flags |= LINEAR_TC_GELU;
    }
    let mut r_ptr = 0u64;
    let mut r_rows = 1usize;
    if let Some(r) = ep.residual {
        ensure(r.dtype == DType::F32 || r.dtype == DType::F16, op, || {
            format!("residual must be f32 or f16, got {:?}", r.dtype)
        })?;
        r_rows = r.numel() / n;
        ensure(
            r.numel().is_multiple_of(n) && r_rows > 0 && m.is_multiple_of(r_rows),
            OP,
            || {
                format!(
                    "residual {:?} must be [R, {n}] with R dividing M = {m}",
                    r.shape
                )
            },
        )?;
        flags |= LINEAR_TC_RESIDUAL;
        if r.dtype == DType::F16 {
            flags |= LINEAR_TC_RES_F16;
        }
        r_ptr = r.ptr();
    }
    if ep.accumulate {
        ensure(ep.residual.is_none() && y32.is_none(), op, || {
            "accumulate (y16 += result) takes neither a residual nor a y32 output".into()
        })?;
        ensure(y16.is_some(), op, || "accumulate needs the y16 output".into())?;
        flags |= LINEAR_TC_RESIDUAL | LINEAR_TC_RES_F16;
        r_ptr = y16.map_or(0, |y| y.ptr());
        r_rows = m;
    }
    Ok(Args {
        m,
        n,
        k,
        r_rows,
        flags,
        b_ptr,
        r_ptr,
        y32_ptr: y32.map_or(0, |y| y.ptr()),
        y16_ptr: y16.map_or(0, |y| y.ptr()),
        accumulate: ep.accumulate,
    })
}

/// y = epilogue(x Wᵀ) on tensor cores; writes `y32` (f32) and/or `y16` (f16), at least one. Shapes and
/// types as in the module comment; every violation is an error and nothing is launched. Runs the plan
/// [`LinearTcPlan::choose`] picks without a workspace (no K split): the 128 x 128 kernel for many rows,
/// the 64 x 32 one when that grid would not fill the GPU. For few rows prefer [`linear_tc_ws`].
pub fn linear_tc(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    ep: EpilogueTc<'_>,
    y32: Option<&mut DeviceTensor>,
    y16: Option<&mut DeviceTensor>,
) -> Result<()> {
    let plan = match (w.shape.as_slice(), x.shape.last()) {
        (&[n, k], Some(_)) if k > 0 => LinearTcPlan::choose(x.numel() / k, n, k, false),
        // Malformed shapes: the checks in `linear_tc_plan` name the problem.
        _ => LinearTcPlan::BIG,
    };
    if routes_to_wg(plan, w) {
        return crate::ops::linear_wg::linear_wg(gpu, x, w, ep, y32, y16);
    }
    linear_tc_plan(gpu, x, w, ep, y32, y16, plan, None)
}

/// Environment variable for the many-row (`Big`) plan of [`linear_tc`] and [`linear_tc_ws`]: unless it
/// is `0`, that plan runs on the Hopper `wgmma` kernel ([`crate::ops::linear_wg::linear_wg`]) when the
/// shape allows it (K % 64 == 0, N % 8 == 0); with `0`, or other shapes, the 128 x 128 `mma.sync`
/// kernel runs. Run 14 (H200, StyleViT base p16 b8): the GEMMs 11.66 ms at 217 TFLOP/s on `linear_wg`
/// against 12.89 ms at 197 on `linear_tc`. Read once per process. ([`linear_tc_plan`] with an explicit
/// plan never reroutes.)
pub const LINEAR_WG_ENV: &str = "STYLEFORGE_LINEAR_WG";

/// Whether [`LINEAR_WG_ENV`] leaves `linear_wg` on (anything but `0`; read once).
pub fn linear_wg_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::gpu::env_on(LINEAR_WG_ENV))
}

/// Whether an automatically chosen `plan` for weight `w` runs on `linear_wg` instead.
fn routes_to_wg(plan: LinearTcPlan, w: &DeviceTensor) -> bool {
    plan == LinearTcPlan::BIG
        && linear_wg_enabled()
        && matches!(w.shape.as_slice(), &[n, k] if crate::ops::linear_wg::supports(n, k))
}

/// [`linear_tc`] with K split over several blocks where the output has few tiles (few rows): the plan
/// of [`LinearTcPlan::choose`] with splitting allowed (its doc has the rule), using `ws` for the
/// partial sums. An error (nothing launched) if `ws` is too small for the plan
/// ([`LinearTcWorkspace::for_shapes`] sizes one). The many-row plan runs on
/// [`crate::ops::linear_tma::linear_tma`] (maps cached in `ws`; GELU too unless
/// `STYLEFORGE_LINEAR_TMA_GELU=0`) unless `STYLEFORGE_LINEAR_TMA=0`, then on `linear_wg` unless `STYLEFORGE_LINEAR_WG=0`, when the shape allows.
pub fn linear_tc_ws(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    ep: EpilogueTc<'_>,
    y32: Option<&mut DeviceTensor>,
    y16: Option<&mut DeviceTensor>,
    ws: &mut LinearTcWorkspace,
) -> Result<()> {
    let plan = match (w.shape.as_slice(), x.shape.last()) {
        (&[n, k], Some(_)) if k > 0 => LinearTcPlan::choose(x.numel() / k, n, k, true),
        _ => LinearTcPlan::BIG,
    };
    // GELU epilogues: with exact (erf) GELU they were slower on linear_tma (run 58, H100, same run: StyleViT
    // p16 b8's fc1+GELU, K = 512, 2.17 + 2.27 ms against 1.96 + 1.98 on linear_wg: linear_tma's ping-pong
    // hides one warpgroup's epilogue only while it is shorter than the other's 8-step mainloop). With the
    // tanh form (ex2 + rcp) they are faster there (run 63: 1.227 + 1.227 ms against 1.751 + 1.751), so
    // they go to linear_tma unless STYLEFORGE_LINEAR_TMA_GELU=0.
    if plan == LinearTcPlan::BIG
        && (!ep.gelu || crate::ops::linear_tma::linear_tma_gelu())
        && crate::ops::linear_tma::linear_tma_enabled()
        && matches!(w.shape.as_slice(), &[n, k] if crate::ops::linear_tma::supports(n, k))
    {
        return crate::ops::linear_tma::linear_tma(gpu, x, w, ep, y32, y16, &mut ws.maps);
    }
    if routes_to_wg(plan, w) {
        return crate::ops::linear_wg::linear_wg(gpu, x, w, ep, y32, y16);
    }
    linear_tc_plan(gpu, x, w, ep, y32, y16, plan, Some(ws))
}

/// [`linear_tc`] with an explicit plan (tests and tuning; build small plans with
/// [`LinearTcPlan::small`]). A `Small` plan with more than one split needs `ws`.
#[allow(clippy::too_many_arguments)]
pub fn linear_tc_plan(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    ep: EpilogueTc<'_>,
    y32: Option<&mut DeviceTensor>,
    y16: Option<&mut DeviceTensor>,
    plan: LinearTcPlan,
    ws: Option<&mut LinearTcWorkspace>,
) -> Result<()> {
    let a = check_args(x, w, ep, y32.as_deref(), y16.as_deref())?;
    let (m, n, k) = (a.m, a.n, a.k);
    let (gx, gy, gz) = plan.grid(m, n);
    ensure(gy <= 65_535 && gx < (1usize << 31), OP, || {
        format!("M = {m}, N = {n} exceed the grid limits of the {plan:?} plan")
    })?;
    let (m32, n32, k32, rr32, flags) = (m as u32, n as u32, k as u32, a.r_rows as u32, a.flags);
    match plan.kernel {
        LinearTcKernel::Big => {
            ensure(plan.splits == 1, OP, || {
                format!("the big kernel does not split K ({plan:?})")
            })?;
            // SAFETY: linear_tc(x, w: *const u16, bias: *const f32, res: *const u8, y32: *mut f32,
            // y16: *mut u16, m, n, k, res_rows, flags: u32) matches the argument list in order and
            // type. The kernel reads x[0..m*k] and w[0..n*k] in 16-byte chunks that start at multiples
            // of 8 elements of rows of k (k % 8 == 0 checked; allocations are 256-byte aligned),
            // clamping rows past M/N to row 0 with a zero-byte copy; bias[0..n] only with
            // LINEAR_TC_BIAS; res[0..r_rows*n] (f32, or f16 with LINEAR_TC_RES_F16) only with
            // LINEAR_TC_RESIDUAL (r_rows ≥ 1); and writes y32/y16[0..m*n] only when non-null. Every
            // size was checked against the tensors in `check_args` and fits 32 bits; the outputs are
            // exclusive borrows, distinct from the inputs. Block = LINEAR_TC_THREADS threads with
            // LINEAR_TC_SMEM_BYTES of dynamic shared memory (the layout the kernel carves); the grid
            // covers ceil(N/BN) x ceil(M/BM) tiles.
            unsafe {
                gpu.launch(
                    "linear_tc",
                    (gx as u32, gy as u32, 1),
                    (LINEAR_TC_THREADS, 1, 1),
                    LINEAR_TC_SMEM_BYTES,
                    kernel_args!(
                        x.ptr(),
                        w.ptr(),
                        a.b_ptr,
                        a.r_ptr,
                        a.y32_ptr,
                        a.y16_ptr,
                        m32,
                        n32,
                        k32,
                        rr32,
                        flags
                    ),
                )
            }
        }
        LinearTcKernel::Small => {
            let ktiles = linear_tc_s_ktiles(k);
            let (splits, kps) = (plan.splits, plan.ktiles_per_split);
            ensure(
                splits >= 1
                    && kps >= 1
                    && splits <= 65_535
                    && kps <= ktiles
                    && (splits - 1) * kps < ktiles
                    && splits * kps >= ktiles,
                OP,
                || {
                    format!(
                        "plan {plan:?} does not cover the {ktiles} K steps of K = {k} with non-empty \
                         splits (use LinearTcPlan::small)"
                    )
                },
            )?;
            let tiles = linear_tc_s_tiles(m, n);
            let (ws_ptr, ctr_ptr) = if splits > 1 {
                let ws = ws.ok_or_else(|| crate::error::Error::Shape {
                    op: OP,
                    msg: format!("a {splits}-way K split needs a LinearTcWorkspace"),
                })?;
                ensure(tiles <= ws.tiles && tiles * splits <= ws.slots, OP, || {
                    format!(
                        "workspace too small: M {m}, N {n} split {splits} ways needs {tiles} \
                             tiles and {} partial slots, it has {} and {} (size it with \
                             LinearTcWorkspace::for_shapes)",
                        tiles * splits,
                        ws.tiles,
                        ws.slots
                    )
                })?;
                (ws.partials.ptr(), ws.counters.ptr())
            } else {
                (0u64, 0u64)
            };
            let kps32 = kps as u32;
            // SAFETY: linear_tc_small(x, w: *const u16, bias: *const f32, res: *const u8, y32: *mut
            // f32, y16: *mut u16, ws: *mut f32, counters: *mut u32, m, n, k, res_rows, flags, kps: u32)
            // matches the argument list in order and type. x, w, bias, res, y32 and y16 are accessed
            // exactly as by `linear_tc` above (same checks, same clamping of rows past M/N). Split z
            // loads K steps z*kps .. min((z+1)*kps, ceil(K/64)), non-empty and inside K (checked just
            // above). With splits > 1 the kernel writes ws[slot*PARTIAL .. +PARTIAL] for slot = tile *
            // splits + z < tiles * splits ≤ ws.slots and atomically updates counters[tile], tile <
            // tiles ≤ ws.tiles (checked); the workspace is borrowed exclusively, so no other launch
            // through this API uses it concurrently, and its counters are 0 (zeroed at creation, reset
            // by every launch). With one split ws and counters are null and never touched. w's first
            // tiles are read before the kernel's griddepcontrol.wait: every w here is uploaded from the
            // host (a copy, which the launch fully waits for), never the output of the kernel before it
            // (module doc); reading it early is in bounds either way. Block =
            // LINEAR_TC_S_THREADS threads with LINEAR_TC_S_SMEM_BYTES (48 KB, no opt-in) of dynamic
            // shared memory; grid (ceil(N/32), ceil(M/64) ≤ 65535, splits ≤ 65535).
            unsafe {
                gpu.launch(
                    "linear_tc_small",
                    (gx as u32, gy as u32, gz as u32),
                    (LINEAR_TC_S_THREADS, 1, 1),
                    LINEAR_TC_S_SMEM_BYTES,
                    kernel_args!(
                        x.ptr(),
                        w.ptr(),
                        a.b_ptr,
                        a.r_ptr,
                        a.y32_ptr,
                        a.y16_ptr,
                        ws_ptr,
                        ctr_ptr,
                        m32,
                        n32,
                        k32,
                        rr32,
                        flags,
                        kps32
                    ),
                )
            }
        }
    }
}

/// Whether [`layer_norm_f16`] takes `linear_tc_layer_norm_hv` where it applies (unless
/// `STYLEFORGE_LN_VEC=0`). Read once.
fn ln_vec_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::gpu::env_on("STYLEFORGE_LN_VEC"))
}

/// LayerNorm(x + residual) · γ + β over the last dimension D (as [`crate::ops::layer_norm::layer_norm`]),
/// writing the f32 result to `y` (optional) and its f16 rounding to `y16` (the next GEMM's operand).
/// x and residual: both f32 (`linear_tc_layer_norm`) or both f16 (`linear_tc_layer_norm_h`: the fast
/// StyleViT's f16 residual stream; statistics still in f32), one element count and last dimension D;
/// y: f32; gamma, beta: f32 [D]; y16 f16. f16 x without residual or f32 output, D % 8 == 0, D ≤ 512 and
/// at least `LAYER_NORM_HV_MIN_ROWS` rows runs on `linear_tc_layer_norm_hv` (16-byte accesses, 4 rows per
/// warp) unless `STYLEFORGE_LN_VEC=0`.
pub fn layer_norm_f16(
    gpu: &Gpu,
    x: &DeviceTensor,
    residual: Option<&DeviceTensor>,
    gamma: &DeviceTensor,
    beta: &DeviceTensor,
    y: Option<&mut DeviceTensor>,
    y16: &mut DeviceTensor,
) -> Result<()> {
    let op: &str = if x.dtype == DType::F16 {
        "linear_tc_layer_norm_h"
    } else {
        "linear_tc_layer_norm"
    };
    let inputs_ok = [Some(x), residual]
        .iter()
        .flatten()
        .all(|t| t.dtype == x.dtype && matches!(t.dtype, DType::F32 | DType::F16));
    let rest_f32 = [Some(gamma), Some(beta), y.as_deref()]
        .iter()
        .flatten()
        .all(|t| t.dtype == DType::F32);
    ensure(inputs_ok && rest_f32 && y16.dtype == DType::F16, op, || {
        "x and residual both f32 or both f16, f32 gamma, beta and y, an f16 y16 only".into()
    })?;
    let d = *x.shape.last().unwrap_or(&0);
    ensure(d > 0 && x.numel() > 0, op, || {
        format!("x {:?} is empty", x.shape)
    })?;
    let rows = x.numel() / d;
    if let Some(y) = y.as_deref() {
        ensure(
            y.numel() == x.numel() && y.shape.last() == Some(&d),
            op,
            || format!("y {:?} vs x {:?}", y.shape, x.shape),
        )?;
    }
    ensure(
        y16.numel() == x.numel() && y16.shape.last() == Some(&d),
        op,
        || format!("y16 {:?} vs x {:?}", y16.shape, x.shape),
    )?;
    ensure(gamma.numel() == d && beta.numel() == d, op, || {
        format!(
            "gamma {:?} and beta {:?} must have D = {d} elements",
            gamma.shape, beta.shape
        )
    })?;
    if let Some(r) = residual {
        ensure(r.numel() == x.numel(), op, || {
            format!("residual {:?} vs x {:?}", r.shape, x.shape)
        })?;
    }
    ensure(x.numel() < (1usize << 31), op, || {
        format!("{rows} rows of {d} are too many")
    })?;
    if x.dtype == DType::F16 && residual.is_none() && y.is_none() && d.is_multiple_of(8) && d <= LAYER_NORM_HV_MAX_D as usize && rows >= LAYER_NORM_HV_MIN_ROWS as usize && ln_vec_enabled() {
        return layer_norm_f16_hv(gpu, x, gamma, beta, y16);
    }
    let blocks = rows.div_ceil(LAYER_NORM_ROWS as usize);
    let (r_ptr, has_res) = residual.map_or((0u64, 0u32), |r| (r.ptr(), 1));
    let y_ptr = y.map_or(0u64, |y| y.ptr());
    let (rows32, d32) = (rows as u32, d as u32);
    // SAFETY: linear_tc_layer_norm(x, res: *const f32, ..) / linear_tc_layer_norm_h(x, res: *const u16,
    // ..) (the kernel of x's dtype, res of the same dtype, checked), then (gamma, beta: *const f32,
    // y: *mut f32, y16: *mut u16, rows, d, has_res: u32): warp w of block b handles row b*LAYER_NORM_ROWS + w < rows, reading x and res (only
    // if has_res) at [row*d, row*d + d), gamma/beta at [0, d), and writing y (when non-null) and y16
    // there. Every tensor holds rows*d (or d) elements of its type (checked above).
    unsafe {
        gpu.launch(
            op,
            (blocks as u32, 1, 1),
            (32 * LAYER_NORM_ROWS, 1, 1),
            0,
            kernel_args!(
                x.ptr(),
                r_ptr,
                gamma.ptr(),
                beta.ptr(),
                y_ptr,
                y16.ptr(),
                rows32,
                d32,
                has_res
            ),
        )
    }
}

/// y16 = LayerNorm(x) · γ + β on `linear_tc_layer_norm_hv` ([`layer_norm_f16`] takes it for at least
/// `LAYER_NORM_HV_MIN_ROWS` rows): x, y16 f16 [.., D] with D % 8 == 0 and D ≤ `LAYER_NORM_HV_MAX_D`, gamma
/// and beta f32 [D]. Every violation is an error and nothing is launched.
pub fn layer_norm_f16_hv(gpu: &Gpu, x: &DeviceTensor, gamma: &DeviceTensor, beta: &DeviceTensor, y16: &mut DeviceTensor) -> Result<()> {
    const OP: &str = "linear_tc_layer_norm_hv";
    let d = *x.shape.last().unwrap_or(&0);
    ensure(
        x.dtype == DType::F16 && y16.dtype == DType::F16 && gamma.dtype == DType::F32 && beta.dtype == DType::F32,
        OP,
        || "x and y16 f16, gamma and beta f32 only".into(),
    )?;
    ensure(d > 0 && d.is_multiple_of(8) && d <= LAYER_NORM_HV_MAX_D as usize, OP, || {
        format!("D {d} must be a positive multiple of 8 up to {LAYER_NORM_HV_MAX_D}")
    })?;
    ensure(y16.numel() == x.numel() && y16.shape.last() == Some(&d) && gamma.numel() == d && beta.numel() == d, OP, || {
        format!("y16 {:?}, gamma {:?}, beta {:?} must match x {:?}", y16.shape, gamma.shape, beta.shape, x.shape)
    })?;
    ensure(x.numel() < (1usize << 31), OP, || format!("x {:?} is too large", x.shape))?;
    let rows = x.numel() / d;
    let per_block = (LAYER_NORM_ROWS * LAYER_NORM_HV_ROWS) as usize;
    // SAFETY: linear_tc_layer_norm_hv(x: *const u16, gamma, beta: *const f32, y16: *mut u16, rows, d: u32):
    // warp w of block b handles rows (b·LAYER_NORM_ROWS + w)·LAYER_NORM_HV_ROWS + r < rows (r <
    // LAYER_NORM_HV_ROWS), reading x at [row·d, row·d + d) and writing y16 there, gamma / beta at [0, d)
    // (16-byte accesses: d % 8 == 0 and tensor bases are 256-byte aligned). x and y16 hold rows·d f16,
    // gamma and beta d f32 (checked above).
    unsafe {
        gpu.launch(
            OP,
            (rows.div_ceil(per_block) as u32, 1, 1),
            (32 * LAYER_NORM_ROWS, 1, 1),
            0,
            kernel_args!(x.ptr(), gamma.ptr(), beta.ptr(), y16.ptr(), rows as u32, d as u32),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpu_kernels::launch::{
        LINEAR_TC_MAX_SPLITS, LINEAR_TC_MIN_SPLIT_KTILES, LINEAR_TC_SPLIT_TARGET_BLOCKS, LINEAR_TC_TARGET_BLOCKS,
    };

    fn small(splits: usize, kps: usize) -> LinearTcPlan {
        LinearTcPlan {
            kernel: LinearTcKernel::Small,
            splits,
            ktiles_per_split: kps,
        }
    }

    #[test]
    fn plan_for_style_vit_shapes() {
        // Base (D 512, FFN 2048), 64 tokens: qkv, out-proj, fc1, fc2.
        assert_eq!(LinearTcPlan::choose(64, 1536, 512, true), small(2, 4));
        assert_eq!(LinearTcPlan::choose(64, 512, 512, true), small(4, 2));
        assert_eq!(LinearTcPlan::choose(64, 2048, 512, true), small(2, 4));
        assert_eq!(LinearTcPlan::choose(64, 512, 2048, true), small(5, 7));
        // 128 tokens (content + style batched): qkv and fc1 have enough tiles unsplit.
        assert_eq!(LinearTcPlan::choose(128, 1536, 512, true), small(1, 8));
        assert_eq!(LinearTcPlan::choose(128, 2048, 512, true), small(1, 8));
        assert_eq!(LinearTcPlan::choose(128, 512, 512, true), small(3, 3));
        assert_eq!(LinearTcPlan::choose(128, 512, 2048, true), small(3, 11));
        // Without a workspace: the same kernel, one split.
        assert_eq!(LinearTcPlan::choose(64, 512, 2048, false), small(1, 32));
        // Many rows: the 128 x 128 kernel (the 32768-row case), with or without a workspace.
        assert_eq!(
            LinearTcPlan::choose(32768, 512, 2048, true),
            LinearTcPlan::BIG
        );
        assert_eq!(
            LinearTcPlan::choose(4096, 1536, 512, false),
            LinearTcPlan::BIG
        );
    }

    #[test]
    fn plans_cover_k_with_nonempty_splits_and_fill_the_gpu() {
        for m in [1usize, 7, 64, 128, 200, 600, 2000] {
            for n in [1usize, 33, 45, 256, 512, 1536, 2048] {
                for k in [8usize, 40, 64, 264, 512, 520, 1024, 2048, 8192] {
                    for allow in [false, true] {
                        let p = LinearTcPlan::choose(m, n, k, allow);
                        let big = m.div_ceil(128) * n.div_ceil(128);
                        if p.kernel == LinearTcKernel::Big {
                            assert!(big >= LINEAR_TC_TARGET_BLOCKS, "{m}x{n}x{k}: {p:?}");
                            assert_eq!(p.splits, 1);
                            continue;
                        }
                        assert!(big < LINEAR_TC_TARGET_BLOCKS, "{m}x{n}x{k}: {p:?}");
                        let kt = linear_tc_s_ktiles(k);
                        let (s, kps) = (p.splits, p.ktiles_per_split);
                        assert!(s >= 1 && kps >= 1, "{m}x{n}x{k}: {p:?}");
                        assert!(s * kps >= kt && (s - 1) * kps < kt, "{m}x{n}x{k}: {p:?}");
                        assert!(s <= LINEAR_TC_MAX_SPLITS, "{m}x{n}x{k}: {p:?}");
                        if !allow {
                            assert_eq!(s, 1, "{m}x{n}x{k}: {p:?}");
                            continue;
                        }
                        if s > 1 {
                            assert!(kps >= LINEAR_TC_MIN_SPLIT_KTILES, "{m}x{n}x{k}: {p:?}");
                        }
                        // Either the grid is full or a cap stopped the splitting.
                        let blocks = linear_tc_s_tiles(m, n) * s;
                        let capped = s == LINEAR_TC_MAX_SPLITS
                            || kt / (s + 1) < LINEAR_TC_MIN_SPLIT_KTILES
                            || LinearTcPlan::small(k, s + 1).splits == s;
                        assert!(
                            blocks >= LINEAR_TC_SPLIT_TARGET_BLOCKS || capped,
                            "{m}x{n}x{k}: {p:?}, {blocks} blocks"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn small_plan_evens_out_and_drops_empty_splits() {
        // K 40: one K step, so one split whatever is asked.
        assert_eq!(LinearTcPlan::small(40, 5), small(1, 1));
        assert_eq!(LinearTcPlan::small(8, 0), small(1, 1));
        // K 264: 5 steps; 4 splits of 2 would leave the 4th empty -> 3 splits (2, 2, 1).
        assert_eq!(LinearTcPlan::small(264, 4), small(3, 2));
        // K 2048: 32 steps, every split one step.
        assert_eq!(LinearTcPlan::small(2048, usize::MAX), small(32, 1));
        assert_eq!(LinearTcPlan::small(512, 3), small(3, 3));
    }

    #[test]
    fn workspace_need_takes_the_largest_split_launch() {
        let plans = [
            (64, 512, 2048),
            (64, 1536, 512),
            (32768, 512, 512),
            (64, 77, 40),
        ]
        .map(|(m, n, k)| (m, n, LinearTcPlan::choose(m, n, k, true)));
        // fc2: 16 tiles x 5 splits = 80 slots; qkv: 48 tiles x 2 = 96 slots; the others don't split.
        assert_eq!(workspace_need(plans), (48, 96));
        assert_eq!(workspace_need([]), (1, 1));
    }
}
