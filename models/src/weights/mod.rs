//! Weight files: safetensors, PyTorch `.pth` (zip format and legacy pickle format). The pickle reader
//! executes nothing: it accepts only the opcodes and globals a tensor state dict uses.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result, Tensor};

mod pickle;
mod pth;
mod safetensors;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Safetensors,
    Zip,
    Legacy,
}

/// The container, from the first bytes. A safetensors file starts with a u64 header length and the
/// JSON header's `{`; a zip with a local file header `PK\x03\x04`; a legacy `.pth` with the pickle
/// PROTO opcode (0x80) of its magic-number pickle. The three never collide: byte 8 of a zip is a
/// compression method (0 or 8) and of a legacy file a byte of the magic number (0xf9).
fn detect(bytes: &[u8]) -> Option<Kind> {
    if bytes.len() >= 9 && bytes[8] == b'{' {
        Some(Kind::Safetensors)
    } else if bytes.starts_with(b"PK\x03\x04") {
        Some(Kind::Zip)
    } else if bytes.first() == Some(&0x80) {
        Some(Kind::Legacy)
    } else {
        None
    }
}

/// The float element types that are converted to f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FloatKind {
    F32,
    F64,
    F16,
    BF16,
}

impl FloatKind {
    pub(crate) fn size(self) -> usize {
        match self {
            FloatKind::F32 => 4,
            FloatKind::F64 => 8,
            FloatKind::F16 | FloatKind::BF16 => 2,
        }
    }
}

/// Little-endian elements of `kind` to f32 (`bytes.len()` must be a multiple of the element size).
pub(crate) fn decode_f32(kind: FloatKind, bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(kind.size())
        .map(|c| decode_one(kind, c))
        .collect()
}

/// One little-endian element (`bytes` holds at least `kind.size()` bytes).
pub(crate) fn decode_one(kind: FloatKind, b: &[u8]) -> f32 {
    match kind {
        FloatKind::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        FloatKind::F64 => {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        }
        FloatKind::F16 => f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
        FloatKind::BF16 => f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16),
    }
}

/// IEEE binary16 to binary32 (exact: every half value is a float).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 => {
            // Zero or subnormal: man * 2^-24.
            let v = man as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        31 => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// A loaded state dict: name -> f32 tensor (f16/bf16/f64 are converted), plus safetensors `__metadata__`.
pub struct Weights {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl Weights {
    /// Weights from tensors already in memory (`path` names their origin in errors, e.g. "<random>").
    pub fn from_map(
        path: impl Into<PathBuf>,
        tensors: BTreeMap<String, Tensor>,
        metadata: BTreeMap<String, String>,
    ) -> Weights {
        Weights {
            path: path.into(),
            tensors,
            metadata,
        }
    }

    /// Reads `.safetensors` or `.pth`/`.pt` (by content, not extension): zip or legacy pickle.
    pub fn load(path: &Path) -> Result<Weights> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// Like [`Weights::load`] for a file already in memory; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Weights> {
        match detect(bytes) {
            Some(Kind::Safetensors) => safetensors::load(path, bytes),
            Some(Kind::Zip) => Ok(Weights::from_map(
                path,
                pth::load_zip(path, bytes)?,
                BTreeMap::new(),
            )),
            Some(Kind::Legacy) => Ok(Weights::from_map(
                path,
                pth::load_legacy(path, bytes)?,
                BTreeMap::new(),
            )),
            None => Err(Error::Format {
                path: path.to_path_buf(),
                msg: "not a safetensors, zip .pth or legacy .pth file".into(),
            }),
        }
    }

    /// Removes and returns `key`, checking its shape and that every value is finite.
    pub fn take(&mut self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.remove(key).ok_or_else(|| Error::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })?;
        if t.shape != shape {
            return Err(Error::Shape {
                path: self.path.clone(),
                key: key.to_string(),
                expected: shape.to_vec(),
                found: t.shape,
            });
        }
        if t.data.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                path: self.path.clone(),
                key: key.to_string(),
            });
        }
        Ok(t)
    }

    /// Shape of `key` if present (for inferring configurations from `.pth` files).
    pub fn shape_of(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|t| t.shape.as_slice())
    }

    /// Errors with `UnexpectedKeys` if anything was not taken.
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            Ok(())
        } else {
            Err(Error::UnexpectedKeys {
                path: self.path,
                keys: self.tensors.into_keys().collect(),
            })
        }
    }
}
