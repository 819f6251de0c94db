//! Model files: which network a weight file holds, loading it, random weights of the right shapes for
//! benchmarks, and activation-memory estimates used to refuse images too big for the GPU.
use std::path::Path;

use models::{StyleVit, StyleVitConfig, TransformerNet, Weights};

/// The two networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    TransformerNet,
    StyleVit,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::TransformerNet => "TransformerNet",
            Kind::StyleVit => "StyleViT",
        }
    }
}

/// Which network `w` holds: safetensors metadata `arch` first, then the key names.
pub fn detect(w: &Weights) -> Result<Kind, String> {
    match w.metadata.get("arch").map(String::as_str) {
        Some("transformer_net") => return Ok(Kind::TransformerNet),
        Some("style_vit") => return Ok(Kind::StyleVit),
        _ => {}
    }
    if w.tensors.contains_key("conv1.conv2d.weight") {
        Ok(Kind::TransformerNet)
    } else if w.tensors.contains_key("patch_embed.proj.weight") {
        Ok(Kind::StyleVit)
    } else {
        let some: Vec<&str> = w.tensors.keys().take(3).map(String::as_str).collect();
        Err(format!(
            "{}: neither a TransformerNet nor a StyleViT weight file (no `conv1.conv2d.weight` or \
             `patch_embed.proj.weight`; {} tensors{}{})",
            w.path.display(),
            w.tensors.len(),
            if some.is_empty() { "" } else { ", e.g. " },
            some.join(", ")
        ))
    }
}

/// A loaded network.
pub enum Net {
    Tnet(Box<TransformerNet>),
    Vit(Box<StyleVit>),
}

/// Reads the weight file and says which network it holds (without building it yet).
pub fn load_weights(path: &Path) -> Result<(Weights, Kind), String> {
    if path.is_dir() {
        return Err(format!("{}: is a folder, not a model file", path.display()));
    }
    let w = Weights::load(path).map_err(|e| e.to_string())?;
    let kind = detect(&w)?;
    Ok((w, kind))
}

/// Builds the network from weights (`heads` overrides the StyleViT head count when the file lacks it).
pub fn build(w: Weights, kind: Kind, heads: Option<usize>) -> Result<Net, String> {
    match kind {
        Kind::TransformerNet => TransformerNet::new(w)
            .map(|n| Net::Tnet(Box::new(n)))
            .map_err(|e| e.to_string()),
        Kind::StyleVit => {
            let cfg = StyleVitConfig::from_weights(&w, heads).map_err(|e| e.to_string())?;
            StyleVit::new(cfg, w)
                .map(|n| Net::Vit(Box::new(n)))
                .map_err(|e| e.to_string())
        }
    }
}

pub use styleforge::selfcheck::random_weights::{random_tnet_weights, random_vit_weights};

/// Safety factor over the activation estimates (workspaces, allocator rounding).
const MARGIN: f64 = 1.25;
/// Fixed allowance for the module, the context's own use and small buffers.
const FIXED: usize = 64 << 20;

/// Estimated device bytes to run TransformerNet on [n, 3, h, w]: weights plus one buffer per distinct
/// activation (each layer's padded input and output, one residual block's buffers, reused across blocks).
pub fn tnet_bytes(n: usize, h: usize, w: usize) -> usize {
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let (h3, w3) = (h2.div_ceil(2), w2.div_ceil(2));
    let (hu, wu) = (2 * h3, 2 * w3);
    let (ho, wo) = (4 * h3, 4 * w3);
    let padded = |c: usize, hh: usize, ww: usize, pad: usize| c * (hh + 2 * pad) * (ww + 2 * pad);
    let floats = 3 * h * w                        // input
        + padded(3, h, w, 4) + 2 * 32 * h * w     // conv1 pad, out, norm
        + padded(32, h, w, 1) + 2 * 64 * h2 * w2  // conv2
        + padded(64, h2, w2, 1) + 2 * 128 * h3 * w3 // conv3
        + 2 * padded(128, h3, w3, 1) + 5 * 128 * h3 * w3 // a residual block
        + 128 * hu * wu + padded(128, hu, wu, 1) + 2 * 64 * hu * wu // deconv1
        + 64 * ho * wo + padded(64, ho, wo, 1) + 2 * 32 * ho * wo // deconv2
        + padded(32, ho, wo, 4) + 3 * ho * wo; // deconv3
    let weights = 1_680_000;
    ((4 * (n * floats + weights)) as f64 * MARGIN) as usize + FIXED
}

/// Estimated device bytes to run the tensor-core TransformerNet (`GpuTransformerNetFast`) on [n, 3, h, w]:
/// its NHWC buffers (each conv's f32 output and the half-precision copy the next conv reads, the f32
/// residual trunk with its half copy, the 16-channel packed input, deconv3's 32-channel padded output), the
/// NCHW f32 input staging and output, and the weights (counted at 4 bytes each).
pub fn tnet_fast_bytes(n: usize, h: usize, w: usize) -> usize {
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let (h3, w3) = (h2.div_ceil(2), w2.div_ceil(2));
    let (hu, wu) = (2 * h3, 2 * w3);
    let (ho, wo) = (4 * h3, 4 * w3);
    let (f32b, half) = (4, 2);
    // GpuTransformerNetFast's buffers: NCHW f32 input staging and output, the 4-channel packed input, every
    // conv output in f16 (normalised in place), three trunk-sized tensors, and the InstanceNorm partials
    // (2 f32 per channel per tile of ≥ 32 pixels: at most 1/16 of a layer's f16 bytes).
    let per_image = f32b * 3 * h * w
        + half * 4 * h * w
        + half * (32 * h * w + 64 * h2 * w2 + 3 * 128 * h3 * w3 + 64 * hu * wu + 32 * ho * wo)
        + f32b * 3 * ho * wo
        + half * 32 * ho * wo / 16;
    let weights = 4 * 1_700_000;
    ((n * per_image + weights) as f64 * MARGIN) as usize + FIXED
}

/// Estimated device bytes to run StyleViT with content [n, 3, h, w] and style [ns, 3, hs, ws] (padded
/// sizes): weights, the token activations of one block (attention scores materialised), the images.
pub fn vit_bytes(
    cfg: &StyleVitConfig,
    n: usize,
    h: usize,
    w: usize,
    ns: usize,
    hs: usize,
    ws: usize,
) -> usize {
    let (p, d, f, heads, l) = (
        cfg.patch_size,
        cfg.embed_dim,
        cfg.ffn_dim,
        cfg.num_heads,
        cfg.num_blocks,
    );
    let params = 2 * (3 * p * p * d + d) + 2 * l * (4 * d * d + 2 * d * f + 9 * d + f) + 120;
    let tc = n * (h / p) * (w / p);
    let ts = ns * (hs / p) * (ws / p);
    let tokens = tc.max(ts);
    let seq = ((h / p) * (w / p)).max((hs / p) * (ws / p));
    let per_token = 10 * d + f; // x, qkv (3), attention out, projection, residual, norms, ffn hidden
    let scores = n.max(ns) * heads * seq * seq;
    let images = 5 * 3 * (n * h * w) + 2 * 3 * ns * hs * ws + 2 * tc * d; // + the content tokens kept for AdaIN
    let floats = params + tokens * per_token + scores + images;
    ((4 * floats) as f64 * MARGIN) as usize + FIXED
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::Tensor;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    #[test]
    fn detect_by_metadata_and_keys() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut w = random_tnet_weights(&mut rng);
        assert_eq!(detect(&w), Ok(Kind::TransformerNet));
        w.metadata.clear();
        assert_eq!(detect(&w), Ok(Kind::TransformerNet));
        let cfg = StyleVitConfig {
            patch_size: 8,
            embed_dim: 64,
            num_heads: 1,
            num_blocks: 1,
            ffn_dim: 32,
        };
        let mut v = random_vit_weights(&cfg, &mut rng);
        assert_eq!(detect(&v), Ok(Kind::StyleVit));
        v.metadata.clear();
        assert_eq!(detect(&v), Ok(Kind::StyleVit));
        assert_eq!(
            v.shape_of("unpatch.to_pixels.weight"),
            Some(&[192usize, 64][..])
        );
        let other = Weights::from_map(
            "x.safetensors",
            BTreeMap::from([("fc.weight".into(), Tensor::zeros(&[2]))]),
            BTreeMap::new(),
        );
        let e = detect(&other).unwrap_err();
        assert!(
            e.contains("x.safetensors") && e.contains("fc.weight"),
            "{e}"
        );
    }

    #[test]
    fn random_tnet_has_every_parameter() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let w = random_tnet_weights(&mut rng);
        assert_eq!(w.tensors.len(), 10 + 10 + 5 * 8 + 2); // convs+norms, res blocks, deconv3
        let params: usize = w.tensors.values().map(|t| t.numel()).sum();
        assert_eq!(params, 1_679_235); // pytorch/examples TransformerNet
        assert!(tnet_bytes(1, 256, 256) < tnet_bytes(1, 512, 512));
    }
}
