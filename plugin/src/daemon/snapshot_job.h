#pragma once

// One snapshot on its way from the training thread to disk.

#include <ATen/core/ivalue.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "daemon/loop_position.h"
#include "daemon/staging.h"

namespace autosnap {
namespace daemon {

using Clock = std::chrono::steady_clock;

inline double milliseconds_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

/// With flush.overlap the writer may only commit once the training thread
/// confirms that the deferred copies finished before optimizer.step() ran.
class CommitGate {
 public:
  /// `why`: the reason to discard, when not committing.
  void open(bool commit, std::string why = "") {
    std::lock_guard<std::mutex> lock(mutex_);
    if (decided_) return;
    decided_ = true;
    commit_ = commit;
    why_ = std::move(why);
    changed_.notify_all();
  }
  /// Blocks until decided; true: commit, false: discard (see why()).
  bool wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return decided_; });
    return commit_;
  }
  std::string why() {
    std::lock_guard<std::mutex> lock(mutex_);
    return why_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool decided_ = false;
  bool commit_ = false;
  std::string why_;
};

/// Automatic triggers may be skipped when busy (flush.when_busy: skip);
/// requested ones (command, signal, snapshot_now, train end) never are.
enum class Urgency { kMaySkip, kMustTake };

/// The outcome of a snapshot asked for from outside the training thread.
struct SnapshotOutcome {
  bool committed = false;
  int64_t step = 0;
  std::string path;
  std::string error;  ///< when not committed
  /// For requests: the last completed step when the request was queued (the
  /// snapshot is of the first step that ends after it, or of that step itself
  /// when training has ended).
  std::optional<int64_t> requested_after_step;
};
using OutcomeCallback = std::function<void(const SnapshotOutcome&)>;

struct SnapshotJob {
  int64_t step = 0;
  std::string reason;
  LoopPosition position;
  c10::IValue value;   ///< the shard dict: staged copies, or live tensors for a synchronous write
  uint64_t bytes = 0;  ///< tensor storage bytes
  int slot = -1;       ///< staging slot held until the job ends (-1: none)
  bool synchronous =
      false;  ///< written while the training thread waits (flush.mode sync, or too big to stage)
  std::shared_ptr<DeferredCopies> deferred;  ///< flush.overlap copies still to run
  std::shared_ptr<CommitGate> gate;          ///< flush.overlap only
  Clock::time_point started = Clock::now();
  std::atomic<double> stall_ms{0};  ///< training-thread time spent on this snapshot
};

}  // namespace daemon
}  // namespace autosnap
