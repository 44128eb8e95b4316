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
// Thread-safety: training thread only.

#include <c10/core/Device.h>

#include <memory>
#include <optional>

#include "autosnap/callback.h"
#include "autosnap/config.h"
#include "autosnap/store.h"
#include "daemon/coordinator.h"
#include "daemon/event_log.h"
#include "daemon/restore_attempts.h"
#include "daemon/tracked_set.h"

namespace autosnap {
namespace daemon {

class Restorer {
 public:
  Restorer(const Config& config, FileSystem& fs, SnapshotStore& store, EventLog& events,
           Coordinator& coordinator, const TrackedSet& tracked, c10::Device device);

  /// Restores the newest valid snapshot; nullopt when there is none.
  std::optional<ResumePoint> restore_latest();
  /// The first step after a restore completed: that restore did not crash us.
  void step_completed();

 private:
  struct Attempt;
  // `picked`: the handle rank 0 chose step by (others open the step themselves).
  Attempt prepare(int64_t step, const std::optional<Snapshot>& picked, RestoreAttempts& attempts);
  void quarantine(int64_t step, const std::string& problem);
  void report_quarantined(const SnapshotInfo& info, const std::string& problem);
  void forget(RestoreAttempts& attempts);

  const Config& config_;
  FileSystem& fs_;
  SnapshotStore& store_;
  EventLog& events_;
  Coordinator& coordinator_;
  const TrackedSet& tracked_;
  c10::Device device_;
  std::unique_ptr<RestoreAttempts> unconfirmed_;  // a restore not yet followed by a completed step
};

}  // namespace daemon
}  // namespace autosnap
