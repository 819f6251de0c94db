//! StyleViT on the GPU (fp32 path).
//!
//! Per transformer block (post-norm, tokens [M = B·N, D]):
//! `qkv = linear(x)` → flash `attention` read in place from qkv → `t = linear(a)` →
//! `x2 = layer_norm(t + x)` → `h = gelu(linear(x2))` (fused epilogue) → `t = linear(h)` →
//! `x = layer_norm(t + x2)`. Patch embedding is an im2col gather plus `linear` whose residual epilogue adds
//! the sinusoidal table (uploaded once per token count); AdaIN fuses the alpha blend; then the decoder,
//! `to_pixels`, then unpatch + 3x3 conv (zero padding) + ReLU + 1x1 conv fused in one kernel. Everything is queued on
//! the GPU's one stream; buffers are allocated once per (content, style) shape.
//!
//! By default the whole pass is captured into a CUDA graph once per (content shape, style shape, alpha)
//! (on the first call with them, which itself launches directly) and replayed from the next call on; the inputs are first copied (on the stream) into the net's own input buffers so the
//! graph's addresses stay fixed. If capturing fails the net falls back to direct launches and remembers
//! why ([`GpuStyleVit::graph_error`]).
use models::{StyleVit, StyleVitConfig, Tensor};

use crate::error::{ensure, Error, Result};
use crate::gpu::{CudaGraph, DeviceTensor, Gpu, Layout};
use crate::nets::transformer_net::{LayerCost, OpKind};
use crate::ops::attention::{attention_qkv, HEAD_DIMS};
use crate::ops::layer_norm::layer_norm;
use crate::ops::linear::{linear, linear_gelu};
use crate::ops::patch::{patch_embed, patch_grid, unpatch_tail};

const OP: &str = "GpuStyleVit";

fn upload(t: &Tensor, layout: Layout) -> Result<DeviceTensor> {
    DeviceTensor::from_f32(&t.shape, &t.data, layout)
}
fn mat(t: &Tensor) -> Result<DeviceTensor> {
    upload(t, Layout::RowMajor)
}

/// One post-norm transformer block's weights on the device.
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
            w_qkv: mat(&b.w_qkv)?,
            b_qkv: mat(&b.b_qkv)?,
            w_out: mat(&b.w_out)?,
            b_out: mat(&b.b_out)?,
            fc1_w: mat(&b.fc1_w)?,
            fc1_b: mat(&b.fc1_b)?,
            fc2_w: mat(&b.fc2_w)?,
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
    x2: DeviceTensor,
    qkv: DeviceTensor,
    a: DeviceTensor,
    t: DeviceTensor,
    h: DeviceTensor,
}

impl Seq {
    fn new(cfg: &StyleVitConfig, b: usize, n: usize) -> Result<Self> {
        let (p, d, f) = (cfg.patch_size, cfg.embed_dim, cfg.ffn_dim);
        let e =
            |shape: &[usize]| DeviceTensor::empty(shape, crate::gpu::DType::F32, Layout::RowMajor);
        Ok(Seq {
            cols: e(&[b * n, 3 * p * p])?,
            pos: mat(&models::ops::sinusoidal(n, d))?,
            x: e(&[b, n, d])?,
            x2: e(&[b, n, d])?,
            qkv: e(&[b, n, 3 * d])?,
            a: e(&[b, n, d])?,
            t: e(&[b, n, d])?,
            h: e(&[b, n, f])?,
        })
    }

    /// One post-norm block; input and output in `x`.
    fn block(&mut self, gpu: &Gpu, w: &BlockW, heads: usize) -> Result<()> {
        linear(gpu, &self.x, &w.w_qkv, Some(&w.b_qkv), &mut self.qkv)?;
        attention_qkv(gpu, &self.qkv, heads, &mut self.a)?;
        linear(gpu, &self.a, &w.w_out, Some(&w.b_out), &mut self.t)?;
        layer_norm(gpu, &self.t, Some(&self.x), &w.n1_w, &w.n1_b, &mut self.x2)?;
        linear_gelu(gpu, &self.x2, &w.fc1_w, Some(&w.fc1_b), &mut self.h)?;
        linear(gpu, &self.h, &w.fc2_w, Some(&w.fc2_b), &mut self.t)?;
        layer_norm(gpu, &self.t, Some(&self.x2), &w.n2_w, &w.n2_b, &mut self.x)
    }
}

/// Buffers for one (content shape, style shape).
struct Bufs {
    /// The captured forward pass (declared first: dropped before the buffers it uses) and its alpha bits.
    graph: Option<(CudaGraph, u32)>,
    key: (Vec<usize>, Vec<usize>),
    /// Fixed-address inputs (staging for `forward`, the graph's inputs).
    cin: DeviceTensor,
    sin: DeviceTensor,
    content: Seq,
    style: Seq,
    pix: DeviceTensor,
    out: DeviceTensor,
}

/// StyleViT's weights on the device plus per-shape buffers. Borrows the [`Gpu`].
pub struct GpuStyleVit<'g> {
    gpu: &'g Gpu,
    cfg: StyleVitConfig,
    /// [D, 3·p·p]: the conv weight [D, 3, p, p] flattened (im2col column order c, ky, kx).
    patch_w: DeviceTensor,
    patch_b: DeviceTensor,
    encoder: Vec<BlockW>,
    decoder: Vec<BlockW>,
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

impl<'g> GpuStyleVit<'g> {
    pub fn new(gpu: &'g Gpu, net: &StyleVit) -> Result<Self> {
        let cfg = net.cfg;
        let (p, d) = (cfg.patch_size, cfg.embed_dim);
        ensure(
            p > 0 && cfg.num_heads > 0 && d.is_multiple_of(cfg.num_heads),
            OP,
            || format!("bad config {cfg:?}"),
        )?;
        let dh = d / cfg.num_heads;
        ensure(HEAD_DIMS.contains(&dh), OP, || {
            format!("head_dim {dh} is not supported (only {HEAD_DIMS:?})")
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
        Ok(GpuStyleVit {
            gpu,
            cfg,
            patch_w: DeviceTensor::from_f32(&[d, 3 * p * p], &net.patch_w.data, Layout::RowMajor)?,
            patch_b: mat(&net.patch_b)?,
            encoder: net.encoder.iter().map(BlockW::new).collect::<Result<_>>()?,
            decoder: net.decoder.iter().map(BlockW::new).collect::<Result<_>>()?,
            to_pixels_w: mat(&net.to_pixels_w)?,
            to_pixels_b: mat(&net.to_pixels_b)?,
            final0_w: upload(&net.final0_w, Layout::Nchw)?,
            final0_b: mat(&net.final0_b)?,
            final2_w: upload(&net.final2_w, Layout::Nchw)?,
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
        let e = |shape: &[usize]| DeviceTensor::empty(shape, crate::gpu::DType::F32, Layout::Nchw);
        self.bufs = Some(Bufs {
            graph: None,
            cin: e(content)?,
            sin: e(style)?,
            content: Seq::new(&self.cfg, b, hp * wp)?,
            style: Seq::new(&self.cfg, bs, hps * wps)?,
            pix: DeviceTensor::empty(
                &[b, hp * wp, 3 * p * p],
                crate::gpu::DType::F32,
                Layout::RowMajor,
            )?,
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

    /// Queues the forward pass on the stream with no host sync; content [B, 3, H, W], style [B or 1, 3, Hs, Ws]
    /// (multiples of the patch size). Returns the output buffer [B, 3, H, W].
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
            content.dtype == crate::gpu::DType::F32 && style.dtype == crate::gpu::DType::F32,
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

    /// As [`Self::forward_device`], always with direct launches, calling `mark(name)` after each stage
    /// is queued (names: content encoder, style encoder, adain, decoder, to_pixels+tail).
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
        self.ensure_bufs(&content.shape, &style.shape)?;
        self.queue(Some((content, style)), alpha, mark)?;
        self.output()
    }

    /// Estimated FLOPs (linears and attention) and bytes (activations written and read, weights read
    /// once) of each stage of [`Self::forward_device_marked`] for these input shapes.
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
        // One post-norm block on b sequences of n tokens.
        let block = |b: usize, n: usize| {
            let (bf, nf) = (b as f64, n as f64);
            let m = bf * nf;
            let flops = 2.0 * m * d * (3.0 * d + d + 2.0 * f) + 4.0 * bf * nf * nf * d;
            // qkv (r D, w 3D), attention (r 3D, w D), out (r D, w D), LN (r 2D, w D), fc1 (r D, w F),
            // fc2 (r F, w D), LN (r 2D, w D); weights 4D² + 2DF.
            let bytes = 4.0 * (m * (18.0 * d + 2.0 * f) + 4.0 * d * d + 2.0 * d * f);
            (flops, bytes)
        };
        let encoder = |b: usize, n: usize| {
            let m = (b * n) as f64;
            let (mut fl, mut by) = (2.0 * m * k * d, 4.0 * (m * k * 2.0 + m * d * 2.0 + k * d));
            for _ in &self.encoder {
                let (x, y) = block(b, n);
                fl += x;
                by += y;
            }
            (fl, by)
        };
        let (nc, ns) = (hp * wp, hps * wps);
        let mut v = Vec::new();
        for (name, (flops, bytes)) in [
            ("content encoder", encoder(b, nc)),
            ("style encoder", encoder(bs, ns)),
        ] {
            v.push(LayerCost {
                name,
                kind: OpKind::Other,
                flops,
                bytes,
            });
        }
        let (mc, ms) = ((b * nc) as f64, (bs * ns) as f64);
        v.push(LayerCost {
            name: "adain",
            kind: OpKind::Norm,
            flops: 0.0,
            bytes: 4.0 * d * (2.0 * mc + ms),
        });
        let (mut fl, mut by) = (0.0, 0.0);
        for _ in &self.decoder {
            let (x, y) = block(b, nc);
            fl += x;
            by += y;
        }
        v.push(LayerCost {
            name: "decoder",
            kind: OpKind::Other,
            flops: fl,
            bytes: by,
        });
        let px = (b * content[2] * content[3]) as f64;
        v.push(LayerCost {
            name: "to_pixels+tail",
            kind: OpKind::Other,
            flops: 2.0 * mc * d * k + 2.0 * px * 3.0 * 27.0 + 2.0 * px * 9.0,
            bytes: 4.0 * (mc * d + 2.0 * mc * k + 2.0 * px * 3.0 * 3.0 + d * k),
        });
        Ok(v)
    }

    fn output(&self) -> Result<&DeviceTensor> {
        match &self.bufs {
            Some(b) => Ok(&b.out),
            None => Err(Error::Other("GpuStyleVit: no output buffer".into())),
        }
    }

    /// Runs the pass on buffers already sized for the inputs (`None`: the staged inputs). Through the graph
    /// when enabled; on a capture failure, directly (remembering the failure when the direct launches then
    /// work, so a data error is not mistaken for a graph problem).
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
                "GpuStyleVit: buffers missing after allocation".into(),
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
                "GpuStyleVit: graph missing after capture".into(),
            )),
        }
    }

    /// Queues every launch of the pass from `inputs` (or the staged inputs when `None`).
    fn queue(
        &mut self,
        inputs: Option<(&DeviceTensor, &DeviceTensor)>,
        alpha: f32,
        mark: &mut dyn FnMut(&'static str) -> Result<()>,
    ) -> Result<()> {
        let gpu = self.gpu;
        let cfg = self.cfg;
        let p = cfg.patch_size;
        let heads = cfg.num_heads;
        let Some(bufs) = self.bufs.as_mut() else {
            return Err(Error::Other(
                "GpuStyleVit: buffers missing after allocation".into(),
            ));
        };
        let Bufs {
            cin,
            sin,
            content: cseq,
            style: sseq,
            pix,
            out,
            ..
        } = bufs;
        let (content, style): (&DeviceTensor, &DeviceTensor) = match inputs {
            Some(io) => io,
            None => (cin, sin),
        };
        let (_, hp, wp) = patch_grid(&content.shape, p)?;
        for (img, seq, name) in [
            (content, &mut *cseq, "content encoder"),
            (style, &mut *sseq, "style encoder"),
        ] {
            patch_embed(
                gpu,
                img,
                &self.patch_w,
                &self.patch_b,
                Some(&seq.pos),
                p,
                &mut seq.cols,
                &mut seq.x,
            )?;
            for w in &self.encoder {
                seq.block(gpu, w, heads)?;
            }
            mark(name)?;
        }
        let c = cseq;
        crate::ops::adain::adain(gpu, &c.x, &sseq.x, alpha, &mut c.x2)?;
        std::mem::swap(&mut c.x, &mut c.x2);
        mark("adain")?;
        for w in &self.decoder {
            c.block(gpu, w, heads)?;
        }
        mark("decoder")?;
        linear(gpu, &c.x, &self.to_pixels_w, Some(&self.to_pixels_b), pix)?;
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
        mark("to_pixels+tail")
    }

    /// Host tensors in, host tensor out (uploads, runs, synchronises, downloads).
    pub fn forward(&mut self, content: &Tensor, style: &Tensor, alpha: f32) -> Result<Tensor> {
        ensure(alpha.is_finite(), OP, || {
            format!("alpha {alpha} is not finite")
        })?;
        self.ensure_bufs(&content.shape, &style.shape)?;
        let Some(b) = self.bufs.as_mut() else {
            return Err(Error::Other(
                "GpuStyleVit: buffers missing after allocation".into(),
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
