//! Images in and out: finding inputs, decoding to NCHW tensors, reflection padding, cropping and
//! quantising network outputs, and writing files atomically.
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use image::{ImageFormat, RgbImage};
use models::Tensor;

/// Extensions (lower case) of the files a folder input contributes.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "gif", "tga", "ppm", "pgm", "pbm", "pnm",
    "qoi",
];

/// The formats outputs can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    Png,
    #[value(alias = "jpeg")]
    Jpg,
    Bmp,
    #[value(alias = "tif")]
    Tiff,
    Webp,
    Tga,
    #[value(alias = "pnm")]
    Ppm,
    Qoi,
}

impl OutFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutFormat::Png => "png",
            OutFormat::Jpg => "jpg",
            OutFormat::Bmp => "bmp",
            OutFormat::Tiff => "tiff",
            OutFormat::Webp => "webp",
            OutFormat::Tga => "tga",
            OutFormat::Ppm => "ppm",
            OutFormat::Qoi => "qoi",
        }
    }
    pub fn image_format(self) -> ImageFormat {
        match self {
            OutFormat::Png => ImageFormat::Png,
            OutFormat::Jpg => ImageFormat::Jpeg,
            OutFormat::Bmp => ImageFormat::Bmp,
            OutFormat::Tiff => ImageFormat::Tiff,
            OutFormat::Webp => ImageFormat::WebP,
            OutFormat::Tga => ImageFormat::Tga,
            OutFormat::Ppm => ImageFormat::Pnm,
            OutFormat::Qoi => ImageFormat::Qoi,
        }
    }
    /// The format an output path's extension asks for.
    pub fn from_path(path: &Path) -> Option<OutFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        OutFormat::from_str(&ext, true).ok()
    }
}

pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Expands the `--input` arguments: a folder contributes its image files (non-recursive, sorted by name),
/// a file is taken as given (a missing one is reported when it is processed). Returns the files and
/// whether this is a batch (several inputs, or any folder).
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<(Vec<PathBuf>, bool), String> {
    let mut files = Vec::new();
    let mut any_dir = false;
    for input in inputs {
        if input.is_dir() {
            any_dir = true;
            let entries = fs::read_dir(input)
                .map_err(|e| format!("{}: cannot list the folder: {e}", input.display()))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && has_image_extension(p))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{}: the folder holds no image files (looked for {})",
                    input.display(),
                    IMAGE_EXTENSIONS.join(", ")
                ));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    let batch = any_dir || files.len() > 1;
    Ok((files, batch))
}

/// Decodes an image file (format from its content) to 8-bit RGB. The error does not repeat the path.
pub fn load_rgb(path: &Path) -> Result<RgbImage, String> {
    let reader = image::ImageReader::open(path).map_err(|e| e.to_string())?;
    let reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not an image in a format this program reads (png, jpeg, bmp, tiff, webp, gif, tga, pnm, qoi)".into());
    }
    let img = reader
        .decode()
        .map_err(|e| format!("cannot decode the image: {e}"))?;
    if img.width() == 0 || img.height() == 0 {
        return Err("the image is empty (0 pixels)".into());
    }
    Ok(img.to_rgb8())
}

/// Shrinks `img` so that its longer side is at most `max_size` (aspect ratio kept; never enlarges).
pub fn limit_size(img: RgbImage, max_size: Option<u32>) -> RgbImage {
    let Some(m) = max_size else { return img };
    let (w, h) = img.dimensions();
    let long = w.max(h);
    if long <= m {
        return img;
    }
    let scale = m as f64 / long as f64;
    let nw = ((w as f64 * scale).round() as u32).clamp(1, m);
    let nh = ((h as f64 * scale).round() as u32).clamp(1, m);
    image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Lanczos3)
}

/// RGB image -> [1, 3, H, W] with each 8-bit value multiplied by `scale` (1 for 0..255, 1/255 for 0..1).
pub fn rgb_to_tensor(img: &RgbImage, scale: f32) -> Tensor {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = w * h;
    let mut data = vec![0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            data[c * plane + i] = p.0[c] as f32 * scale;
        }
    }
    Tensor::new(&[1, 3, h, w], data)
}

/// The top-left `w` x `h` of sample 0 of a [N, 3, H', W'] network output (H' >= h, W' >= w), clamped
/// to 0..`max` and mapped to 0..255 with rounding. NaN becomes 0.
pub fn tensor_to_rgb(t: &Tensor, w: usize, h: usize, max: f32) -> Result<RgbImage, String> {
    if t.shape.len() != 4 || t.shape[1] != 3 || t.shape[0] == 0 || t.shape[2] < h || t.shape[3] < w
    {
        return Err(format!(
            "the network returned shape {:?}, expected [N, 3, >={h}, >={w}]",
            t.shape
        ));
    }
    let (th, tw) = (t.shape[2], t.shape[3]);
    let mut img = RgbImage::new(w as u32, h as u32);
    for (x, y, p) in img.enumerate_pixels_mut() {
        for c in 0..3 {
            let v = t.data[(c * th + y as usize) * tw + x as usize];
            let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, max) };
            p.0[c] = (v * (255.0 / max)).round() as u8;
        }
    }
    Ok(img)
}

/// Index into a dimension of length `n` for a position `i >= n` past its end, mirrored as
/// ReflectionPad does (edge not repeated: n=5 gives 0 1 2 3 4 3 2 1 0 1 ...). Repeats the mirroring for
/// pads longer than the dimension; a dimension of 1 is replicated.
pub fn reflect_index(i: usize, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let r = i % period;
    if r < n {
        r
    } else {
        period - r
    }
}

/// Pads [B, C, H, W] on the bottom and right by reflection up to `(ht, wt)` (each >= the current size).
pub fn reflect_pad_to(t: &Tensor, ht: usize, wt: usize) -> Tensor {
    let (b, c, h, w) = (t.shape[0], t.shape[1], t.shape[2], t.shape[3]);
    if ht == h && wt == w {
        return t.clone();
    }
    let mut out = vec![0f32; b * c * ht * wt];
    for plane in 0..b * c {
        let src = &t.data[plane * h * w..(plane + 1) * h * w];
        let dst = &mut out[plane * ht * wt..(plane + 1) * ht * wt];
        for y in 0..ht {
            let sy = reflect_index(y, h);
            for x in 0..wt {
                dst[y * wt + x] = src[sy * w + reflect_index(x, w)];
            }
        }
    }
    Tensor::new(&[b, c, ht, wt], out)
}

/// Reflection-pads [B, C, H, W] on the bottom and right to the next multiples of `p`.
pub fn reflect_pad_multiple(t: &Tensor, p: usize) -> Tensor {
    let (h, w) = (t.shape[2], t.shape[3]);
    reflect_pad_to(t, h.div_ceil(p) * p, w.div_ceil(p) * p)
}

/// Encodes `img` and writes it to `path` through a temporary file in the same folder renamed into
/// place, so a failed write leaves neither a partial output nor the temporary file.
pub fn write_atomic(img: &RgbImage, path: &Path, format: OutFormat) -> Result<(), String> {
    let mut bytes = Vec::new();
    match format {
        OutFormat::Jpg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
            img.write_with_encoder(enc)
                .map_err(|e| format!("cannot encode as JPEG: {e}"))?;
        }
        OutFormat::Ppm => {
            // Binary P6 (the encoder's default for RGB is PAM, which fewer programs read).
            use image::codecs::pnm::{PnmEncoder, PnmSubtype, SampleEncoding};
            let enc = PnmEncoder::new(&mut bytes)
                .with_subtype(PnmSubtype::Pixmap(SampleEncoding::Binary));
            img.write_with_encoder(enc)
                .map_err(|e| format!("cannot encode as PPM: {e}"))?;
        }
        f => img
            .write_to(&mut Cursor::new(&mut bytes), f.image_format())
            .map_err(|e| format!("cannot encode as {}: {e}", f.extension()))?,
    }
    let name = path
        .file_name()
        .ok_or_else(|| "the output path has no file name".to_string())?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write the output: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_index_matches_reflection_pad() {
        // ReflectionPad2d on [a b c d e] padding 3 on the right: a b c d e d c b
        let got: Vec<usize> = (0..8).map(|i| reflect_index(i, 5)).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 3, 2, 1]);
        // Longer than the dimension: keeps mirroring.
        let got: Vec<usize> = (0..9).map(|i| reflect_index(i, 3)).collect();
        assert_eq!(got, vec![0, 1, 2, 1, 0, 1, 2, 1, 0]);
        assert_eq!(reflect_index(7, 1), 0);
    }

    #[test]
    fn pad_to_multiple_then_values() {
        // one 2x3 plane, pad to multiples of 4 -> 4x4
        let t = Tensor::new(&[1, 1, 2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let p = reflect_pad_multiple(&t, 4);
        assert_eq!(p.shape, vec![1, 1, 4, 4]);
        #[rustfmt::skip]
        let expected = vec![
            1., 2., 3., 2.,
            4., 5., 6., 5.,
            1., 2., 3., 2.,
            4., 5., 6., 5.,
        ];
        assert_eq!(p.data, expected);
    }

    #[test]
    fn tensor_round_trip_crop_clamp() {
        let mut img = RgbImage::new(3, 2);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([x as u8 * 10, y as u8 * 20, 200]);
        }
        let t = rgb_to_tensor(&img, 1.0);
        assert_eq!(t.shape, vec![1, 3, 2, 3]);
        assert_eq!(t.data[3 + 1], 10.0); // R at (x=1, y=1)
        assert_eq!(t.data[6 + 3 + 2], 20.0); // G at (x=2, y=1)
                                             // A larger output: pad by 1 on each dim, then crop back.
        let mut big = reflect_pad_to(&t, 3, 4);
        big.data[0] = -5.0; // clamps to 0
        big.data[2 * 12 + 1] = 300.4; // B at (x=1, y=0) clamps to 255
        let back = tensor_to_rgb(&big, 3, 2, 255.0).unwrap();
        assert_eq!(back.get_pixel(0, 0).0, [0, 0, 200]);
        assert_eq!(back.get_pixel(1, 0).0, [10, 0, 255]);
        assert_eq!(back.get_pixel(2, 1).0, [20, 20, 200]);
        // 0..1 scale with rounding
        let one = Tensor::new(&[1, 3, 1, 1], vec![0.5, 1.2, f32::NAN]);
        assert_eq!(
            tensor_to_rgb(&one, 1, 1, 1.0).unwrap().get_pixel(0, 0).0,
            [128, 255, 0]
        );
        assert!(tensor_to_rgb(&one, 2, 1, 1.0).is_err());
    }

    #[test]
    fn limit_size_keeps_aspect() {
        let img = RgbImage::new(400, 100);
        let s = limit_size(img, Some(200));
        assert_eq!(s.dimensions(), (200, 50));
        assert_eq!(
            limit_size(RgbImage::new(10, 20), Some(200)).dimensions(),
            (10, 20)
        );
    }

    #[test]
    fn every_format_round_trips() {
        let dir = std::env::temp_dir().join(format!("styleforge-fmt-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let img = RgbImage::from_fn(9, 7, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 77]));
        for f in OutFormat::value_variants() {
            let p = dir.join(format!("t.{}", f.extension()));
            write_atomic(&img, &p, *f).unwrap();
            let back = load_rgb(&p).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            assert_eq!(back.dimensions(), (9, 7), "{f:?}");
            if *f != OutFormat::Jpg {
                assert_eq!(back, img, "{f:?} is lossless");
            }
        }
        let ppm = fs::read(dir.join("t.ppm")).unwrap();
        assert!(ppm.starts_with(b"P6"));
        let mut left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(
            left.len(),
            OutFormat::value_variants().len(),
            "temp files left: {left:?}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn out_format_from_path() {
        assert_eq!(
            OutFormat::from_path(Path::new("a/b.JPEG")),
            Some(OutFormat::Jpg)
        );
        assert_eq!(
            OutFormat::from_path(Path::new("b.png")),
            Some(OutFormat::Png)
        );
        assert_eq!(OutFormat::from_path(Path::new("b")), None);
        assert_eq!(OutFormat::from_path(Path::new("b.xyz")), None);
    }
}
