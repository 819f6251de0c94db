//! safetensors files: F32, F16, BF16 and F64 tensors (converted to f32) plus `__metadata__`.
use std::collections::BTreeMap;
use std::path::Path;

use ::safetensors::{Dtype, SafeTensors};

use super::{decode_f32, FloatKind, Weights};
use crate::{Error, Result, Tensor};

pub(crate) fn load(path: &Path, bytes: &[u8]) -> Result<Weights> {
    let fmt = |e: ::safetensors::SafeTensorError| Error::Format {
        path: path.to_path_buf(),
        msg: format!("not a valid safetensors file: {e:?}"),
    };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(fmt)?;
    let st = SafeTensors::deserialize(bytes).map_err(fmt)?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let kind = match view.dtype() {
            Dtype::F32 => FloatKind::F32,
            Dtype::F16 => FloatKind::F16,
            Dtype::BF16 => FloatKind::BF16,
            Dtype::F64 => FloatKind::F64,
            other => {
                return Err(Error::DType {
                    path: path.to_path_buf(),
                    key: name.clone(),
                    found: format!("{other:?}"),
                })
            }
        };
        let data = decode_f32(kind, view.data());
        let shape = view.shape().to_vec();
        if shape.iter().product::<usize>() != data.len() {
            return Err(Error::Format {
                path: path.to_path_buf(),
                msg: format!("`{name}`: data does not match shape {shape:?}"),
            });
        }
        tensors.insert(name, Tensor { shape, data });
    }
    let metadata = meta
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    Ok(Weights::from_map(path, tensors, metadata))
}
