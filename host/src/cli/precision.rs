//! The arithmetic precision of the GPU nets, and one type per network over its two implementations (fp32
//! CUDA cores; f16 tensor cores) for `stylize` and `bench`: [`GpuTnet`] ([`GpuTransformerNet`],
//! [`GpuTransformerNetFast`]) and [`GpuVit`] ([`GpuStyleVit`], [`GpuStyleVitFast`]).
use clap::ValueEnum;
use models::{StyleVit, Tensor, TransformerNet};

use styleforge::nets::style_vit_fast::GpuStyleVitFast;
use styleforge::nets::transformer_net::LayerCost;
use styleforge::nets::transformer_net_fast::GpuTransformerNetFast;
use styleforge::nets::{GpuStyleVit, GpuTransformerNet};
use styleforge::{DeviceTensor, Gpu, Result};

use super::model;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    /// Tensor cores: half-precision operands, fp32 accumulation and statistics (both nets on the GPU).
    Fp16,
    /// fp32 everywhere (the CPU path, and the reference GPU path).
    Fp32,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp16 => "fp16",
            Precision::Fp32 => "fp32",
        }
    }
}

/// Removes repeats from a `--precision` list, keeping the order given.
pub fn dedup(given: &[Precision]) -> Vec<Precision> {
    let mut out: Vec<Precision> = Vec::new();
    for p in given {
        if !out.contains(p) {
            out.push(*p);
        }
    }
    out
}

/// TransformerNet on the GPU in one of the two precisions; the methods are those the two nets share.
pub enum GpuTnet<'g> {
    // Boxed: the nets hold their weights' device handles and per-shape buffers (~2 KB each).
    Fp32(Box<GpuTransformerNet<'g>>),
    Fp16(Box<GpuTransformerNetFast<'g>>),
}

impl<'g> GpuTnet<'g> {
    /// Uploads `net`'s weights for the implementation of `precision`.
    pub fn new(gpu: &'g Gpu, net: &TransformerNet, precision: Precision) -> Result<Self> {
        Ok(match precision {
            Precision::Fp32 => GpuTnet::Fp32(Box::new(GpuTransformerNet::new(gpu, net)?)),
            Precision::Fp16 => GpuTnet::Fp16(Box::new(GpuTransformerNetFast::new(gpu, net)?)),
        })
    }

    pub fn precision(&self) -> Precision {
        match self {
            GpuTnet::Fp32(_) => Precision::Fp32,
            GpuTnet::Fp16(_) => Precision::Fp16,
        }
    }

    /// Estimated device bytes to run this implementation on [n, 3, h, w] (see `model::tnet_bytes`).
    pub fn bytes(&self, n: usize, h: usize, w: usize) -> usize {
        bytes(self.precision(), n, h, w)
    }

    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        match self {
            GpuTnet::Fp32(g) => g.forward(x),
            GpuTnet::Fp16(g) => g.forward(x),
        }
    }

    pub fn forward_device(&mut self, x: &DeviceTensor) -> Result<&DeviceTensor> {
        match self {
            GpuTnet::Fp32(g) => g.forward_device(x),
            GpuTnet::Fp16(g) => g.forward_device(x),
        }
    }

    pub fn forward_device_marked(
        &mut self,
        x: &DeviceTensor,
        mark: &mut dyn FnMut(&'static str) -> Result<()>,
    ) -> Result<&DeviceTensor> {
        match self {
            GpuTnet::Fp32(g) => g.forward_device_marked(x, mark),
            GpuTnet::Fp16(g) => g.forward_device_marked(x, mark),
        }
    }

    pub fn layer_costs(&self, x: &[usize]) -> Result<Vec<LayerCost>> {
        match self {
            GpuTnet::Fp32(g) => g.layer_costs(x),
            GpuTnet::Fp16(g) => g.layer_costs(x),
        }
    }

    pub fn set_use_graph(&mut self, on: bool) {
        match self {
            GpuTnet::Fp32(g) => g.set_use_graph(on),
            GpuTnet::Fp16(g) => g.set_use_graph(on),
        }
    }

    pub fn use_graph(&self) -> bool {
        match self {
            GpuTnet::Fp32(g) => g.use_graph(),
            GpuTnet::Fp16(g) => g.use_graph(),
        }
    }

    pub fn graph_error(&self) -> Option<&str> {
        match self {
            GpuTnet::Fp32(g) => g.graph_error(),
            GpuTnet::Fp16(g) => g.graph_error(),
        }
    }
}

/// StyleViT on the GPU in one of the two precisions; the methods are those the two nets share. (One
/// lives per process: the variants' size difference does not matter.)
#[allow(clippy::large_enum_variant)]
pub enum GpuVit<'g> {
    Fp32(GpuStyleVit<'g>),
    Fp16(GpuStyleVitFast<'g>),
}

/// `GpuVit`'s methods: the same call on whichever net it holds.
macro_rules! vit_call {
    ($self:expr, $g:ident => $e:expr) => {
        match $self {
            GpuVit::Fp32($g) => $e,
            GpuVit::Fp16($g) => $e,
        }
    };
}

impl<'g> GpuVit<'g> {
    /// Uploads `net`'s weights for the implementation of `precision`.
    pub fn new(gpu: &'g Gpu, net: &StyleVit, precision: Precision) -> Result<Self> {
        Ok(match precision {
            Precision::Fp32 => GpuVit::Fp32(GpuStyleVit::new(gpu, net)?),
            Precision::Fp16 => GpuVit::Fp16(GpuStyleVitFast::new(gpu, net)?),
        })
    }

    pub fn precision(&self) -> Precision {
        match self {
            GpuVit::Fp32(_) => Precision::Fp32,
            GpuVit::Fp16(_) => Precision::Fp16,
        }
    }

    pub fn forward(&mut self, content: &Tensor, style: &Tensor, alpha: f32) -> Result<Tensor> {
        vit_call!(self, g => g.forward(content, style, alpha))
    }

    pub fn forward_device(
        &mut self,
        content: &DeviceTensor,
        style: &DeviceTensor,
        alpha: f32,
    ) -> Result<&DeviceTensor> {
        vit_call!(self, g => g.forward_device(content, style, alpha))
    }

    pub fn forward_device_marked(
        &mut self,
        content: &DeviceTensor,
        style: &DeviceTensor,
        alpha: f32,
        mark: &mut dyn FnMut(&'static str) -> Result<()>,
    ) -> Result<&DeviceTensor> {
        vit_call!(self, g => g.forward_device_marked(content, style, alpha, mark))
    }

    pub fn layer_costs(&self, content: &[usize], style: &[usize]) -> Result<Vec<LayerCost>> {
        vit_call!(self, g => g.layer_costs(content, style))
    }

    pub fn set_use_graph(&mut self, on: bool) {
        vit_call!(self, g => g.set_use_graph(on))
    }

    pub fn use_graph(&self) -> bool {
        vit_call!(self, g => g.use_graph())
    }

    pub fn graph_error(&self) -> Option<&str> {
        vit_call!(self, g => g.graph_error())
    }
}

/// Estimated device bytes to run TransformerNet on [n, 3, h, w] in `precision`.
pub fn bytes(precision: Precision, n: usize, h: usize, w: usize) -> usize {
    match precision {
        Precision::Fp32 => model::tnet_bytes(n, h, w),
        Precision::Fp16 => model::tnet_fast_bytes(n, h, w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_dedup() {
        assert_eq!(Precision::Fp16.name(), "fp16");
        assert_eq!(Precision::from_str("fp32", true), Ok(Precision::Fp32));
        assert_eq!(
            dedup(&[Precision::Fp32, Precision::Fp16, Precision::Fp32]),
            vec![Precision::Fp32, Precision::Fp16]
        );
    }

    #[test]
    fn fast_estimate_grows_and_is_below_fp32() {
        assert!(bytes(Precision::Fp16, 1, 256, 256) < bytes(Precision::Fp16, 1, 512, 512));
        assert!(bytes(Precision::Fp16, 1, 512, 512) < bytes(Precision::Fp16, 4, 512, 512));
        // Half-precision copies and no padded copies: less than the fp32 path's buffers.
        assert!(bytes(Precision::Fp16, 1, 1024, 1024) < bytes(Precision::Fp32, 1, 1024, 1024));
    }
}
