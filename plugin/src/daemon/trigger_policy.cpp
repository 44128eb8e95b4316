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

TriggerPolicy::Decision TriggerPolicy::claim_requests() {
  Decision decision;
  if (reasons_.empty()) return decision;
  decision.reason = reasons_.front();
  decision.urgency = Urgency::kMustTake;
  reasons_.clear();
  decision.waiters.swap(waiters_);
  return decision;
}

TriggerPolicy::Decision TriggerPolicy::after_step(int64_t step) {
  // The stop first: its signal queues the request before the stop, so a stop
  // seen here always comes with its request.
  const bool stop = stop_pending_.exchange(false);
  Decision decision;
  {
    // Publishing the step and claiming the requests at once: a request queued
    // before is served by this step, one queued after already sees this step
    // as the last completed one.
    std::lock_guard<std::mutex> lock(mutex_);
    last_completed_step_ = step;
    decision = claim_requests();
  }
  if (decision.reason.empty()) decision.reason = due(step);
  decision.stop = stop;
  return decision;
}

TriggerPolicy::Decision TriggerPolicy::pending_requests() {
  std::lock_guard<std::mutex> lock(mutex_);
  return claim_requests();
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

std::string TriggerPolicy::due(int64_t step) const {
  if (triggers_.every_steps > 0 && step % triggers_.every_steps == 0) return "every_steps";
  if (triggers_.every_seconds > 0 &&
      milliseconds_since(last_snapshot_time_) >= triggers_.every_seconds * 1000) {
    return "every_seconds";
  }
  return "";
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
