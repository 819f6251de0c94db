//! `vit_stack` launcher: a run of the fast StyleViT's post-norm blocks on few tokens in one persistent
//! launch (kernel: gpu-kernels/src/kernels/vit_stack.rs). Each block's seven ops (qkv GEMM, attention,
//! out-projection + residual, LayerNorm, fc1 + GELU, fc2 + residual, LayerNorm) are phases of one grid
//! separated by grid-wide barriers, running the code of `linear_tc_small`, `attention_tc` and
//! `linear_tc_layer_norm_h` on the same tiles and K splits, so the output is bit-identical to queuing
//! those kernels (the self-check `vit_stack` compares the two). At 64 tokens a block's kernels do a few
//! microseconds of work each; launching them is most of their cost.
//!
//! Not a CPU reference of its own: the blocks' reference is `models::StyleVit` (and the f16 emulation of
//! the fast path in `selfcheck/vit_fast.rs`).
use std::sync::OnceLock;

use cust::memory::{CopyDestination, DeviceBuffer};
use gpu_kernels::launch::{
    vit_stack_kernel, vit_stack_smem_bytes, LinearTcKernel, LinearTcPlan, VitBlockPtrs,
    VitStackArgs, VIT_STACK_THREADS,
};

use crate::error::{ensure, CudaContext, Result};
use crate::gpu::{DType, DeviceTensor, Gpu};
use crate::kernel_args;
use crate::ops::linear_tc::LinearTcWorkspace;

const OP: &str = "vit_stack";

/// Whether the fast StyleViT runs its few-token block stacks through `vit_stack` (`STYLEFORGE_VIT_STACK=0`:
/// one launch per op, as before). Read once.
pub fn vit_stack_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| crate::gpu::env_on("STYLEFORGE_VIT_STACK"))
}

/// Blocks per SM the grid asks for (`STYLEFORGE_VIT_STACK_PER_SM`, default 2; capped by the occupancy
/// calculator). Read once.
fn blocks_per_sm() -> u32 {
    static N: OnceLock<u32> = OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("STYLEFORGE_VIT_STACK_PER_SM")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&n: &u32| (1..=8).contains(&n))
            .unwrap_or(2)
    })
}

/// The parameters of one block as device addresses (the tensors stay owned by the caller).
pub struct VitBlockTensors<'a> {
    pub w_qkv: &'a DeviceTensor,
    pub b_qkv: &'a DeviceTensor,
    pub w_out: &'a DeviceTensor,
    pub b_out: &'a DeviceTensor,
    pub fc1_w: &'a DeviceTensor,
    pub fc1_b: &'a DeviceTensor,
    pub fc2_w: &'a DeviceTensor,
    pub fc2_b: &'a DeviceTensor,
    pub n1_w: &'a DeviceTensor,
    pub n1_b: &'a DeviceTensor,
    pub n2_w: &'a DeviceTensor,
    pub n2_b: &'a DeviceTensor,
}

/// A stack of blocks uploaded as a device array of [`VitBlockPtrs`], with the shapes checked once: width
/// `d`, FFN width `f`. Holds addresses of the caller's weight tensors: it must not outlive them (the fast
/// StyleViT keeps both in itself).
pub struct VitStackBlocks {
    ptrs: DeviceBuffer<u64>,
    n: usize,
    d: usize,
    f: usize,
}

impl VitStackBlocks {
    pub fn new(blocks: &[VitBlockTensors<'_>]) -> Result<Self> {
        ensure(!blocks.is_empty(), OP, || "no blocks".into())?;
        let d = blocks[0].b_out.numel();
        let f = blocks[0].fc1_b.numel();
        let mut words = Vec::with_capacity(blocks.len() * 12);
        for (i, b) in blocks.iter().enumerate() {
            let gemm = |w: &DeviceTensor, bias: &DeviceTensor, n: usize, k: usize| {
                w.dtype == DType::F16 && w.shape == [n, k] && bias.dtype == DType::F32 && bias.numel() == n
            };
            let norm = |g: &DeviceTensor, b: &DeviceTensor| {
                g.dtype == DType::F32 && b.dtype == DType::F32 && g.numel() == d && b.numel() == d
            };
            ensure(
                gemm(b.w_qkv, b.b_qkv, 3 * d, d)
                    && gemm(b.w_out, b.b_out, d, d)
                    && gemm(b.fc1_w, b.fc1_b, f, d)
                    && gemm(b.fc2_w, b.fc2_b, d, f)
                    && norm(b.n1_w, b.n1_b)
                    && norm(b.n2_w, b.n2_b),
                OP,
                || {
                    format!(
                        "block {i}: weights must be f16 [3D, D], [D, D], [F, D], [D, F] with f32 biases and \
                         f32 [D] norms for D = {d}, F = {f} (got qkv {:?}, out {:?}, fc1 {:?}, fc2 {:?})",
                        b.w_qkv.shape, b.w_out.shape, b.fc1_w.shape, b.fc2_w.shape
                    )
                },
            )?;
            let p = VitBlockPtrs {
                w_qkv: b.w_qkv.ptr(),
                b_qkv: b.b_qkv.ptr(),
                w_out: b.w_out.ptr(),
                b_out: b.b_out.ptr(),
                fc1_w: b.fc1_w.ptr(),
                fc1_b: b.fc1_b.ptr(),
                fc2_w: b.fc2_w.ptr(),
                fc2_b: b.fc2_b.ptr(),
                n1_w: b.n1_w.ptr(),
                n1_b: b.n1_b.ptr(),
                n2_w: b.n2_w.ptr(),
                n2_b: b.n2_b.ptr(),
            };
            words.extend([
                p.w_qkv, p.b_qkv, p.w_out, p.b_out, p.fc1_w, p.fc1_b, p.fc2_w, p.fc2_b, p.n1_w, p.n1_b,
                p.n2_w, p.n2_b,
            ]);
        }
        const { assert!(std::mem::size_of::<VitBlockPtrs>() == 12 * 8) };
        let mut ptrs = DeviceBuffer::from_slice(&vec![0u64; words.len()]).during("allocating vit_stack block table")?;
        ptrs.copy_from(&words[..]).during("uploading vit_stack block table")?;
        Ok(VitStackBlocks {
            ptrs,
            n: blocks.len(),
            d,
            f,
        })
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// The activations one stack works on, f16 row-major with `m = batch · tokens` rows: `x16` [B, N, D] holds
/// the input and receives the output; the others are scratch of the shapes the per-op path uses.
pub struct VitStackActs<'a> {
    pub x16: &'a mut DeviceTensor,
    pub x2_16: &'a mut DeviceTensor,
    pub qkv16: &'a mut DeviceTensor,
    pub a16: &'a mut DeviceTensor,
    pub t16: &'a mut DeviceTensor,
    pub h16: &'a mut DeviceTensor,
}

/// The K splits `vit_stack` runs its four GEMMs with (those of [`LinearTcPlan::choose`], so the products
/// are the per-op path's), or `None` when one of them would not run on `linear_tc_small` there (many rows:
/// the per-op path uses the big kernels, and the stack would not be bit-identical to it, nor faster).
pub fn vit_stack_plans(m: usize, d: usize, f: usize) -> Option<[LinearTcPlan; 4]> {
    let plans = [(3 * d, d), (d, d), (f, d), (d, f)].map(|(n, k)| LinearTcPlan::choose(m, n, k, true));
    plans.iter().all(|p| p.kernel == LinearTcKernel::Small).then_some(plans)
}

/// Whether [`vit_stack`] takes these shapes: head_dim with a `vit_stack` kernel, D and F multiples of 8,
/// every GEMM on the few-row plan (see [`vit_stack_plans`]) and fewer tokens than the per-op path hands to
/// `attention_tma` (so attention is `attention_tc`'s there too).
pub fn vit_stack_supports(batch: usize, tokens: usize, d: usize, f: usize, heads: usize) -> bool {
    tokens < crate::ops::attention_tma::ATTN_TMA_MIN_TOKENS
        && heads > 0
        && d.is_multiple_of(heads)
        && u32::try_from(d / heads).ok().and_then(vit_stack_kernel).is_some()
        && d.is_multiple_of(8)
        && f.is_multiple_of(8)
        && batch * tokens > 0
        && vit_stack_plans(batch * tokens, d, f).is_some()
}

/// Runs `blocks` on `acts.x16` ([B, N, D] f16) in one launch; with `x32` ([B, N, D] f32) the last block's
/// second LayerNorm also writes its f32 output there (the encoder's input to AdaIN). `ws` is the split-K
/// workspace of the per-op path (sized by [`LinearTcWorkspace::for_shapes`] for these GEMMs); its barrier
/// word serves as the grid barrier.
pub fn vit_stack(
    gpu: &Gpu,
    blocks: &VitStackBlocks,
    heads: usize,
    acts: VitStackActs<'_>,
    x32: Option<&mut DeviceTensor>,
    ws: &mut LinearTcWorkspace,
) -> Result<()> {
    let (d, f) = (blocks.d, blocks.f);
    let x = &*acts.x16;
    ensure(x.shape.len() == 3 && x.shape[2] == d && x.dtype == DType::F16, OP, || {
        format!("x16 {:?} ({:?}) is not [B, N, {d}] f16", x.shape, x.dtype)
    })?;
    let (b, n) = (x.shape[0], x.shape[1]);
    let m = b * n;
    ensure(vit_stack_supports(b, n, d, f, heads), OP, || {
        format!("B {b}, N {n}, D {d}, F {f}, {heads} heads: not a vit_stack shape (see vit_stack_supports)")
    })?;
    let f16_of = |t: &DeviceTensor, cols: usize| t.dtype == DType::F16 && t.numel() == m * cols;
    ensure(
        f16_of(acts.x2_16, d)
            && f16_of(acts.qkv16, 3 * d)
            && f16_of(acts.a16, d)
            && f16_of(acts.t16, d)
            && f16_of(acts.h16, f),
        OP,
        || {
            format!(
                "scratch must be f16 [{m}, {d}], [{m}, {}], [{m}, {d}], [{m}, {d}], [{m}, {f}] (got {:?}, {:?}, \
                 {:?}, {:?}, {:?})",
                3 * d,
                acts.x2_16.shape,
                acts.qkv16.shape,
                acts.a16.shape,
                acts.t16.shape,
                acts.h16.shape
            )
        },
    )?;
    if let Some(y) = x32.as_deref() {
        ensure(y.dtype == DType::F32 && y.numel() == m * d, OP, || {
            format!("x32 {:?} ({:?}) is not [{m}, {d}] f32", y.shape, y.dtype)
        })?;
    }
    ensure(m * 4 * d.max(f) < (1usize << 31), OP, || format!("{m} rows are too many"))?;
    let plans = vit_stack_plans(m, d, f).ok_or_else(|| crate::error::Error::Shape {
        op: OP,
        msg: format!("M {m}: a GEMM is not on the few-row plan"),
    })?;
    for (p, (nn, _)) in plans.iter().zip([(3 * d, d), (d, d), (f, d), (d, f)]) {
        let tiles = gpu_kernels::launch::linear_tc_s_tiles(m, nn);
        ensure(
            p.splits == 1 || (tiles <= ws.tiles() && tiles * p.splits <= ws.slots()),
            OP,
            || {
                format!(
                    "workspace too small for M {m}, N {nn} split {} ways ({} tiles, {} slots; size it with \
                     LinearTcWorkspace::for_shapes)",
                    p.splits,
                    ws.tiles(),
                    ws.slots()
                )
            },
        )?;
    }
    let dh = d / heads;
    let kernel = vit_stack_kernel(dh as u32).ok_or_else(|| crate::error::Error::Shape {
        op: OP,
        msg: format!("no vit_stack kernel for head_dim {dh}"),
    })?;
    let smem = vit_stack_smem_bytes(dh as u32);
    let per_sm = gpu.max_active_blocks_per_sm(kernel, VIT_STACK_THREADS, smem)?;
    ensure(per_sm >= 1, OP, || format!("{kernel} cannot be resident on an SM"))?;
    // Co-resident by construction: at most what the occupancy calculator allows on every SM at once.
    let grid = gpu.sm_count * per_sm.min(blocks_per_sm());
    let (ws_ptr, ctr_ptr, bar_ptr) = ws.split_buffers();
    let args = VitStackArgs {
        blocks: blocks.ptrs.as_device_ptr().as_raw(),
        x16: acts.x16.ptr(),
        x2_16: acts.x2_16.ptr(),
        qkv16: acts.qkv16.ptr(),
        a16: acts.a16.ptr(),
        t16: acts.t16.ptr(),
        h16: acts.h16.ptr(),
        x32: x32.map_or(0, |y| y.ptr()),
        ws: ws_ptr,
        counters: ctr_ptr,
        barrier: bar_ptr,
        nblocks: blocks.n as u32,
        batch: b as u32,
        tokens: n as u32,
        d: d as u32,
        f: f as u32,
        heads: heads as u32,
        splits: plans.map(|p| p.splits as u32),
        kps: plans.map(|p| p.ktiles_per_split as u32),
        scale_log2: (std::f64::consts::LOG2_E / (dh as f64).sqrt()) as f32,
        _pad: 0,
    };
    // SAFETY: vit_stack_dXX(a: VitStackArgs) takes the #[repr(C)] struct shared with the kernel crate, by
    // value; `kernel` is the variant compiled for this head_dim. Every address in it is a live allocation
    // of the size the kernel indexes: the block table holds `nblocks` entries of tensors checked in
    // `VitStackBlocks::new` (f16 [3D, D], [D, D], [F, D], [D, F] weights, f32 biases and norms, alive as
    // long as `blocks`); the activations were checked above against m = B·N rows of D, 3D or F f16 (x32
    // f32) and are exclusive borrows, distinct from the weights. The GEMM phases access them as
    // `linear_tc_small` does for these shapes with the plans of `vit_stack_plans` (each split non-empty
    // and inside K by `LinearTcPlan::choose`), writing partial tiles and counters inside the workspace's
    // `tiles` / `slots` (checked above; counters 0, left 0). The attention phase reads q, k, v at columns
    // h·dh + [0, dh) of rows of 3D and writes a16's rows of D, as `attention_tc` (D = heads·dh, rows and
    // columns multiples of 8). The barrier word belongs to the exclusively borrowed workspace. The grid is
    // sm_count × per_sm ≤ the occupancy calculator's resident blocks per SM, so every block is resident
    // and the grid barrier cannot wait on an unscheduled block; block VIT_STACK_THREADS with
    // vit_stack_smem_bytes(dh) of dynamic shared memory (the layouts the phases carve).
    unsafe {
        gpu.launch(kernel, (grid, 1, 1), (VIT_STACK_THREADS, 1, 1), smem, kernel_args!(args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_few_token_shapes_only() {
        // StyleViT base and small at 256 x 256 (64 tokens per image), content and style batched.
        assert!(vit_stack_supports(2, 64, 512, 2048, 8));
        assert!(vit_stack_supports(1, 64, 512, 2048, 8));
        assert!(vit_stack_supports(2, 64, 256, 1024, 4));
        // head_dim 32 has a kernel; 128 (spills) and 48 do not.
        assert!(vit_stack_supports(2, 64, 64, 128, 2));
        assert!(!vit_stack_supports(2, 64, 512, 2048, 4));
        assert!(!vit_stack_supports(2, 64, 384, 1536, 8));
        // 1024 x 1024 at patch 16: 4096 tokens (the many-row GEMMs and attention_tma).
        assert!(!vit_stack_supports(8, 4096, 512, 2048, 8));
        // Attention at ATTN_TMA_MIN_TOKENS goes to attention_tma on the per-op path.
        assert!(!vit_stack_supports(1, crate::ops::attention_tma::ATTN_TMA_MIN_TOKENS, 64, 128, 2));
        // Widths must be multiples of 8; nothing to do for no rows.
        assert!(!vit_stack_supports(1, 64, 64, 100, 2));
        assert!(!vit_stack_supports(0, 64, 64, 128, 2));
    }

    #[test]
    fn plans_are_the_per_op_plans() {
        let plans = vit_stack_plans(128, 512, 2048).expect("base, 128 rows");
        for (p, (n, k)) in plans.iter().zip([(1536, 512), (512, 512), (2048, 512), (512, 2048)]) {
            assert_eq!(*p, LinearTcPlan::choose(128, n, k, true));
            assert_eq!(p.kernel, LinearTcKernel::Small);
        }
        assert!(vit_stack_plans(8 * 4096, 512, 2048).is_none());
    }
}
