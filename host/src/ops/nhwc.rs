//! Launchers of the NHWC glue kernels (gpu-kernels/src/kernels/nhwc.rs) of the fast (f16) TransformerNet:
//! input packing (NCHW f32 -> NHWC f16, 4 channels) and InstanceNorm on `conv2d_tc`'s f16 output
//! (`nhwc_in_coef` combines the conv's per-tile partials into per-channel affine coefficients,
//! `nhwc_in_apply` applies them with ReLU or a residual add, f16 in and out).
use gpu_kernels::launch::{InNorm, ELEMENTWISE_BLOCK, INSTANCE_NORM_EPS, NHWC_APPLY_PAD_THREADS, NHWC_COEF_THREADS, NORM_SUMS_STRIDE};

use crate::error::{ensure, Result};
use crate::gpu::{blocks_for, DType, DeviceTensor, Gpu, Layout};
use crate::kernel_args;
use crate::ops::conv2d_tc::{conv2d_tc_part_tiling, PartTiling};
use crate::ops::conv2d_tma::{PadMode, PaddedInput};

const OP: &str = "nhwc";
/// Channels of the packed input (RGB + one zero channel: 8 bytes per pixel for conv2d_tc's 8-byte gather).
pub const PACKED_INPUT_CHANNELS: usize = 4;

fn fits32(v: usize) -> bool {
    v < (1 << 31)
}

/// InstanceNorm statistics as f64 plane sums (Σx, Σx²), `layers` slots of `planes` (N·C) planes: a conv
/// epilogue adds each tile's statistics to its slot ([`NormStats::Sums`]; `conv2d_tma`) and the norm's
/// consumer computes the coefficients from them itself ([`NormCoef::Sums`]; `nhwc_in_apply_pad`), so no
/// `nhwc_in_coef` launch sits between the two. [`NormSums::zero`] clears every slot with one memset, queued
/// before the convs that add to them.
pub struct NormSums {
    t: DeviceTensor,
    planes: usize,
}

impl NormSums {
    pub fn new(layers: usize, planes: usize) -> Result<Self> {
        let stride = NORM_SUMS_STRIDE as usize;
        Ok(NormSums { t: DeviceTensor::empty(&[layers.max(1), planes, stride], DType::F64, Layout::RowMajor)?, planes })
    }
    /// Queues the zero fill of every slot on `gpu`'s stream.
    pub fn zero(&mut self, gpu: &Gpu) -> Result<()> {
        self.t.zero_async(gpu)
    }
    /// Slot `i` (its address and plane count); an error past the last one.
    pub fn slot(&self, i: usize) -> Result<SumsSlot> {
        ensure(i < self.t.shape[0], OP, || format!("norm sums: slot {i} of {}", self.t.shape[0]))?;
        Ok(SumsSlot { ptr: self.t.ptr() + (i * self.planes * NORM_SUMS_STRIDE as usize * 8) as u64, planes: self.planes })
    }
    /// Downloads slot `i`'s sums per plane, (Σx, Σx²) pairs (tests).
    pub fn download(&self, gpu: &Gpu, i: usize) -> Result<Vec<f64>> {
        self.slot(i)?;
        gpu.synchronize()?;
        let stride = NORM_SUMS_STRIDE as usize;
        let all = self.t.to_vec_f64()?;
        Ok(all[i * self.planes * stride..(i + 1) * self.planes * stride].chunks(stride).flat_map(|p| [p[0], p[1]]).collect())
    }
}

/// One slot of a [`NormSums`]: `planes` planes of `NORM_SUMS_STRIDE` f64 (Σx, Σx², padding) at device
/// address `ptr`. A plain address: the stream order
/// (zero, then the conv adding, then the consumer reading) is the caller's, as for any kernel argument.
#[derive(Clone, Copy, Debug)]
pub struct SumsSlot {
    pub(crate) ptr: u64,
    pub(crate) planes: usize,
}

/// Where a conv's epilogue leaves its InstanceNorm statistics.
pub enum NormStats<'a> {
    /// Per-tile (mean, M2) partials (f32), for `nhwc_in_coef`.
    Partials(&'a mut DeviceTensor),
    /// Added to a slot of f64 plane sums (zeroed before), for a consumer taking [`NormCoef::Sums`].
    Sums(SumsSlot),
}

impl<'a> From<&'a mut DeviceTensor> for NormStats<'a> {
    fn from(part: &'a mut DeviceTensor) -> Self {
        NormStats::Partials(part)
    }
}

/// Where a norm's consumer finds its coefficients (a, b) per (sample, channel).
#[derive(Clone, Copy)]
pub enum NormCoef<'a> {
    /// `nhwc_in_coef`'s output, coef[(n·C + c)·2 ..+2] f32.
    Coef(&'a DeviceTensor),
    /// Computed by the consumer from the plane sums and the norm's γ, β (f32 [C] each).
    Sums { sums: SumsSlot, gamma: &'a DeviceTensor, beta: &'a DeviceTensor },
}

impl<'a> From<&'a DeviceTensor> for NormCoef<'a> {
    fn from(coef: &'a DeviceTensor) -> Self {
        NormCoef::Coef(coef)
    }
}

impl NormCoef<'_> {
    /// Checks the coefficients cover `n` samples of `c` channels (planes of `count` values); the
    /// `InNorm` kernel argument.
    pub(crate) fn in_norm(&self, what: &str, n: usize, c: usize, count: usize) -> Result<InNorm> {
        let (coef, sums, gamma, beta) = self.args(what, n, c)?;
        ensure(count > 0 && count < (1 << 31), OP, || format!("{what}: planes of {count} values"))?;
        Ok(InNorm { coef, sums, gamma, beta, eps: INSTANCE_NORM_EPS, count: count as u32 })
    }
    /// Checks the coefficients cover `n` samples of `c` channels; returns the kernel arguments (coef, sums,
    /// gamma, beta), the unused ones 0.
    fn args(&self, what: &str, n: usize, c: usize) -> Result<(u64, u64, u64, u64)> {
        match *self {
            NormCoef::Coef(coef) => {
                ensure(coef.dtype == DType::F32 && coef.numel() >= n * c * 2, OP, || {
                    format!("{what}: coef needs {} f32, got {:?} {:?}", n * c * 2, coef.dtype, coef.shape)
                })?;
                Ok((coef.ptr(), 0, 0, 0))
            }
            NormCoef::Sums { sums, gamma, beta } => {
                ensure(sums.planes >= n * c, OP, || format!("{what}: sums hold {} planes, {n}x{c} needed", sums.planes))?;
                for (name, t) in [("gamma", gamma), ("beta", beta)] {
                    ensure(t.dtype == DType::F32 && t.shape == [c], OP, || {
                        format!("{what}: {name} must be f32 [{c}], got {:?} {:?}", t.dtype, t.shape)
                    })?;
                }
                Ok((0, sums.ptr, gamma.ptr(), beta.ptr()))
            }
        }
    }
}

/// NCHW f32 `x` [N, 3, H, W] -> NHWC f16 `y` [N, H, W, 4] (channel 3 zero, nearest even, saturated).
pub fn nhwc_pack_input(gpu: &Gpu, x: &DeviceTensor, y: &mut DeviceTensor) -> Result<()> {
    ensure(
        x.dtype == DType::F32 && x.layout != Layout::Nhwc && x.shape.len() == 4 && x.shape[1] == 3,
        OP,
        || {
            format!(
                "pack input: x must be NCHW f32 [N, 3, H, W], got {:?} {:?} {:?}",
                x.layout, x.dtype, x.shape
            )
        },
    )?;
    let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3]);
    let want = [n, h, w, PACKED_INPUT_CHANNELS];
    ensure(
        y.dtype == DType::F16 && y.layout == Layout::Nhwc && y.shape == want,
        OP,
        || {
            format!(
                "pack input: y must be NHWC f16 {want:?}, got {:?} {:?} {:?}",
                y.layout, y.dtype, y.shape
            )
        },
    )?;
    let n_pix = n * h * w;
    ensure(n_pix > 0, OP, || {
        format!("pack input: empty input {:?}", x.shape)
    })?;
    let hw = h * w;
    // SAFETY: nhwc_pack_input(x: *const f32, y: *mut u32, n_pix: usize, hw: usize): thread `pix < n_pix`
    // reads x[(n*3 + c)*hw + i] (c < 3, n = pix / hw < N, i < hw: inside the N*3*H*W floats of x) and writes
    // the 2 words y[pix*2 ..+2] = 4 f16 of pixel pix, inside y's N*H*W*4 f16 (shapes checked above;
    // device allocations are 256-byte aligned, so the 32-bit stores are aligned).
    unsafe {
        gpu.launch(
            "nhwc_pack_input",
            (blocks_for(n_pix, ELEMENTWISE_BLOCK), 1, 1),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            kernel_args!(x.ptr(), y.ptr(), n_pix, hw),
        )
    }
}

/// InstanceNorm coefficients from `conv2d_tc`'s partials for its output shape `out` = [N, P, Q, C]:
/// coef[(n*C + c)*2 ..+2] = (γ[c]·rstd, β[c] − mean·γ[c]·rstd), biased variance, eps = INSTANCE_NORM_EPS.
pub fn nhwc_in_coef(
    gpu: &Gpu,
    out: &[usize; 4],
    part: &DeviceTensor,
    gamma: &DeviceTensor,
    beta: &DeviceTensor,
    coef: &mut DeviceTensor,
) -> Result<()> {
    nhwc_in_coef_tiled(
        gpu,
        out,
        &conv2d_tc_part_tiling(out),
        part,
        gamma,
        beta,
        coef,
    )
}

/// As [`nhwc_in_coef`] for partials tiled as `tiling` says (e.g. the 2-D tiles of
/// `conv2d_tc_c4_halo9`, which returns its tiling); `tiling` must cover the P x Q plane exactly.
pub fn nhwc_in_coef_tiled(
    gpu: &Gpu,
    out: &[usize; 4],
    tiling: &PartTiling,
    part: &DeviceTensor,
    gamma: &DeviceTensor,
    beta: &DeviceTensor,
    coef: &mut DeviceTensor,
) -> Result<()> {
    let [n, p, q, c] = *out;
    let pq = p * q;
    let tiles = tiling.tiles;
    ensure(n > 0 && pq > 0 && c > 0, OP, || {
        format!("coef: empty output shape {out:?}")
    })?;
    ensure(tiling.is_valid_for(pq), OP, || {
        format!("coef: tiling {tiling:?} does not cover the {p}x{q} plane of {out:?}")
    })?;
    let part_len = tiling.part_len(n, c);
    ensure(
        part.dtype == DType::F32 && part.numel() >= part_len,
        OP,
        || {
            format!(
                "coef: partials need {part_len} f32, got {:?} {:?}",
                part.dtype, part.shape
            )
        },
    )?;
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        ensure(t.dtype == DType::F32 && t.shape == [c], OP, || {
            format!(
                "coef: {name} must be f32 [{c}], got {:?} {:?}",
                t.dtype, t.shape
            )
        })?;
    }
    ensure(
        coef.dtype == DType::F32 && coef.numel() >= n * c * 2,
        OP,
        || format!("coef: needs {} f32, got {:?}", n * c * 2, coef.shape),
    )?;
    ensure(
        fits32(n * c * tiles * 2)
            && fits32(pq)
            && fits32(tiling.tile_w)
            && fits32(tiling.tile_h)
            && n * c < 65536 * 1024,
        OP,
        || format!("coef: output {out:?} too large"),
    )?;
    let (c32, tiles32) = (c as u32, tiles as u32);
    let (tx32, tw32, th32) = (
        tiling.tiles_x as u32,
        tiling.tile_w as u32,
        tiling.tile_h as u32,
    );
    let (qc32, pr32) = (tiling.q_cols as u32, tiling.p_rows as u32);
    // SAFETY: nhwc_in_coef(part: *const f32, coef: *mut f32, gamma, beta: *const f32, c, tiles, tiles_x,
    // tile_w, tile_h, q_cols, p_rows: u32, eps: f32): block p < N*C reads part[p*tiles*2 .. (p+1)*tiles*2]
    // (inside the N*C*tiles*2 checked above), gamma/beta[p % C] (C elements each) and writes coef[2p ..2p+2]
    // (N*C*2 checked). The tiling covers the plane (checked), so every tile's pixel count is positive and
    // p_rows*q_cols = P*Q < 2^31 (checked). Block = NHWC_COEF_THREADS threads with 3 floats of shared memory
    // per warp, as the kernel uses.
    unsafe {
        gpu.launch(
            "nhwc_in_coef",
            ((n * c) as u32, 1, 1),
            (NHWC_COEF_THREADS, 1, 1),
            3 * NHWC_COEF_THREADS / 32 * 4,
            kernel_args!(
                part.ptr(),
                coef.ptr(),
                gamma.ptr(),
                beta.ptr(),
                c32,
                tiles32,
                tx32,
                tw32,
                th32,
                qc32,
                pr32,
                INSTANCE_NORM_EPS
            ),
        )
    }
}

/// x = a·x + b per (sample, channel) from `coef` (see [`nhwc_in_coef`]), then ReLU if `relu`, in place on
/// NHWC f16 [N, P, Q, C] with C % 8 == 0.
pub fn nhwc_in_apply(
    gpu: &Gpu,
    x: &mut DeviceTensor,
    coef: &DeviceTensor,
    relu: bool,
) -> Result<()> {
    let desc = (x.dtype, x.layout, x.shape.clone());
    apply(gpu, x, coef, relu, None, x.ptr(), desc)
}

/// `acc = a·x + b + acc` (no ReLU): the residual blocks' update of the trunk (NHWC f16, same shapes).
pub fn nhwc_in_apply_residual(
    gpu: &Gpu,
    x: &DeviceTensor,
    coef: &DeviceTensor,
    acc: &mut DeviceTensor,
) -> Result<()> {
    let desc = (acc.dtype, acc.layout, acc.shape.clone());
    apply(
        gpu,
        x,
        coef,
        false,
        Some((acc.ptr(), desc.clone(), None)),
        acc.ptr(),
        desc,
    )
}

/// `acc = a·x + b + f16(relu(a'·acc + b'))` with (a', b') per (sample, channel) from `acc_coef`: the
/// first residual block's update when the trunk still holds the raw output of the conv before it (its
/// norm + ReLU folded into the consumers instead of applied on its own); the normalised trunk is rounded
/// to f16 before the add, as if it had been stored.
pub fn nhwc_in_apply_residual_normed(
    gpu: &Gpu,
    x: &DeviceTensor,
    coef: &DeviceTensor,
    acc: &mut DeviceTensor,
    acc_coef: &DeviceTensor,
) -> Result<()> {
    let desc = (acc.dtype, acc.layout, acc.shape.clone());
    apply(
        gpu,
        x,
        coef,
        false,
        Some((acc.ptr(), desc.clone(), Some(acc_coef))),
        acc.ptr(),
        desc,
    )
}

type Desc = (DType, Layout, Vec<usize>);

/// Checks and launches `nhwc_in_apply` with output `y_ptr` (described by `y`) and an optional residual.
fn apply(
    gpu: &Gpu,
    x: &DeviceTensor,
    coef: &DeviceTensor,
    relu: bool,
    res: Option<(u64, Desc, Option<&DeviceTensor>)>,
    y_ptr: u64,
    y: Desc,
) -> Result<()> {
    ensure(
        x.dtype == DType::F16 && x.layout == Layout::Nhwc && x.shape.len() == 4,
        OP,
        || {
            format!(
                "apply: x must be NHWC f16 [N, P, Q, C], got {:?} {:?} {:?}",
                x.layout, x.dtype, x.shape
            )
        },
    )?;
    let want: Desc = (DType::F16, Layout::Nhwc, x.shape.clone());
    ensure(y == want, OP, || {
        format!("apply: y must be NHWC f16 {:?}, got {y:?}", x.shape)
    })?;
    if let Some((_, r, _)) = &res {
        ensure(*r == want, OP, || {
            format!("apply: residual must be NHWC f16 {:?}, got {r:?}", x.shape)
        })?;
    }
    let (n, c) = (x.shape[0], x.shape[3]);
    let total = x.numel();
    ensure(c > 0 && c % 8 == 0 && total > 0, OP, || {
        format!(
            "apply: channels must be a positive multiple of 8, got {:?}",
            x.shape
        )
    })?;
    ensure(
        coef.dtype == DType::F32 && coef.numel() >= n * c * 2,
        OP,
        || format!("apply: coef needs {} f32, got {:?}", n * c * 2, coef.shape),
    )?;
    let res_coef = res.as_ref().and_then(|r| r.2);
    if let Some(rc) = res_coef {
        ensure(rc.dtype == DType::F32 && rc.numel() >= n * c * 2, OP, || {
            format!(
                "apply: residual coef needs {} f32, got {:?} {:?}",
                n * c * 2,
                rc.dtype,
                rc.shape
            )
        })?;
    }
    ensure(fits32(total), OP, || {
        format!("apply: {total} elements need 64-bit indexing")
    })?;
    let groups = total / 8;
    let pqc = (total / n) as u32;
    let blocks = blocks_for(groups, ELEMENTWISE_BLOCK).min(8192);
    // SAFETY: nhwc_in_apply(x, y, residual: 16-byte groups, coef: *const f32, groups, c, pqc, relu: u32,
    // res_coef: *const f32): res_coef (non-null only with a residual) is read like coef (N*C*2 checked);
    // group i < groups reads x[i], residual[i] (when non-null) and writes y[i], 16 bytes each, inside the
    // N*P*Q*C f16 of x, y and residual (same shape, checked; 256-byte aligned allocations, C % 8 == 0 so
    // groups never straddle a pixel); coef[(n*C + ch)*2 ..+16] with n < N, ch + 8 ≤ C (N*C*2 checked).
    // Each group is read and written by one thread, so y aliasing x or residual is sound.
    unsafe {
        gpu.launch(
            "nhwc_in_apply",
            (blocks, 1, 1),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            kernel_args!(
                x.ptr(),
                y_ptr,
                res.as_ref().map_or(0, |r| r.0),
                coef.ptr(),
                groups as u32,
                c as u32,
                pqc,
                relu as u32,
                res_coef.map_or(0, |rc| rc.ptr())
            ),
        )
    }
}

/// Where [`nhwc_in_apply_pad`] writes.
pub enum PadOut<'a> {
    /// The padded image (for `conv2d_tma`), its border reflected or replicated as its `mode` says.
    Padded(&'a mut PaddedInput),
    /// A plain NHWC f16 `[N, H, W, C]` image (the last residual block's output, for deconv1).
    Plain(&'a mut DeviceTensor),
}

/// `nhwc_in_apply` from the raw conv output `x` (NHWC f16 `[N, H, W, C]`) into `out`: relu?(a·x + b)
/// (+ the residual's interior pixel), padded by 1 when `out` is [`PadOut::Padded`] (reflected or replicated
/// as its [`PadMode`] says). The same
/// f32 arithmetic and single f16 rounding as [`nhwc_in_apply`].
pub fn nhwc_in_apply_pad<'a>(
    gpu: &Gpu,
    x: &DeviceTensor,
    coef: impl Into<NormCoef<'a>>,
    relu: bool,
    residual: Option<&PaddedInput>,
    out: PadOut<'_>,
) -> Result<()> {
    ensure(
        x.dtype == DType::F16 && x.layout == Layout::Nhwc && x.shape.len() == 4,
        OP,
        || format!("apply pad: x must be NHWC f16 [N, H, W, C], got {:?} {:?} {:?}", x.layout, x.dtype, x.shape),
    )?;
    let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    ensure(n > 0 && h >= 2 && w >= 2 && c > 0 && c % 8 == 0, OP, || {
        format!("apply pad: x {:?} needs H, W ≥ 2 and C a positive multiple of 8", x.shape)
    })?;
    if let Some(r) = residual {
        ensure(r.image_shape() == [n, h, w, c], OP, || {
            format!("apply pad: residual image {:?} differs from x {:?}", r.image_shape(), x.shape)
        })?;
    }
    let (coef_ptr, sums_ptr, gamma_ptr, beta_ptr) = coef.into().args("apply pad", n, c)?;
    let (y_ptr, pad) = match out {
        PadOut::Padded(p) => {
            ensure(p.image_shape() == [n, h, w, c], OP, || {
                format!("apply pad: output image {:?} differs from x {:?}", p.image_shape(), x.shape)
            })?;
            (p.t.ptr(), match p.mode { PadMode::Reflect => 1u32, PadMode::Replicate => 2 })
        }
        PadOut::Plain(y) => {
            ensure(y.dtype == DType::F16 && y.layout == Layout::Nhwc && y.shape == x.shape, OP, || {
                format!("apply pad: y must be NHWC f16 {:?}, got {:?} {:?} {:?}", x.shape, y.layout, y.dtype, y.shape)
            })?;
            (y.ptr(), 0u32)
        }
    };
    let padded_numel = n * (h + 2) * (w + 2) * c;
    ensure(fits32(padded_numel), OP, || format!("apply pad: {padded_numel} elements need 64-bit indexing"))?;
    ensure(c / 8 <= NHWC_APPLY_PAD_THREADS as usize, OP, || {
        format!("apply pad: {c} channels above the {} a block covers", 8 * NHWC_APPLY_PAD_THREADS)
    })?;
    ensure(sums_ptr == 0 || c <= NHWC_APPLY_PAD_THREADS as usize, OP, || {
        format!("apply pad: {c} channels above the {NHWC_APPLY_PAD_THREADS} whose coefficients a block computes from sums")
    })?;
    let rows = n * (h + 2 * (pad != 0) as usize);
    // SAFETY: nhwc_in_apply_pad(x, coef, residual, y, h, w, c, relu, pad_mode, sums, gamma, beta, eps): block `row` < rows =
    // N·(H + 2p) (p = 1 for pad_mode 1 or 2, 0 for 0) writes the W + 2p pixels of output row `row` of y
    // (16-byte groups; y's whole size, the padded PaddedInput tensor or the plain [N, H, W, C] one, checked)
    // and reads x at reflected or clamped source pixels (sy < H, sx < W: reflect needs H, W ≥ 2, checked) inside x's N·H·W·C f16, the residual (when
    // non-null, a padded [N, H + 2, W + 2, C] image of the same N, H, W, C, checked) at (sy + 1, sx + 1),
    // and coef[(n·C + 8g)·2 ..+16] (N·C·2 f32 checked) or, with sums (coef then 0 and unread), sums[(n·C +
    // ch)·NORM_SUMS_STRIDE ..+2] (N·C planes checked) and γ, β [C] (checked), thread ch < C ≤ NHWC_APPLY_PAD_THREADS (checked)
    // writing 2·C floats of dynamic shared memory (given). C/8 ≤ NHWC_APPLY_PAD_THREADS (checked), so every
    // channel group has a thread. y is an exclusive borrow, so it aliases neither x nor the residual.
    // Indices fit 31 bits (checked); allocations are 256-byte aligned and C % 8 == 0, so every group is
    // 16-byte aligned.
    unsafe {
        gpu.launch(
            "nhwc_in_apply_pad",
            (rows as u32, 1, 1),
            (NHWC_APPLY_PAD_THREADS, 1, 1),
            if sums_ptr == 0 { 0 } else { (2 * c * 4) as u32 },
            kernel_args!(
                x.ptr(),
                coef_ptr,
                residual.map_or(0, |r| r.t.ptr()),
                y_ptr,
                h as u32,
                w as u32,
                c as u32,
                relu as u32,
                pad,
                sums_ptr,
                gamma_ptr,
                beta_ptr,
                INSTANCE_NORM_EPS
            ),
        )
    }
}
