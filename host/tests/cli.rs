//! Tests of the `styleforge` binary as a user runs it. Run with
//! `LD_LIBRARY_PATH=$PWD/.tools/cuda/lib64 cargo test -p styleforge --test cli` on a machine without a
//! driver. Tests that need `../shared/fixtures` print `NOT RUN: ../shared absent` and return when it is
//! missing; the "no GPU" tests print `NOT RUN` on a machine that has a GPU.
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::{Rng, SeedableRng};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    /// Fails unless the command exited non-zero without panicking.
    fn assert_clean_failure(&self) {
        assert_ne!(self.code, 0, "expected a failure:\n{}", self.all());
        assert!(
            !self.all().contains("panicked"),
            "the binary panicked:\n{}",
            self.all()
        );
    }
}

fn styleforge(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_styleforge"))
        .args(args)
        .output()
        .expect("running styleforge");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A fresh folder under the system temp dir, removed on drop.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(tag: &str) -> TmpDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "styleforge-cli-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).expect("creating a temp dir");
        TmpDir(p)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("listing")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A small image with some structure.
fn write_image(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 11 % 256) as u8,
            ((x + y) * 5 % 256) as u8,
        ])
    });
    img.save(path).expect("writing a test image");
}

/// A file under `../shared/fixtures`, or None after printing NOT RUN.
fn fixture(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(name);
    if p.is_file() {
        Some(p)
    } else {
        println!("NOT RUN: ../shared absent ({} not found)", p.display());
        None
    }
}

fn has_gpu() -> bool {
    styleforge(&["info"]).code == 0
}

/// A minimal safetensors file (little-endian header length, JSON header, data).
fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>)], metadata: &str) {
    let mut header = format!("{{\"__metadata__\":{metadata}");
    let mut offset = 0;
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        header += &format!(
            ",\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            dims.join(","),
            offset + 4 * n
        );
        offset += 4 * n;
    }
    header += "}";
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, offset));
    std::fs::write(path, bytes).expect("writing safetensors");
}

/// `w` as a safetensors file (f32 tensors, string metadata), as PyTorch's exporter writes it.
fn save_weights(path: &Path, w: &models::Weights) {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!(w.metadata));
    let mut data: Vec<u8> = Vec::new();
    for (name, t) in &w.tensors {
        let start = data.len();
        data.extend(t.data.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(name.clone(), serde_json::json!({ "dtype": "F32", "shape": t.shape, "data_offsets": [start, data.len()] }));
    }
    let mut text = serde_json::Value::Object(header).to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).expect("writing safetensors");
}

/// A TransformerNet model file with seeded random weights (no ../shared needed).
fn random_tnet_model(dir: &TmpDir) -> PathBuf {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let path = dir.join("random_tnet.safetensors");
    save_weights(
        &path,
        &styleforge::selfcheck::random_weights::random_tnet_weights(&mut rng),
    );
    path
}

/// A small StyleViT model file with seeded random weights (patch 8, one block).
fn random_vit_model(dir: &TmpDir) -> PathBuf {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let cfg = models::StyleVitConfig {
        patch_size: 8,
        embed_dim: 32,
        num_heads: 2,
        num_blocks: 1,
        ffn_dim: 64,
    };
    let path = dir.join("random_vit.safetensors");
    save_weights(
        &path,
        &styleforge::selfcheck::random_weights::random_vit_weights(&cfg, &mut rng),
    );
    path
}

#[test]
fn help_lists_the_subcommands() {
    let r = styleforge(&["--help"]);
    assert_eq!(r.code, 0, "{}", r.all());
    for sub in ["stylize", "bench", "self-check", "info"] {
        assert!(r.stdout.contains(sub), "--help lacks {sub}:\n{}", r.stdout);
    }
    let r = styleforge(&["stylize", "--help"]);
    assert_eq!(r.code, 0, "{}", r.all());
    for opt in [
        "--model",
        "--input",
        "--output",
        "--device",
        "--style",
        "--alpha",
        "--max-size",
        "--format",
        "--precision",
    ] {
        assert!(
            r.stdout.contains(opt),
            "stylize --help lacks {opt}:\n{}",
            r.stdout
        );
    }
    let r = styleforge(&["bench", "--help"]);
    assert_eq!(r.code, 0);
    for opt in [
        "--model",
        "--sizes",
        "--batch",
        "--patch",
        "--warmup",
        "--iters",
        "--json",
        "--precision",
        "--layers",
    ] {
        assert!(
            r.stdout.contains(opt),
            "bench --help lacks {opt}:\n{}",
            r.stdout
        );
    }
}

#[test]
fn missing_model_file_is_named() {
    let t = TmpDir::new("missing");
    write_image(&t.join("a.png"), 8, 8);
    let model = t.join("no_such_model.safetensors");
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&model),
        "-i",
        s(&t.join("a.png")),
        "-o",
        s(&t.join("o.png")),
        "--device",
        "cpu",
    ]);
    r.assert_clean_failure();
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("no_such_model.safetensors"),
        "{}",
        r.stderr
    );
    assert!(!t.join("o.png").exists());
}

#[test]
fn corrupt_model_file_is_named() {
    let t = TmpDir::new("corrupt-model");
    write_image(&t.join("a.png"), 8, 8);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let garbage: Vec<u8> = (0..4096).map(|_| rng.gen()).collect();
    for name in ["garbage.safetensors", "garbage.pth"] {
        std::fs::write(t.join(name), &garbage).unwrap();
        let r = styleforge(&[
            "stylize",
            "--model",
            s(&t.join(name)),
            "-i",
            s(&t.join("a.png")),
            "-o",
            s(&t.join("o.png")),
            "--device",
            "cpu",
        ]);
        r.assert_clean_failure();
        assert!(r.stderr.contains(name), "{}", r.stderr);
        assert!(r.stderr.contains("error:"), "{}", r.stderr);
    }
    // An empty file and a folder as the model.
    std::fs::write(t.join("empty.safetensors"), b"").unwrap();
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&t.join("empty.safetensors")),
        "-i",
        s(&t.join("a.png")),
        "-o",
        s(&t.join("o.png")),
        "--device",
        "cpu",
    ]);
    r.assert_clean_failure();
    assert!(r.stderr.contains("empty.safetensors"), "{}", r.stderr);
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&t.0),
        "-i",
        s(&t.join("a.png")),
        "-o",
        s(&t.join("o.png")),
        "--device",
        "cpu",
    ]);
    r.assert_clean_failure();
    assert!(r.stderr.contains("folder"), "{}", r.stderr);
}

#[test]
fn weights_of_another_network_are_refused() {
    let t = TmpDir::new("other-net");
    write_image(&t.join("a.png"), 8, 8);
    let model = t.join("resnet.safetensors");
    write_safetensors(
        &model,
        &[("fc.weight", vec![4, 2]), ("fc.bias", vec![4])],
        "{\"arch\":\"resnet\"}",
    );
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&model),
        "-i",
        s(&t.join("a.png")),
        "-o",
        s(&t.join("o.png")),
        "--device",
        "cpu",
    ]);
    r.assert_clean_failure();
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("resnet.safetensors")
            && r.stderr.contains("neither a TransformerNet nor a StyleViT"),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_arguments_are_refused_before_any_work() {
    let t = TmpDir::new("args");
    write_image(&t.join("a.png"), 8, 8);
    let (a, o) = (t.join("a.png"), t.join("o.png"));
    let r = styleforge(&[
        "stylize",
        "--model",
        "m.safetensors",
        "-i",
        s(&a),
        "-o",
        s(&o),
        "--alpha",
        "1.5",
    ]);
    r.assert_clean_failure();
    assert!(r.stderr.contains("--alpha"), "{}", r.stderr);
    let r = styleforge(&[
        "stylize",
        "--model",
        "m.safetensors",
        "-i",
        s(&a),
        "-o",
        s(&t.join("o.unknown")),
    ]);
    r.assert_clean_failure();
    assert!(r.stderr.contains("o.unknown"), "{}", r.stderr);
    let empty = t.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let r = styleforge(&[
        "stylize",
        "--model",
        "m.safetensors",
        "-i",
        s(&empty),
        "-o",
        s(&t.join("out")),
    ]);
    r.assert_clean_failure();
    assert!(r.stderr.contains("no image files"), "{}", r.stderr);
    assert!(!t.join("out").exists());
    let r = styleforge(&["stylize", "-i", s(&a), "-o", s(&o)]);
    r.assert_clean_failure();
    assert!(r.stderr.contains("--model"), "{}", r.stderr);
}

#[test]
fn batch_with_a_corrupt_image_writes_the_others() {
    let Some(model) = fixture("tnet_a.safetensors") else {
        return;
    };
    let t = TmpDir::new("batch");
    let src = t.join("in");
    std::fs::create_dir_all(&src).unwrap();
    write_image(&src.join("a.png"), 24, 16);
    write_image(&src.join("b.jpg"), 21, 13);
    std::fs::write(
        src.join("x.png"),
        b"\x89PNG\r\n\x1a\nthis is not really a png at all",
    )
    .unwrap();
    std::fs::write(src.join("notes.txt"), b"not an image: skipped by extension").unwrap();
    write_image(&src.join("tiny.png"), 3, 3);
    let out = t.join("out");
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&model),
        "-i",
        s(&src),
        "-o",
        s(&out),
        "--device",
        "cpu",
    ]);
    r.assert_clean_failure();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("error:") && r.stderr.contains("x.png"),
        "the corrupt image is not named:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("notes.txt"), "{}", r.stderr);
    assert!(
        r.stderr.contains("tiny.png") && r.stderr.contains("at least 5x5"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("wrote 2 of 4 images"), "{}", r.stderr);
    assert_eq!(
        names(&out),
        vec!["a.png", "b.png"],
        "outputs (no temp files, nothing for x.png)"
    );
    assert_eq!(
        image::open(out.join("a.png"))
            .expect("a.png decodes")
            .to_rgb8()
            .dimensions(),
        (24, 16)
    );
    assert_eq!(
        image::open(out.join("b.png"))
            .expect("b.png decodes")
            .to_rgb8()
            .dimensions(),
        (21, 13)
    );
}

#[test]
fn several_files_go_into_a_folder_with_the_chosen_format() {
    let Some(model) = fixture("tnet_a.safetensors") else {
        return;
    };
    let t = TmpDir::new("files");
    write_image(&t.join("one.png"), 16, 12);
    write_image(&t.join("two.bmp"), 12, 16);
    let out = t.join("made/here");
    let missing = t.join("missing.png");
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&model),
        "-i",
        s(&t.join("one.png")),
        s(&t.join("two.bmp")),
        s(&missing),
        "-o",
        s(&out),
        "--device",
        "cpu",
        "--format",
        "jpg",
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("missing.png"), "{}", r.stderr);
    assert_eq!(names(&out), vec!["one.jpg", "two.jpg"]);
    assert_eq!(
        image::open(out.join("two.jpg"))
            .unwrap()
            .to_rgb8()
            .dimensions(),
        (12, 16)
    );
}

#[test]
fn single_image_keeps_its_size() {
    let Some(model) = fixture("tnet_a.safetensors") else {
        return;
    };
    let t = TmpDir::new("single");
    let input = t.join("in.png");
    write_image(&input, 40, 30);
    let out = t.join("out.png");
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&model),
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--device",
        "cpu",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let img = image::open(&out).expect("output decodes").to_rgb8();
    assert_eq!(img.dimensions(), (40, 30));
    let src = image::open(&input).unwrap().to_rgb8();
    assert_ne!(img, src, "the output is the input unchanged");
    assert_eq!(names(&t.0), vec!["in.png", "out.png"], "no temp files left");
    // --max-size downscales; the output takes the downscaled size.
    let small = t.join("small.jpg");
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&model),
        "-i",
        s(&input),
        "-o",
        s(&small),
        "--device",
        "cpu",
        "--max-size",
        "20",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        image::open(&small).unwrap().to_rgb8().dimensions(),
        (20, 15)
    );
}

#[test]
fn style_vit_needs_a_style_image() {
    let Some(model) = fixture("vit_nano.safetensors") else {
        return;
    };
    let t = TmpDir::new("vit-style");
    write_image(&t.join("a.png"), 8, 8);
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&model),
        "-i",
        s(&t.join("a.png")),
        "-o",
        s(&t.join("o.png")),
        "--device",
        "cpu",
    ]);
    r.assert_clean_failure();
    assert!(r.stderr.contains("--style"), "{}", r.stderr);
    assert!(!t.join("o.png").exists());
}

#[test]
fn style_vit_pads_and_crops_back() {
    let Some(model) = fixture("vit_nano.safetensors") else {
        return;
    };
    let t = TmpDir::new("vit");
    write_image(&t.join("content.png"), 50, 40);
    write_image(&t.join("style.png"), 20, 70);
    let out = t.join("out.png");
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&model),
        "-i",
        s(&t.join("content.png")),
        "-o",
        s(&out),
        "--style",
        s(&t.join("style.png")),
        "--alpha",
        "0.5",
        "--device",
        "cpu",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        image::open(&out)
            .expect("output decodes")
            .to_rgb8()
            .dimensions(),
        (50, 40)
    );
    // A content image of a single patch is refused by name.
    write_image(&t.join("one_patch.png"), 30, 20);
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&model),
        "-i",
        s(&t.join("one_patch.png")),
        "-o",
        s(&t.join("o1.png")),
        "--style",
        s(&t.join("style.png")),
        "--device",
        "cpu",
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("one_patch.png") && r.stderr.contains("at least two"),
        "{}",
        r.stderr
    );
    // A corrupt style image is a setup error naming it.
    std::fs::write(t.join("bad_style.png"), b"nope").unwrap();
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&model),
        "-i",
        s(&t.join("content.png")),
        "-o",
        s(&t.join("o2.png")),
        "--style",
        s(&t.join("bad_style.png")),
        "--device",
        "cpu",
    ]);
    r.assert_clean_failure();
    assert!(r.stderr.contains("bad_style.png"), "{}", r.stderr);
}

#[test]
fn device_cuda_without_gpu_is_a_clear_error() {
    if has_gpu() {
        println!("NOT RUN: this machine has a GPU");
        return;
    }
    let t = TmpDir::new("cuda");
    write_image(&t.join("a.png"), 8, 8);
    let r = styleforge(&[
        "stylize",
        "--model",
        "m.safetensors",
        "-i",
        s(&t.join("a.png")),
        "-o",
        s(&t.join("o.png")),
        "--device",
        "cuda",
    ]);
    r.assert_clean_failure();
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--device cuda") && r.stderr.contains("no GPU"),
        "{}",
        r.stderr
    );
    // auto falls back to the CPU and says so (then fails on the missing model).
    let r = styleforge(&[
        "stylize",
        "--model",
        "m.safetensors",
        "-i",
        s(&t.join("a.png")),
        "-o",
        s(&t.join("o.png")),
    ]);
    assert!(
        r.stderr.contains("device: CPU") && r.stderr.contains("no GPU"),
        "{}",
        r.stderr
    );
}

#[test]
fn gpu_commands_without_gpu_say_no_gpu() {
    if has_gpu() {
        println!("NOT RUN: this machine has a GPU");
        return;
    }
    for args in [
        &["self-check"][..],
        &["self-check", "--seed", "3", "--filter", "conv2d"],
        &["info"],
        &["bench", "--model", "vit-nano", "--sizes", "256"],
    ] {
        let r = styleforge(args);
        r.assert_clean_failure();
        assert!(r.all().contains("no GPU"), "{args:?}:\n{}", r.all());
    }
}

/// Sample 0 of an NCHW tensor as an 8-bit image: `v * scale` rounded, clamped, cropped to `w` x `h`.
fn tensor_image(t: &models::Tensor, w: usize, h: usize, scale: f32) -> image::RgbImage {
    let (th, tw) = (t.shape[2], t.shape[3]);
    image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let v = |c: usize| {
            (t.data[(c * th + y as usize) * tw + x as usize] * scale)
                .round()
                .clamp(0.0, 255.0) as u8
        };
        image::Rgb([v(0), v(1), v(2)])
    })
}

fn max_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

/// The fixture inputs are whole 8-bit values, so an image made from them goes through the CLI unchanged
/// and its output must be PyTorch's output, clamped, rounded and cropped (to within one level).
#[test]
fn cli_output_matches_pytorch_on_the_fixtures() {
    let (Some(tnet), Some(tnet_io), Some(vit), Some(vit_io)) = (
        fixture("tnet_a.safetensors"),
        fixture("tnet_a_io.safetensors"),
        fixture("vit_nano.safetensors"),
        fixture("vit_nano_io.safetensors"),
    ) else {
        return;
    };
    let t = TmpDir::new("fixtures");
    // TransformerNet, 250x190 (the network's output is 252x192; the CLI crops it).
    let io = models::Weights::load(&tnet_io).expect("loading tnet_a_io");
    let (input, output) = (&io.tensors["input_odd"], &io.tensors["output_odd"]);
    let (h, w) = (input.shape[2], input.shape[3]);
    tensor_image(input, w, h, 1.0)
        .save(t.join("odd.png"))
        .unwrap();
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&tnet),
        "-i",
        s(&t.join("odd.png")),
        "-o",
        s(&t.join("odd_out.png")),
        "--device",
        "cpu",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let got = image::open(t.join("odd_out.png")).unwrap().to_rgb8();
    assert!(
        max_abs_diff(&got, &tensor_image(output, w, h, 1.0)) <= 1,
        "TransformerNet output differs from PyTorch's"
    );

    // StyleViT, 128x192 content with a 256x256 style.
    let io = models::Weights::load(&vit_io).expect("loading vit_nano_io");
    let (content, style, output) = (
        &io.tensors["content_wide"],
        &io.tensors["style"],
        &io.tensors["output_wide"],
    );
    let (h, w) = (content.shape[2], content.shape[3]);
    tensor_image(content, w, h, 255.0)
        .save(t.join("wide.png"))
        .unwrap();
    tensor_image(style, style.shape[3], style.shape[2], 255.0)
        .save(t.join("style.png"))
        .unwrap();
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&vit),
        "-i",
        s(&t.join("wide.png")),
        "--style",
        s(&t.join("style.png")),
        "-o",
        s(&t.join("wide_out.png")),
        "--device",
        "cpu",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let got = image::open(t.join("wide_out.png")).unwrap().to_rgb8();
    assert!(
        max_abs_diff(&got, &tensor_image(output, w, h, 255.0)) <= 1,
        "StyleViT output differs from PyTorch's"
    );
}

#[test]
fn bad_precision_is_refused_naming_the_valid_values() {
    let t = TmpDir::new("precision-bad");
    write_image(&t.join("a.png"), 8, 8);
    let (a, o) = (t.join("a.png"), t.join("o.png"));
    let runs = [
        styleforge(&[
            "stylize",
            "--model",
            "m.safetensors",
            "-i",
            s(&a),
            "-o",
            s(&o),
            "--precision",
            "fp8",
        ]),
        styleforge(&["bench", "--precision", "bf16"]),
        styleforge(&[
            "bench",
            "--model",
            "transformer_net",
            "--precision",
            "fp16,int8",
        ]),
    ];
    for r in runs {
        r.assert_clean_failure();
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(r.stderr.contains("--precision"), "{}", r.stderr);
        assert!(
            r.stderr.contains("fp16") && r.stderr.contains("fp32"),
            "the valid values are not named:\n{}",
            r.stderr
        );
    }
    assert!(!o.exists());
}

#[test]
fn precision_fp32_on_the_cpu_stylizes() {
    let t = TmpDir::new("precision-fp32");
    let model = random_tnet_model(&t);
    write_image(&t.join("in.png"), 21, 14);
    let out = t.join("out.png");
    let r = styleforge(&[
        "stylize",
        "--model",
        s(&model),
        "-i",
        s(&t.join("in.png")),
        "-o",
        s(&out),
        "--device",
        "cpu",
        "--precision",
        "fp32",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("(TransformerNet, fp32)"),
        "the model line lacks the precision:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("note:"), "{}", r.stderr);
    let img = image::open(&out).expect("output decodes").to_rgb8();
    assert_eq!(img.dimensions(), (21, 14));
    assert_ne!(
        img,
        image::open(t.join("in.png")).unwrap().to_rgb8(),
        "the output is the input unchanged"
    );
}

#[test]
fn precision_fp16_on_the_cpu_notes_fp32_and_still_writes() {
    let t = TmpDir::new("precision-fp16");
    let model = random_tnet_model(&t);
    let input = t.join("in.png");
    write_image(&input, 19, 23);
    let stylize = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "stylize",
            "--model",
            s(&model),
            "-i",
            s(&input),
            "-o",
            s(out),
            "--device",
            "cpu",
        ];
        args.extend_from_slice(extra);
        styleforge(&args)
    };
    let (o16, o32, odef) = (
        t.join("fp16.png"),
        t.join("fp32.png"),
        t.join("default.png"),
    );
    let r = stylize(&o16, &["--precision", "fp16"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        r.stderr.matches("note:").count(),
        1,
        "one note expected:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("note:") && r.stderr.contains("CPU") && r.stderr.contains("fp32"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("(TransformerNet, fp32)"), "{}", r.stderr);
    // The default (fp16) runs fp32 on the CPU without a note.
    let r = stylize(&odef, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !r.stderr.contains("note:"),
        "the default precision must not nag:\n{}",
        r.stderr
    );
    let r = stylize(&o32, &["--precision", "fp32"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // All three ran the same fp32 CPU path.
    let img = |p: &Path| image::open(p).expect("output decodes").to_rgb8();
    assert_eq!(img(&o16).dimensions(), (19, 23));
    assert_eq!(img(&o16), img(&o32));
    assert_eq!(img(&odef), img(&o32));
}

#[test]
fn style_vit_on_the_cpu_notes_fp32_only_when_fp16_is_asked_for() {
    let t = TmpDir::new("precision-vit");
    let model = random_vit_model(&t);
    let (content, style) = (t.join("c.png"), t.join("st.png"));
    write_image(&content, 24, 16);
    write_image(&style, 16, 16);
    let run = |out: &str, extra: &[&str]| {
        let o = t.join(out);
        let mut args = vec![
            "stylize",
            "--model",
            s(&model),
            "-i",
            s(&content),
            "--style",
            s(&style),
            "-o",
            s(&o),
            "--device",
            "cpu",
        ];
        args.extend_from_slice(extra);
        let r = styleforge(&args);
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(
            image::open(t.join(out))
                .expect("output decodes")
                .to_rgb8()
                .dimensions(),
            (24, 16)
        );
        r
    };
    let r = run("a.png", &["--precision", "fp16"]);
    assert_eq!(r.stderr.matches("note:").count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("CPU path is fp32 only"), "{}", r.stderr);
    assert!(
        r.stderr.contains("fp32)"),
        "the model line lacks the precision:\n{}",
        r.stderr
    );
    for extra in [&[][..], &["--precision", "fp32"]] {
        let r = run("b.png", extra);
        assert!(!r.stderr.contains("note:"), "{extra:?}:\n{}", r.stderr);
    }
}

#[test]
fn bench_and_psnr_check_without_gpu_fail_clearly() {
    if has_gpu() {
        println!("NOT RUN: this machine has a GPU");
        return;
    }
    for args in [
        &[
            "bench",
            "--model",
            "transformer_net",
            "--precision",
            "fp16,fp32",
            "--sizes",
            "64",
        ][..],
        &[
            "bench",
            "--model",
            "transformer_net",
            "--precision",
            "fp16",
            "--sizes",
            "64",
            "--layers",
            "--json",
        ],
    ] {
        let r = styleforge(args);
        r.assert_clean_failure();
        assert_eq!(r.code, 2, "{args:?}:\n{}", r.all());
        assert!(
            r.stderr.contains("bench needs a GPU") && r.stderr.contains("no GPU"),
            "{args:?}:\n{}",
            r.stderr
        );
        assert!(
            r.stdout.is_empty(),
            "{args:?} printed a table without a GPU:\n{}",
            r.stdout
        );
    }
    let t = TmpDir::new("psnr-nogpu");
    let r = styleforge(&[
        "self-check",
        "--filter",
        "psnr",
        "--fixtures",
        s(&t.0),
        "--images",
        s(&t.0),
    ]);
    r.assert_clean_failure();
    assert!(r.all().contains("no GPU"), "{}", r.all());
}

#[test]
fn self_check_images_flag_is_validated_first() {
    let t = TmpDir::new("psnr-args");
    let r = styleforge(&["self-check", "--images", s(&t.0)]);
    r.assert_clean_failure();
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--images needs --fixtures"),
        "{}",
        r.stderr
    );
    let r = styleforge(&[
        "self-check",
        "--fixtures",
        s(&t.0),
        "--images",
        s(&t.join("nope")),
    ]);
    r.assert_clean_failure();
    assert!(
        r.stderr.contains("nope") && r.stderr.contains("not a folder"),
        "{}",
        r.stderr
    );
    let r = styleforge(&["self-check", "--filter", "no-such-check"]);
    r.assert_clean_failure();
    assert!(r.stderr.contains("matches no check"), "{}", r.stderr);
}

#[test]
fn psnr_is_shared_with_the_library() {
    use styleforge::selfcheck::psnr::{psnr, MIN_PSNR_DB};
    // Two images one level apart everywhere: 48.13 dB, above the fast path's bar.
    let a = image::RgbImage::from_fn(9, 7, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 30) as u8, 77])
    });
    let mut b = a.clone();
    b.pixels_mut().for_each(|p| p.0 = p.0.map(|v| v + 1));
    let db = psnr(a.as_raw(), b.as_raw()).unwrap();
    assert!((db - 48.1308).abs() < 1e-3 && db >= MIN_PSNR_DB, "{db}");
    assert_eq!(psnr(a.as_raw(), a.as_raw()), Ok(f64::INFINITY));
}
