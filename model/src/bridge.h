// The C boundary every C++ bridge of conveyor-model shares: no C++ exception unwinds into
// Rust; its message goes into the caller's buffer `err` (`len` bytes, NUL-terminated) and
// the function returns its failure value.
#pragma once

#include <cstddef>
#include <cstring>
#include <exception>
#include <string>

namespace conveyor {

inline void put_error(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  std::strncpy(err, msg.c_str(), len - 1);
  err[len - 1] = '\0';
}

// Runs `f`, turning any C++ exception into `fail` with its message in `err`.
template <class R, class F>
R guarded(char* err, size_t len, R fail, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    put_error(err, len, e.what());
  } catch (...) {
    put_error(err, len, "unknown C++ exception");
  }
  return fail;
}

}  // namespace conveyor
