#pragma once

// The message of an exception held in an exception_ptr (background failures
// are stored that way and told later).

#include <exception>
#include <string>

namespace autosnap {
namespace util {

inline std::string exception_text(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace util
}  // namespace autosnap
