#pragma once

// The in-memory tier's files on this node: one snapshot store per rank in a
// tmpfs (config memory.directory, /dev/shm by default), so a snapshot taken
// there outlives the process that took it and a restart on the same node
// resumes from it without reading the snapshot directory.
//
//   /dev/shm/autosnap-<uid>/<job>-<hash of the snapshot directory>/
//       owner.json             the snapshot directory and job it belongs to
//       rank-00000/            a SnapshotStore (LOCK held by the rank's process)
//           step-000000001201/ manifest.yaml + rank-00000.pt: a one-rank
//                              snapshot labelled with the rank and world size
//           replicas/rank-00002/  a store of another node's rank's snapshots
//                              (memory.replicas, memory_replicas.h)
//
// The same commit protocol as the disk (tmp dir, manifest written last,
// rename) without fsyncs: a process killed mid-copy leaves the previous
// snapshot or the new one, never a torn one, and checksums still decide.
// Only the tier of this job (its Slurm job id, or "local") and this snapshot
// directory is ever restored; another job's leftovers that no process holds
// are removed at start, unless they hold a step newer than their own
// snapshot directory has (then they are kept and named in a warning).
//
// Thread-safety: the store is written by the memory pipeline's strand and
// read by the restore on the training thread, never at the same time.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "autosnap/config.h"
#include "autosnap/fs.h"
#include "autosnap/store.h"

namespace autosnap {
namespace daemon {

class MemoryTier {
 public:
  /// Opens this rank's store of the tier (creating it), after removing
  /// other jobs' leftovers. Throws (IoError, LockedError) when it cannot:
  /// the caller runs without the tier.
  MemoryTier(const Config& config, FileSystem& fs, int rank, const std::string& job_id);
  MemoryTier(const MemoryTier&) = delete;
  MemoryTier& operator=(const MemoryTier&) = delete;

  SnapshotStore& store() { return *store_; }
  /// This rank's store: ROOT/<job key>/rank-NNNNN.
  const std::string& path() const { return store_->directory(); }
  /// Inside a rank's store: the replicas it holds of other ranks (memory_replicas.h).
  static constexpr const char* kReplicasDirectory = "replicas";
  /// Steps of this rank's memory snapshots that pass the cheap checks, ascending.
  std::vector<int64_t> steps() const { return store_->valid_steps(); }
  /// The labels of this rank's memory snapshots: the job's, plus which rank
  /// of how many took it; a restore uses only those of its own rank and world size.
  static std::vector<std::pair<std::string, std::string>> labels(
      std::vector<std::pair<std::string, std::string>> job_labels, int rank, int world_size);
  static bool taken_by(const Manifest& manifest, int rank, int world_size);
  /// Removes a memory snapshot found damaged (memory is too scarce to quarantine it).
  void discard(int64_t step);
  /// After a restore of `step` (-1: none): later memory snapshots belong to
  /// a run that will be done again, and would collide with its snapshots.
  void drop_newer_than(int64_t step);
  /// Removes `store`'s snapshots of steps after `step` (the tier's own, or the replicas it holds).
  static void drop_newer_than(SnapshotStore& store, int64_t step);
  /// "rank-00002": a rank's directory in the tier (its store, or the replicas of it another rank holds).
  static std::string rank_directory(int rank);
  /// This rank also holds the replicas of `ranks` other ranks (memory_replicas.h).
  void set_replicas_held(int ranks) { replicas_held_ = ranks; }
  /// Empty when keep_last + 1 snapshots of `bytes` (and a staging copy), and
  /// as many of each rank whose replicas it holds, fit the size limit and the
  /// file system's free space; else why not.
  std::string check_room(uint64_t bytes) const;
  /// A normal exit: removes this rank's store (and the job's directory once
  /// every rank's is gone).
  void remove_all();

  /// DIRECTORY/autosnap-<uid>: every job's tier on this node.
  static std::string root(const std::string& memory_directory);
  /// "<job>-<16 hex digits of the snapshot directory's absolute path>".
  static std::string job_key(const std::string& snapshot_directory, const std::string& job_id);

 private:
  const MemoryConfig config_;
  FileSystem& fs_;
  std::string job_path_;
  std::unique_ptr<SnapshotStore> store_;
  int replicas_held_ = 0;
};

/// One job's tier found on this node (for `autosnap clean` and the start's cleanup).
struct MemoryLeftover {
  std::string path;                    ///< ROOT/<job key>
  std::string directory;               ///< the snapshot directory it belongs to ("" when unknown)
  std::string job;                     ///< its job id ("" when unknown)
  bool held = false;                   ///< a live process holds one of its ranks
  std::vector<int64_t> steps;          ///< its memory snapshots, any rank, ascending
  std::optional<int64_t> disk_newest;  ///< the newest committed step its snapshot directory names
  uint64_t bytes = 0;
  /// Its newest memory snapshot, any rank.
  std::optional<int64_t> newest() const {
    if (steps.empty()) return std::nullopt;
    return steps.back();
  }
  /// Nobody holds it and its snapshot directory has every step it has.
  bool removable() const { return !held && newest().value_or(-1) <= disk_newest.value_or(-1); }
};

/// Every job's tier under `memory_directory` on this node.
std::vector<MemoryLeftover> find_memory_leftovers(FileSystem& fs, const std::string& memory_directory);
/// Those of them that belong to `snapshot_directory` (any job).
std::vector<MemoryLeftover> memory_tiers_of(FileSystem& fs, const std::string& memory_directory,
                                            const std::string& snapshot_directory);

}  // namespace daemon
}  // namespace autosnap
