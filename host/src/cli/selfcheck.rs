//! `styleforge self-check`: every GPU kernel against the CPU reference on fresh random inputs, and with
//! `--fixtures` the whole networks against PyTorch's outputs.
use std::path::{Path, PathBuf};

use clap::Args;
use models::{StyleVit, StyleVitConfig, Tensor, TransformerNet, Weights};

use styleforge::nets::{GpuStyleVit, GpuTransformerNet};
use styleforge::selfcheck::{self, CheckResult, Tolerance};
use styleforge::Gpu;

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
}

/// Whole-network agreement with the fixtures: relative L2 only (the README's fp32 bound).
pub const FIXTURE_TOL: Tolerance = Tolerance { rel_l2: 1e-4, max_rel: f64::INFINITY };

/// The input/output tensors of a fixture file, taken by name.
struct Io {
    w: Weights,
}

impl Io {
    fn load(path: &Path) -> Result<Io, String> {
        Weights::load(path).map(|w| Io { w }).map_err(|e| e.to_string())
    }
    fn get(&self, key: &str) -> Result<&Tensor, String> {
        self.w.tensors.get(key).ok_or_else(|| format!("{}: no tensor `{key}`", self.w.path.display()))
    }
}

fn compare(op: &str, case: &str, got: Result<Tensor, String>, expected: &Tensor) -> CheckResult {
    match got {
        Err(e) => selfcheck::errored(op, case, e),
        Ok(t) if t.shape != expected.shape => {
            selfcheck::errored(op, case, format!("output shape {:?}, expected {:?}", t.shape, expected.shape))
        }
        Ok(t) => selfcheck::compare(op, case, &t.data, &expected.data, FIXTURE_TOL),
    }
}

/// Which path computes a network's output.
#[derive(Clone, Copy)]
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
        Err(e) => return paths.iter().map(|p| selfcheck::errored(p.op(), "tnet (loading)", &e)).collect(),
    };
    let cases = [("tnet 256", "input_256", "output_256"), ("tnet odd 250x190", "input_odd", "output_odd")];
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
        Err(e) => return paths.iter().map(|p| selfcheck::errored(p.op(), "vit (loading)", &e)).collect(),
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
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => selfcheck::errored(path.op(), case, e),
            };
            out.push(r);
        }
    }
    out
}

/// The fixture comparisons: the GPU networks, and the CPU ones when `cpu`.
pub fn fixture_checks(gpu: &Gpu, dir: &Path, cpu: bool) -> Vec<CheckResult> {
    let paths: &[Via] = if cpu { &[Via::Gpu, Via::Cpu] } else { &[Via::Gpu] };
    let mut out = tnet_cases(gpu, dir, paths);
    out.extend(vit_cases(gpu, dir, paths));
    out
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
            return Err(Failure::setup(format!("--fixtures {}: not a folder", dir.display())));
        }
    }
    if a.cpu && a.fixtures.is_none() {
        return Err(Failure::setup("--cpu needs --fixtures DIR"));
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
    println!("GPU: {} (sm_{}{}), {} SMs", gpu.name, gpu.compute_capability.0, gpu.compute_capability.1, gpu.sm_count);
    println!("seed: {seed} (repeat with --seed {seed})");
    let mut results = selfcheck::run(&gpu, a.filter.as_deref(), seed);
    if results.is_empty() && a.fixtures.is_none() {
        return Err(Failure::setup(format!(
            "--filter {}: matches no check",
            a.filter.as_deref().unwrap_or("")
        )));
    }
    if let Some(dir) = &a.fixtures {
        results.extend(fixture_checks(&gpu, dir, a.cpu));
    }
    print!("{}", selfcheck::table(&results));
    Ok(if results.iter().all(|r| r.passed) { 0 } else { 1 })
}
