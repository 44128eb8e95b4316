#include "fs/atomic_file.h"

#include <unistd.h>

#include <cerrno>

#include "autosnap/errors.h"
#include "fs/unique_suffix.h"

namespace autosnap {
namespace {

constexpr const char* kTempMarker = ".autosnap-tmp-";

}  // namespace

bool is_temp_file_name(const std::string& name) {
  return !name.empty() && name[0] == '.' && name.find(kTempMarker) != std::string::npos;
}

size_t remove_stale_temp_files(FileSystem& fs, const std::string& directory) {
  size_t removed = 0;
  for (const auto& entry : fs.list_directory(directory)) {
    if (entry.is_directory || !is_temp_file_name(entry.name)) continue;
    const std::string path = join_path(directory, entry.name);
    // A live writer holds the flock for as long as its temp file exists.
    auto lock = fs.try_lock(path, /*create=*/false);
    if (!lock) continue;
    try {
      fs.remove_file(path);
      ++removed;
    } catch (const IoError& e) {
      if (e.error_number() != ENOENT) throw;  // renamed away meanwhile: not stale
    }
  }
  return removed;
}

void write_file_atomically(FileSystem& fs, const std::string& path,
                           const std::function<void(WritableFile&)>& write, bool durable) {
  const std::string directory = parent_path(path);
  remove_stale_temp_files(fs, directory);

  std::string temp;
  std::unique_ptr<WritableFile> file;
  std::unique_ptr<FileLock> lock;
  for (int attempt = 0;; ++attempt) {
    temp = join_path(directory, "." + base_name(path) + kTempMarker + unique_suffix());
    file = fs.create_exclusive(temp);
    lock = fs.try_lock(temp, /*create=*/false);
    // Between create and lock a concurrent cleaner may have taken our file
    // for a stale one; then it is gone (or going) and we start over.
    if (lock && fs.status(temp).exists) break;
    lock.reset();
    file.reset();
    if (attempt >= 8)
      throw IoError("create temp file for", path, "lost the race against concurrent cleaners");
  }

  try {
    write(*file);
    if (durable) file->sync();
    file->close();
    fs.rename(temp, path);
  } catch (...) {
    file.reset();
    try {
      fs.remove_file(temp);
    } catch (...) {
      // Best effort: the next write into this directory removes it.
    }
    throw;
  }
  if (durable) fs.sync_directory(directory);
}

}  // namespace autosnap
