//! `adain` kernels (see host/src/ops/adain.rs for the launcher, models::ops::adain for the CPU reference).
