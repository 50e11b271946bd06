// conveyor's own declaration (see model/src/dist/gloo_decls/README.md): ProcessGroupGloo.hpp only
// names these Gloo types behind pointers, so forward declarations suffice.
#pragma once
namespace gloo {
class Context;
namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo
