#pragma once

// An in-memory FileSystem that models durability the way POSIX promises it,
// for crash testing (like SQLite's simulated power loss and LevelDB's
// fault-injection Env):
//
//  * a file's bytes are durable up to its last fsync;
//  * a directory's entries (creates, renames, removes) are durable as of its
//    last fsync;
//  * power_loss() forgets everything that was not durable, then "reboots"
//    (drops locks, clears faults).
//
// Faults: crash (this and every later call throws SimulatedCrash), fail one
// call with an errno, short writes, and a capacity that yields ENOSPC.
// Every mutating call is numbered from 1, so a test can crash at each one.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "autosnap/fs.h"

namespace autosnap {
namespace testing {

/// Thrown by every call from the crash point on: the process "died" there.
struct SimulatedCrash : std::exception {
  const char* what() const noexcept override { return "simulated crash"; }
};

class MemoryFileSystem final : public FileSystem {
 public:
  MemoryFileSystem();

  // ---- faults ----
  /// The n-th mutating call (1-based, counted from now) and all later ones throw SimulatedCrash.
  void crash_at(int64_t n);
  /// The n-th mutating call (counted from now) fails once with IoError(error_number).
  void fail_at(int64_t n, int error_number);
  /// The n-th append (counted from now) writes half its bytes, then fails with EIO.
  void short_write_at(int64_t n);
  /// Total file bytes allowed; beyond it appends write what fits and fail with ENOSPC. 0: unlimited.
  void set_capacity(uint64_t bytes);
  /// When non-zero, opening or reading any file fails with this errno (a dying disk).
  void fail_reads(int error_number);
  /// Forgets everything not durable, releases locks, clears faults.
  void power_loss();
  /// The process died, the machine did not: releases locks, clears faults, keeps every byte.
  void process_killed();

  /// Mutating calls since construction, and each call's description ("rename a -> b").
  int64_t calls() const;
  std::vector<std::string> call_log() const;
  bool crashed() const;
  int64_t faults_injected() const;

  // ---- FileSystem ----
  std::unique_ptr<WritableFile> create_exclusive(const std::string& path) override;
  std::unique_ptr<WritableFile> open_for_append(const std::string& path) override;
  std::unique_ptr<ReadableFile> open_for_reading(const std::string& path) override;
  void rename(const std::string& from, const std::string& to) override;
  void remove_file(const std::string& path) override;
  void remove_directory(const std::string& path) override;
  void create_directory(const std::string& path) override;
  std::vector<DirEntry> list_directory(const std::string& path) override;
  FileStatus status(const std::string& path) override;
  void sync_directory(const std::string& path) override;
  void sync_file(const std::string& path) override;
  std::unique_ptr<FileLock> try_lock(const std::string& path, bool create) override;
  /// The capacity left (set_capacity), else 1 TiB.
  uint64_t available_bytes(const std::string& path) override;

  // ---- for tests that damage files ----
  std::string contents(const std::string& path);
  void overwrite(const std::string& path, const std::string& contents);

  struct Node;

 private:
  friend class MemoryWritableFile;
  friend class MemoryFileLock;
  using NodePtr = std::shared_ptr<Node>;
  struct Location {
    NodePtr parent;
    std::string name;
  };

  // Counts a mutating call and applies faults; the caller holds mutex_.
  void begin_call(const std::string& description);
  NodePtr find(const std::string& path) const;
  Location locate(const std::string& path, const char* operation) const;
  void append(const NodePtr& file, const std::string& path, const void* data, size_t size);
  uint64_t used_bytes() const;

  mutable std::mutex mutex_;
  NodePtr root_;
  int64_t calls_ = 0;
  std::vector<std::string> log_;
  int64_t crash_at_ = 0, fail_at_ = 0, short_write_at_ = 0;
  int fail_errno_ = 0;
  int read_errno_ = 0;
  int64_t appends_ = 0;
  bool crashed_ = false;
  uint64_t capacity_ = 0;
  int64_t faults_ = 0;
  std::set<std::string> locks_;
};

}  // namespace testing
}  // namespace autosnap
