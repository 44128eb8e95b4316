#pragma once

// Restoring: finds the newest snapshot every rank has valid (checksums
// verified, damaged ones quarantined), reads this rank's shard and installs
// it into everything tracked — only when all of it fits. Crash-loop
// protection (restore_attempts.h) quarantines a snapshot whose restore keeps
// crashing the process.
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
  void quarantine(const SnapshotInfo& info, const std::string& problem);
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
