//! `adain` launcher: AdaIN over token statistics with the content/style blend alpha.
use crate::error::Result;
use crate::gpu::{DeviceTensor, Gpu};
