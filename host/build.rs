//! Compiles the kernel sources' fingerprint and the default PTX location into the binary, so a stale or
//! missing PTX is caught at load time with a message instead of a confusing launch failure.
use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let kernels = Path::new(&manifest).join("../gpu-kernels");
    let hash =
        gpu_kernels::source_hash::source_hash(&kernels).expect("hashing gpu-kernels sources");
    println!("cargo:rustc-env=STYLEFORGE_KERNELS_HASH={hash}");
    let ptx = Path::new(&manifest).join("../target/ptx/styleforge_kernels.ptx");
    println!("cargo:rustc-env=STYLEFORGE_DEFAULT_PTX={}", ptx.display());
    println!("cargo:rerun-if-changed=../gpu-kernels/src");
    println!("cargo:rerun-if-changed=../gpu-kernels/Cargo.toml");
}
