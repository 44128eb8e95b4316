#pragma once

/// The file-system layer: every file-system call autosnap makes goes through
/// `FileSystem`, so tests can wrap it to inject faults (failed fsync, short
/// writes, ENOSPC, simulated power loss). Errors are `IoError`s that carry the
/// operation, the path and the errno text.
///
/// Thread-safety: a `FileSystem` may be used from several threads at once;
/// a single `WritableFile` / `ReadableFile` may not.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autosnap/export.h"

namespace autosnap {

/// A file being written sequentially. Short writes are retried until every
/// byte is written or an error is thrown.
class AUTOSNAP_API WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual void append(const void* data, size_t size) = 0;
  /// Says about how many bytes the file will hold, before the first append:
  /// the default file system chooses how to write a big file by its size.
  /// Wrappers pass it on; the default ignores it.
  virtual void expect_size(uint64_t bytes) { (void)bytes; }
  /// Hands buffered bytes to the operating system (no fsync).
  virtual void flush() = 0;
  /// Flushes buffered bytes and makes the file's data durable (fsync).
  virtual void sync() = 0;
  /// Flushes buffered bytes and closes the file. Idempotent.
  virtual void close() = 0;
  virtual const std::string& path() const = 0;
};

/// A file read at arbitrary offsets.
class AUTOSNAP_API ReadableFile {
 public:
  virtual ~ReadableFile() = default;
  /// Size of the file when it was opened.
  virtual uint64_t size() const = 0;
  /// Reads exactly `size` bytes at `offset`; a short read throws IoError.
  virtual void read_exact(uint64_t offset, void* buffer, size_t size) = 0;
  virtual const std::string& path() const = 0;
};

/// An exclusive advisory lock (flock), released when destroyed.
class AUTOSNAP_API FileLock {
 public:
  virtual ~FileLock() = default;
  /// Replaces the locked file's contents (e.g. with the holder's pid).
  virtual void write_contents(const std::string& contents) = 0;
};

struct DirEntry {
  std::string name;
  bool is_directory = false;
};

struct FileStatus {
  bool exists = false;
  bool is_directory = false;
  uint64_t size = 0;
};

class AUTOSNAP_API FileSystem {
 public:
  virtual ~FileSystem() = default;

  /// Creates a new file (O_CREAT | O_EXCL); throws IoError if it exists.
  virtual std::unique_ptr<WritableFile> create_exclusive(const std::string& path) = 0;
  /// Opens a file for appending, creating it if missing (logs).
  virtual std::unique_ptr<WritableFile> open_for_append(const std::string& path) = 0;
  virtual std::unique_ptr<ReadableFile> open_for_reading(const std::string& path) = 0;
  /// Atomically replaces `to` with `from` (POSIX rename semantics).
  virtual void rename(const std::string& from, const std::string& to) = 0;
  virtual void remove_file(const std::string& path) = 0;
  /// Removes an empty directory.
  virtual void remove_directory(const std::string& path) = 0;
  /// Creates one directory; succeeds if it already exists as a directory.
  virtual void create_directory(const std::string& path) = 0;
  /// Entries of a directory, without "." and "..", in no particular order.
  virtual std::vector<DirEntry> list_directory(const std::string& path) = 0;
  /// Never throws for a missing path: returns `exists == false`.
  virtual FileStatus status(const std::string& path) = 0;
  /// Makes the directory's entries (creates, renames, removes) durable.
  virtual void sync_directory(const std::string& path) = 0;
  /// Makes an existing file's data durable (fsync).
  virtual void sync_file(const std::string& path) = 0;
  /// Takes an exclusive lock on `path` without blocking. Returns nullptr when
  /// someone else holds it, or when the file is missing and `create` is false.
  virtual std::unique_ptr<FileLock> try_lock(const std::string& path, bool create) = 0;
  /// Reads a whole small file (manifests, lock files). Throws if larger than `max_size`.
  virtual std::string read_small_file(const std::string& path, size_t max_size);
  /// Bytes an unprivileged writer may still use on the file system holding
  /// `path` (statvfs; tests override it to pretend a full one).
  virtual uint64_t available_bytes(const std::string& path);
};

/// The process-wide POSIX implementation.
AUTOSNAP_API FileSystem& default_file_system();

/// How the default file system writes big new files (over 1 MiB): kAuto times
/// each device's first ones of each size class (32-128 MiB, 128-512 MiB, ...)
/// both ways, O_DIRECT and through the page cache (fsync included), and uses
/// the faster from then on, trying the other every 16 files. Process-wide; a
/// Snapshotter sets it from flush.direct_io.
enum class DirectIo { kAuto, kAlways, kNever };
AUTOSNAP_API void set_direct_io(DirectIo mode);

/// Creates `path` and its missing parents. With `durable`, each new
/// directory's entry is fsynced in its parent, so it survives a power loss.
AUTOSNAP_API void create_directories(FileSystem& fs, const std::string& path, bool durable = false);

/// Removes a file or a directory tree. Missing paths are not an error.
AUTOSNAP_API void remove_tree(FileSystem& fs, const std::string& path);

/// Joins two path parts with exactly one '/'.
AUTOSNAP_API std::string join_path(const std::string& directory, const std::string& name);

/// The directory part of a path ("." for a bare file name).
AUTOSNAP_API std::string parent_path(const std::string& path);

/// The last component of a path.
AUTOSNAP_API std::string base_name(const std::string& path);

}  // namespace autosnap
