//! The host library's error type.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable GPU: no driver, no device, or the driver refused to initialise.
    #[error("no CUDA GPU available: {0}")]
    NoGpu(String),
    #[error("CUDA error during {what}: {source}")]
    Cuda {
        what: String,
        source: cust::error::CudaError,
    },
    /// The PTX module is missing, stale or rejected by the driver.
    #[error("{0}")]
    Ptx(String),
    /// A launch was refused on the host because its shapes or sizes do not fit the kernel.
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
    #[error(transparent)]
    Model(#[from] models::Error),
    #[error("{}: {msg}", path.display())]
    Image { path: PathBuf, msg: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Attaches "during what" to a cust result.
pub trait CudaContext<T> {
    fn during(self, what: impl Into<String>) -> Result<T>;
}
impl<T> CudaContext<T> for cust::error::CudaResult<T> {
    fn during(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Cuda {
            what: what.into(),
            source,
        })
    }
}

/// Shape check helper for launchers: `ensure(cond, op, || msg)`.
pub fn ensure(cond: bool, op: &'static str, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Shape { op, msg: msg() })
    }
}
