//! `linear` launcher: y = x Wᵀ + b with fused epilogues (GELU, residual add).
use crate::error::Result;
use crate::gpu::{DeviceTensor, Gpu};
