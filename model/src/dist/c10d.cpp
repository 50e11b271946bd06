// conveyor's bridge to PyTorch's distributed engine (c10d, inside libtorch): a TCPStore for
// the rendezvous (hosted by rank 0, or torchrun's agent store), a PrefixStore so conveyor's
// keys never clash with the launcher's (nor with an earlier attempt's after a torchrun
// restart: the prefix names the attempt), and a Gloo or NCCL process group. Every function
// catches every C++ exception and copies its message into `err`, so Rust sees plain codes.
#define USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "../bridge.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>

// From nccl.cpp (or its stand-in when the wheel's NCCL and CUDA headers are missing).
c10::intrusive_ptr<c10d::Backend> conveyor_make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
    std::chrono::milliseconds timeout, int device);

namespace {
using conveyor::guarded;
using conveyor::put_error;

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

// Gloo's device: one per interface named in GLOO_SOCKET_IFNAME (as PyTorch does), else the
// address the host name resolves to, falling back to loopback.
c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> gloo_options(
    std::chrono::milliseconds timeout) {
  const char* ifnames = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifnames == nullptr || *ifnames == '\0') {
    return c10d::ProcessGroupGloo::Options::create_default(timeout);
  }
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  std::stringstream names(ifnames);
  std::string name;
  while (std::getline(names, name, ',')) {
    if (!name.empty()) {
      opts->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForInterface(name, false));
    }
  }
  return opts;
}
}  // namespace

extern "C" {

// A process group, or null with the reason in `err`. `host_store`: this process runs the
// TCPStore server (rank 0 without an agent store). `backend`: 0 Gloo, 1 NCCL. `prefix`:
// the key prefix of this attempt in the store.
void* conveyor_dist_new(int backend, const char* host, int port, int host_store,
                        int rank, int world, int64_t timeout_ms, int device,
                        const char* prefix, char* err, size_t err_len) {
  return guarded<void*>(err, err_len, nullptr, [&]() -> void* {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = host_store != 0;
    if (so.isServer) so.numWorkers = static_cast<std::size_t>(world);
    so.waitWorkers = false;
    so.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> tcp =
        c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    c10::intrusive_ptr<c10d::Backend> pg;
    if (backend == 1) {
      pg = conveyor_make_nccl(store, rank, world, timeout, device);
    } else {
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world,
                                                        gloo_options(timeout));
    }
    return new Group{store, pg, timeout};
  });
}

void conveyor_dist_free(void* g) { delete static_cast<Group*>(g); }

// op: 0 all-reduce (sum) in place, 1 broadcast from `root`, 2 barrier (t unused), 3
// all-reduce queued on the device. 0-2 wait with the group's timeout: on the host, so a
// failure comes back here as an error naming it. 3 is for the training step's tensors,
// which stay on the GPU: an NCCL wait() without a timeout only orders the current stream
// after the collective (with a timeout, ProcessGroupNCCL blocks the host until the GPU has
// finished everything before it: a synchronisation per step); the group's watchdog still
// enforces the timeout. Gloo works on host tensors, where 3 is 0.
int conveyor_dist_collective(void* g, int op, at::Tensor* t, int root,
                             char* err, size_t err_len) {
  return guarded<int>(err, err_len, -1, [&] {
    auto* group = static_cast<Group*>(g);
    c10::intrusive_ptr<c10d::Work> work;
    if (op == 2) {
      work = group->backend->barrier(c10d::BarrierOptions());
    } else {
      std::vector<at::Tensor> tensors{*t};
      if (op == 0 || op == 3) {
        work = group->backend->allreduce(tensors, c10d::AllreduceOptions());
      } else {
        c10d::BroadcastOptions o;
        o.rootRank = root;
        work = group->backend->broadcast(tensors, o);
      }
    }
    if (op == 3 && t->is_cuda()) {
      work->wait();
    } else {
      work->wait(group->timeout);
    }
    return 0;
  });
}

// Store access for failure reports. set: 0 ok. get: the value's length (copied into `out`
// up to `out_len`), -2 when the key is absent (checked first, never waits), -1 on error.
int conveyor_dist_store_set(void* g, const char* key, const char* value,
                            char* err, size_t err_len) {
  return guarded<int>(err, err_len, -1, [&] {
    static_cast<Group*>(g)->store->set(std::string(key), std::string(value));
    return 0;
  });
}

int64_t conveyor_dist_store_get(void* g, const char* key, char* out, size_t out_len,
                                char* err, size_t err_len) {
  return guarded<int64_t>(err, err_len, -1, [&]() -> int64_t {
    auto& store = static_cast<Group*>(g)->store;
    if (!store->check({std::string(key)})) return -2;
    auto v = store->get(std::string(key));
    std::memcpy(out, v.data(), std::min(v.size(), out_len));
    return static_cast<int64_t>(v.size());
  });
}
}
