#include "daemon/overhead_budget.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace autosnap {
namespace daemon {
namespace {

// Recent snapshots count more: a cost that changes is followed within a few snapshots.
constexpr double kSnapshotWeight = 0.5;

double median(std::deque<double> values) {
  const auto middle = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
  std::nth_element(values.begin(), middle, values.end());
  return *middle;
}

double averaged(double average, double sample, double weight, bool first) {
  return first ? sample : average + weight * (sample - average);
}

}  // namespace

void OverheadBudget::step_ended(double step_ms, bool writing) {
  if (!enabled()) return;
  // The step right after a snapshot started is written over, whatever the pipeline says by its end.
  const double slowdown = clean_steps_ > 0 ? std::max(0.0, step_ms - step_ms_) : 0.0;
  if (measuring_ && (writing || pending_steps_ == 0)) {
    pending_cost_ms_ += slowdown;
    ++pending_steps_;
    return;
  }
  if (measuring_ && settling_ < kSettleSteps) {  // slower steps right after a write are its cost too
    pending_cost_ms_ += slowdown;
    ++settling_;
    return;
  }
  if (measuring_) {
    finish_measuring();
  } else if (writing) {
    return;  // a write it did not see start (the restore's persist): neither clean nor measured
  }
  recent_clean_.push_back(step_ms);
  if (recent_clean_.size() > kBaselineSteps) recent_clean_.pop_front();
  step_ms_ = median(recent_clean_);
  ++clean_steps_;
  if (measured_ > 0) choose();
}

void OverheadBudget::snapshot_started(double stall_ms) {
  if (!enabled()) return;
  if (measuring_) finish_measuring();  // another trigger came before the last write ended
  measuring_ = true;
  pending_cost_ms_ = stall_ms;
  pending_steps_ = 0;
  settling_ = 0;
}

void OverheadBudget::finish_measuring() {
  measuring_ = false;
  cost_ms_ = averaged(cost_ms_, pending_cost_ms_, kSnapshotWeight, measured_ == 0);
  write_steps_ = averaged(write_steps_, static_cast<double>(pending_steps_), kSnapshotWeight, measured_ == 0);
  ++measured_;
  choose();
}

void OverheadBudget::choose() {
  if (clean_steps_ == 0) return;
  const double for_the_budget = std::ceil(cost_ms_ / (budget_ * std::max(step_ms_, 1e-3)));
  const double after_the_write = std::floor(write_steps_) + kSettleSteps + 1;
  interval_ = static_cast<int64_t>(std::max({for_the_budget, after_the_write, 1.0}));
}

bool OverheadBudget::due(int64_t steps_since) const {
  if (!enabled() || measuring_) return false;  // never before the last snapshot is written
  if (!interval_) return measured_ == 0 && clean_steps_ >= kWarmupSteps;
  return steps_since >= *interval_;
}

bool OverheadBudget::take_change() {
  if (!interval_) return false;
  if (logged_interval_ && std::abs(static_cast<double>(*interval_ - *logged_interval_)) <
                              0.25 * static_cast<double>(*logged_interval_))
    return false;
  logged_interval_ = interval_;
  return true;
}

std::string OverheadBudget::why() const {
  char text[320];
  std::snprintf(
      text, sizeof(text),
      "max_overhead %.3g %%: a snapshot every %lld steps (one costs %.1f ms: its stall and the slowdown "
      "of the %.1f steps it is written over; a step takes %.1f ms)",
      budget_ * 100, static_cast<long long>(interval_.value_or(0)), cost_ms_, write_steps_, step_ms_);
  return text;
}

}  // namespace daemon
}  // namespace autosnap
