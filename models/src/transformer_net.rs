//! TransformerNet (Johnson et al. 2016) with pytorch/examples fast_neural_style's layout and key names.
use crate::ops::{self, Padding};
use crate::weights::Weights;
use crate::{Error, Result, Tensor};

/// A conv layer: weight [K, C, R, R], bias [K], stride; reflection padding R/2.
pub struct ConvLayer {
    pub weight: Tensor,
    pub bias: Tensor,
    pub stride: usize,
    pub upsample: usize,
}
/// InstanceNorm2d(affine) parameters.
pub struct Norm {
    pub gamma: Tensor,
    pub beta: Tensor,
}
pub struct ResidualBlock {
    pub conv1: ConvLayer,
    pub in1: Norm,
    pub conv2: ConvLayer,
    pub in2: Norm,
}

/// The network's parameters (fields named as the state dict's prefixes).
pub struct TransformerNet {
    pub conv1: ConvLayer,
    pub in1: Norm,
    pub conv2: ConvLayer,
    pub in2: Norm,
    pub conv3: ConvLayer,
    pub in3: Norm,
    pub res: [ResidualBlock; 5],
    pub deconv1: ConvLayer,
    pub in4: Norm,
    pub deconv2: ConvLayer,
    pub in5: Norm,
    pub deconv3: ConvLayer,
}

/// Names of the InstanceNorm layers (whose stale running statistics old checkpoints carry).
fn norm_names() -> Vec<String> {
    let mut v: Vec<String> = (1..=5).map(|i| format!("in{i}")).collect();
    for r in 1..=5 {
        v.push(format!("res{r}.in1"));
        v.push(format!("res{r}.in2"));
    }
    v
}

fn take_conv(
    w: &mut Weights,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    upsample: usize,
) -> Result<ConvLayer> {
    Ok(ConvLayer {
        weight: w.take(&format!("{name}.conv2d.weight"), &[cout, cin, k, k])?,
        bias: w.take(&format!("{name}.conv2d.bias"), &[cout])?,
        stride,
        upsample,
    })
}

fn take_norm(w: &mut Weights, name: &str, c: usize) -> Result<Norm> {
    Ok(Norm {
        gamma: w.take(&format!("{name}.weight"), &[c])?,
        beta: w.take(&format!("{name}.bias"), &[c])?,
    })
}

fn take_res(w: &mut Weights, i: usize) -> Result<ResidualBlock> {
    Ok(ResidualBlock {
        conv1: take_conv(w, &format!("res{i}.conv1"), 128, 128, 3, 1, 1)?,
        in1: take_norm(w, &format!("res{i}.in1"), 128)?,
        conv2: take_conv(w, &format!("res{i}.conv2"), 128, 128, 3, 1, 1)?,
        in2: take_norm(w, &format!("res{i}.in2"), 128)?,
    })
}

impl ConvLayer {
    /// Reflection-padded (R/2) convolution, with the layer's nearest upsampling first if any.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let r = self.weight.shape.get(2).copied().unwrap_or(1);
        ops::conv2d(
            x,
            &self.weight,
            Some(&self.bias),
            self.stride,
            Padding::Reflect(r / 2),
            self.upsample,
        )
    }
}

impl ResidualBlock {
    /// in2(conv2(relu(in1(conv1(x))))) + x
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = ops::instance_norm(
            &self.conv1.forward(x)?,
            &self.in1.gamma,
            &self.in1.beta,
            true,
            None,
        )?;
        ops::instance_norm(
            &self.conv2.forward(&y)?,
            &self.in2.gamma,
            &self.in2.beta,
            false,
            Some(x),
        )
    }
}

/// Output size of a reflection-padded 3x3 stride-2 convolution: (n + 2 - 3) / 2 + 1.
fn down2(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n - 1) / 2 + 1
    }
}

impl TransformerNet {
    /// Takes every parameter from `weights` (shape-checked), skips the stale `inN.running_mean/var`
    /// (and `num_batches_tracked`) entries of old checkpoints, and refuses unknown keys.
    pub fn new(mut weights: Weights) -> Result<Self> {
        for n in norm_names() {
            for stale in ["running_mean", "running_var", "num_batches_tracked"] {
                weights.tensors.remove(&format!("{n}.{stale}"));
            }
        }
        let w = &mut weights;
        let conv1 = take_conv(w, "conv1", 3, 32, 9, 1, 1)?;
        let in1 = take_norm(w, "in1", 32)?;
        let conv2 = take_conv(w, "conv2", 32, 64, 3, 2, 1)?;
        let in2 = take_norm(w, "in2", 64)?;
        let conv3 = take_conv(w, "conv3", 64, 128, 3, 2, 1)?;
        let in3 = take_norm(w, "in3", 128)?;
        let res = [
            take_res(w, 1)?,
            take_res(w, 2)?,
            take_res(w, 3)?,
            take_res(w, 4)?,
            take_res(w, 5)?,
        ];
        let deconv1 = take_conv(w, "deconv1", 128, 64, 3, 1, 2)?;
        let in4 = take_norm(w, "in4", 64)?;
        let deconv2 = take_conv(w, "deconv2", 64, 32, 3, 1, 2)?;
        let in5 = take_norm(w, "in5", 32)?;
        let deconv3 = take_conv(w, "deconv3", 32, 3, 9, 1, 1)?;
        weights.finish()?;
        Ok(TransformerNet {
            conv1,
            in1,
            conv2,
            in2,
            conv3,
            in3,
            res,
            deconv1,
            in4,
            deconv2,
            in5,
            deconv3,
        })
    }

    /// CPU forward: x [N, 3, H, W] in 0..255 -> raw output [N, 3, H', W'] (H' = H rounded as PyTorch does:
    /// two stride-2 convs then two x2 upsamplings; 250x190 gives 252x192).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [_, c, h, w] = ops::dims4("transformer_net", "input", x)?;
        if c != 3 || h < 5 || w < 5 {
            return Err(Error::Shape2 {
                op: "transformer_net",
                msg: format!(
                    "input must be [N, 3, H, W] with H, W >= 5, got {:?}",
                    x.shape
                ),
            });
        }
        let cin = |conv: &ConvLayer, n: &Norm, y: &Tensor| -> Result<Tensor> {
            ops::instance_norm(&conv.forward(y)?, &n.gamma, &n.beta, true, None)
        };
        let mut y = cin(&self.conv1, &self.in1, x)?;
        y = cin(&self.conv2, &self.in2, &y)?;
        y = cin(&self.conv3, &self.in3, &y)?;
        for r in &self.res {
            y = r.forward(&y)?;
        }
        y = cin(&self.deconv1, &self.in4, &y)?;
        y = cin(&self.deconv2, &self.in5, &y)?;
        self.deconv3.forward(&y)
    }

    /// Output size for an input size, as PyTorch's arithmetic gives it.
    pub fn output_size(h: usize, w: usize) -> (usize, usize) {
        (down2(down2(h)) * 4, down2(down2(w)) * 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A complete random state dict with pytorch/examples key names (deterministic, small values).
    fn state_dict() -> BTreeMap<String, Tensor> {
        let mut m = BTreeMap::new();
        let mut seed = 1u32;
        let mut rnd = |shape: &[usize], scale: f32| {
            let data = (0..shape.iter().product::<usize>())
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * scale
                })
                .collect();
            Tensor::new(shape, data)
        };
        let mut conv =
            |m: &mut BTreeMap<String, Tensor>, name: &str, i: usize, o: usize, k: usize| {
                m.insert(format!("{name}.conv2d.weight"), rnd(&[o, i, k, k], 0.2));
                m.insert(format!("{name}.conv2d.bias"), rnd(&[o], 0.2));
            };
        conv(&mut m, "conv1", 3, 32, 9);
        conv(&mut m, "conv2", 32, 64, 3);
        conv(&mut m, "conv3", 64, 128, 3);
        for r in 1..=5 {
            conv(&mut m, &format!("res{r}.conv1"), 128, 128, 3);
            conv(&mut m, &format!("res{r}.conv2"), 128, 128, 3);
        }
        conv(&mut m, "deconv1", 128, 64, 3);
        conv(&mut m, "deconv2", 64, 32, 3);
        conv(&mut m, "deconv3", 32, 3, 9);
        for (name, c) in [
            ("in1", 32),
            ("in2", 64),
            ("in3", 128),
            ("in4", 64),
            ("in5", 32),
        ] {
            m.insert(format!("{name}.weight"), Tensor::new(&[c], vec![1.1; c]));
            m.insert(format!("{name}.bias"), Tensor::new(&[c], vec![0.1; c]));
        }
        for r in 1..=5 {
            for n in ["in1", "in2"] {
                m.insert(
                    format!("res{r}.{n}.weight"),
                    Tensor::new(&[128], vec![0.9; 128]),
                );
                m.insert(
                    format!("res{r}.{n}.bias"),
                    Tensor::new(&[128], vec![-0.1; 128]),
                );
            }
        }
        m
    }

    fn weights(m: BTreeMap<String, Tensor>) -> Weights {
        Weights::from_map("<test>", m, BTreeMap::new())
    }

    #[test]
    fn loads_and_skips_stale_running_stats() {
        let mut m = state_dict();
        for n in ["in1", "in5", "res3.in2"] {
            m.insert(format!("{n}.running_mean"), Tensor::zeros(&[4]));
            m.insert(format!("{n}.running_var"), Tensor::zeros(&[4]));
            m.insert(format!("{n}.num_batches_tracked"), Tensor::zeros(&[]));
        }
        let net = TransformerNet::new(weights(m)).unwrap();
        assert_eq!(net.res[4].conv2.weight.shape, [128, 128, 3, 3]);
        assert_eq!(
            (net.conv2.stride, net.deconv1.upsample, net.deconv3.upsample),
            (2, 2, 1)
        );
    }

    #[test]
    fn refuses_unknown_missing_and_misshapen_keys() {
        let mut m = state_dict();
        m.insert("res6.in1.weight".into(), Tensor::zeros(&[128]));
        assert!(
            matches!(TransformerNet::new(weights(m)), Err(Error::UnexpectedKeys { keys, .. }) if keys == ["res6.in1.weight"])
        );
        let mut m = state_dict();
        m.remove("res2.in1.bias");
        assert!(
            matches!(TransformerNet::new(weights(m)), Err(Error::MissingKey { key, .. }) if key == "res2.in1.bias")
        );
        let mut m = state_dict();
        m.insert("conv2.conv2d.weight".into(), Tensor::zeros(&[64, 32, 5, 5]));
        assert!(
            matches!(TransformerNet::new(weights(m)), Err(Error::Shape { key, .. }) if key == "conv2.conv2d.weight")
        );
    }

    #[test]
    fn forward_shapes_and_batch_independence() {
        let net = TransformerNet::new(weights(state_dict())).unwrap();
        let (h, w) = (13, 11);
        let x = Tensor::new(
            &[2, 3, h, w],
            (0..2 * 3 * h * w)
                .map(|i| ((i * 37) % 256) as f32)
                .collect(),
        );
        let y = net.forward(&x).unwrap();
        assert_eq!(TransformerNet::output_size(h, w), (16, 12));
        assert_eq!(y.shape, [2, 3, 16, 12]);
        assert!(y.data.iter().all(|v| v.is_finite()));
        // Each sample is processed on its own.
        let x1 = Tensor::new(&[1, 3, h, w], x.data[3 * h * w..].to_vec());
        let y1 = net.forward(&x1).unwrap();
        assert_eq!(y1.data, y.data[3 * 16 * 12..]);
        assert!(matches!(
            net.forward(&Tensor::zeros(&[1, 4, 16, 16])),
            Err(Error::Shape2 { .. })
        ));
        assert!(matches!(
            net.forward(&Tensor::zeros(&[1, 3, 4, 16])),
            Err(Error::Shape2 { .. })
        ));
    }
}
