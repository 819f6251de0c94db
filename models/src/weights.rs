//! Weight files: safetensors, PyTorch `.pth` (zip format and legacy pickle format). The pickle reader
//! executes nothing: it accepts only the opcodes and globals a tensor state dict uses.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result, Tensor};

/// A loaded state dict: name -> f32 tensor (f16/bf16/f64 are converted), plus safetensors `__metadata__`.
pub struct Weights {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl Weights {
    /// Weights from tensors already in memory (`path` names their origin in errors, e.g. "<random>").
    pub fn from_map(path: impl Into<PathBuf>, tensors: BTreeMap<String, Tensor>, metadata: BTreeMap<String, String>) -> Weights {
        Weights { path: path.into(), tensors, metadata }
    }

    /// Reads `.safetensors` or `.pth`/`.pt` (by content, not extension): zip or legacy pickle.
    pub fn load(path: &Path) -> Result<Weights> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.to_path_buf(), msg: e.to_string() })?;
        Self::load_safetensors(path, &bytes)
    }

    fn load_safetensors(path: &Path, bytes: &[u8]) -> Result<Weights> {
        let fmt = |msg: String| Error::Format { path: path.to_path_buf(), msg };
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| fmt(format!("not a valid safetensors file: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| fmt(format!("not a valid safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                other => return Err(Error::DType { path: path.to_path_buf(), key: name.clone(), found: format!("{other:?}") }),
            };
            tensors.insert(name.clone(), Tensor { shape: view.shape().to_vec(), data });
        }
        let metadata = meta.metadata().clone().map(|m| m.into_iter().collect()).unwrap_or_default();
        Ok(Weights { path: path.to_path_buf(), tensors, metadata })
    }

    /// Removes and returns `key`, checking its shape and that every value is finite.
    pub fn take(&mut self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.remove(key).ok_or_else(|| Error::MissingKey { path: self.path.clone(), key: key.to_string() })?;
        if t.shape != shape {
            return Err(Error::Shape { path: self.path.clone(), key: key.to_string(), expected: shape.to_vec(), found: t.shape });
        }
        if t.data.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite { path: self.path.clone(), key: key.to_string() });
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
            Err(Error::UnexpectedKeys { path: self.path, keys: self.tensors.into_keys().collect() })
        }
    }
}
