//! `cargo xtask <command>`: StyleForge's build tasks (rust-analyzer style: plain Rust, no dependencies
//! beyond the workspace, an explicit toolchain and target dir for every nested cargo).
//!
//! * `build-kernels [--arch sm_90a]` gpu-kernels -> PTX (nightly, -Zbuild-std=core), ptxas check + report
//! * `test`                          what CI runs: tools, kernels, clippy -D warnings, the whole test suite
//! * `run [ARGS...]`                 build and run the release `styleforge` binary with ARGS
//! * `bundle [--out DIR]`            release binary + PTX + fixtures + PyTorch scripts for a GPU machine
//! * `install-tools`                 rust-src, ptxas, link-time libcuda into `.tools/`
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use gpu_kernels::source_hash::{source_hash, PTX_HASH_PREFIX};

/// The kernels' default target: Hopper with its architecture-specific instructions (`wgmma`).
const DEFAULT_ARCH: &str = "sm_90a";

/// The SM number of `sm_XX` or `sm_XXa` (the `a` suffix: architecture-specific features, LLVM's
/// NVPTX knows `sm_90a`), or `None`.
fn parse_arch(arch: &str) -> Option<u32> {
    let digits = arch.strip_prefix("sm_")?;
    let digits = digits.strip_suffix('a').unwrap_or(digits);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where the host looks for the PTX by default (relative to the workspace root).
const PTX_REL: &str = "target/ptx/styleforge_kernels.ptx";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("build-kernels") => build_kernels(&args[1..]).map(|_| ()),
        Some("install-tools") => install_tools(),
        Some("test") => test(&args[1..]),
        Some("run") => run(&args[1..]),
        Some("bundle") => bundle(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <command>
  build-kernels [--arch sm_90a]  compile gpu-kernels to target/ptx/styleforge_kernels.ptx, check with ptxas
  test                           install tools, build kernels, clippy -D warnings, run every test
  run [ARGS...]                  build the release styleforge binary and run it with ARGS
  bundle [--out DIR]             gather binary, PTX, fixtures and PyTorch scripts for a GPU machine (default bundle/)
  install-tools                  nightly rust-src, ptxas and a link-time libcuda into .tools/";

type Result<T> = std::result::Result<T, String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn status(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let st = cmd
        .status()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed with {st}", cmd.get_program()))
    }
}

fn install_tools() -> Result<()> {
    status(Command::new("bash").arg(root().join("scripts/install-tools.sh")))
}

fn ptxas() -> PathBuf {
    root().join(".tools/bin/ptxas")
}

/// Compiles the kernel crate into one PTX module, checks it with ptxas and prints the per-kernel report.
fn build_kernels(args: &[String]) -> Result<PathBuf> {
    // sm_90a: the architecture-specific Hopper target. `wgmma.mma_async` (linear_wg) exists only
    // there; PTX for sm_90a loads on sm_90 devices (H100, H200) and nowhere else.
    let mut arch = DEFAULT_ARCH.to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--arch" => {
                arch = it
                    .next()
                    .ok_or("--arch needs a value (e.g. sm_90a)")?
                    .clone()
            }
            other => return Err(format!("build-kernels: unknown argument {other}")),
        }
    }
    parse_arch(&arch).ok_or_else(|| format!("--arch {arch}: expected sm_XX or sm_XXa"))?;
    if !ptxas().exists() || !nightly_has_rust_src() {
        install_tools()?;
    }
    let root = root();
    let target_dir = root.join("target/kernels");
    // The PTX ISA version needed by the instructions we use, on every target: mma/ldmatrix/cp.async need
    // >= 7.0, sm_90 7.8, and `cvt.rn.satfinite.f16x2.f32` (device::mma::pack_f16x2, in every f16 epilogue)
    // 8.1 even on sm_80.
    let ptx_feature = "+ptx81";
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root)
        .env("RUSTUP_TOOLCHAIN", "nightly")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .args([
            "rustc",
            "-p",
            "gpu-kernels",
            "--lib",
            "--crate-type",
            "cdylib",
        ])
        .args([
            "--target",
            "nvptx64-nvidia-cuda",
            "--profile",
            "kernels",
            "-Zbuild-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .args([
            "--",
            "-C",
            &format!("target-cpu={arch}"),
            "-C",
            &format!("target-feature={ptx_feature}"),
        ])
        .args(["--emit=asm", "-C", "linker=true", "-C", "debuginfo=0"]);
    status(&mut cmd)?;

    let deps = target_dir.join("nvptx64-nvidia-cuda/kernels/deps");
    let asm = std::fs::read_dir(&deps)
        .map_err(|e| format!("{}: {e}", deps.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "s")
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("gpu_kernels")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .ok_or_else(|| format!("no gpu_kernels*.s in {}", deps.display()))?;
    let ptx = std::fs::read_to_string(&asm).map_err(|e| format!("{}: {e}", asm.display()))?;
    let ptx = with_max_threads(&ptx, gpu_kernels::launch::MAX_THREADS)?;

    // An unresolved function (a libm or compiler-builtins call LTO could not resolve) would fail at load time.
    let externs: Vec<&str> = ptx
        .lines()
        .filter(|l| l.trim_start().starts_with(".extern .func"))
        .collect();
    if !externs.is_empty() {
        return Err(format!(
            "the PTX calls functions nothing defines:\n  {}",
            externs.join("\n  ")
        ));
    }
    // LLVM must have emitted the architecture asked for: `wgmma` needs `.target sm_90a` exactly
    // (ptxas rejects it under plain sm_90, and the driver would refuse to load it).
    let target = ptx
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(".target"))
        .ok_or("the PTX has no .target line")?;
    if target.split_whitespace().nth(1) != Some(arch.as_str()) {
        return Err(format!(
            "the PTX says `{target}`, expected `.target {arch}`"
        ));
    }
    let kernels = ptx.lines().filter(|l| l.contains(".entry ")).count();
    if kernels == 0 {
        return Err("the PTX has no kernel entry points".into());
    }

    let hash = source_hash(&root.join("gpu-kernels"))
        .map_err(|e| format!("hashing kernel sources: {e}"))?;
    let out = root.join(PTX_REL);
    std::fs::create_dir_all(out.parent().unwrap()).map_err(|e| e.to_string())?;
    let tmp = out.with_extension("ptx.tmp");
    std::fs::write(
        &tmp,
        format!("{PTX_HASH_PREFIX}{hash}\n// arch: {arch}\n{ptx}"),
    )
    .map_err(|e| e.to_string())?;

    // ptxas: a rejection here is a load failure on the GPU later.
    let o = Command::new(ptxas())
        .args([&format!("-arch={arch}"), "-v", "-o", "/dev/null"])
        .arg(&tmp)
        .output()
        .map_err(|e| format!("cannot run ptxas: {e}"))?;
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    if !o.status.success() {
        return Err(format!("ptxas rejected the PTX:\n{log}"));
    }
    std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
    let report = ptxas_report(&log);
    std::fs::write(root.join("target/ptx/ptxas-report.txt"), &report).map_err(|e| e.to_string())?;
    print!("{report}");
    println!(
        "wrote {} ({kernels} kernels, {arch}, source hash {hash})",
        out.display()
    );
    Ok(out)
}

/// Adds `.maxntid N, 1, 1` to each named kernel's entry (rustc cannot say it): ptxas then keeps the
/// kernel's registers within what N threads per block can have. Without it a JIT compiler may use so many
/// that a block of N threads is not launchable.
fn with_max_threads(ptx: &str, bounds: &[(&str, u32)]) -> Result<String> {
    let mut lines: Vec<String> = ptx.lines().map(str::to_owned).collect();
    for &(name, threads) in bounds {
        let entry = lines
            .iter()
            .position(|l| l.contains(&format!(".entry {name}(")))
            .ok_or_else(|| format!("MAX_THREADS names {name}, which the PTX does not define"))?;
        let body = entry
            + lines[entry..]
                .iter()
                .position(|l| l.trim() == "{")
                .ok_or_else(|| format!("no body after .entry {name}"))?;
        lines.insert(body, format!(".maxntid {threads}, 1, 1"));
    }
    Ok(lines.join("\n") + "\n")
}

fn nightly_has_rust_src() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
        })
        .unwrap_or(false)
}

/// Turns `ptxas -v` output into one row per kernel: registers, spill stores/loads, stack, shared memory.
fn ptxas_report(log: &str) -> String {
    #[derive(Default)]
    struct Row {
        name: String,
        regs: u32,
        spill_st: u32,
        spill_ld: u32,
        stack: u32,
        smem: u32,
    }
    fn num_before(s: &str, word: &str) -> u32 {
        s.split(',')
            .find(|p| p.contains(word))
            .and_then(|p| p.split_whitespace().find_map(|t| t.parse().ok()))
            .unwrap_or(0)
    }
    let mut rows: Vec<Row> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            rows.push(Row {
                name: rest.trim().to_string(),
                ..Default::default()
            });
        } else if let Some(r) = rows.last_mut() {
            if line.contains("bytes stack frame") {
                r.stack = num_before(line, "stack frame");
                r.spill_st = num_before(line, "spill stores");
                r.spill_ld = num_before(line, "spill loads");
            } else if line.contains("Used ") && line.contains("registers") {
                r.regs = line
                    .split("Used ")
                    .nth(1)
                    .and_then(|t| t.split_whitespace().next())
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                r.smem = num_before(line, "smem");
            }
        }
    }
    // Device functions (core's panic paths, inlined nowhere) appear as well; keep the kernels.
    rows.retain(|r| !r.name.starts_with("_R"));
    let mut s = format!(
        "{:<40} {:>5} {:>11} {:>10} {:>6} {:>10}\n",
        "kernel", "regs", "spill st B", "spill ld B", "stack", "static smem"
    );
    for r in &rows {
        s += &format!(
            "{:<40} {:>5} {:>11} {:>10} {:>6} {:>10}\n",
            r.name, r.regs, r.spill_st, r.spill_ld, r.stack, r.smem
        );
    }
    let spills: u32 = rows.iter().map(|r| r.spill_st + r.spill_ld).sum();
    s += &format!("{} kernels, total spill bytes {spills}\n", rows.len());
    // ptxas' notes that it serialised a kernel's wgmma (C7511: registers, C7513: plain writes to wgmma
    // operands inside a pipeline stage, ...): a silent loss of the overlap the kernel was written for.
    // `wgmma_probe` is compiled to show such a note on purpose.
    let mut serialised: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("wgmma.mma_async instructions are serialized"))
        .filter_map(|l| l.rsplit("in the function '").next()?.split('\'').next())
        .filter(|k| *k != "wgmma_probe")
        .collect();
    serialised.sort_unstable();
    serialised.dedup();
    s += &format!(
        "wgmma serialised by ptxas in: {}\n",
        if serialised.is_empty() { "none".to_string() } else { serialised.join(", ") }
    );
    s
}

/// The library path that lets binaries linked against libcuda start on a machine without a driver: the
/// link-time libcuda from `.tools/` (it reports "no device"), only when the system has no libcuda.so.1.
fn cuda_ld_path() -> Option<String> {
    let has_system = Command::new("sh")
        .args(["-c", "ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 '"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if has_system {
        return None;
    }
    let stub = root().join(".tools/cuda/lib64");
    let old = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    Some(if old.is_empty() {
        stub.display().to_string()
    } else {
        format!("{}:{old}", stub.display())
    })
}

fn cargo_stable() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root()).env_remove("RUSTUP_TOOLCHAIN");
    if let Some(p) = cuda_ld_path() {
        c.env("LD_LIBRARY_PATH", p);
    }
    c
}

/// What CI runs (and README's test command).
fn test(args: &[String]) -> Result<()> {
    install_tools()?;
    build_kernels(&[])?;
    status(cargo_stable().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    status(cargo_stable().args(["test", "--workspace"]).args(args))
}

fn run(args: &[String]) -> Result<()> {
    if !root().join(PTX_REL).exists() {
        build_kernels(&[])?;
    } else if !ptxas().exists() {
        install_tools()?;
    }
    status(cargo_stable().args(["build", "--release", "-p", "styleforge"]))?;
    let mut c = Command::new(root().join("target/release/styleforge"));
    c.args(args);
    if let Some(p) = cuda_ld_path() {
        c.env("LD_LIBRARY_PATH", p);
    }
    let st = c
        .status()
        .map_err(|e| format!("cannot start styleforge: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("styleforge exited with {st}"))
    }
}

/// Gathers everything a GPU run needs into one folder: binary, PTX (next to the binary, where the host
/// looks first), the ptxas report, fixtures and images and PyTorch scripts when `../shared` is there.
fn bundle(args: &[String]) -> Result<()> {
    let root = root();
    let mut out = root.join("bundle");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(it.next().ok_or("--out needs a folder")?),
            other => return Err(format!("bundle: unknown argument {other}")),
        }
    }
    let ptx = build_kernels(&[])?;
    status(cargo_stable().args(["build", "--release", "-p", "styleforge"]))?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let copy = |from: &Path, to: &Path| -> Result<()> {
        std::fs::copy(from, to)
            .map(|_| ())
            .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
    };
    copy(
        &root.join("target/release/styleforge"),
        &out.join("styleforge"),
    )?;
    copy(&ptx, &out.join("styleforge_kernels.ptx"))?;
    copy(
        &root.join("target/ptx/ptxas-report.txt"),
        &out.join("ptxas-report.txt"),
    )?;
    let shared = root.join("../shared");
    if shared.is_dir() {
        for sub in ["fixtures", "images", "bench", "reference"] {
            let dst = out.join("shared").join(sub);
            std::fs::create_dir_all(&dst).map_err(|e| e.to_string())?;
            for e in std::fs::read_dir(shared.join(sub)).map_err(|e| e.to_string())? {
                let p = e.map_err(|e| e.to_string())?.path();
                // The legacy/zip .pth copies of the TransformerNet weights are not needed on the GPU.
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                if p.is_file() && !name.ends_with(".pth") {
                    copy(&p, &dst.join(&name))?;
                }
            }
        }
    } else {
        eprintln!("xtask: ../shared not found: the bundle has no fixtures or PyTorch scripts");
    }
    let script = root.join("scripts/device-run.sh");
    if script.exists() {
        copy(&script, &out.join("device-run.sh"))?;
    }
    println!("bundle ready in {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{ptxas_report, with_max_threads};

    #[test]
    fn report_names_serialised_wgmma() {
        let log = "ptxas info    : (C7513) Potential Performance Loss: wgmma.mma_async instructions are serialized due to non wgmma instructions defining input registers of a wgmma between start and end of the pipeline stage in the function 'attention_tma'\n\
ptxas info    : (C7511) Potential Performance Loss: wgmma.mma_async instructions are serialized due to insufficient register resources for the wgmma pipeline in the function 'wgmma_probe'\n\
ptxas info    : Function properties for attention_tma\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 168 registers, used 1 barriers\n";
        let r = ptxas_report(log);
        assert!(r.contains("attention_tma") && r.contains("168"), "{r}");
        assert!(r.ends_with("wgmma serialised by ptxas in: attention_tma\n"), "{r}");
        assert!(ptxas_report("").ends_with("wgmma serialised by ptxas in: none\n"));
    }

    #[test]
    fn inserts_maxntid_before_the_body() {
        let ptx = ".visible .entry a(\n\t.param .u32 p\n)\n{\n\tret;\n}\n.visible .entry b(\n)\n{\n}\n";
        let out = with_max_threads(ptx, &[("b", 288)]).unwrap();
        assert_eq!(out, ".visible .entry a(\n\t.param .u32 p\n)\n{\n\tret;\n}\n.visible .entry b(\n)\n.maxntid 288, 1, 1\n{\n}\n");
        assert!(with_max_threads(ptx, &[("c", 32)]).is_err());
    }

    use super::parse_arch;

    #[test]
    fn arch_names() {
        assert_eq!(parse_arch("sm_90a"), Some(90));
        assert_eq!(parse_arch("sm_90"), Some(90));
        assert_eq!(parse_arch("sm_80"), Some(80));
        assert_eq!(parse_arch("sm_"), None);
        assert_eq!(parse_arch("sm_a"), None);
        assert_eq!(parse_arch("sm_9x"), None);
        assert_eq!(parse_arch("90"), None);
    }
}
