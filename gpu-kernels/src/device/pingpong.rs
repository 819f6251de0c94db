//! The consumer side of a warp-specialised, ping-pong `wgmma` GEMM fed by TMA (shared by `conv2d_tma_pp`
//! and `linear_tma`): a ring of shared-memory stages, each holding a 128-row A tile (two 64-row halves,
//! 128-byte swizzle, `device::wgmma`'s K-major layout) followed by a 128-row B tile, both one 64-wide K
//! slice; a "full" and an "empty" mbarrier per stage (`device::tma`'s protocol; "empty" counts the 4 warps
//! of one warpgroup) and an "order" mbarrier (count 1).
//!
//! Two consumer warpgroups take the block's jobs in turn (job i to warpgroup i % 2), each multiplying a
//! whole 128 x 128 tile (two `wgmma.m64n128k16` per k16 step, 128 f32 accumulators per thread), so one
//! warpgroup's epilogue overlaps the other's MMAs. Job i's K steps are ring steps i·ktiles .. (i + 1)·ktiles,
//! in the order the producer fills them.
//!
//! Mainloop order: job i's warpgroup starts waiting on the ring only after phase i - 1 of "order"
//! completed, i.e. after job i - 1's warpgroup saw its last stage arrive. So every fill of an earlier step
//! has completed when a warpgroup waits on a stage, and a "full" barrier's parity names one fill only
//! (without the order a warpgroup could run more than a ring's length ahead and pass on an older phase of
//! the same parity).
use super::shared::st_v2_f32;
use super::tma::{arrive, fence_mbarrier_init, mbarrier_init, wait_parity};
use super::unroll::unroll;
use super::wgmma::{self, fence_acc64, mma_m64n128k16_f16, smem_desc_sw128, wait_acc64, SW128_ROW_BYTES};

/// Bytes of one warpgroup's 64 A rows (the second half of a stage's A tile starts here).
pub const HALF_A_BYTES: u32 = 64 * SW128_ROW_BYTES;
/// Bytes of a stage's A tile (128 rows); the B tile follows.
pub const A_BYTES: u32 = 2 * HALF_A_BYTES;

/// A position in the shared-memory ring: the stage and the parity of its current phase.
#[derive(Clone, Copy)]
pub struct RingPos {
    pub stage: u32,
    pub phase: u32,
}

impl RingPos {
    /// Ring step `step` (steps fill stages 0, 1, .. in turn; the parity flips at each wrap).
    #[inline(always)]
    pub fn at(step: u32, stages: u32) -> Self {
        RingPos { stage: step % stages, phase: (step / stages) & 1 }
    }

    #[inline(always)]
    pub fn advance(&mut self, stages: u32) {
        self.stage += 1;
        if self.stage == stages {
            self.stage = 0;
            self.phase ^= 1;
        }
    }
}

/// A ring of `stages` shared-memory stages of `stage_bytes` from `base`, with "full" mbarriers from `full` and
/// "empty" ones from `empty` (8 bytes each), as its consumers see it.
#[derive(Clone, Copy)]
pub struct StageRing {
    pub base: u32,
    pub full: u32,
    pub empty: u32,
    pub stages: u32,
    pub stage_bytes: u32,
}

/// One job's K loop on the consumer side: `consume_steps!(pos, &ring, ktiles, lane, |kt, base| { .. })` for
/// `pos: &mut RingPos`, `ring: &StageRing`: for each of `ktiles` steps, waits until the ring's stage at `pos`
/// is full, runs the body with the step `kt` and the stage's base address `base` (the accumulator fence and
/// the stage's k16 `wgmma`s), commits, waits until only that batch is in flight (`wgmma.wait_group 1`) and
/// releases the previous step's stage (lane 0 of each warp arrives on its "empty" mbarrier). Evaluates to the
/// last step's stage, which the caller releases after retiring the last batch.
///
/// A macro, not a function taking a closure: a closure holding the MMAs was not always inlined, and then the
/// accumulators it borrows went to local memory (584 bytes of stack in `conv2d_tma_pp` and `linear_tma`).
///
/// Safety (the expansion is unsafe code): all threads of the consumer warpgroup(s) run it convergently, with
/// the ring the producer fills.
macro_rules! consume_steps {
    ($pos:expr, $ring:expr, $ktiles:expr, $lane:expr, |$kt:ident, $base:ident| $body:block) => {{
        let (pos, ring, ktiles, lane): (&mut $crate::device::pingpong::RingPos, &$crate::device::pingpong::StageRing, u32, u32) =
            ($pos, $ring, $ktiles, $lane);
        let mut prev = 0u32;
        let mut $kt = 0u32;
        while $kt < ktiles {
            $crate::device::tma::wait_parity(ring.full + 8 * pos.stage, pos.phase);
            let $base = ring.base + pos.stage * ring.stage_bytes;
            $body
            $crate::device::wgmma::commit_group();
            $crate::device::wgmma::wait_group::<1>();
            // The batch of step kt - 1 has retired: its stage may be refilled.
            if $kt > 0 && lane == 0 {
                $crate::device::tma::arrive(ring.empty + 8 * prev);
            }
            prev = pos.stage;
            pos.advance(ring.stages);
            $kt += 1;
        }
        prev
    }};
}
pub(crate) use consume_steps;

/// The ping-pong ring: the stages (each A then B, module comment) and the "order" mbarrier.
#[derive(Clone, Copy)]
pub struct PingPongRing {
    pub steps: StageRing,
    pub order: u32,
}

/// Job `i`'s mainloop for one consumer warpgroup: `ktiles` K steps (`consume_steps!`) into `acc0` (tile rows
/// 0..64) and `acc1` (rows 64..128), zeroed first, two MMAs per k16 step; the warpgroup waits for the
/// previous job's last stage first and announces its own ("order"). Returns with every MMA retired and every
/// stage of the job released. `tw` is the thread's index in its warpgroup, `lane` in its warp.
///
/// # Safety
/// All 128 threads of the warpgroup call it convergently, for the jobs i, i + 2, ... of the block in order,
/// the other warpgroup for the others; the ring is initialised and filled as the module comment says.
#[inline(always)]
pub unsafe fn mainloop(ring: &PingPongRing, i: u32, ktiles: u32, tw: u32, lane: u32, acc0: &mut [f32; 64], acc1: &mut [f32; 64]) {
    if i > 0 {
        wait_parity(ring.order, (i - 1) & 1);
    }
    let mut pos = RingPos::at(i * ktiles, ring.steps.stages);
    *acc0 = wgmma::splat64(0.0);
    *acc1 = wgmma::splat64(0.0);
    let last = consume_steps!(&mut pos, &ring.steps, ktiles, lane, |kt, a_base| {
        if kt + 1 == ktiles && tw == 0 {
            // Every stage of this job has arrived: the next job's warpgroup may wait on the ring.
            arrive(ring.order);
        }
        let b_base = a_base + A_BYTES;
        fence_acc64(acc0);
        fence_acc64(acc1);
        unroll!(4, |s| {
            let off = 32 * s as u32;
            let b = smem_desc_sw128(b_base + off);
            mma_m64n128k16_f16(acc0, smem_desc_sw128(a_base + off), b, true);
            mma_m64n128k16_f16(acc1, smem_desc_sw128(a_base + HALF_A_BYTES + off), b, true);
        });
    });
    wait_acc64::<0>(acc0);
    wait_acc64::<0>(acc1);
    if lane == 0 {
        arrive(ring.steps.empty + 8 * last);
    }
}

/// Initialises the ring's mbarriers (thread 0: each stage's "full" one with one arrival, its "empty" one
/// with 4, one per consumer warp, and "order" with 1) and makes them visible to the block (a block-wide
/// barrier).
///
/// # Safety
/// Every thread of the block calls it once, before any use of the barriers; they lie in shared memory as
/// `ring` says.
#[inline(always)]
pub unsafe fn init(ring: &PingPongRing) {
    if super::thread_idx_x() == 0 {
        for s in 0..ring.steps.stages {
            mbarrier_init(ring.steps.full + 8 * s, 1);
            mbarrier_init(ring.steps.empty + 8 * s, 4);
        }
        mbarrier_init(ring.order, 1);
        fence_mbarrier_init();
    }
    super::sync_threads();
}

/// Writes one thread's `A` accumulators of a `wgmma.m64nN` tile (N = A / 2: 128 or 64 columns) to an f32
/// staging tile with rows of `row_bytes`, at `rowa` (the byte address of its row lane/4 (+ 16 wq), column
/// 2(lane % 4)): row + 8·half, columns 8i (+ 1) of n8 block i.
///
/// # Safety
/// The staging tile must hold the rows and columns written (shared memory of the launch, 8-byte aligned).
#[inline(always)]
pub unsafe fn stage_acc<const A: usize>(rowa: u32, row_bytes: u32, acc: &[f32; A]) {
    unroll!(2, |half| {
        let r = rowa + 8 * half as u32 * row_bytes;
        unroll!(2, |ia| {
            unroll!(8, |ib| {
                let i = ia * 8 + ib;
                if i < A / 4 {
                    st_v2_f32(r + 32 * i as u32, acc[4 * i + 2 * half], acc[4 * i + 2 * half + 1]);
                }
            });
        });
    });
}
