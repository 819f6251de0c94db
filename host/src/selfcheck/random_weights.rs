//! Random weights with the real key names and shapes (benchmarks, self-checks): conv and linear weights
//! uniform in ±1/√fan_in (Xavier for the transformer blocks), norm parameters near identity.
use std::collections::BTreeMap;

use models::{StyleVitConfig, Tensor, Weights};
use rand::Rng;

fn uniform(rng: &mut impl Rng, shape: &[usize], bound: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(
        shape,
        (0..n).map(|_| rng.gen_range(-bound..bound)).collect(),
    )
}

fn around(rng: &mut impl Rng, n: usize, center: f32, spread: f32) -> Tensor {
    Tensor::new(
        &[n],
        (0..n)
            .map(|_| center + rng.gen_range(-spread..spread))
            .collect(),
    )
}

/// Random TransformerNet weights with pytorch/examples key names (conv weights U(±1/√fan_in)).
pub fn random_tnet_weights(rng: &mut impl Rng) -> Weights {
    let mut m = BTreeMap::new();
    let conv = |m: &mut BTreeMap<String, Tensor>,
                rng: &mut _,
                name: &str,
                k: usize,
                c: usize,
                r: usize| {
        let b = 1.0 / ((c * r * r) as f32).sqrt();
        m.insert(
            format!("{name}.conv2d.weight"),
            uniform(rng, &[k, c, r, r], b),
        );
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
    m.insert(
        "patch_embed.proj.weight".into(),
        uniform(rng, &[d, 3, p, p], pb),
    );
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
    m.insert(
        "unpatch.to_pixels.weight".into(),
        uniform(rng, &[p * p * 3, d], ub),
    );
    m.insert(
        "unpatch.to_pixels.bias".into(),
        uniform(rng, &[p * p * 3], ub),
    );
    let cb = 1.0 / 27f32.sqrt();
    m.insert(
        "final_conv.0.weight".into(),
        uniform(rng, &[3, 3, 3, 3], cb),
    );
    m.insert("final_conv.0.bias".into(), uniform(rng, &[3], cb));
    let cb = 1.0 / 3f32.sqrt();
    m.insert(
        "final_conv.2.weight".into(),
        uniform(rng, &[3, 3, 1, 1], cb),
    );
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
