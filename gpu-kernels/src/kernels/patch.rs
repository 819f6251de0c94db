//! `patch` kernels (see host/src/ops/patch.rs for the launcher, models::ops::patch for the CPU reference).
