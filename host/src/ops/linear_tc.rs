//! `linear_tc` launcher: y = x Wᵀ + b on tensor cores (f16 inputs, f32 accumulation), with the fused
//! epilogues of `linear` (bias, exact GELU, residual) and f32 and/or f16 outputs; plus the host-side f16
//! helpers (round to nearest even conversions, f16 uploads and downloads).
//!
//! Tensor conventions (row-major, `DType::F16` stores IEEE binary16 bits):
//! * x: `[.., K]` f16 (M = numel / K rows), K a positive multiple of 8 (16-byte cp.async chunks);
//! * w: `[N, K]` f16 (PyTorch `Linear` layout);
//! * bias: `[N]` f32; residual: `[R, N]` f32 or f16 with R dividing M (row m gets residual row m % R);
//! * y32: `[.., N]` f32 and/or y16: `[.., N]` f16 with M·N elements.
use gpu_kernels::launch::{
    ELEMENTWISE_BLOCK, LAYER_NORM_ROWS, LINEAR_TC_BIAS, LINEAR_TC_BM, LINEAR_TC_BN, LINEAR_TC_GELU, LINEAR_TC_RESIDUAL, LINEAR_TC_RES_F16,
    LINEAR_TC_SMEM_BYTES, LINEAR_TC_THREADS,
};
use models::Tensor;

use crate::error::{ensure, Error, Result};
use crate::gpu::{DType, DeviceTensor, Gpu, Layout};
use crate::kernel_args;

const OP: &str = "linear_tc";

/// f32 -> IEEE half bits, rounding to nearest even (subnormals kept, overflow gives infinity, NaN stays
/// a quiet NaN).
pub fn f32_to_f16(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 | (man >> 13) as u16 } else { 0 };
    }
    // Biased half exponent.
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Half subnormal (or zero): value = r · 2^-24 with r = m · 2^(e - 14), m the 24-bit significand.
        if e < -10 {
            return sign; // below 2^-25: rounds to zero
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rem = m & ((1u32 << shift) - 1);
        let mut r = m >> shift;
        if rem > half || (rem == half && r & 1 == 1) {
            r += 1; // may carry into the smallest normal, which is the right encoding
        }
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && r & 1 == 1) {
        r += 1; // a carry out of the mantissa bumps the exponent (up to infinity): still correct
    }
    sign | r as u16
}

/// IEEE half bits -> f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    if exp == 0 {
        // Zero or subnormal: man · 2^-24 (exact in f32).
        let v = man as f32 * f32::from_bits(0x3380_0000);
        return if sign != 0 { -v } else { v };
    }
    if exp == 0x1f {
        return f32::from_bits(sign | 0x7f80_0000 | (man << 13));
    }
    f32::from_bits(sign | ((exp + 112) << 23) | (man << 13))
}

/// `v` rounded to the nearest f16 value (as f32).
pub fn round_f16(v: f32) -> f32 {
    f16_to_f32(f32_to_f16(v))
}

/// A host tensor with every element rounded to f16 (the values an f16 upload of it holds).
pub fn round_tensor_f16(t: &Tensor) -> Tensor {
    Tensor { shape: t.shape.clone(), data: t.data.iter().map(|&v| round_f16(v)).collect() }
}

/// A new f16 device tensor holding `data` (half bits); blocking copy.
pub fn f16_tensor(shape: &[usize], data: &[u16], layout: Layout) -> Result<DeviceTensor> {
    let n: usize = shape.iter().product();
    ensure(n == data.len(), "f16_tensor", || format!("shape {shape:?} has {n} elements, data has {}", data.len()))?;
    let t = DeviceTensor::empty(shape, DType::F16, layout)?;
    if !data.is_empty() {
        // SAFETY: `t` owns a device allocation of at least `n * 2` bytes (DeviceTensor::empty sizes it as
        // numel * dtype size) and `data` is a live host slice of exactly `n` u16; the copy is
        // synchronous, so `data` outlives it.
        let r = unsafe {
            cust::sys::cuMemcpyHtoD_v2(t.ptr(), data.as_ptr() as *const std::ffi::c_void, std::mem::size_of_val(data))
        };
        if r != cust::sys::cudaError_enum::CUDA_SUCCESS {
            return Err(Error::Other(format!("copying {} f16 values to the device failed: {r:?}", data.len())));
        }
    }
    Ok(t)
}

/// Uploads a host f32 tensor as row-major f16 (rounded to nearest even), same shape.
pub fn upload_f16(t: &Tensor) -> Result<DeviceTensor> {
    let bits: Vec<u16> = t.data.iter().map(|&v| f32_to_f16(v)).collect();
    f16_tensor(&t.shape, &bits, Layout::RowMajor)
}

/// Downloads an f16 device tensor as f32 values (exact). Waits for the stream first, so that a kernel
/// fault is reported as such.
pub fn download_f16(gpu: &Gpu, t: &DeviceTensor) -> Result<Vec<f32>> {
    ensure(t.dtype == DType::F16, "download_f16", || format!("tensor is {:?}, not f16", t.dtype))?;
    gpu.synchronize()?;
    let mut bits = vec![0u16; t.numel()];
    if !bits.is_empty() {
        // SAFETY: `t` owns at least numel * 2 bytes of device memory and `bits` is a host buffer of exactly
        // numel u16; the copy is synchronous.
        let r = unsafe {
            cust::sys::cuMemcpyDtoH_v2(bits.as_mut_ptr() as *mut std::ffi::c_void, t.ptr(), std::mem::size_of_val(&bits[..]))
        };
        if r != cust::sys::cudaError_enum::CUDA_SUCCESS {
            return Err(Error::Other(format!("copying {} f16 values to the host failed: {r:?}", bits.len())));
        }
    }
    Ok(bits.into_iter().map(f16_to_f32).collect())
}

/// What `linear_tc` does after the matrix product, in this order: + bias, exact GELU, + residual.
#[derive(Clone, Copy, Default)]
pub struct EpilogueTc<'a> {
    /// f32 [N].
    pub bias: Option<&'a DeviceTensor>,
    pub gelu: bool,
    /// f32 or f16 [R, N] (any shape with R·N elements) where R divides M: row m gets residual row
    /// `m % R` (R = M is a plain residual add; R < M broadcasts, e.g. positions over the batch).
    pub residual: Option<&'a DeviceTensor>,
}

/// y = epilogue(x Wᵀ) on tensor cores; writes `y32` (f32) and/or `y16` (f16), at least one. Shapes and
/// types as in the module comment; every violation is an error and nothing is launched.
pub fn linear_tc(
    gpu: &Gpu,
    x: &DeviceTensor,
    w: &DeviceTensor,
    ep: EpilogueTc<'_>,
    y32: Option<&mut DeviceTensor>,
    y16: Option<&mut DeviceTensor>,
) -> Result<()> {
    ensure(x.dtype == DType::F16 && w.dtype == DType::F16, OP, || {
        format!("x and w must be f16, got {:?} and {:?}", x.dtype, w.dtype)
    })?;
    ensure(w.shape.len() == 2, OP, || format!("weight must be [N, K], got {:?}", w.shape))?;
    let (n, k) = (w.shape[0], w.shape[1]);
    ensure(n > 0 && k > 0, OP, || format!("empty weight {:?}", w.shape))?;
    ensure(k.is_multiple_of(8), OP, || format!("K = {k} must be a multiple of 8 (16-byte f16 chunks)"))?;
    ensure(x.shape.last() == Some(&k), OP, || format!("x {:?} does not end in K = {k} (weight {:?})", x.shape, w.shape))?;
    let m = x.numel() / k;
    ensure(m > 0, OP, || format!("x {:?} has no rows", x.shape))?;
    ensure(y32.is_some() || y16.is_some(), OP, || "no output given (y32 and y16 are both None)".into())?;
    let out_ok = |y: &DeviceTensor, dt: DType| y.dtype == dt && y.shape.last() == Some(&n) && y.numel() == m * n;
    if let Some(y) = y32.as_deref() {
        ensure(out_ok(y, DType::F32), OP, || format!("y32 must be f32 holding [{m}, {n}], got {:?} {:?}", y.dtype, y.shape))?;
    }
    if let Some(y) = y16.as_deref() {
        ensure(out_ok(y, DType::F16), OP, || format!("y16 must be f16 holding [{m}, {n}], got {:?} {:?}", y.dtype, y.shape))?;
    }
    let fits = |v: usize| v < (1usize << 31);
    ensure(fits(m * k) && fits(n * k) && fits(m * n), OP, || {
        format!("sizes M {m}, N {n}, K {k} exceed the kernel's 32-bit range")
    })?;
    let grid_y = m.div_ceil(LINEAR_TC_BM as usize);
    ensure(grid_y <= 65_535, OP, || format!("M = {m} rows exceed the grid limit ({} rows)", 65_535 * LINEAR_TC_BM))?;
    let mut flags = 0u32;
    let mut b_ptr = 0u64;
    if let Some(b) = ep.bias {
        ensure(b.dtype == DType::F32 && b.numel() == n, OP, || format!("bias must be f32 with N = {n} elements, got {:?} {:?}", b.dtype, b.shape))?;
        flags |= LINEAR_TC_BIAS;
        b_ptr = b.ptr();
    }
    if ep.gelu {
        flags |= LINEAR_TC_GELU;
    }
    let mut r_ptr = 0u64;
    let mut r_rows = 1usize;
    if let Some(r) = ep.residual {
        ensure(r.dtype == DType::F32 || r.dtype == DType::F16, OP, || format!("residual must be f32 or f16, got {:?}", r.dtype))?;
        r_rows = r.numel() / n;
        ensure(r.numel().is_multiple_of(n) && r_rows > 0 && m.is_multiple_of(r_rows), OP, || {
            format!("residual {:?} must be [R, {n}] with R dividing M = {m}", r.shape)
        })?;
        flags |= LINEAR_TC_RESIDUAL;
        if r.dtype == DType::F16 {
            flags |= LINEAR_TC_RES_F16;
        }
        r_ptr = r.ptr();
    }
    let y32_ptr = y32.map_or(0u64, |y| y.ptr());
    let y16_ptr = y16.map_or(0u64, |y| y.ptr());
    let grid = (n.div_ceil(LINEAR_TC_BN as usize) as u32, grid_y as u32, 1);
    let (m32, n32, k32, rr32) = (m as u32, n as u32, k as u32, r_rows as u32);
    // SAFETY: linear_tc(x, w: *const u16, bias: *const f32, res: *const u8, y32: *mut f32, y16: *mut u16,
    // m, n, k, res_rows, flags: u32) matches the argument list in order and type. The kernel reads
    // x[0..m*k] and w[0..n*k] in 16-byte chunks that start at multiples of 8 elements of rows of k
    // (k % 8 == 0 checked; allocations are 256-byte aligned), clamping rows past M/N to row 0 with a
    // zero-byte copy; bias[0..n] only with LINEAR_TC_BIAS; res[0..r_rows*n] (f32, or f16 with
    // LINEAR_TC_RES_F16) only with LINEAR_TC_RESIDUAL (r_rows ≥ 1); and writes y32/y16[0..m*n] only when
    // non-null. Every size was checked against the tensors above and fits 32 bits; the outputs are
    // exclusive borrows, distinct from the inputs. Block = LINEAR_TC_THREADS threads with
    // LINEAR_TC_SMEM_BYTES of dynamic shared memory (the layout the kernel carves); the grid covers
    // ceil(N/BN) x ceil(M/BM) tiles.
    unsafe {
        gpu.launch(
            "linear_tc",
            grid,
            (LINEAR_TC_THREADS, 1, 1),
            LINEAR_TC_SMEM_BYTES,
            kernel_args!(x.ptr(), w.ptr(), b_ptr, r_ptr, y32_ptr, y16_ptr, m32, n32, k32, rr32, flags),
        )
    }
}

/// y16 = f16(x) elementwise (round to nearest even, saturating at ±65504): the f16 copy of an f32
/// activation for the next `linear_tc` / `attention_tc`. x f32 and y16 f16 with one element count.
pub fn to_f16(gpu: &Gpu, x: &DeviceTensor, y16: &mut DeviceTensor) -> Result<()> {
    const OP: &str = "linear_tc_to_f16";
    ensure(x.dtype == DType::F32 && y16.dtype == DType::F16, OP, || {
        format!("x must be f32 and y16 f16, got {:?} and {:?}", x.dtype, y16.dtype)
    })?;
    ensure(x.numel() == y16.numel(), OP, || format!("x {:?} and y16 {:?} differ in size", x.shape, y16.shape))?;
    let n = x.numel();
    ensure(n < (1usize << 31), OP, || format!("{n} elements exceed the kernel's 32-bit range"))?;
    if n == 0 {
        return Ok(());
    }
    let n32 = n as u32;
    // SAFETY: linear_tc_to_f16(x: *const f32, y: *mut u16, n: u32) reads x[0..n] and writes y[0..n]
    // (grid-stride loop bounded by n); both tensors hold exactly n elements of their type (checked).
    unsafe {
        gpu.launch(
            OP,
            (crate::gpu::blocks_for(n, ELEMENTWISE_BLOCK), 1, 1),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            kernel_args!(x.ptr(), y16.ptr(), n32),
        )
    }
}

/// LayerNorm(x + residual) · γ + β over the last dimension D (as [`crate::ops::layer_norm::layer_norm`]),
/// writing the f32 result to `y` (optional) and its f16 rounding to `y16` (the next GEMM's operand).
/// x, residual, y: f32 with one element count and last dimension D; gamma, beta: f32 [D]; y16 f16.
pub fn layer_norm_f16(
    gpu: &Gpu,
    x: &DeviceTensor,
    residual: Option<&DeviceTensor>,
    gamma: &DeviceTensor,
    beta: &DeviceTensor,
    y: Option<&mut DeviceTensor>,
    y16: &mut DeviceTensor,
) -> Result<()> {
    const OP: &str = "linear_tc_layer_norm";
    let all_f32 = [Some(x), residual, Some(gamma), Some(beta), y.as_deref()].iter().flatten().all(|t| t.dtype == DType::F32);
    ensure(all_f32 && y16.dtype == DType::F16, OP, || "f32 tensors and an f16 y16 only".into())?;
    let d = *x.shape.last().unwrap_or(&0);
    ensure(d > 0 && x.numel() > 0, OP, || format!("x {:?} is empty", x.shape))?;
    let rows = x.numel() / d;
    if let Some(y) = y.as_deref() {
        ensure(y.numel() == x.numel() && y.shape.last() == Some(&d), OP, || format!("y {:?} vs x {:?}", y.shape, x.shape))?;
    }
    ensure(y16.numel() == x.numel() && y16.shape.last() == Some(&d), OP, || format!("y16 {:?} vs x {:?}", y16.shape, x.shape))?;
    ensure(gamma.numel() == d && beta.numel() == d, OP, || {
        format!("gamma {:?} and beta {:?} must have D = {d} elements", gamma.shape, beta.shape)
    })?;
    if let Some(r) = residual {
        ensure(r.numel() == x.numel(), OP, || format!("residual {:?} vs x {:?}", r.shape, x.shape))?;
    }
    ensure(x.numel() < (1usize << 31), OP, || format!("{rows} rows of {d} are too many"))?;
    let blocks = rows.div_ceil(LAYER_NORM_ROWS as usize);
    let (r_ptr, has_res) = residual.map_or((0u64, 0u32), |r| (r.ptr(), 1));
    let y_ptr = y.map_or(0u64, |y| y.ptr());
    let (rows32, d32) = (rows as u32, d as u32);
    // SAFETY: linear_tc_layer_norm(x, res, gamma, beta: *const f32, y: *mut f32, y16: *mut u16, rows, d,
    // has_res: u32): warp w of block b handles row b*LAYER_NORM_ROWS + w < rows, reading x and res (only
    // if has_res) at [row*d, row*d + d), gamma/beta at [0, d), and writing y (when non-null) and y16
    // there. Every tensor holds rows*d (or d) elements of its type (checked above).
    unsafe {
        gpu.launch(
            OP,
            (blocks as u32, 1, 1),
            (32 * LAYER_NORM_ROWS, 1, 1),
            0,
            kernel_args!(x.ptr(), r_ptr, gamma.ptr(), beta.ptr(), y_ptr, y16.ptr(), rows32, d32, has_res),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trip_and_rounding() {
        assert_eq!(f32_to_f16(0.0), 0x0000);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f32_to_f16(1e6), 0x7c00);
        assert_eq!(f32_to_f16(-1e6), 0xfc00);
        assert_eq!(f32_to_f16(f32::INFINITY), 0x7c00);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        // 1 + 3·2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9: rounds up to even.
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        // Just above halfway rounds up.
        assert_eq!(f32_to_f16(f32::from_bits(1.0f32.to_bits() + 0x1001)), 0x3c01);
        // 65520 is halfway between 65504 and 65536 (= infinity): ties to even -> infinity.
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        // Subnormals: smallest 2^-24, largest (1023)·2^-24, halfway cases.
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0x0000); // tie -> even (0)
        assert_eq!(f32_to_f16(1.5 * 2f32.powi(-24)), 0x0002); // tie between 1 and 2 -> 2
        assert_eq!(f32_to_f16(2f32.powi(-26)), 0x0000);
        assert_eq!(f32_to_f16(1023.0 * 2f32.powi(-24)), 0x03ff);
        assert_eq!(f32_to_f16(2f32.powi(-14)), 0x0400); // smallest normal
        assert_eq!(f32_to_f16(1023.75 * 2f32.powi(-24)), 0x0400); // rounds up into the normals
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        // Every finite half value round-trips exactly.
        for h in 0u16..=0xffff {
            let v = f16_to_f32(h);
            if v.is_finite() {
                let back = f32_to_f16(v);
                assert!(back == h || (v == 0.0 && (back & 0x7fff) == 0), "{h:#06x} -> {v} -> {back:#06x}");
            }
        }
        // Rounding error bound for normal values: half an ulp = 2^-11 relative.
        for v in [0.1f32, -3.25391, 1234.567, 6.1e-5, 0.7] {
            assert!((round_f16(v) - v).abs() <= v.abs() * 2f32.powi(-11), "{v}");
        }
    }

    #[test]
    fn f16_matches_nearest_by_search() {
        // Brute force: the nearest half value (ties to even mantissa) for a sweep of f32 inputs.
        let halves: Vec<(f32, u16)> =
            (0u16..0x7c00).map(|h| (f16_to_f32(h), h)).collect();
        let mut x = 1.0e-8f32;
        while x < 70000.0 {
            let want = {
                let i = halves.partition_point(|&(v, _)| v < x);
                if i == 0 {
                    halves[0].1
                } else if i == halves.len() {
                    if x >= 65520.0 { 0x7c00 } else { halves[i - 1].1 }
                } else {
                    let (lo, hi) = (halves[i - 1], halves[i]);
                    let (dl, dh) = (x - lo.0, hi.0 - x);
                    if dl < dh || (dl == dh && lo.1 & 1 == 0) { lo.1 } else { hi.1 }
                }
            };
            assert_eq!(f32_to_f16(x), want, "{x:e}");
            assert_eq!(f32_to_f16(-x), want | 0x8000, "{x:e}");
            x *= 1.000_37;
        }
    }
}
