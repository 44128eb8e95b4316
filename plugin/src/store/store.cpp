#include "autosnap/store.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <set>

#include "autosnap/errors.h"
#include "fs/unique_suffix.h"
#include "store/entry_name.h"
#include "util/log.h"

namespace autosnap {
namespace {

using store::EntryKind;
using store::kManifestName;
using store::parse_entry_name;

constexpr const char* kLockName = "LOCK";
constexpr size_t kMaxManifestSize = 16u << 20;

// A committed snapshot's files in its directory of the store.
class DirectorySource final : public SnapshotSource {
 public:
  DirectorySource(FileSystem& fs, std::string path) : fs_(fs), path_(std::move(path)) {}
  const std::string& location() const override { return path_; }
  std::unique_ptr<ReadableFile> open_file(const std::string& name) const override {
    return fs_.open_for_reading(join_path(path_, name));
  }

 private:
  FileSystem& fs_;
  std::string path_;
};

std::string host_name() {
  char name[256] = {0};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

}  // namespace

const char* to_string(SnapshotStatus status) {
  switch (status) {
    case SnapshotStatus::kValid: return "valid";
    case SnapshotStatus::kCorrupt: return "corrupt";
    case SnapshotStatus::kInProgress: return "in-progress";
    case SnapshotStatus::kQuarantined: return "quarantined";
    case SnapshotStatus::kUnsupported: return "unsupported";
    case SnapshotStatus::kUnreadable: return "unreadable";
  }
  return "unknown";
}

SnapshotStore::SnapshotStore(std::string directory, FileSystem& fs, bool fsync,
                             std::unique_ptr<FileLock> lock, bool writes_shards)
    : directory_(std::move(directory)),
      fs_(fs),
      fsync_(fsync),
      lock_(std::move(lock)),
      writes_shards_(writes_shards) {}

SnapshotStore::~SnapshotStore() = default;

std::unique_ptr<SnapshotStore> SnapshotStore::open_for_writing(const std::string& directory, bool fsync,
                                                               FileSystem& fs) {
  create_directories(fs, directory, fsync);
  const std::string lock_path = join_path(directory, kLockName);
  auto lock = fs.try_lock(lock_path, /*create=*/true);
  if (!lock) {
    std::string holder;
    try {
      holder = fs.read_small_file(lock_path, 4096);
    } catch (const Error&) {
    }
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    for (auto& c : holder) {
      if (c == '\n') c = ' ';
    }
    throw LockedError("snapshot directory '" + directory + "' is locked by another writer (" +
                      (holder.empty() ? std::string("holder unknown") : holder) +
                      "); only one process may write snapshots into a directory");
  }
  try {
    lock->write_contents("pid " + std::to_string(::getpid()) + " on host " + host_name() + "\n");
  } catch (const IoError& e) {
    // The flock is the lock; its text only names the holder in other writers' errors.
    util::log()->warn("cannot record this process in {}: {}", lock_path, e.what());
  }
  std::unique_ptr<SnapshotStore> store(new SnapshotStore(directory, fs, fsync, std::move(lock)));
  // We hold the lock, so every tmp dir belongs to a writer that died.
  bool removed = false;
  for (const auto& entry : fs.list_directory(directory)) {
    auto parsed = parse_entry_name(entry.name);
    if (entry.is_directory && parsed && parsed->kind == EntryKind::kTmp) {
      remove_tree(fs, join_path(directory, entry.name));
      removed = true;
    }
  }
  if (removed && fsync) fs.sync_directory(directory);
  return store;
}

std::unique_ptr<SnapshotStore> SnapshotStore::open_for_rank(const std::string& directory, bool fsync,
                                                            FileSystem& fs) {
  // Rank 0 creates the directory and holds its lock; this rank waits for neither.
  create_directories(fs, directory, fsync);
  return std::unique_ptr<SnapshotStore>(
      new SnapshotStore(directory, fs, fsync, nullptr, /*writes_shards=*/true));
}

std::unique_ptr<SnapshotStore> SnapshotStore::open_read_only(const std::string& directory, FileSystem& fs) {
  auto st = fs.status(directory);
  if (!st.exists) throw IoError("open snapshot directory", directory, ENOENT);
  if (!st.is_directory) throw IoError("open snapshot directory", directory, ENOTDIR);
  return std::unique_ptr<SnapshotStore>(new SnapshotStore(directory, fs, /*fsync=*/true, nullptr));
}

std::string SnapshotStore::directory_name(int64_t step) {
  if (step < 0 || step > 999999999999LL) throw Error("step " + std::to_string(step) + " is out of range");
  char text[32];
  std::snprintf(text, sizeof(text), "step-%012lld", static_cast<long long>(step));
  return text;
}

std::string SnapshotStore::snapshot_path(int64_t step) const {
  return join_path(directory_, directory_name(step));
}

void SnapshotStore::require_writable(const char* operation) const {
  if (!writable()) {
    throw Error(std::string("cannot ") + operation + " in '" + directory_ + "': the store is open read-only");
  }
}

SnapshotInfo SnapshotStore::inspect_committed(int64_t step, const std::string& name) const {
  SnapshotInfo info;
  info.step = step;
  info.name = name;
  info.path = join_path(directory_, name);
  const std::string manifest_path = join_path(info.path, kManifestName);
  try {
    if (!fs_.status(manifest_path).exists) throw CorruptSnapshot("manifest.yaml is missing");
    Manifest manifest = Manifest::parse(fs_.read_small_file(manifest_path, kMaxManifestSize), manifest_path);
    if (manifest.step != step) {
      throw CorruptSnapshot("manifest says step " + std::to_string(manifest.step) + " but the directory is " +
                            name);
    }
    info.manifest = manifest;
    for (const auto& file : manifest.files) {
      auto st = fs_.status(join_path(info.path, file.name));
      if (!st.exists || st.is_directory) throw CorruptSnapshot("file '" + file.name + "' is missing");
      if (st.size != file.size) {
        throw CorruptSnapshot("file '" + file.name + "' is " + std::to_string(st.size) +
                              " bytes, the manifest says " + std::to_string(file.size));
      }
    }
    info.status = SnapshotStatus::kValid;
  } catch (const CorruptSnapshot& e) {
    info.status = SnapshotStatus::kCorrupt;
    info.problem = e.what();
  } catch (const UnsupportedFormat& e) {
    info.status = SnapshotStatus::kUnsupported;
    info.problem = e.what();
  } catch (const IoError& e) {
    info.status = SnapshotStatus::kUnreadable;
    info.problem = e.what();
  }
  return info;
}

std::vector<SnapshotInfo> SnapshotStore::list() const {
  std::vector<SnapshotInfo> out;
  for (const auto& entry : fs_.list_directory(directory_)) {
    if (!entry.is_directory) continue;
    auto parsed = parse_entry_name(entry.name);
    if (!parsed) continue;
    if (parsed->kind == EntryKind::kCommitted) {
      out.push_back(inspect_committed(parsed->step, entry.name));
      continue;
    }
    SnapshotInfo info;
    info.step = parsed->step;
    info.name = entry.name;
    info.path = join_path(directory_, entry.name);
    info.status =
        parsed->kind == EntryKind::kTmp ? SnapshotStatus::kInProgress : SnapshotStatus::kQuarantined;
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(), [](const SnapshotInfo& a, const SnapshotInfo& b) {
    return a.step != b.step ? a.step < b.step : a.name < b.name;
  });
  return out;
}

SnapshotInfo SnapshotStore::inspect(int64_t step) const {
  return inspect_committed(step, directory_name(step));
}

std::vector<int64_t> SnapshotStore::valid_steps() const {
  std::vector<int64_t> steps;
  for (const auto& info : list()) {
    if (info.status == SnapshotStatus::kValid) steps.push_back(info.step);
  }
  return steps;
}

std::vector<int64_t> SnapshotStore::committed_steps() const {
  std::vector<int64_t> steps;
  for (const auto& entry : fs_.list_directory(directory_)) {
    const auto parsed = parse_entry_name(entry.name);
    if (entry.is_directory && parsed && parsed->kind == EntryKind::kCommitted) steps.push_back(parsed->step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

Snapshot SnapshotStore::open(int64_t step) const { return open(inspect(step)); }

Snapshot SnapshotStore::open(const SnapshotInfo& info) const {
  switch (info.status) {
    case SnapshotStatus::kValid:
      return Snapshot(*info.manifest, std::make_shared<DirectorySource>(fs_, info.path));
    case SnapshotStatus::kUnsupported: throw UnsupportedFormat(info.problem);
    case SnapshotStatus::kUnreadable: throw IoError("open snapshot", info.path, info.problem);
    default: throw CorruptSnapshot("snapshot '" + info.path + "' is not valid: " + info.problem);
  }
}

VerifyResult SnapshotStore::verify(const SnapshotInfo& info, const VerifyProgress& progress) const {
  if (info.status == SnapshotStatus::kValid) return open(info).verify(progress);
  VerifyResult failed;
  failed.problem = info.problem;
  failed.io_error = info.status == SnapshotStatus::kUnreadable;
  return failed;
}

std::optional<Snapshot> SnapshotStore::latest_valid(
    const std::function<void(const SnapshotInfo&, const std::string&)>& on_quarantine, const Check& check) {
  auto entries = list();
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->status == SnapshotStatus::kInProgress || it->status == SnapshotStatus::kQuarantined ||
        it->status == SnapshotStatus::kUnsupported) {
      continue;
    }
    if (it->status == SnapshotStatus::kUnreadable) {
      throw IoError("check snapshot", it->path, it->problem);
    }
    std::string problem = it->problem;
    if (it->status == SnapshotStatus::kValid) {
      Snapshot candidate = open(*it);
      const VerifyResult verified = check ? check(candidate) : candidate.verify();
      if (verified.ok) return candidate;
      if (verified.io_error) throw IoError("verify snapshot", it->path, verified.problem);
      problem = verified.problem;
    }
    if (writable()) {
      SnapshotInfo quarantined = *it;
      quarantined.name = quarantine(it->step);
      quarantined.path = join_path(directory_, quarantined.name);
      quarantined.status = SnapshotStatus::kQuarantined;
      quarantined.problem = problem;
      if (on_quarantine) on_quarantine(quarantined, problem);
    }
  }
  return std::nullopt;
}

void SnapshotStore::remove(int64_t step) {
  require_writable("remove a snapshot");
  const std::string path = snapshot_path(step);
  if (!fs_.status(path).is_directory) throw Error("snapshot " + directory_name(step) + " does not exist");
  // Rename first: a crash mid-delete then leaves a tmp dir (removed at next
  // open), never a half-deleted snapshot under its committed name.
  const std::string doomed = path + ".tmp-del-" + unique_suffix();
  fs_.rename(path, doomed);
  if (fsync_) fs_.sync_directory(directory_);
  remove_tree(fs_, doomed);
}

std::vector<int64_t> SnapshotStore::prune(const RetentionRule& rule, bool dry_run,
                                          std::optional<int64_t> below) {
  if (!dry_run) require_writable("prune snapshots");
  std::vector<int64_t> doomed;
  if (rule.keep_last == 0) return doomed;
  const std::vector<int64_t> steps = valid_steps();
  if (steps.empty()) return doomed;
  // keep_last >= 1 here, so the newest valid snapshot is always kept.
  std::set<int64_t> keep(steps.end() - std::min<size_t>(steps.size(), static_cast<size_t>(rule.keep_last)),
                         steps.end());
  for (int64_t step : steps) {
    if (keep.count(step) || (below && step >= *below)) continue;
    if (rule.keep_every_steps > 0 && step % rule.keep_every_steps == 0) continue;
    doomed.push_back(step);
  }
  if (dry_run || doomed.empty()) return doomed;
  // Only after a newer snapshot is durable may anything older go.
  if (!fsync_) sync_snapshot(steps.back());
  for (int64_t step : doomed) remove(step);
  return doomed;
}

void SnapshotStore::sync_snapshot(int64_t step) {
  SnapshotInfo info = inspect_committed(step, directory_name(step));
  if (!info.manifest) throw CorruptSnapshot("snapshot '" + info.path + "' is not valid: " + info.problem);
  for (const auto& file : info.manifest->files) fs_.sync_file(join_path(info.path, file.name));
  fs_.sync_file(join_path(info.path, kManifestName));
  fs_.sync_directory(info.path);
  fs_.sync_directory(directory_);
}

std::string SnapshotStore::quarantine(int64_t step) {
  require_writable("quarantine a snapshot");
  const std::string base = directory_name(step);
  for (int n = 1;; ++n) {
    const std::string name = base + ".corrupt-" + std::to_string(n);
    if (fs_.status(join_path(directory_, name)).exists) continue;
    fs_.rename(join_path(directory_, base), join_path(directory_, name));
    if (fsync_) fs_.sync_directory(directory_);
    return name;
  }
}

}  // namespace autosnap
