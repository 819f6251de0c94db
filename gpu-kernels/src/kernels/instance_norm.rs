//! `instance_norm` kernels (see host/src/ops/instance_norm.rs for the launcher, models::ops::instance_norm for the CPU reference).
