//! `self-check` cases of the fast (tensor-core) TransformerNet on real data, and the PSNR metric.
//!
//! Needs the fixtures (`tnet_a.safetensors`, `tnet_a_io.safetensors`) and a folder of photographs:
//! * the fast GPU net on the fixture inputs `input_256` and `input_odd` against PyTorch's stored outputs,
//!   relative L2 ≤ 1e-2 ([`FAST_VS_FIXTURE`]; the 8-bit PSNR is reported too);
//! * every `*.jpg` of the images folder, downscaled so that its longer side is at most
//!   [`IMAGE_LONG_SIDE`], through the fp32 GPU net and the fast GPU net, both quantised to 8 bits as
//!   `stylize` writes them: PSNR(fast, fp32) ≥ [`MIN_PSNR_DB`]; again with `conv2d_wg` forced onto the
//!   residual convs (at these sizes the net would keep them on `conv2d_tc`).
//!
//! The same for the fast StyleViT ([`GpuStyleVitFast`], `vit_nano.safetensors`): the fixture inputs against
//! PyTorch (`vit_nano_io.safetensors`, relative L2 ≤ 1e-2), and every photograph as content (cropped to a
//! multiple of the patch size) with one style image ([`VIT_STYLE`] if present, else the first), fast
//! against the fp32 GPU net, PSNR ≥ [`MIN_PSNR_DB`] on the 8-bit outputs.
//!
//! The image helpers are the caller's ([`ImageIo`]: the CLI passes the ones `stylize` uses), so the check
//! sees images exactly as `stylize` does. Missing inputs are reported as not run, not as failures.
use std::path::{Path, PathBuf};

use models::{StyleVit, StyleVitConfig, Tensor, TransformerNet, Weights};

use super::{compare, errored, CheckResult, Tolerance};
use crate::gpu::Gpu;
use crate::nets::style_vit_fast::GpuStyleVitFast;
use crate::nets::transformer_net_fast::GpuTransformerNetFast;
use crate::nets::{GpuStyleVit, GpuTransformerNet};

/// The op name of every case here (`self-check --filter psnr`).
pub const OP: &str = "psnr";
/// The fast net's 8-bit images against the fp32 net's: the bar.
pub const MIN_PSNR_DB: f64 = 40.0;
/// The fast net against PyTorch's fp32 outputs: the bar (relative L2 only).
pub const FAST_VS_FIXTURE: Tolerance = Tolerance {
    rel_l2: 1e-2,
    max_rel: f64::INFINITY,
};
/// The image cases are judged by PSNR alone; rel L2 is reported, not bounded.
const REPORT_ONLY: Tolerance = Tolerance {
    rel_l2: f64::INFINITY,
    max_rel: f64::INFINITY,
};
/// Photographs are downscaled (never enlarged) so that the longer side is at most this.
pub const IMAGE_LONG_SIDE: u32 = 512;
/// The style image of the StyleViT cases (from the images folder), downscaled to [`VIT_STYLE_SIDE`].
pub const VIT_STYLE: &str = "mosaic.jpg";
pub const VIT_STYLE_SIDE: u32 = 256;

/// Peak signal-to-noise ratio in dB of two 8-bit images (same length, peak 255): 10·log10(255² / MSE);
/// `f64::INFINITY` when they are identical.
pub fn psnr(a: &[u8], b: &[u8]) -> Result<f64, String> {
    if a.len() != b.len() {
        return Err(format!(
            "PSNR of images of {} and {} values",
            a.len(),
            b.len()
        ));
    }
    if a.is_empty() {
        return Err("PSNR of empty images".into());
    }
    let sse: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    Ok(psnr_from_mse(sse / a.len() as f64))
}

/// PSNR in dB of 8-bit data with mean squared error `mse`; `f64::INFINITY` for 0.
pub fn psnr_from_mse(mse: f64) -> f64 {
    if mse <= 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// The caller's image helpers.
pub struct ImageIo {
    /// Decodes an image file, downscales it so that its longer side is at most the given size (never
    /// enlarging), and returns it as a [1, 3, H, W] tensor of 0..255 values.
    pub load: fn(&Path, u32) -> Result<Tensor, String>,
    /// The 8-bit RGB bytes written for a network output: sample 0 cropped to `w` x `h`, clamped to
    /// 0..255 and rounded.
    pub quantize: fn(&Tensor, usize, usize) -> Result<Vec<u8>, String>,
}

/// What the check did: its results, and why parts of it did not run.
#[derive(Default)]
pub struct Report {
    pub results: Vec<CheckResult>,
    pub not_run: Vec<String>,
}

/// `*.jpg` / `*.jpeg` files of `dir` (not recursive), sorted by name.
pub fn jpegs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot list the folder: {e}", dir.display()))?;
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")
                })
        })
        .collect();
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// A fast-vs-PyTorch fixture case: relative L2 within [`FAST_VS_FIXTURE`], the PSNR reported.
fn judge_fixture(case: &str, got: &[f32], want: &[f32], db: f64) -> CheckResult {
    let mut r = compare(OP, case, got, want, FAST_VS_FIXTURE);
    let why = (!r.passed).then(|| r.detail.clone());
    r.detail = detail(db, r.rel_l2, why.as_deref());
    r
}

/// A photograph fast vs fp32: passes when the outputs are finite and the 8-bit PSNR is at least
/// [`MIN_PSNR_DB`]; relative L2 reported.
fn judge_photo(case: &str, got: &[f32], reference: &[f32], db: f64) -> CheckResult {
    let mut r = compare(OP, case, got, reference, REPORT_ONLY);
    let why = if !r.passed {
        Some(r.detail.clone()) // a NaN or infinity in the output
    } else if db < MIN_PSNR_DB {
        Some("PSNR below the bar".to_string())
    } else {
        None
    };
    r.passed = why.is_none();
    r.detail = detail(db, r.rel_l2, why.as_deref());
    r
}

/// The detail line of a case: the numbers, then why it failed when it did.
fn detail(db: f64, rel_l2: f64, why: Option<&str>) -> String {
    let mut s = format!("PSNR {db:.2} dB (bar {MIN_PSNR_DB} dB), rel L2 {rel_l2:.2e}");
    if let Some(w) = why {
        s += &format!("; {w}");
    }
    s
}

/// Runs the cases that the given folders allow; `fixtures` must hold `tnet_a.safetensors` (else nothing
/// runs), `tnet_a_io.safetensors` for the fixture cases, `images` the photographs.
pub fn checks(gpu: &Gpu, fixtures: Option<&Path>, images: Option<&Path>, io: &ImageIo) -> Report {
    let mut rep = tnet_checks(gpu, fixtures, images, io);
    if let Some(dir) = fixtures {
        vit_checks(gpu, dir, images, io, &mut rep);
    }
    rep
}

/// The photographs of `images` (sorted), or why there are none (recorded as not run).
fn image_files(images: Option<&Path>, rep: &mut Report, what: &str) -> Option<Vec<PathBuf>> {
    let Some(images) = images else {
        rep.not_run.push(format!(
            "psnr: {what} image cases: no images folder (--images DIR)"
        ));
        return None;
    };
    if !images.is_dir() {
        rep.not_run.push(format!(
            "psnr: {what} image cases: {} is not a folder",
            images.display()
        ));
        return None;
    }
    match jpegs(images) {
        Ok(f) if f.is_empty() => {
            rep.not_run.push(format!(
                "psnr: {what} image cases: no .jpg files in {}",
                images.display()
            ));
            None
        }
        Ok(f) => Some(f),
        Err(e) => {
            rep.results
                .push(errored(OP, &format!("{what} images (listing)"), e));
            None
        }
    }
}

fn tnet_checks(gpu: &Gpu, fixtures: Option<&Path>, images: Option<&Path>, io: &ImageIo) -> Report {
    let mut rep = Report::default();
    let Some(dir) = fixtures else {
        rep.not_run.push("psnr: needs --fixtures DIR (tnet_a.safetensors, tnet_a_io.safetensors) and a folder of .jpg images".into());
        return rep;
    };
    let weights = dir.join("tnet_a.safetensors");
    if !weights.is_file() {
        rep.not_run
            .push(format!("psnr: {} not found", weights.display()));
        return rep;
    }
    let net = match Weights::load(&weights)
        .map_err(|e| e.to_string())
        .and_then(|w| TransformerNet::new(w).map_err(|e| e.to_string()))
    {
        Ok(n) => n,
        Err(e) => {
            rep.results.push(errored(OP, "tnet_a (loading)", e));
            return rep;
        }
    };
    let mut fast = match GpuTransformerNetFast::new(gpu, &net) {
        Ok(g) => g,
        Err(e) => {
            rep.results.push(errored(OP, "fast net (upload)", e));
            return rep;
        }
    };

    let io_file = dir.join("tnet_a_io.safetensors");
    if io_file.is_file() {
        fixture_cases(&mut fast, &io_file, io, &mut rep.results);
    } else {
        rep.not_run.push(format!(
            "psnr: fixture cases: {} not found",
            io_file.display()
        ));
    }

    let Some(files) = image_files(images, &mut rep, "TransformerNet") else {
        return rep;
    };
    let mut f32net = match GpuTransformerNet::new(gpu, &net) {
        Ok(g) => g,
        Err(e) => {
            rep.results.push(errored(OP, "fp32 net (upload)", e));
            return rep;
        }
    };
    for f in &files {
        rep.results.push(image_case(&mut fast, &mut f32net, f, io, ""));
    }
    // The same photos with the residual blocks off `conv2d_tma` and `conv2d_wg` forced onto their convs
    // (it is opt-in and by default takes them only from about 1024x1024, above these photos' size), so the
    // network path through the cp.async wgmma conv meets the same bar.
    fast.set_conv_tma(false);
    fast.set_conv_wg_min_blocks(0);
    for f in &files {
        rep.results.push(image_case(&mut fast, &mut f32net, f, io, " (conv2d_wg forced)"));
    }
    rep
}

/// The fast net on the fixture inputs against PyTorch's outputs.
fn fixture_cases(
    fast: &mut GpuTransformerNetFast,
    path: &Path,
    io: &ImageIo,
    out: &mut Vec<CheckResult>,
) {
    let tensors = match Weights::load(path) {
        Ok(w) => w.tensors,
        Err(e) => {
            out.push(errored(OP, "tnet_a_io (loading)", e));
            return;
        }
    };
    for (input, output) in [("input_256", "output_256"), ("input_odd", "output_odd")] {
        let case = format!("fast vs PyTorch {input}");
        let (Some(x), Some(y)) = (tensors.get(input), tensors.get(output)) else {
            out.push(errored(
                OP,
                &case,
                format!("{}: no tensor `{input}` or `{output}`", path.display()),
            ));
            continue;
        };
        let mut run = || -> Result<CheckResult, String> {
            let got = fast.forward(x).map_err(|e| e.to_string())?;
            if got.shape != y.shape {
                return Err(format!(
                    "output shape {:?}, PyTorch's {:?}",
                    got.shape, y.shape
                ));
            }
            let (h, w) = (x.shape[2], x.shape[3]);
            let db = psnr(&(io.quantize)(&got, w, h)?, &(io.quantize)(y, w, h)?)?;
            Ok(judge_fixture(&case, &got.data, &y.data, db))
        };
        out.push(run().unwrap_or_else(|e| errored(OP, &case, e)));
    }
}

/// One photograph through both GPU nets; passes when the 8-bit images are within [`MIN_PSNR_DB`].
fn image_case(
    fast: &mut GpuTransformerNetFast,
    f32net: &mut GpuTransformerNet,
    file: &Path,
    io: &ImageIo,
    tag: &str,
) -> CheckResult {
    let name = file_name(file);
    let mut run = || -> Result<CheckResult, String> {
        let x = (io.load)(file, IMAGE_LONG_SIDE).map_err(|e| format!("{name}: {e}"))?;
        if x.shape.len() != 4 {
            return Err(format!(
                "{name}: loaded as shape {:?}, expected [1, 3, H, W]",
                x.shape
            ));
        }
        let (h, w) = (x.shape[2], x.shape[3]);
        let case = format!("{name} {w}x{h} fast{tag} vs fp32");
        let reference = f32net.forward(&x).map_err(|e| format!("fp32 net: {e}"))?;
        let got = fast.forward(&x).map_err(|e| format!("fast net: {e}"))?;
        if got.shape != reference.shape {
            return Err(format!(
                "fast output shape {:?}, fp32 {:?}",
                got.shape, reference.shape
            ));
        }
        let db = psnr(
            &(io.quantize)(&got, w, h)?,
            &(io.quantize)(&reference, w, h)?,
        )?;
        Ok(judge_photo(&case, &got.data, &reference.data, db))
    };
    run().unwrap_or_else(|e| errored(OP, &format!("{name} fast{tag} vs fp32"), e))
}

/// The fast StyleViT on `vit_nano`: PyTorch's fixture outputs, then the photographs against the fp32 net.
fn vit_checks(gpu: &Gpu, dir: &Path, images: Option<&Path>, io: &ImageIo, rep: &mut Report) {
    let weights = dir.join("vit_nano.safetensors");
    if !weights.is_file() {
        rep.not_run.push(format!(
            "psnr: StyleViT cases: {} not found",
            weights.display()
        ));
        return;
    }
    let net = match Weights::load(&weights)
        .map_err(|e| e.to_string())
        .and_then(|w| {
            let cfg = StyleVitConfig::from_weights(&w, None).map_err(|e| e.to_string())?;
            StyleVit::new(cfg, w).map_err(|e| e.to_string())
        }) {
        Ok(n) => n,
        Err(e) => return rep.results.push(errored(OP, "vit_nano (loading)", e)),
    };
    let mut fast = match GpuStyleVitFast::new(gpu, &net) {
        Ok(g) => g,
        Err(e) => return rep.results.push(errored(OP, "fast StyleViT (upload)", e)),
    };
    let io_file = dir.join("vit_nano_io.safetensors");
    match Weights::load(&io_file) {
        Ok(w) => {
            let t = &w.tensors;
            for (content, output, alpha) in [
                ("content", "output", 1.0),
                ("content_wide", "output_wide", 1.0),
                ("content", "output_alpha_0.5", 0.5),
            ] {
                let case = format!("StyleViT fast vs PyTorch {output}");
                let (Some(c), Some(st), Some(y)) = (t.get(content), t.get("style"), t.get(output))
                else {
                    rep.results.push(errored(
                        OP,
                        &case,
                        format!(
                            "{}: no tensor `{content}`, `style` or `{output}`",
                            io_file.display()
                        ),
                    ));
                    continue;
                };
                let run = |fast: &mut GpuStyleVitFast| -> Result<CheckResult, String> {
                    let got = fast.forward(c, st, alpha).map_err(|e| e.to_string())?;
                    if got.shape != y.shape {
                        return Err(format!(
                            "output shape {:?}, PyTorch's {:?}",
                            got.shape, y.shape
                        ));
                    }
                    let (h, w) = (c.shape[2], c.shape[3]);
                    let db = psnr(
                        &(io.quantize)(&scaled(&got, 255.0), w, h)?,
                        &(io.quantize)(&scaled(y, 255.0), w, h)?,
                    )?;
                    Ok(judge_fixture(&case, &got.data, &y.data, db))
                };
                rep.results
                    .push(run(&mut fast).unwrap_or_else(|e| errored(OP, &case, e)));
            }
        }
        Err(e) => rep.not_run.push(format!(
            "psnr: StyleViT fixture cases: {}: {e}",
            io_file.display()
        )),
    }

    let Some(files) = image_files(images, rep, "StyleViT") else {
        return;
    };
    let p = net.cfg.patch_size;
    let style_file = files
        .iter()
        .find(|f| f.file_name().is_some_and(|n| n == VIT_STYLE))
        .unwrap_or(&files[0])
        .clone();
    let style = match (io.load)(&style_file, VIT_STYLE_SIDE).and_then(|t| vit_input(&t, p)) {
        Ok(t) => t,
        Err(e) => {
            return rep.results.push(errored(
                OP,
                "StyleViT style image",
                format!("{}: {e}", style_file.display()),
            ))
        }
    };
    let mut f32net = match GpuStyleVit::new(gpu, &net) {
        Ok(g) => g,
        Err(e) => return rep.results.push(errored(OP, "fp32 StyleViT (upload)", e)),
    };
    let style_name = file_name(&style_file);
    for f in files {
        let name = file_name(&f);
        let case = format!("StyleViT {name} (style {style_name}) fast vs fp32");
        let mut run = || -> Result<CheckResult, String> {
            let x = (io.load)(&f, IMAGE_LONG_SIDE)
                .and_then(|t| vit_input(&t, p))
                .map_err(|e| format!("{name}: {e}"))?;
            let (h, w) = (x.shape[2], x.shape[3]);
            let case = format!("StyleViT {name} {w}x{h} (style {style_name}) fast vs fp32");
            let reference = f32net
                .forward(&x, &style, 1.0)
                .map_err(|e| format!("fp32 net: {e}"))?;
            let got = fast
                .forward(&x, &style, 1.0)
                .map_err(|e| format!("fast net: {e}"))?;
            if got.shape != reference.shape {
                return Err(format!(
                    "fast output shape {:?}, fp32 {:?}",
                    got.shape, reference.shape
                ));
            }
            let db = psnr(
                &(io.quantize)(&scaled(&got, 255.0), w, h)?,
                &(io.quantize)(&scaled(&reference, 255.0), w, h)?,
            )?;
            Ok(judge_photo(&case, &got.data, &reference.data, db))
        };
        rep.results
            .push(run().unwrap_or_else(|e| errored(OP, &case, e)));
    }
}

/// `t` times `k` (StyleViT works on 0..1 images; the 8-bit quantiser takes 0..255).
fn scaled(t: &Tensor, k: f32) -> Tensor {
    Tensor {
        shape: t.shape.clone(),
        data: t.data.iter().map(|v| v * k).collect(),
    }
}

/// A loaded [1, 3, H, W] 0..255 image as StyleViT input: scaled to 0..1 and cropped (top left) to
/// multiples of the patch size `p`.
fn vit_input(t: &Tensor, p: usize) -> Result<Tensor, String> {
    let [n, c, h, w] = t.shape[..] else {
        return Err(format!(
            "loaded as shape {:?}, expected [1, 3, H, W]",
            t.shape
        ));
    };
    let (hc, wc) = (h - h % p, w - w % p);
    if hc == 0 || wc == 0 {
        return Err(format!("{w}x{h} is smaller than the patch size {p}"));
    }
    let mut data = Vec::with_capacity(n * c * hc * wc);
    for plane in t.data.chunks_exact(h * w) {
        for row in plane.chunks_exact(w).take(hc) {
            data.extend(row[..wc].iter().map(|v| v / 255.0));
        }
    }
    Ok(Tensor {
        shape: vec![n, c, hc, wc],
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vit_input_scales_and_crops_to_the_patch() {
        // [1, 3, 3, 5] with values 0..45 (x 255 / 45 so the 0..255 range is used), patch 2 -> [1, 3, 2, 4].
        let t = Tensor {
            shape: vec![1, 3, 3, 5],
            data: (0..45).map(|v| v as f32 * 255.0 / 45.0).collect(),
        };
        let x = vit_input(&t, 2).unwrap();
        assert_eq!(x.shape, vec![1, 3, 2, 4]);
        // Channel 1, row 1, column 3 = source element 15 + 5 + 3 = 23.
        assert!((x.data[8 + 4 + 3] - 23.0 / 45.0).abs() < 1e-6);
        assert!(vit_input(&t, 4).is_err_and(|e| e.contains("patch")));
        assert!(vit_input(
            &Tensor {
                shape: vec![3, 5],
                data: vec![0.0; 15]
            },
            2
        )
        .is_err());
    }

    #[test]
    fn identical_images_have_infinite_psnr() {
        let a: Vec<u8> = (0..=255).collect();
        assert_eq!(psnr(&a, &a), Ok(f64::INFINITY));
        assert_eq!(psnr_from_mse(0.0), f64::INFINITY);
    }

    #[test]
    fn known_mse_gives_known_db() {
        // Every value off by one: MSE 1, PSNR 20·log10(255) = 48.1308 dB.
        let a = vec![100u8; 300];
        let b = vec![101u8; 300];
        assert!((psnr(&a, &b).unwrap() - 48.130_803_608).abs() < 1e-6);
        // One value in four off by 10: MSE 25, PSNR 34.1514 dB.
        let c: Vec<u8> = (0..400)
            .map(|i| if i % 4 == 0 { 110 } else { 100 })
            .collect();
        assert!((psnr(&vec![100u8; 400], &c).unwrap() - 34.151_403_521).abs() < 1e-6);
        // Black against white: MSE 255², 0 dB; symmetric.
        assert_eq!(psnr(&[0, 0], &[255, 255]), Ok(0.0));
        assert_eq!(psnr(&c, &vec![100u8; 400]), psnr(&vec![100u8; 400], &c));
        // 40 dB, the bar, is an MSE of 255² / 10⁴ = 6.5025.
        assert!((psnr_from_mse(6.5025) - 40.0).abs() < 1e-9);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(psnr(&[1, 2], &[1]).unwrap_err().contains("2 and 1"));
        assert!(psnr(&[], &[]).is_err());
    }

    #[test]
    fn jpegs_are_listed_sorted() {
        let dir = std::env::temp_dir().join(format!("styleforge-psnr-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub.jpg")).unwrap();
        for n in ["b.jpg", "a.JPG", "c.jpeg", "d.png", "e.txt"] {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        let got: Vec<String> = jpegs(&dir).unwrap().iter().map(|p| file_name(p)).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, vec!["a.JPG", "b.jpg", "c.jpeg"]);
        assert!(jpegs(Path::new("/definitely/not/here")).is_err());
    }

    #[test]
    fn detail_shows_the_numbers() {
        let d = detail(41.234, 3.1e-3, None);
        assert!(d.contains("41.23 dB") && d.contains("3.10e-3"), "{d}");
        assert!(detail(f64::INFINITY, 0.0, Some("x")).contains("inf dB"));
    }
}
