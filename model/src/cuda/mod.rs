//! Peak GPU memory from libtorch's CUDA caching allocator (what PyTorch reports as
//! `torch.cuda.max_memory_allocated` / `max_memory_reserved`) and the deterministic-algorithms
//! switch and `p.grad = None`, through `shim.cpp`. Without a CUDA device every memory query answers `None`.

use tch::Tensor;

pub mod graph;
pub mod sync_check;
pub use graph::{CudaGraph, GraphError};
pub use sync_check::{SyncCheck, SyncCheckError};

/// Peak bytes on one CUDA device since the process started or the last [`reset_peaks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeakMemory {
    /// Bytes held by tensors at the peak.
    pub allocated: u64,
    /// Bytes the caching allocator had reserved from the driver at its peak.
    pub reserved: u64,
}

mod ffi {
    extern "C" {
        pub fn conveyor_cuda_peak_allocated(device: i32) -> i64;
        pub fn conveyor_cuda_peak_reserved(device: i32) -> i64;
        pub fn conveyor_cuda_reset_peaks(device: i32) -> i32;
        pub fn conveyor_set_deterministic(on: i32) -> i32;
        pub fn conveyor_clear_grad(t: *const torch_sys::C_tensor) -> i32;
        // graph.cpp (it has the CUDA headers).
        pub fn conveyor_cuda_device_name(
            index: i32,
            name: *mut u8,
            name_len: i64,
            err: *mut u8,
            err_len: i64,
        ) -> i32;
    }
}

/// The CUDA runtime's name of device `index` (`NVIDIA H200`; what
/// `torch.cuda.get_device_name` gives), `None` without that device or without the CUDA
/// bridge. It follows CUDA's own numbering (`CUDA_VISIBLE_DEVICES`, `CUDA_DEVICE_ORDER`).
pub fn device_name(index: usize) -> Option<String> {
    if !tch::Cuda::is_available() || index >= tch::Cuda::device_count() as usize {
        return None;
    }
    let mut name = vec![0u8; 256];
    crate::optim::foreach::checked(|e, l| {
        // SAFETY: the bridge writes at most `name.len()` bytes, NUL-terminated, into `name`.
        unsafe {
            ffi::conveyor_cuda_device_name(index as i32, name.as_mut_ptr(), name.len() as i64, e, l)
        }
    })
    .ok()?;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let name = String::from_utf8_lossy(&name[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// The peaks of CUDA device `device`, or `None` when unsupported or the device is absent.
pub fn peak_memory(device: usize) -> Option<PeakMemory> {
    if !tch::Cuda::is_available() || device >= tch::Cuda::device_count() as usize {
        return None;
    }
    // SAFETY: plain C functions taking a device index; they catch every C++ exception.
    let (a, r) = unsafe {
        (
            ffi::conveyor_cuda_peak_allocated(device as i32),
            ffi::conveyor_cuda_peak_reserved(device as i32),
        )
    };
    (a >= 0 && r >= 0).then_some(PeakMemory {
        allocated: a as u64,
        reserved: r as u64,
    })
}

/// Starts a new peak-measuring window on `device`; false when unsupported.
pub fn reset_peaks(device: usize) -> bool {
    if !tch::Cuda::is_available() || device >= tch::Cuda::device_count() as usize {
        return false;
    }
    // SAFETY: as above.
    unsafe { ffi::conveyor_cuda_reset_peaks(device as i32) == 0 }
}

/// Makes libtorch use deterministic algorithms only (PyTorch's
/// `torch.use_deterministic_algorithms(True)`, cuDNN deterministic, no cuDNN benchmarking),
/// so that a CUDA run repeats bit for bit, at some cost in speed. Sets
/// `CUBLAS_WORKSPACE_CONFIG=:4096:8` (what cuBLAS needs for that) unless already set: call it
/// before the first CUDA matrix product. An op without a deterministic kernel then fails with
/// libtorch's error naming it. Returns false if libtorch refused.
pub fn set_deterministic(on: bool) -> bool {
    if on && std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        // SAFETY: called while the process is single-threaded (start of a command), before
        // libtorch reads the variable.
        unsafe { std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8") };
    }
    // SAFETY: a plain C function; it catches every C++ exception.
    unsafe { ffi::conveyor_set_deterministic(on as i32) == 0 }
}

/// Drops `t`'s gradient, as Python's `p.grad = None` does: the next backward pass then
/// stores its gradient instead of adding it to a zeroed buffer.
pub fn clear_grad(t: &Tensor) {
    // SAFETY: `as_ptr` is tch's live at::Tensor handle, borrowed for the call; the function
    // catches every C++ exception.
    let r = unsafe { ffi::conveyor_clear_grad(t.as_ptr()) };
    debug_assert_eq!(r, 0, "clearing a gradient failed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    /// The CUDA runtime's name of the GPU, which the peak table is looked up by; where
    /// nvidia-smi answers too, the two agree. Without a GPU there is none.
    #[test]
    fn the_gpu_is_named_by_the_cuda_runtime() {
        let Some(name) = device_name(0) else {
            assert!(!tch::Cuda::is_available());
            return;
        };
        assert!(!name.is_empty());
        // nvidia-smi names a MIG slice's whole card, and numbers mixed GPUs by PCI slot
        // where CUDA puts the fastest first: compared on one whole GPU only.
        let one_gpu = tch::Cuda::device_count() == 1 && !name.contains("MIG");
        if let Some(smi) = crate::peak::nvidia_smi_name(0).filter(|_| one_gpu) {
            assert_eq!(name, smi);
        }
        assert_eq!(device_name(tch::Cuda::device_count() as usize), None);
    }

    #[test]
    fn peaks_follow_allocations_on_a_gpu_and_are_absent_without_one() {
        if !tch::Cuda::is_available() {
            assert_eq!(peak_memory(0), None);
            assert!(!reset_peaks(0));
            return;
        }
        assert!(reset_peaks(0));
        let before = peak_memory(0).unwrap().allocated;
        let t = Tensor::zeros([64, 1024, 1024], (Kind::Float, Device::Cuda(0)));
        drop(t);
        let after = peak_memory(0).unwrap();
        assert!(after.allocated >= before + 256 * 1024 * 1024, "{after:?}");
        assert!(after.reserved >= after.allocated);
    }

    #[test]
    fn a_cleared_gradient_is_undefined_and_the_next_one_is_not_accumulated() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        (&p * 3.0).sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(p.grad()).unwrap(), vec![3.0, 3.0]);
        clear_grad(&p);
        assert!(!p.grad().defined());
        (&p * 5.0).sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(p.grad()).unwrap(), vec![5.0, 5.0]);
        // A shallow clone (how the optimiser holds parameters) clears the same gradient.
        let q = p.shallow_clone();
        clear_grad(&q);
        assert!(!p.grad().defined());
    }
}
