//! `conv2d_tc` launcher: bf16 implicit-GEMM convolution on tensor cores (fp32 accumulation, f32 output),
//! plus the host helpers it needs (bf16 rounding, weight packing, NCHW <-> NHWC, bf16 uploads).
//!
//! Tensor conventions (shapes are in memory order):
//! * x: `[N, H, W, C]` bf16, `Layout::Nhwc`, C a multiple of 16;
//! * w: `[K, R, S, C]` bf16 (see [`pack_weight_krsc`]), K in {32, 64, 128}, R = S in {3, 9};
//! * b: `[K]` f32, optional;
//! * y: `[N, P, Q, K]` f32, `Layout::Nhwc`.
//!
//! Padding is reflection by `pad` = R / 2 in upsampled coordinates; `upsample` (1 or 2) repeats every
//! input pixel (nearest) before padding, as `models::ops::conv2d(.., Padding::Reflect(pad), upsample)`.
use gpu_kernels::launch::{conv2d_tc_kernel, conv2d_tc_smem_bytes, CONV2D_TC_BM, CONV2D_TC_THREADS};
use models::ops::Padding;
use models::Tensor;

use crate::error::{ensure, Error, Result};
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::kernel_args;
use crate::ops::conv2d::conv2d_output_size;

const OP: &str = "conv2d_tc";

/// f32 -> bf16 bits, rounding to nearest even (NaN stays a quiet NaN; overflow gives infinity).
pub fn f32_to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) as u16) | 0x0040;
    }
    let lsb = (bits >> 16) & 1;
    (bits.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// bf16 bits -> f32 (exact).
pub fn bf16_to_f32(v: u16) -> f32 {
    f32::from_bits((v as u32) << 16)
}

/// `v` rounded to the nearest bf16 value (as f32).
pub fn round_bf16(v: f32) -> f32 {
    bf16_to_f32(f32_to_bf16(v))
}

fn dims4(what: &str, t: &Tensor) -> Result<[usize; 4]> {
    match t.shape[..] {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(Error::Shape { op: OP, msg: format!("{what} must be 4-D, got {:?}", t.shape) }),
    }
}

/// Packs an NCHW-style f32 weight `[K, C, R, S]` into `[K][R][S][C]` bf16 (the GEMM-K order the kernel
/// reads). Returns the packed shape `[K, R, S, C]` and the data.
pub fn pack_weight_krsc(w: &Tensor) -> Result<([usize; 4], Vec<u16>)> {
    let [k, c, r, s] = dims4("weight", w)?;
    let mut out = vec![0u16; w.data.len()];
    for ki in 0..k {
        for ci in 0..c {
            for ri in 0..r {
                for si in 0..s {
                    out[((ki * r + ri) * s + si) * c + ci] = f32_to_bf16(w.data[((ki * c + ci) * r + ri) * s + si]);
                }
            }
        }
    }
    Ok(([k, r, s, c], out))
}

/// An NCHW f32 tensor as NHWC bf16: the shape `[N, H, W, C]` and the data.
pub fn nchw_to_nhwc_bf16(x: &Tensor) -> Result<([usize; 4], Vec<u16>)> {
    let [n, c, h, w] = dims4("input", x)?;
    let mut out = vec![0u16; x.data.len()];
    for ni in 0..n {
        for ci in 0..c {
            for hi in 0..h {
                for wi in 0..w {
                    out[((ni * h + hi) * w + wi) * c + ci] = f32_to_bf16(x.data[((ni * c + ci) * h + hi) * w + wi]);
                }
            }
        }
    }
    Ok(([n, h, w, c], out))
}

/// NHWC f32 data of shape `[N, H, W, C]` as an NCHW tensor `[N, C, H, W]`.
pub fn nhwc_to_nchw(shape: [usize; 4], data: &[f32]) -> Result<Tensor> {
    let [n, h, w, c] = shape;
    ensure(n * h * w * c == data.len(), OP, || format!("NHWC shape {shape:?} does not match {} elements", data.len()))?;
    let mut out = vec![0f32; data.len()];
    for ni in 0..n {
        for hi in 0..h {
            for wi in 0..w {
                for ci in 0..c {
                    out[((ni * c + ci) * h + hi) * w + wi] = data[((ni * h + hi) * w + wi) * c + ci];
                }
            }
        }
    }
    Ok(Tensor { shape: vec![n, c, h, w], data: out })
}

/// A new bf16 device tensor holding `data` (bf16 bits), with the given shape and layout; blocking copy.
pub fn bf16_tensor(shape: &[usize], data: &[u16], layout: Layout) -> Result<DeviceTensor> {
    let n: usize = shape.iter().product();
    ensure(n == data.len(), "bf16_tensor", || format!("shape {shape:?} has {n} elements, data has {}", data.len()))?;
    let t = DeviceTensor::empty(shape, DType::BF16, layout)?;
    if !data.is_empty() {
        // SAFETY: `t` owns a device allocation of at least `n * 2` bytes (DeviceTensor::empty sizes it
        // as numel * dtype size) and `data` is a live host slice of exactly `n` u16 = `n * 2` bytes; the
        // copy is synchronous, so `data` outlives it.
        let r = unsafe {
            cust::sys::cuMemcpyHtoD_v2(t.ptr(), data.as_ptr() as *const std::ffi::c_void, std::mem::size_of_val(data))
        };
        if r != cust::sys::cudaError_enum::CUDA_SUCCESS {
            return Err(Error::Other(format!("copying {} bf16 values to the device failed: {r:?}", data.len())));
        }
    }
    Ok(t)
}

/// Uploads an NCHW f32 weight `[K, C, R, S]` packed as `[K, R, S, C]` bf16.
pub fn upload_weight(w: &Tensor) -> Result<DeviceTensor> {
    let (shape, data) = pack_weight_krsc(w)?;
    bf16_tensor(&shape, &data, Layout::RowMajor)
}

/// Uploads an NCHW f32 tensor as NHWC bf16 `[N, H, W, C]`.
pub fn upload_nhwc_bf16(x: &Tensor) -> Result<DeviceTensor> {
    let (shape, data) = nchw_to_nhwc_bf16(x)?;
    bf16_tensor(&shape, &data, Layout::Nhwc)
}

/// Output shape `[N, P, Q, K]` of [`conv2d_tc`] for x `[N, H, W, C]` and w `[K, R, S, C]`, or `None`
/// when the filter does not fit the padded input.
pub fn conv2d_tc_output_shape(x: &[usize], w: &[usize], stride: usize, pad: usize, upsample: usize) -> Option<[usize; 4]> {
    match (x, w) {
        ([n, h, wd, _], [k, r, _, _]) => {
            let (p, q) = conv2d_output_size(*h, *wd, *r, stride, Padding::Reflect(pad), upsample)?;
            Some([*n, p, q, *k])
        }
        _ => None,
    }
}

/// y [N, P, Q, K] (f32) = conv(upsample(x) reflect-padded by `pad_reflect`, w) + b, on tensor cores.
/// Shapes and types as in the module comment; every violation is an error, nothing is launched.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_tc(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    b: Option<&DeviceTensor>,
    stride: usize,
    pad_reflect: usize,
    upsample: usize,
    y: &mut DeviceTensor,
) -> Result<()> {
    ensure(x.dtype == DType::BF16 && x.layout == Layout::Nhwc, OP, || {
        format!("x must be NHWC bf16, got {:?} {:?}", x.layout, x.dtype)
    })?;
    ensure(w.dtype == DType::BF16, OP, || format!("w must be bf16, got {:?}", w.dtype))?;
    ensure(y.dtype == DType::F32 && y.layout == Layout::Nhwc, OP, || {
        format!("y must be NHWC f32, got {:?} {:?}", y.layout, y.dtype)
    })?;
    ensure(x.shape.len() == 4, OP, || format!("x must be [N, H, W, C], got {:?}", x.shape))?;
    ensure(w.shape.len() == 4, OP, || format!("w must be [K, R, S, C], got {:?}", w.shape))?;
    let (n, h, wd, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (k, r, s, wc) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    ensure(n > 0 && h > 0 && wd > 0, OP, || format!("empty input {:?}", x.shape))?;
    ensure(c > 0 && c % 16 == 0, OP, || format!("input channels must be a positive multiple of 16, got {c}"))?;
    ensure(wc == c, OP, || format!("w {:?} does not match x {:?} (input channels)", w.shape, x.shape))?;
    let kernel = u32::try_from(k).ok().and_then(conv2d_tc_kernel);
    let Some(kernel) = kernel else {
        return Err(Error::Shape { op: OP, msg: format!("output channels must be 32, 64 or 128, got {k}") });
    };
    ensure(r == s && (r == 3 || r == 9), OP, || format!("3x3 or 9x9 filters only, got {r}x{s}"))?;
    ensure(pad_reflect == r / 2, OP, || format!("reflection padding must be {} for a {r}x{r} filter, got {pad_reflect}", r / 2))?;
    ensure(stride == 1 || stride == 2, OP, || format!("stride {stride} not 1 or 2"))?;
    ensure(upsample == 1 || upsample == 2, OP, || format!("upsample factor {upsample} not 1 or 2"))?;
    let (hu, wu) = (h * upsample, wd * upsample);
    ensure(pad_reflect < hu && pad_reflect < wu, OP, || {
        format!("reflection padding {pad_reflect} needs an input larger than {pad_reflect} (got {hu}x{wu} after upsampling)")
    })?;
    let Some(out_shape) = conv2d_tc_output_shape(&x.shape, &w.shape, stride, pad_reflect, upsample) else {
        return Err(Error::Shape { op: OP, msg: format!("{r}x{r} filter larger than the padded input of {:?}", x.shape) });
    };
    if let Some(b) = b {
        ensure(b.dtype == DType::F32 && b.shape == [k], OP, || format!("bias must be f32 [{k}], got {:?} {:?}", b.dtype, b.shape))?;
    }
    ensure(y.shape == out_shape, OP, || format!("y must be {out_shape:?}, got {:?}", y.shape))?;
    let [_, p, q, _] = out_shape;
    let m = n * p * q;
    // The kernel indexes pixels, weights, outputs and (upsampled, padded) coordinates with 32-bit integers.
    let fits = |v: usize| v < (1 << 31);
    ensure(fits(x.numel()) && fits(w.numel()) && fits(y.numel()) && fits(m) && hu < (1 << 30) && wu < (1 << 30), OP, || {
        format!("sizes too large for 32-bit indexing: x {:?}, w {:?}, y {:?}", x.shape, w.shape, y.shape)
    })?;
    let blocks = m.div_ceil(CONV2D_TC_BM as usize);
    let smem = conv2d_tc_smem_bytes(k as u32);
    let b_ptr: u64 = b.map_or(0, |b| b.ptr());
    let (h32, w32, c32, p32, q32, r32) = (h as u32, wd as u32, c as u32, p as u32, q as u32, r as u32);
    let (s32, pad32, up32, m32) = (stride as u32, pad_reflect as u32, upsample as u32, m as u32);
    // SAFETY: conv2d_tc_k{32,64,128}(x, w: *const u16, b: *const f32, y: *mut f32, h, w, c, p, q, r,
    // stride, pad, up, m: u32) match the argument list in order and type, and `kernel` is the variant
    // compiled for exactly this K. The kernel reads x[n][ih][iw][c..c+8] with n < N and ih/iw reflected
    // into range (pad < H*up, W*up checked; rows past M clamped to M-1), w[0..K*R*S*C] (GEMM-K positions
    // past R*S*C are not read: zero-filled copies of the first element), b[0..K] only when non-null,
    // and writes y[m][0..K] only for m < M = N*P*Q; all tensors have exactly these shapes (checked
    // above). Device allocations are 256-byte aligned and C % 16 == 0, so every 16-byte cp.async source
    // is aligned. Block = CONV2D_TC_THREADS threads and `smem` = conv2d_tc_smem_bytes(K), the layout the
    // kernel carves; the grid covers ceil(M / CONV2D_TC_BM) blocks.
    unsafe {
        gpu.launch(
            kernel,
            (blocks as u32, 1, 1),
            (CONV2D_TC_THREADS, 1, 1),
            smem,
            kernel_args!(x.ptr(), w.ptr(), b_ptr, y.ptr(), h32, w32, c32, p32, q32, r32, s32, pad32, up32, m32),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(-2.0), 0xc000);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up to even.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        // Just above halfway rounds up.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        assert_eq!(round_bf16(0.1), bf16_to_f32(0x3dcd));
        for v in [0.0f32, 1.5, -3.25, 1e-20, 6.5e4] {
            assert!((round_bf16(v) - v).abs() <= v.abs() / 256.0, "{v}");
        }
    }

    #[test]
    fn weight_packing_is_krsc() {
        let (k, c, r) = (2, 3, 3);
        let data: Vec<f32> = (0..k * c * r * r).map(|i| i as f32).collect();
        let w = Tensor { shape: vec![k, c, r, r], data };
        let (shape, packed) = pack_weight_krsc(&w).unwrap();
        assert_eq!(shape, [k, r, r, c]);
        for ki in 0..k {
            for ci in 0..c {
                for ri in 0..r {
                    for si in 0..r {
                        let want = ((ki * c + ci) * r + ri) * r + si;
                        assert_eq!(bf16_to_f32(packed[((ki * r + ri) * r + si) * c + ci]), want as f32);
                    }
                }
            }
        }
    }

    #[test]
    fn nhwc_round_trip() {
        let data: Vec<f32> = (0..2 * 3 * 4 * 5).map(|i| i as f32).collect();
        let x = Tensor { shape: vec![2, 3, 4, 5], data: data.clone() };
        let (shape, nhwc) = nchw_to_nhwc_bf16(&x).unwrap();
        assert_eq!(shape, [2, 4, 5, 3]);
        let back = nhwc_to_nchw(shape, &nhwc.iter().map(|&v| bf16_to_f32(v)).collect::<Vec<_>>()).unwrap();
        assert_eq!(back.shape, x.shape);
        assert_eq!(back.data, data);
    }

    #[test]
    fn output_shapes() {
        assert_eq!(conv2d_tc_output_shape(&[1, 33, 29, 32], &[64, 3, 3, 32], 2, 1, 1), Some([1, 17, 15, 64]));
        assert_eq!(conv2d_tc_output_shape(&[1, 9, 11, 128], &[64, 3, 3, 128], 1, 1, 2), Some([1, 18, 22, 64]));
        assert_eq!(conv2d_tc_output_shape(&[2, 19, 23, 128], &[128, 3, 3, 128], 1, 1, 1), Some([2, 19, 23, 128]));
        assert_eq!(conv2d_tc_output_shape(&[1, 2, 2, 16], &[32, 9, 9, 16], 1, 3, 1), None);
    }

    #[test]
    fn smem_fits_default_limit() {
        for k in [32u32, 64, 128] {
            assert!(conv2d_tc_kernel(k).is_some());
            assert!(conv2d_tc_smem_bytes(k) <= 48 * 1024, "k {k}");
        }
        assert!(conv2d_tc_kernel(48).is_none());
    }
}
