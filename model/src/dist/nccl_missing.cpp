// Stands in for nccl.cpp when this libtorch came without CUDA and NCCL headers.
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <stdexcept>

c10::intrusive_ptr<c10d::Backend> conveyor_make_nccl(
    const c10::intrusive_ptr<c10d::Store>&, int, int, std::chrono::milliseconds, int) {
  throw std::runtime_error(
      "this conveyor was built against a libtorch without NCCL headers; rebuild it with "
      "the CUDA torch wheel (scripts/setup.sh) to train on several GPUs");
}
