//! The two networks assembled from the launchers in `ops`, on one stream, buffers allocated once per shape.
pub mod style_vit;
pub mod style_vit_fast;
pub mod transformer_net;
pub mod transformer_net_fast;

pub use style_vit::GpuStyleVit;
pub use transformer_net::GpuTransformerNet;
