//! A pickle reader that executes nothing. It is a stack machine over the opcodes a PyTorch tensor state
//! dict uses; globals come only from an allow-list (`collections.OrderedDict`, the `torch._utils` tensor
//! rebuild functions, the typed storage classes and dtype objects), and "calling" one of them (REDUCE) only
//! builds a plain description of the tensor: storage reference, offset, size and stride. The data itself
//! is read later by the `.pth` container code. Every read is bounds-checked: truncated or malformed input
//! is an error, never a panic.
//!
//! Objects live in an arena (`Vec<Obj>`) and values refer to them by index, so shared references
//! (BINGET) behave like Python's, cycles are harmless and dropping is never recursive.
use std::collections::HashMap;
use std::path::Path;

use crate::{Error, Result};

/// The element type of a storage, from its `torch.*Storage` class (or a `torch.<dtype>` object).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StorageDType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDType {
    pub(crate) fn elem_size(self) -> usize {
        match self {
            StorageDType::F64 | StorageDType::I64 => 8,
            StorageDType::F32 | StorageDType::I32 => 4,
            StorageDType::F16 | StorageDType::BF16 | StorageDType::I16 => 2,
            StorageDType::I8 | StorageDType::U8 | StorageDType::Bool => 1,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            StorageDType::F32 => "float32",
            StorageDType::F64 => "float64",
            StorageDType::F16 => "float16",
            StorageDType::BF16 => "bfloat16",
            StorageDType::I64 => "int64",
            StorageDType::I32 => "int32",
            StorageDType::I16 => "int16",
            StorageDType::I8 => "int8",
            StorageDType::U8 => "uint8",
            StorageDType::Bool => "bool",
        }
    }
}

/// An allow-listed global. None of them is ever executed; REDUCE interprets the callable ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    /// `torch.FloatStorage` and friends (`torch.UntypedStorage` maps to U8).
    StorageType(StorageDType),
    /// `torch.float32` and friends: accepted as inert values.
    DType(StorageDType),
}

fn lookup_global(module: &str, name: &str) -> Option<Global> {
    use StorageDType::*;
    let g = match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch", storage) if storage.ends_with("Storage") => Global::StorageType(match storage {
            "FloatStorage" => F32,
            "DoubleStorage" => F64,
            "HalfStorage" => F16,
            "BFloat16Storage" => BF16,
            "LongStorage" => I64,
            "IntStorage" => I32,
            "ShortStorage" => I16,
            "CharStorage" => I8,
            "ByteStorage" | "UntypedStorage" => U8,
            "BoolStorage" => Bool,
            _ => return None,
        }),
        ("torch.storage", "UntypedStorage") => Global::StorageType(U8),
        ("torch", dtype) => Global::DType(match dtype {
            "float32" | "float" => F32,
            "float64" | "double" => F64,
            "float16" | "half" => F16,
            "bfloat16" => BF16,
            "int64" | "long" => I64,
            "int32" | "int" => I32,
            "int16" | "short" => I16,
            "int8" => I8,
            "uint8" => U8,
            "bool" => Bool,
            _ => return None,
        }),
        _ => return None,
    };
    Some(g)
}

/// A storage named by a persistent id `('storage', <type>, key, location, numel[, view_metadata])`.
/// For a legacy view (`view_metadata = (view_key, offset, size)`) the data is `key`'s at `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StorageRef {
    pub key: String,
    pub dtype: StorageDType,
    /// Element count of the root storage `key`.
    pub root_numel: u64,
    /// Offset (elements) of this storage inside the root storage; 0 unless a legacy view.
    pub view_offset: u64,
    /// Element count visible through this storage.
    pub numel: u64,
}

/// A tensor description: a view (offset, size, stride in elements) of a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    pub offset: u64,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

/// Dictionary keys: what state dicts and their metadata use.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    None,
    Bool(bool),
    Int(i128),
    Str(String),
}

#[derive(Default, Debug)]
pub(crate) struct Dict {
    pub entries: Vec<(Key, Value)>,
    index: HashMap<Key, usize>,
}

impl Dict {
    fn insert(&mut self, key: Key, value: Value) {
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Value> {
        self.index.get(key).map(|&i| self.entries[i].1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    /// An index into `Pickle::objs`.
    Obj(usize),
}

#[derive(Debug)]
pub(crate) enum Obj {
    Str(String),
    /// Byte strings (their content is never needed).
    Bytes,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Dict),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

/// The result of reading one pickle: the object arena, the root value and where the pickle ended.
pub(crate) struct Pickle {
    pub objs: Vec<Obj>,
    pub root: Value,
    /// Offset just past the STOP opcode.
    pub end: usize,
}

impl Pickle {
    pub(crate) fn obj(&self, v: Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.objs.get(i),
            _ => None,
        }
    }

    pub(crate) fn str(&self, v: Value) -> Option<&str> {
        match self.obj(v) {
            Some(Obj::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn type_name(&self, v: Value) -> &'static str {
        type_name(&self.objs, v)
    }
}

fn type_name(objs: &[Obj], v: Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Obj(i) => match objs.get(i) {
            Some(Obj::Str(_)) => "str",
            Some(Obj::Bytes) => "bytes",
            Some(Obj::Tuple(_)) => "tuple",
            Some(Obj::List(_)) => "list",
            Some(Obj::Dict(_)) => "dict",
            Some(Obj::Global(_)) => "global",
            Some(Obj::Storage(_)) => "storage",
            Some(Obj::Tensor(_)) => "tensor",
            None => "?",
        },
    }
}

/// Reads one pickle from `data[start..]`. `what` names the pickle in messages ("data.pkl", ...); byte
/// offsets in messages are offsets into `data`.
pub(crate) fn parse(path: &Path, what: &str, data: &[u8], start: usize) -> Result<Pickle> {
    Machine {
        path,
        what,
        data,
        pos: start,
        objs: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

struct Machine<'a> {
    path: &'a Path,
    what: &'a str,
    data: &'a [u8],
    pos: usize,
    objs: Vec<Obj>,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn format(&self, msg: impl std::fmt::Display) -> Error {
        Error::Format {
            path: self.path.to_path_buf(),
            msg: format!("{}: {msg}", self.what),
        }
    }

    fn unsafe_pickle(&self, msg: impl std::fmt::Display) -> Error {
        Error::UnsafePickle {
            path: self.path.to_path_buf(),
            msg: format!("{}: {msg}", self.what),
        }
    }

    fn truncated(&self) -> Error {
        self.format(format_args!("truncated at byte {}", self.data.len()))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.truncated())?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length prefix that must fit in what is left of the input.
    fn len(&mut self, width: usize) -> Result<usize> {
        let n = match width {
            1 => self.u8()? as u64,
            4 => self.u32()? as u64,
            _ => self.u64()?,
        };
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(self.truncated());
        }
        Ok(n as usize)
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.truncated())?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| self.format(format_args!("non-UTF-8 text at byte {}", self.pos)))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn utf8(&self, b: &[u8], at: usize) -> Result<String> {
        String::from_utf8(b.to_vec())
            .map_err(|_| self.format(format_args!("string at byte {at} is not UTF-8")))
    }

    fn alloc(&mut self, o: Obj) -> Value {
        self.objs.push(o);
        Value::Obj(self.objs.len() - 1)
    }

    fn push_obj(&mut self, o: Obj) {
        let v = self.alloc(o);
        self.stack.push(v);
    }

    fn pop(&mut self, at: usize) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.format(format_args!("stack underflow at byte {at}")));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.format(format_args!("stack underflow at byte {at}")))
    }

    fn top(&self, at: usize) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.format(format_args!("stack underflow at byte {at}")));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.format(format_args!("stack underflow at byte {at}")))
    }

    /// Pops everything down to the last MARK (and the mark).
    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.format(format_args!("no MARK for the opcode at byte {at}")))?;
        Ok(self.stack.split_off(m))
    }

    fn int(&self, v: Value, what: &str, at: usize) -> Result<i128> {
        match v {
            Value::Int(i) => Ok(i),
            Value::Bool(b) => Ok(b as i128),
            other => Err(self.format(format_args!(
                "{what} at byte {at} is a {}, expected an int",
                type_name(&self.objs, other)
            ))),
        }
    }

    fn key(&self, v: Value, at: usize) -> Result<Key> {
        match v {
            Value::None => Ok(Key::None),
            Value::Bool(b) => Ok(Key::Bool(b)),
            Value::Int(i) => Ok(Key::Int(i)),
            Value::Obj(i) => match self.objs.get(i) {
                Some(Obj::Str(s)) => Ok(Key::Str(s.clone())),
                _ => Err(self.unsafe_pickle(format_args!(
                    "dict key of type {} at byte {at}",
                    type_name(&self.objs, v)
                ))),
            },
            Value::Float(_) => {
                Err(self.unsafe_pickle(format_args!("dict key of type float at byte {at}")))
            }
        }
    }

    fn dict_mut(&mut self, target: Value, at: usize) -> Result<&mut Dict> {
        let msg = format!(
            "{}: SETITEM(S) at byte {at} on a {}, expected a dict",
            self.what,
            type_name(&self.objs, target)
        );
        if let Value::Obj(i) = target {
            if let Some(Obj::Dict(d)) = self.objs.get_mut(i) {
                return Ok(d);
            }
        }
        Err(Error::Format {
            path: self.path.to_path_buf(),
            msg,
        })
    }

    fn list_mut(&mut self, target: Value, at: usize) -> Result<&mut Vec<Value>> {
        let msg = format!(
            "{}: APPEND(S) at byte {at} on a {}, expected a list",
            self.what,
            type_name(&self.objs, target)
        );
        if let Value::Obj(i) = target {
            if let Some(Obj::List(l)) = self.objs.get_mut(i) {
                return Ok(l);
            }
        }
        Err(Error::Format {
            path: self.path.to_path_buf(),
            msg,
        })
    }

    fn memo_get(&self, idx: u32, at: usize) -> Result<Value> {
        self.memo.get(&idx).copied().ok_or_else(|| {
            self.format(format_args!(
                "memo entry {idx} read at byte {at} was never written"
            ))
        })
    }

    fn global(&mut self, module: &str, name: &str, at: usize) -> Result<()> {
        match lookup_global(module, name) {
            Some(g) => {
                self.push_obj(Obj::Global(g));
                Ok(())
            }
            None => Err(self.unsafe_pickle(format_args!(
                "global `{module}.{name}` at byte {at} is not allowed (only tensor state dict globals are)"
            ))),
        }
    }

    fn run(mut self) -> Result<Pickle> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                // PROTO
                0x80 => {
                    let v = self.u8()?;
                    if v > 5 {
                        return Err(self.format(format_args!("unsupported pickle protocol {v}")));
                    }
                }
                // FRAME: a length hint only.
                0x95 => {
                    self.u64()?;
                }
                b'.' => {
                    let root = self.pop(at)?;
                    return Ok(Pickle {
                        objs: self.objs,
                        root,
                        end: self.pos,
                    });
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let v = self.top(at)?;
                    self.stack.push(v);
                }
                b'}' => self.push_obj(Obj::Dict(Dict::default())),
                b']' => self.push_obj(Obj::List(Vec::new())),
                b')' => self.push_obj(Obj::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark(at)?;
                    self.push_obj(Obj::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = vec![Value::None; n];
                    for slot in items.iter_mut().rev() {
                        *slot = self.pop(at)?;
                    }
                    self.push_obj(Obj::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark(at)?;
                    self.push_obj(Obj::List(items));
                }
                b'd' => {
                    let items = self.pop_mark(at)?;
                    if items.len() % 2 != 0 {
                        return Err(self.format(format_args!(
                            "DICT at byte {at} with an odd number of items"
                        )));
                    }
                    let mut d = Dict::default();
                    for kv in items.chunks_exact(2) {
                        d.insert(self.key(kv[0], at)?, kv[1]);
                    }
                    self.push_obj(Obj::Dict(d));
                }
                // Strings: BINUNICODE, BINUNICODE8, SHORT_BINUNICODE, and the Python 2 BINSTRING,
                // SHORT_BINSTRING (decoded as UTF-8 like torch.load's default).
                b'X' | 0x8d | 0x8c | b'T' | b'U' => {
                    let width = match op {
                        b'X' | b'T' => 4,
                        0x8d => 8,
                        _ => 1,
                    };
                    let n = self.len(width)?;
                    let start = self.pos;
                    let b = self.take(n)?;
                    let s = self.utf8(b, start)?;
                    self.push_obj(Obj::Str(s));
                }
                // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                b'B' | b'C' | 0x8e | 0x96 => {
                    let width = match op {
                        b'B' => 4,
                        b'C' => 1,
                        _ => 8,
                    };
                    let n = self.len(width)?;
                    self.take(n)?;
                    self.push_obj(Obj::Bytes);
                }
                b'q' | b'r' => {
                    let idx = if op == b'q' {
                        self.u8()? as u32
                    } else {
                        self.u32()?
                    };
                    let v = self.top(at)?;
                    self.memo.insert(idx, v);
                }
                0x94 => {
                    let idx =
                        u32::try_from(self.memo.len()).map_err(|_| self.format("memo overflow"))?;
                    let v = self.top(at)?;
                    self.memo.insert(idx, v);
                }
                b'h' | b'j' => {
                    let idx = if op == b'h' {
                        self.u8()? as u32
                    } else {
                        self.u32()?
                    };
                    let v = self.memo_get(idx, at)?;
                    self.stack.push(v);
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i128));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i128));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i128));
                }
                // LONG1, LONG4: little-endian two's complement.
                0x8a | 0x8b => {
                    let n = self.len(if op == 0x8a { 1 } else { 4 })?;
                    if n > 16 {
                        return Err(self.format(format_args!(
                            "integer of {n} bytes at byte {at} is too large"
                        )));
                    }
                    let b = self.take(n)?;
                    let mut v: i128 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i128) << (8 * i);
                    }
                    if n > 0 && n < 16 && b[n - 1] & 0x80 != 0 {
                        v -= 1i128 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'N' => self.stack.push(Value::None),
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name, at)?;
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let (Some(Obj::Str(m)), Some(Obj::Str(n))) =
                        (obj_of(&self.objs, module), obj_of(&self.objs, name))
                    else {
                        return Err(self.format(format_args!(
                            "STACK_GLOBAL at byte {at} without two strings"
                        )));
                    };
                    let (m, n) = (m.clone(), n.clone());
                    self.global(&m, &n, at)?;
                }
                b'R' => {
                    let args = self.pop(at)?;
                    let callable = self.pop(at)?;
                    let v = self.reduce(callable, args, at)?;
                    self.stack.push(v);
                }
                b'Q' => {
                    let pid = self.pop(at)?;
                    let storage = self.persistent(pid, at)?;
                    self.push_obj(Obj::Storage(storage));
                }
                b's' => {
                    let value = self.pop(at)?;
                    let key = self.pop(at)?;
                    let key = self.key(key, at)?;
                    let target = self.top(at)?;
                    self.dict_mut(target, at)?.insert(key, value);
                }
                b'u' => {
                    let items = self.pop_mark(at)?;
                    if items.len() % 2 != 0 {
                        return Err(self.format(format_args!(
                            "SETITEMS at byte {at} with an odd number of items"
                        )));
                    }
                    let target = self.top(at)?;
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    for kv in items.chunks_exact(2) {
                        pairs.push((self.key(kv[0], at)?, kv[1]));
                    }
                    let d = self.dict_mut(target, at)?;
                    for (k, v) in pairs {
                        d.insert(k, v);
                    }
                }
                b'a' => {
                    let v = self.pop(at)?;
                    let target = self.top(at)?;
                    self.list_mut(target, at)?.push(v);
                }
                b'e' => {
                    let items = self.pop_mark(at)?;
                    let target = self.top(at)?;
                    self.list_mut(target, at)?.extend(items);
                }
                b'b' => {
                    let _state = self.pop(at)?;
                    let target = self.top(at)?;
                    // An OrderedDict's `_metadata` attribute (module versions): not needed, ignored.
                    if !matches!(obj_of(&self.objs, target), Some(Obj::Dict(_))) {
                        return Err(self.unsafe_pickle(format_args!(
                            "BUILD at byte {at} on a {}; only a state dict's metadata is accepted",
                            type_name(&self.objs, target)
                        )));
                    }
                }
                other => {
                    let shown = if other.is_ascii_graphic() {
                        format!(" ('{}')", other as char)
                    } else {
                        String::new()
                    };
                    return Err(self.unsafe_pickle(format_args!(
                        "opcode 0x{other:02x}{shown} at byte {at} is not supported"
                    )));
                }
            }
        }
    }

    fn tuple(&self, v: Value) -> Option<&[Value]> {
        match obj_of(&self.objs, v) {
            Some(Obj::Tuple(t)) => Some(t),
            _ => None,
        }
    }

    fn usize_tuple(&self, v: Value, what: &str, at: usize) -> Result<Vec<usize>> {
        let items = self.tuple(v).ok_or_else(|| {
            self.format(format_args!(
                "tensor {what} at byte {at} is a {}, expected a tuple",
                type_name(&self.objs, v)
            ))
        })?;
        items
            .iter()
            .map(|&x| {
                let i = self.int(x, what, at)?;
                usize::try_from(i)
                    .map_err(|_| self.format(format_args!("tensor {what} at byte {at} holds {i}")))
            })
            .collect()
    }

    /// REDUCE: interprets the allow-listed callables without running anything.
    fn reduce(&mut self, callable: Value, args: Value, at: usize) -> Result<Value> {
        let g = match obj_of(&self.objs, callable) {
            Some(Obj::Global(g)) => *g,
            _ => {
                return Err(self.unsafe_pickle(format_args!(
                    "REDUCE at byte {at} on a {}",
                    type_name(&self.objs, callable)
                )));
            }
        };
        let a: Vec<Value> = self
            .tuple(args)
            .ok_or_else(|| {
                self.format(format_args!(
                    "REDUCE at byte {at} with {} arguments, expected a tuple",
                    type_name(&self.objs, args)
                ))
            })?
            .to_vec();
        match g {
            Global::OrderedDict => {
                if !a.is_empty() {
                    return Err(
                        self.unsafe_pickle(format_args!("OrderedDict with arguments at byte {at}"))
                    );
                }
                Ok(self.alloc(Obj::Dict(Dict::default())))
            }
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                let ok = match g {
                    Global::RebuildTensorV2 => a.len() == 6 || a.len() == 7,
                    _ => a.len() == 4,
                };
                if !ok {
                    return Err(self.format(format_args!(
                        "tensor rebuild at byte {at} with {} arguments",
                        a.len()
                    )));
                }
                let storage = match obj_of(&self.objs, a[0]) {
                    Some(Obj::Storage(s)) => s.clone(),
                    _ => {
                        return Err(self.format(format_args!(
                            "tensor rebuild at byte {at}: first argument is a {}, expected a storage",
                            type_name(&self.objs, a[0])
                        )));
                    }
                };
                let offset = self.int(a[1], "storage offset", at)?;
                let offset = u64::try_from(offset).map_err(|_| {
                    self.format(format_args!("storage offset {offset} at byte {at}"))
                })?;
                let size = self.usize_tuple(a[2], "size", at)?;
                let stride = self.usize_tuple(a[3], "stride", at)?;
                if size.len() != stride.len() {
                    return Err(self.format(format_args!(
                        "tensor at byte {at} has size {size:?} but stride {stride:?}"
                    )));
                }
                Ok(self.alloc(Obj::Tensor(TensorRef {
                    storage,
                    offset,
                    size,
                    stride,
                })))
            }
            Global::RebuildParameter => {
                if a.len() != 3 || !matches!(obj_of(&self.objs, a[0]), Some(Obj::Tensor(_))) {
                    return Err(self.format(format_args!(
                        "_rebuild_parameter at byte {at} without (tensor, requires_grad, hooks)"
                    )));
                }
                Ok(a[0])
            }
            Global::StorageType(_) | Global::DType(_) => Err(self.unsafe_pickle(format_args!(
                "REDUCE at byte {at} calls a storage type or dtype, which a state dict never does"
            ))),
        }
    }

    /// BINPERSID: `('storage', <storage type>, key, location, numel[, view_metadata])`.
    fn persistent(&self, pid: Value, at: usize) -> Result<StorageRef> {
        let bad = |why: &str| self.unsafe_pickle(format_args!("persistent id at byte {at} {why}"));
        let t = self.tuple(pid).ok_or_else(|| bad("is not a tuple"))?;
        if !(t.len() == 5 || t.len() == 6) || str_of(&self.objs, t[0]) != Some("storage") {
            return Err(bad(
                "is not ('storage', type, key, location, numel[, view])",
            ));
        }
        let dtype = match obj_of(&self.objs, t[1]) {
            Some(Obj::Global(Global::StorageType(d))) | Some(Obj::Global(Global::DType(d))) => *d,
            _ => return Err(bad("has no storage type")),
        };
        let key = str_of(&self.objs, t[2])
            .ok_or_else(|| bad("has a non-string key"))?
            .to_string();
        let root_numel = self.int(t[4], "storage size", at)?;
        let root_numel = u64::try_from(root_numel).map_err(|_| bad("has a negative size"))?;
        let mut s = StorageRef {
            key,
            dtype,
            root_numel,
            view_offset: 0,
            numel: root_numel,
        };
        if t.len() == 6 && t[5] != Value::None {
            let v = self
                .tuple(t[5])
                .filter(|v| v.len() == 3)
                .ok_or_else(|| bad("has malformed view metadata"))?;
            let off = u64::try_from(self.int(v[1], "view offset", at)?)
                .map_err(|_| bad("has a negative view offset"))?;
            let n = u64::try_from(self.int(v[2], "view size", at)?)
                .map_err(|_| bad("has a negative view size"))?;
            if off.checked_add(n).is_none_or(|e| e > root_numel) {
                return Err(self.format(format_args!(
                    "storage view [{off}, {off}+{n}) at byte {at} exceeds its storage `{}` of {root_numel} elements",
                    s.key
                )));
            }
            s.view_offset = off;
            s.numel = n;
        }
        Ok(s)
    }
}

fn obj_of(objs: &[Obj], v: Value) -> Option<&Obj> {
    match v {
        Value::Obj(i) => objs.get(i),
        _ => None,
    }
}

fn str_of(objs: &[Obj], v: Value) -> Option<&str> {
    match obj_of(objs, v) {
        Some(Obj::Str(s)) => Some(s),
        _ => None,
    }
}
