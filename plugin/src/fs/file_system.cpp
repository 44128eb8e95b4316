// FileSystem's default members and helpers built only on its interface, so they work (and fail)
// the same way under the fault-injecting test file systems.
#include <sys/statvfs.h>

#include <cerrno>

#include "autosnap/errors.h"
#include "autosnap/fs.h"

namespace autosnap {

std::string FileSystem::read_small_file(const std::string& path, size_t max_size) {
  auto file = open_for_reading(path);
  if (file->size() > max_size) {
    throw IoError("read", path,
                  "file is " + std::to_string(file->size()) + " bytes, more than the " +
                      std::to_string(max_size) + " bytes allowed");
  }
  std::string contents(static_cast<size_t>(file->size()), '\0');
  if (!contents.empty()) file->read_exact(0, contents.data(), contents.size());
  return contents;
}

uint64_t FileSystem::available_bytes(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) throw IoError("statvfs", path, errno);
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

std::string join_path(const std::string& directory, const std::string& name) {
  if (directory.empty()) return name;
  if (directory.back() == '/') return directory + name;
  return directory + "/" + name;
}

std::string parent_path(const std::string& path) {
  auto end = path.find_last_not_of('/');
  if (end == std::string::npos) return "/";
  auto slash = path.rfind('/', end);
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_name(const std::string& path) {
  auto end = path.find_last_not_of('/');
  if (end == std::string::npos) return "/";
  auto slash = path.rfind('/', end);
  return path.substr(slash == std::string::npos ? 0 : slash + 1,
                     slash == std::string::npos ? end + 1 : end - slash);
}

void create_directories(FileSystem& fs, const std::string& path, bool durable) {
  auto st = fs.status(path);
  if (st.exists) {
    if (!st.is_directory) throw IoError("create directory", path, ENOTDIR);
    return;
  }
  auto parent = parent_path(path);
  if (parent != path && parent != "." && parent != "/") create_directories(fs, parent, durable);
  fs.create_directory(path);
  if (durable) fs.sync_directory(parent);
}

void remove_tree(FileSystem& fs, const std::string& path) {
  auto st = fs.status(path);
  if (!st.exists) return;
  if (!st.is_directory) {
    fs.remove_file(path);
    return;
  }
  for (const auto& entry : fs.list_directory(path)) {
    remove_tree(fs, join_path(path, entry.name));
  }
  fs.remove_directory(path);
}

}  // namespace autosnap
