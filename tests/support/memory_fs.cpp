#include "support/memory_fs.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>

#include "autosnap/errors.h"

namespace autosnap {
namespace testing {

struct MemoryFileSystem::Node {
  bool directory = false;
  std::string data;                                // files
  size_t durable_size = 0;                         // bytes made durable by fsync
  std::map<std::string, NodePtr> entries;          // directories: now
  std::map<std::string, NodePtr> durable_entries;  // as of the last fsync
};

namespace {

std::vector<std::string> split(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(start, end - start);
    if (!part.empty() && part != ".") parts.push_back(part);
    start = end + 1;
  }
  return parts;
}

}  // namespace

class MemoryWritableFile final : public WritableFile {
 public:
  MemoryWritableFile(MemoryFileSystem& fs, std::shared_ptr<MemoryFileSystem::Node> node, std::string path)
      : fs_(fs), node_(std::move(node)), path_(std::move(path)) {}
  void append(const void* data, size_t size) override {
    std::lock_guard<std::mutex> lock(fs_.mutex_);
    fs_.begin_call("append " + path_);
    fs_.append(node_, path_, data, size);
  }
  void flush() override {}
  void sync() override {
    std::lock_guard<std::mutex> lock(fs_.mutex_);
    fs_.begin_call("fsync " + path_);
    node_->durable_size = node_->data.size();
  }
  void close() override {}
  const std::string& path() const override { return path_; }

 private:
  MemoryFileSystem& fs_;
  std::shared_ptr<MemoryFileSystem::Node> node_;
  std::string path_;
};

class MemoryReadableFile final : public ReadableFile {
 public:
  MemoryReadableFile(std::string contents, std::string path)
      : contents_(std::move(contents)), path_(std::move(path)) {}
  uint64_t size() const override { return contents_.size(); }
  void read_exact(uint64_t offset, void* buffer, size_t size) override {
    if (offset > contents_.size() || size > contents_.size() - offset) {
      throw IoError("read", path_, "unexpected end of file at offset " + std::to_string(offset));
    }
    std::memcpy(buffer, contents_.data() + offset, size);
  }
  const std::string& path() const override { return path_; }

 private:
  std::string contents_;  // a snapshot of the file when it was opened
  std::string path_;
};

class MemoryFileLock final : public FileLock {
 public:
  MemoryFileLock(MemoryFileSystem& fs, std::string path) : fs_(fs), path_(std::move(path)) {}
  ~MemoryFileLock() override {
    std::lock_guard<std::mutex> lock(fs_.mutex_);
    fs_.locks_.erase(path_);
  }
  void write_contents(const std::string& contents) override {
    std::lock_guard<std::mutex> lock(fs_.mutex_);
    if (auto node = fs_.find(path_)) node->data = contents;
  }

 private:
  MemoryFileSystem& fs_;
  std::string path_;
};

MemoryFileSystem::MemoryFileSystem() : root_(std::make_shared<Node>()) { root_->directory = true; }

void MemoryFileSystem::crash_at(int64_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  crash_at_ = calls_ + n;
}

void MemoryFileSystem::fail_at(int64_t n, int error_number) {
  std::lock_guard<std::mutex> lock(mutex_);
  fail_at_ = calls_ + n;
  fail_errno_ = error_number;
}

void MemoryFileSystem::short_write_at(int64_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  short_write_at_ = appends_ + n;
}

void MemoryFileSystem::set_capacity(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  capacity_ = bytes;
}

void MemoryFileSystem::fail_reads(int error_number) {
  std::lock_guard<std::mutex> lock(mutex_);
  read_errno_ = error_number;
}

void MemoryFileSystem::power_loss() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::function<void(Node&)> revert = [&](Node& node) {
    if (!node.directory) {
      node.data.resize(std::min(node.data.size(), node.durable_size));
      return;
    }
    node.entries = node.durable_entries;
    for (auto& [name, child] : node.entries) revert(*child);
  };
  revert(*root_);
  locks_.clear();
  crash_at_ = fail_at_ = short_write_at_ = 0;
  crashed_ = false;
}

void MemoryFileSystem::process_killed() {
  std::lock_guard<std::mutex> lock(mutex_);
  locks_.clear();
  crash_at_ = fail_at_ = short_write_at_ = 0;
  crashed_ = false;
}

uint64_t MemoryFileSystem::available_bytes(const std::string&) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (capacity_ == 0) return 1ull << 40;
  const uint64_t used = used_bytes();
  return capacity_ > used ? capacity_ - used : 0;
}

int64_t MemoryFileSystem::calls() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return calls_;
}

std::vector<std::string> MemoryFileSystem::call_log() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return log_;
}

bool MemoryFileSystem::crashed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return crashed_;
}

int64_t MemoryFileSystem::faults_injected() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return faults_;
}

void MemoryFileSystem::begin_call(const std::string& description) {
  if (crashed_) throw SimulatedCrash();
  ++calls_;
  log_.push_back(description);
  if (crash_at_ != 0 && calls_ >= crash_at_) {
    crashed_ = true;
    ++faults_;
    throw SimulatedCrash();
  }
  if (fail_at_ != 0 && calls_ == fail_at_) {
    ++faults_;
    throw IoError(description.substr(0, description.find(' ')), description.substr(description.find(' ') + 1),
                  fail_errno_);
  }
}

MemoryFileSystem::NodePtr MemoryFileSystem::find(const std::string& path) const {
  NodePtr node = root_;
  for (const auto& part : split(path)) {
    if (!node->directory) return nullptr;
    auto it = node->entries.find(part);
    if (it == node->entries.end()) return nullptr;
    node = it->second;
  }
  return node;
}

MemoryFileSystem::Location MemoryFileSystem::locate(const std::string& path, const char* operation) const {
  auto parts = split(path);
  if (parts.empty()) throw IoError(operation, path, EINVAL);
  std::string name = parts.back();
  parts.pop_back();
  NodePtr parent = root_;
  for (const auto& part : parts) {
    auto it = parent->entries.find(part);
    if (it == parent->entries.end()) throw IoError(operation, path, ENOENT);
    parent = it->second;
    if (!parent->directory) throw IoError(operation, path, ENOTDIR);
  }
  return {parent, name};
}

uint64_t MemoryFileSystem::used_bytes() const {
  uint64_t total = 0;
  std::function<void(const Node&)> walk = [&](const Node& node) {
    total += node.data.size();
    for (const auto& [name, child] : node.entries) walk(*child);
  };
  walk(*root_);
  return total;
}

void MemoryFileSystem::append(const NodePtr& file, const std::string& path, const void* data, size_t size) {
  ++appends_;
  const char* bytes = static_cast<const char*>(data);
  if (short_write_at_ != 0 && appends_ == short_write_at_) {
    ++faults_;
    file->data.append(bytes, size / 2);
    throw IoError("write", path, EIO);
  }
  if (capacity_ != 0) {
    const uint64_t used = used_bytes();
    if (used + size > capacity_) {
      ++faults_;
      file->data.append(bytes, static_cast<size_t>(capacity_ > used ? capacity_ - used : 0));
      throw IoError("write", path, ENOSPC);
    }
  }
  file->data.append(bytes, size);
}

std::unique_ptr<WritableFile> MemoryFileSystem::create_exclusive(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  begin_call("create " + path);
  auto where = locate(path, "create");
  if (where.parent->entries.count(where.name)) throw IoError("create", path, EEXIST);
  auto node = std::make_shared<Node>();
  where.parent->entries[where.name] = node;
  return std::make_unique<MemoryWritableFile>(*this, node, path);
}

std::unique_ptr<WritableFile> MemoryFileSystem::open_for_append(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  begin_call("open-append " + path);
  auto where = locate(path, "open for append");
  auto& slot = where.parent->entries[where.name];
  if (!slot) slot = std::make_shared<Node>();
  if (slot->directory) throw IoError("open for append", path, EISDIR);
  return std::make_unique<MemoryWritableFile>(*this, slot, path);
}

std::unique_ptr<ReadableFile> MemoryFileSystem::open_for_reading(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (crashed_) throw SimulatedCrash();
  if (read_errno_ != 0) {
    ++faults_;
    throw IoError("open", path, read_errno_);
  }
  auto node = find(path);
  if (!node) throw IoError("open", path, ENOENT);
  if (node->directory) throw IoError("open", path, EISDIR);
  return std::make_unique<MemoryReadableFile>(node->data, path);
}

void MemoryFileSystem::rename(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> lock(mutex_);
  begin_call("rename " + from + " -> " + to);
  auto source = locate(from, "rename");
  auto target = locate(to, "rename");
  auto it = source.parent->entries.find(source.name);
  if (it == source.parent->entries.end()) throw IoError("rename", from, ENOENT);
  auto existing = target.parent->entries.find(target.name);
  if (existing != target.parent->entries.end() && existing->second->directory &&
      !existing->second->entries.empty()) {
    throw IoError("rename", from + "' to '" + to, ENOTEMPTY);
  }
  NodePtr node = it->second;
  source.parent->entries.erase(it);
  target.parent->entries[target.name] = node;
}

void MemoryFileSystem::remove_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  begin_call("remove " + path);
  auto where = locate(path, "remove");
  auto it = where.parent->entries.find(where.name);
  if (it == where.parent->entries.end()) throw IoError("remove", path, ENOENT);
  if (it->second->directory) throw IoError("remove", path, EISDIR);
  where.parent->entries.erase(it);
}

void MemoryFileSystem::remove_directory(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  begin_call("rmdir " + path);
  auto where = locate(path, "remove directory");
  auto it = where.parent->entries.find(where.name);
  if (it == where.parent->entries.end()) throw IoError("remove directory", path, ENOENT);
  if (!it->second->directory) throw IoError("remove directory", path, ENOTDIR);
  if (!it->second->entries.empty()) throw IoError("remove directory", path, ENOTEMPTY);
  where.parent->entries.erase(it);
}

void MemoryFileSystem::create_directory(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  begin_call("mkdir " + path);
  auto where = locate(path, "create directory");
  auto it = where.parent->entries.find(where.name);
  if (it != where.parent->entries.end()) {
    if (it->second->directory) return;
    throw IoError("create directory", path, EEXIST);
  }
  auto node = std::make_shared<Node>();
  node->directory = true;
  where.parent->entries[where.name] = node;
}

std::vector<DirEntry> MemoryFileSystem::list_directory(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (crashed_) throw SimulatedCrash();
  auto node = find(path);
  if (!node) throw IoError("list directory", path, ENOENT);
  if (!node->directory) throw IoError("list directory", path, ENOTDIR);
  std::vector<DirEntry> out;
  for (const auto& [name, child] : node->entries) out.push_back({name, child->directory});
  return out;
}

FileStatus MemoryFileSystem::status(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (crashed_) throw SimulatedCrash();
  auto node = find(path);
  if (!node) return {};
  return {true, node->directory, node->directory ? 0 : node->data.size()};
}

void MemoryFileSystem::sync_directory(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  begin_call("fsync-dir " + path);
  auto node = find(path);
  if (!node || !node->directory) throw IoError("fsync directory", path, ENOENT);
  node->durable_entries = node->entries;
}

void MemoryFileSystem::sync_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  begin_call("fsync " + path);
  auto node = find(path);
  if (!node) throw IoError("fsync", path, ENOENT);
  node->durable_size = node->data.size();
}

std::unique_ptr<FileLock> MemoryFileSystem::try_lock(const std::string& path, bool create) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (crashed_) throw SimulatedCrash();
  if (!find(path)) {
    if (!create) return nullptr;
    begin_call("create " + path);
    auto where = locate(path, "open lock file");
    where.parent->entries[where.name] = std::make_shared<Node>();
  }
  if (!locks_.insert(path).second) return nullptr;
  return std::make_unique<MemoryFileLock>(*this, path);
}

std::string MemoryFileSystem::contents(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto node = find(path);
  if (!node) throw IoError("read", path, ENOENT);
  return node->data;
}

void MemoryFileSystem::overwrite(const std::string& path, const std::string& contents) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto node = find(path);
  if (!node) throw IoError("write", path, ENOENT);
  node->data = contents;
  node->durable_size = contents.size();
}

}  // namespace testing
}  // namespace autosnap
