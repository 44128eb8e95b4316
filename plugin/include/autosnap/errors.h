#pragma once

/// Exception types thrown at autosnap's public boundary.
///
/// Every error names the thing it is about (a path, a key, a step) and what was
/// expected, so that a log line alone tells the user what to fix.

#include <stdexcept>
#include <string>

#include "autosnap/export.h"

namespace autosnap {

/// Base class of every autosnap error.
class AUTOSNAP_API Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// A file-system call failed. Carries the operation, the path and errno.
class AUTOSNAP_API IoError : public Error {
 public:
  IoError(const std::string& operation, const std::string& path, int error_number);
  /// For failures that have no errno (e.g. a short read at end of file).
  IoError(const std::string& operation, const std::string& path, const std::string& detail);

  const std::string& operation() const noexcept { return operation_; }
  const std::string& path() const noexcept { return path_; }
  /// errno of the failed call, or 0 when the failure had none.
  int error_number() const noexcept { return error_number_; }

 private:
  std::string operation_;
  std::string path_;
  int error_number_ = 0;
};

/// A file on disk is damaged: bad checksum, truncated, malformed zip or
/// pickle, content it cannot hold. Restores quarantine such a snapshot.
class AUTOSNAP_API CorruptSnapshot : public Error {
 public:
  explicit CorruptSnapshot(const std::string& what) : Error(what) {}
};

/// A snapshot written in an on-disk format version this build cannot read
/// (e.g. by a newer autosnap). Not damaged, so not a CorruptSnapshot: it is
/// skipped, never quarantined.
class AUTOSNAP_API UnsupportedFormat : public Error {
 public:
  explicit UnsupportedFormat(const std::string& what) : Error(what) {}
};

/// Saved state does not fit the live objects (missing/unexpected keys, shape
/// or dtype mismatch, wrong optimizer layout).
class AUTOSNAP_API StateMismatch : public Error {
 public:
  explicit StateMismatch(const std::string& what) : Error(what) {}
};

/// A bad configuration file or value; the message names file:line:column.
class AUTOSNAP_API ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& what) : Error(what) {}
};

/// The ranks of a job cannot agree any more: a rank died, hung past
/// distributed.timeout_seconds, lost its network, or could not rejoin
/// autosnap's coordination group. The message names the rank(s) and node(s).
class AUTOSNAP_API CoordinationError : public Error {
 public:
  explicit CoordinationError(const std::string& what) : Error(what) {}
};

/// The snapshot directory is locked by another writer.
class AUTOSNAP_API LockedError : public Error {
 public:
  explicit LockedError(const std::string& what) : Error(what) {}
};

}  // namespace autosnap
