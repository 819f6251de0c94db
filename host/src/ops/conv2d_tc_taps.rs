//! Launcher of `conv2d_tc_halo9_taps` (gpu-kernels/src/kernels/conv2d_tc_taps.rs): TransformerNet's last
//! layer, 9x9 reflection-padded, 32 -> at most 3 channels, with the filter columns in the GEMM's N and the
//! previous layer's InstanceNorm + ReLU optionally applied on load.
use gpu_kernels::launch::{
    CONV2D_TC_HALO_C, CONV2D_TC_TAPS_K, CONV2D_TC_TAPS_SMEM, CONV2D_TC_TAPS_TH, CONV2D_TC_TAPS_TW, CONV2D_TC_TAPS_W_ELEMS, CONV2D_TC_THREADS,
};
use models::Tensor;

use crate::error::{ensure, Result};
use crate::gpu::{DeviceTensor, Gpu, Layout};
use crate::ops::conv2d_tc::{halo9_check, input_norm_arg};
use crate::ops::nhwc::NormCoef;
use crate::kernel_args;

const OP: &str = "conv2d_tc";

/// The last layer's weight packed for [`conv2d_tc_halo9_taps`] (f16, fragment order) and its real
/// output channel count.
pub struct TapsWeight {
    pub data: DeviceTensor,
    pub k: usize,
}

/// Packs `w` `[K ≤ 3, 32, 9, 9]` into the order `conv2d_tc_halo9_taps` reads: for k16 step s (filter row
/// dy = s / 2, channels ci = (s % 2)·16 + kk), lane (g = lane / 4, q = lane % 4), n-tile j and register
/// reg, the halves e = 0, 1 hold B[kk = 2q + 8·reg + e][n = 8j + g] = w[c][ci][dy][dx] for n = dx·3 + c
/// (zero for n ≥ 27 or c ≥ K), at `(((s·32 + lane)·4 + j)·2 + reg)·2 + e`.
pub fn pack_weight_halo9_taps(w: &Tensor) -> Result<Vec<f32>> {
    let ok = w.shape.len() == 4
        && (1..=CONV2D_TC_TAPS_K as usize).contains(&w.shape[0])
        && w.shape[1..] == [CONV2D_TC_HALO_C as usize, 9, 9];
    ensure(ok, OP, || {
        format!("the taps kernel takes a [1..{CONV2D_TC_TAPS_K}, {CONV2D_TC_HALO_C}, 9, 9] weight, got {:?}", w.shape)
    })?;
    let (k, c) = (w.shape[0], w.shape[1]);
    let kt = CONV2D_TC_TAPS_K as usize;
    let mut out = vec![0f32; CONV2D_TC_TAPS_W_ELEMS as usize];
    for s in 0..18 {
        let dy = s / 2;
        for lane in 0..32 {
            let (g, q) = (lane / 4, lane % 4);
            for j in 0..4 {
                let n = 8 * j + g;
                let (dx, ch) = (n / kt, n % kt);
                if dx >= 9 || ch >= k {
                    continue;
                }
                for reg in 0..2 {
                    for e in 0..2 {
                        let ci = (s % 2) * 16 + 2 * q + 8 * reg + e;
                        out[(((s * 32 + lane) * 4 + j) * 2 + reg) * 2 + e] = w.data[((ch * c + ci) * 9 + dy) * 9 + dx];
                    }
                }
            }
        }
    }
    Ok(out)
}

impl TapsWeight {
    /// Packs (see [`pack_weight_halo9_taps`]) and uploads `w` rounded to f16.
    pub fn upload(w: &Tensor) -> Result<Self> {
        let data = pack_weight_halo9_taps(w)?;
        Ok(TapsWeight { data: DeviceTensor::from_f32_as_f16(&[data.len()], &data, Layout::RowMajor)?, k: w.shape[0] })
    }
}

/// y `[N, k, H, W]` (NCHW f32) = bias + conv9x9(x' reflect-padded by 4, w) for x NHWC f16 `[N, H, W, 32]`,
/// where x' = relu(a·x + b) per channel with `in_norm`'s (a, b) (given, or computed by the kernel from the
/// plane sums) when given, else x' = x.
pub fn conv2d_tc_halo9_taps(gpu: &Gpu, x: &DeviceTensor, w: &TapsWeight, in_norm: Option<NormCoef<'_>>, bias: &DeviceTensor, y: &mut DeviceTensor) -> Result<()> {
    let tile = (CONV2D_TC_TAPS_TH, CONV2D_TC_TAPS_TW);
    let (n, grid) = halo9_check("halo9 taps", x, &w.data, CONV2D_TC_TAPS_W_ELEMS, w.k, CONV2D_TC_TAPS_K as usize, bias, y, tile)?;
    let (h, wd, kr) = (x.shape[1], x.shape[2], w.k);
    let norm = input_norm_arg(in_norm, n, h, wd, CONV2D_TC_HALO_C as usize)?;
    let (h32, w32, kr32) = (h as u32, wd as u32, kr as u32);
    // SAFETY: conv2d_tc_halo9_taps(x, w: *const u16, norm: InNorm, h, wd: u32, y32: *mut f32,
    // bias: *const f32, k_real: u32) match the arguments in order and type. Block (tx, ty, n) reads
    // x[n][ih][iw][0..32] with ih, iw clamped to H+3 / W+3 and reflected into 0..H / 0..W (H, W ≥ 5, so one
    // reflection of a distance ≤ 4 stays in range), the packed weight (CONV2D_TC_TAPS_W_ELEMS f16,
    // checked), with an input norm coef[(n*32 + ci)*2 ..+2] (N*32*2 values checked) or the sums planes n*32 + ci
    // and γ, β [32] (checked), bias[0..k_real], and writes
    // y[n][0..k_real][oh][ow] only for oh < H, ow < W (shape checked). x rows are 64 bytes and
    // allocations 256-byte aligned, so the 16-byte cp.async sources are aligned. Block = 256 threads,
    // CONV2D_TC_TAPS_SMEM bytes of dynamic shared memory (opted in by `launch`).
    unsafe {
        gpu.launch("conv2d_tc_halo9_taps", grid, (CONV2D_TC_THREADS, 1, 1), CONV2D_TC_TAPS_SMEM,
            kernel_args!(x.ptr(), w.data.ptr(), norm, h32, w32, y.ptr(), bias.ptr(), kr32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_places_each_weight_once() {
        // Distinct values: every one of the 3*32*81 weights must appear exactly once, the rest zero.
        let data: Vec<f32> = (0..3 * 32 * 81).map(|i| i as f32 + 1.0).collect();
        let w = Tensor::new(&[3, 32, 9, 9], data);
        let p = pack_weight_halo9_taps(&w).unwrap();
        let mut seen: Vec<f32> = p.iter().copied().filter(|&v| v != 0.0).collect();
        seen.sort_by(f32::total_cmp);
        assert_eq!(seen.len(), 3 * 32 * 81);
        assert!(seen.iter().enumerate().all(|(i, &v)| v == i as f32 + 1.0));
        // Spot check: s = 3 (dy 1, ci 16..32), lane 5 (g 1, q 1), n-tile 2 -> n = 17 = dx 5, c 2; reg 1, e 0 -> ci = 16 + 2 + 8 = 26.
        assert_eq!(p[(((3 * 32 + 5) * 4 + 2) * 2 + 1) * 2], w.data[((2 * 32 + 26) * 9 + 1) * 9 + 5]);
    }

    #[test]
    fn refuses_other_shapes() {
        let w = Tensor::new(&[4, 32, 9, 9], vec![0.0; 4 * 32 * 81]);
        assert!(pack_weight_halo9_taps(&w).is_err());
        let w = Tensor::new(&[3, 16, 9, 9], vec![0.0; 3 * 16 * 81]);
        assert!(pack_weight_halo9_taps(&w).is_err());
    }
}
