#pragma once

// Sizes for people to read, in the log and in the `autosnap` command's output.

#include <cstdint>
#include <string>

namespace autosnap {
namespace util {

/// "812 B", "14.2 kB", "3.1 MB", "2.40 GB".
std::string human_bytes(uint64_t bytes);

}  // namespace util
}  // namespace autosnap
