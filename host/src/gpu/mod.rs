//! CUDA runtime through cust: one context, one stream, the PTX module.
mod graph;
pub mod half;
mod pdl;
mod ptx;
mod tensor;
mod tma;

pub use graph::CudaGraph;
pub use ptx::find_ptx;
pub use tensor::{DType, DeviceTensor, Layout};
pub use tma::{DeviceTensorMap, TmaMapCache};

use std::collections::HashSet;
use std::ffi::c_void;
use std::path::PathBuf;

use cust::context::{Context, CurrentContext};
use cust::device::{Device, DeviceAttribute};
use cust::function::{BlockSize, FunctionAttribute, GridSize};
use cust::module::Module;
use cust::stream::{Stream, StreamFlags};

use crate::error::{CudaContext, Error, Result};

/// A GPU ready to run StyleForge kernels.
///
/// Field order is drop order: the module and stream are released before the context that owns them
/// (`_ctx` is declared last). Device buffers made through a `Gpu` must be dropped before it.
pub struct Gpu {
    module: Module,
    stream: Stream,
    pub name: String,
    pub sm_count: u32,
    pub compute_capability: (u32, u32),
    pub total_memory: usize,
    pub ptx_path: PathBuf,
    /// Kernels launched with programmatic dependent launch (empty when it is off): see `gpu::pdl`.
    pdl: HashSet<String>,
    _ctx: Context,
}

impl Gpu {
    /// Initialises the driver, makes a context on device 0 and loads the PTX (see [`find_ptx`]).
    pub fn new() -> Result<Self> {
        Self::with_ptx(None)
    }

    /// As [`Gpu::new`], with an explicit PTX path.
    pub fn with_ptx(ptx: Option<PathBuf>) -> Result<Self> {
        cust::init(cust::CudaFlags::empty())
            .map_err(|e| Error::NoGpu(format!("driver init failed: {e}")))?;
        let device =
            Device::get_device(0).map_err(|e| Error::NoGpu(format!("no device 0: {e}")))?;
        let ctx = Context::new(device).during("creating the CUDA context")?;
        let (ptx_path, text) = find_ptx(ptx)?;
        let module = Module::from_ptx(&text, &[])
            .map_err(|e| Error::Ptx(format!("the driver rejected {}: {e}", ptx_path.display())))?;
        // A blocking stream: it is ordered with the legacy default stream that cust's synchronous
        // host<->device copies and memsets use, so uploads and downloads never race the kernels.
        let stream = Stream::new(StreamFlags::DEFAULT, None).during("creating the stream")?;
        let attr = |a| device.get_attribute(a).during("reading device attributes");
        let cc_major = attr(DeviceAttribute::ComputeCapabilityMajor)? as u32;
        let pdl = if pdl::pdl_enabled(cc_major) {
            pdl::pdl_kernels(&text)
        } else {
            HashSet::new()
        };
        Ok(Gpu {
            name: device.name().during("reading the device name")?,
            sm_count: attr(DeviceAttribute::MultiprocessorCount)? as u32,
            compute_capability: (
                attr(DeviceAttribute::ComputeCapabilityMajor)? as u32,
                attr(DeviceAttribute::ComputeCapabilityMinor)? as u32,
            ),
            total_memory: device.total_memory().during("reading device memory")?,
            ptx_path,
            pdl,
            module,
            stream,
            _ctx: ctx,
        })
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Waits for all work queued on the stream; surfaces asynchronous kernel faults.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .during("stream synchronize (a kernel may have faulted)")
    }

    /// Free and total device memory in bytes.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        cust::memory::mem_get_info().during("reading free memory")
    }

    /// Launches kernel `name` on the stream. Launchers in `ops` call this after checking shapes.
    ///
    /// # Safety
    /// `args` must match the kernel's parameter list in count, order and type (each element points to a
    /// value of the parameter's type, alive for the call), and every device pointer among them must be
    /// valid for the accesses the kernel makes with the given grid, block and sizes. The launchers in
    /// `ops` establish this by deriving all sizes from checked tensor shapes.
    pub unsafe fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_mem_bytes: u32,
        args: &[*mut c_void],
    ) -> Result<()> {
        let f = self.module.get_function(name).map_err(|e| {
            Error::Ptx(format!(
                "kernel `{name}` is not in {}: {e}",
                self.ptx_path.display()
            ))
        })?;
        if shared_mem_bytes > 48 * 1024 {
            // Opt in to more than 48 KB of dynamic shared memory.
            let r = cust::sys::cuFuncSetAttribute(
                f.to_raw(),
                cust::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                shared_mem_bytes as i32,
            );
            if r != cust::sys::cudaError_enum::CUDA_SUCCESS {
                return Err(Error::Shape {
                    op: "launch",
                    msg: format!("{name}: {shared_mem_bytes} B of shared memory refused ({r:?})"),
                });
            }
        }
        let max_threads = f
            .get_attribute(FunctionAttribute::MaxThreadsPerBlock)
            .during("reading kernel attributes")?;
        let threads = block.0 * block.1 * block.2;
        if threads == 0
            || threads as i32 > max_threads
            || grid.0 == 0
            || grid.1 == 0
            || grid.2 == 0
            || grid.1 > 65535
            || grid.2 > 65535
        {
            return Err(Error::Shape {
                op: "launch",
                msg: format!("{name}: grid {grid:?} x block {block:?} is not launchable (max {max_threads} threads per block)"),
            });
        }
        if self.pdl.contains(name) {
            // SAFETY: the caller's contract (above) covers the arguments; `f` and the stream belong to
            // this context; the kernel's PTX waits on `griddepcontrol.wait` (that is how it got in `pdl`).
            let r = pdl::launch_pdl(f.to_raw(), self.stream.as_inner(), grid, block, shared_mem_bytes, args);
            return graph::check(r, &format!("launching {name} (programmatic dependent launch)"));
        }
        self.stream
            .launch(
                &f,
                GridSize::xyz(grid.0, grid.1, grid.2),
                BlockSize::xyz(block.0, block.1, block.2),
                shared_mem_bytes,
                args,
            )
            .during(format!("launching {name}"))
    }

    /// Makes this GPU's context current on the calling thread (needed when a `Gpu` moves between threads).
    /// Whether kernels are launched with programmatic dependent launch (sm_90+, `STYLEFORGE_PDL` not 0).
    pub fn uses_pdl(&self) -> bool {
        !self.pdl.is_empty()
    }

    pub fn make_current(&self) -> Result<()> {
        CurrentContext::set_current(&self._ctx).during("setting the current context")
    }
}

/// Builds the argument array for [`Gpu::launch`]: each argument as a pointer to its value.
/// The values are borrowed for the enclosing statement, so use it inside the `launch` call.
#[macro_export]
macro_rules! kernel_args {
    ($($a:expr),* $(,)?) => {
        &[$(&$a as *const _ as *mut ::std::ffi::c_void),*]
    };
}

/// Whether the kernel-choice switch `var` (an environment variable) is on: anything but `0` (unset: on).
/// The `STYLEFORGE_*=0` A/B switches of README all read through this.
pub fn env_on(var: &str) -> bool {
    std::env::var(var).map_or(true, |v| v.trim() != "0")
}

/// Number of blocks of `block` threads that cover `n` items (grid-stride kernels cap it).
pub fn blocks_for(n: usize, block: u32) -> u32 {
    let b = n.div_ceil(block as usize).max(1);
    b.min(65_535 * 8) as u32
}
