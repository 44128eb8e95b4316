#include "autosnap/errors.h"

#include <cstring>

namespace autosnap {

IoError::IoError(const std::string& operation, const std::string& path, int error_number)
    : Error(operation + " '" + path + "' failed: " + std::strerror(error_number)),
      operation_(operation),
      path_(path),
      error_number_(error_number) {}

IoError::IoError(const std::string& operation, const std::string& path, const std::string& detail)
    : Error(operation + " '" + path + "' failed: " + detail), operation_(operation), path_(path) {}

}  // namespace autosnap
