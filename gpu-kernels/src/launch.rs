//! Launch constants shared by the kernels and the host launchers (compiled for both targets).

/// Threads per block of the 1-D elementwise kernels (grid-stride loops).
pub const ELEMENTWISE_BLOCK: u32 = 256;
/// Threads per block of the per-(sample, channel) reduction kernels (instance norm statistics).
pub const REDUCE_BLOCK: u32 = 256;

// ---------------------------------------------------------------------------------------------- conv2d
/// Threads per block of the direct convolution kernels.
pub const CONV2D_THREADS: u32 = 256;
/// Output columns per conv2d block: one per lane of a warp.
pub const CONV2D_TILE_Q: u32 = 32;
/// Input channels staged in shared memory per step, at most.
pub const CONV2D_MAX_CHUNK: u32 = 8;

/// One compiled shape of the direct convolution kernel. The block's 256 threads are split into `kg`
/// channel groups; each thread owns `kx` output channels and `px` output pixels (one column, rows
/// `rg, rg + row_groups, ...`), so a block computes `tile_p() x CONV2D_TILE_Q` pixels for `channels()`
/// output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dVariant {
    pub name: &'static str,
    pub kg: u32,
    pub kx: u32,
    pub px: u32,
}

/// Many output channels (K > 4): 32 channels x 8 x 32 pixels per block, 8 x 4 outputs per thread.
pub const CONV2D_WIDE: Conv2dVariant = Conv2dVariant { name: "conv2d_k32", kg: 4, kx: 8, px: 4 };
/// Few output channels (K <= 4, the last 9x9 layer): 4 channels x 32 x 32 pixels per block.
pub const CONV2D_NARROW: Conv2dVariant = Conv2dVariant { name: "conv2d_k4", kg: 1, kx: 4, px: 4 };

impl Conv2dVariant {
    /// Output channels per block.
    pub const fn channels(&self) -> u32 {
        self.kg * self.kx
    }
    /// Threads per channel group (pixel threads).
    pub const fn pixel_threads(&self) -> u32 {
        CONV2D_THREADS / self.kg
    }
    /// Rows of pixel threads (each warp of a channel group covers one row of 32 columns).
    pub const fn row_groups(&self) -> u32 {
        self.pixel_threads() / 32
    }
    /// Output rows per block.
    pub const fn tile_p(&self) -> u32 {
        self.row_groups() * self.px
    }
    /// Rows of the staged input tile (padded, upsampled coordinates) for filter height `r`.
    pub const fn in_rows(&self, r: u32, stride: u32) -> u32 {
        (self.tile_p() - 1) * stride + r
    }
    /// Columns of the staged input tile for filter width `r`.
    pub const fn in_cols(&self, r: u32, stride: u32) -> u32 {
        (CONV2D_TILE_Q - 1) * stride + r
    }
    /// Shared-memory floats per staged input channel: its weights (`r*r*channels`) and its input tile.
    pub const fn smem_floats_per_channel(&self, r: u32, stride: u32) -> u32 {
        r * r * self.channels() + self.in_rows(r, stride) * self.in_cols(r, stride)
    }
}

// ---------------------------------------------------------------------------------------- instance_norm
/// Elements of one (sample, channel) plane reduced by one block of `instance_norm_partial`, at least.
pub const INSTANCE_NORM_CHUNK: usize = 4096;
/// At most this many partial blocks per plane (larger planes get larger chunks).
pub const INSTANCE_NORM_MAX_SPLITS: usize = 1024;
/// InstanceNorm2d's epsilon.
pub const INSTANCE_NORM_EPS: f32 = 1e-5;

/// `(splits, chunk)` for a plane of `hw` elements: `splits` blocks of `chunk` elements (the last one
/// possibly shorter, none empty).
pub const fn instance_norm_splits(hw: usize) -> (usize, usize) {
    let mut splits = hw.div_ceil(INSTANCE_NORM_CHUNK);
    if splits > INSTANCE_NORM_MAX_SPLITS {
        splits = INSTANCE_NORM_MAX_SPLITS;
    }
    if splits == 0 {
        splits = 1;
    }
    let chunk = if hw == 0 { 1 } else { hw.div_ceil(splits) };
    (if hw == 0 { 1 } else { hw.div_ceil(chunk) }, chunk)
}
