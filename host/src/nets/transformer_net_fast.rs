//! TransformerNet on tensor cores: bf16 activations and weights, fp32 accumulation and statistics.
//!
//! Activations are NHWC. The NCHW f32 input is packed into bf16 with 16 channels (conv1's weight is
//! zero-padded from 3 to 16 input channels), every conv is [`conv2d_tc`] (f32 NHWC output), every
//! InstanceNorm computes its statistics on that f32 output and writes the bf16 input of the next conv.
//! Biases of convs followed by InstanceNorm are dropped (the mean subtraction cancels them exactly). The
//! residual trunk is kept in f32 (each block adds its input in f32) with a bf16 copy for the next conv.
//! deconv3 runs with its 3 output channels zero-padded to 32; the unpack kernel takes channels 0..3, adds
//! the bias and writes NCHW f32. Buffers are allocated once per input shape; no host synchronisation in
//! [`GpuTransformerNetFast::forward_device`].
use models::transformer_net::{ConvLayer, Norm};
use models::{Tensor, TransformerNet};

use crate::error::{ensure, Error, Result};
use crate::gpu::{CudaGraph, DType, DeviceTensor, Gpu, Layout};
use crate::nets::transformer_net::{res_name, LayerCost};
use crate::ops::conv2d_tc::{conv2d_tc, conv2d_tc_output_shape, upload_weight};
use crate::ops::nhwc::{nhwc_in_stats_len, nhwc_instance_norm, nhwc_pack_input, nhwc_unpack_output, PACKED_INPUT_CHANNELS};

const OP: &str = "GpuTransformerNetFast";
/// deconv3's output channels are padded to this (the smallest K conv2d_tc supports).
const OUT_CHANNELS_PADDED: usize = 32;

/// `w` [K, C, R, S] zero-padded to [max(K, k_pad), max(C, c_pad), R, S] (the caller checked it is 4-D).
fn padded_weight(w: &Tensor, c_pad: usize, k_pad: usize) -> Tensor {
    let (k, c, rs) = (w.shape[0], w.shape[1], w.shape[2] * w.shape[3]);
    let (kp, cp) = (k.max(k_pad), c.max(c_pad));
    let mut data = vec![0f32; kp * cp * rs];
    for ki in 0..k {
        for ci in 0..c {
            let src = (ki * c + ci) * rs;
            let dst = (ki * cp + ci) * rs;
            data[dst..dst + rs].copy_from_slice(&w.data[src..src + rs]);
        }
    }
    Tensor { shape: vec![kp, cp, w.shape[2], w.shape[3]], data }
}

/// A conv layer on the device: packed bf16 [K, R, S, C] weight, no bias (applied elsewhere or cancelled).
struct TcConv {
    w: DeviceTensor,
    stride: usize,
    upsample: usize,
    pad: usize,
}

impl TcConv {
    /// Uploads `l`'s weight zero-padded to `c_pad` input and `k_pad` output channels (at least its own).
    fn new(l: &ConvLayer, c_pad: usize, k_pad: usize) -> Result<Self> {
        let s = &l.weight.shape;
        ensure(s.len() == 4 && s[2] == s[3] && s[2] % 2 == 1, OP, || format!("conv weight {s:?} is not [K, C, R, R] with odd R"))?;
        let r = s[2];
        let w = upload_weight(&padded_weight(&l.weight, c_pad, k_pad))?;
        Ok(TcConv { w, stride: l.stride, upsample: l.upsample.max(1), pad: r / 2 })
    }
    fn out_shape(&self, x: &[usize]) -> Result<[usize; 4]> {
        conv2d_tc_output_shape(x, &self.w.shape, self.stride, self.pad, self.upsample)
            .ok_or_else(|| Error::Shape { op: OP, msg: format!("input {x:?} too small for a {}x{} conv", self.w.shape[1], self.w.shape[2]) })
    }
    fn run(&self, gpu: &Gpu, x: &DeviceTensor, y: &mut DeviceTensor) -> Result<()> {
        conv2d_tc(gpu, x, &self.w, None, self.stride, self.pad, self.upsample, y)
    }
}

struct GpuNorm {
    gamma: DeviceTensor,
    beta: DeviceTensor,
}
impl GpuNorm {
    fn new(n: &Norm) -> Result<Self> {
        Ok(GpuNorm { gamma: DeviceTensor::from_host(&n.gamma)?, beta: DeviceTensor::from_host(&n.beta)? })
    }
}

struct ResBlock {
    conv1: TcConv,
    in1: GpuNorm,
    conv2: TcConv,
    in2: GpuNorm,
}

/// Activation buffers for one input shape (f32 = conv outputs, h = bf16 conv inputs).
struct Buffers {
    /// The captured forward pass for this shape (declared first: dropped before the buffers it uses).
    graph: Option<CudaGraph>,
    input_shape: Vec<usize>,
    /// NCHW f32 staging for [`GpuTransformerNetFast::forward`].
    input: DeviceTensor,
    x16: DeviceTensor,
    a1f: DeviceTensor,
    a1h: DeviceTensor,
    a2f: DeviceTensor,
    a2h: DeviceTensor,
    /// The residual trunk (f32) and its bf16 copy.
    trunk: DeviceTensor,
    trunk_h: DeviceTensor,
    tf: DeviceTensor,
    th: DeviceTensor,
    u1f: DeviceTensor,
    u1h: DeviceTensor,
    u2f: DeviceTensor,
    u2h: DeviceTensor,
    /// deconv3's padded NHWC f32 output and the final NCHW f32 output.
    o32: DeviceTensor,
    out: DeviceTensor,
    stats: DeviceTensor,
}

/// TransformerNet's weights (bf16, packed) on the device plus per-shape activation buffers. Borrows the
/// [`Gpu`] so it cannot outlive the context.
pub struct GpuTransformerNetFast<'g> {
    gpu: &'g Gpu,
    conv1: TcConv,
    in1: GpuNorm,
    conv2: TcConv,
    in2: GpuNorm,
    conv3: TcConv,
    in3: GpuNorm,
    res: Vec<ResBlock>,
    deconv1: TcConv,
    in4: GpuNorm,
    deconv2: TcConv,
    in5: GpuNorm,
    deconv3: TcConv,
    out_bias: DeviceTensor,
    bufs: Option<Buffers>,
    use_graph: bool,
    /// Why graph capture failed (graphs are then no longer tried).
    graph_error: Option<String>,
}


impl<'g> GpuTransformerNetFast<'g> {
    /// Packs and uploads the weights.
    pub fn new(gpu: &'g Gpu, net: &TransformerNet) -> Result<Self> {
        ensure(net.deconv3.bias.shape == [3] && net.deconv3.weight.shape.first() == Some(&3), OP, || {
            format!("deconv3 must have 3 output channels, got weight {:?} bias {:?}", net.deconv3.weight.shape, net.deconv3.bias.shape)
        })?;
        let res = net
            .res
            .iter()
            .map(|b| {
                Ok(ResBlock { conv1: TcConv::new(&b.conv1, 0, 0)?, in1: GpuNorm::new(&b.in1)?, conv2: TcConv::new(&b.conv2, 0, 0)?, in2: GpuNorm::new(&b.in2)? })
            })
            .collect::<Result<Vec<_>>>()?;
        let me = GpuTransformerNetFast {
            gpu,
            conv1: TcConv::new(&net.conv1, PACKED_INPUT_CHANNELS, 0)?,
            in1: GpuNorm::new(&net.in1)?,
            conv2: TcConv::new(&net.conv2, 0, 0)?,
            in2: GpuNorm::new(&net.in2)?,
            conv3: TcConv::new(&net.conv3, 0, 0)?,
            in3: GpuNorm::new(&net.in3)?,
            res,
            deconv1: TcConv::new(&net.deconv1, 0, 0)?,
            in4: GpuNorm::new(&net.in4)?,
            deconv2: TcConv::new(&net.deconv2, 0, 0)?,
            in5: GpuNorm::new(&net.in5)?,
            deconv3: TcConv::new(&net.deconv3, 0, OUT_CHANNELS_PADDED)?,
            out_bias: DeviceTensor::from_host(&net.deconv3.bias)?,
            bufs: None,
            use_graph: true,
            graph_error: None,
        };
        Ok(me)
    }

    fn check_input(x: &[usize]) -> Result<()> {
        ensure(x.len() == 4 && x[1] == 3, OP, || format!("input must be f32 [N, 3, H, W], got {x:?}"))?;
        // H, W ≥ 5 keeps every reflection pad smaller than its input (the 4x4-subsampled trunk is ≥ 2).
        ensure(x[0] > 0 && x[2] >= 5 && x[3] >= 5, OP, || format!("input {x:?}: batch must be ≥ 1 and H, W ≥ 5"))
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
            ensure(o == s3 && m == s3, OP, || format!("residual block changes the shape {s3:?} -> {o:?}"))?;
        }
        let s4 = self.deconv1.out_shape(&s3)?;
        let s5 = self.deconv2.out_shape(&s4)?;
        let s6 = self.deconv3.out_shape(&s5)?;
        let stats_len = [&s1, &s2, &s3, &s4, &s5].iter().map(|s| nhwc_in_stats_len(&s[..])).max().unwrap_or(0);
        let f = |s: &[usize]| DeviceTensor::empty(s, DType::F32, Layout::Nhwc);
        let h = |s: &[usize]| DeviceTensor::empty(s, DType::BF16, Layout::Nhwc);
        self.bufs = Some(Buffers {
            graph: None,
            input_shape: x.to_vec(),
            input: DeviceTensor::empty(x, DType::F32, Layout::Nchw)?,
            x16: h(&s0)?,
            a1f: f(&s1)?,
            a1h: h(&s1)?,
            a2f: f(&s2)?,
            a2h: h(&s2)?,
            trunk: f(&s3)?,
            trunk_h: h(&s3)?,
            tf: f(&s3)?,
            th: h(&s3)?,
            u1f: f(&s4)?,
            u1h: h(&s4)?,
            u2f: f(&s5)?,
            u2h: h(&s5)?,
            o32: f(&s6)?,
            out: DeviceTensor::empty(&[s6[0], 3, s6[1], s6[2]], DType::F32, Layout::Nchw)?,
            stats: DeviceTensor::empty(&[stats_len.max(1)], DType::F32, Layout::RowMajor)?,
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
        self.bufs.as_ref().and_then(|b| b.graph.as_ref()).map(CudaGraph::node_count)
    }

    fn check_device_input(x: &DeviceTensor) -> Result<()> {
        ensure(x.dtype == DType::F32 && x.layout != Layout::Nhwc, OP, || {
            format!("input must be NCHW f32 [N, 3, H, W], got {:?} {:?} {:?}", x.layout, x.dtype, x.shape)
        })?;
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
    pub fn forward_device_marked(&mut self, x: &DeviceTensor, mark: &mut dyn FnMut(&'static str) -> Result<()>) -> Result<&DeviceTensor> {
        Self::check_device_input(x)?;
        self.ensure_buffers(&x.shape)?;
        self.queue(Some(x), mark)?;
        self.output()
    }

    /// Estimated FLOPs and bytes of each layer group for NCHW input shape `x`, in the order and with the
    /// names of [`Self::forward_device_marked`]. FLOPs count the padded channels the tensor cores compute.
    pub fn layer_costs(&self, x: &[usize]) -> Result<Vec<LayerCost>> {
        Self::check_input(x)?;
        // Conv: reads its bf16 input and weight, writes f32; the norm reads f32 twice (two-pass
        // statistics), once more to apply, writes bf16 (+ f32 and a residual read on the trunk).
        let conv = |c: &TcConv, x: &[usize]| -> Result<(f64, f64, [usize; 4])> {
            let o = c.out_shape(x)?;
            let [k, r, s, ci] = [c.w.shape[0], c.w.shape[1], c.w.shape[2], c.w.shape[3]];
            let flops = 2.0 * (o[0] * o[1] * o[2] * k * r * s * ci) as f64;
            let bytes = 2.0 * (x.iter().product::<usize>() + c.w.numel()) as f64 + 4.0 * o.iter().product::<usize>() as f64;
            Ok((flops, bytes, o))
        };
        let norm = |o: &[usize], trunk: bool| {
            let n = o.iter().product::<usize>() as f64;
            n * (12.0 + 2.0) + if trunk { n * 8.0 } else { 0.0 }
        };
        let mut v = Vec::new();
        let mut shape = [x[0], x[2], x[3], PACKED_INPUT_CHANNELS];
        for (name, c) in [("conv1+in1", &self.conv1), ("conv2+in2", &self.conv2), ("conv3+in3", &self.conv3)] {
            let (f, b, o) = conv(c, &shape)?;
            v.push(LayerCost { name, flops: f, bytes: b + norm(&o, name == "conv3+in3") });
            shape = o;
        }
        for (i, blk) in self.res.iter().enumerate() {
            let (f1, b1, o1) = conv(&blk.conv1, &shape)?;
            let (f2, b2, o2) = conv(&blk.conv2, &o1)?;
            v.push(LayerCost { name: res_name(i), flops: f1 + f2, bytes: b1 + b2 + norm(&o1, false) + norm(&o2, true) });
            shape = o2;
        }
        for (name, c, with_norm) in [("deconv1+in4", &self.deconv1, true), ("deconv2+in5", &self.deconv2, true), ("deconv3", &self.deconv3, false)] {
            let (f, b, o) = conv(c, &shape)?;
            v.push(LayerCost { name, flops: f, bytes: b + if with_norm { norm(&o, false) } else { 0.0 } });
            shape = o;
        }
        Ok(v)
    }

    fn output(&self) -> Result<&DeviceTensor> {
        match self.bufs.as_ref() {
            Some(b) => Ok(&b.out),
            None => Err(Error::Other("buffers missing after the forward pass".into())),
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
    fn queue(&mut self, x: Option<&DeviceTensor>, mark: &mut dyn FnMut(&'static str) -> Result<()>) -> Result<()> {
        let gpu = self.gpu;
        let Some(b) = self.bufs.as_mut() else {
            return Err(Error::Other("buffers missing after allocation".into()));
        };
        let Buffers { input, x16, a1f, a1h, a2f, a2h, trunk, trunk_h, tf, th, u1f, u1h, u2f, u2h, o32, out, stats, .. } = b;
        let x: &DeviceTensor = match x {
            Some(x) => x,
            None => input,
        };
        nhwc_pack_input(gpu, x, x16)?;
        self.conv1.run(gpu, x16, a1f)?;
        nhwc_instance_norm(gpu, a1f, &self.in1.gamma, &self.in1.beta, true, None, false, a1h, stats)?;
        mark("conv1+in1")?;
        self.conv2.run(gpu, a1h, a2f)?;
        nhwc_instance_norm(gpu, a2f, &self.in2.gamma, &self.in2.beta, true, None, false, a2h, stats)?;
        mark("conv2+in2")?;
        self.conv3.run(gpu, a2h, trunk)?;
        nhwc_instance_norm(gpu, trunk, &self.in3.gamma, &self.in3.beta, true, None, true, trunk_h, stats)?;
        mark("conv3+in3")?;
        for (i, blk) in self.res.iter().enumerate() {
            blk.conv1.run(gpu, trunk_h, tf)?;
            nhwc_instance_norm(gpu, tf, &blk.in1.gamma, &blk.in1.beta, true, None, false, th, stats)?;
            blk.conv2.run(gpu, th, tf)?;
            // tf = in2(tf) + trunk (f32, in place), its bf16 copy into trunk_h; then tf becomes the trunk.
            nhwc_instance_norm(gpu, tf, &blk.in2.gamma, &blk.in2.beta, false, Some(trunk), true, trunk_h, stats)?;
            std::mem::swap(trunk, tf);
            mark(res_name(i))?;
        }
        self.deconv1.run(gpu, trunk_h, u1f)?;
        nhwc_instance_norm(gpu, u1f, &self.in4.gamma, &self.in4.beta, true, None, false, u1h, stats)?;
        mark("deconv1+in4")?;
        self.deconv2.run(gpu, u1h, u2f)?;
        nhwc_instance_norm(gpu, u2f, &self.in5.gamma, &self.in5.beta, true, None, false, u2h, stats)?;
        mark("deconv2+in5")?;
        self.deconv3.run(gpu, u2h, o32)?;
        nhwc_unpack_output(gpu, o32, &self.out_bias, out)?;
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

    #[test]
    fn weight_padding_keeps_values_and_zero_fills() {
        let w = Tensor { shape: vec![3, 2, 3, 3], data: (0..54).map(|i| i as f32 + 1.0).collect() };
        let p = padded_weight(&w, 16, 32);
        assert_eq!(p.shape, [32, 16, 3, 3]);
        for k in 0..32 {
            for c in 0..16 {
                for i in 0..9 {
                    let want = if k < 3 && c < 2 { w.data[(k * 2 + c) * 9 + i] } else { 0.0 };
                    assert_eq!(p.data[(k * 16 + c) * 9 + i], want, "k {k} c {c} i {i}");
                }
            }
        }
        assert_eq!(padded_weight(&w, 0, 0).data, w.data);
    }

    /// The bf16 rounding error of this pipeline, measured by the CPU emulation, fits the tolerance the
    /// self-check uses against the fp32 reference (it does not fit Tolerance::HALF: about 2e-2).
    #[test]
    fn bf16_pipeline_error_fits_net_tolerance() {
        let mut rng = Rng64::seed_from_u64(7);
        let net = TransformerNet::new(random_tnet_weights(&mut rng)).unwrap();
        for shape in [[1, 3, 40, 36], [2, 3, 33, 47]] {
            let x = random(&mut rng, &shape, 0.0, 255.0);
            let want = net.forward(&x).unwrap();
            let got = crate::selfcheck::fast::emulate_bf16(&net, &x).unwrap();
            let r = compare("emulation", "x", &got.data, &want.data, crate::selfcheck::fast::BF16_NET_VS_F32);
            eprintln!("{shape:?}: bf16 emulation vs fp32: rel L2 {:.2e}, max rel {:.2e}", r.rel_l2, r.max_rel);
            assert!(r.passed, "{shape:?}: rel L2 {} max rel {} ({})", r.rel_l2, r.max_rel, r.detail);
        }
    }
}
