//! `upsample` kernels (see host/src/ops/upsample.rs for the launcher, models::ops::upsample for the CPU reference).
