//! `styleforge self-check`: every GPU kernel against the CPU reference on fresh random inputs, and with
//! `--fixtures` the whole networks against PyTorch's outputs and the fast TransformerNet's PSNR check
//! (`psnr`, with the photographs of `--images`).
use std::path::{Path, PathBuf};

use clap::Args;
use models::{StyleVit, StyleVitConfig, Tensor, TransformerNet, Weights};

use styleforge::nets::{GpuStyleVit, GpuTransformerNet};
use styleforge::selfcheck::psnr::{self, ImageIo};
use styleforge::selfcheck::{self, CheckResult, Tolerance};
use styleforge::Gpu;

use super::image_io;
use super::{open_gpu, Failure, Outcome};

#[derive(Args, Debug)]
pub struct SelfCheckArgs {
    /// Only the checks whose op name contains this text.
    #[arg(long, value_name = "OP")]
    pub filter: Option<String>,
    /// Seed of the random inputs (default: from the clock; printed so a failure can be repeated).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Folder with tnet_a.safetensors, tnet_a_io.safetensors, vit_nano.safetensors and
    /// vit_nano_io.safetensors: also compare the GPU networks with PyTorch's outputs.
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// With --fixtures, check the CPU networks against the fixtures too.
    #[arg(long)]
    pub cpu: bool,
    /// Folder of .jpg photographs for the `psnr` check (fast vs fp32 TransformerNet as 8-bit images; needs
    /// --fixtures) [default: <fixtures>/../images].
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
}

/// The image helpers `stylize` uses, for the `psnr` check: decode, downscale, 0..255 tensor; crop,
/// clamp, round to 8 bits.
pub const STYLIZE_IMAGE_IO: ImageIo = ImageIo {
    load: |path, long_side| {
        let img = image_io::limit_size(image_io::load_rgb(path)?, Some(long_side));
        Ok(image_io::rgb_to_tensor(&img, 1.0))
    },
    quantize: |t, w, h| image_io::tensor_to_rgb(t, w, h, 255.0).map(image::RgbImage::into_raw),
};

/// Whether the check named `op` is selected by `--filter` (its name contains the text).
fn selected(op: &str, filter: Option<&str>) -> bool {
    filter.is_none_or(|f| op.contains(f))
}

/// Whole-network agreement with the fixtures: relative L2 only (the README's fp32 bound).
pub const FIXTURE_TOL: Tolerance = Tolerance {
    rel_l2: 1e-4,
    max_rel: f64::INFINITY,
};

/// The input/output tensors of a fixture file, taken by name.
struct Io {
    w: Weights,
}

impl Io {
    fn load(path: &Path) -> Result<Io, String> {
        Weights::load(path)
            .map(|w| Io { w })
            .map_err(|e| e.to_string())
    }
    fn get(&self, key: &str) -> Result<&Tensor, String> {
        self.w
            .tensors
            .get(key)
            .ok_or_else(|| format!("{}: no tensor `{key}`", self.w.path.display()))
    }
}

fn compare(op: &str, case: &str, got: Result<Tensor, String>, expected: &Tensor) -> CheckResult {
    match got {
        Err(e) => selfcheck::errored(op, case, e),
        Ok(t) if t.shape != expected.shape => selfcheck::errored(
            op,
            case,
            format!("output shape {:?}, expected {:?}", t.shape, expected.shape),
        ),
        Ok(t) => selfcheck::compare(op, case, &t.data, &expected.data, FIXTURE_TOL),
    }
}

/// Which path computes a network's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Gpu,
    Cpu,
}

impl Via {
    fn op(self) -> &'static str {
        match self {
            Via::Gpu => "fixture gpu",
            Via::Cpu => "fixture cpu",
        }
    }
}

fn tnet_cases(gpu: &Gpu, dir: &Path, paths: &[Via]) -> Vec<CheckResult> {
    let setup = || -> Result<(TransformerNet, Io), String> {
        let w = Weights::load(&dir.join("tnet_a.safetensors")).map_err(|e| e.to_string())?;
        let net = TransformerNet::new(w).map_err(|e| e.to_string())?;
        Ok((net, Io::load(&dir.join("tnet_a_io.safetensors"))?))
    };
    let (net, io) = match setup() {
        Ok(v) => v,
        Err(e) => {
            return paths
                .iter()
                .map(|p| selfcheck::errored(p.op(), "tnet (loading)", &e))
                .collect()
        }
    };
    let cases = [
        ("tnet 256", "input_256", "output_256"),
        ("tnet odd 250x190", "input_odd", "output_odd"),
    ];
    let mut out = Vec::new();
    for &path in paths {
        let mut gnet = match path {
            Via::Gpu => match GpuTransformerNet::new(gpu, &net) {
                Ok(g) => Some(g),
                Err(e) => {
                    out.push(selfcheck::errored(path.op(), "tnet (upload)", e));
                    continue;
                }
            },
            Via::Cpu => None,
        };
        for (case, input, output) in cases {
            let r = match (io.get(input), io.get(output)) {
                (Ok(x), Ok(y)) => {
                    let got = match gnet.as_mut() {
                        Some(g) => g.forward(x).map_err(|e| e.to_string()),
                        None => net.forward(x).map_err(|e| e.to_string()),
                    };
                    compare(path.op(), case, got, y)
                }
                (Err(e), _) | (_, Err(e)) => selfcheck::errored(path.op(), case, e),
            };
            out.push(r);
        }
    }
    out
}

fn vit_cases(gpu: &Gpu, dir: &Path, paths: &[Via]) -> Vec<CheckResult> {
    let setup = || -> Result<(StyleVit, Io), String> {
        let w = Weights::load(&dir.join("vit_nano.safetensors")).map_err(|e| e.to_string())?;
        let cfg = StyleVitConfig::from_weights(&w, None).map_err(|e| e.to_string())?;
        let net = StyleVit::new(cfg, w).map_err(|e| e.to_string())?;
        Ok((net, Io::load(&dir.join("vit_nano_io.safetensors"))?))
    };
    let (net, io) = match setup() {
        Ok(v) => v,
        Err(e) => {
            return paths
                .iter()
                .map(|p| selfcheck::errored(p.op(), "vit (loading)", &e))
                .collect()
        }
    };
    let cases = [
        ("vit square 256", "content", 1.0, "output"),
        ("vit wide 128x192", "content_wide", 1.0, "output_wide"),
        ("vit alpha 0.5", "content", 0.5, "output_alpha_0.5"),
    ];
    let mut out = Vec::new();
    for &path in paths {
        let mut gnet = match path {
            Via::Gpu => match GpuStyleVit::new(gpu, &net) {
                Ok(g) => Some(g),
                Err(e) => {
                    out.push(selfcheck::errored(path.op(), "vit (upload)", e));
                    continue;
                }
            },
            Via::Cpu => None,
        };
        for (case, input, alpha, output) in cases {
            let r = match (io.get(input), io.get("style"), io.get(output)) {
                (Ok(x), Ok(s), Ok(y)) => {
                    let got = match gnet.as_mut() {
                        Some(g) => g.forward(x, s, alpha).map_err(|e| e.to_string()),
                        None => net.forward(x, s, alpha).map_err(|e| e.to_string()),
                    };
                    compare(path.op(), case, got, y)
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    selfcheck::errored(path.op(), case, e)
                }
            };
            out.push(r);
        }
    }
    out
}

/// The fixture comparisons of both networks along `paths` (the GPU, and the CPU with --cpu).
fn fixture_checks(gpu: &Gpu, dir: &Path, paths: &[Via]) -> Vec<CheckResult> {
    if paths.is_empty() {
        return Vec::new();
    }
    let mut out = tnet_cases(gpu, dir, paths);
    out.extend(vit_cases(gpu, dir, paths));
    out
}

/// The `psnr` results with their numbers (the table shows a case's detail only when it fails).
fn psnr_lines(results: &[CheckResult]) -> String {
    results
        .iter()
        .filter(|r| r.op == psnr::OP)
        .map(|r| {
            format!(
                "psnr: {}: {}{}\n",
                r.case,
                r.detail,
                if r.passed { "" } else { "  FAIL" }
            )
        })
        .collect()
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 ^ (d.as_secs() << 32))
        .unwrap_or(0x5eed)
}

pub fn run(a: SelfCheckArgs, ptx: Option<PathBuf>) -> Outcome {
    if let Some(dir) = &a.fixtures {
        if !dir.is_dir() {
            return Err(Failure::setup(format!(
                "--fixtures {}: not a folder",
                dir.display()
            )));
        }
    }
    if a.cpu && a.fixtures.is_none() {
        return Err(Failure::setup("--cpu needs --fixtures DIR"));
    }
    if let Some(dir) = &a.images {
        if a.fixtures.is_none() {
            return Err(Failure::setup(
                "--images needs --fixtures DIR (the psnr check runs the fixture model)",
            ));
        }
        if !dir.is_dir() {
            return Err(Failure::setup(format!(
                "--images {}: not a folder",
                dir.display()
            )));
        }
    }
    let filter = a.filter.as_deref();
    let registered = selfcheck::all_checks()
        .iter()
        .any(|c| selected(c.op, filter));
    let vias: Vec<Via> = match &a.fixtures {
        Some(_) if a.cpu => vec![Via::Gpu, Via::Cpu],
        Some(_) => vec![Via::Gpu],
        None => vec![],
    };
    let vias: Vec<Via> = vias
        .into_iter()
        .filter(|v| selected(v.op(), filter))
        .collect();
    let run_psnr = selected(psnr::OP, filter);
    if !registered && vias.is_empty() && !run_psnr {
        return Err(Failure::setup(format!(
            "--filter {}: matches no check",
            filter.unwrap_or("")
        )));
    }
    let gpu = match open_gpu(ptx) {
        Ok(g) => g,
        Err(msg) => {
            println!("{msg}");
            eprintln!("error: self-check runs the GPU kernels and cannot run without a usable GPU");
            return Ok(2);
        }
    };
    let seed = a.seed.unwrap_or_else(seed_from_clock);
    println!(
        "GPU: {} (sm_{}{}), {} SMs",
        gpu.name, gpu.compute_capability.0, gpu.compute_capability.1, gpu.sm_count
    );
    println!("seed: {seed} (repeat with --seed {seed})");
    let mut results = selfcheck::run(&gpu, filter, seed);
    if let Some(dir) = &a.fixtures {
        results.extend(fixture_checks(&gpu, dir, &vias));
    }
    let mut not_run = Vec::new();
    if run_psnr {
        let images = a
            .images
            .clone()
            .or_else(|| a.fixtures.as_ref().map(|d| d.join("..").join("images")));
        let report = psnr::checks(
            &gpu,
            a.fixtures.as_deref(),
            images.as_deref(),
            &STYLIZE_IMAGE_IO,
        );
        results.extend(report.results);
        not_run = report.not_run;
    }
    print!("{}", selfcheck::table(&results));
    print!("{}", psnr_lines(&results));
    for reason in &not_run {
        println!("NOT RUN: {reason}");
    }
    Ok(if results.iter().all(|r| r.passed) {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_selects_by_op_name() {
        assert!(selected("psnr", None));
        assert!(selected("psnr", Some("psn")));
        assert!(!selected("psnr", Some("conv2d")));
        assert!(selected(Via::Gpu.op(), Some("fixture")));
        assert!(!selected(Via::Cpu.op(), Some("gpu")));
    }

    #[test]
    fn stylize_image_io_downscales_and_quantises_like_stylize() {
        let dir = std::env::temp_dir().join(format!("styleforge-sc-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("wide.png");
        image::RgbImage::from_fn(1024, 300, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 9])
        })
        .save(&p)
        .unwrap();
        let t = (STYLIZE_IMAGE_IO.load)(&p, 512);
        let small = (STYLIZE_IMAGE_IO.load)(&p, 2048);
        std::fs::remove_dir_all(&dir).unwrap();
        let t = t.unwrap();
        assert_eq!(t.shape, vec![1, 3, 150, 512]); // longer side 512, aspect kept
        assert_eq!(small.unwrap().shape, vec![1, 3, 300, 1024]); // never enlarged
        assert!(t
            .data
            .iter()
            .all(|v| (0.0..=255.0).contains(v) && v.fract() == 0.0));
        // Quantisation: crop, clamp, round, RGB interleaved.
        let y = models::Tensor::new(
            &[1, 3, 2, 2],
            vec![
                -3.0, 0.4, 254.6, 300.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0,
            ],
        );
        assert_eq!(
            (STYLIZE_IMAGE_IO.quantize)(&y, 1, 2).unwrap(),
            vec![0, 1, 5, 255, 3, 7]
        );
        assert!((STYLIZE_IMAGE_IO.quantize)(&y, 3, 2).is_err());
        assert!((STYLIZE_IMAGE_IO.load)(Path::new("/no/such/image.jpg"), 512).is_err());
    }

    #[test]
    fn psnr_lines_show_passes_and_failures() {
        let mut ok = selfcheck::errored(psnr::OP, "a.jpg 512x512 fast vs fp32", "x");
        ok.passed = true;
        ok.detail = "PSNR 45.00 dB (bar 40 dB), rel L2 1.00e-3".into();
        let mut bad = ok.clone();
        bad.passed = false;
        let other = selfcheck::errored("fixture gpu", "tnet 256", "boom");
        let s = psnr_lines(&[ok, other, bad]);
        assert_eq!(s.lines().count(), 2, "{s}");
        assert!(
            s.starts_with("psnr: a.jpg 512x512 fast vs fp32: PSNR 45.00 dB"),
            "{s}"
        );
        assert!(s.lines().nth(1).is_some_and(|l| l.ends_with("FAIL")), "{s}");
    }
}
