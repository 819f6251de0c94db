//! Weight loading from hand-built files: zip and legacy `.pth` (pickles written byte by byte here),
//! safetensors in f32/f16/bf16/f64, and the refusals: truncation, wrong magic, foreign globals, unknown
//! opcodes, integer dtypes, short storages, NaN, wrong shapes, missing and extra keys.
use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use models::{Error, Tensor, Weights};
use safetensors::{tensor::TensorView, Dtype};

// ---------------------------------------------------------------------------------------------------
// A tiny pickle writer (protocol 2 opcodes, as torch.save writes them).

#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Pickle {
        Pickle(vec![0x80, 2]) // PROTO 2
    }
    fn op(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X'); // BINUNICODE
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn int(&mut self, v: u64) -> &mut Self {
        if v < 256 {
            self.0.extend_from_slice(&[b'K', v as u8]); // BININT1
        } else if v < 65536 {
            self.0.push(b'M'); // BININT2
            self.0.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v < 1 << 31 {
            self.0.push(b'J'); // BININT
            self.0.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            self.0.extend_from_slice(&[0x8a, 9]); // LONG1, 9 bytes (non-negative)
            self.0.extend_from_slice(&v.to_le_bytes());
            self.0.push(0);
        }
        self
    }
    fn put(&mut self, i: u8) -> &mut Self {
        self.0.extend_from_slice(&[b'q', i]); // BINPUT
        self
    }
    fn get(&mut self, i: u8) -> &mut Self {
        self.0.extend_from_slice(&[b'h', i]); // BINGET
        self
    }
    fn int_tuple(&mut self, v: &[usize]) -> &mut Self {
        match v.len() {
            0 => self.op(b')'),
            1 => {
                self.int(v[0] as u64);
                self.op(0x85) // TUPLE1
            }
            _ => {
                self.op(b'(');
                for &x in v {
                    self.int(x as u64);
                }
                self.op(b't')
            }
        }
    }
    fn stop(&mut self) -> Vec<u8> {
        self.0.push(b'.');
        std::mem::take(&mut self.0)
    }
}

/// One tensor of a test state dict: a view of storage `storage`.
struct Entry {
    name: &'static str,
    storage: &'static str,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// A storage: key, torch storage class and its raw little-endian bytes.
struct Storage {
    key: &'static str,
    class: &'static str,
    elem: usize,
    bytes: Vec<u8>,
}

fn f32_storage(key: &'static str, v: &[f32]) -> Storage {
    Storage {
        key,
        class: "FloatStorage",
        elem: 4,
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The state dict pickle as torch.save writes it: an OrderedDict of `_rebuild_tensor_v2` calls whose
/// storages are persistent ids, then (zip form) the `_metadata` BUILD. Memo slots: 0 OrderedDict,
/// 1 _rebuild_tensor_v2, 2 the 'storage' string; storage classes at 10+.
fn state_dict_pickle(entries: &[Entry], storages: &[Storage], legacy: bool) -> Vec<u8> {
    let mut p = Pickle::new();
    p.global("collections", "OrderedDict")
        .put(0)
        .op(b')')
        .op(b'R')
        .op(b'(');
    let mut classes: HashMap<&str, u8> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let s = storages
            .iter()
            .find(|s| s.key == e.storage)
            .expect("test storage");
        p.str(e.name);
        if i == 0 {
            p.global("torch._utils", "_rebuild_tensor_v2").put(1);
        } else {
            p.get(1);
        }
        p.op(b'(').op(b'(');
        if i == 0 {
            p.str("storage").put(2);
        } else {
            p.get(2);
        }
        if let Some(&slot) = classes.get(s.class) {
            p.get(slot);
        } else {
            let slot = 10 + classes.len() as u8;
            p.global("torch", s.class).put(slot);
            classes.insert(s.class, slot);
        }
        p.str(s.key)
            .str(if legacy { "cpu" } else { "cuda:0" })
            .int((s.bytes.len() / s.elem) as u64);
        if legacy {
            p.op(b'N');
        }
        p.op(b't').op(b'Q'); // TUPLE, BINPERSID
        p.int(e.offset as u64)
            .int_tuple(&e.size)
            .int_tuple(&e.stride);
        p.op(0x89); // NEWFALSE (requires_grad)
        p.get(0).op(b')').op(b'R'); // backward hooks: OrderedDict()
        p.op(b't').op(b'R');
    }
    p.op(b'u'); // SETITEMS
    if !legacy {
        // `_metadata`: {'': {'version': 1}} set through BUILD with a state dict.
        p.op(b'}').str("_metadata").get(0).op(b')').op(b'R');
        p.op(b'(')
            .str("")
            .op(b'}')
            .str("version")
            .int(1)
            .op(b's')
            .op(b'u');
        p.op(b's').op(b'b'); // SETITEM, BUILD
    }
    p.stop()
}

fn zip_pth(pkl: &[u8], storages: &[Storage]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opt =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut add = |name: &str, data: &[u8]| {
        w.start_file(name, opt).expect("zip entry");
        w.write_all(data).expect("zip write");
    };
    add("archive/data.pkl", pkl);
    add("archive/.format_version", b"1");
    add("archive/byteorder", b"little");
    for s in storages {
        add(&format!("archive/data/{}", s.key), &s.bytes);
    }
    add("archive/version", b"3\n");
    w.finish().expect("zip finish").into_inner()
}

fn legacy_pth(pkl: &[u8], storages: &[Storage]) -> Vec<u8> {
    let mut out = Vec::new();
    // The magic number 0x1950a86a20f9469cfc6c as LONG1 (10 bytes, little-endian).
    out.extend_from_slice(&[0x80, 2, 0x8a, 10]);
    out.extend_from_slice(&0x1950a86a20f9469cfc6cu128.to_le_bytes()[..10]);
    out.push(b'.');
    out.extend(Pickle::new().int(1001).stop());
    let mut info = Pickle::new();
    info.op(b'}')
        .op(b'(')
        .str("protocol_version")
        .int(1001)
        .str("little_endian")
        .op(0x88);
    info.str("type_sizes")
        .op(b'}')
        .op(b'(')
        .str("short")
        .int(2)
        .str("int")
        .int(4)
        .str("long")
        .int(4)
        .op(b'u');
    info.op(b'u');
    out.extend(info.stop());
    out.extend_from_slice(pkl);
    let mut keys = Pickle::new();
    keys.op(b']').op(b'(');
    for s in storages.iter().rev() {
        keys.str(s.key);
    }
    keys.op(b'e');
    out.extend(keys.stop());
    for s in storages.iter().rev() {
        out.extend_from_slice(&((s.bytes.len() / s.elem) as u64).to_le_bytes());
        out.extend_from_slice(&s.bytes);
    }
    out
}

/// The test state dict: `a.weight` [2,3] contiguous over storage 0; `b.weight` [3,2], the transpose
/// of storage 1 (stride [1,3]); `c.bias` [2] at offset 1, stride 2 of the same storage 1.
fn sample() -> (Vec<Entry>, Vec<Storage>) {
    let entries = vec![
        Entry {
            name: "a.weight",
            storage: "0",
            offset: 0,
            size: vec![2, 3],
            stride: vec![3, 1],
        },
        Entry {
            name: "b.weight",
            storage: "1",
            offset: 0,
            size: vec![3, 2],
            stride: vec![1, 3],
        },
        Entry {
            name: "c.bias",
            storage: "1",
            offset: 1,
            size: vec![2],
            stride: vec![2],
        },
    ];
    let storages = vec![
        f32_storage("0", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        f32_storage("1", &[10.0, 11.0, 12.0, 13.0, 14.0, 15.0]),
    ];
    (entries, storages)
}

fn expected_sample() -> BTreeMap<String, Tensor> {
    BTreeMap::from([
        (
            "a.weight".to_string(),
            Tensor::new(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        ),
        // Storage 1 viewed as [2,3] is [[10,11,12],[13,14,15]]; b is its transpose.
        (
            "b.weight".to_string(),
            Tensor::new(&[3, 2], vec![10.0, 13.0, 11.0, 14.0, 12.0, 15.0]),
        ),
        ("c.bias".to_string(), Tensor::new(&[2], vec![11.0, 13.0])),
    ])
}

fn sample_zip() -> Vec<u8> {
    let (e, s) = sample();
    zip_pth(&state_dict_pickle(&e, &s, false), &s)
}

fn sample_legacy() -> Vec<u8> {
    let (e, s) = sample();
    legacy_pth(&state_dict_pickle(&e, &s, true), &s)
}

fn load(name: &str, bytes: &[u8]) -> Result<Weights, Error> {
    Weights::from_bytes(Path::new(name), bytes)
}

/// Replaces the first occurrence of `from` (which must occur) by `to`.
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    [&bytes[..at], to, &bytes[at + from.len()..]].concat()
}

/// Rebuilds a zip `.pth` with its data.pkl replaced.
fn zip_with_pickle(pkl: &[u8]) -> Vec<u8> {
    let (_, s) = sample();
    zip_pth(pkl, &s)
}

fn sample_pickle(legacy: bool) -> Vec<u8> {
    let (e, s) = sample();
    state_dict_pickle(&e, &s, legacy)
}

fn expect_unsafe(r: Result<Weights, Error>, needle: &str) {
    match r {
        Err(e @ Error::UnsafePickle { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "message `{msg}` lacks `{needle}`");
            assert!(
                msg.contains("evil.pth"),
                "message `{msg}` does not name the file"
            );
        }
        Err(other) => panic!("expected UnsafePickle, got {other}"),
        Ok(_) => panic!("expected UnsafePickle, loaded fine"),
    }
}

fn expect_format(r: Result<Weights, Error>, file: &str, needle: &str) -> String {
    match r {
        Err(e @ Error::Format { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(file), "message `{msg}` does not name {file}");
            assert!(msg.contains(needle), "message `{msg}` lacks `{needle}`");
            msg
        }
        Err(other) => panic!("expected a Format error, got {other}"),
        Ok(_) => panic!("expected a Format error, loaded fine"),
    }
}

// ---------------------------------------------------------------------------------------------------

#[test]
fn zip_pth_round_trips_contiguous_and_strided_tensors() {
    let w = load("tiny.pth", &sample_zip()).unwrap();
    assert_eq!(w.tensors, expected_sample());
    assert_eq!(w.path, PathBuf::from("tiny.pth"));
    assert!(w.metadata.is_empty());
}

#[test]
fn legacy_pth_round_trips_contiguous_and_strided_tensors() {
    let w = load("tiny_legacy.pth", &sample_legacy()).unwrap();
    assert_eq!(w.tensors, expected_sample());
}

#[test]
fn load_reads_from_disk_and_names_missing_files() {
    let dir = std::env::temp_dir().join(format!("models-weights-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("disk.pth");
    std::fs::write(&p, sample_zip()).unwrap();
    let w = Weights::load(&p).unwrap();
    assert_eq!(w.tensors, expected_sample());
    assert_eq!(w.path, p);
    let missing = dir.join("nope.pth");
    match Weights::load(&missing) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("nope.pth")),
        other => panic!("expected Io, got {:?}", other.map(|_| ())),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_zip_and_legacy_files_are_format_errors_at_every_length() {
    for (name, bytes) in [
        ("cut.pth", sample_zip()),
        ("cut_legacy.pth", sample_legacy()),
    ] {
        for cut in 0..bytes.len() {
            let r = load(name, &bytes[..cut]);
            expect_format(r, name, "");
        }
    }
}

#[test]
fn truncated_legacy_messages_say_where() {
    let bytes = sample_legacy();
    // Inside the state dict pickle.
    let msg = expect_format(
        load("t.pth", &bytes[..200]),
        "t.pth",
        "truncated at byte 200",
    );
    assert!(msg.contains("state dict"), "{msg}");
    // Inside the last storage's data: names the storage key and a tensor that uses it.
    let msg = expect_format(
        load("t.pth", &bytes[..bytes.len() - 3]),
        "t.pth",
        "truncated at byte",
    );
    assert!(
        msg.contains("storage `0`") && msg.contains("a.weight"),
        "{msg}"
    );
}

#[test]
fn truncated_data_pkl_inside_a_valid_zip_is_a_format_error() {
    let pkl = sample_pickle(false);
    for cut in [1, 10, pkl.len() / 2, pkl.len() - 1] {
        let msg = expect_format(
            load("short.pth", &zip_with_pickle(&pkl[..cut])),
            "short.pth",
            "truncated at byte",
        );
        assert!(msg.contains("data.pkl"), "{msg}");
    }
}

#[test]
fn short_storage_names_the_tensor() {
    let (e, mut s) = sample();
    let pkl = state_dict_pickle(&e, &s, false);
    s[0].bytes.truncate(20); // 5 of the 6 floats the pickle announces
    let msg = expect_format(
        load("short.pth", &zip_pth(&pkl, &s)),
        "short.pth",
        "a.weight",
    );
    assert!(msg.contains("storage `0`"), "{msg}");
}

#[test]
fn view_outside_its_storage_is_refused() {
    let (mut e, s) = sample();
    e[2].offset = 5; // c.bias at 5 and 7 of a 6-element storage
    let pkl = state_dict_pickle(&e, &s, false);
    expect_format(load("view.pth", &zip_pth(&pkl, &s)), "view.pth", "c.bias");
}

#[test]
fn size_one_dimensions_may_have_any_stride() {
    let (mut e, s) = sample();
    // c.bias as [1, 2] with a huge (unused) stride on the size-1 dimension; non-contiguous (stride 2).
    e[2].size = vec![1, 2];
    e[2].stride = vec![u64::MAX as usize >> 1, 2];
    let w = load("ones.pth", &zip_pth(&state_dict_pickle(&e, &s, false), &s)).unwrap();
    assert_eq!(w.tensors["c.bias"], Tensor::new(&[1, 2], vec![11.0, 13.0]));
    // A stride that overflows the view is refused, not wrapped.
    e[2].size = vec![2, 2];
    expect_format(
        load("huge.pth", &zip_pth(&state_dict_pickle(&e, &s, true), &s)),
        "huge.pth",
        "c.bias",
    );
}

#[test]
fn wrong_magic_and_unknown_containers_are_format_errors() {
    let bytes = sample_legacy();
    let bad = replace(
        &bytes,
        &0x1950a86a20f9469cfc6cu128.to_le_bytes()[..10],
        &0x1950a86a20f9469cfc6du128.to_le_bytes()[..10],
    );
    expect_format(load("magic.pth", &bad), "magic.pth", "magic number");
    let msg = "not a safetensors, zip .pth or legacy .pth file";
    expect_format(
        load("text.pth", b"hello, this is not a weight file"),
        "text.pth",
        msg,
    );
    expect_format(load("empty.pth", b""), "empty.pth", msg);
    // A wrong legacy protocol version.
    let bad = replace(&bytes, &[b'M', 0xe9, 0x03], &[b'M', 0xea, 0x03]);
    expect_format(load("proto.pth", &bad), "proto.pth", "protocol version");
}

#[test]
fn foreign_globals_are_refused_in_both_formats() {
    for legacy in [false, true] {
        let pkl = sample_pickle(legacy);
        for (module, name) in [
            ("os", "system"),
            ("builtins", "eval"),
            ("posix", "system"),
            ("torch", "load"),
        ] {
            let bad = replace(
                &pkl,
                b"collections\nOrderedDict\n",
                format!("{module}\n{name}\n").as_bytes(),
            );
            let file = if legacy {
                let (_, s) = sample();
                legacy_pth(&bad, &s)
            } else {
                zip_with_pickle(&bad)
            };
            expect_unsafe(load("evil.pth", &file), &format!("{module}.{name}"));
        }
    }
}

#[test]
fn stack_global_is_checked_against_the_allow_list() {
    // protocol 4: SHORT_BINUNICODE 'os', SHORT_BINUNICODE 'system', STACK_GLOBAL, then a call.
    let mut p = vec![0x80, 4, 0x8c, 2];
    p.extend_from_slice(b"os");
    p.extend_from_slice(&[0x8c, 6]);
    p.extend_from_slice(b"system");
    p.push(0x93);
    p.extend_from_slice(&[0x8c, 2]);
    p.extend_from_slice(b"ls");
    p.extend_from_slice(&[0x85, b'R', b'.']);
    expect_unsafe(load("evil.pth", &zip_with_pickle(&p)), "os.system");
}

#[test]
fn protocol_4_opcodes_frame_memoize_stack_global_are_understood() {
    fn sbu(p: &mut Vec<u8>, s: &str) {
        p.extend_from_slice(&[0x8c, s.len() as u8]); // SHORT_BINUNICODE
        p.extend_from_slice(s.as_bytes());
    }
    let mut body = Vec::new();
    sbu(&mut body, "collections");
    sbu(&mut body, "OrderedDict");
    body.extend_from_slice(&[0x93, 0x94, b')', b'R', 0x94]); // STACK_GLOBAL MEMOIZE() REDUCE MEMOIZE
    sbu(&mut body, "w");
    sbu(&mut body, "torch._utils");
    sbu(&mut body, "_rebuild_tensor_v2");
    body.extend_from_slice(&[0x93, b'(', b'(']);
    sbu(&mut body, "storage");
    sbu(&mut body, "torch");
    sbu(&mut body, "FloatStorage");
    body.push(0x93);
    sbu(&mut body, "0");
    sbu(&mut body, "cpu");
    body.extend_from_slice(&[b'K', 6, b't', b'Q', b'K', 0]); // numel 6, TUPLE, BINPERSID, offset 0
    body.extend_from_slice(&[b'K', 3, b'K', 2, 0x86, b'K', 1, b'K', 3, 0x86]); // size (3,2), stride (1,3)
    body.extend_from_slice(&[0x89, b'j', 0, 0, 0, 0, b')', b'R', b't', b'R']); // LONG_BINGET 0
    body.extend_from_slice(b"s.");
    let mut p = vec![0x80, 4, 0x95];
    p.extend_from_slice(&(body.len() as u64).to_le_bytes());
    p.extend(body);
    let (_, s) = sample();
    let w = load("p4.pth", &zip_pth(&p, &s)).unwrap();
    assert_eq!(w.tensors.len(), 1);
    assert_eq!(
        w.tensors["w"],
        Tensor::new(&[3, 2], vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0])
    );
}

#[test]
fn unknown_opcodes_are_refused() {
    // NEWOBJ (0x81), INST ('i'), OBJ ('o'), PERSID ('P'), EXT1 (0x82), a byte that is no opcode (0xff).
    for op in [0x81u8, b'i', b'o', b'P', 0x82, 0xff] {
        let mut p = vec![0x80, 2, op];
        p.extend_from_slice(b"\0\0\0\0.");
        let msg = format!("opcode 0x{op:02x}");
        expect_unsafe(load("evil.pth", &zip_with_pickle(&p)), &msg);
    }
}

#[test]
fn calling_a_storage_class_or_building_a_non_dict_is_refused() {
    let mut p = Pickle::new();
    p.global("torch", "FloatStorage").op(b')').op(b'R');
    expect_unsafe(load("evil.pth", &zip_with_pickle(&p.stop())), "REDUCE");
    let mut p = Pickle::new();
    p.op(b']').op(b'}').op(b'b');
    expect_unsafe(load("evil.pth", &zip_with_pickle(&p.stop())), "BUILD");
}

#[test]
fn a_pickle_that_is_not_a_state_dict_is_a_format_error() {
    let mut p = Pickle::new();
    p.op(b']');
    expect_format(
        load("list.pth", &zip_with_pickle(&p.stop())),
        "list.pth",
        "expected a state dict",
    );
    let mut p = Pickle::new();
    p.op(b'}').str("epoch").int(3).op(b's');
    expect_format(
        load("epoch.pth", &zip_with_pickle(&p.stop())),
        "epoch.pth",
        "`epoch` is not a tensor (found int)",
    );
}

#[test]
fn integer_storages_are_dtype_errors_naming_the_key() {
    for legacy in [false, true] {
        let (mut e, mut s) = sample();
        e.push(Entry {
            name: "bn.num_batches_tracked",
            storage: "2",
            offset: 0,
            size: vec![],
            stride: vec![],
        });
        s.push(Storage {
            key: "2",
            class: "LongStorage",
            elem: 8,
            bytes: 7u64.to_le_bytes().to_vec(),
        });
        let pkl = state_dict_pickle(&e, &s, legacy);
        let file = if legacy {
            legacy_pth(&pkl, &s)
        } else {
            zip_pth(&pkl, &s)
        };
        match load("ints.pth", &file) {
            Err(Error::DType { path, key, found }) => {
                assert_eq!(path, PathBuf::from("ints.pth"));
                assert_eq!(key, "bn.num_batches_tracked");
                assert_eq!(found, "int64");
            }
            other => panic!("expected DType, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn half_bfloat16_and_double_storages_convert_to_f32() {
    let f16: Vec<u8> = [0x3e00u16, 0xc000, 0x7bff, 0x0001]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    let bf16: Vec<u8> = [0x3fc0u16, 0xc020]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    let f64s: Vec<u8> = [0.1f64, -3.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let s = vec![
        Storage {
            key: "h",
            class: "HalfStorage",
            elem: 2,
            bytes: f16,
        },
        Storage {
            key: "b",
            class: "BFloat16Storage",
            elem: 2,
            bytes: bf16,
        },
        Storage {
            key: "d",
            class: "DoubleStorage",
            elem: 8,
            bytes: f64s,
        },
    ];
    let e = vec![
        Entry {
            name: "h",
            storage: "h",
            offset: 0,
            size: vec![4],
            stride: vec![1],
        },
        Entry {
            name: "b",
            storage: "b",
            offset: 0,
            size: vec![2],
            stride: vec![1],
        },
        Entry {
            name: "d",
            storage: "d",
            offset: 0,
            size: vec![2],
            stride: vec![1],
        },
    ];
    for legacy in [false, true] {
        let pkl = state_dict_pickle(&e, &s, legacy);
        let file = if legacy {
            legacy_pth(&pkl, &s)
        } else {
            zip_pth(&pkl, &s)
        };
        let w = load("mixed.pth", &file).unwrap();
        assert_eq!(
            w.tensors["h"].data,
            vec![1.5, -2.0, 65504.0, 2f32.powi(-24)]
        );
        assert_eq!(w.tensors["b"].data, vec![1.5, -2.5]);
        assert_eq!(w.tensors["d"].data, vec![0.1f32, -3.25]);
    }
}

#[test]
fn nan_loads_but_take_refuses_it_naming_the_key() {
    let (e, mut s) = sample();
    s[1].bytes[8..12].copy_from_slice(&f32::NAN.to_le_bytes()); // element 2 of storage 1: b.weight only
    let pkl = state_dict_pickle(&e, &s, false);
    let mut w = load("nan.pth", &zip_pth(&pkl, &s)).unwrap();
    assert!(w.take("a.weight", &[2, 3]).is_ok());
    assert_eq!(w.take("c.bias", &[2]).unwrap().data, vec![11.0, 13.0]);
    match w.take("b.weight", &[3, 2]) {
        Err(e @ Error::NonFinite { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("nan.pth") && msg.contains("b.weight"), "{msg}");
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
}

#[test]
fn take_checks_shape_and_presence_and_finish_reports_leftovers() {
    let mut w = load("tiny.pth", &sample_zip()).unwrap();
    assert_eq!(w.shape_of("b.weight"), Some(&[3usize, 2][..]));
    assert_eq!(w.shape_of("nope"), None);
    match w.take("a.weight", &[3, 2]) {
        Err(Error::Shape {
            key,
            expected,
            found,
            ..
        }) => {
            assert_eq!(
                (key.as_str(), expected, found),
                ("a.weight", vec![3, 2], vec![2, 3])
            );
        }
        other => panic!("expected Shape, got {other:?}"),
    }
    match w.take("missing.weight", &[1]) {
        Err(e @ Error::MissingKey { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("tiny.pth") && msg.contains("missing.weight"),
                "{msg}"
            );
        }
        other => panic!("expected MissingKey, got {other:?}"),
    }
    let b = w.take("b.weight", &[3, 2]).unwrap();
    assert_eq!(b.data, vec![10.0, 13.0, 11.0, 14.0, 12.0, 15.0]);
    match w.finish() {
        Err(Error::UnexpectedKeys { keys, .. }) => assert_eq!(keys, vec!["c.bias".to_string()]),
        other => panic!("expected UnexpectedKeys, got {:?}", other),
    }
    let mut w = load("tiny.pth", &sample_zip()).unwrap();
    for (k, t) in expected_sample() {
        assert_eq!(w.take(&k, &t.shape).unwrap(), t);
    }
    w.finish().unwrap();
}

fn safetensors_file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta = Some(HashMap::from([("arch".to_string(), "test".to_string())]));
    safetensors::serialize(views, &meta).unwrap()
}

#[test]
fn safetensors_f16_bf16_f64_convert_and_keep_metadata() {
    let f16: Vec<u8> = [0x3c00u16, 0xfc00, 0x8001, 0x4248]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    let bf16: Vec<u8> = [0x4049u16, 0x0000, 0xbf80]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    let f64s: Vec<u8> = [1e-3f64, 2.5, -7.0, 0.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let f32s: Vec<u8> = [1.25f32, -0.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let bytes = safetensors_file(&[
        ("h", Dtype::F16, vec![2, 2], f16),
        ("b", Dtype::BF16, vec![3], bf16),
        ("d", Dtype::F64, vec![4, 1], f64s),
        ("f", Dtype::F32, vec![2], f32s),
    ]);
    let w = load("x.safetensors", &bytes).unwrap();
    assert_eq!(w.metadata.get("arch").map(String::as_str), Some("test"));
    assert_eq!(
        w.tensors["h"],
        Tensor::new(
            &[2, 2],
            vec![1.0, f32::NEG_INFINITY, -(2f32.powi(-24)), 3.140625]
        )
    );
    assert_eq!(w.tensors["b"], Tensor::new(&[3], vec![3.140625, 0.0, -1.0]));
    assert_eq!(
        w.tensors["d"],
        Tensor::new(&[4, 1], vec![1e-3f32, 2.5, -7.0, 0.0])
    );
    assert_eq!(w.tensors["f"], Tensor::new(&[2], vec![1.25, -0.5]));
    // The infinity converted from f16 is caught by take.
    let mut w = w;
    assert!(matches!(w.take("h", &[2, 2]), Err(Error::NonFinite { key, .. }) if key == "h"));
}

#[test]
fn safetensors_integers_are_dtype_errors_and_truncation_is_a_format_error() {
    let bytes = safetensors_file(&[("steps", Dtype::I64, vec![1], 5i64.to_le_bytes().to_vec())]);
    match load("ints.safetensors", &bytes) {
        Err(Error::DType { key, .. }) => assert_eq!(key, "steps"),
        other => panic!("expected DType, got {:?}", other.map(|_| ())),
    }
    let bytes = safetensors_file(&[("w", Dtype::F32, vec![4], vec![0u8; 16])]);
    for cut in [9, 20, bytes.len() - 1] {
        expect_format(
            load("cut.safetensors", &bytes[..cut]),
            "cut.safetensors",
            "",
        );
    }
}

#[test]
fn f16_conversion_is_exact_for_every_bit_pattern() {
    // All 65536 halves in one HalfStorage, against a reference computed from the definition.
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let s = vec![Storage {
        key: "all",
        class: "HalfStorage",
        elem: 2,
        bytes: all.iter().flat_map(|h| h.to_le_bytes()).collect(),
    }];
    let e = vec![Entry {
        name: "all",
        storage: "all",
        offset: 0,
        size: vec![65536],
        stride: vec![1],
    }];
    let w = load("all.pth", &zip_pth(&state_dict_pickle(&e, &s, false), &s)).unwrap();
    for (&h, got) in all.iter().zip(&w.tensors["all"].data) {
        assert_eq!(got.to_bits(), reference_f16(h).to_bits(), "f16 {h:#06x}");
    }
}

fn reference_f16(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f64 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let man = (h & 0x3ff) as f64;
    let v = match exp {
        0 => man * 2f64.powi(-24),
        31 if man == 0.0 => f64::INFINITY,
        31 => {
            return f32::from_bits(
                0x7f80_0000 | ((h as u32 & 0x8000) << 16) | ((h as u32 & 0x3ff) << 13),
            )
        }
        _ => (1.0 + man / 1024.0) * 2f64.powi(exp - 15),
    };
    (sign * v) as f32
}

#[test]
fn corrupted_bytes_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let legacy = sample_legacy();
    let pkl = sample_pickle(false);
    let (mut loaded, mut refused) = (0, 0);
    for _ in 0..3000 {
        let flips = rng.gen_range(1..4);
        let mut l = legacy.clone();
        let mut p = pkl.clone();
        for _ in 0..flips {
            let i = rng.gen_range(0..l.len());
            l[i] = rng.gen();
            let j = rng.gen_range(0..p.len());
            p[j] = rng.gen();
        }
        for r in [load("fuzz.pth", &l), load("fuzz.pth", &zip_with_pickle(&p))] {
            match r {
                Ok(_) => loaded += 1,
                Err(e) => {
                    assert!(e.to_string().contains("fuzz.pth"), "{e}");
                    refused += 1;
                }
            }
        }
    }
    // Most single-byte changes land in data or strings and still load; the rest must be refused.
    assert!(
        loaded > 0 && refused > 0,
        "loaded {loaded}, refused {refused}"
    );
}
