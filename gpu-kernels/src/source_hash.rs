//! Fingerprint of the kernel sources, computed by `cargo xtask build-kernels` (written into the PTX
//! header) and by the host's build script (compiled into the binary). A mismatch at load time means the PTX
//! is stale: the host refuses it with a message that names the fix.
use std::path::Path;

/// The header line that carries the fingerprint in the PTX file.
pub const PTX_HASH_PREFIX: &str = "// styleforge-kernels-source-hash: ";

/// FNV-1a over the relative paths and contents of `Cargo.toml` and every file under `src/` of the
/// gpu-kernels crate, visited in sorted order.
pub fn source_hash(crate_dir: &Path) -> std::io::Result<String> {
    let mut files = vec![crate_dir.join("Cargo.toml")];
    collect(&crate_dir.join("src"), &mut files)?;
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    for f in &files {
        let rel = f.strip_prefix(crate_dir).unwrap_or(f);
        feed(rel.to_string_lossy().replace('\\', "/").as_bytes());
        feed(&[0]);
        feed(&std::fs::read(f)?);
        feed(&[0]);
    }
    Ok(format!("{h:016x}"))
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}
