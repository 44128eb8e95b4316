#pragma once

// Restoring: rank 0 picks the newest snapshot whose every file verifies
// (quarantining the ones that don't); every rank reads and verifies its own
// shard and checks it against what it tracks; only when every rank can,
// every rank installs it. A rank's corrupt shard quarantines the snapshot for
// all and they try the next older one; an error on any rank is an error on
// all. Crash-loop protection (restore_attempts.h) quarantines a snapshot
// whose restore keeps crashing a process. A snapshot of another world size
// is an error, unless distributed.replicated: then every rank restores rank
// 0's shard, with its own random state when the snapshot has its shard.
//
// With the memory tier, each rank first says which memory snapshots it holds
// (of this job's world size); when the newest step every rank holds is at
// least as new as the newest the disk names, every rank restores its own
// memory copy and nothing is read from the snapshot directory. A damaged
// memory copy is removed by its rank (a warning names it) and the choice is
// made again: an older step every rank holds, or the disk. With replicas
// (memory_replicas.h), a step counts as held by a rank that lacks it when
// another rank holds its replica; that replica is sent to it before anyone
// prepares. A failed or damaged transfer makes every rank choose again
// without replicas.
//
// Thread-safety: training thread only.

#include <c10/core/Device.h>

#include <memory>
#include <optional>

#include "autosnap/callback.h"
#include "autosnap/config.h"
#include "autosnap/store.h"
#include "daemon/agreement.h"
#include "daemon/coordinator.h"
#include "daemon/event_log.h"
#include "daemon/memory_replicas.h"
#include "daemon/memory_tier.h"
#include "daemon/restore_attempts.h"
#include "daemon/tracked_set.h"

namespace autosnap {
namespace daemon {

class Restorer {
 public:
  /// `memory`: this rank's memory tier, or null; `replicas`: its replicas, or null.
  Restorer(const Config& config, FileSystem& fs, SnapshotStore& store, EventLog& events,
           Coordinator& coordinator, const TrackedSet& tracked, c10::Device device,
           MemoryTier* memory = nullptr, MemoryReplicas* replicas = nullptr);

  /// Restores the newest valid snapshot; nullopt when there is none.
  std::optional<ResumePoint> restore_latest();
  /// The first step after a restore completed: that restore did not crash us.
  void step_completed();
  /// The last restore came from the memory tier and the disk has no snapshot of its step.
  bool restored_newer_than_disk() const { return restored_newer_than_disk_; }

 private:
  struct Attempt;
  // Round 1 on rank 0: the step to resume and its tier, from every rank's memory steps.
  Verdict pick(const std::vector<RankReport>& reports, std::optional<Snapshot>& picked);
  RankReport memory_held();
  // `picked`: the handle rank 0 chose step by (others open the step themselves).
  Attempt prepare(const Verdict& chosen, const std::optional<Snapshot>& picked, RestoreAttempts& attempts);
  void quarantine(int64_t step, const std::string& problem);
  void discard_memory_copy(int64_t step, const std::string& problem);
  void report_quarantined(const SnapshotInfo& info, const std::string& problem);
  void forget(RestoreAttempts& attempts);

  const Config& config_;
  FileSystem& fs_;
  SnapshotStore& store_;
  EventLog& events_;
  Coordinator& coordinator_;
  const TrackedSet& tracked_;
  c10::Device device_;
  MemoryTier* memory_;
  MemoryReplicas* replicas_;                      // null after a failed fetch: choose without them
  std::unique_ptr<RestoreAttempts> unconfirmed_;  // a restore not yet followed by a completed step
  bool restored_newer_than_disk_ = false;
};

}  // namespace daemon
}  // namespace autosnap
