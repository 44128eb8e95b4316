// The default FileSystem: plain POSIX calls, retried on EINTR and short writes.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <memory>
#include <vector>

#include "autosnap/errors.h"
#include "autosnap/fs.h"
#include "fs/write_mode.h"

namespace autosnap {
namespace {

constexpr size_t kWriteBufferSize = 1 << 20;
constexpr size_t kDirectBlockSize = 4 << 20;
// One block is filled while the others are written: with two writes in flight
// the disk never waits for the next one to be submitted.
constexpr int kDirectBlocks = 3;
constexpr size_t kDirectAlignment = 4096;  // O_DIRECT writes whole blocks from aligned memory

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

class PosixWritableFile final : public WritableFile {
 public:
  // `may_write_direct`: a new file, written from offset 0.
  PosixWritableFile(std::string path, int fd, bool may_write_direct)
      : path_(std::move(path)), fd_(fd), may_write_direct_(may_write_direct), created_(Clock::now()) {
    buffer_.reserve(kWriteBufferSize);
  }
  ~PosixWritableFile() override {
    for (auto& write : in_flight_) write.wait();
    if (fd_ >= 0) ::close(fd_);
  }

  void append(const void* data, size_t size) override {
    check_open("write");
    const char* bytes = static_cast<const char*>(data);
    if (may_write_direct_ && buffer_.size() + size > kWriteBufferSize) start_direct();
    if (blocks_[0]) {
      append_direct(bytes, size);
      return;
    }
    if (buffer_.size() + size <= kWriteBufferSize) {
      buffer_.insert(buffer_.end(), bytes, bytes + size);
      return;
    }
    write_buffer();
    if (size >= kWriteBufferSize) {
      write_all(bytes, size);  // large records go straight to the kernel, no copy
    } else {
      buffer_.insert(buffer_.end(), bytes, bytes + size);
    }
  }

  void expect_size(uint64_t bytes) override { expected_size_ = bytes; }

  void flush() override {
    check_open("write");
    write_buffer();
  }

  void sync() override {
    flush();
    if (::fsync(fd_) != 0) throw IoError("fsync", path_, errno);
    if (!timed_) return;
    timed_ = false;
    write_mode_chooser().record(device_, path_, wrote_direct_, offset_,
                                std::chrono::duration<double>(Clock::now() - created_).count());
    // Its pages are clean now: dropped, a checkpoint written through the page
    // cache does not push the job's own data out of it either.
    if (!wrote_direct_) ::posix_fadvise(fd_, 0, 0, POSIX_FADV_DONTNEED);
  }

  void close() override {
    if (fd_ < 0) return;
    write_buffer();
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw IoError("close", path_, errno);
  }

  const std::string& path() const override { return path_; }

 private:
  void check_open(const char* operation) const {
    if (fd_ < 0) throw IoError(operation, path_, "file is already closed");
  }

  // A file bigger than the buffer may be written with O_DIRECT, from aligned
  // blocks, or through the page cache: the WriteModeChooser says which is
  // faster on its device for files of its expected size, and the time to its
  // fsync is told to it. Blocks are
  // written in the background while the caller fills the next one. Where
  // O_DIRECT is refused (tmpfs before Linux 6.6, some network file systems)
  // writes stay buffered.
  void start_direct() {
    may_write_direct_ = false;
    if (offset_ % kDirectAlignment != 0) return;  // flushed by hand: blocks no longer line up
    struct stat where;
    if (::fstat(fd_, &where) != 0) return;
    device_ = static_cast<uint64_t>(where.st_dev);
    timed_ = true;
    if (!write_mode_chooser().use_direct(device_, expected_size_)) return;
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags < 0 || ::fcntl(fd_, F_SETFL, flags | O_DIRECT) != 0) {
      write_mode_chooser().direct_refused(device_);
      timed_ = false;
      return;
    }
    direct_ = true;
    wrote_direct_ = true;
    for (auto& block : blocks_) {
      void* memory = nullptr;
      if (::posix_memalign(&memory, kDirectAlignment, kDirectBlockSize) != 0) {
        stop_direct();
        wrote_direct_ = timed_ = false;
        blocks_[0].reset();
        return;
      }
      block.reset(static_cast<char*>(memory));
    }
    std::memcpy(blocks_[0].get(), buffer_.data(), buffer_.size());
    direct_used_ = buffer_.size();
    buffer_.clear();
    buffer_.shrink_to_fit();
  }

  void stop_direct() {
    direct_ = false;
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags >= 0) ::fcntl(fd_, F_SETFL, flags & ~O_DIRECT);
  }

  void append_direct(const char* bytes, size_t size) {
    while (size > 0) {
      char* block = blocks_[filling_].get();
      const size_t n = std::min(size, kDirectBlockSize - direct_used_);
      std::memcpy(block + direct_used_, bytes, n);
      direct_used_ += n;
      bytes += n;
      size -= n;
      if (direct_used_ == kDirectBlockSize) {
        // The next block to fill is the oldest one submitted: wait for its write.
        if (in_flight_.size() == static_cast<size_t>(kDirectBlocks - 1)) wait_for_oldest_block();
        const uint64_t at = offset_;
        offset_ += kDirectBlockSize;
        in_flight_.push_back(
            std::async(std::launch::async, [this, block, at] { write_at(block, kDirectBlockSize, at); }));
        filling_ = (filling_ + 1) % kDirectBlocks;
        direct_used_ = 0;
      }
    }
  }

  // Rethrows the background write's error, if it failed.
  void wait_for_oldest_block() {
    auto write = std::move(in_flight_.front());
    in_flight_.pop_front();
    write.get();
  }

  void write_buffer() {
    if (blocks_[0]) {
      while (!in_flight_.empty()) wait_for_oldest_block();
      // Whole pages directly, the tail through the page cache; the file then stays buffered.
      const char* block = blocks_[filling_].get();
      const size_t whole = direct_used_ / kDirectAlignment * kDirectAlignment;
      write_all(block, whole);
      stop_direct();
      write_all(block + whole, direct_used_ - whole);
      for (auto& b : blocks_) b.reset();
      direct_used_ = 0;
      return;
    }
    if (buffer_.empty()) return;
    write_all(buffer_.data(), buffer_.size());
    buffer_.clear();
  }

  // pwrite at our own offset: short writes resume where they stopped. (On
  // Linux a file opened with O_APPEND appends whatever the offset.)
  void write_all(const char* data, size_t size) {
    write_at(data, size, offset_);
    offset_ += size;
  }

  void write_at(const char* data, size_t size, uint64_t offset) {
    while (size > 0) {
      ssize_t n = ::pwrite(fd_, data, size, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EINVAL && direct_) {  // e.g. a short write left an unaligned offset
          stop_direct();
          continue;
        }
        throw IoError("write", path_, errno);
      }
      if (n == 0) throw IoError("write", path_, ENOSPC);
      data += n;
      size -= static_cast<size_t>(n);
      offset += static_cast<uint64_t>(n);
    }
  }

  std::string path_;
  int fd_;
  uint64_t offset_ = 0;
  using Clock = std::chrono::steady_clock;
  std::vector<char> buffer_;
  bool may_write_direct_;
  std::atomic<bool> direct_{false};  // O_DIRECT is set on fd_
  bool wrote_direct_ = false;        // its big blocks went with O_DIRECT
  bool timed_ = false;               // a big new file: its time to the fsync is told to the chooser
  uint64_t device_ = 0;
  uint64_t expected_size_ = 0;  // 0: not said
  Clock::time_point created_;
  std::unique_ptr<char, FreeDeleter> blocks_[kDirectBlocks];
  int filling_ = 0;
  size_t direct_used_ = 0;                   // of blocks_[filling_]
  std::deque<std::future<void>> in_flight_;  // writing the blocks submitted before, oldest first
};

class PosixReadableFile final : public ReadableFile {
 public:
  PosixReadableFile(std::string path, int fd, uint64_t size) : path_(std::move(path)), fd_(fd), size_(size) {}
  ~PosixReadableFile() override { ::close(fd_); }

  uint64_t size() const override { return size_; }

  void read_exact(uint64_t offset, void* buffer, size_t size) override {
    char* out = static_cast<char*>(buffer);
    const uint64_t start = offset;
    const size_t requested = size;
    while (size > 0) {
      ssize_t n = ::pread(fd_, out, size, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw IoError("read", path_, errno);
      }
      if (n == 0) {
        throw IoError("read", path_, "unexpected end of file at offset " + std::to_string(offset));
      }
      out += n;
      offset += static_cast<uint64_t>(n);
      size -= static_cast<size_t>(n);
    }
    // Big reads leave the page cache as they came: the next read reuses those pages
    // instead of fresh memory, and a load does not push the job's own data out.
    if (requested >= kDropCacheAfter)
      ::posix_fadvise(fd_, static_cast<off_t>(start), requested, POSIX_FADV_DONTNEED);
  }

  const std::string& path() const override { return path_; }

 private:
  static constexpr size_t kDropCacheAfter = 1 << 20;
  std::string path_;
  int fd_;
  uint64_t size_;
};

class PosixFileLock final : public FileLock {
 public:
  PosixFileLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixFileLock() override { ::close(fd_); }  // closing the fd releases the flock

  void write_contents(const std::string& contents) override {
    if (::ftruncate(fd_, 0) != 0) throw IoError("truncate", path_, errno);
    size_t done = 0;
    while (done < contents.size()) {
      ssize_t n = ::pwrite(fd_, contents.data() + done, contents.size() - done, static_cast<off_t>(done));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw IoError("write", path_, errno);
      }
      done += static_cast<size_t>(n);
    }
  }

 private:
  std::string path_;
  int fd_;
};

int open_retrying(const std::string& path, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

class PosixFileSystem final : public FileSystem {
 public:
  std::unique_ptr<WritableFile> create_exclusive(const std::string& path) override {
    int fd = open_retrying(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) throw IoError("create", path, errno);
    return std::make_unique<PosixWritableFile>(path, fd, /*may_write_direct=*/true);
  }

  std::unique_ptr<WritableFile> open_for_append(const std::string& path) override {
    int fd = open_retrying(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) throw IoError("open for append", path, errno);
    return std::make_unique<PosixWritableFile>(path, fd, /*may_write_direct=*/false);
  }

  std::unique_ptr<ReadableFile> open_for_reading(const std::string& path) override {
    int fd = open_retrying(path, O_RDONLY);
    if (fd < 0) throw IoError("open", path, errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      int saved = errno;
      ::close(fd);
      throw IoError("stat", path, saved);
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd);
      throw IoError("open", path, EISDIR);
    }
    return std::make_unique<PosixReadableFile>(path, fd, static_cast<uint64_t>(st.st_size));
  }

  void rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      throw IoError("rename", from + "' to '" + to, errno);
    }
  }

  void remove_file(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) throw IoError("remove", path, errno);
  }

  void remove_directory(const std::string& path) override {
    if (::rmdir(path.c_str()) != 0) throw IoError("remove directory", path, errno);
  }

  void create_directory(const std::string& path) override {
    if (::mkdir(path.c_str(), 0755) == 0) return;
    int saved = errno;
    struct stat st {};
    if (saved == EEXIST && ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return;
    throw IoError("create directory", path, saved);
  }

  std::vector<DirEntry> list_directory(const std::string& path) override {
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) throw IoError("list directory", path, errno);
    std::vector<DirEntry> entries;
    errno = 0;
    while (struct dirent* entry = ::readdir(dir)) {
      std::string name = entry->d_name;
      if (name == "." || name == "..") continue;
      bool is_dir = entry->d_type == DT_DIR;
      if (entry->d_type == DT_UNKNOWN || entry->d_type == DT_LNK) {
        struct stat st {};
        is_dir = ::stat(join_path(path, name).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
      }
      entries.push_back({std::move(name), is_dir});
    }
    int saved = errno;
    ::closedir(dir);
    if (saved != 0) throw IoError("list directory", path, saved);
    return entries;
  }

  FileStatus status(const std::string& path) override {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return {};
    return {true, S_ISDIR(st.st_mode), static_cast<uint64_t>(st.st_size)};
  }

  void sync_directory(const std::string& path) override {
    int fd = open_retrying(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) throw IoError("open directory", path, errno);
    int rc = ::fsync(fd);
    int saved = errno;
    ::close(fd);
    // Some file systems do not support fsync on directories; that is not a failure.
    if (rc != 0 && saved != EINVAL && saved != ENOTSUP) throw IoError("fsync directory", path, saved);
  }

  void sync_file(const std::string& path) override {
    int fd = open_retrying(path, O_RDONLY);
    if (fd < 0) throw IoError("open", path, errno);
    int rc = ::fsync(fd);
    int saved = errno;
    ::close(fd);
    if (rc != 0) throw IoError("fsync", path, saved);
  }

  std::unique_ptr<FileLock> try_lock(const std::string& path, bool create) override {
    int fd = open_retrying(path, O_RDWR | (create ? O_CREAT : 0), 0644);
    if (fd < 0) {
      if (errno == ENOENT && !create) return nullptr;
      throw IoError("open lock file", path, errno);
    }
    int rc;
    do {
      rc = ::flock(fd, LOCK_EX | LOCK_NB);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      int saved = errno;
      ::close(fd);
      if (saved == EWOULDBLOCK) return nullptr;
      throw IoError("lock", path, saved);
    }
    return std::make_unique<PosixFileLock>(path, fd);
  }
};

}  // namespace

FileSystem& default_file_system() {
  static PosixFileSystem instance;
  return instance;
}

}  // namespace autosnap
