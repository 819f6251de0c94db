//! Hopper warpgroup MMA (`wgmma`, PTX ISA 8.0, target `sm_90a` only) with both operands in shared memory.
//!
//! A warpgroup is 4 consecutive warps (128 threads, the first warp's index a multiple of 4). One
//! `wgmma.mma_async.sync.aligned.m64nNk16.f32.f16.f16` multiplies A (64 x 16 f16) by Bᵀ (B: N x 16 f16)
//! into a 64 x N f32 accumulator held in registers across the warpgroup; it runs asynchronously:
//! [`fence`] (`wgmma.fence`) before the first MMA of a batch, the MMAs, [`commit_group`], then
//! [`wait_group`] before the accumulators (or the shared memory the batch reads) may be touched.
//!
//! # Shared-memory layout relied on (PTX ISA, "Asynchronous Warpgroup Level Matrix Shared Memory Layout")
//! Both operands are K-major ("imm-trans" 0: for A row m holds its K values contiguously, i.e. x
//! [M, K] row-major; for B row n holds its K values contiguously, i.e. w [N, K] row-major, PyTorch's
//! `Linear` layout) with the **128-byte swizzle** (descriptor mode 1):
//! * A tile of R rows x 64 f16 (BK = 64): each row is 128 bytes; 8 consecutive rows form one 1024-byte
//!   swizzle atom (the ISA's 128B K-major atom is 8 x 8 "128-bit elements", i.e. 8 rows x 64 f16).
//! * Inside an atom, 16-byte chunk `j` (f16 `8j .. 8j + 8` of the row) of row `r` is stored at chunk
//!   `j ^ (r % 8)`: byte `r·128 + ((j ^ (r % 8)) · 16)` of the atom. The hardware applies this XOR to
//!   address bits 4-6 using bits 7-9, so the pattern repeats on 1024-byte boundaries and every tile base
//!   must be **1024-byte aligned** (then the descriptor's "matrix base offset", bits 49-51, is 0).
//! * Atoms (8-row groups) follow each other every 1024 bytes: the **stride byte offset (SBO) = 1024**
//!   ("the offset from the first 8 rows to the next 8 rows").
//! * The **leading byte offset (LBO)** is not used for swizzled K-major layouts; the ISA says it is
//!   assumed to be 1, so the field is set to 1 (encoded, i.e. 16 bytes).
//! * One MMA consumes 16 of the 64 K values (32 bytes = 2 chunks of each row). The k16 sub-slice `s`
//!   (0..4) of a 64-wide tile is addressed by adding `32·s` bytes to the descriptor's start address
//!   (the swizzle XOR acts on the final address, so logical chunk `2s + c` is found at `(2s + c) ^ (r%8)`,
//!   exactly where it was written).
//!
//! # Matrix descriptor (PTX ISA, "Matrix Descriptor Format"; 64 bits)
//! bits 0-13: `(start address & 0x3FFFF) >> 4`; 16-29: `(LBO & 0x3FFFF) >> 4`; 32-45: `(SBO & 0x3FFFF) >> 4`;
//! 49-51: matrix base offset (0 here: atoms start on 1024-byte boundaries); 62-63: swizzle mode
//! (0 none, 1 = 128-byte, 2 = 64-byte, 3 = 32-byte). Start address, LBO and SBO are 16-byte multiples.
//!
//! # Accumulator layout (PTX ISA, "Matrix Fragments for wgmma.mma_async.m64nNk16", f32 D)
//! Thread `t` of the warpgroup (warp `w = (t / 32) % 4`, lane `l`) holds N/2 floats `d[0..N/2]`: for
//! each n8 column block `i` (0..N/8), `d[4i]`, `d[4i + 1]` are row `16w + l/4`, columns
//! `8i + 2(l%4)`, `8i + 2(l%4) + 1`, and `d[4i + 2]`, `d[4i + 3]` the same columns of row `16w + l/4 + 8`
//! (each warp owns 16 rows; within them, the `mma.m16n8` C layout repeated over the n8 blocks).
//!
//! # Proxies
//! `wgmma` reads shared memory through the async proxy. Data written by ordinary stores or (non-bulk)
//! `cp.async` must be made visible to it with [`fence_proxy_async_shared`] (`fence.proxy.async.shared::cta`)
//! by the writing thread, after its writes completed and before the barrier that publishes them.
//!
//! The operand lists of the MMA / fence / wait wrappers (one `reg32` per accumulator) are written out
//! in full; `fence_accN` / `wait_accN` name the accumulators in a PTX comment so that the compiler
//! orders every other access of them around the instruction.
use core::arch::asm;

/// Descriptor swizzle mode: 128-byte swizzle (bits 62-63 = 1).
pub const SWIZZLE_128B: u64 = 1;
/// Bytes of one 128-byte-swizzle atom (8 rows of 128 bytes); tile bases must be aligned to it.
pub const SW128_ATOM_BYTES: u32 = 1024;
/// Bytes of one K-major row of a 64-wide f16 tile in the 128-byte-swizzle layout.
pub const SW128_ROW_BYTES: u32 = 128;

/// `(x & 0x3FFFF) >> 4`: the ISA's matrix-descriptor-encode of a byte address or offset.
#[inline(always)]
pub const fn desc_encode(x: u32) -> u64 {
    ((x & 0x3FFFF) >> 4) as u64
}

/// A wgmma shared-memory matrix descriptor: start address `addr` (a 32-bit shared-window byte
/// address), leading byte offset `lbo`, stride byte offset `sbo`, base offset 0, swizzle mode `swizzle`
/// (bits 62-63).
#[inline(always)]
pub const fn smem_desc(addr: u32, lbo: u32, sbo: u32, swizzle: u64) -> u64 {
    desc_encode(addr) | (desc_encode(lbo) << 16) | (desc_encode(sbo) << 32) | (swizzle << 62)
}

/// The descriptor of a K-major f16 tile with 64-wide rows in the 128-byte-swizzle layout of the module
/// comment, starting `addr` bytes into the shared window: LBO 1 (encoded; unused), SBO 1024 bytes,
/// swizzle mode 1. `addr` is the tile base (1024-byte aligned) plus 32 bytes per k16 step.
#[inline(always)]
pub const fn smem_desc_sw128(addr: u32) -> u64 {
    smem_desc(addr, 16, SW128_ATOM_BYTES, SWIZZLE_128B)
}

/// The first [`SW128_ATOM_BYTES`]-aligned shared-window address of dynamic shared memory, where the
/// 128-byte-swizzled tiles start (launches reserve `SW128_ATOM_BYTES` of slack for this).
#[inline(always)]
pub fn aligned_smem() -> u32 {
    (crate::device::shared::dynamic_smem_addr() + (SW128_ATOM_BYTES - 1)) & !(SW128_ATOM_BYTES - 1)
}

/// Byte offset of 16-byte chunk `chunk` (0..8) of row `row` in a 128-byte-swizzled K-major tile of
/// 64-wide f16 rows (the tile base must be 1024-byte aligned).
#[inline(always)]
pub const fn sw128_offset(row: u32, chunk: u32) -> u32 {
    row * SW128_ROW_BYTES + ((chunk ^ (row & 7)) << 4)
}

/// `wgmma.fence.sync.aligned`: orders this warpgroup's earlier register and shared-memory accesses
/// before the `wgmma.mma_async` that follow (needed before the first MMA of each batch).
///
/// # Safety
/// All threads of the warpgroup must execute it convergently (`sm_90a`).
#[inline(always)]
pub unsafe fn fence() {
    asm!("wgmma.fence.sync.aligned;", options(nostack));
}

/// `wgmma.commit_group.sync.aligned`: closes the group of this warpgroup's uncommitted
/// `wgmma.mma_async` operations.
///
/// # Safety
/// All threads of the warpgroup must execute it convergently (`sm_90a`).
#[inline(always)]
pub unsafe fn commit_group() {
    asm!("wgmma.commit_group.sync.aligned;", options(nostack));
}

/// `wgmma.wait_group.sync.aligned N`: waits until at most `N` of this warpgroup's committed groups are
/// pending; the shared memory and accumulators of the retired groups may then be reused / read.
///
/// # Safety
/// All threads of the warpgroup must execute it convergently (`sm_90a`). Reading accumulators needs
/// the operand-carrying form (`wait_acc128` and co.) so that the compiler keeps the reads after it.
#[inline(always)]
pub unsafe fn wait_group<const N: u32>() {
    asm!("wgmma.wait_group.sync.aligned {n};", n = const N, options(nostack));
}

/// `fence.proxy.async.shared::cta`: this thread's earlier generic-proxy accesses of shared memory
/// (stores, completed `cp.async` copies) are ordered before later async-proxy accesses (`wgmma`
/// operand reads) once a barrier publishes them to the other threads.
///
/// # Safety
/// None beyond `sm_90`; `unsafe` only because it orders memory operations.
#[inline(always)]
pub unsafe fn fence_proxy_async_shared() {
    asm!("fence.proxy.async.shared::cta;", options(nostack));
}

/// `d (+)= A · Bᵀ` for one k16 step: `wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16` with A (64 x 16)
/// and B (256 x 16) both K-major in shared memory, read through the descriptors `a_desc` and `b_desc`
/// ([`smem_desc_sw128`]); f32 accumulators `d` in the layout of the module comment (128 per thread).
/// `scale_d == false` ignores the old `d` (D = A·B), `true` accumulates (D = A·B + D). Immediates:
/// imm-scale-a = imm-scale-b = 1 (no negation), imm-trans-a = imm-trans-b = 0 (both K-major).
///
/// The instruction is asynchronous: `d` must not be touched by other instructions until a
/// [`wait_acc128`] retires its commit group ([`commit_group`]), and the described shared memory must
/// not be overwritten before then.
///
/// # Safety
/// All 128 threads of the warpgroup must execute it convergently with the same descriptors (`sm_90a`),
/// after a [`fence_acc128`] since `d` was last written by anything else; the described tiles must lie
/// in the launch's shared memory in the layout of the module comment, written before a
/// [`fence_proxy_async_shared`] and a barrier.
#[inline(always)]
#[rustfmt::skip]
pub unsafe fn mma_m64n256k16_f16(d: &mut [f32; 128], a_desc: u64, b_desc: u64, scale_d: bool) {
    asm!(
        "{{",
        ".reg .pred p;",
        "setp.ne.b32 p, {130}, 0;",
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16",
        "{{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}, {32}, {33}, {34}, {35}, {36}, {37}, {38}, {39}, {40}, {41}, {42}, {43}, {44}, {45}, {46}, {47}, {48}, {49}, {50}, {51}, {52}, {53}, {54}, {55}, {56}, {57}, {58}, {59}, {60}, {61}, {62}, {63}, {64}, {65}, {66}, {67}, {68}, {69}, {70}, {71}, {72}, {73}, {74}, {75}, {76}, {77}, {78}, {79}, {80}, {81}, {82}, {83}, {84}, {85}, {86}, {87}, {88}, {89}, {90}, {91}, {92}, {93}, {94}, {95}, {96}, {97}, {98}, {99}, {100}, {101}, {102}, {103}, {104}, {105}, {106}, {107}, {108}, {109}, {110}, {111}, {112}, {113}, {114}, {115}, {116}, {117}, {118}, {119}, {120}, {121}, {122}, {123}, {124}, {125}, {126}, {127}}},",
        "{128}, {129}, p, 1, 1, 0, 0;",
        "}}",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3], inout(reg32) d[4], inout(reg32) d[5], inout(reg32) d[6], inout(reg32) d[7],
        inout(reg32) d[8], inout(reg32) d[9], inout(reg32) d[10], inout(reg32) d[11], inout(reg32) d[12], inout(reg32) d[13], inout(reg32) d[14], inout(reg32) d[15],
        inout(reg32) d[16], inout(reg32) d[17], inout(reg32) d[18], inout(reg32) d[19], inout(reg32) d[20], inout(reg32) d[21], inout(reg32) d[22], inout(reg32) d[23],
        inout(reg32) d[24], inout(reg32) d[25], inout(reg32) d[26], inout(reg32) d[27], inout(reg32) d[28], inout(reg32) d[29], inout(reg32) d[30], inout(reg32) d[31],
        inout(reg32) d[32], inout(reg32) d[33], inout(reg32) d[34], inout(reg32) d[35], inout(reg32) d[36], inout(reg32) d[37], inout(reg32) d[38], inout(reg32) d[39],
        inout(reg32) d[40], inout(reg32) d[41], inout(reg32) d[42], inout(reg32) d[43], inout(reg32) d[44], inout(reg32) d[45], inout(reg32) d[46], inout(reg32) d[47],
        inout(reg32) d[48], inout(reg32) d[49], inout(reg32) d[50], inout(reg32) d[51], inout(reg32) d[52], inout(reg32) d[53], inout(reg32) d[54], inout(reg32) d[55],
        inout(reg32) d[56], inout(reg32) d[57], inout(reg32) d[58], inout(reg32) d[59], inout(reg32) d[60], inout(reg32) d[61], inout(reg32) d[62], inout(reg32) d[63],
        inout(reg32) d[64], inout(reg32) d[65], inout(reg32) d[66], inout(reg32) d[67], inout(reg32) d[68], inout(reg32) d[69], inout(reg32) d[70], inout(reg32) d[71],
        inout(reg32) d[72], inout(reg32) d[73], inout(reg32) d[74], inout(reg32) d[75], inout(reg32) d[76], inout(reg32) d[77], inout(reg32) d[78], inout(reg32) d[79],
        inout(reg32) d[80], inout(reg32) d[81], inout(reg32) d[82], inout(reg32) d[83], inout(reg32) d[84], inout(reg32) d[85], inout(reg32) d[86], inout(reg32) d[87],
        inout(reg32) d[88], inout(reg32) d[89], inout(reg32) d[90], inout(reg32) d[91], inout(reg32) d[92], inout(reg32) d[93], inout(reg32) d[94], inout(reg32) d[95],
        inout(reg32) d[96], inout(reg32) d[97], inout(reg32) d[98], inout(reg32) d[99], inout(reg32) d[100], inout(reg32) d[101], inout(reg32) d[102], inout(reg32) d[103],
        inout(reg32) d[104], inout(reg32) d[105], inout(reg32) d[106], inout(reg32) d[107], inout(reg32) d[108], inout(reg32) d[109], inout(reg32) d[110], inout(reg32) d[111],
        inout(reg32) d[112], inout(reg32) d[113], inout(reg32) d[114], inout(reg32) d[115], inout(reg32) d[116], inout(reg32) d[117], inout(reg32) d[118], inout(reg32) d[119],
        inout(reg32) d[120], inout(reg32) d[121], inout(reg32) d[122], inout(reg32) d[123], inout(reg32) d[124], inout(reg32) d[125], inout(reg32) d[126], inout(reg32) d[127],
        in(reg64) a_desc,
        in(reg64) b_desc,
        in(reg32) scale_d as u32,
        options(nostack)
    );
}

/// `d (+)= A · Bᵀ` for one k16 step: `wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16` with A (64 x 16)
/// and B (128 x 16) both K-major in shared memory, read through the descriptors `a_desc` and `b_desc`
/// ([`smem_desc_sw128`]); f32 accumulators `d` in the layout of the module comment (64 per thread).
/// `scale_d == false` ignores the old `d` (D = A·B), `true` accumulates (D = A·B + D). Immediates:
/// imm-scale-a = imm-scale-b = 1 (no negation), imm-trans-a = imm-trans-b = 0 (both K-major).
///
/// The instruction is asynchronous: `d` must not be touched by other instructions until a
/// [`wait_acc64`] retires its commit group ([`commit_group`]), and the described shared memory must
/// not be overwritten before then.
///
/// # Safety
/// All 128 threads of the warpgroup must execute it convergently with the same descriptors (`sm_90a`),
/// after a [`fence_acc64`] since `d` was last written by anything else; the described tiles must lie
/// in the launch's shared memory in the layout of the module comment, written before a
/// [`fence_proxy_async_shared`] and a barrier.
#[inline(always)]
#[rustfmt::skip]
pub unsafe fn mma_m64n128k16_f16(d: &mut [f32; 64], a_desc: u64, b_desc: u64, scale_d: bool) {
    asm!(
        "{{",
        ".reg .pred p;",
        "setp.ne.b32 p, {66}, 0;",
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16",
        "{{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}, {32}, {33}, {34}, {35}, {36}, {37}, {38}, {39}, {40}, {41}, {42}, {43}, {44}, {45}, {46}, {47}, {48}, {49}, {50}, {51}, {52}, {53}, {54}, {55}, {56}, {57}, {58}, {59}, {60}, {61}, {62}, {63}}},",
        "{64}, {65}, p, 1, 1, 0, 0;",
        "}}",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3], inout(reg32) d[4], inout(reg32) d[5], inout(reg32) d[6], inout(reg32) d[7],
        inout(reg32) d[8], inout(reg32) d[9], inout(reg32) d[10], inout(reg32) d[11], inout(reg32) d[12], inout(reg32) d[13], inout(reg32) d[14], inout(reg32) d[15],
        inout(reg32) d[16], inout(reg32) d[17], inout(reg32) d[18], inout(reg32) d[19], inout(reg32) d[20], inout(reg32) d[21], inout(reg32) d[22], inout(reg32) d[23],
        inout(reg32) d[24], inout(reg32) d[25], inout(reg32) d[26], inout(reg32) d[27], inout(reg32) d[28], inout(reg32) d[29], inout(reg32) d[30], inout(reg32) d[31],
        inout(reg32) d[32], inout(reg32) d[33], inout(reg32) d[34], inout(reg32) d[35], inout(reg32) d[36], inout(reg32) d[37], inout(reg32) d[38], inout(reg32) d[39],
        inout(reg32) d[40], inout(reg32) d[41], inout(reg32) d[42], inout(reg32) d[43], inout(reg32) d[44], inout(reg32) d[45], inout(reg32) d[46], inout(reg32) d[47],
        inout(reg32) d[48], inout(reg32) d[49], inout(reg32) d[50], inout(reg32) d[51], inout(reg32) d[52], inout(reg32) d[53], inout(reg32) d[54], inout(reg32) d[55],
        inout(reg32) d[56], inout(reg32) d[57], inout(reg32) d[58], inout(reg32) d[59], inout(reg32) d[60], inout(reg32) d[61], inout(reg32) d[62], inout(reg32) d[63],
        in(reg64) a_desc,
        in(reg64) b_desc,
        in(reg32) scale_d as u32,
        options(nostack)
    );
}

/// [`fence`] with the 128 accumulators as operands (`wgmma.fence.sync.aligned`): every earlier write
/// of `d` (the zeroing before the first k step) is ordered before the following `wgmma.mma_async`, and
/// the compiler cannot move such a write past it. (The operands appear in a PTX comment only.)
///
/// # Safety
/// As [`fence`].
#[inline(always)]
#[rustfmt::skip]
pub unsafe fn fence_acc128(d: &mut [f32; 128]) {
    asm!(
        "wgmma.fence.sync.aligned;",
        "// {0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}, {32}, {33}, {34}, {35}, {36}, {37}, {38}, {39}, {40}, {41}, {42}, {43}, {44}, {45}, {46}, {47}, {48}, {49}, {50}, {51}, {52}, {53}, {54}, {55}, {56}, {57}, {58}, {59}, {60}, {61}, {62}, {63}, {64}, {65}, {66}, {67}, {68}, {69}, {70}, {71}, {72}, {73}, {74}, {75}, {76}, {77}, {78}, {79}, {80}, {81}, {82}, {83}, {84}, {85}, {86}, {87}, {88}, {89}, {90}, {91}, {92}, {93}, {94}, {95}, {96}, {97}, {98}, {99}, {100}, {101}, {102}, {103}, {104}, {105}, {106}, {107}, {108}, {109}, {110}, {111}, {112}, {113}, {114}, {115}, {116}, {117}, {118}, {119}, {120}, {121}, {122}, {123}, {124}, {125}, {126}, {127}",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3], inout(reg32) d[4], inout(reg32) d[5], inout(reg32) d[6], inout(reg32) d[7],
        inout(reg32) d[8], inout(reg32) d[9], inout(reg32) d[10], inout(reg32) d[11], inout(reg32) d[12], inout(reg32) d[13], inout(reg32) d[14], inout(reg32) d[15],
        inout(reg32) d[16], inout(reg32) d[17], inout(reg32) d[18], inout(reg32) d[19], inout(reg32) d[20], inout(reg32) d[21], inout(reg32) d[22], inout(reg32) d[23],
        inout(reg32) d[24], inout(reg32) d[25], inout(reg32) d[26], inout(reg32) d[27], inout(reg32) d[28], inout(reg32) d[29], inout(reg32) d[30], inout(reg32) d[31],
        inout(reg32) d[32], inout(reg32) d[33], inout(reg32) d[34], inout(reg32) d[35], inout(reg32) d[36], inout(reg32) d[37], inout(reg32) d[38], inout(reg32) d[39],
        inout(reg32) d[40], inout(reg32) d[41], inout(reg32) d[42], inout(reg32) d[43], inout(reg32) d[44], inout(reg32) d[45], inout(reg32) d[46], inout(reg32) d[47],
        inout(reg32) d[48], inout(reg32) d[49], inout(reg32) d[50], inout(reg32) d[51], inout(reg32) d[52], inout(reg32) d[53], inout(reg32) d[54], inout(reg32) d[55],
        inout(reg32) d[56], inout(reg32) d[57], inout(reg32) d[58], inout(reg32) d[59], inout(reg32) d[60], inout(reg32) d[61], inout(reg32) d[62], inout(reg32) d[63],
        inout(reg32) d[64], inout(reg32) d[65], inout(reg32) d[66], inout(reg32) d[67], inout(reg32) d[68], inout(reg32) d[69], inout(reg32) d[70], inout(reg32) d[71],
        inout(reg32) d[72], inout(reg32) d[73], inout(reg32) d[74], inout(reg32) d[75], inout(reg32) d[76], inout(reg32) d[77], inout(reg32) d[78], inout(reg32) d[79],
        inout(reg32) d[80], inout(reg32) d[81], inout(reg32) d[82], inout(reg32) d[83], inout(reg32) d[84], inout(reg32) d[85], inout(reg32) d[86], inout(reg32) d[87],
        inout(reg32) d[88], inout(reg32) d[89], inout(reg32) d[90], inout(reg32) d[91], inout(reg32) d[92], inout(reg32) d[93], inout(reg32) d[94], inout(reg32) d[95],
        inout(reg32) d[96], inout(reg32) d[97], inout(reg32) d[98], inout(reg32) d[99], inout(reg32) d[100], inout(reg32) d[101], inout(reg32) d[102], inout(reg32) d[103],
        inout(reg32) d[104], inout(reg32) d[105], inout(reg32) d[106], inout(reg32) d[107], inout(reg32) d[108], inout(reg32) d[109], inout(reg32) d[110], inout(reg32) d[111],
        inout(reg32) d[112], inout(reg32) d[113], inout(reg32) d[114], inout(reg32) d[115], inout(reg32) d[116], inout(reg32) d[117], inout(reg32) d[118], inout(reg32) d[119],
        inout(reg32) d[120], inout(reg32) d[121], inout(reg32) d[122], inout(reg32) d[123], inout(reg32) d[124], inout(reg32) d[125], inout(reg32) d[126], inout(reg32) d[127],
        options(nostack)
    );
}

/// [`wait_group`] with the 128 accumulators as operands: afterwards `d` holds the results of every
/// committed `wgmma.mma_async` but those of the newest `N` groups, and the compiler cannot read `d`
/// before it. Use `N = 0` before reading the accumulators.
///
/// # Safety
/// As [`wait_group`].
#[inline(always)]
#[rustfmt::skip]
pub unsafe fn wait_acc128<const N: u32>(d: &mut [f32; 128]) {
    asm!(
        "wgmma.wait_group.sync.aligned {n};",
        "// {0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}, {32}, {33}, {34}, {35}, {36}, {37}, {38}, {39}, {40}, {41}, {42}, {43}, {44}, {45}, {46}, {47}, {48}, {49}, {50}, {51}, {52}, {53}, {54}, {55}, {56}, {57}, {58}, {59}, {60}, {61}, {62}, {63}, {64}, {65}, {66}, {67}, {68}, {69}, {70}, {71}, {72}, {73}, {74}, {75}, {76}, {77}, {78}, {79}, {80}, {81}, {82}, {83}, {84}, {85}, {86}, {87}, {88}, {89}, {90}, {91}, {92}, {93}, {94}, {95}, {96}, {97}, {98}, {99}, {100}, {101}, {102}, {103}, {104}, {105}, {106}, {107}, {108}, {109}, {110}, {111}, {112}, {113}, {114}, {115}, {116}, {117}, {118}, {119}, {120}, {121}, {122}, {123}, {124}, {125}, {126}, {127}",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3], inout(reg32) d[4], inout(reg32) d[5], inout(reg32) d[6], inout(reg32) d[7],
        inout(reg32) d[8], inout(reg32) d[9], inout(reg32) d[10], inout(reg32) d[11], inout(reg32) d[12], inout(reg32) d[13], inout(reg32) d[14], inout(reg32) d[15],
        inout(reg32) d[16], inout(reg32) d[17], inout(reg32) d[18], inout(reg32) d[19], inout(reg32) d[20], inout(reg32) d[21], inout(reg32) d[22], inout(reg32) d[23],
        inout(reg32) d[24], inout(reg32) d[25], inout(reg32) d[26], inout(reg32) d[27], inout(reg32) d[28], inout(reg32) d[29], inout(reg32) d[30], inout(reg32) d[31],
        inout(reg32) d[32], inout(reg32) d[33], inout(reg32) d[34], inout(reg32) d[35], inout(reg32) d[36], inout(reg32) d[37], inout(reg32) d[38], inout(reg32) d[39],
        inout(reg32) d[40], inout(reg32) d[41], inout(reg32) d[42], inout(reg32) d[43], inout(reg32) d[44], inout(reg32) d[45], inout(reg32) d[46], inout(reg32) d[47],
        inout(reg32) d[48], inout(reg32) d[49], inout(reg32) d[50], inout(reg32) d[51], inout(reg32) d[52], inout(reg32) d[53], inout(reg32) d[54], inout(reg32) d[55],
        inout(reg32) d[56], inout(reg32) d[57], inout(reg32) d[58], inout(reg32) d[59], inout(reg32) d[60], inout(reg32) d[61], inout(reg32) d[62], inout(reg32) d[63],
        inout(reg32) d[64], inout(reg32) d[65], inout(reg32) d[66], inout(reg32) d[67], inout(reg32) d[68], inout(reg32) d[69], inout(reg32) d[70], inout(reg32) d[71],
        inout(reg32) d[72], inout(reg32) d[73], inout(reg32) d[74], inout(reg32) d[75], inout(reg32) d[76], inout(reg32) d[77], inout(reg32) d[78], inout(reg32) d[79],
        inout(reg32) d[80], inout(reg32) d[81], inout(reg32) d[82], inout(reg32) d[83], inout(reg32) d[84], inout(reg32) d[85], inout(reg32) d[86], inout(reg32) d[87],
        inout(reg32) d[88], inout(reg32) d[89], inout(reg32) d[90], inout(reg32) d[91], inout(reg32) d[92], inout(reg32) d[93], inout(reg32) d[94], inout(reg32) d[95],
        inout(reg32) d[96], inout(reg32) d[97], inout(reg32) d[98], inout(reg32) d[99], inout(reg32) d[100], inout(reg32) d[101], inout(reg32) d[102], inout(reg32) d[103],
        inout(reg32) d[104], inout(reg32) d[105], inout(reg32) d[106], inout(reg32) d[107], inout(reg32) d[108], inout(reg32) d[109], inout(reg32) d[110], inout(reg32) d[111],
        inout(reg32) d[112], inout(reg32) d[113], inout(reg32) d[114], inout(reg32) d[115], inout(reg32) d[116], inout(reg32) d[117], inout(reg32) d[118], inout(reg32) d[119],
        inout(reg32) d[120], inout(reg32) d[121], inout(reg32) d[122], inout(reg32) d[123], inout(reg32) d[124], inout(reg32) d[125], inout(reg32) d[126], inout(reg32) d[127],
        n = const N,
        options(nostack)
    );
}

/// [`fence`] with the 64 accumulators as operands (`wgmma.fence.sync.aligned`): every earlier write
/// of `d` (the zeroing before the first k step) is ordered before the following `wgmma.mma_async`, and
/// the compiler cannot move such a write past it. (The operands appear in a PTX comment only.)
///
/// # Safety
/// As [`fence`].
#[inline(always)]
#[rustfmt::skip]
pub unsafe fn fence_acc64(d: &mut [f32; 64]) {
    asm!(
        "wgmma.fence.sync.aligned;",
        "// {0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}, {32}, {33}, {34}, {35}, {36}, {37}, {38}, {39}, {40}, {41}, {42}, {43}, {44}, {45}, {46}, {47}, {48}, {49}, {50}, {51}, {52}, {53}, {54}, {55}, {56}, {57}, {58}, {59}, {60}, {61}, {62}, {63}",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3], inout(reg32) d[4], inout(reg32) d[5], inout(reg32) d[6], inout(reg32) d[7],
        inout(reg32) d[8], inout(reg32) d[9], inout(reg32) d[10], inout(reg32) d[11], inout(reg32) d[12], inout(reg32) d[13], inout(reg32) d[14], inout(reg32) d[15],
        inout(reg32) d[16], inout(reg32) d[17], inout(reg32) d[18], inout(reg32) d[19], inout(reg32) d[20], inout(reg32) d[21], inout(reg32) d[22], inout(reg32) d[23],
        inout(reg32) d[24], inout(reg32) d[25], inout(reg32) d[26], inout(reg32) d[27], inout(reg32) d[28], inout(reg32) d[29], inout(reg32) d[30], inout(reg32) d[31],
        inout(reg32) d[32], inout(reg32) d[33], inout(reg32) d[34], inout(reg32) d[35], inout(reg32) d[36], inout(reg32) d[37], inout(reg32) d[38], inout(reg32) d[39],
        inout(reg32) d[40], inout(reg32) d[41], inout(reg32) d[42], inout(reg32) d[43], inout(reg32) d[44], inout(reg32) d[45], inout(reg32) d[46], inout(reg32) d[47],
        inout(reg32) d[48], inout(reg32) d[49], inout(reg32) d[50], inout(reg32) d[51], inout(reg32) d[52], inout(reg32) d[53], inout(reg32) d[54], inout(reg32) d[55],
        inout(reg32) d[56], inout(reg32) d[57], inout(reg32) d[58], inout(reg32) d[59], inout(reg32) d[60], inout(reg32) d[61], inout(reg32) d[62], inout(reg32) d[63],
        options(nostack)
    );
}

/// [`wait_group`] with the 64 accumulators as operands: afterwards `d` holds the results of every
/// committed `wgmma.mma_async` but those of the newest `N` groups, and the compiler cannot read `d`
/// before it. Use `N = 0` before reading the accumulators.
///
/// # Safety
/// As [`wait_group`].
#[inline(always)]
#[rustfmt::skip]
pub unsafe fn wait_acc64<const N: u32>(d: &mut [f32; 64]) {
    asm!(
        "wgmma.wait_group.sync.aligned {n};",
        "// {0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}, {32}, {33}, {34}, {35}, {36}, {37}, {38}, {39}, {40}, {41}, {42}, {43}, {44}, {45}, {46}, {47}, {48}, {49}, {50}, {51}, {52}, {53}, {54}, {55}, {56}, {57}, {58}, {59}, {60}, {61}, {62}, {63}",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3], inout(reg32) d[4], inout(reg32) d[5], inout(reg32) d[6], inout(reg32) d[7],
        inout(reg32) d[8], inout(reg32) d[9], inout(reg32) d[10], inout(reg32) d[11], inout(reg32) d[12], inout(reg32) d[13], inout(reg32) d[14], inout(reg32) d[15],
        inout(reg32) d[16], inout(reg32) d[17], inout(reg32) d[18], inout(reg32) d[19], inout(reg32) d[20], inout(reg32) d[21], inout(reg32) d[22], inout(reg32) d[23],
        inout(reg32) d[24], inout(reg32) d[25], inout(reg32) d[26], inout(reg32) d[27], inout(reg32) d[28], inout(reg32) d[29], inout(reg32) d[30], inout(reg32) d[31],
        inout(reg32) d[32], inout(reg32) d[33], inout(reg32) d[34], inout(reg32) d[35], inout(reg32) d[36], inout(reg32) d[37], inout(reg32) d[38], inout(reg32) d[39],
        inout(reg32) d[40], inout(reg32) d[41], inout(reg32) d[42], inout(reg32) d[43], inout(reg32) d[44], inout(reg32) d[45], inout(reg32) d[46], inout(reg32) d[47],
        inout(reg32) d[48], inout(reg32) d[49], inout(reg32) d[50], inout(reg32) d[51], inout(reg32) d[52], inout(reg32) d[53], inout(reg32) d[54], inout(reg32) d[55],
        inout(reg32) d[56], inout(reg32) d[57], inout(reg32) d[58], inout(reg32) d[59], inout(reg32) d[60], inout(reg32) d[61], inout(reg32) d[62], inout(reg32) d[63],
        n = const N,
        options(nostack)
    );
}

/// `[v; 128]` as 128 separate registers, for accumulator arrays. (rustc lowers `[v; N]`, and its MIR
/// optimisations turn `[v, v, ..]` into that, to a store loop with a variable index, which keeps LLVM
/// from promoting the whole array to registers: the accumulators then live in local memory. Values
/// that come out of one asm statement as distinct outputs are stored by constant index and promoted.)
#[inline(always)]
#[rustfmt::skip]
pub fn splat128(v: f32) -> [f32; 128] {
    let d0: f32;
    let d1: f32;
    let d2: f32;
    let d3: f32;
    let d4: f32;
    let d5: f32;
    let d6: f32;
    let d7: f32;
    let d8: f32;
    let d9: f32;
    let d10: f32;
    let d11: f32;
    let d12: f32;
    let d13: f32;
    let d14: f32;
    let d15: f32;
    let d16: f32;
    let d17: f32;
    let d18: f32;
    let d19: f32;
    let d20: f32;
    let d21: f32;
    let d22: f32;
    let d23: f32;
    let d24: f32;
    let d25: f32;
    let d26: f32;
    let d27: f32;
    let d28: f32;
    let d29: f32;
    let d30: f32;
    let d31: f32;
    let d32: f32;
    let d33: f32;
    let d34: f32;
    let d35: f32;
    let d36: f32;
    let d37: f32;
    let d38: f32;
    let d39: f32;
    let d40: f32;
    let d41: f32;
    let d42: f32;
    let d43: f32;
    let d44: f32;
    let d45: f32;
    let d46: f32;
    let d47: f32;
    let d48: f32;
    let d49: f32;
    let d50: f32;
    let d51: f32;
    let d52: f32;
    let d53: f32;
    let d54: f32;
    let d55: f32;
    let d56: f32;
    let d57: f32;
    let d58: f32;
    let d59: f32;
    let d60: f32;
    let d61: f32;
    let d62: f32;
    let d63: f32;
    let d64: f32;
    let d65: f32;
    let d66: f32;
    let d67: f32;
    let d68: f32;
    let d69: f32;
    let d70: f32;
    let d71: f32;
    let d72: f32;
    let d73: f32;
    let d74: f32;
    let d75: f32;
    let d76: f32;
    let d77: f32;
    let d78: f32;
    let d79: f32;
    let d80: f32;
    let d81: f32;
    let d82: f32;
    let d83: f32;
    let d84: f32;
    let d85: f32;
    let d86: f32;
    let d87: f32;
    let d88: f32;
    let d89: f32;
    let d90: f32;
    let d91: f32;
    let d92: f32;
    let d93: f32;
    let d94: f32;
    let d95: f32;
    let d96: f32;
    let d97: f32;
    let d98: f32;
    let d99: f32;
    let d100: f32;
    let d101: f32;
    let d102: f32;
    let d103: f32;
    let d104: f32;
    let d105: f32;
    let d106: f32;
    let d107: f32;
    let d108: f32;
    let d109: f32;
    let d110: f32;
    let d111: f32;
    let d112: f32;
    let d113: f32;
    let d114: f32;
    let d115: f32;
    let d116: f32;
    let d117: f32;
    let d118: f32;
    let d119: f32;
    let d120: f32;
    let d121: f32;
    let d122: f32;
    let d123: f32;
    let d124: f32;
    let d125: f32;
    let d126: f32;
    let d127: f32;
    // SAFETY: register moves only.
    unsafe {
        asm!(
        "mov.b32 {0}, {128};",
        "mov.b32 {1}, {128};",
        "mov.b32 {2}, {128};",
        "mov.b32 {3}, {128};",
        "mov.b32 {4}, {128};",
        "mov.b32 {5}, {128};",
        "mov.b32 {6}, {128};",
        "mov.b32 {7}, {128};",
        "mov.b32 {8}, {128};",
        "mov.b32 {9}, {128};",
        "mov.b32 {10}, {128};",
        "mov.b32 {11}, {128};",
        "mov.b32 {12}, {128};",
        "mov.b32 {13}, {128};",
        "mov.b32 {14}, {128};",
        "mov.b32 {15}, {128};",
        "mov.b32 {16}, {128};",
        "mov.b32 {17}, {128};",
        "mov.b32 {18}, {128};",
        "mov.b32 {19}, {128};",
        "mov.b32 {20}, {128};",
        "mov.b32 {21}, {128};",
        "mov.b32 {22}, {128};",
        "mov.b32 {23}, {128};",
        "mov.b32 {24}, {128};",
        "mov.b32 {25}, {128};",
        "mov.b32 {26}, {128};",
        "mov.b32 {27}, {128};",
        "mov.b32 {28}, {128};",
        "mov.b32 {29}, {128};",
        "mov.b32 {30}, {128};",
        "mov.b32 {31}, {128};",
        "mov.b32 {32}, {128};",
        "mov.b32 {33}, {128};",
        "mov.b32 {34}, {128};",
        "mov.b32 {35}, {128};",
        "mov.b32 {36}, {128};",
        "mov.b32 {37}, {128};",
        "mov.b32 {38}, {128};",
        "mov.b32 {39}, {128};",
        "mov.b32 {40}, {128};",
        "mov.b32 {41}, {128};",
        "mov.b32 {42}, {128};",
        "mov.b32 {43}, {128};",
        "mov.b32 {44}, {128};",
        "mov.b32 {45}, {128};",
        "mov.b32 {46}, {128};",
        "mov.b32 {47}, {128};",
        "mov.b32 {48}, {128};",
        "mov.b32 {49}, {128};",
        "mov.b32 {50}, {128};",
        "mov.b32 {51}, {128};",
        "mov.b32 {52}, {128};",
        "mov.b32 {53}, {128};",
        "mov.b32 {54}, {128};",
        "mov.b32 {55}, {128};",
        "mov.b32 {56}, {128};",
        "mov.b32 {57}, {128};",
        "mov.b32 {58}, {128};",
        "mov.b32 {59}, {128};",
        "mov.b32 {60}, {128};",
        "mov.b32 {61}, {128};",
        "mov.b32 {62}, {128};",
        "mov.b32 {63}, {128};",
        "mov.b32 {64}, {128};",
        "mov.b32 {65}, {128};",
        "mov.b32 {66}, {128};",
        "mov.b32 {67}, {128};",
        "mov.b32 {68}, {128};",
        "mov.b32 {69}, {128};",
        "mov.b32 {70}, {128};",
        "mov.b32 {71}, {128};",
        "mov.b32 {72}, {128};",
        "mov.b32 {73}, {128};",
        "mov.b32 {74}, {128};",
        "mov.b32 {75}, {128};",
        "mov.b32 {76}, {128};",
        "mov.b32 {77}, {128};",
        "mov.b32 {78}, {128};",
        "mov.b32 {79}, {128};",
        "mov.b32 {80}, {128};",
        "mov.b32 {81}, {128};",
        "mov.b32 {82}, {128};",
        "mov.b32 {83}, {128};",
        "mov.b32 {84}, {128};",
        "mov.b32 {85}, {128};",
        "mov.b32 {86}, {128};",
        "mov.b32 {87}, {128};",
        "mov.b32 {88}, {128};",
        "mov.b32 {89}, {128};",
        "mov.b32 {90}, {128};",
        "mov.b32 {91}, {128};",
        "mov.b32 {92}, {128};",
        "mov.b32 {93}, {128};",
        "mov.b32 {94}, {128};",
        "mov.b32 {95}, {128};",
        "mov.b32 {96}, {128};",
        "mov.b32 {97}, {128};",
        "mov.b32 {98}, {128};",
        "mov.b32 {99}, {128};",
        "mov.b32 {100}, {128};",
        "mov.b32 {101}, {128};",
        "mov.b32 {102}, {128};",
        "mov.b32 {103}, {128};",
        "mov.b32 {104}, {128};",
        "mov.b32 {105}, {128};",
        "mov.b32 {106}, {128};",
        "mov.b32 {107}, {128};",
        "mov.b32 {108}, {128};",
        "mov.b32 {109}, {128};",
        "mov.b32 {110}, {128};",
        "mov.b32 {111}, {128};",
        "mov.b32 {112}, {128};",
        "mov.b32 {113}, {128};",
        "mov.b32 {114}, {128};",
        "mov.b32 {115}, {128};",
        "mov.b32 {116}, {128};",
        "mov.b32 {117}, {128};",
        "mov.b32 {118}, {128};",
        "mov.b32 {119}, {128};",
        "mov.b32 {120}, {128};",
        "mov.b32 {121}, {128};",
        "mov.b32 {122}, {128};",
        "mov.b32 {123}, {128};",
        "mov.b32 {124}, {128};",
        "mov.b32 {125}, {128};",
        "mov.b32 {126}, {128};",
        "mov.b32 {127}, {128};",
        out(reg32) d0, out(reg32) d1, out(reg32) d2, out(reg32) d3, out(reg32) d4, out(reg32) d5, out(reg32) d6, out(reg32) d7,
        out(reg32) d8, out(reg32) d9, out(reg32) d10, out(reg32) d11, out(reg32) d12, out(reg32) d13, out(reg32) d14, out(reg32) d15,
        out(reg32) d16, out(reg32) d17, out(reg32) d18, out(reg32) d19, out(reg32) d20, out(reg32) d21, out(reg32) d22, out(reg32) d23,
        out(reg32) d24, out(reg32) d25, out(reg32) d26, out(reg32) d27, out(reg32) d28, out(reg32) d29, out(reg32) d30, out(reg32) d31,
        out(reg32) d32, out(reg32) d33, out(reg32) d34, out(reg32) d35, out(reg32) d36, out(reg32) d37, out(reg32) d38, out(reg32) d39,
        out(reg32) d40, out(reg32) d41, out(reg32) d42, out(reg32) d43, out(reg32) d44, out(reg32) d45, out(reg32) d46, out(reg32) d47,
        out(reg32) d48, out(reg32) d49, out(reg32) d50, out(reg32) d51, out(reg32) d52, out(reg32) d53, out(reg32) d54, out(reg32) d55,
        out(reg32) d56, out(reg32) d57, out(reg32) d58, out(reg32) d59, out(reg32) d60, out(reg32) d61, out(reg32) d62, out(reg32) d63,
        out(reg32) d64, out(reg32) d65, out(reg32) d66, out(reg32) d67, out(reg32) d68, out(reg32) d69, out(reg32) d70, out(reg32) d71,
        out(reg32) d72, out(reg32) d73, out(reg32) d74, out(reg32) d75, out(reg32) d76, out(reg32) d77, out(reg32) d78, out(reg32) d79,
        out(reg32) d80, out(reg32) d81, out(reg32) d82, out(reg32) d83, out(reg32) d84, out(reg32) d85, out(reg32) d86, out(reg32) d87,
        out(reg32) d88, out(reg32) d89, out(reg32) d90, out(reg32) d91, out(reg32) d92, out(reg32) d93, out(reg32) d94, out(reg32) d95,
        out(reg32) d96, out(reg32) d97, out(reg32) d98, out(reg32) d99, out(reg32) d100, out(reg32) d101, out(reg32) d102, out(reg32) d103,
        out(reg32) d104, out(reg32) d105, out(reg32) d106, out(reg32) d107, out(reg32) d108, out(reg32) d109, out(reg32) d110, out(reg32) d111,
        out(reg32) d112, out(reg32) d113, out(reg32) d114, out(reg32) d115, out(reg32) d116, out(reg32) d117, out(reg32) d118, out(reg32) d119,
        out(reg32) d120, out(reg32) d121, out(reg32) d122, out(reg32) d123, out(reg32) d124, out(reg32) d125, out(reg32) d126, out(reg32) d127,
        in(reg32) v,
        options(pure, nomem, nostack)
        );
    }
    [
        d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13, d14, d15,
        d16, d17, d18, d19, d20, d21, d22, d23, d24, d25, d26, d27, d28, d29, d30, d31,
        d32, d33, d34, d35, d36, d37, d38, d39, d40, d41, d42, d43, d44, d45, d46, d47,
        d48, d49, d50, d51, d52, d53, d54, d55, d56, d57, d58, d59, d60, d61, d62, d63,
        d64, d65, d66, d67, d68, d69, d70, d71, d72, d73, d74, d75, d76, d77, d78, d79,
        d80, d81, d82, d83, d84, d85, d86, d87, d88, d89, d90, d91, d92, d93, d94, d95,
        d96, d97, d98, d99, d100, d101, d102, d103, d104, d105, d106, d107, d108, d109, d110, d111,
        d112, d113, d114, d115, d116, d117, d118, d119, d120, d121, d122, d123, d124, d125, d126, d127,
    ]
}

/// `[v; 64]` as 64 separate registers, for accumulator arrays. (rustc lowers `[v; N]`, and its MIR
/// optimisations turn `[v, v, ..]` into that, to a store loop with a variable index, which keeps LLVM
/// from promoting the whole array to registers: the accumulators then live in local memory. Values
/// that come out of one asm statement as distinct outputs are stored by constant index and promoted.)
#[inline(always)]
#[rustfmt::skip]
pub fn splat64(v: f32) -> [f32; 64] {
    let d0: f32;
    let d1: f32;
    let d2: f32;
    let d3: f32;
    let d4: f32;
    let d5: f32;
    let d6: f32;
    let d7: f32;
    let d8: f32;
    let d9: f32;
    let d10: f32;
    let d11: f32;
    let d12: f32;
    let d13: f32;
    let d14: f32;
    let d15: f32;
    let d16: f32;
    let d17: f32;
    let d18: f32;
    let d19: f32;
    let d20: f32;
    let d21: f32;
    let d22: f32;
    let d23: f32;
    let d24: f32;
    let d25: f32;
    let d26: f32;
    let d27: f32;
    let d28: f32;
    let d29: f32;
    let d30: f32;
    let d31: f32;
    let d32: f32;
    let d33: f32;
    let d34: f32;
    let d35: f32;
    let d36: f32;
    let d37: f32;
    let d38: f32;
    let d39: f32;
    let d40: f32;
    let d41: f32;
    let d42: f32;
    let d43: f32;
    let d44: f32;
    let d45: f32;
    let d46: f32;
    let d47: f32;
    let d48: f32;
    let d49: f32;
    let d50: f32;
    let d51: f32;
    let d52: f32;
    let d53: f32;
    let d54: f32;
    let d55: f32;
    let d56: f32;
    let d57: f32;
    let d58: f32;
    let d59: f32;
    let d60: f32;
    let d61: f32;
    let d62: f32;
    let d63: f32;
    // SAFETY: register moves only.
    unsafe {
        asm!(
        "mov.b32 {0}, {64};",
        "mov.b32 {1}, {64};",
        "mov.b32 {2}, {64};",
        "mov.b32 {3}, {64};",
        "mov.b32 {4}, {64};",
        "mov.b32 {5}, {64};",
        "mov.b32 {6}, {64};",
        "mov.b32 {7}, {64};",
        "mov.b32 {8}, {64};",
        "mov.b32 {9}, {64};",
        "mov.b32 {10}, {64};",
        "mov.b32 {11}, {64};",
        "mov.b32 {12}, {64};",
        "mov.b32 {13}, {64};",
        "mov.b32 {14}, {64};",
        "mov.b32 {15}, {64};",
        "mov.b32 {16}, {64};",
        "mov.b32 {17}, {64};",
        "mov.b32 {18}, {64};",
        "mov.b32 {19}, {64};",
        "mov.b32 {20}, {64};",
        "mov.b32 {21}, {64};",
        "mov.b32 {22}, {64};",
        "mov.b32 {23}, {64};",
        "mov.b32 {24}, {64};",
        "mov.b32 {25}, {64};",
        "mov.b32 {26}, {64};",
        "mov.b32 {27}, {64};",
        "mov.b32 {28}, {64};",
        "mov.b32 {29}, {64};",
        "mov.b32 {30}, {64};",
        "mov.b32 {31}, {64};",
        "mov.b32 {32}, {64};",
        "mov.b32 {33}, {64};",
        "mov.b32 {34}, {64};",
        "mov.b32 {35}, {64};",
        "mov.b32 {36}, {64};",
        "mov.b32 {37}, {64};",
        "mov.b32 {38}, {64};",
        "mov.b32 {39}, {64};",
        "mov.b32 {40}, {64};",
        "mov.b32 {41}, {64};",
        "mov.b32 {42}, {64};",
        "mov.b32 {43}, {64};",
        "mov.b32 {44}, {64};",
        "mov.b32 {45}, {64};",
        "mov.b32 {46}, {64};",
        "mov.b32 {47}, {64};",
        "mov.b32 {48}, {64};",
        "mov.b32 {49}, {64};",
        "mov.b32 {50}, {64};",
        "mov.b32 {51}, {64};",
        "mov.b32 {52}, {64};",
        "mov.b32 {53}, {64};",
        "mov.b32 {54}, {64};",
        "mov.b32 {55}, {64};",
        "mov.b32 {56}, {64};",
        "mov.b32 {57}, {64};",
        "mov.b32 {58}, {64};",
        "mov.b32 {59}, {64};",
        "mov.b32 {60}, {64};",
        "mov.b32 {61}, {64};",
        "mov.b32 {62}, {64};",
        "mov.b32 {63}, {64};",
        out(reg32) d0, out(reg32) d1, out(reg32) d2, out(reg32) d3, out(reg32) d4, out(reg32) d5, out(reg32) d6, out(reg32) d7,
        out(reg32) d8, out(reg32) d9, out(reg32) d10, out(reg32) d11, out(reg32) d12, out(reg32) d13, out(reg32) d14, out(reg32) d15,
        out(reg32) d16, out(reg32) d17, out(reg32) d18, out(reg32) d19, out(reg32) d20, out(reg32) d21, out(reg32) d22, out(reg32) d23,
        out(reg32) d24, out(reg32) d25, out(reg32) d26, out(reg32) d27, out(reg32) d28, out(reg32) d29, out(reg32) d30, out(reg32) d31,
        out(reg32) d32, out(reg32) d33, out(reg32) d34, out(reg32) d35, out(reg32) d36, out(reg32) d37, out(reg32) d38, out(reg32) d39,
        out(reg32) d40, out(reg32) d41, out(reg32) d42, out(reg32) d43, out(reg32) d44, out(reg32) d45, out(reg32) d46, out(reg32) d47,
        out(reg32) d48, out(reg32) d49, out(reg32) d50, out(reg32) d51, out(reg32) d52, out(reg32) d53, out(reg32) d54, out(reg32) d55,
        out(reg32) d56, out(reg32) d57, out(reg32) d58, out(reg32) d59, out(reg32) d60, out(reg32) d61, out(reg32) d62, out(reg32) d63,
        in(reg32) v,
        options(pure, nomem, nostack)
        );
    }
    [
        d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13, d14, d15,
        d16, d17, d18, d19, d20, d21, d22, d23, d24, d25, d26, d27, d28, d29, d30, d31,
        d32, d33, d34, d35, d36, d37, d38, d39, d40, d41, d42, d43, d44, d45, d46, d47,
        d48, d49, d50, d51, d52, d53, d54, d55, d56, d57, d58, d59, d60, d61, d62, d63,
    ]
}

/// `d (+)= A · Bᵀ` for one k16 step: `wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16` with A (64 x 16)
/// and B (64 x 16) both K-major in shared memory, read through the descriptors `a_desc` and `b_desc`
/// ([`smem_desc_sw128`]); f32 accumulators `d` in the layout of the module comment (32 per thread).
/// `scale_d == false` ignores the old `d` (D = A·B), `true` accumulates (D = A·B + D). Immediates:
/// imm-scale-a = imm-scale-b = 1 (no negation), imm-trans-a = imm-trans-b = 0 (both K-major).
///
/// The instruction is asynchronous: `d` must not be touched by other instructions until a
/// [`wait_acc32`] retires its commit group ([`commit_group`]), and the described shared memory must
/// not be overwritten before then.
///
/// # Safety
/// All 128 threads of the warpgroup must execute it convergently with the same descriptors (`sm_90a`),
/// after a [`fence_acc32`] since `d` was last written by anything else; the described tiles must lie
/// in the launch's shared memory in the layout of the module comment, written before a
/// [`fence_proxy_async_shared`] and a barrier.
#[inline(always)]
#[rustfmt::skip]
pub unsafe fn mma_m64n64k16_f16(d: &mut [f32; 32], a_desc: u64, b_desc: u64, scale_d: bool) {
    asm!(
        "{{",
        ".reg .pred p;",
        "setp.ne.b32 p, {34}, 0;",
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16",
        "{{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}}},",
        "{32}, {33}, p, 1, 1, 0, 0;",
        "}}",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3], inout(reg32) d[4], inout(reg32) d[5], inout(reg32) d[6], inout(reg32) d[7],
        inout(reg32) d[8], inout(reg32) d[9], inout(reg32) d[10], inout(reg32) d[11], inout(reg32) d[12], inout(reg32) d[13], inout(reg32) d[14], inout(reg32) d[15],
        inout(reg32) d[16], inout(reg32) d[17], inout(reg32) d[18], inout(reg32) d[19], inout(reg32) d[20], inout(reg32) d[21], inout(reg32) d[22], inout(reg32) d[23],
        inout(reg32) d[24], inout(reg32) d[25], inout(reg32) d[26], inout(reg32) d[27], inout(reg32) d[28], inout(reg32) d[29], inout(reg32) d[30], inout(reg32) d[31],
        in(reg64) a_desc,
        in(reg64) b_desc,
        in(reg32) scale_d as u32,
        options(nostack)
    );
}

/// [`fence`] with the 32 accumulators as operands (`wgmma.fence.sync.aligned`): every earlier write
/// of `d` (the zeroing before the first k step) is ordered before the following `wgmma.mma_async`, and
/// the compiler cannot move such a write past it. (The operands appear in a PTX comment only.)
///
/// # Safety
/// As [`fence`].
#[inline(always)]
#[rustfmt::skip]
pub unsafe fn fence_acc32(d: &mut [f32; 32]) {
    asm!(
        "wgmma.fence.sync.aligned;",
        "// {0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3], inout(reg32) d[4], inout(reg32) d[5], inout(reg32) d[6], inout(reg32) d[7],
        inout(reg32) d[8], inout(reg32) d[9], inout(reg32) d[10], inout(reg32) d[11], inout(reg32) d[12], inout(reg32) d[13], inout(reg32) d[14], inout(reg32) d[15],
        inout(reg32) d[16], inout(reg32) d[17], inout(reg32) d[18], inout(reg32) d[19], inout(reg32) d[20], inout(reg32) d[21], inout(reg32) d[22], inout(reg32) d[23],
        inout(reg32) d[24], inout(reg32) d[25], inout(reg32) d[26], inout(reg32) d[27], inout(reg32) d[28], inout(reg32) d[29], inout(reg32) d[30], inout(reg32) d[31],
        options(nostack)
    );
}

/// [`wait_group`] with the 32 accumulators as operands: afterwards `d` holds the results of every
/// committed `wgmma.mma_async` but those of the newest `N` groups, and the compiler cannot read `d`
/// before it. Use `N = 0` before reading the accumulators.
///
/// # Safety
/// As [`wait_group`].
#[inline(always)]
#[rustfmt::skip]
pub unsafe fn wait_acc32<const N: u32>(d: &mut [f32; 32]) {
    asm!(
        "wgmma.wait_group.sync.aligned {n};",
        "// {0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3], inout(reg32) d[4], inout(reg32) d[5], inout(reg32) d[6], inout(reg32) d[7],
        inout(reg32) d[8], inout(reg32) d[9], inout(reg32) d[10], inout(reg32) d[11], inout(reg32) d[12], inout(reg32) d[13], inout(reg32) d[14], inout(reg32) d[15],
        inout(reg32) d[16], inout(reg32) d[17], inout(reg32) d[18], inout(reg32) d[19], inout(reg32) d[20], inout(reg32) d[21], inout(reg32) d[22], inout(reg32) d[23],
        inout(reg32) d[24], inout(reg32) d[25], inout(reg32) d[26], inout(reg32) d[27], inout(reg32) d[28], inout(reg32) d[29], inout(reg32) d[30], inout(reg32) d[31],
        n = const N,
        options(nostack)
    );
}

/// `[v; 32]` as 32 separate registers, for accumulator arrays (see [`splat64`]).
#[inline(always)]
#[rustfmt::skip]
pub fn splat32(v: f32) -> [f32; 32] {
    let d0: f32;
    let d1: f32;
    let d2: f32;
    let d3: f32;
    let d4: f32;
    let d5: f32;
    let d6: f32;
    let d7: f32;
    let d8: f32;
    let d9: f32;
    let d10: f32;
    let d11: f32;
    let d12: f32;
    let d13: f32;
    let d14: f32;
    let d15: f32;
    let d16: f32;
    let d17: f32;
    let d18: f32;
    let d19: f32;
    let d20: f32;
    let d21: f32;
    let d22: f32;
    let d23: f32;
    let d24: f32;
    let d25: f32;
    let d26: f32;
    let d27: f32;
    let d28: f32;
    let d29: f32;
    let d30: f32;
    let d31: f32;
    // SAFETY: register moves only.
    unsafe {
        asm!(
        "mov.b32 {0}, {32};",
        "mov.b32 {1}, {32};",
        "mov.b32 {2}, {32};",
        "mov.b32 {3}, {32};",
        "mov.b32 {4}, {32};",
        "mov.b32 {5}, {32};",
        "mov.b32 {6}, {32};",
        "mov.b32 {7}, {32};",
        "mov.b32 {8}, {32};",
        "mov.b32 {9}, {32};",
        "mov.b32 {10}, {32};",
        "mov.b32 {11}, {32};",
        "mov.b32 {12}, {32};",
        "mov.b32 {13}, {32};",
        "mov.b32 {14}, {32};",
        "mov.b32 {15}, {32};",
        "mov.b32 {16}, {32};",
        "mov.b32 {17}, {32};",
        "mov.b32 {18}, {32};",
        "mov.b32 {19}, {32};",
        "mov.b32 {20}, {32};",
        "mov.b32 {21}, {32};",
        "mov.b32 {22}, {32};",
        "mov.b32 {23}, {32};",
        "mov.b32 {24}, {32};",
        "mov.b32 {25}, {32};",
        "mov.b32 {26}, {32};",
        "mov.b32 {27}, {32};",
        "mov.b32 {28}, {32};",
        "mov.b32 {29}, {32};",
        "mov.b32 {30}, {32};",
        "mov.b32 {31}, {32};",
        out(reg32) d0, out(reg32) d1, out(reg32) d2, out(reg32) d3, out(reg32) d4, out(reg32) d5, out(reg32) d6, out(reg32) d7,
        out(reg32) d8, out(reg32) d9, out(reg32) d10, out(reg32) d11, out(reg32) d12, out(reg32) d13, out(reg32) d14, out(reg32) d15,
        out(reg32) d16, out(reg32) d17, out(reg32) d18, out(reg32) d19, out(reg32) d20, out(reg32) d21, out(reg32) d22, out(reg32) d23,
        out(reg32) d24, out(reg32) d25, out(reg32) d26, out(reg32) d27, out(reg32) d28, out(reg32) d29, out(reg32) d30, out(reg32) d31,
        in(reg32) v,
        options(pure, nomem, nostack)
        );
    }
    [
        d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13, d14, d15,
        d16, d17, d18, d19, d20, d21, d22, d23, d24, d25, d26, d27, d28, d29, d30, d31,
    ]
}

/// `d += A · B` for one k16 step with A in registers and B N-major ("transposed") in shared memory:
/// `wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 d, {a0..a3}, b_desc, 1, 1, 1, 1` (scale-d 1:
/// accumulate; imm-scale-a = imm-scale-b = 1; imm-trans-b = 1).
///
/// * A (64 x 16 f16) fragments: thread lane l of warp w of the warpgroup holds rows 16w + l/4 (+ 8) and
///   K columns 2(l % 4) (+ 1) (+ 8): `a[0]` = (row, k 2q..2q+1), `a[1]` = (row + 8, same k), `a[2]` = (row,
///   k + 8), `a[3]` = (row + 8, k + 8), two f16 each, low half first. This is the accumulator layout of
///   two adjacent n8 blocks of a previous `wgmma` (the f32 pairs packed to f16), as in `mma.m16n8k16`.
/// * B (K 16 x N 64 f16), N-major: the 16 K rows are rows of 64 N values (128 bytes) in the 128-byte
///   swizzle layout (16-byte chunk j of row r at chunk j ^ (r % 8); eight rows per 1024-byte atom), i.e. a
///   row-major [K][64] tile as a TMA box with the 128-byte swizzle writes it. One atom covers all 64 N
///   values, so only the stride between the two 8-row K groups matters (1024 bytes): [`smem_desc_sw128_mn`].
///
/// # Safety
/// As [`mma_m64n64k16_f16`]; in addition `a` must stay unchanged until the commit group retires (keep it
/// alive past the wait with [`keep_regs32`]).
#[inline(always)]
#[rustfmt::skip]
pub unsafe fn mma_m64n64k16_f16_rs_tb(d: &mut [f32; 32], a: [u32; 4], b_desc: u64) {
    asm!(
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16",
        "{{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}}},",
        "{{{32}, {33}, {34}, {35}}}, {36}, 1, 1, 1, 1;",
        inout(reg32) d[0], inout(reg32) d[1], inout(reg32) d[2], inout(reg32) d[3], inout(reg32) d[4], inout(reg32) d[5], inout(reg32) d[6], inout(reg32) d[7],
        inout(reg32) d[8], inout(reg32) d[9], inout(reg32) d[10], inout(reg32) d[11], inout(reg32) d[12], inout(reg32) d[13], inout(reg32) d[14], inout(reg32) d[15],
        inout(reg32) d[16], inout(reg32) d[17], inout(reg32) d[18], inout(reg32) d[19], inout(reg32) d[20], inout(reg32) d[21], inout(reg32) d[22], inout(reg32) d[23],
        inout(reg32) d[24], inout(reg32) d[25], inout(reg32) d[26], inout(reg32) d[27], inout(reg32) d[28], inout(reg32) d[29], inout(reg32) d[30], inout(reg32) d[31],
        in(reg32) a[0], in(reg32) a[1], in(reg32) a[2], in(reg32) a[3],
        in(reg64) b_desc,
        options(nostack)
    );
}

/// The descriptor of an N-major (M-major) f16 operand of 64-wide rows (one 128-byte swizzle atom across
/// N) in the 128-byte-swizzle layout, starting at `addr` (1024-byte aligned plus 2048 bytes per k16 step):
/// the stride between 8-row K groups is 1024 bytes. Both offset fields are set to it (the ISA names the
/// K-group stride "stride byte offset" for this layout and uses the leading byte offset only between
/// 64-wide N atoms, of which there is one).
#[inline(always)]
pub const fn smem_desc_sw128_mn(addr: u32) -> u64 {
    smem_desc(addr, SW128_ATOM_BYTES, SW128_ATOM_BYTES, SWIZZLE_128B)
}

/// [`keep_regs32`] for 32 f32 accumulators: pins their definitions before this point without the
/// `wgmma.fence` of [`fence_acc32`].
///
/// # Safety
/// None; `unsafe` for symmetry with the wrappers it accompanies.
#[inline(always)]
pub unsafe fn keep_acc32(d: &mut [f32; 32]) {
    let mut r = d.map(f32::to_bits);
    keep_regs32(&mut r);
    *d = r.map(f32::from_bits);
}

/// An empty instruction (a PTX comment) that takes 32 registers as operands: the compiler keeps their
/// values unchanged up to here, e.g. a `wgmma` A operand until after the wait that retires it.
///
/// # Safety
/// None; `unsafe` for symmetry with the wrappers it accompanies.
#[inline(always)]
#[rustfmt::skip]
pub unsafe fn keep_regs32(r: &mut [u32; 32]) {
    asm!(
        "// keep {0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}",
        inout(reg32) r[0], inout(reg32) r[1], inout(reg32) r[2], inout(reg32) r[3], inout(reg32) r[4], inout(reg32) r[5], inout(reg32) r[6], inout(reg32) r[7],
        inout(reg32) r[8], inout(reg32) r[9], inout(reg32) r[10], inout(reg32) r[11], inout(reg32) r[12], inout(reg32) r[13], inout(reg32) r[14], inout(reg32) r[15],
        inout(reg32) r[16], inout(reg32) r[17], inout(reg32) r[18], inout(reg32) r[19], inout(reg32) r[20], inout(reg32) r[21], inout(reg32) r[22], inout(reg32) r[23],
        inout(reg32) r[24], inout(reg32) r[25], inout(reg32) r[26], inout(reg32) r[27], inout(reg32) r[28], inout(reg32) r[29], inout(reg32) r[30], inout(reg32) r[31],
        options(nostack)
    );
}
