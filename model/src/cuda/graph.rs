//! CUDA graphs through `graph.cpp` (PyTorch's `torch.cuda.CUDAGraph`): a step's kernels are
//! recorded once and replayed with one launch. What a graph replays is fixed at capture:
//! the same shapes, the same tensors (inputs are copied into the captured ones), and every
//! scalar a kernel took by value. Values that change between replays must live in device
//! tensors written before each replay, as the optimiser's learning rate does
//! ([`crate::optim::Optimizer::begin_step`]); dropout's random stream advances by itself.

use std::ffi::c_void;

/// What went wrong in libtorch's CUDA graph calls (its message), or no CUDA graph support.
#[derive(Debug, thiserror::Error)]
#[error("CUDA graph: {0}")]
pub struct GraphError(String);

mod ffi {
    use std::ffi::c_void;
    extern "C" {
        pub fn conveyor_graph_new(
            device: i32,
            out: *mut *mut c_void,
            err: *mut u8,
            len: i64,
        ) -> i32;
        pub fn conveyor_graph_op(g: *mut c_void, op: i32, err: *mut u8, len: i64) -> i32;
        pub fn conveyor_graph_free(g: *mut c_void);
    }
}

/// Runs a bridge call with an error buffer.
fn checked(call: impl FnOnce(*mut u8, i64) -> i32) -> Result<(), GraphError> {
    crate::optim::foreach::checked(call).map_err(GraphError)
}

/// One captured piece of work on one CUDA device, and the side stream it was captured on.
pub struct CudaGraph {
    handle: *mut c_void,
    captured: bool,
}

const ENTER: i32 = 0;
const LEAVE: i32 = 1;
const BEGIN: i32 = 2;
const END: i32 = 3;
const REPLAY: i32 = 4;

impl CudaGraph {
    /// An empty graph for CUDA device `device`.
    pub fn new(device: usize) -> Result<Self, GraphError> {
        if !tch::Cuda::is_available() || device >= tch::Cuda::device_count() as usize {
            return Err(GraphError(format!("there is no CUDA device {device}")));
        }
        let mut handle = std::ptr::null_mut();
        // SAFETY: the bridge writes a new graph into `handle` or reports an error.
        checked(|e, l| unsafe { ffi::conveyor_graph_new(device as i32, &mut handle, e, l) })?;
        Ok(Self {
            handle,
            captured: false,
        })
    }

    /// An empty graph for `device`, refused with the reason when it is not a CUDA device
    /// (what `--cuda-graph` says on the CPU).
    pub fn on(device: tch::Device) -> Result<Self, GraphError> {
        match device {
            tch::Device::Cuda(i) => Self::new(i),
            d => Err(GraphError(format!(
                "--cuda-graph needs a CUDA device (--device cuda); this run is on {d:?}, where there is no graph to capture"
            ))),
        }
    }

    fn op(&self, op: i32) -> Result<(), GraphError> {
        // SAFETY: `handle` is the live graph this value owns.
        checked(|e, l| unsafe { ffi::conveyor_graph_op(self.handle, op, e, l) })
    }

    /// Runs `f` eagerly on the graph's side stream: the warm-up steps before a capture
    /// (PyTorch runs a few, so that lazily made state such as cuBLAS handles exists before).
    pub fn warm_up<R>(&mut self, f: impl FnOnce() -> R) -> Result<R, GraphError> {
        self.op(ENTER)?;
        let r = self.leaving_on_panic(LEAVE, f);
        self.op(LEAVE)?;
        Ok(r)
    }

    /// Runs `f`; if it panics (a tch operation libtorch refused, such as one that may not
    /// run while a stream is capturing), first ends the capture or leaves the side stream
    /// with `op`, so that the panic's message is what the run reports.
    fn leaving_on_panic<R>(&self, op: i32, f: impl FnOnce() -> R) -> R {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(panic) => {
                let _ = self.op(op);
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Records what `f` launches (nothing runs now); [`CudaGraph::replay`] then runs it.
    /// The tensors `f` makes (its outputs) are reused by every replay: keep them.
    pub fn capture<R>(&mut self, f: impl FnOnce() -> R) -> Result<R, GraphError> {
        if self.captured {
            return Err(GraphError("this graph was captured already".into()));
        }
        self.op(BEGIN)?;
        let r = self.leaving_on_panic(END, f);
        self.op(END)?;
        self.captured = true;
        Ok(r)
    }

    /// Launches the captured work on the current stream (it does not wait for it).
    pub fn replay(&self) -> Result<(), GraphError> {
        if !self.captured {
            return Err(GraphError("nothing was captured".into()));
        }
        self.op(REPLAY)
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: the graph is freed once, here.
        unsafe { ffi::conveyor_graph_free(self.handle) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    /// Without a GPU a graph is refused with a reason; with one, a captured update replays
    /// with what the input tensor holds at each replay.
    #[test]
    fn a_captured_update_replays_with_new_inputs() {
        if !tch::Cuda::is_available() {
            let e = CudaGraph::new(0).err().expect("no graph without a GPU");
            assert!(e.to_string().contains("no CUDA device"), "{e}");
            return;
        }
        let d = Device::Cuda(0);
        let x = Tensor::zeros([1000], (Kind::Float, d));
        let acc = Tensor::zeros([1000], (Kind::Float, d));
        let mut g = CudaGraph::new(0).unwrap();
        g.warm_up(|| ()).unwrap();
        let y = g
            .capture(|| {
                let mut a = acc.shallow_clone();
                let _ = a.g_add_(&(&x * 2.0));
                &a + 1.0
            })
            .unwrap();
        for v in 1..=3 {
            let _ = x.shallow_clone().fill_(v as f64);
            g.replay().unwrap();
        }
        tch::Cuda::synchronize(0);
        // acc = 2 * (1 + 2 + 3); y = acc + 1 after the last replay.
        assert_eq!(acc.double_value(&[7]), 12.0);
        assert_eq!(y.double_value(&[7]), 13.0);
    }
}

#[cfg(test)]
mod bridge_tests {
    use super::*;

    /// What `conveyor env` says of the graph bridge is what is linked: the stand-in answers
    /// every call with its "without CUDA headers" reason, the real bridge with libtorch's own
    /// (no device here) or a graph. A device run checks that line before spending time.
    #[test]
    fn env_names_the_graph_bridge_that_is_linked() {
        let mut handle = std::ptr::null_mut();
        // SAFETY: the bridge writes a new graph into `handle` or reports an error.
        let made = checked(|e, l| unsafe { ffi::conveyor_graph_new(0, &mut handle, e, l) });
        if made.is_ok() {
            // SAFETY: a graph the bridge just made, freed once.
            unsafe { ffi::conveyor_graph_free(handle) }
        }
        let stand_in = made
            .as_ref()
            .is_err_and(|e| e.to_string().contains("without CUDA headers"));
        let said = if stand_in { "stand-in" } else { "built" };
        let line = crate::describe();
        assert!(
            line.contains(&format!("cuda graph bridge: {said}")),
            "{line} / {made:?}"
        );
        // A CUDA libtorch (the wheel scripts/setup.sh installs) carries the CUDA headers:
        // a stand-in there means graph.cpp failed to compile (only a cargo warning says so).
        if option_env!("CONVEYOR_LIBTORCH_CUDA") == Some("true") {
            assert_eq!(said, "built", "{line}");
            assert_eq!(option_env!("CONVEYOR_NCCL_BRIDGE"), Some("built"), "{line}");
        }
    }
}
