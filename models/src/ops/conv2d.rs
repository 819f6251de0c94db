//! Direct 2-D convolution on the CPU.
//!
//! The (optionally upsampled and) padded input is first laid out per channel as
//! `[C][Hp][stride phases][Wj]` (column `j * stride + phase` of the padded row), so that for every kernel tap
//! `(r, s)` the input values an output row needs form one contiguous slice. The innermost loop is then an
//! AXPY over an output row, for a block of output channels at once, which the compiler vectorises.
//! Work is split over (sample, band of output rows) with scoped threads.
use super::{shape_err, Padding};
use crate::{Result, Tensor};

const OP: &str = "conv2d";
/// Output channels computed together (one input row load feeds this many accumulators).
const KB: usize = 4;

/// Maps a coordinate of the padded (upsampled) input to the source coordinate, `None` for zero padding.
fn source_index(u: isize, len_up: isize, pad: Padding, up: usize) -> Option<usize> {
    let v = match pad {
        Padding::Reflect(_) => {
            let mut v = u;
            if v < 0 {
                v = -v;
            }
            if v >= len_up {
                v = 2 * (len_up - 1) - v;
            }
            v
        }
        Padding::Zero(_) => {
            if u < 0 || u >= len_up {
                return None;
            }
            u
        }
    };
    Some(v as usize / up)
}

pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: Padding,
    upsample: usize,
) -> Result<Tensor> {
    let [n, c, h, wd] = super::dims4(OP, "input", x)?;
    let [k, cw, r, s] = super::dims4(OP, "weight", w)?;
    if cw != c {
        return Err(shape_err(
            OP,
            format!(
                "weight {:?} expects {cw} input channels, input {:?} has {c}",
                w.shape, x.shape
            ),
        ));
    }
    if let Some(b) = b {
        if b.shape != [k] {
            return Err(shape_err(
                OP,
                format!("bias shape {:?}, expected [{k}]", b.shape),
            ));
        }
    }
    if stride == 0 || upsample == 0 {
        return Err(shape_err(
            OP,
            format!("stride ({stride}) and upsample ({upsample}) must be at least 1"),
        ));
    }
    if r == 0 || s == 0 {
        return Err(shape_err(OP, format!("empty kernel {:?}", w.shape)));
    }
    let (hu, wu) = (h * upsample, wd * upsample);
    let p = match pad {
        Padding::Reflect(p) => {
            if p >= hu || p >= wu {
                return Err(shape_err(
                    OP,
                    format!("reflection padding {p} needs an input larger than {p}, got {hu}x{wu}"),
                ));
            }
            p
        }
        Padding::Zero(p) => p,
    };
    let (hp, wp) = (hu + 2 * p, wu + 2 * p);
    if hp < r || wp < s {
        return Err(shape_err(
            OP,
            format!("padded input {hp}x{wp} is smaller than the kernel {r}x{s}"),
        ));
    }
    let (oh, ow) = ((hp - r) / stride + 1, (wp - s) / stride + 1);
    let mut out = Tensor::zeros(&[n, k, oh, ow]);
    if n == 0 || k == 0 || c == 0 {
        if let Some(b) = b {
            for (plane, bv) in out.data.chunks_mut(oh * ow).zip(b.data.iter().cycle()) {
                plane.fill(*bv);
            }
        }
        return Ok(out);
    }

    // Padded rows/columns -> source indices, computed once.
    let rows: Vec<Option<usize>> = (0..hp)
        .map(|i| source_index(i as isize - p as isize, hu as isize, pad, upsample))
        .collect();
    let wj = wp.div_ceil(stride);
    // Phase-major column map: [phase][j] -> source column.
    let cols: Vec<Option<usize>> = (0..stride)
        .flat_map(|ph| (0..wj).map(move |j| (ph, j)))
        .map(|(ph, j)| {
            let col = j * stride + ph;
            if col < wp {
                source_index(col as isize - p as isize, wu as isize, pad, upsample)
            } else {
                None
            }
        })
        .collect();
    let row_len = stride * wj;

    // Weights re-laid as [K blocks][C][R][S][KB] (zero-padded in the last block).
    let kblocks = k.div_ceil(KB);
    let mut wt = vec![0f32; kblocks * c * r * s * KB];
    for kk in 0..k {
        let (blk, lane) = (kk / KB, kk % KB);
        for ci in 0..c {
            for ri in 0..r {
                for si in 0..s {
                    wt[(((blk * c + ci) * r + ri) * s + si) * KB + lane] =
                        w.data[((kk * c + ci) * r + ri) * s + si];
                }
            }
        }
    }
    let bias: Vec<f32> = match b {
        Some(b) => b.data.clone(),
        None => vec![0.0; k],
    };

    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .max(1);
    // Enough work per band to amortise a thread; small convolutions stay on the calling thread.
    let macs = (k * c * r * s * oh * ow) as u64;
    let bands_per_sample = if macs < 2_000_000 {
        1
    } else {
        threads.min(oh).max(1)
    };
    let band = oh.div_ceil(bands_per_sample);

    let mut xs = vec![0f32; c * hp * row_len];
    let geo = Geo {
        c,
        k,
        r,
        s,
        stride,
        oh,
        ow,
        hp,
        row_len,
    };
    for ni in 0..n {
        // Build this sample's padded, phase-split input.
        let src = &x.data[ni * c * h * wd..(ni + 1) * c * h * wd];
        for ci in 0..c {
            for (i, ri) in rows.iter().enumerate() {
                let dst = &mut xs[(ci * hp + i) * row_len..(ci * hp + i + 1) * row_len];
                match ri {
                    Some(ri) => {
                        let srow = &src[(ci * h + ri) * wd..(ci * h + ri + 1) * wd];
                        for (d, cm) in dst.iter_mut().zip(&cols) {
                            *d = cm.map_or(0.0, |cj| srow[cj]);
                        }
                    }
                    None => dst.fill(0.0),
                }
            }
        }
        let out_n = &mut out.data[ni * k * oh * ow..(ni + 1) * k * oh * ow];
        let bands: Vec<(usize, usize)> = (0..oh)
            .step_by(band.max(1))
            .map(|p0| (p0, (p0 + band).min(oh)))
            .collect();
        if bands.len() == 1 {
            let buf = conv_band(&geo, &xs, &wt, &bias, 0, oh);
            scatter(out_n, &buf, &geo, 0, oh);
        } else {
            let results: Vec<(usize, usize, Vec<f32>)> = std::thread::scope(|sc| {
                let handles: Vec<_> = bands
                    .iter()
                    .map(|&(p0, p1)| {
                        let (geo, xs, wt, bias) = (&geo, &xs, &wt, &bias);
                        sc.spawn(move || (p0, p1, conv_band(geo, xs, wt, bias, p0, p1)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            });
            for (p0, p1, buf) in results {
                scatter(out_n, &buf, &geo, p0, p1);
            }
        }
    }
    Ok(out)
}

struct Geo {
    c: usize,
    k: usize,
    r: usize,
    s: usize,
    stride: usize,
    oh: usize,
    ow: usize,
    hp: usize,
    row_len: usize,
}

/// Copies a band buffer [K][p1-p0][OW] into the sample's output [K][OH][OW].
fn scatter(out_n: &mut [f32], buf: &[f32], g: &Geo, p0: usize, p1: usize) {
    let rows = p1 - p0;
    for kk in 0..g.k {
        let dst = &mut out_n[(kk * g.oh + p0) * g.ow..(kk * g.oh + p1) * g.ow];
        dst.copy_from_slice(&buf[kk * rows * g.ow..(kk + 1) * rows * g.ow]);
    }
}

/// Output rows p0..p1 of every output channel: returns [K][p1-p0][OW].
fn conv_band(g: &Geo, xs: &[f32], wt: &[f32], bias: &[f32], p0: usize, p1: usize) -> Vec<f32> {
    let (c, r, s, ow, st) = (g.c, g.r, g.s, g.ow, g.stride);
    let rows = p1 - p0;
    let mut buf = vec![0f32; g.k * rows * ow];
    let mut acc = vec![0f32; KB * ow];
    let wj = g.row_len / st;
    for p in p0..p1 {
        for blk in 0..g.k.div_ceil(KB) {
            let (a0, rest) = acc.split_at_mut(ow);
            let (a1, rest) = rest.split_at_mut(ow);
            let (a2, a3) = rest.split_at_mut(ow);
            for lane in 0..KB {
                let kk = blk * KB + lane;
                let bv = if kk < g.k { bias[kk] } else { 0.0 };
                [&mut *a0, &mut *a1, &mut *a2, &mut *a3][lane].fill(bv);
            }
            for ci in 0..c {
                for ri in 0..r {
                    let row_i = p * st + ri;
                    let xrow =
                        &xs[(ci * g.hp + row_i) * g.row_len..(ci * g.hp + row_i + 1) * g.row_len];
                    let wrow = &wt[((blk * c + ci) * r + ri) * s * KB
                        ..((blk * c + ci) * r + ri + 1) * s * KB];
                    for si in 0..s {
                        let start = (si % st) * wj + si / st;
                        let xv = &xrow[start..start + ow];
                        let wk = &wrow[si * KB..si * KB + KB];
                        axpy4(a0, a1, a2, a3, xv, [wk[0], wk[1], wk[2], wk[3]]);
                    }
                }
            }
            for lane in 0..KB {
                let kk = blk * KB + lane;
                if kk < g.k {
                    let src = [&*a0, &*a1, &*a2, &*a3][lane];
                    buf[(kk * rows + (p - p0)) * ow..(kk * rows + (p - p0) + 1) * ow]
                        .copy_from_slice(src);
                }
            }
        }
    }
    buf
}

#[inline(always)]
fn axpy4(a0: &mut [f32], a1: &mut [f32], a2: &mut [f32], a3: &mut [f32], x: &[f32], w: [f32; 4]) {
    let n = x.len();
    let (a0, a1, a2, a3) = (&mut a0[..n], &mut a1[..n], &mut a2[..n], &mut a3[..n]);
    for q in 0..n {
        let v = x[q];
        a0[q] += w[0] * v;
        a1[q] += w[1] * v;
        a2[q] += w[2] * v;
        a3[q] += w[3] * v;
    }
}
