#pragma once

/// Training-loop hooks. A loop that dispatches callbacks registers a
/// Snapshotter (which implements this interface). Three names are
/// Lightning's (on_train_start, on_train_end, on_exception); the others
/// correspond to Lightning's on_train_epoch_start (on_epoch_start),
/// on_before_optimizer_step (before_optimizer_step), on_train_batch_end
/// (on_step_end) and on_train_epoch_end (on_epoch_end).

#include <cstdint>
#include <exception>
#include <optional>
#include <string>

#include "autosnap/export.h"

namespace autosnap {

/// Where a resumed run continues: the snapshot's last completed step, and
/// where that step was in an epoch × batch loop.
///
///   int64_t step = resumed ? resumed->step + 1 : 0;
///   for (int64_t epoch = resumed ? resumed->next_epoch() : 0; epoch < epochs; ++epoch) {
///     snap.on_epoch_start(epoch);
///     for (auto& batch : *loader) { ...; snap.on_step_end(step++); }
///     snap.on_epoch_end(epoch);
///   }
///
/// With a tracked ResumableSampler the loader itself skips the batches done.
struct ResumePoint {
  int64_t step = 0;          ///< continue with step + 1
  int64_t epoch = 0;         ///< the epoch `step` belongs to (0 in a loop without epochs)
  int64_t batch = 0;         ///< steps of that epoch completed, `step` included
  bool epoch_ended = false;  ///< on_epoch_end(epoch) had run when the snapshot was taken
  std::string reason;        ///< what triggered the snapshot
  std::string path;          ///< the snapshot directory

  /// The epoch to continue with: `epoch`, or the next one when it had ended.
  /// A snapshot of an epoch's last step taken before on_epoch_end resumes that
  /// epoch with nothing left in it, so the loop still calls on_epoch_end for it.
  int64_t next_epoch() const { return epoch_ended ? epoch + 1 : epoch; }
  /// Batches of next_epoch() already done (a tracked ResumableSampler's loader skips them itself).
  int64_t next_batch() const { return epoch_ended ? 0 : batch; }
};

class AUTOSNAP_API Callback {
 public:
  virtual ~Callback() = default;
  /// Before the first step; may restore state and tell where to continue.
  virtual std::optional<ResumePoint> on_train_start() { return std::nullopt; }
  /// Before the first step of epoch `epoch` (optional: without it, an epoch
  /// begins after on_epoch_end of the one before, and the first is epoch 0).
  virtual void on_epoch_start(int64_t epoch) {}
  /// After backward, right before the step's first optimizer.step() (with
  /// several optimizers, once, before the first of them).
  virtual void before_optimizer_step() {}
  /// After step `step` (0-based) completed, optimizer step included.
  virtual void on_step_end(int64_t step) {}
  /// After epoch `epoch` completed.
  virtual void on_epoch_end(int64_t epoch) {}
  /// After the last step.
  virtual void on_train_end() {}
  /// The loop is leaving because of `error`.
  virtual void on_exception(const std::exception& error) {}
};

}  // namespace autosnap
