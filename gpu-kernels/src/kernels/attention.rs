//! `attention` kernels (see host/src/ops/attention.rs for the launcher, models::ops::attention for the CPU reference).
