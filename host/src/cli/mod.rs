//! The `styleforge` command line: argument parsing and dispatch to one module per subcommand.
//!
//! Exit status: 0 success; 1 some work failed (an image that could not be read or written, a failed
//! self-check, a benchmark configuration that could not run); 2 nothing could be done (bad arguments,
//! an unreadable model, no GPU where one is required). Clap's own usage errors also exit with 2.
pub mod bench;
pub mod image_io;
pub mod model;
pub mod precision;
pub mod selfcheck;
pub mod stylize;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use styleforge::{Error, Gpu};

#[derive(Parser, Debug)]
#[command(
    name = "styleforge",
    version,
    about = "GPU neural style transfer (TransformerNet and StyleViT)"
)]
pub struct Cli {
    /// The kernel module to load (default: $STYLEFORGE_PTX, next to the executable, or the build's target/ptx/).
    #[arg(long, global = true, value_name = "FILE")]
    pub ptx: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Stylize one image, several images, or a folder of images with a TransformerNet or StyleViT model.
    Stylize(stylize::StylizeArgs),
    /// Time the GPU networks with random weights (no model file needed).
    Bench(bench::BenchArgs),
    /// Compare every GPU kernel with the CPU reference on fresh random inputs (and, with --fixtures, the
    /// whole networks with PyTorch's outputs).
    #[command(name = "self-check")]
    SelfCheck(selfcheck::SelfCheckArgs),
    /// Show the GPU and the kernel module in use.
    Info,
}

/// A failure that stops a command: printed as `error: <msg>`, exits with `code`.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub msg: String,
}

impl Failure {
    /// Nothing could be done (bad arguments, model, device): exit status 2.
    pub fn setup(msg: impl Into<String>) -> Self {
        Failure {
            code: 2,
            msg: msg.into(),
        }
    }
}

/// Exit status of a command that ran: 0 when everything worked, 1 when part of the work failed.
pub type Outcome = Result<u8, Failure>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Stylize(a) => stylize::run(a, cli.ptx),
        Command::Bench(a) => bench::run(a, cli.ptx),
        Command::SelfCheck(a) => selfcheck::run(a, cli.ptx),
        Command::Info => info(cli.ptx),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("error: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}

/// Opens the GPU; the error says "no GPU: <reason>" when there is none, or why the GPU is unusable.
pub fn open_gpu(ptx: Option<PathBuf>) -> Result<Gpu, String> {
    Gpu::with_ptx(ptx).map_err(|e| describe_gpu_error(&e))
}

pub fn describe_gpu_error(e: &Error) -> String {
    match e {
        Error::NoGpu(reason) => format!("no GPU: {reason}"),
        other => format!("GPU unusable: {other}"),
    }
}

pub fn gib(bytes: usize) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn info(ptx: Option<PathBuf>) -> Outcome {
    let gpu = match open_gpu(ptx) {
        Ok(g) => g,
        Err(msg) => {
            println!("{msg}");
            return Ok(1);
        }
    };
    println!("GPU:                {}", gpu.name);
    println!(
        "compute capability: {}.{} (sm_{}{})",
        gpu.compute_capability.0,
        gpu.compute_capability.1,
        gpu.compute_capability.0,
        gpu.compute_capability.1
    );
    println!("SMs:                {}", gpu.sm_count);
    match gpu.memory_info() {
        Ok((free, total)) => println!(
            "memory:             {} total, {} free",
            gib(total),
            gib(free)
        ),
        Err(e) => println!(
            "memory:             {} total (free unknown: {e})",
            gib(gpu.total_memory)
        ),
    }
    println!("PTX:                {}", gpu.ptx_path.display());
    Ok(0)
}
