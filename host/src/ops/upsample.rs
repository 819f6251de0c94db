//! `upsample_nearest` launcher.
use crate::error::Result;
use crate::gpu::{DeviceTensor, Gpu};
