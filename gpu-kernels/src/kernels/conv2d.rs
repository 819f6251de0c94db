//! `conv2d` kernels (see host/src/ops/conv2d.rs for the launcher, models::ops::conv2d for the CPU reference).
