//! Launch constants shared by the kernels and the host launchers (compiled for both targets).

/// Threads per block of the 1-D elementwise kernels (grid-stride loops).
pub const ELEMENTWISE_BLOCK: u32 = 256;
/// Threads per block of the per-(sample, channel) reduction kernels (instance norm statistics).
pub const REDUCE_BLOCK: u32 = 256;
