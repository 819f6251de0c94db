//! TransformerNet on the GPU (fp32 path).
//!
//! Layer by layer as the reference: conv (with its bias) -> InstanceNorm (+ReLU) with the fp32 direct
//! convolution and the InstanceNorm kernels; the residual blocks normalise their second conv in place and
//! add the block input in the same kernel. Every launch goes to the GPU's one stream; activation buffers
//! are allocated once per input shape and reused.
//!
//! By default the whole pass is captured once per input shape into a CUDA graph (on the first call at
//! that shape, which itself launches directly) and replayed from the second call on (one driver call
//! instead of ~60 launches): the input is first copied (on the stream) into the net's own input
//! buffer, so every address the graph bakes in stays fixed. If capturing fails the net falls back to
//! direct launches and remembers why ([`GpuTransformerNet::graph_error`]).
use models::ops::Padding;
use models::transformer_net::{ConvLayer, Norm};
use models::{Tensor, TransformerNet};

use crate::error::{ensure, Result};
use crate::gpu::{CudaGraph, DType, DeviceTensor, Gpu, Layout};
use crate::ops::conv2d::{conv2d, conv2d_output_size};
use crate::ops::instance_norm::{instance_norm_inplace, instance_norm_stats_len};

const OP: &str = "GpuTransformerNet";

/// A conv layer's parameters on the device.
struct GpuConv {
    w: DeviceTensor,
    b: DeviceTensor,
    stride: usize,
    upsample: usize,
    pad: Padding,
    k: usize,
}

impl GpuConv {
    fn new(l: &ConvLayer) -> Result<Self> {
        let s = &l.weight.shape;
        ensure(s.len() == 4 && s[2] == s[3] && s[2] % 2 == 1, OP, || {
            format!("conv weight {s:?} is not [K, C, R, R] with odd R")
        })?;
        Ok(GpuConv {
            w: DeviceTensor::from_host(&l.weight)?,
            b: DeviceTensor::from_host(&l.bias)?,
            stride: l.stride,
            upsample: l.upsample.max(1),
            pad: Padding::Reflect(s[2] / 2),
            k: s[0],
        })
    }
    /// Output shape for an input shape [N, C, H, W].
    fn out_shape(&self, x: &[usize]) -> Result<Vec<usize>> {
        let r = self.w.shape[2];
        let (p, q) = conv2d_output_size(x[2], x[3], r, self.stride, self.pad, self.upsample)
            .ok_or_else(|| crate::Error::Shape {
                op: OP,
                msg: format!("input {x:?} too small for a {r}x{r} conv"),
            })?;
        Ok(vec![x[0], self.k, p, q])
    }
    fn run(&self, gpu: &Gpu, x: &DeviceTensor, y: &mut DeviceTensor) -> Result<()> {
        conv2d(
            gpu,
            x,
            &self.w,
            Some(&self.b),
            self.stride,
            self.pad,
            self.upsample,
            y,
        )
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
    fn run(
        &self,
        gpu: &Gpu,
        x: &mut DeviceTensor,
        relu: bool,
        residual: Option<&DeviceTensor>,
        stats: &mut DeviceTensor,
    ) -> Result<()> {
        instance_norm_inplace(gpu, x, &self.gamma, &self.beta, relu, residual, stats)
    }
}

struct GpuResBlock {
    conv1: GpuConv,
    in1: GpuNorm,
    conv2: GpuConv,
    in2: GpuNorm,
}

/// Activation buffers for one input shape.
struct Buffers {
    /// The captured forward pass for this shape (declared first: dropped before the buffers it uses).
    graph: Option<CudaGraph>,
    input_shape: Vec<usize>,
    /// Fixed-address input: host-to-device staging for [`GpuTransformerNet::forward`] and the graph's input.
    input: DeviceTensor,
    a1: DeviceTensor,
    a2: DeviceTensor,
    /// The residual trunk's running value and two temporaries (swapped between blocks).
    trunk: DeviceTensor,
    t1: DeviceTensor,
    t2: DeviceTensor,
    u1: DeviceTensor,
    u2: DeviceTensor,
    out: DeviceTensor,
    stats: DeviceTensor,
}

/// TransformerNet's weights on the device plus per-shape activation buffers (reallocated only when the
/// input shape changes). Borrows the [`Gpu`] so it cannot outlive the context.
pub struct GpuTransformerNet<'g> {
    gpu: &'g Gpu,
    conv1: GpuConv,
    in1: GpuNorm,
    conv2: GpuConv,
    in2: GpuNorm,
    conv3: GpuConv,
    in3: GpuNorm,
    res: Vec<GpuResBlock>,
    deconv1: GpuConv,
    in4: GpuNorm,
    deconv2: GpuConv,
    in5: GpuNorm,
    deconv3: GpuConv,
    bufs: Option<Buffers>,
    use_graph: bool,
    /// Why graph capture failed (graphs are then no longer tried).
    graph_error: Option<String>,
}

/// Estimated cost of one layer group (see [`GpuTransformerNet::layer_costs`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCost {
    pub name: &'static str,
    /// What kind of work the group is (for the per-kind summary of `bench --layers`).
    pub kind: OpKind,
    /// Convolution FLOPs, 2·N·P·Q·K·C·R·S (InstanceNorm's few FLOPs per element are not counted).
    pub flops: f64,
    /// Bytes moved: activations read and written, weights read once (no cache reuse assumed).
    pub bytes: f64,
}

/// The kind of work of a layer group or op, for the per-kind totals of `bench --layers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Convolution (with whatever normalisation is fused into it or follows it).
    Conv,
    /// Matrix multiply (linear layers, patch embedding).
    Gemm,
    /// Attention (QKᵀ, softmax, PV).
    Attention,
    /// Normalisation (LayerNorm, AdaIN, InstanceNorm passes).
    Norm,
    /// Anything else (layout changes, small tails).
    Other,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Conv => "conv",
            OpKind::Gemm => "gemm",
            OpKind::Attention => "attention",
            OpKind::Norm => "norm",
            OpKind::Other => "other",
        }
    }
}

/// Names of the layer groups, in order, as passed to the `mark` callback of
/// [`GpuTransformerNet::forward_device_marked`].
const RES_NAMES: [&str; 5] = ["res1", "res2", "res3", "res4", "res5"];
pub(crate) fn res_name(i: usize) -> &'static str {
    RES_NAMES.get(i).copied().unwrap_or("res")
}

impl<'g> GpuTransformerNet<'g> {
    /// Uploads the weights.
    pub fn new(gpu: &'g Gpu, net: &TransformerNet) -> Result<Self> {
        let res = net
            .res
            .iter()
            .map(|b| {
                Ok(GpuResBlock {
                    conv1: GpuConv::new(&b.conv1)?,
                    in1: GpuNorm::new(&b.in1)?,
                    conv2: GpuConv::new(&b.conv2)?,
                    in2: GpuNorm::new(&b.in2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let me = GpuTransformerNet {
            gpu,
            conv1: GpuConv::new(&net.conv1)?,
            in1: GpuNorm::new(&net.in1)?,
            conv2: GpuConv::new(&net.conv2)?,
            in2: GpuNorm::new(&net.in2)?,
            conv3: GpuConv::new(&net.conv3)?,
            in3: GpuNorm::new(&net.in3)?,
            res,
            deconv1: GpuConv::new(&net.deconv1)?,
            in4: GpuNorm::new(&net.in4)?,
            deconv2: GpuConv::new(&net.deconv2)?,
            in5: GpuNorm::new(&net.in5)?,
            deconv3: GpuConv::new(&net.deconv3)?,
            bufs: None,
            use_graph: true,
            graph_error: None,
        };
        Ok(me)
    }

    /// Allocates the activation buffers for input shape `x` unless they are already there.
    fn ensure_buffers(&mut self, x: &[usize]) -> Result<()> {
        if self.bufs.as_ref().is_some_and(|b| b.input_shape == x) {
            return Ok(());
        }
        self.bufs = None; // free the old shape's buffers first
        let s1 = self.conv1.out_shape(x)?;
        let s2 = self.conv2.out_shape(&s1)?;
        let s3 = self.conv3.out_shape(&s2)?;
        let mut st = s3.clone();
        for b in &self.res {
            let m = b.conv1.out_shape(&st)?;
            let o = b.conv2.out_shape(&m)?;
            ensure(o == st && m == st, OP, || {
                format!("residual block changes the shape {st:?} -> {o:?}")
            })?;
            st = o;
        }
        let s4 = self.deconv1.out_shape(&s3)?;
        let s5 = self.deconv2.out_shape(&s4)?;
        let s6 = self.deconv3.out_shape(&s5)?;
        let stats_len = [&s1, &s2, &s3, &s4, &s5]
            .iter()
            .map(|s| instance_norm_stats_len(s))
            .max()
            .unwrap_or(0);
        let t = |s: &[usize]| DeviceTensor::empty(s, DType::F32, Layout::Nchw);
        self.bufs = Some(Buffers {
            graph: None,
            input_shape: x.to_vec(),
            input: t(x)?,
            a1: t(&s1)?,
            a2: t(&s2)?,
            trunk: t(&s3)?,
            t1: t(&s3)?,
            t2: t(&s3)?,
            u1: t(&s4)?,
            u2: t(&s5)?,
            out: t(&s6)?,
            stats: t(&[stats_len.max(1)])?,
        });
        Ok(())
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

    fn check_input(x: &[usize]) -> Result<()> {
        ensure(x.len() == 4 && x[1] == 3, OP, || {
            format!("input must be f32 [N, 3, H, W], got {x:?}")
        })?;
        // H, W ≥ 5 keeps every reflection pad smaller than its input (the 4x4-subsampled trunk is ≥ 2).
        ensure(x[0] > 0 && x[2] >= 5 && x[3] >= 5, OP, || {
            format!("input {x:?}: batch must be ≥ 1 and H, W ≥ 5")
        })
    }

    /// Queues the forward pass for `x` [N, 3, H, W] (already on the device) on the GPU's stream, with no
    /// host synchronisation; returns the output buffer [N, 3, H', W'] (valid until the next call).
    pub fn forward_device(&mut self, x: &DeviceTensor) -> Result<&DeviceTensor> {
        ensure(x.dtype == DType::F32, OP, || {
            format!(
                "input must be f32 [N, 3, H, W], got {:?} {:?}",
                x.dtype, x.shape
            )
        })?;
        Self::check_input(&x.shape)?;
        self.ensure_buffers(&x.shape)?;
        self.run(Some(x))?;
        self.output()
    }

    /// As [`Self::forward_device`], always with direct launches, calling `mark(name)` after each layer
    /// group is queued (names: conv1+in1, conv2+in2, conv3+in3, res1..res5, deconv1+in4, deconv2+in5,
    /// deconv3). `mark` may record events on the stream; it must not synchronise it if timings matter.
    pub fn forward_device_marked(
        &mut self,
        x: &DeviceTensor,
        mark: &mut dyn FnMut(&'static str) -> Result<()>,
    ) -> Result<&DeviceTensor> {
        ensure(x.dtype == DType::F32, OP, || {
            format!(
                "input must be f32 [N, 3, H, W], got {:?} {:?}",
                x.dtype, x.shape
            )
        })?;
        Self::check_input(&x.shape)?;
        self.ensure_buffers(&x.shape)?;
        self.queue(Some(x), mark)?;
        self.output()
    }

    /// Estimated FLOPs and bytes of each layer group for input shape `x`, in the order and with the names
    /// of [`Self::forward_device_marked`].
    pub fn layer_costs(&self, x: &[usize]) -> Result<Vec<LayerCost>> {
        Self::check_input(x)?;
        let conv = |c: &GpuConv, x: &[usize]| -> Result<(f64, f64, Vec<usize>)> {
            let o = c.out_shape(x)?;
            let (r, s) = (c.w.shape[2], c.w.shape[3]);
            let flops = 2.0 * (o[0] * o[2] * o[3] * o[1] * x[1] * r * s) as f64;
            let bytes = 4.0
                * (x.iter().product::<usize>()
                    + c.w.numel()
                    + c.b.numel()
                    + o.iter().product::<usize>()) as f64;
            Ok((flops, bytes, o))
        };
        // In place: one pass for the statistics, one to normalise (read + write), plus the residual read.
        let norm = |o: &[usize], residual: bool| {
            4.0 * (o.iter().product::<usize>() * if residual { 4 } else { 3 } + 2 * o[1]) as f64
        };
        let mut v = Vec::new();
        let mut shape = x.to_vec();
        for (name, c) in [
            ("conv1+in1", &self.conv1),
            ("conv2+in2", &self.conv2),
            ("conv3+in3", &self.conv3),
        ] {
            let (f, b, o) = conv(c, &shape)?;
            v.push(LayerCost {
                name,
                kind: OpKind::Conv,
                flops: f,
                bytes: b + norm(&o, false),
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
                bytes: b1 + b2 + norm(&o1, false) + norm(&o2, true),
            });
            shape = o2;
        }
        for (name, c, with_norm) in [
            ("deconv1+in4", &self.deconv1, true),
            ("deconv2+in5", &self.deconv2, true),
            ("deconv3", &self.deconv3, false),
        ] {
            let (f, b, o) = conv(c, &shape)?;
            v.push(LayerCost {
                name,
                kind: OpKind::Conv,
                flops: f,
                bytes: b + if with_norm { norm(&o, false) } else { 0.0 },
            });
            shape = o;
        }
        Ok(v)
    }

    fn output(&self) -> Result<&DeviceTensor> {
        match self.bufs.as_ref() {
            Some(b) => Ok(&b.out),
            None => Err(crate::Error::Other(
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
            return Err(crate::Error::Other(
                "buffers missing after allocation".into(),
            ));
        };
        if let Some(x) = x {
            // Ordered on the stream before the replay; a no-op when `x` is the staging buffer itself.
            gpu.copy_device_async(x, &mut b.input)?;
        }
        if b.graph.is_none() {
            // First pass at this shape: launch directly (this call's result; it also loads every kernel
            // and sets launch attributes outside any capture), then capture the same launches for the
            // following calls. Recomputing from the staged input makes every pass independent.
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
            None => Err(crate::Error::Other("graph missing after capture".into())),
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
        let Some(b) = self.bufs.as_mut() else {
            return Err(crate::Error::Other(
                "buffers missing after allocation".into(),
            ));
        };
        let Buffers {
            input,
            a1,
            a2,
            trunk,
            t1,
            t2,
            u1,
            u2,
            out,
            stats,
            ..
        } = b;
        let x: &DeviceTensor = match x {
            Some(x) => x,
            None => input,
        };
        self.conv1.run(gpu, x, a1)?;
        self.in1.run(gpu, a1, true, None, stats)?;
        mark("conv1+in1")?;
        self.conv2.run(gpu, a1, a2)?;
        self.in2.run(gpu, a2, true, None, stats)?;
        mark("conv2+in2")?;
        self.conv3.run(gpu, a2, trunk)?;
        self.in3.run(gpu, trunk, true, None, stats)?;
        mark("conv3+in3")?;
        for (i, blk) in self.res.iter().enumerate() {
            blk.conv1.run(gpu, trunk, t1)?;
            blk.in1.run(gpu, t1, true, None, stats)?;
            blk.conv2.run(gpu, t1, t2)?;
            // t2 = in2(t2) + trunk, then t2 becomes the trunk.
            blk.in2.run(gpu, t2, false, Some(trunk), stats)?;
            std::mem::swap(trunk, t2);
            mark(res_name(i))?;
        }
        self.deconv1.run(gpu, trunk, u1)?;
        self.in4.run(gpu, u1, true, None, stats)?;
        mark("deconv1+in4")?;
        self.deconv2.run(gpu, u1, u2)?;
        self.in5.run(gpu, u2, true, None, stats)?;
        mark("deconv2+in5")?;
        self.deconv3.run(gpu, u2, out)?;
        mark("deconv3")
    }

    /// Convenience: host tensor in, host tensor out (uploads, runs, synchronises, downloads).
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        Self::check_input(&x.shape)?;
        self.ensure_buffers(&x.shape)?;
        let Some(b) = self.bufs.as_mut() else {
            return Err(crate::Error::Other(
                "buffers missing after allocation".into(),
            ));
        };
        // A blocking copy on the legacy stream: it waits for earlier work on our (blocking) stream, so it
        // cannot overwrite the staging buffer under a pass still reading it.
        b.input.copy_from_f32(&x.data)?;
        if let Err(e) = self.run(None) {
            // Leave no queued work behind that could race with the next upload.
            let _ = self.gpu.synchronize();
            return Err(e);
        }
        self.gpu.synchronize()?;
        self.output()?.to_host()
    }
}
