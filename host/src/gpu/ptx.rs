//! Finding the PTX module and refusing a stale one.
use std::path::PathBuf;

use gpu_kernels::source_hash::PTX_HASH_PREFIX;

use crate::error::{Error, Result};

/// File name of the module `cargo xtask build-kernels` writes.
pub const PTX_FILE: &str = "styleforge_kernels.ptx";

/// Looks for the PTX, in order: `explicit`, `$STYLEFORGE_PTX`, next to the executable, the workspace's
/// `target/ptx/` (where `cargo xtask build-kernels` writes it). Checks that it was built from the sources
/// this binary was built with.
pub fn find_ptx(explicit: Option<PathBuf>) -> Result<(PathBuf, String)> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p);
    } else if let Some(p) = std::env::var_os("STYLEFORGE_PTX") {
        candidates.push(PathBuf::from(p));
    } else {
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.to_path_buf()))
        {
            candidates.push(dir.join(PTX_FILE));
        }
        candidates.push(PathBuf::from(env!("STYLEFORGE_DEFAULT_PTX")));
    }
    let Some(path) = candidates.iter().find(|p| p.is_file()).cloned() else {
        return Err(Error::Ptx(format!(
            "no kernel module found (looked at {}); build it with `cargo xtask build-kernels`, or point \
             STYLEFORGE_PTX at a {PTX_FILE}",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Ptx(format!("{}: {e}", path.display())))?;
    let expected = env!("STYLEFORGE_KERNELS_HASH");
    let found = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix(PTX_HASH_PREFIX))
        .map(str::trim);
    match found {
        Some(h) if h == expected => Ok((path, text)),
        Some(h) => Err(Error::Ptx(format!(
            "{} is stale: built from kernel sources {h}, this binary expects {expected}; rebuild it with \
             `cargo xtask build-kernels` (or use the PTX shipped with this binary)",
            path.display()
        ))),
        None => Err(Error::Ptx(format!(
            "{} has no StyleForge source fingerprint; it was not written by `cargo xtask build-kernels`",
            path.display()
        ))),
    }
}
