//! StyleForge models: network descriptions, weights (safetensors, `.pth`) and the CPU reference.
pub mod error;
pub mod ops;
pub mod style_vit;
pub mod tensor;
pub mod transformer_net;
pub mod weights;

pub use error::{Error, Result};
pub use style_vit::{StyleVit, StyleVitConfig};
pub use tensor::Tensor;
pub use transformer_net::TransformerNet;
pub use weights::Weights;
