#pragma once

// A FileSystem wrapper for tests: slows writes down, fails chosen calls, and
// counts calls. It wraps the real POSIX file system.

#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "autosnap/errors.h"
#include "autosnap/fs.h"

namespace autosnap {
namespace testing {

class FaultInjectingFileSystem : public FileSystem {
 public:
  explicit FaultInjectingFileSystem(FileSystem& base = default_file_system()) : base_(base) {}

  /// Sleep this long on every append (to make flushes slow).
  std::atomic<int> append_delay_ms{0};
  /// The next append sleeps this long, once (a stalled disk, a paused node).
  std::atomic<int> stall_next_append_ms{0};
  /// When non-zero, every call that creates, writes, renames or syncs fails with this errno.
  std::atomic<int> fail_writes_errno{0};
  /// When set, only this operation fails ("write", "fsync", "rename", "create", "create directory", ...).
  std::atomic<const char*> fail_only{nullptr};
  std::atomic<int64_t> appends{0};
  /// When non-empty, faults hit only paths that start with it (set before use).
  std::string fail_under;
  /// When non-zero, what available_bytes() says (a nearly full file system).
  std::atomic<uint64_t> available{0};
  /// Files opened for reading whose path starts with `count_reads_under` (set before use).
  std::string count_reads_under;
  std::atomic<int64_t> reads_counted{0};

  std::unique_ptr<WritableFile> create_exclusive(const std::string& path) override {
    check("create", path);
    return std::make_unique<File>(*this, base_.create_exclusive(path));
  }
  std::unique_ptr<WritableFile> open_for_append(const std::string& path) override {
    return base_.open_for_append(path);  // the event log is not what these tests break
  }
  std::unique_ptr<ReadableFile> open_for_reading(const std::string& path) override {
    if (!count_reads_under.empty() && path.rfind(count_reads_under, 0) == 0) ++reads_counted;
    return base_.open_for_reading(path);
  }
  uint64_t available_bytes(const std::string& path) override {
    const uint64_t pretend = available.load();
    return pretend != 0 ? pretend : base_.available_bytes(path);
  }
  void rename(const std::string& from, const std::string& to) override {
    check("rename", from);
    base_.rename(from, to);
  }
  void remove_file(const std::string& path) override { base_.remove_file(path); }
  void remove_directory(const std::string& path) override { base_.remove_directory(path); }
  void create_directory(const std::string& path) override {
    check("create directory", path);
    base_.create_directory(path);
  }
  std::vector<DirEntry> list_directory(const std::string& path) override {
    return base_.list_directory(path);
  }
  FileStatus status(const std::string& path) override { return base_.status(path); }
  void sync_directory(const std::string& path) override {
    check("fsync directory", path);
    base_.sync_directory(path);
  }
  void sync_file(const std::string& path) override {
    check("fsync", path);
    base_.sync_file(path);
  }
  std::unique_ptr<FileLock> try_lock(const std::string& path, bool create) override {
    auto inner = base_.try_lock(path, create);
    if (!inner) return nullptr;
    return std::make_unique<Lock>(*this, std::move(inner), path);
  }

 private:
  void check(const char* operation, const std::string& path) {
    const char* only = fail_only.load();
    if (only && std::string(only) != operation) return;
    if (!fail_under.empty() && path.rfind(fail_under, 0) != 0) return;
    if (int e = fail_writes_errno.load()) throw IoError(operation, path, e);
  }

  class File : public WritableFile {
   public:
    File(FaultInjectingFileSystem& fs, std::unique_ptr<WritableFile> inner)
        : fs_(fs), inner_(std::move(inner)) {}
    void append(const void* data, size_t size) override {
      ++fs_.appends;  // attempted ones, failed ones included
      fs_.check("write", inner_->path());
      if (int ms = fs_.append_delay_ms.load()) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      if (int ms = fs_.stall_next_append_ms.exchange(0))
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      inner_->append(data, size);
    }
    void expect_size(uint64_t bytes) override { inner_->expect_size(bytes); }
    void flush() override { inner_->flush(); }
    void sync() override {
      fs_.check("fsync", inner_->path());
      inner_->sync();
    }
    void close() override { inner_->close(); }
    const std::string& path() const override { return inner_->path(); }

   private:
    FaultInjectingFileSystem& fs_;
    std::unique_ptr<WritableFile> inner_;
  };

  class Lock : public FileLock {
   public:
    Lock(FaultInjectingFileSystem& fs, std::unique_ptr<FileLock> inner, std::string path)
        : fs_(fs), inner_(std::move(inner)), path_(std::move(path)) {}
    void write_contents(const std::string& contents) override {
      fs_.check("write", path_);
      inner_->write_contents(contents);
    }

   private:
    FaultInjectingFileSystem& fs_;
    std::unique_ptr<FileLock> inner_;
    std::string path_;
  };

  FileSystem& base_;
};

}  // namespace testing
}  // namespace autosnap
