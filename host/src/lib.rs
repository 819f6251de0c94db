//! StyleForge host library: the CUDA runtime (context, stream, PTX module, device tensors), one launcher
//! per kernel with host-side shape checks, the two networks assembled on the GPU, and the self-check.
pub mod error;
pub mod gpu;
pub mod nets;
pub mod ops;
pub mod selfcheck;

pub use error::{Error, Result};
pub use gpu::{DType, DeviceTensor, Gpu, Layout};
