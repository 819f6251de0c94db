//! `attention` launcher: flash-style multi-head attention.
use crate::error::Result;
use crate::gpu::{DeviceTensor, Gpu};
