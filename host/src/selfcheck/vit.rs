//! Self-checks of the StyleViT kernels (linear, layer_norm, attention, adain, patch embedding, ...).
//!
//! Every GPU output is poisoned with 0xff bytes (NaN) before the launch, so an element the kernel fails
//! to write fails the comparison. Big attention cases compare a subset of query rows (the first and last
//! 80, which include a full tile, a tile boundary and the partial tail tile): attention rows are
//! independent, so the CPU reference runs on just those queries against all keys, which keeps its cost
//! to well under a second for N = 5000.
use models::ops::{self, Padding};
use models::style_vit::Block;
use models::{StyleVit, StyleVitConfig, Tensor};

use super::{catch, compare, download, poisoned, random, Check, CheckResult, Rng64, Tolerance};
use crate::error::Result;
use crate::gpu::half::round_f16;
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::nets::GpuStyleVit;
use crate::ops::adain::adain;
use crate::ops::attention::{attention, attention_qkv, Heads};
use crate::ops::layer_norm::layer_norm;
use crate::ops::linear::{linear_ex, Epilogue};
use crate::ops::patch::{patch_embed, patch_im2col, unpatch_tail};

pub fn checks() -> Vec<Check> {
    vec![
        Check {
            op: "linear",
            run: check_linear,
        },
        Check {
            op: "layer_norm",
            run: check_layer_norm,
        },
        Check {
            op: "attention",
            run: check_attention,
        },
        Check {
            op: "adain",
            run: check_adain,
        },
        Check {
            op: "patch",
            run: check_patch,
        },
        Check {
            op: "style_vit",
            run: check_style_vit,
        },
    ]
}

fn up(t: &Tensor) -> Result<DeviceTensor> {
    DeviceTensor::from_f32(&t.shape, &t.data, Layout::RowMajor)
}

// ---------------------------------------------------------------- linear
#[derive(Clone, Copy)]
enum Res {
    None,
    /// Residual with this many rows (dividing M), broadcast over the rest.
    Rows(usize),
}

fn check_linear(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let cases: [(usize, usize, usize, bool, bool, Res); 8] = [
        (1, 1, 1, true, false, Res::None),
        (67, 45, 93, true, false, Res::None),
        (130, 200, 257, true, true, Res::None),
        (64, 64, 64, true, false, Res::Rows(64)),
        (100, 33, 17, true, true, Res::Rows(25)),
        (5, 130, 700, false, false, Res::None),
        (129, 65, 15, true, true, Res::Rows(129)),
        (256, 384, 128, true, false, Res::Rows(64)),
    ];
    cases
        .iter()
        .map(|&(m, n, k, bias, gelu, res)| {
            let name = format!(
                "{m}x{n}x{k}{}{}{}",
                if bias { " +b" } else { "" },
                if gelu { " +gelu" } else { "" },
                match res {
                    Res::None => String::new(),
                    Res::Rows(r) => format!(" +res[{r}]"),
                }
            );
            catch("linear", &name, || {
                let x = random(rng, &[m, k], -1.0, 1.0);
                let w = random(rng, &[n, k], -0.5, 0.5);
                let b = random(rng, &[n], -1.0, 1.0);
                let r = match res {
                    Res::None => None,
                    Res::Rows(rr) => Some(random(rng, &[rr, n], -2.0, 2.0)),
                };
                let mut want = ops::linear(&x, &w, bias.then_some(&b))?;
                if gelu {
                    want = ops::gelu(&want);
                }
                if let Some(r) = &r {
                    let rn = r.numel();
                    for (i, v) in want.data.iter_mut().enumerate() {
                        *v += r.data[i % rn];
                    }
                }
                let (xd, wd, bd) = (up(&x)?, up(&w)?, up(&b)?);
                let rd = r.as_ref().map(up).transpose()?;
                let mut y = poisoned(&[m, n], DType::F32, Layout::RowMajor)?;
                let ep = Epilogue {
                    bias: bias.then_some(&bd),
                    gelu,
                    residual: rd.as_ref(),
                };
                linear_ex(gpu, &xd, &wd, ep, &mut y)?;
                Ok(compare(
                    "linear",
                    &name,
                    &download(gpu, &y)?,
                    &want.data,
                    Tolerance::F32,
                ))
            })
        })
        .collect()
}

// ---------------------------------------------------------------- layer_norm
fn check_layer_norm(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let cases = [
        (33, 128, true),
        (17, 512, true),
        (9, 768, true),
        (41, 97, true),
        (8, 128, false),
        (3, 1, false),
    ];
    cases
        .iter()
        .map(|&(rows, d, with_res)| {
            let name = format!("{rows}x{d}{}", if with_res { " +res" } else { "" });
            catch("layer_norm", &name, || {
                let x = random(rng, &[rows, d], -2.0, 3.0);
                let r = random(rng, &[rows, d], -1.0, 1.0);
                let g = random(rng, &[d], 0.5, 1.5);
                let b = random(rng, &[d], -0.5, 0.5);
                let sum = if with_res {
                    ops::add(&x, &r)?
                } else {
                    x.clone()
                };
                let want = ops::layer_norm(&sum, &g, &b)?;
                let (xd, rd, gd, bd) = (up(&x)?, up(&r)?, up(&g)?, up(&b)?);
                let mut y = poisoned(&[rows, d], DType::F32, Layout::RowMajor)?;
                layer_norm(gpu, &xd, with_res.then_some(&rd), &gd, &bd, &mut y)?;
                Ok(compare(
                    "layer_norm",
                    &name,
                    &download(gpu, &y)?,
                    &want.data,
                    Tolerance::F32,
                ))
            })
        })
        .collect()
}

// ---------------------------------------------------------------- attention
/// Query rows compared against the CPU: all of them up to 300, else the first and last 80.
fn rows_to_check(nq: usize) -> Vec<usize> {
    if nq <= 300 {
        (0..nq).collect()
    } else {
        (0..80).chain(nq - 80..nq).collect()
    }
}

/// Columns `col + h·dh .. + dh` of rows `rows` of a token-major [B, N, C] tensor as [B, H, rows, dh].
fn gather_heads(t: &Tensor, col: usize, heads: usize, dh: usize, rows: &[usize]) -> Tensor {
    let (b, n, c) = (t.shape[0], t.shape[1], t.shape[2]);
    let mut out = Vec::with_capacity(b * heads * rows.len() * dh);
    for bb in 0..b {
        for h in 0..heads {
            for &r in rows {
                let base = (bb * n + r) * c + col + h * dh;
                out.extend_from_slice(&t.data[base..base + dh]);
            }
        }
    }
    Tensor::new(&[b, heads, rows.len(), dh], out)
}

/// GPU output o [B, Nq, H·dh] at `rows`, in the CPU's [B, H, rows, dh] order.
fn gather_output(
    o: &[f32],
    b: usize,
    nq: usize,
    heads: usize,
    dh: usize,
    rows: &[usize],
) -> Vec<f32> {
    let d = heads * dh;
    let mut out = Vec::with_capacity(b * heads * rows.len() * dh);
    for bb in 0..b {
        for h in 0..heads {
            for &r in rows {
                let base = (bb * nq + r) * d + h * dh;
                out.extend_from_slice(&o[base..base + dh]);
            }
        }
    }
    out
}

/// Self-attention from a fused QKV buffer [B, N, 3D].
fn attention_self_case(
    gpu: &Gpu,
    rng: &mut Rng64,
    b: usize,
    heads: usize,
    n: usize,
    dh: usize,
) -> CheckResult {
    let name = format!("self B{b} H{heads} N{n} dh{dh}");
    catch("attention", &name, || {
        let d = heads * dh;
        let qkv = random(rng, &[b, n, 3 * d], -2.0, 2.0);
        let rows = rows_to_check(n);
        let all: Vec<usize> = (0..n).collect();
        let q = gather_heads(&qkv, 0, heads, dh, &rows);
        let k = gather_heads(&qkv, d, heads, dh, &all);
        let v = gather_heads(&qkv, 2 * d, heads, dh, &all);
        let want = ops::attention(&q, &k, &v)?;
        let qkv_d = up(&qkv)?;
        let mut o = poisoned(&[b, n, d], DType::F32, Layout::RowMajor)?;
        attention_qkv(gpu, &qkv_d, heads, &mut o)?;
        let got = gather_output(&download(gpu, &o)?, b, n, heads, dh, &rows);
        Ok(compare(
            "attention",
            &name,
            &got,
            &want.data,
            Tolerance::F32_LOOSE,
        ))
    })
}

/// Cross attention with Nq != Nk: q [B, Nq, D + 5] read from column 3 (exercises offsets and strides),
/// k and v from one [B, Nk, 2D] buffer.
fn attention_cross_case(
    gpu: &Gpu,
    rng: &mut Rng64,
    b: usize,
    heads: usize,
    nq: usize,
    nk: usize,
    dh: usize,
) -> CheckResult {
    let name = format!("cross B{b} H{heads} Nq{nq} Nk{nk} dh{dh}");
    catch("attention", &name, || {
        let d = heads * dh;
        let qt = random(rng, &[b, nq, d + 5], -2.0, 2.0);
        let kv = random(rng, &[b, nk, 2 * d], -2.0, 2.0);
        let rows = rows_to_check(nq);
        let all: Vec<usize> = (0..nk).collect();
        let q = gather_heads(&qt, 3, heads, dh, &rows);
        let k = gather_heads(&kv, 0, heads, dh, &all);
        let v = gather_heads(&kv, d, heads, dh, &all);
        let want = ops::attention(&q, &k, &v)?;
        let (qd, kvd) = (up(&qt)?, up(&kv)?);
        let mut o = poisoned(&[b, nq, d], DType::F32, Layout::RowMajor)?;
        attention(
            gpu,
            Heads { t: &qd, col: 3 },
            Heads { t: &kvd, col: 0 },
            Heads { t: &kvd, col: d },
            heads,
            &mut o,
        )?;
        let got = gather_output(&download(gpu, &o)?, b, nq, heads, dh, &rows);
        Ok(compare(
            "attention",
            &name,
            &got,
            &want.data,
            Tolerance::F32_LOOSE,
        ))
    })
}

fn check_attention(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for &dh in &[32, 64, 128] {
        for &n in &[1, 2, 7, 64, 65, 127, 1000, 4099] {
            let b = if n <= 127 { 2 } else { 1 };
            let heads = if n <= 1000 { 2 } else { 1 };
            out.push(attention_self_case(gpu, rng, b, heads, n, dh));
        }
    }
    out.push(attention_self_case(gpu, rng, 1, 1, 5000, 64));
    for &(nq, nk, dh) in &[
        (37, 300, 64),
        (300, 37, 32),
        (37, 300, 128),
        (1, 5000, 64),
        (130, 1, 128),
        (65, 64, 32),
    ] {
        out.push(attention_cross_case(gpu, rng, 2, 2, nq, nk, dh));
    }
    out
}

// ---------------------------------------------------------------- adain
fn check_adain(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    // (B, style B, Nc, Ns, D, alpha)
    let cases = [
        (2, 2, 50, 40, 70, 1.0f32),
        (2, 2, 50, 40, 70, 0.5),
        (3, 1, 65, 33, 128, 0.7),
        (1, 1, 2, 2, 5, 1.0),
        (2, 1, 300, 9, 64, 1.0),
    ];
    cases
        .iter()
        .map(|&(b, bs, nc, ns, d, alpha)| {
            let name = format!("B{b} Bs{bs} Nc{nc} Ns{ns} D{d} a{alpha}");
            catch("adain", &name, || {
                let c = random(rng, &[b, nc, d], -1.0, 2.0);
                let s = random(rng, &[bs, ns, d], -3.0, 1.0);
                let s_full = if bs == b {
                    s.clone()
                } else {
                    Tensor::new(
                        &[b, ns, d],
                        s.data.iter().copied().cycle().take(b * ns * d).collect(),
                    )
                };
                let t = ops::adain(&c, &s_full)?;
                let want: Vec<f32> = t
                    .data
                    .iter()
                    .zip(&c.data)
                    .map(|(t, c)| alpha * t + (1.0 - alpha) * c)
                    .collect();
                let (cd, sd) = (up(&c)?, up(&s)?);
                let mut o = poisoned(&[b, nc, d], DType::F32, Layout::RowMajor)?;
                adain(gpu, &cd, &sd, alpha, &mut o)?;
                Ok(compare(
                    "adain",
                    &name,
                    &download(gpu, &o)?,
                    &want,
                    Tolerance::F32,
                ))
            })
        })
        .collect()
}

// ---------------------------------------------------------------- patch
fn check_patch(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    let mut out = Vec::new();
    // Patch embedding (+ positions broadcast over the batch).
    for &(b, h, w, p, d, with_pos) in &[
        (2usize, 24usize, 40usize, 8usize, 20usize, true),
        (1, 8, 12, 4, 7, false),
        (3, 32, 32, 16, 64, true),
    ] {
        let name = format!(
            "embed B{b} {h}x{w} p{p} D{d}{}",
            if with_pos { " +pos" } else { "" }
        );
        out.push(catch("patch", &name, || {
            let img = random(rng, &[b, 3, h, w], 0.0, 1.0);
            let wt = random(rng, &[d, 3, p, p], -0.2, 0.2);
            let bias = random(rng, &[d], -0.5, 0.5);
            let n = (h / p) * (w / p);
            let mut want = ops::patch_embed(&img, &wt, &bias, p)?;
            if with_pos {
                let pe = ops::sinusoidal(n, d);
                for (i, v) in want.data.iter_mut().enumerate() {
                    *v += pe.data[i % (n * d)];
                }
            }
            let imgd = up(&img)?;
            let wd = DeviceTensor::from_f32(&[d, 3 * p * p], &wt.data, Layout::RowMajor)?;
            let bd = up(&bias)?;
            let pos = up(&ops::sinusoidal(n, d))?;
            let mut cols = poisoned(&[b * n, 3 * p * p], DType::F32, Layout::RowMajor)?;
            let mut o = poisoned(&[b, n, d], DType::F32, Layout::RowMajor)?;
            patch_embed(
                gpu,
                &imgd,
                &wd,
                &bd,
                with_pos.then_some(&pos),
                p,
                &mut cols,
                &mut o,
            )?;
            Ok(compare(
                "patch",
                &name,
                &download(gpu, &o)?,
                &want.data,
                Tolerance::F32,
            ))
        }));
    }
    // The f16 im2col of the fast StyleViT against a host gather of the same values rounded to f16: the
    // 16-byte path (p % 8 == 0) and the element path.
    for &(b, h, w, p) in &[(2usize, 24usize, 40usize, 8usize), (1, 8, 12, 4), (3, 32, 32, 16), (1, 6, 9, 3)] {
        let name = format!("im2col f16 B{b} {h}x{w} p{p}");
        out.push(catch("patch", &name, || {
            let img = random(rng, &[b, 3, h, w], -2.0, 2.0);
            let (hp, wp) = (h / p, w / p);
            let mut want = Vec::with_capacity(img.data.len());
            for bb in 0..b {
                for py in 0..hp {
                    for px in 0..wp {
                        for c in 0..3 {
                            for ky in 0..p {
                                for kx in 0..p {
                                    want.push(round_f16(img.data[((bb * 3 + c) * h + py * p + ky) * w + px * p + kx]));
                                }
                            }
                        }
                    }
                }
            }
            let mut cols = poisoned(&[b * hp * wp, 3 * p * p], DType::F16, Layout::RowMajor)?;
            patch_im2col(gpu, &up(&img)?, p, &mut cols)?;
            Ok(compare("patch", &name, &download(gpu, &cols)?, &want, Tolerance { rel_l2: 0.0, max_rel: 0.0 }))
        }));
    }
    // Unpatch + final_conv (3x3 zero-padded conv, ReLU, 1x1 conv) fused, against the CPU composition.
    // Cases: several patches and batch, one column of patches, 1-pixel patches (every tap crosses a patch),
    // a height that is not a multiple of the kernel's 4-row band, a width over one 256-thread block.
    for &(b, hp, wp, p) in &[
        (2usize, 3usize, 5usize, 8usize),
        (1, 2, 1, 32),
        (2, 1, 1, 1),
        (1, 4, 3, 2),
        (2, 3, 2, 3),
        (1, 1, 20, 16),
    ] {
        let name = format!("unpatch_tail B{b} {hp}x{wp} p{p}");
        out.push(catch("patch", &name, || {
            let tok = random(rng, &[b, hp * wp, 3 * p * p], -1.0, 1.0);
            let w0 = random(rng, &[3, 3, 3, 3], -0.5, 0.5);
            let b0 = random(rng, &[3], -0.3, 0.3);
            let w2 = random(rng, &[3, 3, 1, 1], -1.0, 1.0);
            let b2 = random(rng, &[3], -0.5, 0.5);
            let img = ops::unpatch(&tok, hp, wp, p)?;
            let h = ops::conv2d(&img, &w0, Some(&b0), 1, Padding::Zero(1), 1)?;
            let want = ops::conv2d(&ops::relu(&h), &w2, Some(&b2), 1, Padding::Zero(0), 1)?;
            let (td, w0d, b0d, w2d, b2d) = (up(&tok)?, up(&w0)?, up(&b0)?, up(&w2)?, up(&b2)?);
            let mut y = poisoned(&[b, 3, hp * p, wp * p], DType::F32, Layout::RowMajor)?;
            unpatch_tail(gpu, &td, hp, wp, p, (&w0d, &b0d), (&w2d, &b2d), &mut y)?;
            Ok(compare(
                "patch",
                &name,
                &download(gpu, &y)?,
                &want.data,
                Tolerance::F32,
            ))
        }));
    }
    out
}

// ---------------------------------------------------------------- whole network
fn xavier(rng: &mut Rng64, shape: &[usize], fan_in: usize, fan_out: usize) -> Tensor {
    let a = (6.0 / (fan_in + fan_out) as f32).sqrt();
    random(rng, shape, -a, a)
}

fn random_block(rng: &mut Rng64, d: usize, f: usize) -> Block {
    Block {
        w_qkv: xavier(rng, &[3 * d, d], d, 3 * d),
        b_qkv: random(rng, &[3 * d], -0.1, 0.1),
        w_out: xavier(rng, &[d, d], d, d),
        b_out: random(rng, &[d], -0.1, 0.1),
        fc1_w: xavier(rng, &[f, d], d, f),
        fc1_b: random(rng, &[f], -0.1, 0.1),
        fc2_w: xavier(rng, &[d, f], f, d),
        fc2_b: random(rng, &[d], -0.1, 0.1),
        norm1_w: random(rng, &[d], 0.8, 1.2),
        norm1_b: random(rng, &[d], -0.1, 0.1),
        norm2_w: random(rng, &[d], 0.8, 1.2),
        norm2_b: random(rng, &[d], -0.1, 0.1),
    }
}

/// A small random StyleViT (patch 8, D 64, 2 heads of 32, `blocks` blocks, FFN 128).
pub(crate) fn random_style_vit(rng: &mut Rng64, blocks: usize) -> StyleVit {
    let cfg = StyleVitConfig {
        patch_size: 8,
        embed_dim: 64,
        num_heads: 2,
        num_blocks: blocks,
        ffn_dim: 128,
    };
    let (p, d, f) = (cfg.patch_size, cfg.embed_dim, cfg.ffn_dim);
    let k = 3 * p * p;
    StyleVit {
        cfg,
        patch_w: xavier(rng, &[d, 3, p, p], k, d),
        patch_b: random(rng, &[d], -0.1, 0.1),
        encoder: (0..blocks).map(|_| random_block(rng, d, f)).collect(),
        decoder: (0..blocks).map(|_| random_block(rng, d, f)).collect(),
        to_pixels_w: xavier(rng, &[k, d], d, k),
        to_pixels_b: random(rng, &[k], -0.1, 0.1),
        final0_w: random(rng, &[3, 3, 3, 3], -0.3, 0.3),
        final0_b: random(rng, &[3], -0.1, 0.1),
        final2_w: random(rng, &[3, 3, 1, 1], -0.6, 0.6),
        final2_b: random(rng, &[3], -0.1, 0.1),
    }
}

fn check_style_vit(gpu: &Gpu, rng: &mut Rng64) -> Vec<CheckResult> {
    // (blocks, content shape, style shape, alpha)
    let cases: [(usize, [usize; 4], [usize; 4], f32); 3] = [
        (1, [1, 3, 32, 48], [1, 3, 24, 24], 1.0),
        (1, [1, 3, 32, 48], [1, 3, 24, 24], 0.6),
        (2, [2, 3, 16, 24], [1, 3, 16, 16], 1.0),
    ];
    let mut out = Vec::new();
    for (blocks, cs, ss, alpha) in cases {
        let name = format!("{blocks}blk c{cs:?} s{ss:?} a{alpha}");
        out.push(catch("style_vit", &name, || {
            let net = random_style_vit(rng, blocks);
            let content = random(rng, &cs, 0.0, 1.0);
            let style = random(rng, &ss, 0.0, 1.0);
            let want = net.forward(&content, &style, alpha)?;
            let mut g = GpuStyleVit::new(gpu, &net)?;
            // Run twice: the second call reuses the buffers of the first and must give the same result.
            let first = g.forward(&content, &style, alpha)?;
            let got = g.forward(&content, &style, alpha)?;
            let mut r = compare(
                "style_vit",
                &name,
                &got.data,
                &want.data,
                Tolerance::F32_LOOSE,
            );
            let again = compare(
                "style_vit",
                &name,
                &got.data,
                &first.data,
                Tolerance {
                    rel_l2: 1e-6,
                    max_rel: 1e-5,
                },
            );
            if !again.passed {
                r.passed = false;
                r.detail = format!("second forward differs from the first: {}", again.detail);
            }
            Ok(r)
        }));
    }
    out
}
