//! `styleforge stylize`: one image to a file, or many images (or a folder) into a folder.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use models::{StyleVit, Tensor, TransformerNet};

use styleforge::Gpu;

use super::image_io::{self, OutFormat};
use super::model::{self, Kind, Net};
use super::precision::{GpuTnet, GpuVit, Precision};
use super::{describe_gpu_error, gib, Failure, Outcome};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// The GPU when one is usable, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

#[derive(Args, Debug)]
pub struct StylizeArgs {
    /// Weight file (.safetensors or .pth) of a TransformerNet or StyleViT model (detected from its content).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Image file(s) or folder(s) (a folder contributes its image files, not recursively).
    #[arg(long, short = 'i', value_name = "PATH", num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// Output file for a single input image; output folder (created) for several inputs or a folder, where
    /// each output keeps its input's name with the --format extension.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Style image (StyleViT models only; any size).
    #[arg(long, value_name = "IMAGE")]
    pub style: Option<PathBuf>,
    /// Style strength for StyleViT, 0 (content only) to 1 (full style).
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f32,
    /// Downscale inputs (and the style image) whose longer side exceeds N pixels.
    #[arg(long, value_name = "N")]
    pub max_size: Option<u32>,
    /// Output format (default: from the output file's extension; png for folder outputs).
    #[arg(long, value_enum)]
    pub format: Option<OutFormat>,
    /// StyleViT head count, for weight files that do not record it (default embed_dim / 64).
    #[arg(long, value_name = "N")]
    pub heads: Option<usize>,
    /// Arithmetic on the GPU [default: fp16]: fp16 runs the convolutions (TransformerNet) or the GEMMs and
    /// attention (StyleViT) on tensor cores (half-precision operands, fp32 accumulation), fp32 the fp32
    /// kernels (PyTorch parity 1e-4). The CPU is fp32.
    #[arg(long, value_enum, value_name = "PRECISION")]
    pub precision: Option<Precision>,
}

/// The precision when --precision is not given.
pub const DEFAULT_PRECISION: Precision = Precision::Fp16;

/// An input and where its output goes (or why it cannot be written).
type Item = (PathBuf, Result<(PathBuf, OutFormat), String>);

/// Where each input's output goes.
struct Plan {
    items: Vec<Item>,
    /// Folder to create before writing.
    dir: Option<PathBuf>,
    /// Where the outputs go, for the summary line.
    dest: PathBuf,
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn plan(
    files: &[PathBuf],
    batch: bool,
    output: &Path,
    format: Option<OutFormat>,
) -> Result<Plan, Failure> {
    let guard = |input: &Path, out: PathBuf, fmt: OutFormat| {
        if same_file(input, &out) {
            Err(format!(
                "its output {} would overwrite the input; choose another --output or --format",
                out.display()
            ))
        } else {
            Ok((out, fmt))
        }
    };
    if batch || output.is_dir() {
        if output.exists() && !output.is_dir() {
            return Err(Failure::setup(format!(
                "--output {}: is a file, but several inputs need an output folder",
                output.display()
            )));
        }
        let fmt = format.unwrap_or(OutFormat::Png);
        let mut seen: HashMap<PathBuf, &Path> = HashMap::new();
        let mut items = Vec::new();
        for f in files {
            let item = match f.file_stem() {
                None => Err("has no file name".to_string()),
                Some(stem) => {
                    let mut name = stem.to_os_string();
                    name.push(".");
                    name.push(fmt.extension());
                    let out = output.join(name);
                    if let Some(first) = seen.get(&out) {
                        Err(format!(
                            "its output {} would also be written from {}",
                            out.display(),
                            first.display()
                        ))
                    } else {
                        seen.insert(out.clone(), f);
                        guard(f, out, fmt)
                    }
                }
            };
            items.push((f.clone(), item));
        }
        Ok(Plan {
            items,
            dir: Some(output.to_path_buf()),
            dest: output.to_path_buf(),
        })
    } else {
        let fmt = match format.or_else(|| OutFormat::from_path(output)) {
            Some(f) => f,
            None => {
                return Err(Failure::setup(format!(
                    "--output {}: cannot tell the image format from the extension; use .png, .jpg, .bmp, .tiff, \
                     .webp, .tga, .ppm or .qoi, or pass --format",
                    output.display()
                )))
            }
        };
        let dir = output
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf);
        let item = guard(&files[0], output.to_path_buf(), fmt);
        Ok(Plan {
            items: vec![(files[0].clone(), item)],
            dir,
            dest: output.to_path_buf(),
        })
    }
}

/// Chooses the device; `None` is the CPU.
fn pick_device(choice: DeviceChoice, ptx: Option<PathBuf>) -> Result<Option<Gpu>, Failure> {
    match choice {
        DeviceChoice::Cpu => {
            eprintln!("device: CPU");
            Ok(None)
        }
        DeviceChoice::Cuda => match Gpu::with_ptx(ptx) {
            Ok(g) => {
                eprintln!("device: GPU {}", g.name);
                Ok(Some(g))
            }
            Err(e) => Err(Failure::setup(format!(
                "--device cuda: {}",
                describe_gpu_error(&e)
            ))),
        },
        DeviceChoice::Auto => match Gpu::with_ptx(ptx) {
            Ok(g) => {
                eprintln!("device: GPU {}", g.name);
                Ok(Some(g))
            }
            Err(e) => {
                eprintln!(
                    "device: CPU ({}; --device cuda would make this an error)",
                    describe_gpu_error(&e)
                );
                Ok(None)
            }
        },
    }
}

/// The smallest side TransformerNet takes (its first layer reflection-pads by 4).
const TNET_MIN_SIDE: usize = 5;

/// StyleViT's AdaIN needs at least two tokens: the image, padded to multiples of `p`, must span two patches.
fn vit_size_ok(w: usize, h: usize, p: usize) -> Result<(), String> {
    if w.div_ceil(p) * h.div_ceil(p) < 2 {
        return Err(format!(
            "the image is {w}x{h}, a single {p}x{p} patch; StyleViT needs at least two (e.g. {}x{p})",
            2 * p
        ));
    }
    Ok(())
}

/// Runs the loaded network on the GPU (when one was chosen and the image fits) or the CPU.
struct Engine<'g> {
    gpu: Option<&'g Gpu>,
    /// `--device auto`: images too big for the GPU run on the CPU instead of failing.
    cpu_fallback: bool,
    tnet: Option<GpuTnet<'g>>,
    vit: Option<GpuVit<'g>>,
    /// Input shapes and estimated bytes of the last GPU run: the net keeps its buffers for that shape, so
    /// the same shape needs nothing more and a new one can reuse that memory.
    last_gpu: Option<(Vec<usize>, usize)>,
}

impl<'g> Engine<'g> {
    /// Puts `net` on `gpu` in `precision`, or runs on the CPU when `gpu` is `None`.
    fn new(
        gpu: Option<&'g Gpu>,
        net: &Net,
        cpu_fallback: bool,
        precision: Precision,
    ) -> Result<Self, Failure> {
        let mut e = Engine {
            gpu: None,
            cpu_fallback,
            tnet: None,
            vit: None,
            last_gpu: None,
        };
        let Some(g) = gpu else { return Ok(e) };
        let uploaded = match net {
            Net::Tnet(n) => GpuTnet::new(g, n, precision).map(|t| e.tnet = Some(t)),
            // A StyleViT the fp16 path cannot run (head_dim not 32/64/128, say) runs in fp32.
            Net::Vit(n) => GpuVit::new(g, n, precision)
                .or_else(|err| match precision {
                    Precision::Fp16 => {
                        eprintln!(
                            "note: the fp16 StyleViT cannot run this model ({err}); using fp32"
                        );
                        GpuVit::new(g, n, Precision::Fp32)
                    }
                    Precision::Fp32 => Err(err),
                })
                .map(|v| e.vit = Some(v)),
        };
        match uploaded {
            Ok(()) => e.gpu = Some(g),
            Err(err) if cpu_fallback => {
                eprintln!("note: cannot put the model on the GPU ({err}); using the CPU")
            }
            Err(err) => {
                return Err(Failure::setup(format!(
                    "cannot put the model on the GPU: {err}"
                )))
            }
        }
        Ok(e)
    }

    /// The precision the GPU runs in; fp32 on the CPU.
    fn precision(&self) -> Precision {
        match (&self.tnet, &self.vit) {
            (Some(t), _) => t.precision(),
            (None, Some(v)) => v.precision(),
            (None, None) => Precision::Fp32,
        }
    }

    /// Whether `need` bytes fit in the GPU's free memory: Ok(true) run there, Ok(false) run on the CPU.
    fn fits(
        &mut self,
        g: &Gpu,
        shapes: Vec<usize>,
        need: usize,
        log: &dyn Fn(String),
    ) -> Result<bool, String> {
        let reusable = match &self.last_gpu {
            Some((s, _)) if *s == shapes => return Ok(true),
            Some((_, bytes)) => *bytes,
            None => 0,
        };
        let free = g.memory_info().map_err(|e| e.to_string())?.0 + reusable;
        if need <= free {
            self.last_gpu = Some((shapes, need));
            return Ok(true);
        }
        let msg = format!(
            "needs about {} of GPU memory for its activations, {} is free",
            gib(need),
            gib(free)
        );
        if self.cpu_fallback {
            log(format!("{msg}; running it on the CPU (fp32)"));
            Ok(false)
        } else {
            Err(format!(
                "{msg}; use --max-size N to downscale it, or --device cpu"
            ))
        }
    }

    fn tnet(
        &mut self,
        net: &TransformerNet,
        x: &Tensor,
        log: &dyn Fn(String),
    ) -> Result<Tensor, String> {
        if let (Some(g), Some(t)) = (self.gpu, self.tnet.as_ref()) {
            let need = t.bytes(x.shape[0], x.shape[2], x.shape[3]);
            if self.fits(g, x.shape.clone(), need, log)? {
                if let Some(t) = self.tnet.as_mut() {
                    return t
                        .forward(x)
                        .map_err(|e| format!("GPU forward pass failed: {e}"));
                }
            }
        }
        net.forward(x).map_err(|e| e.to_string())
    }

    fn vit(
        &mut self,
        net: &StyleVit,
        x: &Tensor,
        style: &Tensor,
        alpha: f32,
        log: &dyn Fn(String),
    ) -> Result<Tensor, String> {
        if let (Some(g), true) = (self.gpu, self.vit.is_some()) {
            let (s, c) = (&style.shape, &x.shape);
            let need = model::vit_bytes(&net.cfg, c[0], c[2], c[3], s[0], s[2], s[3]);
            if self.fits(g, [c.as_slice(), s.as_slice()].concat(), need, log)? {
                if let Some(v) = self.vit.as_mut() {
                    return v
                        .forward(x, style, alpha)
                        .map_err(|e| format!("GPU forward pass failed: {e}"));
                }
            }
        }
        net.forward(x, style, alpha).map_err(|e| e.to_string())
    }

    fn stylize(
        &mut self,
        net: &Net,
        style: Option<&Tensor>,
        alpha: f32,
        img: &RgbImage,
        log: &dyn Fn(String),
    ) -> Result<RgbImage, String> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        match net {
            Net::Tnet(n) => {
                if w < TNET_MIN_SIDE || h < TNET_MIN_SIDE {
                    return Err(format!("the image is {w}x{h}; TransformerNet needs at least {TNET_MIN_SIDE}x{TNET_MIN_SIDE}"));
                }
                let y = self.tnet(n, &image_io::rgb_to_tensor(img, 1.0), log)?;
                image_io::tensor_to_rgb(&y, w, h, 255.0)
            }
            Net::Vit(n) => {
                let style = style.ok_or("StyleViT needs a style image")?;
                vit_size_ok(w, h, n.cfg.patch_size)?;
                let x = image_io::reflect_pad_multiple(
                    &image_io::rgb_to_tensor(img, 1.0 / 255.0),
                    n.cfg.patch_size,
                );
                let y = self.vit(n, &x, style, alpha, log)?;
                image_io::tensor_to_rgb(&y, w, h, 1.0)
            }
        }
    }
}

/// The note to print when `--precision fp16` was asked for explicitly but the run is fp32 (the CPU);
/// none for the default precision or an explicit fp32.
fn precision_note(asked: Option<Precision>, on_gpu: bool) -> Option<&'static str> {
    (asked == Some(Precision::Fp16) && !on_gpu)
        .then_some("the CPU path is fp32 only; --precision fp16 applies on the GPU")
}

/// Decodes each input, runs `stylize` on it and writes the result atomically; a failure is reported as
/// `error: <input>: <problem>` and the rest go on. `progress` shows a bar (on a terminal). Returns the
/// numbers of images written and failed.
fn process(
    items: Vec<Item>,
    max_size: Option<u32>,
    progress: bool,
    mut stylize: impl FnMut(&RgbImage, &dyn Fn(String)) -> Result<RgbImage, String>,
) -> (usize, usize) {
    let pb = if progress {
        let pb = ProgressBar::new(items.len() as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} [{elapsed_precise}, eta {eta}] {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let (mut written, mut failed) = (0usize, 0usize);
    for (input, item) in items {
        pb.set_message(
            input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let log = |m: String| pb.suspend(|| eprintln!("note: {}: {m}", input.display()));
        let result = item.and_then(|(out, fmt)| {
            let img = image_io::limit_size(image_io::load_rgb(&input)?, max_size);
            let y = stylize(&img, &log)?;
            image_io::write_atomic(&y, &out, fmt)
        });
        match result {
            Ok(()) => written += 1,
            Err(msg) => {
                failed += 1;
                pb.suspend(|| eprintln!("error: {}: {msg}", input.display()));
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    (written, failed)
}

pub fn run(a: StylizeArgs, ptx: Option<PathBuf>) -> Outcome {
    if !(0.0..=1.0).contains(&a.alpha) {
        return Err(Failure::setup(format!(
            "--alpha {}: must be between 0 and 1",
            a.alpha
        )));
    }
    if a.max_size == Some(0) {
        return Err(Failure::setup("--max-size must be at least 1"));
    }
    let (files, batch) = image_io::expand_inputs(&a.input).map_err(Failure::setup)?;
    let plan = plan(&files, batch, &a.output, a.format)?;

    let gpu = pick_device(a.device, ptx)?;

    let (weights, kind) = model::load_weights(&a.model).map_err(Failure::setup)?;
    if kind == Kind::StyleVit && a.style.is_none() {
        return Err(Failure::setup(format!(
            "{}: is a {} model, which needs --style STYLE_IMAGE",
            a.model.display(),
            kind.name()
        )));
    }
    if kind == Kind::TransformerNet && a.style.is_some() {
        eprintln!("note: {} is a TransformerNet model (its style is built in); --style and --alpha are ignored", a.model.display());
    }
    let net = model::build(weights, kind, a.heads).map_err(Failure::setup)?;

    let style = match (&net, &a.style) {
        (Net::Vit(v), Some(path)) => {
            let img = image_io::load_rgb(path)
                .map_err(|e| Failure::setup(format!("{}: {e}", path.display())))?;
            let img = image_io::limit_size(img, a.max_size);
            vit_size_ok(
                img.width() as usize,
                img.height() as usize,
                v.cfg.patch_size,
            )
            .map_err(|e| Failure::setup(format!("{}: {e}", path.display())))?;
            let t = image_io::rgb_to_tensor(&img, 1.0 / 255.0);
            Some(image_io::reflect_pad_multiple(&t, v.cfg.patch_size))
        }
        _ => None,
    };

    let mut engine = Engine::new(
        gpu.as_ref(),
        &net,
        a.device == DeviceChoice::Auto,
        a.precision.unwrap_or(DEFAULT_PRECISION),
    )?;
    let precision = engine.precision();
    if let Some(note) = precision_note(a.precision, engine.gpu.is_some()) {
        eprintln!("note: {note}");
    }
    match &net {
        Net::Tnet(_) => eprintln!(
            "model: {} ({}, {})",
            a.model.display(),
            kind.name(),
            precision.name()
        ),
        Net::Vit(v) => eprintln!(
            "model: {} (StyleViT: patch {}, dim {}, {} heads, {} blocks, ffn {}, {})",
            a.model.display(),
            v.cfg.patch_size,
            v.cfg.embed_dim,
            v.cfg.num_heads,
            v.cfg.num_blocks,
            v.cfg.ffn_dim,
            precision.name()
        ),
    }

    if let Some(dir) = &plan.dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::setup(format!("{}: cannot create the folder: {e}", dir.display()))
        })?;
    }

    let total = plan.items.len();
    let (written, failed) = process(plan.items, a.max_size, batch, |img, log| {
        engine.stylize(&net, style.as_ref(), a.alpha, img, log)
    });
    if batch {
        eprintln!(
            "wrote {written} of {total} images to {}",
            plan.dest.display()
        );
    } else if written == 1 {
        eprintln!("wrote {}", plan.dest.display());
    }
    if failed > 0 {
        eprintln!("{failed} of {total} images failed");
        Ok(1)
    } else {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the system temp dir, removed on drop.
    struct TmpDir(PathBuf);
    impl TmpDir {
        fn new(tag: &str) -> TmpDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir().join(format!(
                "styleforge-unit-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TmpDir(p)
        }
    }
    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn precision_notes_only_for_an_explicit_fp16_that_cannot_be_honoured() {
        let (f16, f32) = (Some(Precision::Fp16), Some(Precision::Fp32));
        // The default never nags; fp32 never needs a note; fp16 on the GPU is honoured (both nets).
        for gpu in [false, true] {
            assert_eq!(precision_note(None, gpu), None);
            assert_eq!(precision_note(f32, gpu), None);
        }
        assert_eq!(precision_note(f16, true), None);
        assert!(precision_note(f16, false).is_some_and(|n| n.contains("CPU") && n.contains("fp32")));
    }

    #[test]
    fn plan_batch_names_and_collisions() {
        let files = vec![
            PathBuf::from("in/a.png"),
            PathBuf::from("in/b.jpg"),
            PathBuf::from("other/a.jpg"),
        ];
        let p = plan(&files, true, Path::new("out"), None)
            .map_err(|f| f.msg)
            .unwrap();
        assert_eq!(p.dir.as_deref(), Some(Path::new("out")));
        assert_eq!(
            p.items[0].1.as_ref().unwrap(),
            &(PathBuf::from("out/a.png"), OutFormat::Png)
        );
        assert_eq!(p.items[1].1.as_ref().unwrap().0, PathBuf::from("out/b.png"));
        let e = p.items[2].1.as_ref().unwrap_err();
        assert!(e.contains("in/a.png"), "{e}");
        let p = plan(&files[..1], true, Path::new("out"), Some(OutFormat::Jpg))
            .map_err(|f| f.msg)
            .unwrap();
        assert_eq!(
            p.items[0].1.as_ref().unwrap(),
            &(PathBuf::from("out/a.jpg"), OutFormat::Jpg)
        );
    }

    #[test]
    fn plan_single_output_format() {
        let files = vec![PathBuf::from("a.png")];
        let p = plan(&files, false, Path::new("x/y.JPG"), None)
            .map_err(|f| f.msg)
            .unwrap();
        assert_eq!(
            p.items[0].1.as_ref().unwrap(),
            &(PathBuf::from("x/y.JPG"), OutFormat::Jpg)
        );
        assert_eq!(p.dir.as_deref(), Some(Path::new("x")));
        let f = plan(&files, false, Path::new("y.unknown"), None)
            .err()
            .unwrap();
        assert_eq!(f.code, 2);
        assert!(f.msg.contains("y.unknown"));
        let p = plan(&files, false, Path::new("y.unknown"), Some(OutFormat::Bmp))
            .map_err(|f| f.msg)
            .unwrap();
        assert_eq!(p.items[0].1.as_ref().unwrap().1, OutFormat::Bmp);
    }

    #[test]
    fn plan_refuses_overwriting_an_input() {
        let t = TmpDir::new("plan");
        let a = t.0.join("a.png");
        image::RgbImage::new(2, 2).save(&a).unwrap();
        let p = plan(std::slice::from_ref(&a), true, &t.0, None)
            .map_err(|f| f.msg)
            .unwrap();
        assert!(p.items[0].1.as_ref().unwrap_err().contains("overwrite"));
        let p = plan(std::slice::from_ref(&a), false, &a, None)
            .map_err(|f| f.msg)
            .unwrap();
        assert!(p.items[0].1.is_err());
        // An existing file given as the folder of a batch.
        let f = plan(&[a.clone(), a.clone()], true, &a, None).err().unwrap();
        assert_eq!(f.code, 2);
    }

    #[test]
    fn process_writes_good_images_and_reports_bad_ones() {
        let t = TmpDir::new("process");
        let (src, out) = (t.0.join("in"), t.0.join("out"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        let mut img = image::RgbImage::new(5, 4);
        img.put_pixel(1, 2, image::Rgb([10, 20, 30]));
        img.save(src.join("a.png")).unwrap();
        std::fs::write(src.join("x.png"), b"definitely not a png").unwrap();
        img.save(src.join("b.bmp")).unwrap();
        let (files, batch) = image_io::expand_inputs(std::slice::from_ref(&src)).unwrap();
        assert!(batch);
        assert_eq!(files.len(), 3);
        let p = plan(&files, batch, &out, None).map_err(|f| f.msg).unwrap();
        let mut calls = 0;
        let (written, failed) = process(p.items, None, false, |img, _log| {
            calls += 1;
            let mut y = img.clone();
            y.pixels_mut().for_each(|p| p.0 = p.0.map(|v| 255 - v));
            Ok(y)
        });
        assert_eq!((written, failed, calls), (2, 1, 2));
        assert_eq!(names(&out), vec!["a.png", "b.png"]);
        let a = image::open(out.join("a.png")).unwrap().to_rgb8();
        assert_eq!(a.dimensions(), (5, 4));
        assert_eq!(a.get_pixel(1, 2).0, [245, 235, 225]);

        // A stylizer that fails writes nothing.
        let out2 = t.0.join("out2");
        std::fs::create_dir_all(&out2).unwrap();
        let p = plan(&files, batch, &out2, None).map_err(|f| f.msg).unwrap();
        let (written, failed) = process(p.items, Some(2), false, |img, _| {
            assert!(img.width() <= 2 && img.height() <= 2); // --max-size applied
            Err("boom".into())
        });
        assert_eq!((written, failed), (0, 3));
        assert!(names(&out2).is_empty());
    }
}
