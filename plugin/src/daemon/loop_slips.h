#pragma once

// The slips of a training loop that make a resumed run differ from an
// uninterrupted one without any error: step numbers that do not grow, and
// epoch numbers that disagree with the epoch autosnap counted (a loop that
// numbers epochs from 1 without on_epoch_start records its first epoch as 0,
// so a resume runs one epoch too many). Each hook asks before the position
// moves; each kind of slip is told once.
//
// Thread-safety: the training thread only.

#include <cstdint>
#include <optional>
#include <string>

#include "daemon/loop_position.h"

namespace autosnap {
namespace daemon {

class LoopSlips {
 public:
  /// A restore: the loop continues after `step`.
  void resumed(int64_t step);
  /// on_step_end(step) after step `last` (none yet: nullopt). Empty, or a warning.
  std::string step_ending(int64_t step, std::optional<int64_t> last);
  /// on_epoch_start(epoch), `counted` the position before it. Empty, or a warning.
  std::string epoch_starting(int64_t epoch, const LoopPosition& counted);
  /// on_epoch_end(epoch), `counted` the position before it. Empty, or a warning.
  std::string epoch_ending(int64_t epoch, const LoopPosition& counted);

 private:
  std::string once(bool& told, std::string warning);

  std::optional<int64_t> resumed_step_;
  bool just_resumed_ = false;  // no step or epoch started since the restore
  bool told_step_ = false, told_resumed_epoch_ = false, told_epoch_order_ = false, told_epoch_end_ = false;
};

}  // namespace daemon
}  // namespace autosnap
