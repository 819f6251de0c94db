//! One launcher per kernel. Each checks shapes and sizes on the host, then launches on the GPU's stream.
//! Names match the kernel (`gpu-kernels/src/kernels/<op>.rs`), the CPU reference (`models::ops::<op>`)
//! and the self-check entry.
pub mod adain;
pub mod attention;
pub mod attention_tc;
pub mod attention_tma;
pub mod conv2d;
pub mod conv2d_tc;
pub mod conv2d_tc_taps;
pub mod conv2d_tma;
pub mod conv2d_wg;
pub mod elementwise;
pub mod instance_norm;
pub mod layer_norm;
pub mod linear;
pub mod linear_tc;
pub mod linear_tma;
pub mod linear_wg;
pub mod nhwc;
pub mod patch;
pub mod upsample;
