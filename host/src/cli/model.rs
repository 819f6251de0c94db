//! Model files: which network a weight file holds, loading it, random weights of the right shapes for
//! benchmarks, and activation-memory estimates used to refuse images too big for the GPU.
use std::collections::BTreeMap;
use std::path::Path;

use models::{StyleVit, StyleVitConfig, Tensor, TransformerNet, Weights};
use rand::Rng;

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
        Kind::TransformerNet => TransformerNet::new(w).map(|n| Net::Tnet(Box::new(n))).map_err(|e| e.to_string()),
        Kind::StyleVit => {
            let cfg = StyleVitConfig::from_weights(&w, heads).map_err(|e| e.to_string())?;
            StyleVit::new(cfg, w).map(|n| Net::Vit(Box::new(n))).map_err(|e| e.to_string())
        }
    }
}

fn uniform(rng: &mut impl Rng, shape: &[usize], bound: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.gen_range(-bound..bound)).collect())
}

fn around(rng: &mut impl Rng, n: usize, center: f32, spread: f32) -> Tensor {
    Tensor::new(&[n], (0..n).map(|_| center + rng.gen_range(-spread..spread)).collect())
}

/// Random TransformerNet weights with pytorch/examples key names (conv weights U(±1/√fan_in)).
pub fn random_tnet_weights(rng: &mut impl Rng) -> Weights {
    let mut m = BTreeMap::new();
    let conv = |m: &mut BTreeMap<String, Tensor>, rng: &mut _, name: &str, k: usize, c: usize, r: usize| {
        let b = 1.0 / ((c * r * r) as f32).sqrt();
        m.insert(format!("{name}.conv2d.weight"), uniform(rng, &[k, c, r, r], b));
        m.insert(format!("{name}.conv2d.bias"), uniform(rng, &[k], b));
    };
    let norm = |m: &mut BTreeMap<String, Tensor>, rng: &mut _, name: &str, c: usize| {
        m.insert(format!("{name}.weight"), around(rng, c, 1.0, 0.2));
        m.insert(format!("{name}.bias"), around(rng, c, 0.0, 0.2));
    };
    conv(&mut m, rng, "conv1", 32, 3, 9);
    norm(&mut m, rng, "in1", 32);
    conv(&mut m, rng, "conv2", 64, 32, 3);
    norm(&mut m, rng, "in2", 64);
    conv(&mut m, rng, "conv3", 128, 64, 3);
    norm(&mut m, rng, "in3", 128);
    for i in 1..=5 {
        conv(&mut m, rng, &format!("res{i}.conv1"), 128, 128, 3);
        norm(&mut m, rng, &format!("res{i}.in1"), 128);
        conv(&mut m, rng, &format!("res{i}.conv2"), 128, 128, 3);
        norm(&mut m, rng, &format!("res{i}.in2"), 128);
    }
    conv(&mut m, rng, "deconv1", 64, 128, 3);
    norm(&mut m, rng, "in4", 64);
    conv(&mut m, rng, "deconv2", 32, 64, 3);
    norm(&mut m, rng, "in5", 32);
    conv(&mut m, rng, "deconv3", 3, 32, 9);
    let meta = BTreeMap::from([("arch".to_string(), "transformer_net".to_string())]);
    Weights::from_map("<random TransformerNet weights>", m, meta)
}

/// Random StyleViT weights for `cfg` with the reference's key names (linear weights Xavier-uniform).
pub fn random_vit_weights(cfg: &StyleVitConfig, rng: &mut impl Rng) -> Weights {
    let (p, d, f) = (cfg.patch_size, cfg.embed_dim, cfg.ffn_dim);
    let xavier = |o: usize, i: usize| (6.0 / (o + i) as f32).sqrt();
    let mut m = BTreeMap::new();
    let pb = 1.0 / ((3 * p * p) as f32).sqrt();
    m.insert("patch_embed.proj.weight".into(), uniform(rng, &[d, 3, p, p], pb));
    m.insert("patch_embed.proj.bias".into(), uniform(rng, &[d], pb));
    for stack in ["encoder_blocks", "decoder_blocks"] {
        for i in 0..cfg.num_blocks {
            let k = |s: &str| format!("{stack}.{i}.{s}");
            m.insert(k("attn.w_qkv"), uniform(rng, &[3 * d, d], xavier(3 * d, d)));
            m.insert(k("attn.bias_qkv"), uniform(rng, &[3 * d], 0.02));
            m.insert(k("attn.w_out"), uniform(rng, &[d, d], xavier(d, d)));
            m.insert(k("attn.bias_out"), uniform(rng, &[d], 0.02));
            m.insert(k("ffn.fc1_weight"), uniform(rng, &[f, d], xavier(f, d)));
            m.insert(k("ffn.fc1_bias"), uniform(rng, &[f], 0.02));
            m.insert(k("ffn.fc2_weight"), uniform(rng, &[d, f], xavier(d, f)));
            m.insert(k("ffn.fc2_bias"), uniform(rng, &[d], 0.02));
            for n in ["norm1", "norm2"] {
                m.insert(k(&format!("{n}.weight")), around(rng, d, 1.0, 0.1));
                m.insert(k(&format!("{n}.bias")), around(rng, d, 0.0, 0.1));
            }
        }
    }
    let ub = 1.0 / (d as f32).sqrt();
    m.insert("unpatch.to_pixels.weight".into(), uniform(rng, &[p * p * 3, d], ub));
    m.insert("unpatch.to_pixels.bias".into(), uniform(rng, &[p * p * 3], ub));
    let cb = 1.0 / 27f32.sqrt();
    m.insert("final_conv.0.weight".into(), uniform(rng, &[3, 3, 3, 3], cb));
    m.insert("final_conv.0.bias".into(), uniform(rng, &[3], cb));
    let cb = 1.0 / 3f32.sqrt();
    m.insert("final_conv.2.weight".into(), uniform(rng, &[3, 3, 1, 1], cb));
    m.insert("final_conv.2.bias".into(), uniform(rng, &[3], cb));
    let meta = BTreeMap::from([
        ("arch".to_string(), "style_vit".to_string()),
        ("patch_size".to_string(), p.to_string()),
        ("embed_dim".to_string(), d.to_string()),
        ("num_heads".to_string(), cfg.num_heads.to_string()),
        ("num_blocks".to_string(), cfg.num_blocks.to_string()),
        ("ffn_dim".to_string(), f.to_string()),
    ]);
    Weights::from_map("<random StyleViT weights>", m, meta)
}

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

/// Estimated device bytes to run StyleViT with content [n, 3, h, w] and style [ns, 3, hs, ws] (padded
/// sizes): weights, the token activations of one block (attention scores materialised), the images.
pub fn vit_bytes(cfg: &StyleVitConfig, n: usize, h: usize, w: usize, ns: usize, hs: usize, ws: usize) -> usize {
    let (p, d, f, heads, l) = (cfg.patch_size, cfg.embed_dim, cfg.ffn_dim, cfg.num_heads, cfg.num_blocks);
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
    use rand::SeedableRng;

    #[test]
    fn detect_by_metadata_and_keys() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut w = random_tnet_weights(&mut rng);
        assert_eq!(detect(&w), Ok(Kind::TransformerNet));
        w.metadata.clear();
        assert_eq!(detect(&w), Ok(Kind::TransformerNet));
        let cfg = StyleVitConfig { patch_size: 8, embed_dim: 64, num_heads: 1, num_blocks: 1, ffn_dim: 32 };
        let mut v = random_vit_weights(&cfg, &mut rng);
        assert_eq!(detect(&v), Ok(Kind::StyleVit));
        v.metadata.clear();
        assert_eq!(detect(&v), Ok(Kind::StyleVit));
        assert_eq!(v.shape_of("unpatch.to_pixels.weight"), Some(&[192usize, 64][..]));
        let other = Weights::from_map("x.safetensors", BTreeMap::from([("fc.weight".into(), Tensor::zeros(&[2]))]), BTreeMap::new());
        let e = detect(&other).unwrap_err();
        assert!(e.contains("x.safetensors") && e.contains("fc.weight"), "{e}");
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
