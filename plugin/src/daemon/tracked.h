#pragma once

// What the Snapshotter tracks: each tracked object knows how to show its
// current state as an IValue (tensors referencing live memory, no copies)
// and how to check and install a saved one.

#include <ATen/core/ivalue.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_set>

#include "autosnap/torch_fwd.h"
#include "state/restore_plan.h"

namespace autosnap {

class ResumableSampler;
class SnapshotWriter;

namespace daemon {

class StableContainers;

class TrackedState {
 public:
  virtual ~TrackedState() = default;
  /// "module", "optimizer Adam", "int", ... for messages.
  virtual std::string kind() const = 0;
  /// The current state; tensors are the live ones.
  virtual c10::IValue capture() = 0;
  /// Storages in `captured` that only optimizer.step() modifies, so flush.overlap
  /// may copy them while the next forward/backward runs.
  virtual void step_only_storages(const c10::IValue& captured, std::unordered_set<const void*>& out) const {}
  /// Changes whenever the last capture's step-only storages may differ from
  /// the one before in more than tensors made anew in the same places.
  virtual int64_t step_only_generation() const { return 0; }
  /// The containers in `captured` (this step's capture()) that stay unchanged
  /// while their generation does (see StableContainers).
  virtual void stable_containers(const c10::IValue& captured, StableContainers& out) const {}
  /// Checks a saved value against the live object (StateMismatch if it does
  /// not fit); the returned commit installs it. `saved` comes from a freshly
  /// read shard that no one else holds: its tensors may become live state.
  virtual state::Commit prepare_restore(const c10::IValue& saved, bool strict, const std::string& name) = 0;
  /// Writes files besides the shard entry (TorchScript archives) from the
  /// staged value, on a background thread.
  virtual void write_extra_files(const std::string& name, const c10::IValue& staged, SnapshotWriter& writer,
                                 int rank) {}
  /// The training loop finished a step (on_step_end), before any snapshot of it.
  virtual void step_ended() {}
  /// The training loop finished an epoch (on_epoch_end), before any snapshot of it.
  virtual void epoch_ended() {}
  /// True for a data position (a resumable sampler).
  virtual bool is_data_position() const { return false; }
};

std::unique_ptr<TrackedState> track_module(torch::nn::Module& module);
std::unique_ptr<TrackedState> track_script_module(torch::jit::Module& module);
std::unique_ptr<TrackedState> track_optimizer(torch::optim::Optimizer& optimizer);
std::unique_ptr<TrackedState> track_int(int64_t& value);
std::unique_ptr<TrackedState> track_double(double& value);
std::unique_ptr<TrackedState> track_bool(bool& value);
std::unique_ptr<TrackedState> track_string(std::string& value);
std::unique_ptr<TrackedState> track_tensor(at::Tensor& tensor);
std::unique_ptr<TrackedState> track_sampler(const ResumableSampler& sampler);
std::unique_ptr<TrackedState> track_callbacks(std::function<c10::IValue()> save,
                                              std::function<void(const c10::IValue&)> load);

/// File name of a tracked TorchScript module's archive inside a snapshot.
std::string torchscript_file_name(int rank, const std::string& name);

}  // namespace daemon
}  // namespace autosnap
