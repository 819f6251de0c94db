//! Errors of weight loading and model construction. Every variant names the file (and key) at fault.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {msg}", path.display())]
    Io { path: PathBuf, msg: String },
    /// The file is not a weight file we can read (wrong magic, truncated, malformed container).
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// A pickle construct outside what a tensor state dict uses (we never execute pickles).
    #[error("{}: refused pickle content: {msg}", path.display())]
    UnsafePickle { path: PathBuf, msg: String },
    #[error("{}: missing weight `{key}`", path.display())]
    MissingKey { path: PathBuf, key: String },
    #[error("{}: unexpected weight(s) {}", path.display(), keys.join(", "))]
    UnexpectedKeys { path: PathBuf, keys: Vec<String> },
    #[error("{}: `{key}` has shape {found:?}, expected {expected:?}", path.display())]
    Shape {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{}: `{key}` has dtype {found}, expected a float tensor (f32, f16, bf16 or f64)", path.display())]
    DType {
        path: PathBuf,
        key: String,
        found: String,
    },
    #[error("{}: `{key}` contains NaN or infinity", path.display())]
    NonFinite { path: PathBuf, key: String },
    #[error("{}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },
    /// Invalid arguments to a CPU op or forward pass.
    #[error("{op}: {msg}")]
    Shape2 { op: &'static str, msg: String },
}

pub type Result<T> = std::result::Result<T, Error>;
