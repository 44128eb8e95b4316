#pragma once

// Where the training loop is: the epoch the last completed step belongs to,
// and how many steps of that epoch are done. Recorded in every manifest so
// that the same step has the same position whether or not the run was
// interrupted, and a resumed epoch × batch loop knows where to continue.
//
// Thread-safety: the training thread only.

#include <cstdint>

namespace autosnap {
namespace daemon {

struct LoopPosition {
  int64_t epoch = 0;
  int64_t batch = 0;
  bool epoch_ended = false;

  /// on_step_end: the step belongs to the epoch in progress (the next one
  /// once the last has ended).
  void step_ended() {
    if (epoch_ended) {
      ++epoch;
      batch = 0;
      epoch_ended = false;
    }
    ++batch;
  }
  /// on_epoch_start(e): e begins, unless e is the epoch in progress (a run
  /// resumed in the middle of e calls it again for e).
  void epoch_started(int64_t e) {
    if (e == epoch && !epoch_ended) return;
    epoch = e;
    batch = 0;
    epoch_ended = false;
  }
  /// on_epoch_end(e): the loop's number wins (it may count from 1).
  void epoch_finished(int64_t e) {
    epoch = e;
    epoch_ended = true;
  }
  /// In the middle of an epoch: some of its batches are done, not all.
  bool mid_epoch() const { return batch > 0 && !epoch_ended; }
};

}  // namespace daemon
}  // namespace autosnap
