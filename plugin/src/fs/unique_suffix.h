#pragma once

// Names for temporary files and directories that no other writer picks:
// "<pid>-<16 hex digits>", random per call (also across fork()).

#include <string>

namespace autosnap {

std::string unique_suffix();

}  // namespace autosnap
