//! StyleViT on the GPU, tensor-core path: the transformer blocks' GEMMs run on `linear_tc` (f16 inputs,
//! f32 accumulation; the many-row ones on `linear_tma`) and attention on `attention_tma` (head_dim 64) or
//! `attention_tc` (f16). The residual stream between them is f16; every sum, statistic and epilogue is
//! computed in f32.
//!
//! Per post-norm block (tokens [M = B·N, D]; `·16` marks f16 tensors):
//! `qkv16 = linear_tc(x16)` → `a16 = attention(qkv16)` → `x16 += linear_tc(a16)` (the residual add in
//! place, `EpilogueTc::accumulate`: on `linear_tma` a TMA reduce-add in L2) → `x2_16 = layer_norm(x16)` →
//! `h16 = gelu(linear_tc(x2_16))` → `x2_16 += linear_tc(h16)` → `x16 = layer_norm(x2_16)`. With an f32
//! stream (sessions 1-12) the
//! LayerNorms and residual epilogues moved 2.5x the bytes. The patch embedding is an f16 im2col +
//! `linear_tc` (bias and positions in its epilogue, f16 output); AdaIN reads the encoders' f16 tokens
//! and writes the decoder's (`adain_f16`: statistics and arithmetic in f32; until session 17 an f32 copy
//! of the encoder's output, fp32 `adain` and an f16 conversion moved 4.4x the bytes: 449 MB against 103
//! at p16 b8); `to_pixels` runs on
//! `linear_tc`; unpatch and the 3x3 / 1x1 tail are one fp32 kernel (`unpatch_tail`). Content and style images of the same
//! size go through the encoder as one batch (half the launches; at 64 tokens every launch is latency).
//! Same public API as [`crate::nets::GpuStyleVit`] (graph capture per shape and alpha included).
//!
//! Precision: the f16 rounding of the GEMM and attention inputs (image, x, weights, qkv, attention output,
//! the GELU output) and of the residual stream (the pre-norm sums and the LayerNorm outputs, AdaIN's input
//! and output), and GELU in
//! its tanh form (`models::ops::gelu_tanh`, within 4.7e-4 of exact GELU) are the only systematic
//! differences from the fp32 path; the self-check measures their effect with a CPU emulation that does
//! the same (selfcheck/vit_fast.rs).
//!
//! Measured and dropped (session 14, H100, same-run A/B): the few-row LayerNorms folded into the GEMM that
//! reads them (`linear_tc_ln`, commits 35e18ea / a735332: 23 fewer launches at 64 tokens for base; each
//! block normalises its 64 rows in shared memory, then multiplies without a K split). Correct, but slower:
//! base 64 tokens 0.660-0.666 ms against 0.547-0.549, small 0.306-0.310 against 0.298-0.299 (run 69). The
//! unsplit GEMM has a quarter of the split plan's warps, and in a CUDA graph a norm launch costs less than
//! the prologue that replaces it.
//!
//! Also dropped (session 15, runs 71-72, H100): `vit_stack`, each few-token block stack (6 blocks x 7 ops)
//! in one persistent launch whose phases ran these kernels' device code over their blocks as work items,
//! separated by grid-wide barriers (commits 229f629, e360706; bit-identical to these launches, 15 checks,
//! memcheck and racecheck clean). Base at 64 tokens took 0.588-0.591 ms at best (barriers without extra
//! fences) against 0.547-0.550 here; small 0.331-0.335 against 0.298-0.304. A barriers-only probe of the
//! same launch took 0.148 ms for base's 84 barriers (~1.3 us each; 2.1 us with `fence.acq_rel.gpu` around
//! the arrival), so each phase's work took ~5 us: at 64 tokens an op costs its chain of dependent memory
//! round trips (weights from HBM, split-K partials, the epilogue), not its launch.
//!
//! Session 20 found most of that chain in the epilogues: `linear_tc_small` and the LayerNorm rows loaded
//! their bias / residual / γ, β one pair or group at a time between their stores (a load can't move above
//! a store that may alias it), ~16 dependent L2 round trips per GEMM. Loaded together up front, with the
//! K split aimed at half the SMs and the weights copied before the dependency wait, base at 64 tokens went
//! from 0.537 to 0.388 ms (runs 111-113, H100; docs/PERF.md).
use models::{StyleVit, StyleVitConfig, Tensor};

use crate::error::{ensure, Error, Result};
use crate::gpu::{CudaGraph, DType, DeviceTensor, Gpu, Layout};
use crate::nets::transformer_net::{LayerCost, OpKind};
use crate::ops::attention_tc::HEAD_DIMS;
use crate::ops::attention_tma::attention_qkv;
use crate::ops::linear_tc::{layer_norm_f16, linear_tc_ws, EpilogueTc, LinearTcWorkspace};
use crate::ops::patch::{patch_embed_f16, patch_grid, unpatch_tail};

const OP: &str = "GpuStyleVitFast";

fn mat(t: &Tensor) -> Result<DeviceTensor> {
    DeviceTensor::from_f32(&t.shape, &t.data, Layout::RowMajor)
}

/// One post-norm transformer block's weights on the device: GEMM weights f16, biases and norms f32.
struct BlockW {
    w_qkv: DeviceTensor,
    b_qkv: DeviceTensor,
    w_out: DeviceTensor,
    b_out: DeviceTensor,
    fc1_w: DeviceTensor,
    fc1_b: DeviceTensor,
    fc2_w: DeviceTensor,
    fc2_b: DeviceTensor,
    n1_w: DeviceTensor,
    n1_b: DeviceTensor,
    n2_w: DeviceTensor,
    n2_b: DeviceTensor,
}

impl BlockW {
    fn new(b: &models::style_vit::Block) -> Result<Self> {
        Ok(BlockW {
            w_qkv: DeviceTensor::from_host_f16(&b.w_qkv)?,
            b_qkv: mat(&b.b_qkv)?,
            w_out: DeviceTensor::from_host_f16(&b.w_out)?,
            b_out: mat(&b.b_out)?,
            fc1_w: DeviceTensor::from_host_f16(&b.fc1_w)?,
            fc1_b: mat(&b.fc1_b)?,
            fc2_w: DeviceTensor::from_host_f16(&b.fc2_w)?,
            fc2_b: mat(&b.fc2_b)?,
            n1_w: mat(&b.norm1_w)?,
            n1_b: mat(&b.norm1_b)?,
            n2_w: mat(&b.norm2_w)?,
            n2_b: mat(&b.norm2_b)?,
        })
    }
}

/// Activations of one token sequence batch [B, N, ·] (content or style).
struct Seq {
    cols: DeviceTensor,
    pos: DeviceTensor,
    /// The residual stream between the blocks (f16): the patch embedding's output, each block's, AdaIN's
    /// input and (content) output.
    x16: DeviceTensor,
    x2_16: DeviceTensor,
    qkv16: DeviceTensor,
    a16: DeviceTensor,
    h16: DeviceTensor,
}

impl Seq {
    fn new(cfg: &StyleVitConfig, b: usize, n: usize) -> Result<Self> {
        let (p, d, f) = (cfg.patch_size, cfg.embed_dim, cfg.ffn_dim);
        let h = |shape: &[usize]| DeviceTensor::empty(shape, DType::F16, Layout::RowMajor);
        Ok(Seq {
            cols: h(&[b * n, 3 * p * p])?,
            pos: mat(&models::ops::sinusoidal(n, d))?,
            x16: h(&[b, n, d])?,
            x2_16: h(&[b, n, d])?,
            qkv16: h(&[b, n, 3 * d])?,
            a16: h(&[b, n, d])?,
            h16: h(&[b, n, f])?,
        })
    }

    /// One post-norm block on the f16 residual stream: input in `x16`, output there too. Calls
    /// `mark(names[i])` after each of its [`BLOCK_OPS`] ops is queued.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &mut self,
        gpu: &Gpu,
        ws: &mut LinearTcWorkspace,
        w: &BlockW,
        heads: usize,
        names: &[&'static str; 7],
        mark: Mark,
    ) -> Result<()> {
        let bias = |b| EpilogueTc {
            bias: Some(b),
            ..Default::default()
        };
        linear_tc_ws(gpu,
            &self.x16,
            &w.w_qkv,
            bias(&w.b_qkv),
            None,
            Some(&mut self.qkv16), ws)?;
        mark(names[0])?;
        attention_qkv(gpu, &self.qkv16, heads, &mut self.a16, ws.maps())?;
        mark(names[1])?;
        // x16 += a16 · w_outᵀ + b_out: x16 becomes the pre-norm sum.
        let acc = |b| EpilogueTc {
            bias: Some(b),
            accumulate: true,
            ..Default::default()
        };
        linear_tc_ws(gpu, &self.a16, &w.w_out, acc(&w.b_out), None, Some(&mut self.x16), ws)?;
        mark(names[2])?;
        layer_norm_f16(gpu, &self.x16, None, &w.n1_w, &w.n1_b, None, &mut self.x2_16)?;
        mark(names[3])?;
        let ep = EpilogueTc {
            bias: Some(&w.fc1_b),
            gelu: true,
            ..Default::default()
        };
        linear_tc_ws(gpu, &self.x2_16, &w.fc1_w, ep, None, Some(&mut self.h16), ws)?;
        mark(names[4])?;
        // x2_16 += h16 · fc2_wᵀ + fc2_b: the second pre-norm sum.
        linear_tc_ws(gpu, &self.h16, &w.fc2_w, acc(&w.fc2_b), None, Some(&mut self.x2_16), ws)?;
        mark(names[5])?;
        layer_norm_f16(gpu, &self.x2_16, None, &w.n2_w, &w.n2_b, None, &mut self.x16)?;
        mark(names[6])
    }
}

/// The callback of [`GpuStyleVitFast::forward_device_marked`].
type Mark<'a> = &'a mut dyn FnMut(&'static str) -> Result<()>;

/// The kinds of a block's seven ops, in queue order: qkv GEMM, attention, out-projection GEMM (+ residual),
/// LayerNorm, fc1 GEMM (+ GELU), fc2 GEMM (+ residual), LayerNorm.
const BLOCK_OPS: [OpKind; 7] = [
    OpKind::Gemm,
    OpKind::Attention,
    OpKind::Gemm,
    OpKind::Norm,
    OpKind::Gemm,
    OpKind::Gemm,
    OpKind::Norm,
];

/// Per-op names that [`GpuStyleVitFast::forward_device_marked`] reports, per stage (the same name for the
/// same op of every block: `bench --layers` sums them).
struct StageNames {
    patch: &'static str,
    block: [&'static str; 7],
}

const CONTENT_OPS: StageNames = StageNames {
    patch: "content patch",
    block: [
        "content qkv",
        "content attention",
        "content out+res",
        "content norm1",
        "content fc1+gelu",
        "content fc2+res",
        "content norm2",
    ],
};
/// Content and style through the encoder as one batch (same image size).
const ENCODER_OPS: StageNames = StageNames {
    patch: "encoder patch",
    block: [
        "encoder qkv",
        "encoder attention",
        "encoder out+res",
        "encoder norm1",
        "encoder fc1+gelu",
        "encoder fc2+res",
        "encoder norm2",
    ],
};
const STYLE_OPS: StageNames = StageNames {
    patch: "style patch",
    block: [
        "style qkv",
        "style attention",
        "style out+res",
        "style norm1",
        "style fc1+gelu",
        "style fc2+res",
        "style norm2",
    ],
};
const DECODER_OPS: [&str; 7] = [
    "decoder qkv",
    "decoder attention",
    "decoder out+res",
    "decoder norm1",
    "decoder fc1+gelu",
    "decoder fc2+res",
    "decoder norm2",
];

/// Buffers for one (content shape, style shape).
struct Bufs {
    /// The captured forward pass (declared first: dropped before the buffers it uses) and its alpha bits.
    graph: Option<(CudaGraph, u32)>,
    key: (Vec<usize>, Vec<usize>),
    /// Fixed-address inputs (staging for `forward`, the graph's inputs).
    cin: DeviceTensor,
    sin: DeviceTensor,
    /// Content and style of the same size go through the encoder as one batch: their images side by side
    /// [B + Bs, 3, H, W] and that batch's activations (halves the encoder's launches; small images are
    /// latency-bound).
    both: Option<(DeviceTensor, Seq)>,
    /// The decoder's activations (and the content encoder's when not batched).
    content: Seq,
    /// The style encoder's activations when not batched.
    style: Option<Seq>,
    /// AdaIN's statistics scratch (f32, `adain_f16_part_len`).
    adain_part: DeviceTensor,
    /// Split-K scratch of the small-M GEMMs (`linear_tc_ws`), shared by all of them (stream order).
    ws: LinearTcWorkspace,
    pix: DeviceTensor,
    out: DeviceTensor,
}

/// StyleViT's weights on the device (GEMM weights in f16) plus per-shape buffers. Borrows the [`Gpu`].
pub struct GpuStyleVitFast<'g> {
    gpu: &'g Gpu,
    cfg: StyleVitConfig,
    /// [D, 3·p·p] f32: the conv weight [D, 3, p, p] flattened (im2col column order c, ky, kx).
    patch_w: DeviceTensor,
    patch_b: DeviceTensor,
    encoder: Vec<BlockW>,
    decoder: Vec<BlockW>,
    /// [3·p·p, D] f16.
    to_pixels_w: DeviceTensor,
    to_pixels_b: DeviceTensor,
    final0_w: DeviceTensor,
    final0_b: DeviceTensor,
    final2_w: DeviceTensor,
    final2_b: DeviceTensor,
    bufs: Option<Bufs>,
    use_graph: bool,
    /// Why graph capture failed (graphs are then no longer tried).
    graph_error: Option<String>,
}

impl<'g> GpuStyleVitFast<'g> {
    /// Uploads the weights. Needs head_dim in [`HEAD_DIMS`] and D, FFN multiples of 8 (f16 GEMM rows
    /// are copied in 16-byte chunks).
    pub fn new(gpu: &'g Gpu, net: &StyleVit) -> Result<Self> {
        let cfg = net.cfg;
        let (p, d, f) = (cfg.patch_size, cfg.embed_dim, cfg.ffn_dim);
        ensure(
            p > 0 && cfg.num_heads > 0 && d.is_multiple_of(cfg.num_heads),
            OP,
            || format!("bad config {cfg:?}"),
        )?;
        let dh = d / cfg.num_heads;
        ensure(HEAD_DIMS.contains(&dh), OP, || {
            format!("head_dim {dh} is not supported (only {HEAD_DIMS:?})")
        })?;
        ensure(d.is_multiple_of(8) && f.is_multiple_of(8), OP, || {
            format!("embed dim {d} and ffn dim {f} must be multiples of 8")
        })?;
        ensure(net.patch_w.numel() == d * 3 * p * p, OP, || {
            format!(
                "patch weight {:?} is not [{d}, 3, {p}, {p}]",
                net.patch_w.shape
            )
        })?;
        ensure(net.to_pixels_w.shape == [3 * p * p, d], OP, || {
            format!(
                "to_pixels weight {:?} is not [{}, {d}]",
                net.to_pixels_w.shape,
                3 * p * p
            )
        })?;
        Ok(GpuStyleVitFast {
            gpu,
            cfg,
            patch_w: DeviceTensor::from_f32_as_f16(
                &[d, 3 * p * p],
                &net.patch_w.data,
                Layout::RowMajor,
            )?,
            patch_b: mat(&net.patch_b)?,
            encoder: net.encoder.iter().map(BlockW::new).collect::<Result<_>>()?,
            decoder: net.decoder.iter().map(BlockW::new).collect::<Result<_>>()?,
            to_pixels_w: DeviceTensor::from_host_f16(&net.to_pixels_w)?,
            to_pixels_b: mat(&net.to_pixels_b)?,
            final0_w: DeviceTensor::from_f32(
                &net.final0_w.shape,
                &net.final0_w.data,
                Layout::Nchw,
            )?,
            final0_b: mat(&net.final0_b)?,
            final2_w: DeviceTensor::from_f32(
                &net.final2_w.shape,
                &net.final2_w.data,
                Layout::Nchw,
            )?,
            final2_b: mat(&net.final2_b)?,
            bufs: None,
            use_graph: true,
            graph_error: None,
        })
    }

    /// Allocates the buffers for these input shapes unless they are already there.
    fn ensure_bufs(&mut self, content: &[usize], style: &[usize]) -> Result<()> {
        let key = (content.to_vec(), style.to_vec());
        if self.bufs.as_ref().is_some_and(|b| b.key == key) {
            return Ok(());
        }
        self.bufs = None; // free the old shape's memory first
        let p = self.cfg.patch_size;
        let (b, hp, wp) = patch_grid(content, p)?;
        let (bs, hps, wps) = patch_grid(style, p)?;
        ensure(bs == b || bs == 1, OP, || {
            format!("style batch {bs} must be 1 or the content batch {b}")
        })?;
        let e = |shape: &[usize]| DeviceTensor::empty(shape, DType::F32, Layout::Nchw);
        let (both, sep) = if batched(content, style) {
            let input = e(&[b + bs, 3, content[2], content[3]])?;
            (Some((input, Seq::new(&self.cfg, b + bs, hp * wp)?)), None)
        } else {
            (None, Some(Seq::new(&self.cfg, bs, hps * wps)?))
        };
        // One split-K workspace for every GEMM of the pass (they run in stream order): sized for all their
        // (M, N, K).
        let (d, f) = (self.cfg.embed_dim, self.cfg.ffn_dim);
        let mut gemms = vec![(b * hp * wp, 3 * p * p, d)];
        let seqs: Vec<usize> = match &both {
            Some(_) => vec![(b + bs) * hp * wp, b * hp * wp],
            None => vec![b * hp * wp, bs * hps * wps],
        };
        for m in seqs {
            gemms.extend([(m, d, 3 * p * p), (m, 3 * d, d), (m, d, d), (m, f, d), (m, d, f)]);
        }
        let ws = LinearTcWorkspace::for_shapes(&gemms)?;
        let part_len = crate::ops::adain::adain_f16_part_len(b, hp * wp, bs, hps * wps, d);
        self.bufs = Some(Bufs {
            adain_part: DeviceTensor::empty(&[part_len], DType::F32, Layout::RowMajor)?,
            ws,
            graph: None,
            cin: e(content)?,
            sin: e(style)?,
            both,
            content: Seq::new(&self.cfg, b, hp * wp)?,
            style: sep,
            pix: DeviceTensor::empty(&[b, hp * wp, 3 * p * p], DType::F32, Layout::RowMajor)?,
            out: e(content)?,
            key,
        });
        Ok(())
    }

    /// Replays the forward pass from a CUDA graph when on (the default), or launches directly when off.
    /// Turning it off drops the captured graph.
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

    /// Node count of the graph captured for the current shapes, if there is one.
    pub fn graph_nodes(&self) -> Option<usize> {
        self.bufs
            .as_ref()
            .and_then(|b| b.graph.as_ref())
            .map(|(g, _)| g.node_count())
    }

    /// Queues the forward pass on the stream with no host sync; content [B, 3, H, W], style [B or 1, 3,
    /// Hs, Ws] f32 (multiples of the patch size). Returns the output buffer [B, 3, H, W] (f32).
    pub fn forward_device(
        &mut self,
        content: &DeviceTensor,
        style: &DeviceTensor,
        alpha: f32,
    ) -> Result<&DeviceTensor> {
        ensure(alpha.is_finite(), OP, || {
            format!("alpha {alpha} is not finite")
        })?;
        ensure(
            content.dtype == DType::F32 && style.dtype == DType::F32,
            OP,
            || {
                format!(
                    "inputs must be f32, got {:?} and {:?}",
                    content.dtype, style.dtype
                )
            },
        )?;
        self.ensure_bufs(&content.shape, &style.shape)?;
        self.run(Some((content, style)), alpha)?;
        self.output()
    }

    /// As [`Self::forward_device`], always with direct launches, calling `mark(name)` after each op is
    /// queued (the names of [`Self::layer_costs`], in order: per stage the patch embedding and each
    /// block's qkv, attention, out+res, norm1, fc1+gelu, fc2+res, norm2; then adain, to_pixels, unpatch+tail).
    pub fn forward_device_marked(
        &mut self,
        content: &DeviceTensor,
        style: &DeviceTensor,
        alpha: f32,
        mark: &mut dyn FnMut(&'static str) -> Result<()>,
    ) -> Result<&DeviceTensor> {
        ensure(alpha.is_finite(), OP, || {
            format!("alpha {alpha} is not finite")
        })?;
        ensure(
            content.dtype == DType::F32 && style.dtype == DType::F32,
            OP,
            || {
                format!(
                    "inputs must be f32, got {:?} and {:?}",
                    content.dtype, style.dtype
                )
            },
        )?;
        self.ensure_bufs(&content.shape, &style.shape)?;
        self.queue(Some((content, style)), alpha, mark)?;
        self.output()
    }

    /// Estimated FLOPs and bytes (activations written and read at their stored precision, weights read
    /// once) of each op of [`Self::forward_device_marked`], in its order.
    pub fn layer_costs(&self, content: &[usize], style: &[usize]) -> Result<Vec<LayerCost>> {
        let cfg = self.cfg;
        let (p, d, f) = (
            cfg.patch_size as f64,
            cfg.embed_dim as f64,
            cfg.ffn_dim as f64,
        );
        let (b, hp, wp) = patch_grid(content, cfg.patch_size)?;
        let (bs, hps, wps) = patch_grid(style, cfg.patch_size)?;
        let k = 3.0 * p * p;
        let mut v = Vec::new();
        let mut push = |name, kind, flops, bytes| {
            v.push(LayerCost {
                name,
                kind,
                flops,
                bytes,
            })
        };
        // One post-norm block's ops on b sequences of n tokens (f16 = 2 bytes, f32 = 4), in BLOCK_OPS order
        // (the residual stream f16; the encoder's last LayerNorm also writes f32 tokens, not counted).
        let block = |b: usize, n: usize| -> [(f64, f64); 7] {
            let (bf, nf) = (b as f64, n as f64);
            let m = bf * nf;
            [
                (
                    2.0 * m * d * 3.0 * d,
                    2.0 * (4.0 * m * d + 3.0 * d * d) + 4.0 * 3.0 * d,
                ),
                (4.0 * bf * nf * nf * d, 2.0 * 4.0 * m * d),
                (2.0 * m * d * d, 2.0 * (m * d + d * d) + 2.0 * 2.0 * m * d),
                (0.0, 2.0 * 2.0 * m * d),
                (2.0 * m * d * f, 2.0 * (m * d + m * f + d * f)),
                (2.0 * m * f * d, 2.0 * (m * f + d * f) + 2.0 * 2.0 * m * d),
                (0.0, 2.0 * 2.0 * m * d),
            ]
        };
        let blocks = |push: &mut dyn FnMut(&'static str, OpKind, f64, f64),
                      names: &[&'static str; 7],
                      count: usize,
                      b: usize,
                      n: usize| {
            for _ in 0..count {
                for (i, (fl, by)) in block(b, n).into_iter().enumerate() {
                    push(names[i], BLOCK_OPS[i], fl, by);
                }
            }
        };
        let stages = if batched(content, style) {
            vec![(&ENCODER_OPS, b + bs, hp * wp)]
        } else {
            vec![(&CONTENT_OPS, b, hp * wp), (&STYLE_OPS, bs, hps * wps)]
        };
        for (names, bb, n) in stages {
            let m = (bb * n) as f64;
            // im2col (read the image f32, write and read f16 columns) + GEMM (positions read f32, x written
            // f16).
            push(
                names.patch,
                OpKind::Gemm,
                2.0 * m * k * d,
                4.0 * m * k + 2.0 * (2.0 * m * k + k * d) + 4.0 * n as f64 * d + 2.0 * m * d,
            );
            blocks(&mut push, &names.block, self.encoder.len(), bb, n);
        }
        let (mc, ms) = ((b * hp * wp) as f64, (bs * hps * wps) as f64);
        // Statistics read content and style once (f16), the blend reads the content and writes it.
        push("adain", OpKind::Norm, 0.0, 2.0 * d * (3.0 * mc + ms));
        blocks(&mut push, &DECODER_OPS, self.decoder.len(), b, hp * wp);
        push(
            "to_pixels",
            OpKind::Gemm,
            2.0 * mc * d * k,
            2.0 * (mc * d + d * k) + 4.0 * mc * k,
        );
        let px = (b * content[2] * content[3]) as f64;
        // unpatch + 3x3 conv + ReLU + 1x1 in one pass: tokens read (~once), output written.
        push(
            "unpatch+tail",
            OpKind::Other,
            2.0 * px * 3.0 * 27.0 + 2.0 * px * 9.0,
            4.0 * 2.0 * px * 3.0,
        );
        Ok(v)
    }

    fn output(&self) -> Result<&DeviceTensor> {
        match &self.bufs {
            Some(b) => Ok(&b.out),
            None => Err(Error::Other("GpuStyleVitFast: no output buffer".into())),
        }
    }

    /// Runs the pass on buffers already sized for the inputs (`None`: the staged inputs). Through the
    /// graph when enabled; on a capture failure, directly (remembering the failure when the direct
    /// launches then work, so a data error is not mistaken for a graph problem).
    fn run(&mut self, inputs: Option<(&DeviceTensor, &DeviceTensor)>, alpha: f32) -> Result<()> {
        if self.use_graph && self.graph_error.is_none() {
            match self.run_graph(inputs, alpha) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Some(b) = self.bufs.as_mut() {
                        b.graph = None;
                    }
                    self.queue(inputs, alpha, &mut |_| Ok(()))?;
                    self.graph_error = Some(e.to_string());
                    return Ok(());
                }
            }
        }
        self.queue(inputs, alpha, &mut |_| Ok(()))
    }

    fn run_graph(
        &mut self,
        inputs: Option<(&DeviceTensor, &DeviceTensor)>,
        alpha: f32,
    ) -> Result<()> {
        let gpu = self.gpu;
        let Some(b) = self.bufs.as_mut() else {
            return Err(Error::Other(
                "GpuStyleVitFast: buffers missing after allocation".into(),
            ));
        };
        if let Some((c, s)) = inputs {
            // Ordered on the stream before the replay; no-ops when the inputs are the staging buffers.
            gpu.copy_device_async(c, &mut b.cin)?;
            gpu.copy_device_async(s, &mut b.sin)?;
        }
        // alpha is a kernel argument baked into the graph: a different alpha needs a new capture.
        if b.graph.as_ref().is_none_or(|(_, a)| *a != alpha.to_bits()) {
            b.graph = None;
            // First pass for these shapes and alpha: launch directly (this call's result; it also loads
            // every kernel and sets launch attributes outside any capture), then capture the same
            // launches for the following calls.
            self.queue(None, alpha, &mut |_| Ok(()))?;
            let g = CudaGraph::capture(gpu, || self.queue(None, alpha, &mut |_| Ok(())))?;
            if let Some(b) = self.bufs.as_mut() {
                b.graph = Some((g, alpha.to_bits()));
            }
            return Ok(());
        }
        match self.bufs.as_ref().and_then(|b| b.graph.as_ref()) {
            // SAFETY: the graph lives in the same `Bufs` as every activation and input buffer it was
            // captured with (dropped together, the graph first); the weights are owned by `self`; `gpu`
            // is the GPU the capture used.
            Some((g, _)) => unsafe { g.launch(gpu) },
            None => Err(Error::Other(
                "GpuStyleVitFast: graph missing after capture".into(),
            )),
        }
    }

    /// Queues every launch of the pass from `inputs` (or the staged inputs when `None`).
    fn queue(
        &mut self,
        inputs: Option<(&DeviceTensor, &DeviceTensor)>,
        alpha: f32,
        mark: Mark,
    ) -> Result<()> {
        let gpu = self.gpu;
        let cfg = self.cfg;
        let p = cfg.patch_size;
        let heads = cfg.num_heads;
        let Some(bufs) = self.bufs.as_mut() else {
            return Err(Error::Other(
                "GpuStyleVitFast: buffers missing after allocation".into(),
            ));
        };
        let Bufs {
            cin,
            sin,
            both,
            content: c,
            style: sep,
            adain_part,
            pix,
            out,
            ws,
            ..
        } = bufs;
        let (content, style): (&DeviceTensor, &DeviceTensor) = match inputs {
            Some(io) => io,
            None => (cin, sin),
        };
        let (b, hp, wp) = patch_grid(&content.shape, p)?;
        let (patch_w, patch_b, encoder) = (&self.patch_w, &self.patch_b, &self.encoder);
        let encode =
            |img: &DeviceTensor, seq: &mut Seq, ws: &mut LinearTcWorkspace, names: &StageNames, mark: Mark| -> Result<()> {
                patch_embed_f16(
                    gpu,
                    ws,
                    img,
                    patch_w,
                    patch_b,
                    &seq.pos,
                    p,
                    &mut seq.cols,
                    &mut seq.x16,
                )?;
                mark(names.patch)?;
                for w in encoder {
                    seq.block(gpu, ws, w, heads, &names.block, mark)?;
                }
                Ok(())
            };
        match (both.as_mut(), sep.as_mut()) {
            (Some((input, seq)), _) => {
                gpu.copy_device_into_at(content, input, 0)?;
                gpu.copy_device_into_at(style, input, content.numel())?;
                encode(input, seq, ws, &ENCODER_OPS, mark)?;
                crate::ops::adain::adain_f16_split(gpu, &seq.x16, b, alpha, &mut c.x16, adain_part)?;
            }
            (None, Some(s)) => {
                encode(content, c, ws, &CONTENT_OPS, mark)?;
                encode(style, s, ws, &STYLE_OPS, mark)?;
                crate::ops::adain::adain_f16(gpu, &mut c.x16, &s.x16, alpha, adain_part)?;
            }
            (None, None) => return Err(Error::Other("GpuStyleVitFast: no encoder buffers".into())),
        }
        mark("adain")?;
        for w in &self.decoder {
            c.block(gpu, ws, w, heads, &DECODER_OPS, mark)?;
        }
        let ep = EpilogueTc {
            bias: Some(&self.to_pixels_b),
            ..Default::default()
        };
        linear_tc_ws(gpu, &c.x16, &self.to_pixels_w, ep, Some(pix), None, ws)?;
        mark("to_pixels")?;
        unpatch_tail(
            gpu,
            pix,
            hp,
            wp,
            p,
            (&self.final0_w, &self.final0_b),
            (&self.final2_w, &self.final2_b),
            out,
        )?;
        mark("unpatch+tail")
    }

    /// Host tensors in, host tensor out (uploads, runs, synchronises, downloads).
    pub fn forward(&mut self, content: &Tensor, style: &Tensor, alpha: f32) -> Result<Tensor> {
        ensure(alpha.is_finite(), OP, || {
            format!("alpha {alpha} is not finite")
        })?;
        self.ensure_bufs(&content.shape, &style.shape)?;
        let Some(b) = self.bufs.as_mut() else {
            return Err(Error::Other(
                "GpuStyleVitFast: buffers missing after allocation".into(),
            ));
        };
        // Blocking copies on the legacy stream: they wait for earlier work on our (blocking) stream, and
        // our stream's later work waits for them.
        b.cin.copy_from_f32(&content.data)?;
        b.sin.copy_from_f32(&style.data)?;
        if let Err(e) = self.run(None, alpha) {
            let _ = self.gpu.synchronize();
            return Err(e);
        }
        self.gpu.synchronize()?;
        self.output()?.to_host()
    }
}

/// Whether content [B, 3, H, W] and style [Bs, 3, Hs, Ws] go through the encoder as one batch: same size.
fn batched(content: &[usize], style: &[usize]) -> bool {
    content.get(2..) == style.get(2..)
}
