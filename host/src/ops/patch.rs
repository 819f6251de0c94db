//! `patch_embed` / `unpatch` / positional-embedding launchers.
use crate::error::Result;
use crate::gpu::{DeviceTensor, Gpu};
