#include "daemon/memory_tier.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "autosnap/errors.h"
#include "format/checksum.h"
#include "fs/atomic_file.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {

using util::log;
namespace {

constexpr const char* kOwnerFile = "owner.json";
constexpr const char* kRankPrefix = "rank-";

std::string absolute(const std::string& path) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) return path;
  std::string result(resolved);
  ::free(resolved);
  return result;
}

// The newest committed step a directory's entry names say it has (no manifest is read).
std::optional<int64_t> newest_named_step(FileSystem& fs, const std::string& directory) {
  if (directory.empty() || !fs.status(directory).is_directory) return std::nullopt;
  const auto steps = SnapshotStore::open_read_only(directory, fs)->committed_steps();
  if (steps.empty()) return std::nullopt;
  return steps.back();
}

uint64_t tree_bytes(FileSystem& fs, const std::string& path) {
  const auto st = fs.status(path);
  if (!st.is_directory) return st.size;
  uint64_t total = 0;
  for (const auto& entry : fs.list_directory(path)) total += tree_bytes(fs, join_path(path, entry.name));
  return total;
}

// A rank's store whose LOCK nobody holds belongs to no live process. The
// probe holds the lock for an instant; a rank starting at that moment retries.
bool held_by_a_process(FileSystem& fs, const std::string& rank_path) {
  const std::string lock = join_path(rank_path, "LOCK");
  if (!fs.status(lock).exists) return false;
  return fs.try_lock(lock, /*create=*/false) == nullptr;
}

MemoryLeftover inspect_leftover(FileSystem& fs, const std::string& path) {
  MemoryLeftover leftover;
  leftover.path = path;
  try {
    const auto owner = nlohmann::json::parse(fs.read_small_file(join_path(path, kOwnerFile), 1 << 16));
    leftover.directory = owner.value("directory", "");
    leftover.job = owner.value("job", "");
  } catch (const std::exception&) {
    // No readable owner: its snapshot directory is unknown, so it counts as holding newer steps.
  }
  for (const auto& entry : fs.list_directory(path)) {
    if (!entry.is_directory || entry.name.rfind(kRankPrefix, 0) != 0) continue;
    const std::string rank_path = join_path(path, entry.name);
    leftover.held = leftover.held || held_by_a_process(fs, rank_path);
    for (int64_t step : SnapshotStore::open_read_only(rank_path, fs)->committed_steps())
      leftover.steps.push_back(step);
    // The replicas it holds of other nodes' ranks (memory_replicas.h) count as its snapshots too.
    const std::string replicas = join_path(rank_path, MemoryTier::kReplicasDirectory);
    if (!fs.status(replicas).is_directory) continue;
    for (const auto& held : fs.list_directory(replicas)) {
      if (!held.is_directory) continue;
      for (int64_t step :
           SnapshotStore::open_read_only(join_path(replicas, held.name), fs)->committed_steps())
        leftover.steps.push_back(step);
    }
  }
  std::sort(leftover.steps.begin(), leftover.steps.end());
  leftover.steps.erase(std::unique(leftover.steps.begin(), leftover.steps.end()), leftover.steps.end());
  leftover.disk_newest = newest_named_step(fs, leftover.directory);
  leftover.bytes = tree_bytes(fs, path);
  return leftover;
}

void write_owner(FileSystem& fs, const std::string& job_path, const std::string& directory,
                 const std::string& job_id) {
  const std::string text = nlohmann::json{{"directory", directory}, {"job", job_id}}.dump() + "\n";
  write_file_atomically(
      fs, join_path(job_path, kOwnerFile), [&](WritableFile& out) { out.append(text.data(), text.size()); },
      /*durable=*/false);
}

// Other jobs' tiers that nobody holds and whose snapshot directory has every step they have.
void remove_leftovers_of_other_jobs(FileSystem& fs, const std::string& memory_directory,
                                    const std::string& ours) {
  for (const auto& leftover : find_memory_leftovers(fs, memory_directory)) {
    if (leftover.path == ours || leftover.held) continue;
    if (leftover.removable()) {
      log()->info("removing leftover memory snapshots of job {} (snapshot directory {}): {}", leftover.job,
                  leftover.directory, util::human_bytes(leftover.bytes));
      try {
        remove_tree(fs, leftover.path);
      } catch (const IoError& e) {  // e.g. another rank of this job removing it at the same moment
        log()->debug("leftover {} not removed: {}", leftover.path, e.what());
      }
    } else {
      log()->warn(
          "kept leftover memory snapshots in {} (job {}, snapshot directory {}): they hold step {}, newer "
          "than that directory has; start that job again on this node to resume from it, or remove them with "
          "`autosnap clean --force`",
          leftover.path, leftover.job.empty() ? "unknown" : leftover.job,
          leftover.directory.empty() ? "unknown" : leftover.directory, *leftover.newest());
    }
  }
}

}  // namespace

std::string MemoryTier::root(const std::string& memory_directory) {
  return join_path(memory_directory, "autosnap-" + std::to_string(::getuid()));
}

std::string MemoryTier::job_key(const std::string& snapshot_directory, const std::string& job_id) {
  const std::string path = absolute(snapshot_directory);
  format::Xxh3Hasher hasher;
  hasher.update(path.data(), path.size());
  std::string job;
  for (char c : job_id) job += (std::isalnum(static_cast<unsigned char>(c)) || c == '_') ? c : '_';
  return job + "-" + format::to_hex(hasher.digest());
}

MemoryTier::MemoryTier(const Config& config, FileSystem& fs, int rank, const std::string& job_id)
    : config_(config.memory), fs_(fs) {
  const std::string root_path = root(config_.directory);
  job_path_ = join_path(root_path, job_key(config.directory, job_id));
  remove_leftovers_of_other_jobs(fs_, config_.directory, job_path_);
  create_directories(fs_, job_path_);
  write_owner(fs_, job_path_, absolute(config.directory), job_id);
  const std::string rank_path = join_path(job_path_, rank_directory(rank));
  // The same rank's last process may still be dying (its lock goes with it),
  // and another job's start may probe the lock for an instant.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (bool said = false;; said = true) {
    try {
      store_ = SnapshotStore::open_for_writing(rank_path, /*fsync=*/false, fs_);
      break;
    } catch (const LockedError& e) {
      if (std::chrono::steady_clock::now() > give_up) throw;
      if (!said) log()->info("waiting up to 10 s for the memory tier's lock: {}", e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

std::vector<std::pair<std::string, std::string>> MemoryTier::labels(
    std::vector<std::pair<std::string, std::string>> job_labels, int rank, int world_size) {
  job_labels.emplace_back("memory_tier_rank", std::to_string(rank));
  job_labels.emplace_back("memory_tier_world_size", std::to_string(world_size));
  return job_labels;
}

bool MemoryTier::taken_by(const Manifest& manifest, int rank, int world_size) {
  for (const auto& label : labels({}, rank, world_size)) {
    if (std::find(manifest.job.begin(), manifest.job.end(), label) == manifest.job.end()) return false;
  }
  return true;
}

void MemoryTier::discard(int64_t step) { remove_tree(fs_, store_->snapshot_path(step)); }

void MemoryTier::drop_newer_than(int64_t step) { drop_newer_than(*store_, step); }

void MemoryTier::drop_newer_than(SnapshotStore& store, int64_t step) {
  for (int64_t s : store.committed_steps())
    if (s > step) store.remove(s);
}

std::string MemoryTier::rank_directory(int rank) {
  char name[32];
  std::snprintf(name, sizeof(name), "%s%05d", kRankPrefix, rank);
  return name;
}

std::string MemoryTier::check_room(uint64_t bytes) const {
  const uint64_t copies = static_cast<uint64_t>(config_.keep_last) + 1;
  const uint64_t ranks = 1 + static_cast<uint64_t>(replicas_held_);
  const std::string held = replicas_held_ == 0 ? ""
                                               : " (for this rank and the " + std::to_string(replicas_held_) +
                                                     " whose replicas it holds)";
  const uint64_t needed = bytes * (copies * ranks + 1);  // and one staging copy in memory
  if (config_.size_limit > 0 && needed > config_.size_limit) {
    return "keep_last + 1 = " + std::to_string(copies) + " memory snapshots of " + util::human_bytes(bytes) +
           held + " and a staging copy need " + util::human_bytes(needed) +
           ", more than memory.size_limit (" + util::human_bytes(config_.size_limit) + ")";
  }
  const uint64_t in_use = tree_bytes(fs_, path());  // pruned as new ones commit
  const uint64_t available = fs_.available_bytes(path()) + in_use;
  if (bytes * copies * ranks > available) {
    return std::to_string(copies) + " memory snapshots of " + util::human_bytes(bytes) + held + " need " +
           util::human_bytes(bytes * copies * ranks) + " in " + config_.directory + ", which has " +
           util::human_bytes(available) + " free";
  }
  return "";
}

void MemoryTier::remove_all() {
  const std::string rank_path = path();
  store_.reset();  // releases the lock
  remove_tree(fs_, rank_path);
  bool other_ranks = false;
  for (const auto& entry : fs_.list_directory(job_path_))
    other_ranks = other_ranks || entry.name.rfind(kRankPrefix, 0) == 0;
  if (other_ranks) return;
  try {
    remove_tree(fs_, job_path_);
  } catch (const IoError&) {
    if (fs_.status(job_path_).exists) throw;  // else another rank removed it at the same moment
  }
}

std::vector<MemoryLeftover> find_memory_leftovers(FileSystem& fs, const std::string& memory_directory) {
  std::vector<MemoryLeftover> found;
  const std::string root_path = MemoryTier::root(memory_directory);
  if (!fs.status(root_path).is_directory) return found;
  for (const auto& entry : fs.list_directory(root_path)) {
    if (entry.is_directory) found.push_back(inspect_leftover(fs, join_path(root_path, entry.name)));
  }
  return found;
}

std::vector<MemoryLeftover> memory_tiers_of(FileSystem& fs, const std::string& memory_directory,
                                            const std::string& snapshot_directory) {
  std::vector<MemoryLeftover> tiers;
  const std::string wanted = absolute(snapshot_directory);
  for (auto& leftover : find_memory_leftovers(fs, memory_directory))
    if (leftover.directory == wanted) tiers.push_back(std::move(leftover));
  return tiers;
}

}  // namespace daemon
}  // namespace autosnap
