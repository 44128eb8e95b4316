#include "autosnap/store.h"

#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <set>

#include "autosnap/errors.h"
#include "autosnap/version.h"
#include "format/checksum.h"
#include "format/shard.h"
#include "fs/unique_suffix.h"
#include "store/snapshot_writer.h"
#include "util/log.h"

namespace autosnap {
namespace {

constexpr const char* kManifestName = "manifest.yaml";
constexpr const char* kLockName = "LOCK";
constexpr size_t kMaxManifestSize = 16u << 20;
constexpr int kStepDigits = 12;

enum class EntryKind { kCommitted, kTmp, kQuarantined };

struct ParsedName {
  int64_t step;
  EntryKind kind;
};

// "step-<12 digits>" with an optional ".tmp-<id>" or ".corrupt-<n>" suffix.
std::optional<ParsedName> parse_entry_name(const std::string& name) {
  if (name.size() < 5 + kStepDigits || name.compare(0, 5, "step-") != 0) return std::nullopt;
  int64_t step = 0;
  for (int i = 0; i < kStepDigits; ++i) {
    char c = name[5 + i];
    if (c < '0' || c > '9') return std::nullopt;
    step = step * 10 + (c - '0');
  }
  const std::string suffix = name.substr(5 + kStepDigits);
  if (suffix.empty()) return ParsedName{step, EntryKind::kCommitted};
  if (suffix.rfind(".tmp-", 0) == 0 && suffix.size() > 5) return ParsedName{step, EntryKind::kTmp};
  if (suffix.rfind(".corrupt-", 0) == 0 && suffix.size() > 9)
    return ParsedName{step, EntryKind::kQuarantined};
  return std::nullopt;
}

// Empty when `digest` is what the manifest lists for the file, else the problem.
std::string digest_mismatch(const ManifestFile& expected, const format::FileDigest& digest,
                            const std::string& label) {
  if (digest.size == expected.size && digest.xxh3 == expected.xxh3) return "";
  return "checksum mismatch in '" + label + "' (expected " + format::to_hex(expected.xxh3) + ", found " +
         format::to_hex(digest.xxh3) + ")";
}

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

VerifyResult SnapshotStore::verify(int64_t step, const std::function<void(uint64_t, uint64_t)>& progress,
                                   const std::string& read_later) const {
  VerifyResult result;
  SnapshotInfo info = inspect_committed(step, directory_name(step));
  result.manifest = info.manifest;
  if (info.status != SnapshotStatus::kValid) {
    result.problem = info.problem;
    result.io_error = info.status == SnapshotStatus::kUnreadable;
    return result;
  }
  const uint64_t total = info.manifest->total_bytes();
  for (const auto& file : info.manifest->files) {
    if (file.name == read_later) continue;  // its size was checked by inspect
    const std::string path = join_path(info.path, file.name);
    try {
      auto reader = fs_.open_for_reading(path);
      const uint64_t before = result.bytes_checked;
      auto digest = format::digest_file(*reader, [&](uint64_t done) {
        if (progress) progress(before + done, total);
      });
      result.bytes_checked += digest.size;
      result.problem = digest_mismatch(file, digest, file.name);
      if (!result.problem.empty()) return result;
    } catch (const IoError& e) {
      result.problem = e.what();
      result.io_error = true;
      return result;
    }
  }
  result.ok = true;
  return result;
}

std::optional<SnapshotInfo> SnapshotStore::latest_valid(
    const std::function<void(const SnapshotInfo&, const std::string&)>& on_quarantine,
    const std::string& read_later) {
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
      VerifyResult verified = verify(it->step, {}, read_later);
      if (verified.ok) return *it;
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

c10::IValue SnapshotStore::read_shard(int64_t step, int rank, const c10::Device& device, bool verify) const {
  SnapshotInfo info = inspect_committed(step, directory_name(step));
  if (info.status != SnapshotStatus::kValid) {
    throw CorruptSnapshot("snapshot '" + info.path + "' is not valid: " + info.problem);
  }
  const std::string name = shard_file_name(rank);
  const ManifestFile* expected = info.manifest->find(name);
  if (expected == nullptr) {
    throw CorruptSnapshot("snapshot '" + info.path + "' has no shard for rank " + std::to_string(rank) +
                          " (world size " + std::to_string(info.manifest->world_size) + ")");
  }
  const std::string path = join_path(info.path, name);
  auto file = fs_.open_for_reading(path);
  if (!verify) return format::read_shard(*file, device, /*check_crc=*/false);
  // Hashed while read, compared before the value is returned: a damaged shard
  // never reaches live objects. One that fails to parse is reported by its checksum.
  format::FileDigest digest;
  const auto check_digest = [&] {
    const std::string problem = digest_mismatch(*expected, digest, path);
    if (!problem.empty()) throw CorruptSnapshot(problem);
  };
  c10::IValue value;
  try {
    value = format::read_shard(*file, device, /*check_crc=*/false, &digest);
  } catch (const IoError&) {
    throw;
  } catch (...) {
    check_digest();
    throw;
  }
  check_digest();
  return value;
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

std::unique_ptr<SnapshotWriter> SnapshotWriter::begin(SnapshotStore& store, int64_t step) {
  store.require_writable("write a snapshot");
  const std::string final_name = SnapshotStore::directory_name(step);
  if (store.fs_.status(join_path(store.directory_, final_name)).exists) {
    throw Error("snapshot " + final_name + " already exists in '" + store.directory_ + "'");
  }
  const std::string tmp = join_path(store.directory_, final_name + ".tmp-" + unique_suffix());
  store.fs_.create_directory(tmp);
  return std::unique_ptr<SnapshotWriter>(new SnapshotWriter(store, step, tmp, /*owner=*/true));
}

std::unique_ptr<SnapshotWriter> SnapshotWriter::join(SnapshotStore& store, int64_t step,
                                                     const std::string& tmp_name) {
  if (!store.writable() && !store.writes_shards_) {
    throw Error("cannot write a shard in '" + store.directory_ + "': the store is open read-only");
  }
  const auto parsed = parse_entry_name(tmp_name);
  if (!parsed || parsed->kind != EntryKind::kTmp || parsed->step != step ||
      tmp_name.find('/') != std::string::npos) {
    throw Error("cannot join the snapshot of step " + std::to_string(step) + ": '" + tmp_name +
                "' is not its tmp dir name");
  }
  const std::string tmp = join_path(store.directory_, tmp_name);
  if (!store.fs_.status(tmp).is_directory) {
    throw IoError("join the snapshot of step " + std::to_string(step) + " in", tmp, ENOENT);
  }
  return std::unique_ptr<SnapshotWriter>(new SnapshotWriter(store, step, tmp, /*owner=*/false));
}

SnapshotWriter::SnapshotWriter(SnapshotStore& store, int64_t step, std::string tmp_path, bool owner)
    : store_(store), step_(step), tmp_path_(std::move(tmp_path)), owner_(owner) {}

std::string SnapshotWriter::tmp_name() const { return base_name(tmp_path_); }

SnapshotWriter::~SnapshotWriter() {
  if (!finished_) abort();
}

ManifestFile SnapshotWriter::write_shard(int rank, const c10::IValue& value) {
  return write_file(shard_file_name(rank), [&](WritableFile& out) { format::write_shard(value, out); });
}

ManifestFile SnapshotWriter::write_file(const std::string& name,
                                        const std::function<void(WritableFile&)>& write) {
  if (!is_valid_snapshot_file_name(name) || name == kManifestName) {
    throw Error("'" + name + "' is not a valid snapshot file name");
  }
  auto file = store_.fs_.create_exclusive(join_path(tmp_path_, name));
  format::HashingWritableFile hashing(*file);
  write(hashing);
  if (store_.fsync_) file->sync();
  file->close();
  const auto digest = hashing.digest();
  ManifestFile record{name, digest.size, digest.xxh3};
  files_.push_back(record);
  return record;
}

void SnapshotWriter::add_file(const ManifestFile& file) { files_.push_back(file); }

SnapshotInfo SnapshotWriter::commit(Manifest manifest) {
  if (!owner_)
    throw Error("snapshot step " + std::to_string(step_) + ": only the writer that began it commits");
  if (finished_) throw Error("snapshot step " + std::to_string(step_) + " was already committed or aborted");
  FileSystem& fs = store_.fs_;
  manifest.format_version = kSnapshotFormatVersion;
  manifest.step = step_;
  manifest.library_version = AUTOSNAP_VERSION;
  manifest.libtorch_version = TORCH_VERSION;
  if (manifest.time.empty()) manifest.time = utc_timestamp_now();
  manifest.files = files_;
  for (int rank = 0; rank < manifest.world_size; ++rank) {
    if (!manifest.find(shard_file_name(rank))) {
      throw Error("cannot commit step " + std::to_string(step_) + ": no shard for rank " +
                  std::to_string(rank));
    }
  }
  const std::string text = manifest.to_yaml();
  auto file = fs.create_exclusive(join_path(tmp_path_, kManifestName));
  file->append(text.data(), text.size());
  if (store_.fsync_) file->sync();
  file->close();
  if (store_.fsync_) fs.sync_directory(tmp_path_);
  const std::string final_path = store_.snapshot_path(step_);
  if (fs.status(final_path).exists) {
    throw Error("snapshot " + SnapshotStore::directory_name(step_) + " already exists in '" +
                store_.directory_ + "'");
  }
  fs.rename(tmp_path_, final_path);
  finished_ = true;
  if (store_.fsync_) fs.sync_directory(store_.directory_);
  return store_.inspect_committed(step_, SnapshotStore::directory_name(step_));
}

void SnapshotWriter::abort() noexcept {
  if (finished_) return;
  finished_ = true;
  if (!owner_) return;
  try {
    remove_tree(store_.fs_, tmp_path_);
  } catch (...) {
    // The tmp dir is removed when the store is next opened for writing.
  }
}

}  // namespace autosnap
