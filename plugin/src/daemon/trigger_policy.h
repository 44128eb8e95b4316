#pragma once

// When to snapshot: after each step, what is due from the configured
// triggers (every_steps, every_seconds, max_overhead), from requests made on other threads
// (control socket, signals, request_snapshot) and whether a stop was asked.
// In a multi-rank job every rank must decide the same: each rank's wishes()
// are or-ed across the job and after_step() decides from the result, so a
// request or a stop on any rank, and rank 0's clock and overhead budget,
// decide for all.
//
// Thread-safety: request(), request_stop(), stopping() and
// last_completed_step() may be called from any thread; everything else from
// the training thread. One mutex guards the requests and the published step;
// nothing is called while it is held (callbacks run after it is released).

#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "autosnap/config.h"
#include "daemon/overhead_budget.h"
#include "daemon/snapshot_job.h"

namespace autosnap {
namespace daemon {

class TriggerPolicy {
 public:
  explicit TriggerPolicy(const TriggerConfig& triggers)
      : triggers_(triggers), budget_(triggers.max_overhead) {}

  /// What to snapshot at a step boundary; empty reason: nothing.
  struct Decision {
    Decision() = default;
    Decision(std::string why, Urgency how) : reason(std::move(why)), urgency(how) {}
    std::string reason;
    Urgency urgency = Urgency::kMaySkip;
    std::vector<OutcomeCallback> waiters;  ///< requesters to answer
    bool stop = false;                     ///< a stop was asked: take it, then should_stop()
  };

  /// Any thread: a snapshot at the next step boundary; `done` (optional) is
  /// told the outcome, from a background thread.
  void request(const std::string& reason, OutcomeCallback done = {});
  /// Any thread: stop after the next step boundary (its snapshot is requested separately).
  void request_stop() { stop_pending_ = true; }

  /// What this rank wishes after a step (or'ed across ranks).
  enum Wish : uint64_t {
    kSnapshotRequested = 1,
    kStopRequested = 2,
    kSecondsElapsed = 4,
    kFailingInARow = 8,  ///< set by the snapshotter: too many failed snapshots here; every rank stops
    /// Set by the snapshotter: this rank's memory tier is still writing (or off),
    /// so no rank takes this step's memory snapshot: every rank holds the same steps.
    kMemoryTierBusy = 16,
    kOverheadBudgetDue = 32,  ///< max_overhead (rank 0's measurement decides)
  };

  /// Training thread, after step `step`: publishes it as the last completed
  /// step (a request queued from now on is for a later step) and tells what
  /// this rank wishes. `clock_decides`: every_seconds and max_overhead are
  /// this rank's call (rank 0 in a job).
  uint64_t wishes(int64_t step, bool clock_decides = true);
  /// Training thread: decides from the job's wishes (every rank's or'ed).
  /// A request outranks the automatic triggers.
  Decision after_step(int64_t step, uint64_t job_wishes);
  /// Training thread, when no step will follow (train end): whether this rank
  /// has requests; then claim_requests() takes them.
  bool has_requests() const;
  /// The queued requests (a request made on another rank when there are none here).
  Decision claim_requests();
  /// Answers every queued requester with `why` (the job ends).
  void fail_requests(const std::string& why);

  /// Training thread: a snapshot of `step` was started (or restored).
  void snapshot_taken(int64_t step);
  bool has_snapshot_of(int64_t step) const { return last_snapshot_step_ == step; }
  /// Training thread: training resumes after `step`.
  void resumed_at(int64_t step);

  /// The stop was taken: should_stop() is true from now on.
  void stopped() { stop_requested_ = true; }
  bool should_stop() const { return stop_requested_; }
  /// Any thread: a stop is asked or done.
  bool stopping() const { return stop_requested_ || stop_pending_; }
  std::optional<int64_t> last_completed_step() const;
  /// Training thread: max_overhead's measurements (the snapshotter feeds them).
  OverheadBudget& budget() { return budget_; }

 private:
  Decision claim_requests_locked();

  const TriggerConfig triggers_;
  mutable std::mutex mutex_;  // guards the three below
  std::vector<std::string> reasons_;
  std::vector<OutcomeCallback> waiters_;
  std::optional<int64_t> last_completed_step_;
  std::atomic<bool> stop_pending_{false};
  std::atomic<bool> stop_requested_{false};
  // Training thread only.
  std::optional<int64_t> last_snapshot_step_;
  Clock::time_point last_snapshot_time_ = Clock::now();
  OverheadBudget budget_;
};

}  // namespace daemon
}  // namespace autosnap
