//! CPU reference ops: the semantics of `../shared/reference/torch_reference.py`, written for clarity and
//! reasonable speed (the fixture tests run whole networks on 2 cores). Every function checks its shapes and
//! returns `Error::Shape2` with the op's name on a mismatch. Images are NCHW, tokens [B, N, D], row-major.
//!
//! Each op has the same name as its GPU kernel and launcher (`host/src/ops/<op>.rs`).
use crate::{Result, Tensor};

/// Padding mode of [`conv2d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// `nn.ReflectionPad2d(pad)` then the convolution (TransformerNet).
    Reflect(usize),
    /// Zero padding (`nn.Conv2d(padding=p)`, StyleViT's final 3x3 conv; 0 for patch embedding).
    Zero(usize),
}

mod conv2d;
use crate::Error;

/// The error every op returns on bad arguments.
pub(crate) fn shape_err(op: &'static str, msg: String) -> Error {
    Error::Shape2 { op, msg }
}

/// The four dimensions of a 4-D tensor, or an error naming `what`.
pub(crate) fn dims4(op: &'static str, what: &str, t: &Tensor) -> Result<[usize; 4]> {
    match t.shape[..] {
        [a, b, c, d] if t.data.len() == a * b * c * d => Ok([a, b, c, d]),
        _ => Err(shape_err(
            op,
            format!("{what} must be 4-D, got shape {:?}", t.shape),
        )),
    }
}

fn dims3(op: &'static str, what: &str, t: &Tensor) -> Result<[usize; 3]> {
    match t.shape[..] {
        [a, b, c] if t.data.len() == a * b * c => Ok([a, b, c]),
        _ => Err(shape_err(
            op,
            format!("{what} must be 3-D, got shape {:?}", t.shape),
        )),
    }
}

fn check_vec(op: &'static str, what: &str, t: &Tensor, n: usize) -> Result<()> {
    if t.shape != [n] || t.data.len() != n {
        return Err(shape_err(
            op,
            format!("{what} has shape {:?}, expected [{n}]", t.shape),
        ));
    }
    Ok(())
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .max(1)
}

/// Runs `f(chunk_index, chunk)` over the `chunk`-sized pieces of `out`, on several threads when `work`
/// (a rough operation count) makes that worthwhile.
fn par_chunks<F>(out: &mut [f32], chunk: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if chunk == 0 || out.is_empty() {
        return;
    }
    let nchunks = out.len() / chunk;
    let t = if work < 1_000_000 {
        1
    } else {
        threads().min(nchunks).max(1)
    };
    if t == 1 {
        for (i, c) in out.chunks_mut(chunk).enumerate() {
            f(i, c);
        }
        return;
    }
    let per = nchunks.div_ceil(t);
    std::thread::scope(|sc| {
        for (gi, group) in out.chunks_mut(per * chunk).enumerate() {
            let f = &f;
            sc.spawn(move || {
                for (i, c) in group.chunks_mut(chunk).enumerate() {
                    f(gi * per + i, c);
                }
            });
        }
    });
}

/// 2-D convolution, NCHW input [N, C, H, W], weight [K, C, R, S], optional bias [K], given stride.
/// `upsample` = 2 applies nearest x2 upsampling to the input first (UpsampleConvLayer); 1 = none.
/// With upsampling, padding is applied in upsampled coordinates. Output size follows PyTorch:
/// (H·up + 2·pad − R) / stride + 1.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: Padding,
    upsample: usize,
) -> Result<Tensor> {
    conv2d::conv2d(x, w, b, stride, pad, upsample)
}

/// Nearest-neighbour x`factor` upsampling (`F.interpolate(mode="nearest", scale_factor=factor)`).
pub fn upsample_nearest(x: &Tensor, factor: usize) -> Result<Tensor> {
    const OP: &str = "upsample_nearest";
    let [n, c, h, w] = dims4(OP, "input", x)?;
    if factor == 0 {
        return Err(shape_err(OP, "factor must be at least 1".into()));
    }
    let (ho, wo) = (h * factor, w * factor);
    let mut out = Tensor::zeros(&[n, c, ho, wo]);
    for (plane, src) in out
        .data
        .chunks_mut(ho * wo.max(1))
        .zip(x.data.chunks(h * w.max(1)))
    {
        for (i, orow) in plane.chunks_mut(wo.max(1)).enumerate() {
            let srow = &src[(i / factor) * w..(i / factor + 1) * w];
            for (j, o) in orow.iter_mut().enumerate() {
                *o = srow[j / factor];
            }
        }
    }
    Ok(out)
}

/// InstanceNorm2d(affine): per sample and channel, biased variance over H*W, eps 1e-5, then γ, β.
/// `relu` applies ReLU after; `residual` (same shape) is added last (after the optional ReLU).
pub fn instance_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    relu: bool,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "instance_norm";
    let [_, c, h, w] = dims4(OP, "input", x)?;
    check_vec(OP, "gamma", gamma, c)?;
    check_vec(OP, "beta", beta, c)?;
    if let Some(r) = residual {
        if r.shape != x.shape {
            return Err(shape_err(
                OP,
                format!(
                    "residual shape {:?} differs from input {:?}",
                    r.shape, x.shape
                ),
            ));
        }
    }
    let hw = h * w;
    let mut out = x.clone();
    par_chunks(&mut out.data, hw, x.numel() * 4, |plane, y| {
        let ch = plane % c;
        let n = y.len() as f64;
        let mean = y.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = y
            .iter()
            .map(|&v| (v as f64 - mean) * (v as f64 - mean))
            .sum::<f64>()
            / n;
        let inv = 1.0 / (var + 1e-5).sqrt();
        let scale = (gamma.data[ch] as f64 * inv) as f32;
        let shift = (beta.data[ch] as f64 - mean * gamma.data[ch] as f64 * inv) as f32;
        for v in y.iter_mut() {
            *v = *v * scale + shift;
            if relu {
                *v = v.max(0.0);
            }
        }
        if let Some(r) = residual {
            for (v, rv) in y.iter_mut().zip(&r.data[plane * hw..(plane + 1) * hw]) {
                *v += rv;
            }
        }
    });
    Ok(out)
}

pub fn relu(x: &Tensor) -> Tensor {
    Tensor {
        shape: x.shape.clone(),
        data: x.data.iter().map(|v| v.max(0.0)).collect(),
    }
}

/// Elementwise a + b (same shape).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape != b.shape || a.data.len() != b.data.len() {
        return Err(shape_err(
            "add",
            format!("shapes {:?} and {:?} differ", a.shape, b.shape),
        ));
    }
    Ok(Tensor {
        shape: a.shape.clone(),
        data: a.data.iter().zip(&b.data).map(|(x, y)| x + y).collect(),
    })
}

/// Dot product with eight partial sums (vectorisable, and more accurate than one running sum).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// y = x Wᵀ + b over the last dimension: x [.., in], w [out, in], b [out] (`F.linear`).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "linear";
    let (Some(&din), &[dout, win]) = (x.shape.last(), &w.shape[..]) else {
        return Err(shape_err(
            OP,
            format!(
                "input {:?} must have at least 1 dimension and weight {:?} exactly 2",
                x.shape, w.shape
            ),
        ));
    };
    if x.data.len() != x.shape.iter().product::<usize>() {
        return Err(shape_err(
            OP,
            format!(
                "input shape {:?} does not match its {} values",
                x.shape,
                x.data.len()
            ),
        ));
    }
    if win != din || w.data.len() != dout * din {
        return Err(shape_err(
            OP,
            format!(
                "weight {:?} does not take inputs of width {din} (input {:?})",
                w.shape, x.shape
            ),
        ));
    }
    if let Some(b) = b {
        check_vec(OP, "bias", b, dout)?;
    }
    let rows = x
        .data
        .len()
        .checked_div(din)
        .unwrap_or_else(|| x.shape[..x.shape.len() - 1].iter().product());
    let mut shape = x.shape.clone();
    *shape.last_mut().unwrap_or(&mut 0) = dout;
    let mut out = Tensor::zeros(&shape);
    par_chunks(&mut out.data, dout, rows * dout * din, |i, y| {
        let xr = &x.data[i * din..(i + 1) * din];
        for (o, (yv, wr)) in y
            .iter_mut()
            .zip(w.data.chunks_exact(din.max(1)))
            .enumerate()
        {
            *yv = if din == 0 { 0.0 } else { dot(xr, wr) } + b.map_or(0.0, |b| b.data[o]);
        }
    });
    Ok(out)
}

/// LayerNorm over the last dimension, eps 1e-5, biased variance, weight and bias [D].
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    let Some(&d) = x.shape.last() else {
        return Err(shape_err(OP, "input must have at least 1 dimension".into()));
    };
    if x.data.len() != x.shape.iter().product::<usize>() {
        return Err(shape_err(
            OP,
            format!(
                "input shape {:?} does not match its {} values",
                x.shape,
                x.data.len()
            ),
        ));
    }
    check_vec(OP, "weight", gamma, d)?;
    check_vec(OP, "bias", beta, d)?;
    let mut out = x.clone();
    par_chunks(&mut out.data, d, x.numel() * 4, |_, y| {
        let n = y.len() as f64;
        let mean = y.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = y
            .iter()
            .map(|&v| (v as f64 - mean) * (v as f64 - mean))
            .sum::<f64>()
            / n;
        let inv = 1.0 / (var + 1e-5).sqrt();
        for ((v, g), b) in y.iter_mut().zip(&gamma.data).zip(&beta.data) {
            *v = ((*v as f64 - mean) * inv * *g as f64 + *b as f64) as f32;
        }
    });
    Ok(out)
}

/// GELU, tanh form (PyTorch's `approximate='tanh'`): 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))), the
/// reference of the tensor-core path's GEMM epilogues (within 4.7e-4 absolute of [`gelu`]).
pub fn gelu_tanh(x: &Tensor) -> Tensor {
    let c = (2.0f64 / std::f64::consts::PI).sqrt();
    let data = x
        .data
        .iter()
        .map(|&v| {
            let v = v as f64;
            (0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())) as f32
        })
        .collect();
    Tensor {
        shape: x.shape.clone(),
        data,
    }
}

/// Exact GELU: 0.5 x (1 + erf(x/√2)).
pub fn gelu(x: &Tensor) -> Tensor {
    let data = x
        .data
        .iter()
        .map(|&v| 0.5 * v * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2)))
        .collect();
    Tensor {
        shape: x.shape.clone(),
        data,
    }
}

/// Scaled dot-product attention per head: q [B, H, Nq, Dh], k and v [B, H, Nk, Dh] -> [B, H, Nq, Dh],
/// scale 1/√Dh, softmax over keys (Nq and Nk may differ).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    const OP: &str = "attention";
    let [b, h, nq, dh] = dims4(OP, "q", q)?;
    let [kb, kh, nk, kd] = dims4(OP, "k", k)?;
    if [kb, kh, kd] != [b, h, dh] {
        return Err(shape_err(
            OP,
            format!("k {:?} does not match q {:?}", k.shape, q.shape),
        ));
    }
    if v.shape != k.shape {
        return Err(shape_err(
            OP,
            format!("v {:?} differs from k {:?}", v.shape, k.shape),
        ));
    }
    if nk == 0 && nq > 0 {
        return Err(shape_err(OP, "no keys to attend to".into()));
    }
    let scale = 1.0 / (dh as f64).sqrt();
    let mut out = Tensor::zeros(&q.shape);
    if dh == 0 {
        return Ok(out);
    }
    par_chunks(&mut out.data, dh, b * h * nq * nk * dh * 2, |row, y| {
        let bh = row / nq.max(1);
        let qr = &q.data[row * dh..(row + 1) * dh];
        let kk = &k.data[bh * nk * dh..(bh + 1) * nk * dh];
        let vv = &v.data[bh * nk * dh..(bh + 1) * nk * dh];
        let scores: Vec<f64> = kk
            .chunks_exact(dh)
            .map(|kr| {
                qr.iter()
                    .zip(kr)
                    .map(|(a, c)| *a as f64 * *c as f64)
                    .sum::<f64>()
                    * scale
            })
            .collect();
        let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        let mut acc = vec![0f64; dh];
        for (ej, vr) in e.iter().zip(vv.chunks_exact(dh)) {
            for (a, vx) in acc.iter_mut().zip(vr) {
                *a += ej * *vx as f64;
            }
        }
        for (o, a) in y.iter_mut().zip(&acc) {
            *o = (a / sum) as f32;
        }
    });
    Ok(out)
}

/// Multi-head self-attention block of the reference (`Attention.forward`): x [B, N, D], w_qkv [3D, D],
/// b_qkv [3D], w_out [D, D], b_out [D], `heads` heads.
pub fn multi_head_attention(
    x: &Tensor,
    w_qkv: &Tensor,
    b_qkv: &Tensor,
    w_out: &Tensor,
    b_out: &Tensor,
    heads: usize,
) -> Result<Tensor> {
    const OP: &str = "multi_head_attention";
    let [b, n, d] = dims3(OP, "x", x)?;
    if heads == 0 || d % heads != 0 {
        return Err(shape_err(
            OP,
            format!("embed dim {d} is not divisible by {heads} heads"),
        ));
    }
    if w_qkv.shape != [3 * d, d] || w_out.shape != [d, d] {
        return Err(shape_err(
            OP,
            format!(
                "w_qkv {:?} / w_out {:?} do not fit embed dim {d}",
                w_qkv.shape, w_out.shape
            ),
        ));
    }
    check_vec(OP, "bias_qkv", b_qkv, 3 * d)?;
    check_vec(OP, "bias_out", b_out, d)?;
    let dh = d / heads;
    let qkv = linear(x, w_qkv, Some(b_qkv))?;
    // view(B, N, 3, H, Dh).permute(2, 0, 3, 1, 4)
    let mut parts = [
        Tensor::zeros(&[b, heads, n, dh]),
        Tensor::zeros(&[b, heads, n, dh]),
        Tensor::zeros(&[b, heads, n, dh]),
    ];
    for bi in 0..b {
        for t in 0..n {
            let row = &qkv.data[(bi * n + t) * 3 * d..(bi * n + t + 1) * 3 * d];
            for (which, part) in parts.iter_mut().enumerate() {
                for hi in 0..heads {
                    let dst = ((bi * heads + hi) * n + t) * dh;
                    part.data[dst..dst + dh]
                        .copy_from_slice(&row[which * d + hi * dh..which * d + (hi + 1) * dh]);
                }
            }
        }
    }
    let a = attention(&parts[0], &parts[1], &parts[2])?;
    // transpose(1, 2).reshape(B, N, D)
    let mut merged = Tensor::zeros(&[b, n, d]);
    for bi in 0..b {
        for hi in 0..heads {
            for t in 0..n {
                let src = ((bi * heads + hi) * n + t) * dh;
                let dst = (bi * n + t) * d + hi * dh;
                merged.data[dst..dst + dh].copy_from_slice(&a.data[src..src + dh]);
            }
        }
    }
    linear(&merged, w_out, Some(b_out))
}

/// Per-channel mean and unbiased variance over the tokens of one sample [N, D].
fn token_stats(x: &[f32], n: usize, d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0f64; d];
    for row in x.chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0f64; d];
    for row in x.chunks_exact(d) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (*v as f64 - m) * (*v as f64 - m);
        }
    }
    var.iter_mut().for_each(|s| *s /= (n - 1) as f64);
    (mean, var)
}

/// AdaIN over tokens: c [B, Nc, D], s [B, Ns, D]; per sample and channel, unbiased variance + 1e-5.
/// A style batch of 1 is broadcast over the content batch. Both token counts must be at least 2 (the
/// unbiased variance of one token is undefined).
pub fn adain(c: &Tensor, s: &Tensor) -> Result<Tensor> {
    const OP: &str = "adain";
    let [b, nc, d] = dims3(OP, "content", c)?;
    let [bs, ns, ds] = dims3(OP, "style", s)?;
    if ds != d || (bs != b && bs != 1) {
        return Err(shape_err(
            OP,
            format!("style {:?} does not match content {:?}", s.shape, c.shape),
        ));
    }
    if nc < 2 || ns < 2 {
        return Err(shape_err(
            OP,
            format!("needs at least 2 tokens in content and style (got {nc} and {ns})"),
        ));
    }
    let mut out = c.clone();
    if d == 0 {
        return Ok(out);
    }
    for bi in 0..b {
        let cx = &c.data[bi * nc * d..(bi + 1) * nc * d];
        let sb = if bs == 1 { 0 } else { bi };
        let (cm, cv) = token_stats(cx, nc, d);
        let (sm, sv) = token_stats(&s.data[sb * ns * d..(sb + 1) * ns * d], ns, d);
        let scale: Vec<f64> = cv
            .iter()
            .zip(&sv)
            .map(|(cv, sv)| (sv + 1e-5).sqrt() / (cv + 1e-5).sqrt())
            .collect();
        for row in out.data[bi * nc * d..(bi + 1) * nc * d].chunks_exact_mut(d) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = ((*v as f64 - cm[j]) * scale[j] + sm[j]) as f32;
            }
        }
    }
    Ok(out)
}

/// Sinusoidal positions [n, d]: pe[t, 2i] = sin(t / 10000^(2i/d)), pe[t, 2i+1] = cos(same).
/// The frequencies are computed in f32 as the reference does (`exp(2i · (−ln 10000 / d))`).
pub fn sinusoidal(n: usize, d: usize) -> Tensor {
    let mut pe = Tensor::zeros(&[n, d]);
    let k = -(10000f32.ln()) / d as f32;
    let div: Vec<f32> = (0..d.div_ceil(2))
        .map(|i| ((2 * i) as f32 * k).exp())
        .collect();
    for (t, row) in pe.data.chunks_exact_mut(d.max(1)).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let arg = (t as f32 * div[j / 2]) as f64;
            *v = if j % 2 == 0 { arg.sin() } else { arg.cos() } as f32;
        }
    }
    pe
}

/// Patch embedding: Conv2d(3, D, p, stride p) then flatten to tokens [B, (H/p)(W/p), D].
pub fn patch_embed(img: &Tensor, w: &Tensor, b: &Tensor, p: usize) -> Result<Tensor> {
    const OP: &str = "patch_embed";
    let [bn, c, h, wd] = dims4(OP, "image", img)?;
    let [d, wc, r, s] = dims4(OP, "weight", w)?;
    if p == 0 || [wc, r, s] != [c, p, p] {
        return Err(shape_err(
            OP,
            format!("weight {:?} is not [D, {c}, {p}, {p}]", w.shape),
        ));
    }
    check_vec(OP, "bias", b, d)?;
    if h % p != 0 || wd % p != 0 || h == 0 || wd == 0 {
        return Err(shape_err(
            OP,
            format!("image {h}x{wd} is not a non-empty multiple of the patch size {p}"),
        ));
    }
    let (hp, wp) = (h / p, wd / p);
    let plen = c * p * p;
    // Patches as rows [B * hp * wp, C * p * p] in the weight's (c, r, s) order, then one matrix product.
    let mut patches = Tensor::zeros(&[bn, hp * wp, plen]);
    for bi in 0..bn {
        for y in 0..hp {
            for x in 0..wp {
                let dst = ((bi * hp + y) * wp + x) * plen;
                for ci in 0..c {
                    for ri in 0..p {
                        let src = ((bi * c + ci) * h + y * p + ri) * wd + x * p;
                        let o = dst + (ci * p + ri) * p;
                        patches.data[o..o + p].copy_from_slice(&img.data[src..src + p]);
                    }
                }
            }
        }
    }
    let wf = Tensor {
        shape: vec![d, plen],
        data: w.data.clone(),
    };
    linear(&patches, &wf, Some(b))
}

/// Unpatch: tokens [B, hp*wp, p*p*3] (already through `to_pixels`) -> image [B, 3, hp*p, wp*p], the
/// reference's reshape(B, hp, wp, p, p, 3).permute(0, 5, 1, 3, 2, 4).
pub fn unpatch(tokens: &Tensor, hp: usize, wp: usize, p: usize) -> Result<Tensor> {
    const OP: &str = "unpatch";
    let [b, n, f] = dims3(OP, "tokens", tokens)?;
    if n != hp * wp || f != p * p * 3 {
        return Err(shape_err(
            OP,
            format!(
                "tokens {:?} are not [B, {hp}*{wp}, {p}*{p}*3]",
                tokens.shape
            ),
        ));
    }
    let (h, w) = (hp * p, wp * p);
    let mut out = Tensor::zeros(&[b, 3, h, w]);
    for bi in 0..b {
        for y in 0..hp {
            for x in 0..wp {
                let tok =
                    &tokens.data[((bi * n) + y * wp + x) * f..((bi * n) + y * wp + x + 1) * f];
                for i in 0..p {
                    for j in 0..p {
                        for ch in 0..3 {
                            out.data[((bi * 3 + ch) * h + y * p + i) * w + x * p + j] =
                                tok[(i * p + j) * 3 + ch];
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}
