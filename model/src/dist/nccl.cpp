// NCCL process groups, compiled only when the torch wheel's CUDA and NCCL headers are present
// (model/build.rs); otherwise nccl_missing.cpp stands in and says so.
#define USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

c10::intrusive_ptr<c10d::Backend> conveyor_make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
    std::chrono::milliseconds timeout, int device) {
  // torch.cuda.set_device(LOCAL_RANK): NCCL binds each rank to its own GPU.
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
}
