//! StyleViT: patch embedding, sinusoidal positions, post-norm encoder shared by content and style, AdaIN,
//! decoder, unpatch, 3x3-ReLU-1x1 output conv (`../shared/reference/torch_reference.py`).
use crate::ops::{self, Padding};
use crate::weights::Weights;
use crate::{Error, Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StyleVitConfig {
    pub patch_size: usize,
    pub embed_dim: usize,
    pub num_heads: usize,
    pub num_blocks: usize,
    pub ffn_dim: usize,
}

impl StyleVitConfig {
    /// The seed's named variants (nano, small, base, large), patch 32, head_dim 64.
    pub fn variant(name: &str) -> Option<Self> {
        let (embed_dim, num_heads, num_blocks, ffn_dim) = match name {
            "nano" => (128, 2, 2, 512),
            "small" => (256, 4, 4, 1024),
            "base" => (512, 8, 6, 2048),
            "large" => (768, 12, 12, 3072),
            _ => return None,
        };
        Some(StyleVitConfig {
            patch_size: 32,
            embed_dim,
            num_heads,
            num_blocks,
            ffn_dim,
        })
    }

    /// From safetensors `__metadata__` if present, else inferred from shapes (heads = embed_dim / 64
    /// unless `heads` is given). An explicit `heads` overrides the metadata's `num_heads`.
    pub fn from_weights(w: &Weights, heads: Option<usize>) -> Result<Self> {
        let cfg_err = |msg: String| Error::Config {
            path: w.path.clone(),
            msg,
        };
        let keys = [
            "patch_size",
            "embed_dim",
            "num_heads",
            "num_blocks",
            "ffn_dim",
        ];
        let present = keys.iter().filter(|k| w.metadata.contains_key(**k)).count();
        let cfg = if present > 0 {
            let get = |k: &str| -> Result<usize> {
                let v = w.metadata.get(k).ok_or_else(|| {
                    cfg_err(format!(
                        "metadata has some StyleViT settings but lacks `{k}`"
                    ))
                })?;
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| cfg_err(format!("metadata `{k}` = {v:?} is not a whole number")))
            };
            StyleVitConfig {
                patch_size: get("patch_size")?,
                embed_dim: get("embed_dim")?,
                num_heads: match heads {
                    Some(h) => h,
                    None => get("num_heads")?,
                },
                num_blocks: get("num_blocks")?,
                ffn_dim: get("ffn_dim")?,
            }
        } else {
            let pe = w.shape_of("patch_embed.proj.weight").ok_or_else(|| {
                cfg_err("no `patch_embed.proj.weight`: not a StyleViT checkpoint".into())
            })?;
            let (d, p) = match *pe {
                [d, 3, p, q] if p == q && p > 0 && d > 0 => (d, p),
                _ => {
                    return Err(cfg_err(format!(
                        "`patch_embed.proj.weight` has shape {pe:?}, expected [D, 3, p, p]"
                    )))
                }
            };
            let mut blocks = std::collections::BTreeSet::new();
            for k in w.tensors.keys() {
                if let Some(rest) = k.strip_prefix("encoder_blocks.") {
                    let idx = rest.split('.').next().unwrap_or("");
                    let i = idx
                        .parse::<usize>()
                        .map_err(|_| cfg_err(format!("unexpected key `{k}`")))?;
                    blocks.insert(i);
                }
            }
            let num_blocks = blocks.len();
            if num_blocks == 0 || blocks.iter().next_back() != Some(&(num_blocks - 1)) {
                return Err(cfg_err(format!(
                    "encoder blocks must be numbered 0..n without gaps, found {blocks:?}"
                )));
            }
            let f = w
                .shape_of("encoder_blocks.0.ffn.fc1_weight")
                .ok_or_else(|| cfg_err("missing `encoder_blocks.0.ffn.fc1_weight`".into()))?;
            let ffn_dim = match *f {
                [f, dd] if dd == d && f > 0 => f,
                _ => {
                    return Err(cfg_err(format!(
                        "`encoder_blocks.0.ffn.fc1_weight` has shape {f:?}, expected [F, {d}]"
                    )))
                }
            };
            let num_heads = match heads {
                Some(h) => h,
                None if d % 64 == 0 => d / 64,
                None => {
                    return Err(cfg_err(format!(
                        "embed_dim {d} is not a multiple of 64: give the number of heads"
                    )))
                }
            };
            StyleVitConfig {
                patch_size: p,
                embed_dim: d,
                num_heads,
                num_blocks,
                ffn_dim,
            }
        };
        cfg.validate().map_err(cfg_err)?;
        Ok(cfg)
    }

    /// Checks that every size is positive and that the heads divide the embedding.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let c = self;
        if c.patch_size == 0
            || c.embed_dim == 0
            || c.num_heads == 0
            || c.num_blocks == 0
            || c.ffn_dim == 0
        {
            return Err(format!(
                "invalid StyleViT configuration {c:?}: every size must be positive"
            ));
        }
        if !c.embed_dim.is_multiple_of(c.num_heads) {
            return Err(format!(
                "embed_dim {} is not divisible by num_heads {}",
                c.embed_dim, c.num_heads
            ));
        }
        Ok(())
    }
}

/// One post-norm transformer block (keys `attn.w_qkv`, `attn.bias_qkv`, `attn.w_out`, `attn.bias_out`,
/// `ffn.fc1_weight`, `ffn.fc1_bias`, `ffn.fc2_weight`, `ffn.fc2_bias`, `norm1.weight/bias`, `norm2.weight/bias`).
pub struct Block {
    pub w_qkv: Tensor,
    pub b_qkv: Tensor,
    pub w_out: Tensor,
    pub b_out: Tensor,
    pub fc1_w: Tensor,
    pub fc1_b: Tensor,
    pub fc2_w: Tensor,
    pub fc2_b: Tensor,
    pub norm1_w: Tensor,
    pub norm1_b: Tensor,
    pub norm2_w: Tensor,
    pub norm2_b: Tensor,
}

pub struct StyleVit {
    pub cfg: StyleVitConfig,
    /// `patch_embed.proj.weight` [D, 3, p, p], `.bias` [D]
    pub patch_w: Tensor,
    pub patch_b: Tensor,
    pub encoder: Vec<Block>,
    pub decoder: Vec<Block>,
    /// `unpatch.to_pixels.weight` [p*p*3, D], `.bias`
    pub to_pixels_w: Tensor,
    pub to_pixels_b: Tensor,
    /// `final_conv.0.weight` [3, 3, 3, 3], `.0.bias`, `final_conv.2.weight` [3, 3, 1, 1], `.2.bias`
    pub final0_w: Tensor,
    pub final0_b: Tensor,
    pub final2_w: Tensor,
    pub final2_b: Tensor,
}

fn take_block(w: &mut Weights, prefix: &str, d: usize, f: usize) -> Result<Block> {
    let mut t = |k: &str, shape: &[usize]| w.take(&format!("{prefix}.{k}"), shape);
    Ok(Block {
        w_qkv: t("attn.w_qkv", &[3 * d, d])?,
        b_qkv: t("attn.bias_qkv", &[3 * d])?,
        w_out: t("attn.w_out", &[d, d])?,
        b_out: t("attn.bias_out", &[d])?,
        fc1_w: t("ffn.fc1_weight", &[f, d])?,
        fc1_b: t("ffn.fc1_bias", &[f])?,
        fc2_w: t("ffn.fc2_weight", &[d, f])?,
        fc2_b: t("ffn.fc2_bias", &[d])?,
        norm1_w: t("norm1.weight", &[d])?,
        norm1_b: t("norm1.bias", &[d])?,
        norm2_w: t("norm2.weight", &[d])?,
        norm2_b: t("norm2.bias", &[d])?,
    })
}

impl Block {
    /// Post-norm: x = LN1(x + Attn(x)); x = LN2(x + FFN(x)).
    pub fn forward(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        let a = ops::multi_head_attention(
            x,
            &self.w_qkv,
            &self.b_qkv,
            &self.w_out,
            &self.b_out,
            heads,
        )?;
        let x = ops::layer_norm(&ops::add(x, &a)?, &self.norm1_w, &self.norm1_b)?;
        let h = ops::gelu(&ops::linear(&x, &self.fc1_w, Some(&self.fc1_b))?);
        let f = ops::linear(&h, &self.fc2_w, Some(&self.fc2_b))?;
        ops::layer_norm(&ops::add(&x, &f)?, &self.norm2_w, &self.norm2_b)
    }
}

const OP: &str = "style_vit";

impl StyleVit {
    pub fn new(cfg: StyleVitConfig, mut weights: Weights) -> Result<Self> {
        cfg.validate().map_err(|msg| Error::Config {
            path: weights.path.clone(),
            msg,
        })?;
        let StyleVitConfig {
            patch_size: p,
            embed_dim: d,
            num_blocks: nb,
            ffn_dim: f,
            ..
        } = cfg;
        let w = &mut weights;
        let patch_w = w.take("patch_embed.proj.weight", &[d, 3, p, p])?;
        let patch_b = w.take("patch_embed.proj.bias", &[d])?;
        let encoder = (0..nb)
            .map(|i| take_block(w, &format!("encoder_blocks.{i}"), d, f))
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..nb)
            .map(|i| take_block(w, &format!("decoder_blocks.{i}"), d, f))
            .collect::<Result<Vec<_>>>()?;
        let to_pixels_w = w.take("unpatch.to_pixels.weight", &[p * p * 3, d])?;
        let to_pixels_b = w.take("unpatch.to_pixels.bias", &[p * p * 3])?;
        let final0_w = w.take("final_conv.0.weight", &[3, 3, 3, 3])?;
        let final0_b = w.take("final_conv.0.bias", &[3])?;
        let final2_w = w.take("final_conv.2.weight", &[3, 3, 1, 1])?;
        let final2_b = w.take("final_conv.2.bias", &[3])?;
        weights.finish()?;
        Ok(StyleVit {
            cfg,
            patch_w,
            patch_b,
            encoder,
            decoder,
            to_pixels_w,
            to_pixels_b,
            final0_w,
            final0_b,
            final2_w,
            final2_b,
        })
    }

    /// Checks an image is [B, 3, H, W] with H, W positive multiples of the patch size; returns (B, H, W).
    fn check_image(&self, what: &str, img: &Tensor) -> Result<(usize, usize, usize)> {
        let [b, c, h, w] = ops::dims4(OP, what, img)?;
        let p = self.cfg.patch_size;
        if c != 3 || b == 0 || h == 0 || w == 0 || h % p != 0 || w % p != 0 {
            return Err(Error::Shape2 {
                op: OP,
                msg: format!("{what} must be [B, 3, H, W] with H and W positive multiples of the patch size {p}, got {:?}", img.shape),
            });
        }
        Ok((b, h, w))
    }

    /// Encoder on an image [B, 3, H, W] (H, W multiples of p) -> tokens [B, N, D].
    pub fn encode(&self, img: &Tensor) -> Result<Tensor> {
        self.check_image("image", img)?;
        let mut x = ops::patch_embed(img, &self.patch_w, &self.patch_b, self.cfg.patch_size)?;
        let (n, d) = (x.shape[1], x.shape[2]);
        let pe = ops::sinusoidal(n, d);
        for row in x.data.chunks_exact_mut(n * d) {
            for (v, p) in row.iter_mut().zip(&pe.data) {
                *v += p;
            }
        }
        for b in &self.encoder {
            x = b.forward(&x, self.cfg.num_heads)?;
        }
        Ok(x)
    }

    /// content [B, 3, H, W], style [B, 3, Hs, Ws] (multiples of p; B equal, or style batch 1 broadcast),
    /// alpha in 0..1 -> raw output [B, 3, H, W].
    pub fn forward(&self, content: &Tensor, style: &Tensor, alpha: f32) -> Result<Tensor> {
        let (b, h, w) = self.check_image("content", content)?;
        let (bs, _, _) = self.check_image("style", style)?;
        if bs != b && bs != 1 {
            return Err(Error::Shape2 {
                op: OP,
                msg: format!("style batch {bs} must be 1 or equal the content batch {b}"),
            });
        }
        if !(0.0..=1.0).contains(&alpha) {
            return Err(Error::Shape2 {
                op: OP,
                msg: format!("alpha {alpha} is outside 0..1"),
            });
        }
        let p = self.cfg.patch_size;
        let (hp, wp) = (h / p, w / p);
        let c = self.encode(content)?;
        let t = ops::adain(&c, &self.encode(style)?)?;
        let mut x = c.clone();
        for (xv, (tv, cv)) in x.data.iter_mut().zip(t.data.iter().zip(&c.data)) {
            *xv = alpha * tv + (1.0 - alpha) * cv;
        }
        for blk in &self.decoder {
            x = blk.forward(&x, self.cfg.num_heads)?;
        }
        let px = ops::linear(&x, &self.to_pixels_w, Some(&self.to_pixels_b))?;
        let y = ops::unpatch(&px, hp, wp, p)?;
        let y = ops::relu(&ops::conv2d(
            &y,
            &self.final0_w,
            Some(&self.final0_b),
            1,
            Padding::Zero(1),
            1,
        )?);
        ops::conv2d(
            &y,
            &self.final2_w,
            Some(&self.final2_b),
            1,
            Padding::Zero(0),
            1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A random state dict for `cfg` (deterministic, small values).
    fn state_dict(cfg: &StyleVitConfig) -> BTreeMap<String, Tensor> {
        let (p, d, f) = (cfg.patch_size, cfg.embed_dim, cfg.ffn_dim);
        let mut seed = 7u32;
        let mut rnd = |shape: &[usize]| {
            let data = (0..shape.iter().product::<usize>())
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect();
            Tensor::new(shape, data)
        };
        let mut m = BTreeMap::new();
        m.insert("patch_embed.proj.weight".to_string(), rnd(&[d, 3, p, p]));
        m.insert("patch_embed.proj.bias".to_string(), rnd(&[d]));
        for side in ["encoder_blocks", "decoder_blocks"] {
            for i in 0..cfg.num_blocks {
                for (k, shape) in [
                    ("attn.w_qkv", vec![3 * d, d]),
                    ("attn.bias_qkv", vec![3 * d]),
                    ("attn.w_out", vec![d, d]),
                    ("attn.bias_out", vec![d]),
                    ("ffn.fc1_weight", vec![f, d]),
                    ("ffn.fc1_bias", vec![f]),
                    ("ffn.fc2_weight", vec![d, f]),
                    ("ffn.fc2_bias", vec![d]),
                    ("norm1.weight", vec![d]),
                    ("norm1.bias", vec![d]),
                    ("norm2.weight", vec![d]),
                    ("norm2.bias", vec![d]),
                ] {
                    m.insert(format!("{side}.{i}.{k}"), rnd(&shape));
                }
            }
        }
        m.insert("unpatch.to_pixels.weight".to_string(), rnd(&[p * p * 3, d]));
        m.insert("unpatch.to_pixels.bias".to_string(), rnd(&[p * p * 3]));
        m.insert("final_conv.0.weight".to_string(), rnd(&[3, 3, 3, 3]));
        m.insert("final_conv.0.bias".to_string(), rnd(&[3]));
        m.insert("final_conv.2.weight".to_string(), rnd(&[3, 3, 1, 1]));
        m.insert("final_conv.2.bias".to_string(), rnd(&[3]));
        m
    }

    fn small() -> StyleVitConfig {
        StyleVitConfig {
            patch_size: 4,
            embed_dim: 64,
            num_heads: 1,
            num_blocks: 2,
            ffn_dim: 96,
        }
    }

    fn weights(m: BTreeMap<String, Tensor>, meta: &[(&str, &str)]) -> Weights {
        Weights::from_map(
            "<test>",
            m,
            meta.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn variants() {
        let nano = StyleVitConfig::variant("nano").unwrap();
        assert_eq!(
            nano,
            StyleVitConfig {
                patch_size: 32,
                embed_dim: 128,
                num_heads: 2,
                num_blocks: 2,
                ffn_dim: 512
            }
        );
        for v in ["nano", "small", "base", "large"] {
            let c = StyleVitConfig::variant(v).unwrap();
            assert_eq!(c.embed_dim / c.num_heads, 64, "{v}");
        }
        assert_eq!(StyleVitConfig::variant("huge"), None);
    }

    #[test]
    fn config_inferred_from_shapes() {
        let cfg = small();
        let w = weights(state_dict(&cfg), &[]);
        assert_eq!(StyleVitConfig::from_weights(&w, None).unwrap(), cfg);
        assert_eq!(
            StyleVitConfig::from_weights(&w, Some(4)).unwrap().num_heads,
            4
        );
        assert!(matches!(
            StyleVitConfig::from_weights(&w, Some(3)),
            Err(Error::Config { .. })
        ));
        // 96 channels: not a multiple of 64, so heads must be given.
        let c96 = StyleVitConfig {
            embed_dim: 96,
            ..cfg
        };
        let w = weights(state_dict(&c96), &[]);
        assert!(matches!(
            StyleVitConfig::from_weights(&w, None),
            Err(Error::Config { .. })
        ));
        assert_eq!(
            StyleVitConfig::from_weights(&w, Some(2)).unwrap(),
            StyleVitConfig {
                num_heads: 2,
                ..c96
            }
        );
    }

    #[test]
    fn config_from_metadata() {
        let cfg = small();
        let meta = [
            ("patch_size", "4"),
            ("embed_dim", "64"),
            ("num_heads", "2"),
            ("num_blocks", "2"),
            ("ffn_dim", "96"),
            ("arch", "style_vit"),
        ];
        let w = weights(state_dict(&cfg), &meta);
        assert_eq!(
            StyleVitConfig::from_weights(&w, None).unwrap(),
            StyleVitConfig {
                num_heads: 2,
                ..cfg
            }
        );
        let w = weights(state_dict(&cfg), &meta[..4]);
        assert!(matches!(
            StyleVitConfig::from_weights(&w, None),
            Err(Error::Config { .. })
        ));
        let w = weights(
            state_dict(&cfg),
            &[
                ("patch_size", "four"),
                ("embed_dim", "64"),
                ("num_heads", "2"),
                ("num_blocks", "2"),
                ("ffn_dim", "96"),
            ],
        );
        assert!(matches!(
            StyleVitConfig::from_weights(&w, None),
            Err(Error::Config { .. })
        ));
    }

    #[test]
    fn new_checks_keys() {
        let cfg = small();
        let mut m = state_dict(&cfg);
        m.insert("encoder_blocks.2.norm1.bias".into(), Tensor::zeros(&[64]));
        assert!(matches!(
            StyleVit::new(cfg, weights(m, &[])),
            Err(Error::UnexpectedKeys { .. })
        ));
        let mut m = state_dict(&cfg);
        m.remove("decoder_blocks.1.ffn.fc2_bias");
        assert!(matches!(
            StyleVit::new(cfg, weights(m, &[])),
            Err(Error::MissingKey { .. })
        ));
        let m = state_dict(&cfg);
        let wrong = StyleVitConfig {
            ffn_dim: 128,
            ..cfg
        };
        assert!(matches!(
            StyleVit::new(wrong, weights(m, &[])),
            Err(Error::Shape { .. })
        ));
    }

    #[test]
    fn forward_broadcasts_style_and_checks_sizes() {
        let cfg = small();
        let net = StyleVit::new(cfg, weights(state_dict(&cfg), &[])).unwrap();
        let img = |b: usize, h: usize, w: usize, k: usize| {
            Tensor::new(
                &[b, 3, h, w],
                (0..b * 3 * h * w)
                    .map(|i| ((i * k) % 101) as f32 / 100.0)
                    .collect(),
            )
        };
        let content = img(2, 8, 12, 7);
        let style = img(1, 12, 8, 13);
        let y = net.forward(&content, &style, 1.0).unwrap();
        assert_eq!(y.shape, [2, 3, 8, 12]);
        assert!(y.data.iter().all(|v| v.is_finite()));
        // Broadcasting a single style equals running each content sample alone.
        let c1 = Tensor::new(&[1, 3, 8, 12], content.data[3 * 96..].to_vec());
        let y1 = net.forward(&c1, &style, 1.0).unwrap();
        assert_eq!(y1.data, y.data[3 * 96..]);
        // alpha 0 skips AdaIN: the style does not matter.
        let a = net.forward(&c1, &style, 0.0).unwrap();
        let b = net.forward(&c1, &img(1, 8, 8, 3), 0.0).unwrap();
        assert_eq!(a.data, b.data);
        // Sizes that are not multiples of the patch, wrong channels, batch mismatch, alpha out of range,
        // and a single content token (no unbiased variance).
        assert!(matches!(
            net.forward(&img(1, 8, 10, 1), &style, 1.0),
            Err(Error::Shape2 { .. })
        ));
        assert!(matches!(
            net.forward(&Tensor::zeros(&[1, 1, 8, 8]), &style, 1.0),
            Err(Error::Shape2 { .. })
        ));
        assert!(matches!(
            net.forward(&content, &img(3, 8, 8, 1), 1.0),
            Err(Error::Shape2 { .. })
        ));
        assert!(matches!(
            net.forward(&content, &style, 1.5),
            Err(Error::Shape2 { .. })
        ));
        assert!(matches!(
            net.forward(&img(1, 4, 4, 1), &style, 1.0),
            Err(Error::Shape2 { .. })
        ));
    }
}
