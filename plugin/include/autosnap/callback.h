#pragma once

/// Training-loop hooks. A loop that dispatches callbacks registers a
/// Snapshotter (which implements this interface). Three names are
/// Lightning's (on_train_start, on_train_end, on_exception); the others
/// correspond to Lightning's on_before_optimizer_step (before_optimizer_step),
/// on_train_batch_end (on_step_end) and on_train_epoch_end (on_epoch_end).

#include <cstdint>
#include <exception>
#include <optional>
#include <string>

namespace autosnap {

/// Where a resumed run continues: the snapshot's last completed step.
struct ResumePoint {
  int64_t step = 0;              ///< continue with step + 1
  std::optional<int64_t> epoch;  ///< the last epoch passed to on_epoch_end, if any
  std::string reason;            ///< what triggered the snapshot
  std::string path;              ///< the snapshot directory
};

class Callback {
 public:
  virtual ~Callback() = default;
  /// Before the first step; may restore state and tell where to continue.
  virtual std::optional<ResumePoint> on_train_start() { return std::nullopt; }
  /// After backward, right before optimizer.step().
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
