// What conveyor needs from libtorch that tch does not bind:
// - the CUDA caching allocator's peak bytes allocated and reserved on one device, and a
//   reset of those peaks (PyTorch's torch.cuda.max_memory_allocated / _reserved). Goes through
// c10's device-generic allocator interface, so no CUDA headers are needed; when no CUDA
// allocator is registered (CPU-only libtorch) every call reports an error (-1).
// - deterministic algorithms (torch.use_deterministic_algorithms + cuDNN's flags).
// - dropping a parameter's gradient (Python's `p.grad = None`).
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>

namespace {
constexpr size_t kAggregate =
    static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);

c10::DeviceAllocator* cuda_allocator() {
  return c10::getDeviceAllocator(c10::DeviceType::CUDA);
}
}

extern "C" {

// Peak bytes handed out to tensors since start or the last reset; -1 on any error.
int64_t conveyor_cuda_peak_allocated(int device) {
  try {
    auto s = cuda_allocator()->getDeviceStats(
        static_cast<c10::DeviceIndex>(device));
    return s.allocated_bytes[kAggregate].peak;
  } catch (...) {
    return -1;
  }
}

// Peak bytes the allocator held from the driver (what nvidia-smi sees, less the context).
int64_t conveyor_cuda_peak_reserved(int device) {
  try {
    auto s = cuda_allocator()->getDeviceStats(
        static_cast<c10::DeviceIndex>(device));
    return s.reserved_bytes[kAggregate].peak;
  } catch (...) {
    return -1;
  }
}

// 0 when the peaks were reset, -1 on error.
int conveyor_cuda_reset_peaks(int device) {
  try {
    cuda_allocator()->resetPeakStats(
        static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return -1;
  }
}

// torch.use_deterministic_algorithms(on), cudnn.deterministic = on, cudnn.benchmark = off.
// An op with no deterministic implementation then raises an error naming it.
int conveyor_set_deterministic(int on) {
  try {
    auto& ctx = at::globalContext();
    ctx.setDeterministicAlgorithms(on != 0, /*warn_only=*/false);
    ctx.setDeterministicCuDNN(on != 0);
    ctx.setBenchmarkCuDNN(false);
    return 0;
  } catch (...) {
    return -1;
  }
}

// p.grad = None: the next backward pass stores its gradient instead of adding it to a zeroed
// one (one pass over the parameter's memory less, and no memset). `t` is tch's tensor handle,
// which is an at::Tensor*.
int conveyor_clear_grad(at::Tensor* t) {
  try {
    t->mutable_grad().reset();
    return 0;
  } catch (...) {
    return -1;
  }
}
}
