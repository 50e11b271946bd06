// Stands in for graph.cpp when this libtorch came without CUDA headers: every graph
// operation reports that and what to do.
#include "../bridge.h"

#include <cstdint>

namespace {
int missing(char* err, int64_t err_len) {
  conveyor::put_error(
      err, static_cast<size_t>(err_len),
      "this conveyor was built against a libtorch without CUDA headers; rebuild it with the "
      "CUDA torch wheel (scripts/setup.sh) to use CUDA graphs and --check-syncs");
  return -1;
}
}  // namespace

extern "C" {
int conveyor_graph_new(int, void** out, char* err, int64_t err_len) {
  *out = nullptr;
  return missing(err, err_len);
}
int conveyor_graph_op(void*, int, char* err, int64_t err_len) { return missing(err, err_len); }
void conveyor_graph_free(void*) {}
int conveyor_sync_check(int, char* err, int64_t err_len) { return missing(err, err_len); }
int conveyor_cuda_device_name(int, char*, int64_t, char* err, int64_t err_len) {
  return missing(err, err_len);
}
}
