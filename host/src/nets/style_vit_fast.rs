//! StyleViT on the GPU, tensor-core path: the transformer blocks' GEMMs run on `linear_tc` (f16 inputs,
//! f32 accumulation) and attention on `attention_tc` (f16); everything between them stays f32.
//!
//! Per post-norm block (tokens [M = B·N, D]; `·16` marks the f16 copies):
//! `qkv16 = linear_tc(x16)` → `a16 = attention_tc(qkv16)` → `t = linear_tc(a16) + x` (residual fused in
//! the epilogue) → `x2, x2_16 = layer_norm(t)` → `h16 = gelu(linear_tc(x2_16))` →
//! `t = linear_tc(h16) + x2` → `x, x16 = layer_norm(t)`. The LayerNorms write the f16 copy for the next
//! GEMM themselves. The patch embedding is an f16 im2col + `linear_tc` (bias and positions in its
//! epilogue, f32 and f16 outputs); AdaIN stays fp32 (followed by one f16 conversion); `to_pixels` runs on
//! `linear_tc`; unpatch and the 3x3 / 1x1 tail are one fp32 kernel (`unpatch_tail`). Content and style images of the same
//! size go through the encoder as one batch (half the launches; at 64 tokens every launch is latency).
//! Same public API as [`crate::nets::GpuStyleVit`] (graph capture per shape and alpha included).
//!
//! LayerNorm folding (few tokens, the default; [`GpuStyleVitFast::set_ln_fold`], `STYLEFORGE_LN_FOLD=0`
//! to disable): when all four block GEMMs of a sequence run on the few-row kernel (`linear_tc_small`,
//! e.g. 64 or 128 tokens), a block is five launches instead of seven: `qkv16 = linear_tc(LN2'(t2_16))`
//! → attention → `t1, t1_16 = linear_tc(a16) + LN2'(t2)` → `h16 = gelu(linear_tc(LN1(t1_16)))` →
//! `t2, t2_16 = linear_tc(h16) + LN1(t1)`, where LN2' is the previous block's norm2 and every LN is
//! applied by the consuming GEMM (`RowNorms`: row statistics from the f32 sum in its prologue, the
//! x operand normalised in shared memory, the residual in the epilogue). The first block reads the
//! patch embedding's (or AdaIN's) explicit `x`, `x16`; the encoder's last norm2 stays an explicit
//! `layer_norm_f16` (AdaIN consumes it); the decoder's last one is applied by `to_pixels`. At 64 tokens
//! (base, 6 + 6 blocks) that removes 23 of the 24 LayerNorm launches. The GEMM operands become
//! LN(f16(t)) instead of f16(LN(t)) (≈1e-3-level differences, measured by the emulation in
//! selfcheck/vit_fast.rs); the residual path stays f32 as before.
//!
//! Precision: the f16 rounding of the GEMM and attention inputs (image, x, weights, qkv, attention output,
//! the GELU output) is the only systematic difference from the fp32 path; the self-check measures its effect
//! with a CPU emulation that rounds at the same places (selfcheck/vit_fast.rs).
use models::{StyleVit, StyleVitConfig, Tensor};

use crate::error::{ensure, Error, Result};
use crate::gpu::{CudaGraph, DType, DeviceTensor, Gpu, Layout};
use crate::nets::transformer_net::{LayerCost, OpKind};
use crate::ops::attention_tc::{attention_tc_qkv, HEAD_DIMS};
use crate::ops::linear_tc::{
    layer_norm_f16, linear_tc_ln, linear_tc_ws, supports_row_norms, to_f16, EpilogueTc,
    LinearTcWorkspace, RowNorm, RowNorms,
};
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
    x: DeviceTensor,
    x16: DeviceTensor,
    x2: DeviceTensor,
    x2_16: DeviceTensor,
    qkv16: DeviceTensor,
    a16: DeviceTensor,
    /// The out-projection's pre-norm sum (f32, and its f16 copy when the norms are folded).
    t1: DeviceTensor,
    t1_16: DeviceTensor,
    /// fc2's pre-norm sum (f32, and its f16 copy when the norms are folded).
    t2: DeviceTensor,
    t2_16: DeviceTensor,
    h16: DeviceTensor,
    /// Whether this sequence's blocks fold their LayerNorms into the GEMMs ([`Seq::block_folded`]).
    fold: bool,
}

impl Seq {
    fn new(cfg: &StyleVitConfig, b: usize, n: usize, fold: bool) -> Result<Self> {
        let (p, d, f) = (cfg.patch_size, cfg.embed_dim, cfg.ffn_dim);
        let e = |shape: &[usize]| DeviceTensor::empty(shape, DType::F32, Layout::RowMajor);
        let h = |shape: &[usize]| DeviceTensor::empty(shape, DType::F16, Layout::RowMajor);
        Ok(Seq {
            cols: h(&[b * n, 3 * p * p])?,
            pos: mat(&models::ops::sinusoidal(n, d))?,
            x: e(&[b, n, d])?,
            x16: h(&[b, n, d])?,
            x2: e(&[b, n, d])?,
            x2_16: h(&[b, n, d])?,
            qkv16: h(&[b, n, 3 * d])?,
            a16: h(&[b, n, d])?,
            t1: e(&[b, n, d])?,
            t1_16: h(&[b, n, d])?,
            t2: e(&[b, n, d])?,
            t2_16: h(&[b, n, d])?,
            h16: h(&[b, n, f])?,
            fold,
        })
    }

    /// One post-norm block with its LayerNorms folded into the GEMMs (five launches). Input: `prev`
    /// `None`: the normalised `x`, `x16`; `Some(p)`: LN(t2) with `p`'s norm2 (the previous block's
    /// output, left unnormalised in `t2`, `t2_16`). Output: LN(t2) with `w`'s norm2, left for the
    /// consumer to apply (the next block's GEMMs, `to_pixels`, or [`Seq::finish`]). The out-projection
    /// writes t1 (f32 + f16): fc1 normalises it as its x operand, fc2 as its residual; fc2 writes t2,
    /// which the next block's qkv and out-projection normalise the same way. Calls `mark(names[i])`
    /// for i in [`FOLDED_OPS`].
    #[allow(clippy::too_many_arguments)]
    fn block_folded(
        &mut self,
        gpu: &Gpu,
        ws: &mut LinearTcWorkspace,
        w: &BlockW,
        prev: Option<&BlockW>,
        heads: usize,
        names: &[&'static str; 7],
        mark: Mark,
    ) -> Result<()> {
        let n2 = prev.map(|p| RowNorm::new(&self.t2, &p.n2_w, &p.n2_b));
        let (x16, residual) = match prev {
            Some(_) => (&self.t2_16, None),
            None => (&self.x16, Some(&self.x)),
        };
        let ep = EpilogueTc {
            bias: Some(&w.b_qkv),
            ..Default::default()
        };
        let norms = RowNorms {
            ln: n2,
            res_ln: None,
        };
        linear_tc_ln(gpu, x16, &w.w_qkv, ep, norms, None, Some(&mut self.qkv16), ws)?;
        mark(names[0])?;
        attention_tc_qkv(gpu, &self.qkv16, heads, &mut self.a16)?;
        mark(names[1])?;
        let ep = EpilogueTc {
            bias: Some(&w.b_out),
            gelu: false,
            residual,
        };
        let norms = RowNorms {
            ln: None,
            res_ln: n2,
        };
        linear_tc_ln(
            gpu,
            &self.a16,
            &w.w_out,
            ep,
            norms,
            Some(&mut self.t1),
            Some(&mut self.t1_16),
            ws,
        )?;
        mark(names[2])?;
        let n1 = RowNorm::new(&self.t1, &w.n1_w, &w.n1_b);
        let ep = EpilogueTc {
            bias: Some(&w.fc1_b),
            gelu: true,
            residual: None,
        };
        let norms = RowNorms {
            ln: Some(n1),
            res_ln: None,
        };
        linear_tc_ln(gpu, &self.t1_16, &w.fc1_w, ep, norms, None, Some(&mut self.h16), ws)?;
        mark(names[4])?;
        let ep = EpilogueTc {
            bias: Some(&w.fc2_b),
            ..Default::default()
        };
        let norms = RowNorms {
            ln: None,
            res_ln: Some(n1),
        };
        linear_tc_ln(
            gpu,
            &self.h16,
            &w.fc2_w,
            ep,
            norms,
            Some(&mut self.t2),
            Some(&mut self.t2_16),
            ws,
        )?;
        mark(names[5])
    }

    /// Runs `blocks` on the sequence (input in `x`, `x16`), folded or not as the sequence says. Returns
    /// the block whose norm2 is still to be applied to `t2` (folded), or `None` when `x`, `x16` hold
    /// the output.
    #[allow(clippy::too_many_arguments)]
    fn blocks<'w>(
        &mut self,
        gpu: &Gpu,
        ws: &mut LinearTcWorkspace,
        blocks: &'w [BlockW],
        heads: usize,
        names: &[&'static str; 7],
        mark: Mark,
    ) -> Result<Option<&'w BlockW>> {
        let mut pending: Option<&BlockW> = None;
        for w in blocks {
            if self.fold {
                self.block_folded(gpu, ws, w, pending, heads, names, mark)?;
                pending = Some(w);
            } else {
                self.block(gpu, ws, w, heads, names, mark)?;
            }
        }
        Ok(pending)
    }

    /// Applies a pending norm2 ([`Seq::blocks`]) explicitly: `x`, `x16` = LN(t2) (for consumers that
    /// are not GEMMs: AdaIN), marked as `name`.
    fn finish(
        &mut self,
        gpu: &Gpu,
        pending: Option<&BlockW>,
        name: &'static str,
        mark: Mark,
    ) -> Result<()> {
        if let Some(w) = pending {
            layer_norm_f16(
                gpu,
                &self.t2,
                None,
                &w.n2_w,
                &w.n2_b,
                Some(&mut self.x),
                &mut self.x16,
            )?;
            mark(name)?;
        }
        Ok(())
    }

    /// One post-norm block; input in `x` and `x16`, output there too. Calls `mark(names[i])` after
    /// each of its [`BLOCK_OPS`] ops is queued.
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
        attention_tc_qkv(gpu, &self.qkv16, heads, &mut self.a16)?;
        mark(names[1])?;
        let ep = EpilogueTc {
            bias: Some(&w.b_out),
            gelu: false,
            residual: Some(&self.x),
        };
        linear_tc_ws(gpu, &self.a16, &w.w_out, ep, Some(&mut self.t1), None, ws)?;
        mark(names[2])?;
        layer_norm_f16(
            gpu,
            &self.t1,
            None,
            &w.n1_w,
            &w.n1_b,
            Some(&mut self.x2),
            &mut self.x2_16,
        )?;
        mark(names[3])?;
        let ep = EpilogueTc {
            bias: Some(&w.fc1_b),
            gelu: true,
            residual: None,
        };
        linear_tc_ws(gpu, &self.x2_16, &w.fc1_w, ep, None, Some(&mut self.h16), ws)?;
        mark(names[4])?;
        let ep = EpilogueTc {
            bias: Some(&w.fc2_b),
            gelu: false,
            residual: Some(&self.x2),
        };
        linear_tc_ws(gpu, &self.h16, &w.fc2_w, ep, Some(&mut self.t2), None, ws)?;
        mark(names[5])?;
        layer_norm_f16(
            gpu,
            &self.t2,
            None,
            &w.n2_w,
            &w.n2_b,
            Some(&mut self.x),
            &mut self.x16,
        )?;
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

/// The ops of a block with folded LayerNorms ([`Seq::block_folded`]), as indices into [`BLOCK_OPS`] and
/// the stage's names: the norms disappear, the GEMMs keep their names.
const FOLDED_OPS: [usize; 5] = [0, 1, 2, 4, 5];

/// Environment variable: `0` keeps the explicit LayerNorm launches where the net would fold them into
/// the few-row GEMMs (A/B timing; read when the net is created).
pub const LN_FOLD_ENV: &str = "STYLEFORGE_LN_FOLD";

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
    /// Split-K scratch of the small-M GEMMs (`linear_tc_ws`), shared by all of them (stream order).
    ws: LinearTcWorkspace,
    pix: DeviceTensor,
    out: DeviceTensor,
    /// Whether `to_pixels` applies the decoder's last norm2 (`GpuStyleVitFast::to_pixels_folds`).
    px_fold: bool,
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
    /// Whether sequences whose GEMMs all run on the few-row kernel fold the LayerNorms into them
    /// ([`Self::set_ln_fold`], [`LN_FOLD_ENV`]).
    ln_fold: bool,
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
            ln_fold: std::env::var(LN_FOLD_ENV).map_or(true, |v| v != "0"),
        })
    }

    /// Folds the transformer blocks' LayerNorms into the few-row GEMMs (on by default unless
    /// [`LN_FOLD_ENV`] is `0`): per block five launches instead of seven. The producers of the pre-norm
    /// sums (out-projection, fc2) write them in f32 and f16; the consumers' GEMMs normalise their x
    /// operand (qkv, fc1, `to_pixels`) or residual (out-projection, fc2) on the fly
    /// ([`crate::ops::linear_tc::RowNorms`]). Applies to a token sequence of M = B·N rows only when
    /// every GEMM of its blocks plans the few-row kernel (e.g. 64 or 128 tokens); sequences of many rows
    /// keep the explicit LayerNorm launches. An explicit LayerNorm remains at the end of the encoder
    /// (AdaIN consumes the normalised tokens). Numerics: the GEMM operands become LN(f16(t)) instead of
    /// f16(LN(t)) (a difference at the f16 rounding level); the residual path stays f32-exact. Changing
    /// it drops the buffers and the captured graph.
    pub fn set_ln_fold(&mut self, on: bool) {
        if on != self.ln_fold {
            self.ln_fold = on;
            self.bufs = None;
        }
    }

    /// Whether LayerNorm folding is on ([`Self::set_ln_fold`]).
    pub fn ln_fold(&self) -> bool {
        self.ln_fold
    }

    /// Whether a sequence of `m` token rows folds its LayerNorms: folding is on and all four block GEMMs
    /// (qkv, out-projection, fc1, fc2) of M = `m` plan the few-row kernel.
    fn fold_for(&self, m: usize) -> bool {
        let (d, f) = (self.cfg.embed_dim, self.cfg.ffn_dim);
        self.ln_fold
            && [(3 * d, d), (d, d), (f, d), (d, f)]
                .iter()
                .all(|&(n, k)| supports_row_norms(m, n, k))
    }

    /// Whether `to_pixels` (M = `m` rows) applies the decoder's last norm2 itself.
    fn to_pixels_folds(&self, m: usize) -> bool {
        let (p, d) = (self.cfg.patch_size, self.cfg.embed_dim);
        self.fold_for(m) && !self.decoder.is_empty() && supports_row_norms(m, 3 * p * p, d)
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
        let seq = |bb: usize, n: usize| Seq::new(&self.cfg, bb, n, self.fold_for(bb * n));
        let (both, sep) = if batched(content, style) {
            let input = e(&[b + bs, 3, content[2], content[3]])?;
            (Some((input, seq(b + bs, hp * wp)?)), None)
        } else {
            (None, Some(seq(bs, hps * wps)?))
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
        self.bufs = Some(Bufs {
            ws,
            graph: None,
            cin: e(content)?,
            sin: e(style)?,
            both,
            content: seq(b, hp * wp)?,
            style: sep,
            pix: DeviceTensor::empty(&[b, hp * wp, 3 * p * p], DType::F32, Layout::RowMajor)?,
            out: e(content)?,
            px_fold: self.to_pixels_folds(b * hp * wp),
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
    /// With the LayerNorms folded ([`Self::set_ln_fold`]) a block marks only qkv, attention, out+res,
    /// fc1+gelu, fc2+res, and the encoder's last norm2 is marked after its last block (likewise the
    /// decoder's, when `to_pixels` cannot apply it).
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
        // One post-norm block's ops on b sequences of n tokens (f16 = 2 bytes, f32 = 4), in BLOCK_OPS order.
        let block = |b: usize, n: usize| -> [(f64, f64); 7] {
            let (bf, nf) = (b as f64, n as f64);
            let m = bf * nf;
            [
                (
                    2.0 * m * d * 3.0 * d,
                    2.0 * (4.0 * m * d + 3.0 * d * d) + 4.0 * 3.0 * d,
                ),
                (4.0 * bf * nf * nf * d, 2.0 * 4.0 * m * d),
                (2.0 * m * d * d, 2.0 * (m * d + d * d) + 4.0 * 2.0 * m * d),
                (0.0, 4.0 * 2.0 * m * d + 2.0 * m * d),
                (2.0 * m * d * f, 2.0 * (m * d + m * f + d * f)),
                (2.0 * m * f * d, 2.0 * (m * f + d * f) + 4.0 * 2.0 * m * d),
                (0.0, 4.0 * 2.0 * m * d + 2.0 * m * d),
            ]
        };
        // `end_norm`: with folded norms, whether the last norm2 is an explicit LayerNorm (the encoder's;
        // the decoder's when to_pixels cannot apply it).
        let blocks = |push: &mut dyn FnMut(&'static str, OpKind, f64, f64),
                      names: &[&'static str; 7],
                      count: usize,
                      b: usize,
                      n: usize,
                      end_norm: bool| {
            let c = block(b, n);
            let fold = self.fold_for(b * n);
            let md = (b * n) as f64 * d;
            for blk in 0..count {
                if !fold {
                    for (i, (fl, by)) in c.into_iter().enumerate() {
                        push(names[i], BLOCK_OPS[i], fl, by);
                    }
                    continue;
                }
                // Folded: the producers also write the f16 copy (2·m·d); every normalising GEMM reads
                // its rows' f32 statistics source (~4·m·d; the first block's input is explicit).
                let stats = if blk > 0 { 4.0 * md } else { 0.0 };
                let extra = [stats, 0.0, 2.0 * md + stats, 0.0, 4.0 * md, 6.0 * md, 0.0];
                for i in FOLDED_OPS {
                    push(names[i], BLOCK_OPS[i], c[i].0, c[i].1 + extra[i]);
                }
            }
            if fold && end_norm && count > 0 {
                push(names[6], BLOCK_OPS[6], c[6].0, c[6].1);
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
            // f32 and f16).
            push(
                names.patch,
                OpKind::Gemm,
                2.0 * m * k * d,
                4.0 * m * k + 2.0 * (2.0 * m * k + k * d) + 4.0 * n as f64 * d + 6.0 * m * d,
            );
            blocks(&mut push, &names.block, self.encoder.len(), bb, n, true);
        }
        let (mc, ms) = ((b * hp * wp) as f64, (bs * hps * wps) as f64);
        push(
            "adain",
            OpKind::Norm,
            0.0,
            4.0 * d * (2.0 * mc + ms) + 6.0 * d * mc,
        );
        let px_fold = self.to_pixels_folds(b * hp * wp);
        blocks(&mut push, &DECODER_OPS, self.decoder.len(), b, hp * wp, !px_fold);
        push(
            "to_pixels",
            OpKind::Gemm,
            2.0 * mc * d * k,
            2.0 * (mc * d + d * k) + 4.0 * mc * k + if px_fold { 4.0 * mc * d } else { 0.0 },
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
            pix,
            out,
            ws,
            px_fold,
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
                    &mut seq.x,
                    &mut seq.x16,
                )?;
                mark(names.patch)?;
                let pending = seq.blocks(gpu, ws, encoder, heads, &names.block, mark)?;
                // AdaIN reads the normalised tokens: the last norm2 stays explicit.
                seq.finish(gpu, pending, names.block[6], mark)
            };
        match (both.as_mut(), sep.as_mut()) {
            (Some((input, seq)), _) => {
                gpu.copy_device_into_at(content, input, 0)?;
                gpu.copy_device_into_at(style, input, content.numel())?;
                encode(input, seq, ws, &ENCODER_OPS, mark)?;
                crate::ops::adain::adain_split(gpu, &seq.x, b, alpha, &mut c.x)?;
            }
            (None, Some(s)) => {
                encode(content, c, ws, &CONTENT_OPS, mark)?;
                encode(style, s, ws, &STYLE_OPS, mark)?;
                crate::ops::adain::adain(gpu, &c.x, &s.x, alpha, &mut c.x2)?;
                std::mem::swap(&mut c.x, &mut c.x2);
            }
            (None, None) => return Err(Error::Other("GpuStyleVitFast: no encoder buffers".into())),
        }
        to_f16(gpu, &c.x, &mut c.x16)?;
        mark("adain")?;
        let pending = c.blocks(gpu, ws, &self.decoder, heads, &DECODER_OPS, mark)?;
        let ep = EpilogueTc {
            bias: Some(&self.to_pixels_b),
            ..Default::default()
        };
        match pending {
            // `to_pixels_folds` holds for the decoder's shape whenever its blocks fold (same M), unless
            // the to_pixels product itself needs the many-row kernel: then the norm is explicit.
            Some(w) if *px_fold => {
                let norms = RowNorms {
                    ln: Some(RowNorm::new(&c.t2, &w.n2_w, &w.n2_b)),
                    res_ln: None,
                };
                linear_tc_ln(gpu, &c.t2_16, &self.to_pixels_w, ep, norms, Some(pix), None, ws)?;
            }
            _ => {
                c.finish(gpu, pending, DECODER_OPS[6], mark)?;
                linear_tc_ws(gpu, &c.x16, &self.to_pixels_w, ep, Some(pix), None, ws)?;
            }
        }
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
