//! PyTorch `.pth` containers: the zip format (`torch.save` since 1.6) and the legacy (pre-1.6) stream
//! of pickles followed by raw storages. Both describe the state dict with the same pickle (see
//! `pickle.rs`); this file finds the storage bytes and turns each tensor view into an f32 `Tensor`.
use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::path::Path;

use super::pickle::{self, Key, Obj, Pickle, StorageDType, TensorRef, Value};
use super::{decode_f32, decode_one, FloatKind};
use crate::{Error, Result, Tensor};

/// The first pickle of a legacy file holds this number.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i128 = 1001;
/// Upper bound on a zip's `data.pkl` (a state dict pickle is kilobytes).
const MAX_PICKLE_BYTES: u64 = 256 << 20;

fn format(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// The `(name, tensor view)` entries of a state dict pickle, in file order.
fn state_dict(path: &Path, p: &Pickle) -> Result<Vec<(String, TensorRef)>> {
    let Some(Obj::Dict(d)) = p.obj(p.root) else {
        return Err(format(
            path,
            format!(
                "the pickle holds a {}, expected a state dict",
                p.type_name(p.root)
            ),
        ));
    };
    let mut out = Vec::with_capacity(d.entries.len());
    for (k, v) in &d.entries {
        let Key::Str(name) = k else {
            return Err(format(
                path,
                format!("state dict key {k:?} is not a string"),
            ));
        };
        match p.obj(*v) {
            Some(Obj::Tensor(t)) => out.push((name.clone(), t.clone())),
            _ => {
                return Err(format(
                    path,
                    format!("`{name}` is not a tensor (found {})", p.type_name(*v)),
                ))
            }
        }
    }
    Ok(out)
}

fn float_kind(path: &Path, name: &str, d: StorageDType) -> Result<FloatKind> {
    match d {
        StorageDType::F32 => Ok(FloatKind::F32),
        StorageDType::F64 => Ok(FloatKind::F64),
        StorageDType::F16 => Ok(FloatKind::F16),
        StorageDType::BF16 => Ok(FloatKind::BF16),
        other => Err(Error::DType {
            path: path.to_path_buf(),
            key: name.to_string(),
            found: other.name().to_string(),
        }),
    }
}

/// Reads tensor `name` (a view of `t.storage`) from `root`, the bytes of its root storage.
fn materialize(path: &Path, name: &str, t: &TensorRef, root: &[u8]) -> Result<Tensor> {
    let kind = float_kind(path, name, t.storage.dtype)?;
    let s = &t.storage;
    let esize = s.dtype.elem_size();
    let need = s.root_numel.checked_mul(esize as u64);
    if need.is_none_or(|n| (root.len() as u64) < n) {
        return Err(format(
            path,
            format!(
                "`{name}`: storage `{}` holds {} bytes, needs {} elements of {esize} bytes",
                s.key,
                root.len(),
                s.root_numel
            ),
        ));
    }
    let bad_view = || {
        format(
            path,
            format!(
                "`{name}`: view (offset {}, size {:?}, stride {:?}) does not fit its storage `{}` of {} elements",
                t.offset, t.size, t.stride, s.key, s.numel
            ),
        )
    };
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(bad_view)?;
    let mut data = Vec::new();
    if numel > 0 {
        // Largest element index the view touches, relative to the storage.
        let mut last = t.offset;
        for (&n, &st) in t.size.iter().zip(&t.stride) {
            let span = ((n - 1) as u64)
                .checked_mul(st as u64)
                .ok_or_else(bad_view)?;
            last = last.checked_add(span).ok_or_else(bad_view)?;
        }
        // A view may not have more elements than its storage: an expanded (zero-stride) tensor would
        // otherwise turn a tiny file into an enormous allocation. State dicts hold no such tensors.
        if last >= s.numel || numel as u64 > s.numel {
            return Err(bad_view());
        }
        let base = (s.view_offset + t.offset) as usize;
        let contiguous = is_contiguous(&t.size, &t.stride);
        if contiguous {
            data = decode_f32(kind, &root[base * esize..(base + numel) * esize]);
        } else {
            // Odometer over the dimensions longer than 1 (a size-1 dimension's stride is never used),
            // keeping `off` in step with the multi-index.
            let dims: Vec<(usize, usize)> = t
                .size
                .iter()
                .copied()
                .zip(t.stride.iter().copied())
                .filter(|&(n, _)| n > 1)
                .collect();
            data.reserve_exact(numel);
            let mut idx = vec![0usize; dims.len()];
            let mut off = base;
            for _ in 0..numel {
                data.push(decode_one(kind, &root[off * esize..(off + 1) * esize]));
                for (d, &(n, st)) in dims.iter().enumerate().rev() {
                    idx[d] += 1;
                    off += st;
                    if idx[d] < n {
                        break;
                    }
                    off -= st * n;
                    idx[d] = 0;
                }
            }
        }
    }
    Ok(Tensor {
        shape: t.size.clone(),
        data,
    })
}

fn is_contiguous(size: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1usize;
    for (&n, &s) in size.iter().zip(stride).rev() {
        if n != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(n);
    }
    true
}

/// The zip format: `<archive>/data.pkl` plus one `<archive>/data/<key>` file per storage.
pub(crate) fn load_zip(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, Tensor>> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
        format(
            path,
            format!("zip .pth: not a readable zip archive (truncated?): {e}"),
        )
    })?;
    let pkl_name = zip
        .file_names()
        .filter(|n| n.ends_with("data.pkl"))
        .find(|n| {
            let prefix = &n[..n.len() - "data.pkl".len()];
            prefix.is_empty()
                || (prefix.ends_with('/') && !prefix[..prefix.len() - 1].contains('/'))
        })
        .map(str::to_string)
        .ok_or_else(|| format(path, "zip .pth: no `<archive>/data.pkl` inside"))?;
    let prefix = pkl_name[..pkl_name.len() - "data.pkl".len()].to_string();

    if let Some(order) = read_entry(path, &mut zip, &format!("{prefix}byteorder"), 16)? {
        if order != b"little" {
            return Err(format(
                path,
                format!(
                    "zip .pth: byte order `{}` is not supported",
                    String::from_utf8_lossy(&order)
                ),
            ));
        }
    }
    let pkl = read_entry(path, &mut zip, &pkl_name, MAX_PICKLE_BYTES)?
        .ok_or_else(|| format(path, "zip .pth: data.pkl vanished"))?;
    let p = pickle::parse(path, &pkl_name, &pkl, 0)?;
    let entries = state_dict(path, &p)?;

    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = BTreeMap::new();
    for (name, t) in entries {
        if !storages.contains_key(&t.storage.key) {
            let entry = format!("{prefix}data/{}", t.storage.key);
            let need = t
                .storage
                .root_numel
                .saturating_mul(t.storage.dtype.elem_size() as u64);
            let data = read_entry(path, &mut zip, &entry, need)?.ok_or_else(|| {
                format(path, format!("`{name}`: storage file `{entry}` is missing"))
            })?;
            storages.insert(t.storage.key.clone(), data);
        }
        let tensor = materialize(path, &name, &t, &storages[&t.storage.key])?;
        out.insert(name, tensor);
    }
    Ok(out)
}

/// Reads up to `limit` bytes of entry `name`; `None` if there is no such entry.
fn read_entry(
    path: &Path,
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>> {
    let mut f = match zip.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(format(path, format!("zip .pth: entry `{name}`: {e}"))),
    };
    let mut buf = Vec::new();
    (&mut f)
        .take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| format(path, format!("zip .pth: entry `{name}`: {e}")))?;
    Ok(Some(buf))
}

/// The legacy format: pickles of the magic number, the protocol version, sys_info and the state dict,
/// a pickle of the storage keys, then for each key a u64 element count and the raw data.
pub(crate) fn load_legacy(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, Tensor>> {
    let magic = pickle::parse(path, "legacy .pth magic number", bytes, 0)?;
    if magic.root != Value::Int(LEGACY_MAGIC) {
        return Err(format(
            path,
            "legacy .pth: bad magic number (not a PyTorch file)",
        ));
    }
    let proto = pickle::parse(path, "legacy .pth protocol version", bytes, magic.end)?;
    if proto.root != Value::Int(LEGACY_PROTOCOL) {
        let found = match proto.root {
            Value::Int(v) => v.to_string(),
            other => proto.type_name(other).to_string(),
        };
        return Err(format(
            path,
            format!("legacy .pth: unsupported protocol version {found}"),
        ));
    }
    let info = pickle::parse(path, "legacy .pth sys_info", bytes, proto.end)?;
    if let Some(Obj::Dict(d)) = info.obj(info.root) {
        if d.get(&Key::Str("little_endian".into())) == Some(Value::Bool(false)) {
            return Err(format(
                path,
                "legacy .pth: big-endian files are not supported",
            ));
        }
    } else {
        return Err(format(path, "legacy .pth: sys_info is not a dict"));
    }
    let sd = pickle::parse(path, "legacy .pth state dict", bytes, info.end)?;
    let entries = state_dict(path, &sd)?;
    let keys = pickle::parse(path, "legacy .pth storage key list", bytes, sd.end)?;
    let Some(Obj::List(list)) = keys.obj(keys.root) else {
        return Err(format(
            path,
            "legacy .pth: the storage key list is not a list",
        ));
    };

    // Element type of every storage the state dict pickle referenced, and a tensor that uses it.
    let mut dtypes: HashMap<&str, StorageDType> = HashMap::new();
    for o in &sd.objs {
        if let Obj::Storage(s) = o {
            dtypes.insert(&s.key, s.dtype);
        }
    }
    let mut user: HashMap<&str, &str> = HashMap::new();
    for (name, t) in &entries {
        user.entry(&t.storage.key).or_insert(name);
    }

    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    let mut pos = keys.end;
    for &k in list {
        let key = keys
            .str(k)
            .ok_or_else(|| format(path, "legacy .pth: a storage key is not a string"))?;
        let used_by = user
            .get(key)
            .map(|n| format!(" (used by `{n}`)"))
            .unwrap_or_default();
        let dtype = *dtypes.get(key).ok_or_else(|| {
            format(
                path,
                format!("legacy .pth: storage `{key}` is listed but never referenced"),
            )
        })?;
        let truncated = |at: usize| {
            format(
                path,
                format!("legacy .pth: truncated at byte {at} in storage `{key}`{used_by}"),
            )
        };
        let head = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| truncated(bytes.len()))?;
        let mut n = [0u8; 8];
        n.copy_from_slice(head);
        let numel = u64::from_le_bytes(n);
        pos += 8;
        let len = numel
            .checked_mul(dtype.elem_size() as u64)
            .and_then(|l| usize::try_from(l).ok())
            .filter(|&l| l <= bytes.len() - pos)
            .ok_or_else(|| truncated(bytes.len()))?;
        storages.insert(key.to_string(), &bytes[pos..pos + len]);
        pos += len;
    }

    let mut out = BTreeMap::new();
    for (name, t) in entries {
        let data = storages.get(&t.storage.key).ok_or_else(|| {
            format(
                path,
                format!(
                    "legacy .pth: storage `{}` for `{name}` is missing",
                    t.storage.key
                ),
            )
        })?;
        let tensor = materialize(path, &name, &t, data)?;
        out.insert(name, tensor);
    }
    Ok(out)
}
