//! `instance_norm` launchers: per-(sample, channel) statistics, then normalise + affine (+ReLU) (+residual).
use crate::error::Result;
use crate::gpu::{DeviceTensor, Gpu};
