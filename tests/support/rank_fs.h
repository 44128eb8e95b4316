#pragma once

// One rank's view of a shared file system (a MemoryFileSystem playing the
// cluster's shared disk), for crash tests of a multi-rank commit: it counts
// this rank's own mutating calls and, from a chosen one on, every call of
// this rank throws SimulatedCrash — that rank's process died there, the
// other ranks and the disk go on.

#include <atomic>

#include "support/memory_fs.h"

namespace autosnap {
namespace testing {

class RankFileSystem final : public FileSystem {
 public:
  explicit RankFileSystem(MemoryFileSystem& shared) : shared_(shared) {}
  /// The n-th mutating call of this rank from now on (1-based) and every later call throw.
  void crash_at(int64_t n) { crash_at_ = calls_ + n; }
  int64_t calls() const { return calls_; }
  bool crashed() const { return crashed_; }
  /// The shared file system's call count when this rank crashed (-1: it did not).
  int64_t crashed_at_shared_call() const { return crashed_at_shared_; }

  /// Counts a mutating call; throws once this rank is dead.
  void mutating_call();
  void any_call() const {
    if (crashed_) throw SimulatedCrash();
  }

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

 private:
  MemoryFileSystem& shared_;
  std::atomic<int64_t> calls_{0};
  std::atomic<int64_t> crash_at_{0};
  std::atomic<bool> crashed_{false};
  std::atomic<int64_t> crashed_at_shared_{-1};
};

}  // namespace testing
}  // namespace autosnap
