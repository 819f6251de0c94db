//! CUDA graphs through the driver API (cust 0.3.2 has no graph API).
//!
//! [`CudaGraph::capture`] records every launch a closure queues on the GPU's stream into a graph
//! (stream capture, `CU_STREAM_CAPTURE_MODE_RELAXED`), instantiates it, and [`CudaGraph::launch`]
//! replays it on the stream with one driver call. A graph bakes in every kernel argument, device pointers
//! included, so its owner must keep those buffers alive and at the same addresses while it replays it.
//!
//! While a capture is in progress nothing may touch the legacy default stream (cust's synchronous copies
//! and memsets) or synchronise the stream: the capture would be invalidated and [`CudaGraph::capture`]
//! returns an error. The closure should only queue launches.
use std::ptr;

use cust::stream::{Stream, StreamFlags};
use cust::sys as cu;

use crate::error::{CudaContext, Error, Result};
use crate::gpu::{DeviceTensor, Gpu};

/// Maps a driver status to `crate::Error`, naming the call and the raw status.
pub(crate) fn check(r: cu::CUresult, what: &str) -> Result<()> {
    if r == cu::cudaError_enum::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::Other(format!("CUDA error during {what}: {r:?}")))
    }
}

/// An instantiated CUDA graph (the graph and its executable), destroyed on drop.
pub struct CudaGraph {
    graph: cu::CUgraph,
    exec: cu::CUgraphExec,
    nodes: usize,
}

// SAFETY: graph and executable-graph handles are plain driver handles, not tied to the thread that made
// them; the driver API may use them from any thread with the owning context current.
unsafe impl Send for CudaGraph {}

impl CudaGraph {
    /// Captures the work `body` queues on `gpu.stream()` and instantiates it. The work is recorded, not
    /// run. If `body` fails, or the capture is invalidated (e.g. by a legacy-stream copy or a stream
    /// synchronisation inside `body`), the capture is ended, nothing is kept and the error is returned;
    /// the stream is usable again afterwards either way.
    ///
    /// The capture is begun on the GPU's stream itself. Should the driver refuse that, it is begun on a
    /// private non-blocking side stream that the GPU's stream then joins through an event (fork), and
    /// that waits for the GPU's stream at the end (join): the recorded graph is the same.
    pub fn capture(gpu: &Gpu, body: impl FnOnce() -> Result<()>) -> Result<CudaGraph> {
        let main = gpu.stream().as_inner();
        let graph = match begin_capture(main) {
            Ok(()) => {
                let r = body();
                end_capture(main, r)?
            }
            Err(direct) => capture_joined(gpu, body).map_err(|e| {
                Error::Other(format!(
                    "{direct}; capturing through a side stream failed too: {e}"
                ))
            })?,
        };
        let mut nodes = 0usize;
        // SAFETY: `graph` is a valid graph; a null node array asks only for the count, written to `nodes`.
        let counted = unsafe { cu::cuGraphGetNodes(graph, ptr::null_mut(), &mut nodes) };
        let mut exec: cu::CUgraphExec = ptr::null_mut();
        // SAFETY: `graph` is a valid graph and `exec` a valid out-pointer; flags 0 = default instantiation.
        let inst = unsafe { cu::cuGraphInstantiateWithFlags(&mut exec, graph, 0) };
        if let Err(e) = check(counted, "counting graph nodes")
            .and(check(inst, "instantiating the captured graph"))
        {
            if !exec.is_null() {
                // SAFETY: `exec` came from cuGraphInstantiateWithFlags and is destroyed once, here.
                unsafe { cu::cuGraphExecDestroy(exec) };
            }
            // SAFETY: `graph` is valid and owned here; destroyed once.
            unsafe { cu::cuGraphDestroy(graph) };
            return Err(e);
        }
        Ok(CudaGraph { graph, exec, nodes })
    }

    /// Queues one replay of the graph on `gpu.stream()` (asynchronous, no host synchronisation).
    ///
    /// # Safety
    /// Every device buffer the captured work reads or writes must still be allocated (at the address it
    /// had during the capture), and `gpu` must be the `Gpu` whose context and module the capture used.
    pub unsafe fn launch(&self, gpu: &Gpu) -> Result<()> {
        // SAFETY: `exec` is a live executable graph owned by `self`; the stream is live (borrowed from
        // `gpu`); the caller guarantees the captured buffers are still allocated.
        let r = unsafe { cu::cuGraphLaunch(self.exec, gpu.stream().as_inner()) };
        check(r, "launching a CUDA graph")
    }

    /// Number of nodes (kernel launches and copies) in the graph.
    pub fn node_count(&self) -> usize {
        self.nodes
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: both handles were created in `capture`, are owned by `self` and are destroyed exactly
        // once, the executable first. A replay still queued keeps running: the driver defers the release.
        unsafe {
            cu::cuGraphExecDestroy(self.exec);
            cu::cuGraphDestroy(self.graph);
        }
    }
}

/// Begins a capture on `stream` (relaxed mode: other API calls of this thread stay allowed; work that
/// conflicts with the capture still invalidates it).
fn begin_capture(stream: cu::CUstream) -> Result<()> {
    // SAFETY: the caller passes a live stream it borrows for the duration of the capture; the mode is a
    // valid enum value.
    let r = unsafe {
        cu::cuStreamBeginCapture_v2(
            stream,
            cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
        )
    };
    check(r, "beginning a stream capture")
}

/// Ends the capture on `stream` (always, so the stream leaves capture mode) and returns the graph, or
/// the first error of `body_result` and the end of the capture (destroying any graph).
fn end_capture(stream: cu::CUstream, body_result: Result<()>) -> Result<cu::CUgraph> {
    let mut graph: cu::CUgraph = ptr::null_mut();
    // SAFETY: ends the capture begun on the same live stream; `graph` is a valid out-pointer.
    let end = unsafe { cu::cuStreamEndCapture(stream, &mut graph) };
    let ended = check(
        end,
        "ending the stream capture (was it invalidated by a synchronising or legacy-stream call?)",
    );
    if let Err(e) = body_result.and(ended) {
        if !graph.is_null() {
            // SAFETY: `graph` was just returned by cuStreamEndCapture and is destroyed once, here.
            unsafe { cu::cuGraphDestroy(graph) };
        }
        return Err(e);
    }
    if graph.is_null() {
        return Err(Error::Other("stream capture returned no graph".into()));
    }
    Ok(graph)
}

/// A driver event without timing, destroyed on drop (cust 0.3.2's `Event` exposes no raw handle).
struct RawEvent(cu::CUevent);
impl RawEvent {
    fn new() -> Result<Self> {
        let mut ev: cu::CUevent = ptr::null_mut();
        // SAFETY: `ev` is a valid out-pointer; the flag is a valid event flag. A context is current (the
        // caller holds a `Gpu`).
        let r = unsafe {
            cu::cuEventCreate(&mut ev, cu::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32)
        };
        check(r, "creating an event")?;
        Ok(RawEvent(ev))
    }
    /// Records the event on `on` and makes `waiter` wait for it.
    fn link(&self, on: cu::CUstream, waiter: cu::CUstream) -> Result<()> {
        // SAFETY: the event is live (owned by `self`); both streams are live streams borrowed by the caller.
        check(
            unsafe { cu::cuEventRecord(self.0, on) },
            "recording an event",
        )?;
        // SAFETY: as above; flags 0 is the only defined value.
        check(
            unsafe { cu::cuStreamWaitEvent(waiter, self.0, 0) },
            "making a stream wait for an event",
        )
    }
}
impl Drop for RawEvent {
    fn drop(&mut self) {
        // SAFETY: the event was created in `new` and is destroyed once; pending uses complete first.
        unsafe { cu::cuEventDestroy_v2(self.0) };
    }
}

/// Captures through a side stream: fork the GPU's stream off it, run `body`, join back, end.
fn capture_joined(gpu: &Gpu, body: impl FnOnce() -> Result<()>) -> Result<cu::CUgraph> {
    let side = Stream::new(StreamFlags::NON_BLOCKING, None).during("creating a capture stream")?;
    let (fork, join) = (RawEvent::new()?, RawEvent::new()?);
    let (s, main) = (side.as_inner(), gpu.stream().as_inner());
    begin_capture(s)?;
    let forked = fork.link(s, main);
    let mut r = forked
        .as_ref()
        .map(|_| ())
        .map_err(|e| Error::Other(e.to_string()));
    if r.is_ok() {
        r = body();
    }
    if forked.is_ok() {
        // Join even when `body` failed, so the capture can end and both streams leave capture mode.
        r = r.and(join.link(main, s));
    }
    end_capture(s, r)
}

impl Gpu {
    /// Queues a device-to-device copy of all of `src` into `dst` on the stream (no host synchronisation;
    /// capturable into a graph). Sizes must match.
    pub fn copy_device_async(&self, src: &DeviceTensor, dst: &mut DeviceTensor) -> Result<()> {
        crate::error::ensure(
            src.bytes() == dst.bytes() && src.dtype == dst.dtype,
            "copy_device_async",
            || {
                format!(
                    "{:?} {:?} into {:?} {:?}",
                    src.dtype, src.shape, dst.dtype, dst.shape
                )
            },
        )?;
        if src.ptr() == dst.ptr() {
            return Ok(());
        }
        self.copy_device_into_at(src, dst, 0)
    }

    /// Queues a device-to-device copy of all of `src` into `dst` starting at element `at` (same dtype;
    /// `at + src.numel() ≤ dst.numel()`), on the stream like [`Self::copy_device_async`].
    pub fn copy_device_into_at(
        &self,
        src: &DeviceTensor,
        dst: &mut DeviceTensor,
        at: usize,
    ) -> Result<()> {
        crate::error::ensure(
            src.dtype == dst.dtype
                && at
                    .checked_add(src.numel())
                    .is_some_and(|end| end <= dst.numel()),
            "copy_device_into_at",
            || {
                format!(
                    "{:?} {:?} into {:?} {:?} at element {at}",
                    src.dtype, src.shape, dst.dtype, dst.shape
                )
            },
        )?;
        if src.bytes() == 0 {
            return Ok(());
        }
        let offset = (at * dst.dtype.size()) as u64;
        // SAFETY: src is a live allocation of src.bytes() bytes; dst's allocation holds at least
        // (at + src.numel()) elements of the same size (checked above), so the destination range
        // [dst + offset, dst + offset + src.bytes()) is inside it; the stream is live.
        let r = unsafe {
            cu::cuMemcpyDtoDAsync_v2(
                dst.ptr() + offset,
                src.ptr(),
                src.bytes(),
                self.stream().as_inner(),
            )
        };
        check(r, "queueing a device-to-device copy")
    }
}
