// conveyor's own declaration (see model/src/dist/gloo_decls/README.md): ProcessGroupGloo.hpp
// holds contexts behind pointers and names one method in an inline virtual that libtorch
// itself emits; conveyor never calls it.
#pragma once
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo
