//! `conv2d` kernels (see host/src/ops/conv2d.rs for the launcher, models::ops::conv2d for the CPU reference).
//!
//! Direct fp32 NCHW convolution, no tensor cores. Grid: x = output tiles (row-major over
//! `ceil(P / tile_p) x ceil(Q / 32)`), y = groups of `channels()` output channels, z = sample.
//! Each block loops over the input channels in chunks of `cc_chunk`: it stages the chunk's input tile
//! (with halo, in padded and upsampled coordinates, so every tap is a plain shared-memory read) and the
//! chunk's weights (`[c][r*s][k]`, k innermost) in dynamic shared memory, then every thread accumulates
//! its `px` pixels x `kx` channels with FMAs. Layout of the shared memory (floats):
//! `[cc_chunk * r*r * channels]` weights, then `[cc_chunk][in_rows][in_cols]` input.
use crate::device::{
    block_idx_x, block_idx_y, block_idx_z, math::fma, shared, sync_threads, thread_idx_x,
};
use crate::launch::{Conv2dVariant, CONV2D_NARROW, CONV2D_THREADS, CONV2D_TILE_Q, CONV2D_WIDE};

/// Maps a coordinate of the padded (and upsampled) input to a source row/column of `x`, or `None` where
/// the value is zero padding or lies outside the padded extent (positions no valid output reads).
/// `extent` is the upsampled size (`h * up`).
#[inline(always)]
fn source_coord(pp: u32, pad: u32, extent: u32, up: u32, reflect: bool) -> Option<u32> {
    if pp >= extent + 2 * pad {
        return None;
    }
    let mut u = pp as i32 - pad as i32;
    let last = extent as i32 - 1;
    if reflect {
        if u < 0 {
            u = -u;
        }
        if u > last {
            u = 2 * last - u;
        }
    }
    if u < 0 || u > last {
        return None;
    }
    Some(u as u32 / up)
}

/// The kernel body for one variant (`KG`, `KX`, `PX` are the variant's fields, taken by the entry points
/// below from the same constants the host launcher uses).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn conv2d_body<const KG: usize, const KX: usize, const PX: usize>(
    x: *const f32,
    w: *const f32,
    b: *const f32,
    y: *mut f32,
    c_in: u32,
    h: u32,
    wd: u32,
    k_out: u32,
    p_out: u32,
    q_out: u32,
    r: u32,
    stride: u32,
    pad: u32,
    reflect: u32,
    up: u32,
    cc_chunk: u32,
) {
    const { assert!(KX % 4 == 0 && KG > 0 && PX > 0) };
    let v = Conv2dVariant {
        name: "",
        kg: KG as u32,
        kx: KX as u32,
        px: PX as u32,
    };
    let kt = v.channels(); // output channels per block
    let pt = v.pixel_threads();
    let rg_count = v.row_groups();
    let tile_p = v.tile_p();
    let t = thread_idx_x();
    let tiles_q = q_out.div_ceil(CONV2D_TILE_Q);
    let tile = block_idx_x();
    let oy0 = (tile / tiles_q) * tile_p;
    let ox0 = (tile % tiles_q) * CONV2D_TILE_Q;
    let k0 = block_idx_y() * kt;
    let n = block_idx_z();

    let hu = h * up;
    let wu = wd * up;
    let reflect = reflect != 0;
    let rows_in = v.in_rows(r, stride);
    let cols_in = v.in_cols(r, stride);
    let chan_in = rows_in * cols_in;
    let rs = r * r;

    let smem = shared::dynamic_smem_addr();
    let w_s = smem; // cc_chunk * rs * kt floats
    let in_s = smem + cc_chunk * rs * kt * 4;

    // This thread's outputs: channel group `kg`, column `col`, rows `rg + rg_count * i`.
    let pix = t % pt;
    let kg = t / pt;
    let col = pix % 32;
    let rg = pix / 32;
    // Offset (floats) in one channel of the input tile of pixel 0's tap (0, 0), and the step between pixels.
    let pix_off = rg * stride * cols_in + col * stride;
    let pix_step = rg_count * stride * cols_in;

    let warp = t / 32;
    let lane = t % 32;
    let warps = CONV2D_THREADS / 32;

    let mut acc = [[0f32; KX]; PX];
    let mut c0 = 0;
    while c0 < c_in {
        let cc = if c_in - c0 < cc_chunk {
            c_in - c0
        } else {
            cc_chunk
        };
        // The previous chunk's reads are finished before its tiles are overwritten.
        sync_threads();

        // Input tile: one warp per (channel, row), lanes along the row.
        let mut row = warp;
        while row < cc * rows_in {
            let cl = row / rows_in;
            let iy = row % rows_in;
            let sy = source_coord(oy0 * stride + iy, pad, hu, up, reflect);
            let plane = x.add(
                ((n as usize * c_in as usize) + (c0 + cl) as usize) * (h as usize * wd as usize),
            );
            let mut ix = lane;
            while ix < cols_in {
                let sx = source_coord(ox0 * stride + ix, pad, wu, up, reflect);
                let val = match (sy, sx) {
                    (Some(sy), Some(sx)) => *plane.add((sy * wd + sx) as usize),
                    _ => 0.0,
                };
                shared::st_f32(in_s + (row * cols_in + ix) * 4, val);
                ix += 32;
            }
            row += warps;
        }

        // Weights: element e = (cl * rs + tap) * kt + kl.
        let mut e = t;
        while e < cc * rs * kt {
            let kl = e % kt;
            let rest = e / kt;
            let cl = rest / rs;
            let tap = rest % rs;
            let k = k0 + kl;
            let val = if k < k_out {
                *w.add(((k * c_in + c0 + cl) * rs + tap) as usize)
            } else {
                0.0
            };
            shared::st_f32(w_s + e * 4, val);
            e += CONV2D_THREADS;
        }
        sync_threads();

        for cl in 0..cc {
            let mut tap = cl * rs;
            for ry in 0..r {
                for sx in 0..r {
                    let waddr = w_s + (tap * kt + kg * KX as u32) * 4;
                    let mut wv = [0f32; KX];
                    let mut j = 0;
                    while j < KX {
                        let q = shared::ld_v4_f32(waddr + j as u32 * 4);
                        wv[j] = q[0];
                        wv[j + 1] = q[1];
                        wv[j + 2] = q[2];
                        wv[j + 3] = q[3];
                        j += 4;
                    }
                    let ibase = in_s + (cl * chan_in + ry * cols_in + sx + pix_off) * 4;
                    for (i, acc_i) in acc.iter_mut().enumerate() {
                        let xv = shared::ld_f32(ibase + i as u32 * pix_step * 4);
                        for (a, wj) in acc_i.iter_mut().zip(wv.iter()) {
                            *a = fma(xv, *wj, *a);
                        }
                    }
                    tap += 1;
                }
            }
        }
        c0 += cc;
    }

    // Epilogue: bias, bounds, store. Kept branch-light so that it unrolls and `acc` stays in registers.
    let kbase = k0 + kg * KX as u32;
    let mut bias = [0f32; KX];
    for (j, bj) in bias.iter_mut().enumerate() {
        let k = kbase + j as u32;
        if !b.is_null() && k < k_out {
            *bj = *b.add(k as usize);
        }
    }
    let ox = ox0 + col;
    let plane = p_out as usize * q_out as usize;
    let out0 = (n as usize * k_out as usize + kbase as usize) * plane + ox as usize;
    for (i, acc_i) in acc.iter().enumerate() {
        let oy = oy0 + rg + rg_count * i as u32;
        let pix_ok = oy < p_out && ox < q_out;
        let out_i = out0 + oy as usize * q_out as usize;
        for (j, (a, bj)) in acc_i.iter().zip(bias.iter()).enumerate() {
            if pix_ok && kbase + (j as u32) < k_out {
                *y.add(out_i + j * plane) = *a + *bj;
            }
        }
    }
}

/// `CONV2D_WIDE`: 32 output channels per block. `reflect` != 0 selects reflection padding, else zeros;
/// `b` may be null. Block: `CONV2D_THREADS`; dynamic shared memory: `cc_chunk * smem_floats_per_channel * 4`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn conv2d_k32(
    x: *const f32,
    w: *const f32,
    b: *const f32,
    y: *mut f32,
    c_in: u32,
    h: u32,
    wd: u32,
    k_out: u32,
    p_out: u32,
    q_out: u32,
    r: u32,
    stride: u32,
    pad: u32,
    reflect: u32,
    up: u32,
    cc_chunk: u32,
) {
    crate::device::grid_dependency_wait();
    conv2d_body::<
        { CONV2D_WIDE.kg as usize },
        { CONV2D_WIDE.kx as usize },
        { CONV2D_WIDE.px as usize },
    >(
        x, w, b, y, c_in, h, wd, k_out, p_out, q_out, r, stride, pad, reflect, up, cc_chunk,
    )
}

/// `CONV2D_NARROW`: 4 output channels per block (same parameters as `conv2d_k32`).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "ptx-kernel" fn conv2d_k4(
    x: *const f32,
    w: *const f32,
    b: *const f32,
    y: *mut f32,
    c_in: u32,
    h: u32,
    wd: u32,
    k_out: u32,
    p_out: u32,
    q_out: u32,
    r: u32,
    stride: u32,
    pad: u32,
    reflect: u32,
    up: u32,
    cc_chunk: u32,
) {
    crate::device::grid_dependency_wait();
    conv2d_body::<
        { CONV2D_NARROW.kg as usize },
        { CONV2D_NARROW.kx as usize },
        { CONV2D_NARROW.px as usize },
    >(
        x, w, b, y, c_in, h, wd, k_out, p_out, q_out, r, stride, pad, reflect, up, cc_chunk,
    )
}
