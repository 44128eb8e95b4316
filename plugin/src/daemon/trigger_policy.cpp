#include "daemon/trigger_policy.h"

namespace autosnap {
namespace daemon {

void TriggerPolicy::request(const std::string& reason, OutcomeCallback done) {
  std::lock_guard<std::mutex> lock(mutex_);
  reasons_.push_back(reason);
  if (!done) return;
  const std::optional<int64_t> asked_at = last_completed_step_;
  waiters_.push_back([done = std::move(done), asked_at](const SnapshotOutcome& outcome) {
    SnapshotOutcome answered = outcome;
    answered.requested_after_step = asked_at;
    done(answered);
  });
}

TriggerPolicy::Decision TriggerPolicy::claim_requests_locked() {
  Decision decision("request on another rank", Urgency::kMustTake);
  if (reasons_.empty()) return decision;
  decision.reason = reasons_.front();
  reasons_.clear();
  decision.waiters.swap(waiters_);
  return decision;
}

uint64_t TriggerPolicy::wishes(int64_t step, bool clock_decides) {
  uint64_t wishes = 0;
  // The stop first: its signal queues the request before the stop, so a stop
  // seen here always comes with its request.
  if (stop_pending_) wishes |= kStopRequested;
  {
    // Publishing the step and looking at the requests at once: a request
    // queued before is served by this step, one queued after already sees
    // this step as the last completed one.
    std::lock_guard<std::mutex> lock(mutex_);
    last_completed_step_ = step;
    if (!reasons_.empty()) wishes |= kSnapshotRequested;
  }
  if (clock_decides && triggers_.every_seconds > 0 &&
      milliseconds_since(last_snapshot_time_) >= triggers_.every_seconds * 1000) {
    wishes |= kSecondsElapsed;
  }
  const int64_t steps_since = last_snapshot_step_ ? step - *last_snapshot_step_ : step + 1;
  if (clock_decides && budget_.due(steps_since)) wishes |= kOverheadBudgetDue;
  return wishes;
}

TriggerPolicy::Decision TriggerPolicy::after_step(int64_t step, uint64_t job_wishes) {
  Decision decision;
  if (job_wishes & kSnapshotRequested) {
    decision = claim_requests();
  } else if (triggers_.every_steps > 0 && step % triggers_.every_steps == 0) {
    decision = Decision("every_steps", Urgency::kMaySkip);
  } else if (job_wishes & kSecondsElapsed) {
    decision = Decision("every_seconds", Urgency::kMaySkip);
  } else if (job_wishes & kOverheadBudgetDue) {
    decision = Decision("max_overhead", Urgency::kMaySkip);
  }
  if (job_wishes & kStopRequested) {
    stop_pending_ = false;
    decision.stop = true;
  }
  return decision;
}

bool TriggerPolicy::has_requests() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !reasons_.empty();
}

TriggerPolicy::Decision TriggerPolicy::claim_requests() {
  std::lock_guard<std::mutex> lock(mutex_);
  return claim_requests_locked();
}

void TriggerPolicy::fail_requests(const std::string& why) {
  std::vector<OutcomeCallback> waiters;
  std::optional<int64_t> step;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    waiters.swap(waiters_);
    reasons_.clear();
    step = last_completed_step_;
  }
  SnapshotOutcome outcome;
  outcome.step = step.value_or(0);
  outcome.error = why;
  for (auto& waiter : waiters) waiter(outcome);
}

void TriggerPolicy::snapshot_taken(int64_t step) {
  last_snapshot_step_ = step;
  last_snapshot_time_ = Clock::now();
}

void TriggerPolicy::resumed_at(int64_t step) {
  snapshot_taken(step);
  std::lock_guard<std::mutex> lock(mutex_);
  last_completed_step_ = step;
}

std::optional<int64_t> TriggerPolicy::last_completed_step() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_completed_step_;
}

}  // namespace daemon
}  // namespace autosnap
