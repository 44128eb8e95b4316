#include "daemon/loop_slips.h"

namespace autosnap {
namespace daemon {
namespace {

std::string where(const LoopPosition& at) {
  return "epoch " + std::to_string(at.epoch) +
         (at.epoch_ended ? " (ended)" : " after " + std::to_string(at.batch) + " batch(es)");
}

}  // namespace

void LoopSlips::resumed(int64_t step) {
  resumed_step_ = step;
  just_resumed_ = true;
}

std::string LoopSlips::step_ending(int64_t step, std::optional<int64_t> last) {
  just_resumed_ = false;
  if (!last || step > *last) return "";
  std::string warning =
      "on_step_end(" + std::to_string(step) + ") after step " + std::to_string(*last) +
      ": step numbers must grow, or snapshots of this run are taken at steps it already had";
  if (resumed_step_) {
    warning += "; this run resumed from step " + std::to_string(*resumed_step_) +
               " and continues with step " + std::to_string(*resumed_step_ + 1) +
               " (ResumePoint::step + 1); a step computed from a batch counter that starts at 0 again must "
               "start at ResumePoint::next_batch()";
  }
  return once(told_step_, warning);
}

std::string LoopSlips::epoch_starting(int64_t epoch, const LoopPosition& counted) {
  if (just_resumed_) {
    just_resumed_ = false;
    const int64_t next = counted.epoch_ended ? counted.epoch + 1 : counted.epoch;
    if (epoch == next) return "";
    return once(
        told_resumed_epoch_,
        "on_epoch_start(" + std::to_string(epoch) + ") right after resuming from step " +
            std::to_string(*resumed_step_) + ", which was taken in " + where(counted) +
            ": the loop should continue with epoch " + std::to_string(next) +
            " (ResumePoint::next_epoch()); another epoch makes this run differ from an uninterrupted one");
  }
  if (!counted.epoch_ended || epoch == counted.epoch + 1) return "";
  return once(told_epoch_order_, "on_epoch_start(" + std::to_string(epoch) + ") after on_epoch_end(" +
                                     std::to_string(counted.epoch) + "): epoch " +
                                     std::to_string(counted.epoch + 1) + " was expected next");
}

std::string LoopSlips::epoch_ending(int64_t epoch, const LoopPosition& counted) {
  if (counted.epoch_ended || counted.batch == 0 || epoch == counted.epoch) return "";
  return once(told_epoch_end_,
              "on_epoch_end(" + std::to_string(epoch) + "), but autosnap counted the " +
                  std::to_string(counted.batch) + " step(s) since the epoch began in epoch " +
                  std::to_string(counted.epoch) + ": a snapshot taken in them resumes epoch " +
                  std::to_string(counted.epoch) + ", not " + std::to_string(epoch) +
                  ", and the run differs from an uninterrupted one; call on_epoch_start(epoch) at the top of "
                  "every epoch (needed when epochs are not numbered from 0)");
}

std::string LoopSlips::once(bool& told, std::string warning) {
  if (told) return "";
  told = true;
  return warning;
}

}  // namespace daemon
}  // namespace autosnap
