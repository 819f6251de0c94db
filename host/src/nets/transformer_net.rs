//! TransformerNet on the GPU (fp32 path).
//!
//! Layer by layer as the reference: conv (with its bias) -> InstanceNorm (+ReLU) with the fp32 direct
//! convolution and the InstanceNorm kernels; the residual blocks normalise their second conv in place and
//! add the block input in the same kernel. Every launch goes to the GPU's one stream; activation buffers
//! are allocated once per input shape and reused.
use models::ops::Padding;
use models::transformer_net::{ConvLayer, Norm};
use models::{Tensor, TransformerNet};

use crate::error::{ensure, CudaContext, Result};
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
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
        ensure(s.len() == 4 && s[2] == s[3] && s[2] % 2 == 1, OP, || format!("conv weight {s:?} is not [K, C, R, R] with odd R"))?;
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
            .ok_or_else(|| crate::Error::Shape { op: OP, msg: format!("input {x:?} too small for a {r}x{r} conv") })?;
        Ok(vec![x[0], self.k, p, q])
    }
    fn run(&self, gpu: &Gpu, x: &DeviceTensor, y: &mut DeviceTensor) -> Result<()> {
        conv2d(gpu, x, &self.w, Some(&self.b), self.stride, self.pad, self.upsample, y)
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
    fn run(&self, gpu: &Gpu, x: &mut DeviceTensor, relu: bool, residual: Option<&DeviceTensor>, stats: &mut DeviceTensor) -> Result<()> {
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
    input_shape: Vec<usize>,
    /// Host-to-device staging for [`GpuTransformerNet::forward`].
    input: Option<DeviceTensor>,
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
}

/// Waits for everything queued in the context, the legacy stream included: host-to-device copies made
/// with the blocking `DeviceTensor` calls may still be in flight on it, and our stream does not order
/// against it.
fn settle_uploads() -> Result<()> {
    cust::context::CurrentContext::synchronize().during("waiting for host-to-device copies")
}

impl<'g> GpuTransformerNet<'g> {
    /// Uploads the weights.
    pub fn new(gpu: &'g Gpu, net: &TransformerNet) -> Result<Self> {
        let res = net
            .res
            .iter()
            .map(|b| {
                Ok(GpuResBlock { conv1: GpuConv::new(&b.conv1)?, in1: GpuNorm::new(&b.in1)?, conv2: GpuConv::new(&b.conv2)?, in2: GpuNorm::new(&b.in2)? })
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
        };
        settle_uploads()?;
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
            ensure(o == st && m == st, OP, || format!("residual block changes the shape {st:?} -> {o:?}"))?;
            st = o;
        }
        let s4 = self.deconv1.out_shape(&s3)?;
        let s5 = self.deconv2.out_shape(&s4)?;
        let s6 = self.deconv3.out_shape(&s5)?;
        let stats_len = [&s1, &s2, &s3, &s4, &s5].iter().map(|s| instance_norm_stats_len(s)).max().unwrap_or(0);
        let t = |s: &[usize]| DeviceTensor::empty(s, DType::F32, Layout::Nchw);
        self.bufs = Some(Buffers {
            input_shape: x.to_vec(),
            input: None,
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

    /// Queues the forward pass for `x` [N, 3, H, W] (already on the device) on the GPU's stream, with no
    /// host synchronisation; returns the output buffer [N, 3, H', W'] (valid until the next call).
    pub fn forward_device(&mut self, x: &DeviceTensor) -> Result<&DeviceTensor> {
        ensure(x.dtype == DType::F32 && x.shape.len() == 4 && x.shape[1] == 3, OP, || {
            format!("input must be f32 [N, 3, H, W], got {:?} {:?}", x.dtype, x.shape)
        })?;
        // H, W ≥ 5 keeps every reflection pad smaller than its input (the 4x4-subsampled trunk is ≥ 2).
        ensure(x.shape[0] > 0 && x.shape[2] >= 5 && x.shape[3] >= 5, OP, || {
            format!("input {:?}: batch must be ≥ 1 and H, W ≥ 5", x.shape)
        })?;
        self.ensure_buffers(&x.shape)?;
        let gpu = self.gpu;
        let Some(b) = self.bufs.as_mut() else {
            return Err(crate::Error::Other("buffers missing after allocation".into()));
        };
        self.conv1.run(gpu, x, &mut b.a1)?;
        self.in1.run(gpu, &mut b.a1, true, None, &mut b.stats)?;
        self.conv2.run(gpu, &b.a1, &mut b.a2)?;
        self.in2.run(gpu, &mut b.a2, true, None, &mut b.stats)?;
        self.conv3.run(gpu, &b.a2, &mut b.trunk)?;
        self.in3.run(gpu, &mut b.trunk, true, None, &mut b.stats)?;
        for blk in &self.res {
            blk.conv1.run(gpu, &b.trunk, &mut b.t1)?;
            blk.in1.run(gpu, &mut b.t1, true, None, &mut b.stats)?;
            blk.conv2.run(gpu, &b.t1, &mut b.t2)?;
            // t2 = in2(t2) + trunk, then t2 becomes the trunk.
            blk.in2.run(gpu, &mut b.t2, false, Some(&b.trunk), &mut b.stats)?;
            std::mem::swap(&mut b.trunk, &mut b.t2);
        }
        self.deconv1.run(gpu, &b.trunk, &mut b.u1)?;
        self.in4.run(gpu, &mut b.u1, true, None, &mut b.stats)?;
        self.deconv2.run(gpu, &b.u1, &mut b.u2)?;
        self.in5.run(gpu, &mut b.u2, true, None, &mut b.stats)?;
        self.deconv3.run(gpu, &b.u2, &mut b.out)?;
        Ok(&b.out)
    }

    /// Convenience: host tensor in, host tensor out (uploads, runs, synchronises, downloads).
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        ensure(x.shape.len() == 4, OP, || format!("input must be [N, 3, H, W], got {:?}", x.shape))?;
        self.ensure_buffers(&x.shape)?;
        let mut input = match self.bufs.as_mut().and_then(|b| b.input.take()) {
            Some(t) => t,
            None => DeviceTensor::empty(&x.shape, DType::F32, Layout::Nchw)?,
        };
        // No work is pending on our stream here (every forward ends synchronised), so overwriting the
        // staging buffer cannot race with a previous pass.
        input.copy_from_f32(&x.data)?;
        settle_uploads()?;
        let result = self.forward_device(&input).map(|_| ());
        if let Some(b) = self.bufs.as_mut() {
            b.input = Some(input);
        }
        if let Err(e) = result {
            // Leave no queued work behind that could race with the next upload.
            let _ = self.gpu.synchronize();
            return Err(e);
        }
        self.gpu.synchronize()?;
        let out = self.bufs.as_ref().map(|b| b.out.to_host());
        out.unwrap_or_else(|| Err(crate::Error::Other("buffers missing after the forward pass".into())))
    }
}
