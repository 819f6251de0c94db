//! `linear` kernels (see host/src/ops/linear.rs for the launcher, models::ops::linear for the CPU reference).
