#include "support/rank_fs.h"

namespace autosnap {
namespace testing {
namespace {

// Appends and fsyncs of a file count as this rank's calls too.
class RankWritableFile final : public WritableFile {
 public:
  RankWritableFile(RankFileSystem& fs, std::unique_ptr<WritableFile> file)
      : fs_(fs), file_(std::move(file)) {}
  void append(const void* data, size_t size) override {
    fs_.mutating_call();
    file_->append(data, size);
  }
  void expect_size(uint64_t bytes) override { file_->expect_size(bytes); }
  void flush() override {
    fs_.any_call();
    file_->flush();
  }
  void sync() override {
    fs_.mutating_call();
    file_->sync();
  }
  void close() override {
    fs_.any_call();
    file_->close();
  }
  const std::string& path() const override { return file_->path(); }

 private:
  RankFileSystem& fs_;
  std::unique_ptr<WritableFile> file_;
};

}  // namespace

void RankFileSystem::mutating_call() {
  any_call();
  if (++calls_ == crash_at_) {
    crashed_at_shared_ = shared_.calls();
    crashed_ = true;
    throw SimulatedCrash();
  }
}

std::unique_ptr<WritableFile> RankFileSystem::create_exclusive(const std::string& path) {
  mutating_call();
  return std::make_unique<RankWritableFile>(*this, shared_.create_exclusive(path));
}
std::unique_ptr<WritableFile> RankFileSystem::open_for_append(const std::string& path) {
  mutating_call();
  return std::make_unique<RankWritableFile>(*this, shared_.open_for_append(path));
}
std::unique_ptr<ReadableFile> RankFileSystem::open_for_reading(const std::string& path) {
  any_call();
  return shared_.open_for_reading(path);
}
void RankFileSystem::rename(const std::string& from, const std::string& to) {
  mutating_call();
  shared_.rename(from, to);
}
void RankFileSystem::remove_file(const std::string& path) {
  mutating_call();
  shared_.remove_file(path);
}
void RankFileSystem::remove_directory(const std::string& path) {
  mutating_call();
  shared_.remove_directory(path);
}
void RankFileSystem::create_directory(const std::string& path) {
  mutating_call();
  shared_.create_directory(path);
}
std::vector<DirEntry> RankFileSystem::list_directory(const std::string& path) {
  any_call();
  return shared_.list_directory(path);
}
FileStatus RankFileSystem::status(const std::string& path) {
  any_call();
  return shared_.status(path);
}
void RankFileSystem::sync_directory(const std::string& path) {
  mutating_call();
  shared_.sync_directory(path);
}
void RankFileSystem::sync_file(const std::string& path) {
  mutating_call();
  shared_.sync_file(path);
}
std::unique_ptr<FileLock> RankFileSystem::try_lock(const std::string& path, bool create) {
  mutating_call();
  return shared_.try_lock(path, create);
}

}  // namespace testing
}  // namespace autosnap
