#pragma once

// Everything a Snapshotter tracks, by name: what goes into each rank's shard
// and what a restore must find there.
//
// Thread-safety: add() before training starts, from the training thread.
// capture() and apply() run on the training thread; manifest_entries() and
// write_extra_files() also on the writer strand, which only reads the list.

#include <ATen/core/ivalue.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "daemon/tracked.h"

namespace autosnap {

class SnapshotWriter;

namespace daemon {

/// The shard entry holding the random generators' state; no tracked object may use the name.
constexpr const char* kRngEntry = "rng_state";

class TrackedSet {
 public:
  explicit TrackedSet(bool capture_rng) : capture_rng_(capture_rng) {}

  /// Error when the name is not a plain name, is reserved or already tracked.
  void add(const std::string& name, std::unique_ptr<TrackedState> state);

  /// The shard dict of the current state (live tensors, no copies), RNG included.
  c10::impl::GenericDict capture() const;
  /// The storages in `shard` (this step's capture()) that only
  /// optimizer.step() modifies (flush.overlap may copy those later).
  void step_only_storages(const c10::impl::GenericDict& shard, std::unordered_set<const void*>& out) const;
  /// Changes whenever those storages may change in more than tensors made anew in the same places.
  int64_t step_only_generation() const;
  /// TrackedState::stable_containers of every entry in `shard` (this step's capture()).
  void stable_containers(const c10::impl::GenericDict& shard, StableContainers& out) const;
  /// (name, kind) of every entry capture() makes, for the manifest.
  std::vector<std::pair<std::string, std::string>> manifest_entries() const;
  /// Files beside the shard (TorchScript archives), from the staged shard.
  void write_extra_files(const c10::impl::GenericDict& staged, SnapshotWriter& writer, int rank) const;

  /// The loop finished a step: data positions count their batch consumed.
  void step_ended() const;
  /// The loop finished an epoch: data positions remember it.
  void epoch_ended() const;
  /// True when a data position (resumable sampler) is tracked.
  bool tracks_data_position() const;

  /// Checks `shard` against everything tracked (StateMismatch naming what is
  /// missing, untracked or does not fit; `strict: false` restores what
  /// matches) and returns what installs it; nothing changes before that is
  /// called. `origin` names the snapshot in messages.
  std::function<void()> prepare(const c10::IValue& shard, bool strict, const std::string& origin) const;

 private:
  bool capture_rng_;
  std::vector<std::pair<std::string, std::unique_ptr<TrackedState>>> entries_;
};

}  // namespace daemon
}  // namespace autosnap
