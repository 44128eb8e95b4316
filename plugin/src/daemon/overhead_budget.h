#pragma once

// triggers.max_overhead: snapshot as often as keeps autosnap's share of
// training time under a budget, as CheckFreq (FAST'21) tunes its interval.
//
// What a snapshot costs is measured, not guessed: the time it stalls the
// training thread, plus how much longer the steps run while it is written in
// the background (against the steps that run with no write: on a machine
// with few cores the writer competes with training, and the steps just
// after a write still run slower: their slowdown counts too). With a step of
// S ms and a snapshot costing C ms, one every k steps costs C / (k S) of the
// time, so k = ceil(C / (budget S)); and never so often that a snapshot
// starts before the last one is written and its aftermath measured. The step
// time is the median of the recent steps without a write (a slow first step or
// a noisy one does not move it), the cost an average over recent snapshots, so
// the interval follows a step time that changes.
// Until the first snapshot is measured, one is taken after a few steps.
//
// Thread-safety: training thread only.

#include <cstdint>
#include <deque>
#include <optional>
#include <string>

namespace autosnap {
namespace daemon {

class OverheadBudget {
 public:
  /// `budget`: the fraction of training time snapshots may cost (0: off).
  explicit OverheadBudget(double budget) : budget_(budget) {}
  bool enabled() const { return budget_ > 0; }

  /// A step's training time (autosnap's own time in its hooks excluded), and
  /// whether a snapshot was being written in the background at any moment of it.
  void step_ended(double step_ms, bool writing);
  /// A snapshot was started after the last step, stalling training `stall_ms`.
  void snapshot_started(double stall_ms);
  /// Whether the budget wants a snapshot, `steps_since` steps after the last one.
  bool due(int64_t steps_since) const;

  /// The interval chosen (nullopt until a snapshot was measured).
  std::optional<int64_t> interval() const { return interval_; }
  /// Why the interval is what it is, for the log.
  std::string why() const;
  /// True once after the interval changed by a quarter or more (log it then).
  bool take_change();

  /// Steps needed before the first snapshot, to know a step's time.
  static constexpr int64_t kWarmupSteps = 5;
  /// Steps without a write whose median is the step time.
  static constexpr size_t kBaselineSteps = 15;
  /// Steps after a write ends whose slowdown still counts toward its cost
  /// (measured here: the step after a 201 MB write ran 10-40 % slower).
  static constexpr int64_t kSettleSteps = 2;

 private:
  void finish_measuring();
  void choose();

  const double budget_;
  double step_ms_ = 0;               // median of recent steps without a write in flight
  std::deque<double> recent_clean_;  // those steps, newest last
  int64_t clean_steps_ = 0;          // steps measured for it
  double cost_ms_ = 0;               // average cost of a snapshot
  double write_steps_ = 0;           // average steps one write spans
  bool measuring_ = false;           // a snapshot's cost is being added up
  double pending_cost_ms_ = 0;       // its stall and the slowdown so far
  int64_t pending_steps_ = 0;        // steps it has spanned so far
  int64_t settling_ = 0;             // steps measured after it ended
  int64_t measured_ = 0;             // snapshots measured
  std::optional<int64_t> interval_;
  std::optional<int64_t> logged_interval_;
};

}  // namespace daemon
}  // namespace autosnap
