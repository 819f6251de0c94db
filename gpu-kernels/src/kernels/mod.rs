//! The kernels. Each module is one op; its kernels are named `<op>` or `<op>_<variant>`, and the host
//! launcher in `host/src/ops/<op>.rs` and the CPU reference `models::ops::<op>` carry the same name.
mod adain;
mod attention;
mod attention_tc;
mod attention_tma;
mod conv2d;
mod conv2d_tc;
mod conv2d_tc_taps;
mod conv2d_tma;
mod conv2d_wg;
mod elementwise;
mod instance_norm;
mod layer_norm;
mod linear;
mod linear_tc;
mod linear_tma;
mod linear_wg;
mod nhwc;
mod patch;
mod upsample;
