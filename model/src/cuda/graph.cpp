// CUDA graphs (what PyTorch's torch.cuda.CUDAGraph wraps): a training step's kernels are
// recorded once and replayed with one launch, so a step at small batch sizes no longer
// costs a host-side launch per kernel. Compiled only when the torch wheel's CUDA headers
// are present (model/build.rs); otherwise graph_missing.cpp stands in and says so.
//
// A graph keeps a side stream: warm-up steps and the capture run there (capture cannot use
// the default stream, and warming up on the capture's stream lets cuBLAS and the autograd
// engine settle their per-stream state first); replays run on the caller's current stream.
// Entering and leaving the side stream synchronise the device: both happen once per graph.
// Only functions exported by libc10_cuda / libtorch_cuda are called (no inline CUDA runtime
// calls, such as c10's stream guards make), so nothing links against libcudart itself.
// Also here, as they need the same headers: the switch for libtorch's CUDA sync debug mode,
// and a device's name as the CUDA runtime gives it.
// Every function returns 0, or -1 after writing what went wrong to `err` (src/bridge.h).
#include "../bridge.h"

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>
#include <stdexcept>

// libtorch_cuda's cached device properties (ATen/cuda/CUDAContextLight.h declares it, but
// that header also needs the cuBLAS, cuSPARSE and cuSOLVER headers, which build.rs does not
// check for: declared here, against cuda_runtime_api.h alone).
namespace at::cuda {
cudaDeviceProp* getDeviceProperties(c10::DeviceIndex device);
}  // namespace at::cuda

namespace {

struct Graph {
  c10::DeviceIndex device;
  at::cuda::CUDAGraph graph;
  c10::cuda::CUDAStream side;
  // The stream that was current before the side stream was made current.
  std::optional<c10::cuda::CUDAStream> before;

  explicit Graph(c10::DeviceIndex d)
      : device(d), side(c10::cuda::getStreamFromPool(false, d)) {}
};

// Makes the stream that was current before the side stream current again.
void go_back(Graph* g) {
  c10::cuda::setCurrentCUDAStream(*g->before);
  g->before.reset();
}

}  // namespace

extern "C" {

// A new, empty graph for CUDA device `device`, in `*out`.
int conveyor_graph_new(int device, void** out, char* err, int64_t err_len) {
  return conveyor::guarded<int>(err, static_cast<size_t>(err_len), -1, [&] {
    *out = new Graph(static_cast<c10::DeviceIndex>(device));
    return 0;
  });
}

// op 0: make the side stream current (after the device is idle); op 1: back to the
// stream that was current (after the side stream is done); op 2: begin capturing on the
// side stream (made current); op 3: end the capture, go back and release the allocator's
// unused cached memory; op 4: replay.
int conveyor_graph_op(void* handle, int op, char* err, int64_t err_len) {
  auto* g = static_cast<Graph*>(handle);
  return conveyor::guarded<int>(err, static_cast<size_t>(err_len), -1, [&] {
        switch (op) {
          case 0:
          case 2:
            if (g->before) throw std::logic_error("already on the graph's stream");
            // capture_begin looks at the current device's stream and generator.
            c10::cuda::set_device(g->device);
            c10::cuda::device_synchronize();
            g->before = c10::cuda::getCurrentCUDAStream(g->device);
            c10::cuda::setCurrentCUDAStream(g->side);
            if (op == 2) {
              try {
                // Thread-local: only this thread's unsafe CUDA calls would spoil the capture,
                // not those of other threads (tests running beside it, a user's own threads).
                g->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
              } catch (...) {
                go_back(g);
                throw;
              }
            }
            break;
          case 1:
          case 3:
            if (!g->before) throw std::logic_error("not on the graph's stream");
            if (op == 3) {
              try {
                g->graph.capture_end();
              } catch (...) {
                // Back on the caller's stream, so that the error is what the run reports.
                go_back(g);
                throw;
              }
            }
            c10::cuda::device_synchronize();
            go_back(g);
            // The warm-up steps left a step's worth of freed blocks cached for the side
            // stream, which nothing runs on any more (the graph has its own pool): give every
            // unused cached block back (the caller's stream's too; live tensors and the
            // graph's pool stay), so that a graph run holds about one step's memory, not two.
            if (op == 3) c10::cuda::CUDACachingAllocator::emptyCache();
            break;
          case 4:
            g->graph.replay();
            break;
          default:
            throw std::invalid_argument("unknown graph operation");
        }
        return 0;
      });
}

// libtorch's CUDA sync debug mode (what torch.cuda.set_sync_debug_mode sets), for
// `train --check-syncs`: op 1 makes every synchronising CUDA call libtorch makes (a
// blocking copy, .item(), a stream or device synchronise) throw; op 0 turns that off; op 2
// answers 1 when it is on. Turning it on also checks that libtorch sees it: the mode lives
// in a function-local static of an inline function, which this bridge and libc10_cuda must
// share; libc10_cuda's own warn_or_error_on_sync() has to throw.
int conveyor_sync_check(int op, char* err, int64_t err_len) {
  using c10::cuda::SyncDebugMode;
  auto armed = [] {
    try {
      c10::cuda::warn_or_error_on_sync();
    } catch (const c10::Error&) {
      return true;
    }
    return false;
  };
  return conveyor::guarded<int>(err, static_cast<size_t>(err_len), -1, [&] {
    auto& state = c10::cuda::warning_state();
    switch (op) {
      case 0:
        state.set_sync_debug_mode(SyncDebugMode::L_DISABLED);
        return 0;
      case 1:
        state.set_sync_debug_mode(SyncDebugMode::L_ERROR);
        if (!armed()) {
          state.set_sync_debug_mode(SyncDebugMode::L_DISABLED);
          throw std::runtime_error(
              "libtorch's CUDA sync debug mode set from conveyor's bridge is not the one "
              "libc10_cuda reads; the check cannot run");
        }
        return 0;
      case 2:
        // Only the error mode is ever set here: a throw means it is on.
        return armed() ? 1 : 0;
      default:
        throw std::invalid_argument("unknown sync check operation");
    }
  });
}

// The CUDA runtime's name of device `index` (what torch.cuda.get_device_name gives), read
// from the properties libtorch_cuda caches, into `name`.
int conveyor_cuda_device_name(int index, char* name, int64_t name_len, char* err, int64_t err_len) {
  return conveyor::guarded<int>(err, static_cast<size_t>(err_len), -1, [&] {
    const cudaDeviceProp* p = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index));
    conveyor::put_error(name, static_cast<size_t>(name_len), p->name);
    return 0;
  });
}

void conveyor_graph_free(void* handle) {
  try {
    delete static_cast<Graph*>(handle);
  } catch (...) {
  }
}

}  // extern "C"
