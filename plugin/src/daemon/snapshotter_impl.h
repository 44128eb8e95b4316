#pragma once

// What a Snapshotter forwards to. This base class is the disabled
// snapshotter: every hook (Callback's) does nothing, nothing is tracked or
// restored.
// The active one (snapshotter.cpp) overrides all of it.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "autosnap/snapshotter.h"
#include "daemon/coordinator.h"
#include "daemon/tracked.h"

namespace autosnap {

class Snapshotter::Impl : public Callback {
 public:
  virtual bool enabled() const { return false; }
  virtual const Config& config() const {
    static const Config none;
    return none;
  }
  /// `make` builds the tracked wrapper; a disabled snapshotter never calls it.
  using MakeTracked = std::function<std::unique_ptr<daemon::TrackedState>()>;
  virtual void track(const std::string& name, const MakeTracked& make) {}

  // The hooks are Callback's (callback.h), doing nothing here.
  virtual void snapshot_now(const std::string& reason) {}
  virtual void request_snapshot(const std::string& reason) {}
  virtual std::optional<ResumePoint> restore_latest() { return std::nullopt; }

  virtual void wait_until_finished() {}
  virtual void check_for_errors() {}
  virtual std::vector<int64_t> all_steps() const { return {}; }
  virtual bool should_stop() const { return false; }
  virtual int exit_code() const { return 0; }
  virtual void close() {}
  virtual SnapshotStats stats() const { return {}; }
};

namespace daemon {

using SnapshotterImpl = Snapshotter::Impl;

/// What the cluster layer tells the daemon about the job it runs in.
struct JobContext {
  std::unique_ptr<Coordinator> coordinator;  ///< null: one process
  /// Recorded in every manifest and `started` event ("slurm_job_id", "slurm_restart_count").
  std::vector<std::pair<std::string, std::string>> labels;
  /// Rank 0, at close(), after a stop asked for with signals.after_stop: requeue.
  std::function<void()> requeue;
};

/// The real thing: opens config.directory (rank 0 locks it), starts the
/// background threads.
std::unique_ptr<SnapshotterImpl> make_active_snapshotter(Config config, FileSystem& fs, JobContext job = {});

}  // namespace daemon
}  // namespace autosnap
