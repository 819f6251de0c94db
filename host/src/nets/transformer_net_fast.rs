//! TransformerNet on tensor cores (the fast path): f16 activations and weights, fp32 accumulation and
//! InstanceNorm statistics.
//!
//! Activations are NHWC f16. The NCHW f32 input is packed into 4 channels (RGB + 0; conv1 gathers one
//! 8-byte tap at a time), every conv is [`conv2d_tc`](crate::ops::conv2d_tc::conv2d_tc), which writes its
//! f16 output and per-tile InstanceNorm partials computed from the f32 accumulators; `nhwc_in_coef` turns
//! those into per-channel affine coefficients. Where it measured faster (run 11, H200), the NEXT conv
//! applies the norm + ReLU to every element it loads (the input norm of `conv2d_tc`: f32 math, one f16
//! rounding, the values `nhwc_in_apply` would store): in1 in conv2, in2 in conv3, each residual block's
//! first norm in its second conv, in5 in deconv3. in3 and in4 stay a pass of their own (`nhwc_in_apply`
//! in place): deconv2 gathers each input element 36 times (3x3 taps of a 2x upsampled image), so
//! normalising on load cost 0.50 against 0.35 ms for deconv2+in5 at 1024x1024, and in3's output is
//! also the first skip connection. The residual blocks' second norm is `nhwc_in_apply` adding into the
//! materialised trunk. Biases of convs followed by InstanceNorm are dropped (the mean subtraction cancels
//! them exactly). deconv3 (9x9, 32 -> 3) stages each input tile with its halo in shared memory once
//! ([`conv2d_tc_halo9_taps`]: filter columns in the GEMM's N) and writes the NCHW f32 output with its bias
//! directly; conv1 (9x9, 4 packed channels -> 32) likewise through [`conv2d_tc_c4_halo9`], whose
//! InstanceNorm partials come in 2-D tiles (`STYLEFORGE_CONV1=gather` selects the implicit-GEMM
//! `conv2d_tc_c4_k32` instead). The upsampling convs deconv1 and deconv2 run in sub-pixel form
//! (`launch::CONV2D_TC_SUBPIXEL`): nearest 2x upsampling + reflection pad 1 + 3x3 is, per output parity,
//! a 2x2 conv of the source with summed weights, 4 taps instead of 9 (run 20, H200, 1024x1024: deconv1+in4
//! 0.224 -> 0.140 ms, deconv2+in5 0.316 -> 0.192; `STYLEFORGE_SUBPIXEL=0` for the 9-tap form). The
//! residual blocks' convs (and deconv1 in its 9-tap form) can run on the `wgmma` kernels
//! [`conv2d_wg`](crate::ops::conv2d_wg::conv2d_wg) with `STYLEFORGE_CONV_WG=1` when the grid fills two blocks
//! per SM; not the default, since it measured slower than `conv2d_tc` (run 21, H200, 1024x1024: residual block
//! 0.217 against 0.207 ms). By default, though, the residual blocks run on
//! [`conv2d_tma`](crate::ops::conv2d_tma::conv2d_tma) (TMA-fed, warp-specialised, persistent `wgmma`
//! implicit GEMM): each norm is then a pass of its own, `nhwc_in_apply_pad`, that writes the next conv's
//! input already normalised and reflection-padded (in3 into the first padded trunk; in1 of each block into
//! a padded t1; in2 plus the residual into the other padded trunk, the last block's into the plain trunk
//! for deconv1), so every A tile is one rectangular box copy (run 31, H200, 1024x1024 b1: 1.341 ms against
//! 1.768 with `STYLEFORGE_CONV_TMA=0`, the old path; residual block 0.120 ms, 0.207 on `conv2d_tc` in run
//! 22). With the residual blocks on `conv2d_tma`, deconv1 and deconv2 run there too, in sub-pixel form
//! (`TmaConvWeight::upload_upsample`: the four output parities as GEMM columns over the replicate-padded
//! low-resolution input; the last residual block writes deconv1's padded input, in4 is a replicate
//! `nhwc_in_apply_pad` into deconv2's; run 37, H200, 1024x1024 b1: 1.213 ms against 1.315 with
//! `STYLEFORGE_DECONV1_TMA=0 STYLEFORGE_DECONV2_TMA=0`; deconv1 keeps `conv2d_tc` when its tile rows do not
//! divide the trunk's height, possible only for trunks at most 64 pixels wide). Where the tiles are of 128
//! pixels, those convs run with the ping-pong schedule (`conv2d_tma_pp`: one warpgroup's epilogue overlaps the
//! other's `wgmma`s; run 41, H200, 1024x1024 b1: 1.148 ms against 1.191 with `STYLEFORGE_CONV_TMA_PP=0`); where
//! there are no more 64-pixel tiles than SMs, on a 7-stage ring with one block per SM (`conv2d_tma_m64_deep`;
//! run 46, H200, 256x256 b1: 0.234 ms against 0.244 with `STYLEFORGE_CONV_TMA_DEEP=0`), and where even twice
//! those tiles leave an SM each (256x256 images' residual convs), with each tile's channels split over two
//! jobs (`conv2d_tma_n64`; run 50, H100, 256x256 b1: 0.224-0.227 ms against 0.242 with `STYLEFORGE_CONV_TMA_N64=0`).
//! Where a norm's conv runs on `conv2d_tma` and its consumer is `nhwc_in_apply_pad` (the residual blocks'
//! norms, in4), the conv adds its statistics to f64 plane sums (`NormSums`, zeroed by one memset at the
//! start of the forward) and `nhwc_in_apply_pad` computes the coefficients from them, so those 11 norms
//! have no `nhwc_in_coef` launch (run 120, H100: 256x256 b1 0.194-0.195 ms against 0.217, 1024 1.140-1.143
//! against 1.168-1.170). The stem and head do the same on the `conv2d_tma` path: conv1 (`conv2d_tc_c4_halo9`),
//! conv2 and conv3 (`conv2d_tc`) add to plane sums, conv2, conv3 and deconv3 (`conv2d_tc_halo9_taps`) compute
//! their input norm's coefficients from them (`InNorm`), and deconv2 on `conv2d_tma` adds in5's, so no
//! `nhwc_in_coef` launch is left (run 124, H100: 256x256 b1 0.185-0.189 ms against 0.194-0.196; 1024
//! unchanged, 1.126-1.144 against 1.142-1.148). Buffers are allocated
//! once per input shape; no host synchronisation in
//! [`GpuTransformerNetFast::forward_device`]; a CUDA graph per shape as in the fp32 net.
use models::transformer_net::{ConvLayer, Norm};
use models::{Tensor, TransformerNet};

use crate::error::{ensure, Error, Result};
use crate::gpu::{CudaGraph, DType, DeviceTensor, Gpu, Layout};
use crate::nets::transformer_net::{res_name, LayerCost, OpKind};
use crate::ops::conv2d_tc_taps::{conv2d_tc_halo9_taps, TapsWeight};
use crate::ops::conv2d_tc::{
    conv1_use_halo, conv2d_tc_c4_halo9, conv2d_tc_c4_halo_tiling, conv2d_tc_halo9_in,
    conv2d_tc_opts, conv2d_tc_output_shape, conv2d_tc_part_len, conv2d_tc_part_tiling, conv2d_tc_subpixel_tiling, C4HaloWeight, ConvOpts, ConvOut,
    HaloWeight, PartTiling, TcWeight,
};
use crate::ops::conv2d_wg::{conv2d_wg, conv2d_wg_blocks, conv2d_wg_fits, conv2d_wg_part_tiling, CONV_WG_ENV};
use crate::ops::conv2d_tma::{conv2d_tma, conv2d_tma_tiling, PadMode, PaddedInput, TmaConvWeight};
use crate::ops::nhwc::{
    nhwc_in_apply_pad, PadOut, nhwc_in_apply, nhwc_in_apply_residual, nhwc_in_apply_residual_normed, nhwc_in_coef, nhwc_in_coef_tiled,
    nhwc_pack_input, NormCoef, NormStats, NormSums, SumsSlot, PACKED_INPUT_CHANNELS,
};

const OP: &str = "GpuTransformerNetFast";
/// deconv3's 3 output channels are computed as 8 (the mma n-tile).
const OUT_CHANNELS_PADDED: usize = 8;

/// Fewest blocks for which a conv goes to `conv2d_wg` (two per SM on 132 SMs; smaller grids, e.g. the
/// residual convs of a 256x256 input with 32 tiles, stay on `conv2d_tc`'s smaller tiles).
const CONV_WG_MIN_BLOCKS: usize = 2 * 132;

/// A conv layer on the device: packed f16 weight, no bias (applied elsewhere or cancelled).
/// Environment variable choosing deconv3's kernel: `k8` selects `conv2d_tc_halo9_k8` (N = 8 padded
/// output channels); anything else, or unset, `conv2d_tc_halo9_taps` (filter columns in N). Read when the
/// net is built (A/B timing).
pub const DECONV3_ENV: &str = "STYLEFORGE_DECONV3";

/// Environment variable: `0` runs the upsampling convs (deconv1, deconv2) as 9-tap convs of the upsampled
/// input instead of their sub-pixel form (4 taps per output parity, `launch::CONV2D_TC_SUBPIXEL`). Read
/// when the net is built (A/B timing).
pub const SUBPIXEL_ENV: &str = "STYLEFORGE_SUBPIXEL";

/// Environment variable: `0` keeps the residual blocks on `conv2d_tc` (with the norms folded into the
/// loads) instead of `conv2d_tma` over padded inputs. Read when the net is built (A/B timing).
pub const CONV_TMA_ENV: &str = "STYLEFORGE_CONV_TMA";

fn conv_tma_on() -> bool {
    crate::gpu::env_on(CONV_TMA_ENV)
}

/// Environment variable: `0` keeps deconv2 on `conv2d_tc`'s sub-pixel kernel instead of `conv2d_tma`'s
/// sub-pixel form (which also needs `conv2d_tma` on). Read when the net is built (A/B timing).
pub const DECONV2_TMA_ENV: &str = "STYLEFORGE_DECONV2_TMA";
/// As [`DECONV2_TMA_ENV`] for deconv1 (which also needs the residual blocks on `conv2d_tma`: the last one
/// writes deconv1's replicate-padded input).
pub const DECONV1_TMA_ENV: &str = "STYLEFORGE_DECONV1_TMA";

/// Whether `conv2d_tma` takes `l` as a 3x3, stride-1 conv with C % 64 == 0 inputs and `k` outputs,
/// upsampled `up` times first (1: a residual conv, 128 outputs; 2: the sub-pixel form, 32 or 64).
fn tma_takes(l: &ConvLayer, k: usize, up: usize) -> bool {
    let s = &l.weight.shape;
    s.len() == 4 && s[0] == k && s[1].is_multiple_of(64) && s[1] > 0 && s[2..] == [3, 3] && l.stride == 1 && l.upsample.max(1) == up
}

/// The sub-pixel `conv2d_tma` weight of `l` when `conv2d_tma` is on, `env` is not `0` and it takes the
/// layer with `k` outputs.
fn upsample_tma(l: &ConvLayer, k: usize, env: &str) -> Result<Option<TmaConvWeight>> {
    (conv_tma_on() && crate::gpu::env_on(env) && tma_takes(l, k, 2))
        .then(|| TmaConvWeight::upload_upsample(&l.weight))
        .transpose()
}

/// deconv3's packed weight for the kernel [`DECONV3_ENV`] picks.
enum Deconv3 {
    Taps(TapsWeight),
    K8(HaloWeight),
}

impl Deconv3 {
    fn upload(w: &Tensor) -> Result<Self> {
        if std::env::var(DECONV3_ENV).is_ok_and(|v| v == "k8") {
            Ok(Deconv3::K8(HaloWeight::upload(w)?))
        } else {
            Ok(Deconv3::Taps(TapsWeight::upload(w)?))
        }
    }
}

struct TcConv {
    w: TcWeight,
    /// The layer's own output and input channels (the weight may be zero-padded beyond them).
    k_real: usize,
    c_real: usize,
    stride: usize,
    upsample: usize,
    pad: usize,
}

impl TcConv {
    /// Uploads `l`'s weight zero-padded to `c_pad` input and `k_pad` output channels (at least its own).
    fn new(l: &ConvLayer, c_pad: usize, k_pad: usize) -> Result<Self> {
        let s = &l.weight.shape;
        ensure(s.len() == 4 && s[2] == s[3] && s[2] % 2 == 1, OP, || {
            format!("conv weight {s:?} is not [K, C, R, R] with odd R")
        })?;
        let r = s[2];
        let subpixel = r == 3
            && l.upsample == 2
            && l.stride == 1
            && c_pad == 0
            && k_pad == 0
            && crate::gpu::env_on(SUBPIXEL_ENV);
        Ok(TcConv {
            w: if subpixel {
                TcWeight::upload_subpixel(&l.weight)?
            } else {
                TcWeight::upload(&l.weight, c_pad, k_pad)?
            },
            k_real: s[0],
            c_real: s[1],
            stride: l.stride,
            upsample: l.upsample.max(1),
            pad: r / 2,
        })
    }
    fn out_shape(&self, x: &[usize]) -> Result<[usize; 4]> {
        conv2d_tc_output_shape(x, self.w.k, 2 * self.pad + 1, self.stride, self.pad, self.upsample)
            .ok_or_else(|| Error::Shape {
                op: OP,
                msg: format!("input {x:?} too small for a {0}x{0} conv", 2 * self.pad + 1),
            })
    }
    /// How the conv's InstanceNorm partials tile its output `out`.
    fn tiling(&self, out: &[usize; 4]) -> PartTiling {
        if self.w.subpixel {
            conv2d_tc_subpixel_tiling(out)
        } else {
            conv2d_tc_part_tiling(out)
        }
    }
    /// Runs the conv on `x`, normalised (+ReLU) on the way in by `norm`'s coefficients when given.
    fn run(
        &self,
        gpu: &Gpu,
        x: &DeviceTensor,
        norm: Option<NormCoef<'_>>,
        out: ConvOut<'_>,
    ) -> Result<()> {
        let opts = ConvOpts {
            variant: None,
            input_norm: norm,
        };
        conv2d_tc_opts(gpu, x, &self.w, self.stride, self.pad, self.upsample, out, opts)
    }
    /// [`Self::run`] into NHWC f16 `y` plus InstanceNorm partials in `part`, through the `wgmma` kernel
    /// `conv2d_wg` when `wg_min_blocks` is given and it takes the layer (3x3, stride 1, 128 or 64 outputs,
    /// C % 64 == 0, not sub-pixel) with at least that many blocks; returns the partials' tiling.
    fn run_stats(
        &self,
        gpu: &Gpu,
        x: &DeviceTensor,
        norm: Option<&DeviceTensor>,
        y: &mut DeviceTensor,
        part: &mut DeviceTensor,
        wg_min_blocks: Option<usize>,
    ) -> Result<PartTiling> {
        // conv2d_wg_fits refuses sub-pixel weights (2x2 taps) itself.
        if self.stride == 1
            && self.pad == 1
            && conv2d_wg_fits(&x.shape, &self.w, self.upsample)
            && wg_min_blocks.is_some_and(|min| conv2d_wg_blocks(&x.shape, self.upsample) >= min)
        {
            let norm = norm.map(NormCoef::Coef);
            return conv2d_wg(gpu, x, &self.w, self.upsample, norm, y, part);
        }
        self.run(gpu, x, norm.map(NormCoef::Coef), ConvOut::F16Stats { y, part })?;
        Ok(self.tiling(&shape4(y)?))
    }
}

struct GpuNorm {
    gamma: DeviceTensor,
    beta: DeviceTensor,
}
impl GpuNorm {
    fn new(n: &Norm) -> Result<Self> {
        Ok(GpuNorm {
            gamma: DeviceTensor::from_host(&n.gamma)?,
            beta: DeviceTensor::from_host(&n.beta)?,
        })
    }
    /// The norm's coefficients for `y` (the conv output whose partials are in `part`); the norm + ReLU is
    /// then applied by the consumer as it loads `y` (no pass of its own).
    fn coef(
        &self,
        gpu: &Gpu,
        y: &DeviceTensor,
        part: &DeviceTensor,
        coef: &mut DeviceTensor,
    ) -> Result<()> {
        nhwc_in_coef(gpu, &shape4(y)?, part, &self.gamma, &self.beta, coef)
    }
    /// As [`Self::coef`] for partials tiled as `tiling` says (conv1's halo kernel).
    fn coef_tiled(
        &self,
        gpu: &Gpu,
        y: &DeviceTensor,
        tiling: &PartTiling,
        part: &DeviceTensor,
        coef: &mut DeviceTensor,
    ) -> Result<()> {
        nhwc_in_coef_tiled(gpu, &shape4(y)?, tiling, part, &self.gamma, &self.beta, coef)
    }
    /// The norm's coefficients as its consumer computes them from the conv's plane sums in `sums`.
    fn coef_of_sums(&self, sums: SumsSlot) -> NormCoef<'_> {
        NormCoef::Sums { sums, gamma: &self.gamma, beta: &self.beta }
    }
    /// `trunk = trunk' + norm(y)` (the residual blocks' second norm), where trunk' is `trunk` itself or,
    /// with `trunk_norm`, relu(norm(trunk)) by those coefficients (the trunk still raw from conv3).
    #[allow(clippy::too_many_arguments)]
    fn add_into(
        &self,
        gpu: &Gpu,
        y: &DeviceTensor,
        tiling: &PartTiling,
        part: &DeviceTensor,
        coef: &mut DeviceTensor,
        trunk: &mut DeviceTensor,
        trunk_norm: Option<&DeviceTensor>,
    ) -> Result<()> {
        nhwc_in_coef_tiled(gpu, &shape4(y)?, tiling, part, &self.gamma, &self.beta, coef)?;
        match trunk_norm {
            Some(tc) => nhwc_in_apply_residual_normed(gpu, y, coef, trunk, tc),
            None => nhwc_in_apply_residual(gpu, y, coef, trunk),
        }
    }
}

fn shape4(t: &DeviceTensor) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(&t.shape[..]).map_err(|_| Error::Shape {
        op: OP,
        msg: format!("expected a 4-D tensor, got {:?}", t.shape),
    })
}

struct ResBlock {
    conv1: TcConv,
    in1: GpuNorm,
    conv2: TcConv,
    in2: GpuNorm,
    /// conv1 and conv2 for `conv2d_tma` (None with `STYLEFORGE_CONV_TMA=0` or weights it does not take).
    tma: Option<[TmaConvWeight; 2]>,
}

/// The reflection-padded activations of the `conv2d_tma` residual blocks: the trunk (ping-pong: the
/// update reads one and writes the other, since border pixels read other pixels) and the first conv's
/// normalised output.
struct TmaPads {
    trunk_a: PaddedInput,
    trunk_b: PaddedInput,
    t1: PaddedInput,
}

/// Activation buffers for one input shape: NHWC f16 raw conv outputs (each normalised by its consumer
/// as it loads it; the residual trunk is updated in place).
struct Buffers {
    /// The captured forward pass for this shape (declared first: dropped before the buffers it uses).
    graph: Option<CudaGraph>,
    input_shape: Vec<usize>,
    /// NCHW f32 staging for [`GpuTransformerNetFast::forward`] and the graph's input.
    input: DeviceTensor,
    x4: DeviceTensor,
    a1: DeviceTensor,
    a2: DeviceTensor,
    /// The residual trunk and the two convs' outputs of a block.
    trunk: DeviceTensor,
    t1: DeviceTensor,
    t2: DeviceTensor,
    u1: DeviceTensor,
    u2: DeviceTensor,
    /// The final NCHW f32 output.
    out: DeviceTensor,
    /// conv2d_tc's InstanceNorm partials and the coefficients made from them (sized for the largest layer).
    part: DeviceTensor,
    coef: DeviceTensor,
    /// in3's coefficients: the raw conv3 output in `trunk` is normalised by the first residual block's
    /// conv and its residual update, two launches apart (after `coef` has been reused).
    coef_trunk: DeviceTensor,
    /// The f64 plane sums of the norms whose conv runs on `conv2d_tma` and whose consumer is
    /// `nhwc_in_apply_pad` (slots 2i and 2i + 1: residual block i's two norms; the last slot in4), zeroed at
    /// the start of each forward: no `nhwc_in_coef` launch for them.
    sums: NormSums,
    /// The residual blocks' padded activations when they run on `conv2d_tma`.
    pads: Option<TmaPads>,
    /// deconv1's normalised output replicate-padded, when deconv2 runs on `conv2d_tma`.
    u1_pad: Option<PaddedInput>,
    /// The residual trunk's final value replicate-padded (the last block writes it), when deconv1 runs on
    /// `conv2d_tma`.
    trunk_up: Option<PaddedInput>,
}

/// TransformerNet's weights (f16, packed) on the device plus per-shape activation buffers. Borrows the
/// [`Gpu`] so it cannot outlive the context.
pub struct GpuTransformerNetFast<'g> {
    gpu: &'g Gpu,
    conv1: TcConv,
    /// conv1 through the halo-staged kernel (a [32, ≤ 4, 9, 9] stride-1 layer, unless
    /// `STYLEFORGE_CONV1=gather` when the net was built).
    conv1_halo: Option<C4HaloWeight>,
    in1: GpuNorm,
    conv2: TcConv,
    in2: GpuNorm,
    conv3: TcConv,
    in3: GpuNorm,
    res: Vec<ResBlock>,
    deconv1: TcConv,
    /// deconv1's sub-pixel form for `conv2d_tma` (two N tiles), as `deconv2_tma`.
    deconv1_tma: Option<TmaConvWeight>,
    in4: GpuNorm,
    deconv2: TcConv,
    /// deconv2's sub-pixel form for `conv2d_tma` (None with `STYLEFORGE_CONV_TMA=0`,
    /// `STYLEFORGE_DECONV2_TMA=0` or a layer it does not take).
    deconv2_tma: Option<TmaConvWeight>,
    in5: GpuNorm,
    deconv3: TcConv,
    /// deconv3 through a halo-staged 9x9 kernel (the standard 32 -> 3 layer, stride 1, no upsampling):
    /// `conv2d_tc_halo9_taps` by default, `conv2d_tc_halo9_k8` with `STYLEFORGE_DECONV3=k8` (A/B).
    deconv3_halo: Option<Deconv3>,
    /// `STYLEFORGE_FOLD_IN3=1`: in3 applied on load by the first residual block instead of in place.
    fold_in3: bool,
    /// `STYLEFORGE_FOLD_IN4=1`: in4 applied on load by deconv2 instead of in place.
    fold_in4: bool,
    /// The residual convs (and a 9-tap deconv1) on `conv2d_wg` where it takes them (large grids), with
    /// `STYLEFORGE_CONV_WG=1` (A/B; slower so far).
    conv_wg: bool,
    /// Blocks a conv's grid needs before it goes to `conv2d_wg` ([`Self::set_conv_wg_min_blocks`]).
    conv_wg_min_blocks: usize,
    /// The residual blocks on `conv2d_tma` (default; [`CONV_TMA_ENV`], [`Self::set_conv_tma`]).
    conv_tma: bool,
    out_bias: DeviceTensor,
    bufs: Option<Buffers>,
    use_graph: bool,
    /// Why graph capture failed (graphs are then no longer tried).
    graph_error: Option<String>,
}

impl<'g> GpuTransformerNetFast<'g> {
    /// Packs and uploads the weights.
    pub fn new(gpu: &'g Gpu, net: &TransformerNet) -> Result<Self> {
        ensure(
            net.deconv3.bias.shape == [3] && net.deconv3.weight.shape.first() == Some(&3),
            OP,
            || {
                format!(
                    "deconv3 must have 3 output channels, got weight {:?} bias {:?}",
                    net.deconv3.weight.shape, net.deconv3.bias.shape
                )
            },
        )?;
        let res = net
            .res
            .iter()
            .map(|b| {
                Ok(ResBlock {
                    conv1: TcConv::new(&b.conv1, 0, 0)?,
                    in1: GpuNorm::new(&b.in1)?,
                    conv2: TcConv::new(&b.conv2, 0, 0)?,
                    in2: GpuNorm::new(&b.in2)?,
                    tma: (conv_tma_on() && tma_takes(&b.conv1, 128, 1) && tma_takes(&b.conv2, 128, 1))
                        .then(|| Ok::<_, Error>([TmaConvWeight::upload(&b.conv1.weight)?, TmaConvWeight::upload(&b.conv2.weight)?]))
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let me = GpuTransformerNetFast {
            gpu,
            conv1: TcConv::new(&net.conv1, PACKED_INPUT_CHANNELS, 0)?,
            conv1_halo: (conv1_use_halo()
                && net.conv1.weight.shape.len() == 4
                && net.conv1.weight.shape[0] == 32
                && (1..=PACKED_INPUT_CHANNELS).contains(&net.conv1.weight.shape[1])
                && net.conv1.weight.shape[2..] == [9, 9]
                && net.conv1.stride == 1
                && net.conv1.upsample <= 1)
                .then(|| C4HaloWeight::upload(&net.conv1.weight))
                .transpose()?,
            in1: GpuNorm::new(&net.in1)?,
            conv2: TcConv::new(&net.conv2, 0, 0)?,
            in2: GpuNorm::new(&net.in2)?,
            conv3: TcConv::new(&net.conv3, 0, 0)?,
            in3: GpuNorm::new(&net.in3)?,
            res,
            deconv1: TcConv::new(&net.deconv1, 0, 0)?,
            deconv1_tma: upsample_tma(&net.deconv1, 64, DECONV1_TMA_ENV)?,
            in4: GpuNorm::new(&net.in4)?,
            deconv2: TcConv::new(&net.deconv2, 0, 0)?,
            deconv2_tma: upsample_tma(&net.deconv2, 32, DECONV2_TMA_ENV)?,
            in5: GpuNorm::new(&net.in5)?,
            deconv3: TcConv::new(&net.deconv3, 0, OUT_CHANNELS_PADDED)?,
            deconv3_halo: (net.deconv3.weight.shape == [3, 32, 9, 9]
                && net.deconv3.stride == 1
                && net.deconv3.upsample <= 1)
                .then(|| Deconv3::upload(&net.deconv3.weight))
                .transpose()?,
            fold_in3: std::env::var("STYLEFORGE_FOLD_IN3").is_ok_and(|v| v == "1"),
            fold_in4: std::env::var("STYLEFORGE_FOLD_IN4").is_ok_and(|v| v == "1"),
            conv_wg: std::env::var(CONV_WG_ENV).is_ok_and(|v| v == "1"),
            conv_wg_min_blocks: CONV_WG_MIN_BLOCKS,
            conv_tma: conv_tma_on(),
            out_bias: DeviceTensor::from_host(&net.deconv3.bias)?,
            bufs: None,
            use_graph: true,
            graph_error: None,
        };
        Ok(me)
    }

    fn check_input(x: &[usize]) -> Result<()> {
        ensure(x.len() == 4 && x[1] == 3, OP, || {
            format!("input must be f32 [N, 3, H, W], got {x:?}")
        })?;
        // H, W ≥ 5 keeps every reflection pad smaller than its input (the 4x4-subsampled trunk is ≥ 2).
        ensure(x[0] > 0 && x[2] >= 5 && x[3] >= 5, OP, || {
            format!("input {x:?}: batch must be ≥ 1 and H, W ≥ 5")
        })
    }

    /// Allocates the activation buffers for NCHW input shape `x` unless they are already there.
    fn ensure_buffers(&mut self, x: &[usize]) -> Result<()> {
        if self.bufs.as_ref().is_some_and(|b| b.input_shape == x) {
            return Ok(());
        }
        self.bufs = None;
        let s0 = [x[0], x[2], x[3], PACKED_INPUT_CHANNELS];
        let s1 = self.conv1.out_shape(&s0)?;
        let s2 = self.conv2.out_shape(&s1)?;
        let s3 = self.conv3.out_shape(&s2)?;
        for b in &self.res {
            let m = b.conv1.out_shape(&s3)?;
            let o = b.conv2.out_shape(&m)?;
            ensure(o == s3 && m == s3, OP, || {
                format!("residual block changes the shape {s3:?} -> {o:?}")
            })?;
        }
        let s4 = self.deconv1.out_shape(&s3)?;
        let s5 = self.deconv2.out_shape(&s4)?;
        let s6 = self.deconv3.out_shape(&s5)?;
        let shapes = [&s1, &s2, &s3, &s4, &s5];
        // conv2d_tma's tilings of the trunk (residual convs, deconv1) and of deconv1's output (deconv2).
        let tl3 = conv2d_tma_tiling(s3[0], s3[1], s3[2], self.gpu.sm_count);
        let tl4 = conv2d_tma_tiling(s4[0], s4[1], s4[2], self.gpu.sm_count);
        let res_tma = self.conv_tma && self.res.iter().all(|b| b.tma.is_some()) && !self.res.is_empty();
        // conv1's halo kernel has 2-D tiles (possibly more than the 1-D ones at the same size).
        let part_len = shapes
            .iter()
            .map(|s| conv2d_tc_part_len(s))
            .chain([self.deconv1.tiling(&s4).part_len(s4[0], s4[3]), self.deconv2.tiling(&s5).part_len(s5[0], s5[3])])
            .chain([conv2d_tc_c4_halo_tiling(&s1).part_len(s1[0], s1[3])])
            .chain([&s3, &s4].map(|s| conv2d_wg_part_tiling(s).part_len(s[0], s[3])))
            .chain([tl3.part_tiling(s3[1], s3[2], 1, 1).part_len(s3[0], s3[3])])
            .chain([tl4.part_tiling(s4[1], s4[2], 2, 1).part_len(s5[0], s5[3])])
            .chain([tl3.part_tiling(s3[1], s3[2], 2, 2).part_len(s4[0], s4[3])])
            .max()
            .unwrap_or(0);
        let coef_len = shapes.iter().map(|s| s[0] * s[3] * 2).max().unwrap_or(0);
        let h = |s: &[usize]| DeviceTensor::empty(s, DType::F16, Layout::Nhwc);
        let f = |n: usize| DeviceTensor::empty(&[n.max(1)], DType::F32, Layout::RowMajor);
        self.bufs = Some(Buffers {
            graph: None,
            input_shape: x.to_vec(),
            input: DeviceTensor::empty(x, DType::F32, Layout::Nchw)?,
            x4: h(&s0)?,
            a1: h(&s1)?,
            a2: h(&s2)?,
            trunk: h(&s3)?,
            t1: h(&s3)?,
            t2: h(&s3)?,
            u1: h(&s4)?,
            u2: h(&s5)?,
            out: DeviceTensor::empty(&[s6[0], 3, s6[1], s6[2]], DType::F32, Layout::Nchw)?,
            part: f(part_len)?,
            coef: f(coef_len)?,
            coef_trunk: f(coef_len)?,
            sums: NormSums::new(2 * self.res.len() + 5, coef_len / 2)?,
            pads: if res_tma {
                let pad = || PaddedInput::new(s3[0], s3[1], s3[2], s3[3], tl3, PadMode::Reflect);
                Some(TmaPads { trunk_a: pad()?, trunk_b: pad()?, t1: pad()? })
            } else {
                None
            },
            u1_pad: match &self.deconv2_tma {
                Some(w) if self.conv_tma && s4[3] == w.w.c => Some(PaddedInput::new(s4[0], s4[1], s4[2], s4[3], tl4, PadMode::Replicate)?),
                _ => None,
            },
            trunk_up: match &self.deconv1_tma {
                // Two N tiles need tile rows dividing H (small odd images keep conv2d_tc).
                Some(w) if res_tma && s3[3] == w.w.c && tl3.splits_rows(s3[1]) => {
                    Some(PaddedInput::new(s3[0], s3[1], s3[2], s3[3], tl3, PadMode::Replicate)?)
                }
                _ => None,
            },
        });
        Ok(())
    }

    /// Turns `conv2d_wg` on (as `STYLEFORGE_CONV_WG=1` does) for every conv it fits with at least `min_blocks` blocks (default 2 x 132: two per
    /// SM); 0 forces it for small inputs too (the self-check runs photos that way, so the network path
    /// through `conv2d_wg` is compared with the fp32 net). Drops a captured graph.
    pub fn set_conv_wg_min_blocks(&mut self, min_blocks: usize) {
        self.conv_wg = true;
        self.conv_wg_min_blocks = min_blocks;
        if let Some(b) = self.bufs.as_mut() {
            b.graph = None;
        }
    }

    /// Runs the residual blocks on `conv2d_tma` (`on`, the default unless `STYLEFORGE_CONV_TMA=0` when the
    /// net was built, which also skips its weights) or on `conv2d_tc` / `conv2d_wg` (the self-check runs
    /// photos both ways). Drops the buffers and any captured graph.
    pub fn set_conv_tma(&mut self, on: bool) {
        self.conv_tma = on;
        self.bufs = None;
    }

    /// `conv2d_wg`'s block threshold when it is on (`STYLEFORGE_CONV_WG` not 0).
    fn wg_min_blocks(&self) -> Option<usize> {
        self.conv_wg.then_some(self.conv_wg_min_blocks)
    }

    /// Replays the forward pass from a CUDA graph (captured once per input shape) when on (the default),
    /// or queues the launches directly when off. Turning it off drops the captured graph.
    pub fn set_use_graph(&mut self, on: bool) {
        self.use_graph = on;
        if !on {
            if let Some(b) = self.bufs.as_mut() {
                b.graph = None;
            }
        }
    }

    /// Whether graph replay is asked for (see also [`Self::graph_error`]).
    pub fn use_graph(&self) -> bool {
        self.use_graph
    }

    /// Why graph capture failed, if it did (the net then launches directly).
    pub fn graph_error(&self) -> Option<&str> {
        self.graph_error.as_deref()
    }

    /// Node count of the graph captured for the current shape, if there is one.
    pub fn graph_nodes(&self) -> Option<usize> {
        self.bufs
            .as_ref()
            .and_then(|b| b.graph.as_ref())
            .map(CudaGraph::node_count)
    }

    fn check_device_input(x: &DeviceTensor) -> Result<()> {
        ensure(
            x.dtype == DType::F32 && x.layout != Layout::Nhwc,
            OP,
            || {
                format!(
                    "input must be NCHW f32 [N, 3, H, W], got {:?} {:?} {:?}",
                    x.layout, x.dtype, x.shape
                )
            },
        )?;
        Self::check_input(&x.shape)
    }

    /// Queues the forward pass for `x` (NCHW f32 [N, 3, H, W], on the device) on the GPU's stream with no
    /// host synchronisation; returns the NCHW f32 output [N, 3, H', W'] (valid until the next call).
    pub fn forward_device(&mut self, x: &DeviceTensor) -> Result<&DeviceTensor> {
        Self::check_device_input(x)?;
        self.ensure_buffers(&x.shape)?;
        self.run(Some(x))?;
        self.output()
    }

    /// As [`Self::forward_device`], always with direct launches, calling `mark(name)` after each layer
    /// group is queued (the names of `GpuTransformerNet::forward_device_marked`).
    pub fn forward_device_marked(
        &mut self,
        x: &DeviceTensor,
        mark: &mut dyn FnMut(&'static str) -> Result<()>,
    ) -> Result<&DeviceTensor> {
        Self::check_device_input(x)?;
        self.ensure_buffers(&x.shape)?;
        self.queue(Some(x), mark)?;
        self.output()
    }

    /// Estimated FLOPs and bytes of each layer group for NCHW input shape `x`, in the order and with the
    /// names of [`Self::forward_device_marked`]. FLOPs are the network's own (not the zero-padded channels the
    /// tensor cores also compute: conv1's 4th input channel, deconv3's 5 extra outputs); the sub-pixel
    /// deconv1 and deconv2 count their nominal 9 taps.
    pub fn layer_costs(&self, x: &[usize]) -> Result<Vec<LayerCost>> {
        Self::check_input(x)?;
        // Conv: reads its f16 input (once, ignoring the halo re-reads the caches serve) and weight, writes
        // f16; a ReLU norm applied by the next conv costs only its partials and coefficients (small), one
        // applied in place (in3, in4) reads and writes the f16 tensor, the residual update reads the second
        // conv's output and the trunk and writes the trunk.
        // The last conv writes 3 f32 channels.
        let conv = |c: &TcConv, x: &[usize]| -> Result<(f64, f64, [usize; 4])> {
            let o = c.out_shape(x)?;
            // The layer's own 3x3 / 9x9 FLOPs, also for the sub-pixel form (which executes 4/9 of them),
            // so TFLOP/s compare across forms.
            let r = 2 * c.pad + 1;
            let flops = 2.0 * (o[0] * o[1] * o[2] * c.k_real * r * r * c.c_real) as f64;
            let bytes = 2.0
                * (x.iter().product::<usize>() + c.w.data.numel() + o.iter().product::<usize>())
                    as f64;
            Ok((flops, bytes, o))
        };
        // Bytes per element: 0 applied on load, 4 in place, 6 residual update.
        let norm = |o: &[usize], per_elem: f64| o.iter().product::<usize>() as f64 * per_elem;
        let in3_bytes = if self.fold_in3 { 0.0 } else { 4.0 };
        let mut v = Vec::new();
        let mut shape = [x[0], x[2], x[3], PACKED_INPUT_CHANNELS];
        for (name, c, nb) in [
            ("conv1+in1", &self.conv1, 0.0),
            ("conv2+in2", &self.conv2, 0.0),
            ("conv3+in3", &self.conv3, in3_bytes),
        ] {
            let (f, b, o) = conv(c, &shape)?;
            v.push(LayerCost {
                name,
                kind: OpKind::Conv,
                flops: f,
                bytes: b + norm(&o, nb),
            });
            shape = o;
        }
        for (i, blk) in self.res.iter().enumerate() {
            let (f1, b1, o1) = conv(&blk.conv1, &shape)?;
            let (f2, b2, o2) = conv(&blk.conv2, &o1)?;
            v.push(LayerCost {
                name: res_name(i),
                kind: OpKind::Conv,
                flops: f1 + f2,
                bytes: b1 + b2 + norm(&o1, 0.0) + norm(&o2, 6.0),
            });
            shape = o2;
        }
        for (name, c, nb) in [
            ("deconv1+in4", &self.deconv1, if self.fold_in4 { 0.0 } else { 4.0 }),
            ("deconv2+in5", &self.deconv2, 0.0),
        ] {
            let (f, b, o) = conv(c, &shape)?;
            v.push(LayerCost {
                name,
                kind: OpKind::Conv,
                flops: f,
                bytes: b + norm(&o, nb),
            });
            shape = o;
        }
        let (f, _, o) = conv(&self.deconv3, &shape)?;
        let bytes = 2.0 * (shape.iter().product::<usize>() + self.deconv3.w.data.numel()) as f64
            + 12.0 * (o[0] * o[1] * o[2]) as f64;
        v.push(LayerCost {
            name: "deconv3",
            kind: OpKind::Conv,
            flops: f,
            bytes,
        });
        Ok(v)
    }

    fn output(&self) -> Result<&DeviceTensor> {
        match self.bufs.as_ref() {
            Some(b) => Ok(&b.out),
            None => Err(Error::Other(
                "buffers missing after the forward pass".into(),
            )),
        }
    }

    /// Runs the pass on buffers already sized for the input: `x`, or the staged input when `None`.
    /// Through the graph when enabled; on a capture failure, directly (remembering the failure when the
    /// direct launches then work, so a data error is not mistaken for a graph problem).
    fn run(&mut self, x: Option<&DeviceTensor>) -> Result<()> {
        if self.use_graph && self.graph_error.is_none() {
            match self.run_graph(x) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Some(b) = self.bufs.as_mut() {
                        b.graph = None;
                    }
                    self.queue(x, &mut |_| Ok(()))?;
                    self.graph_error = Some(e.to_string());
                    return Ok(());
                }
            }
        }
        self.queue(x, &mut |_| Ok(()))
    }

    fn run_graph(&mut self, x: Option<&DeviceTensor>) -> Result<()> {
        let gpu = self.gpu;
        let Some(b) = self.bufs.as_mut() else {
            return Err(Error::Other("buffers missing after allocation".into()));
        };
        if let Some(x) = x {
            // Ordered on the stream before the replay; a no-op when `x` is the staging buffer itself.
            gpu.copy_device_async(x, &mut b.input)?;
        }
        if b.graph.is_none() {
            // First pass at this shape: launch directly (loads every kernel and sets launch attributes
            // outside any capture), then capture the same launches from the staged input.
            self.queue(None, &mut |_| Ok(()))?;
            let g = CudaGraph::capture(gpu, || self.queue(None, &mut |_| Ok(())))?;
            if let Some(b) = self.bufs.as_mut() {
                b.graph = Some(g);
            }
            return Ok(());
        }
        match self.bufs.as_ref().and_then(|b| b.graph.as_ref()) {
            // SAFETY: the graph lives in the same `Buffers` as every activation buffer it was captured
            // with (dropped together, the graph first), and the weights are owned by `self`; `gpu` is the
            // GPU the capture used.
            Some(g) => unsafe { g.launch(gpu) },
            None => Err(Error::Other("graph missing after capture".into())),
        }
    }

    /// Queues every launch of the pass from `x` (or the staged input when `None`), calling `mark` after
    /// each layer group.
    fn queue(
        &mut self,
        x: Option<&DeviceTensor>,
        mark: &mut dyn FnMut(&'static str) -> Result<()>,
    ) -> Result<()> {
        let gpu = self.gpu;
        let wg_min = self.wg_min_blocks();
        let Some(b) = self.bufs.as_mut() else {
            return Err(Error::Other("buffers missing after allocation".into()));
        };
        let Buffers {
            input,
            x4,
            a1,
            a2,
            trunk,
            t1,
            t2,
            u1,
            u2,
            out,
            part,
            coef,
            coef_trunk,
            sums,
            pads,
            u1_pad,
            trunk_up,
            ..
        } = b;
        let x: &DeviceTensor = match x {
            Some(x) => x,
            None => input,
        };
        // Every conv writes its raw f16 output; `nhwc_in_coef` turns the partials into the norm's (a, b)
        // and the NEXT conv applies relu(a·x + b) to each element it loads (`coef` is rewritten only after
        // that conv, in stream order), except in3 and in4, applied in place (see the module doc). The
        // conv2d_tma norms add to plane sums instead (zeroed here) and their apply pass computes (a, b).
        // in1 and in2 always go through plane sums (their consumers are conv2 and conv3 on conv2d_tc), in3
        // when its consumer is the conv2d_tma path's apply pass, in5 when deconv2 runs on conv2d_tma.
        sums.zero(gpu)?;
        let nres = self.res.len();
        let (s_in1, s_in2, s_in3, s_in5) = (sums.slot(2 * nres + 1)?, sums.slot(2 * nres + 2)?, sums.slot(2 * nres + 3)?, sums.slot(2 * nres + 4)?);
        nhwc_pack_input(gpu, x, x4)?;
        match &self.conv1_halo {
            Some(w) => {
                conv2d_tc_c4_halo9(gpu, x4, w, a1, NormStats::Sums(s_in1))?;
            }
            None => {
                self.conv1.run(gpu, x4, None, ConvOut::F16Sums { y: a1, sums: s_in1 })?;
            }
        }
        mark("conv1+in1")?;
        self.conv2.run(gpu, a1, Some(self.in1.coef_of_sums(s_in1)), ConvOut::F16Sums { y: a2, sums: s_in2 })?;
        mark("conv2+in2")?;
        let mut trunk_norm: Option<&DeviceTensor> = None;
        let mut in5_sums = false;
        if let Some(TmaPads { trunk_a, trunk_b, t1: t1p }) = pads.as_mut() {
            self.conv3.run(gpu, a2, Some(self.in2.coef_of_sums(s_in2)), ConvOut::F16Sums { y: trunk, sums: s_in3 })?;
            // The residual blocks on conv2d_tma: every norm is a pass writing the next conv's padded input
            // (the last block's update writes the plain trunk for deconv1).
            nhwc_in_apply_pad(gpu, trunk, self.in3.coef_of_sums(s_in3), true, None, PadOut::Padded(trunk_a))?;
            mark("conv3+in3")?;
            let (mut cur, mut next) = (trunk_a, trunk_b);
            let last = self.res.len() - 1;
            for (i, blk) in self.res.iter().enumerate() {
                let Some([w1, w2]) = blk.tma.as_ref() else {
                    return Err(Error::Other("residual block without its conv2d_tma weights".into()));
                };
                let (s1, s2) = (sums.slot(2 * i)?, sums.slot(2 * i + 1)?);
                conv2d_tma(gpu, &*cur, w1, t1, NormStats::Sums(s1))?;
                nhwc_in_apply_pad(gpu, t1, blk.in1.coef_of_sums(s1), true, None, PadOut::Padded(t1p))?;
                conv2d_tma(gpu, t1p, w2, t2, NormStats::Sums(s2))?;
                let out = match (i == last, trunk_up.as_mut()) {
                    (false, _) => PadOut::Padded(&mut *next),
                    (true, Some(tu)) => PadOut::Padded(tu),
                    (true, None) => PadOut::Plain(&mut *trunk),
                };
                nhwc_in_apply_pad(gpu, t2, blk.in2.coef_of_sums(s2), false, Some(&*cur), out)?;
                std::mem::swap(&mut cur, &mut next);
                mark(res_name(i))?;
            }
        } else {
        self.conv3.run(gpu, a2, Some(self.in2.coef_of_sums(s_in2)), ConvOut::F16Stats { y: trunk, part })?;
        self.in3.coef(gpu, trunk, part, coef_trunk)?;
        // The trunk's pending norm: none when in3 is applied in place (the default); with
        // `STYLEFORGE_FOLD_IN3=1` (A/B) the trunk stays raw and the first residual block's conv and update
        // apply in3 on load.
        if self.fold_in3 {
            trunk_norm = Some(coef_trunk);
        } else {
            nhwc_in_apply(gpu, trunk, coef_trunk, true)?;
        }
        mark("conv3+in3")?;
        for (i, blk) in self.res.iter().enumerate() {
            let tiling = blk.conv1.run_stats(gpu, trunk, trunk_norm, t1, part, wg_min)?;
            blk.in1.coef_tiled(gpu, t1, &tiling, part, coef)?;
            let tiling = blk.conv2.run_stats(gpu, t1, Some(coef), t2, part, wg_min)?;
            blk.in2.add_into(gpu, t2, &tiling, part, coef, trunk, trunk_norm)?;
            trunk_norm = None;
            mark(res_name(i))?;
        }
        }
        // in4 from plane sums when both its conv and its consumer run on conv2d_tma's path.
        let s4 = sums.slot(2 * self.res.len())?;
        let in4_sums = matches!((&self.deconv1_tma, trunk_up.as_ref(), &self.deconv2_tma, u1_pad.as_ref()), (Some(_), Some(_), Some(_), Some(_)));
        match (&self.deconv1_tma, trunk_up.as_ref()) {
            (Some(w), Some(tu)) if in4_sums => {
                conv2d_tma(gpu, tu, w, u1, NormStats::Sums(s4))?;
            }
            (Some(w), Some(tu)) => {
                let tiling = conv2d_tma(gpu, tu, w, u1, &mut *part)?;
                self.in4.coef_tiled(gpu, u1, &tiling, part, coef)?;
            }
            _ => {
                let tiling = self.deconv1.run_stats(gpu, trunk, trunk_norm, u1, part, wg_min)?;
                self.in4.coef_tiled(gpu, u1, &tiling, part, coef)?;
            }
        }
        match (&self.deconv2_tma, u1_pad.as_mut()) {
            (Some(w), Some(u1p)) => {
                // in4 written replicate-padded for deconv2's sub-pixel form on conv2d_tma.
                let in4 = if in4_sums { self.in4.coef_of_sums(s4) } else { NormCoef::Coef(&*coef) };
                nhwc_in_apply_pad(gpu, u1, in4, true, None, PadOut::Padded(u1p))?;
                mark("deconv1+in4")?;
                conv2d_tma(gpu, u1p, w, u2, NormStats::Sums(s_in5))?;
                in5_sums = true;
            }
            _ => {
                // in4: in place by default; with `STYLEFORGE_FOLD_IN4=1` (A/B) applied by deconv2 on load.
                let u1_norm = if self.fold_in4 {
                    Some(&*coef)
                } else {
                    nhwc_in_apply(gpu, u1, coef, true)?;
                    None
                };
                mark("deconv1+in4")?;
                let tiling = self.deconv2.run_stats(gpu, u1, u1_norm, u2, part, wg_min)?;
                self.in5.coef_tiled(gpu, u2, &tiling, part, coef)?;
            }
        }
        mark("deconv2+in5")?;
        let in5 = Some(if in5_sums { self.in5.coef_of_sums(s_in5) } else { NormCoef::Coef(&*coef) });
        match &self.deconv3_halo {
            Some(Deconv3::Taps(w)) => conv2d_tc_halo9_taps(gpu, u2, w, in5, &self.out_bias, out)?,
            Some(Deconv3::K8(w)) => conv2d_tc_halo9_in(gpu, u2, in5, w, &self.out_bias, out)?,
            None => self.deconv3.run(
                gpu,
                u2,
                in5,
                ConvOut::NchwBias {
                    y: out,
                    bias: &self.out_bias,
                },
            )?,
        }
        mark("deconv3")
    }

    /// Convenience: host tensor in, host tensor out (uploads, runs, synchronises, downloads).
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        Self::check_input(&x.shape)?;
        self.ensure_buffers(&x.shape)?;
        let Some(b) = self.bufs.as_mut() else {
            return Err(Error::Other("buffers missing after allocation".into()));
        };
        // Blocking copy on the legacy stream; it waits for earlier work on our (blocking) stream.
        b.input.copy_from_f32(&x.data)?;
        if let Err(e) = self.run(None) {
            let _ = self.gpu.synchronize();
            return Err(e);
        }
        self.gpu.synchronize()?;
        self.output()?.to_host()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selfcheck::{compare, random, random_weights::random_tnet_weights, Rng64};
    use rand::SeedableRng;

    /// The f16 rounding error of this pipeline, measured by the CPU emulation, fits the tolerance the
    /// self-check uses against the fp32 reference.
    #[test]
    fn f16_pipeline_error_fits_net_tolerance() {
        let mut rng = Rng64::seed_from_u64(7);
        let net = TransformerNet::new(random_tnet_weights(&mut rng)).unwrap();
        for shape in [[1, 3, 40, 36], [2, 3, 33, 47]] {
            let x = random(&mut rng, &shape, 0.0, 255.0);
            let want = net.forward(&x).unwrap();
            let got = crate::selfcheck::fast::emulate_f16(&net, &x).unwrap();
            let r = compare(
                "emulation",
                "x",
                &got.data,
                &want.data,
                crate::selfcheck::fast::F16_NET_VS_F32,
            );
            eprintln!(
                "{shape:?}: f16 emulation vs fp32: rel L2 {:.2e}, max rel {:.2e}",
                r.rel_l2, r.max_rel
            );
            assert!(
                r.passed,
                "{shape:?}: rel L2 {} max rel {} ({})",
                r.rel_l2, r.max_rel, r.detail
            );
        }
    }
}
