//! `layer_norm` kernels (see host/src/ops/layer_norm.rs for the launcher, models::ops::layer_norm for the CPU reference).
