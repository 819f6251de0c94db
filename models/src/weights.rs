//! Weight files: safetensors, PyTorch `.pth` (zip format and legacy pickle format). The pickle reader
//! executes nothing: it accepts only the opcodes and globals a tensor state dict uses.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Result, Tensor};

/// A loaded state dict: name -> f32 tensor (f16/bf16/f64 are converted), plus safetensors `__metadata__`.
pub struct Weights {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl Weights {
    /// Reads `.safetensors` or `.pth`/`.pt` (by content, not extension): zip or legacy pickle.
    pub fn load(path: &Path) -> Result<Weights> { todo!() }

    /// Removes and returns `key`, checking its shape and that every value is finite.
    pub fn take(&mut self, key: &str, shape: &[usize]) -> Result<Tensor> { todo!() }

    /// Shape of `key` if present (for inferring configurations from `.pth` files).
    pub fn shape_of(&self, key: &str) -> Option<&[usize]> { todo!() }

    /// Errors with `UnexpectedKeys` if anything was not taken.
    pub fn finish(self) -> Result<()> { todo!() }
}
