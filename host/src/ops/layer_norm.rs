//! `layer_norm` launcher (optionally fused with the residual add before it).
use crate::error::Result;
use crate::gpu::{DeviceTensor, Gpu};
