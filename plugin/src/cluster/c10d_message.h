#pragma once

// LibTorch's errors (c10::Error) carry a C++ stack trace in what(): autosnap's
// messages quote only the first part, the one a user can act on.

#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace autosnap {
namespace cluster {

inline std::string message_of(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return c10->what_without_backtrace();
  return e.what();
}

}  // namespace cluster
}  // namespace autosnap
