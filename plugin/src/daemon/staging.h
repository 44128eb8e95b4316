#pragma once

// Staging: copying tracked tensors into host buffers so the background
// writer sees one consistent step while training goes on.
//
// Copies are made per storage, not per tensor, so views and tied weights
// keep sharing exactly as torch.save records them. Buffers are allocated
// once and reused from one snapshot to the next: the n-th distinct storage met
// gets the n-th buffer, reallocated only when its size changes. Paths
// ("model/fc.weight") are spelt only when a message needs one: with thousands
// of tensors, building them was a large part of the training thread's stall.

#include <ATen/core/ivalue.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace autosnap {
namespace daemon {

/// One storage to copy into its staging buffer.
struct StorageCopy {
  c10::Storage source;
  c10::Storage destination;  ///< host buffer of source.nbytes() bytes
  // The buffer's bytes, size and whether the source is in host memory, kept
  // here so that listing thousands of copies reads no tensor or storage.
  void* into = nullptr;
  size_t bytes = 0;
  bool host = true;
  bool deferrable = false;  ///< only optimizer.step() modifies the source
  // Deferrable copies only: the version counter of a tensor on the source
  // and its version when staged. A newer version once the copy is done means
  // it was modified before (or while) it was copied: the staged value may be
  // torn. The counter itself, not the tensor, so that checking thousands of
  // them (before_optimizer_step) reads no TensorImpl.
  c10::VariableVersion counter;
  uint32_t version = 0;
};

/// Where a value sits in a staged state ("model/fc.weight"), spelt only when a message needs it.
struct PathLink;

/// The storages that only optimizer.step() modifies: flush.overlap defers
/// their copies. Collecting them walks every tensor, so it is done only when
/// stage() needs them: a reused result keeps each copy's flag when the
/// generation is the one its flags were set at (in an unchanged layout, the
/// tensor at a position keeps its role: a parameter, a buffer, a moment).
class StepOnlyStorages {
 public:
  using Collect = std::function<void(std::unordered_set<const void*>&)>;
  /// None.
  StepOnlyStorages() = default;
  /// These, whatever the generation was (implicit: a set is these storages).
  StepOnlyStorages(std::unordered_set<const void*> storages)  // NOLINT(google-explicit-constructor)
      : storages_(std::move(storages)), collected_(true), generation_(kUnknown) {}
  /// Those `collect` finds when asked; `generation` changes whenever they may.
  StepOnlyStorages(Collect collect, int64_t generation)
      : collect_(std::move(collect)), generation_(generation) {}

  bool contains(const void* storage) const;
  /// kUnknown: the flags are set again at every stage().
  int64_t generation() const { return generation_; }
  static constexpr int64_t kUnknown = -1;

 private:
  Collect collect_;
  mutable std::unordered_set<const void*> storages_;
  mutable bool collected_ = false;
  int64_t generation_ = 0;
};

/// Containers of a capture that their maker keeps the same object with the
/// same keys, plain values and tensor objects for as long as their generation
/// stays the same (a module's captured state dict, an optimizer's per-parameter
/// state). Staging then checks only their tensors (shape, storage, ...), not
/// the containers again: with thousands of tensors, walking the dicts was most
/// of the reuse walk.
class StableContainers {
 public:
  void add(const c10::IValue& container, int64_t generation);
  /// The generation `container` was added with; nullptr when it was not.
  const int64_t* generation_of(const c10::IValue& container) const;

 private:
  std::vector<std::pair<const void*, int64_t>> containers_;  // a few: one or two per tracked object
};

enum class CopySelection { kAll, kDeferrable, kNotDeferrable };
/// Performs the selected copies; host ones of more than 32 MiB on up to 4 threads.
void perform_copies(const std::vector<StorageCopy>& copies, CopySelection which = CopySelection::kAll);

/// Distinct storage bytes of every tensor in `value`.
uint64_t storage_bytes(const c10::IValue& value);

class StagingArena {
 public:
  /// Mirrors `live` with every tensor replaced by a view into a staging
  /// buffer; the copies to perform are then copies(). When `live` has
  /// the last call's layout (the same containers and keys; tensors of the same
  /// dtype, shape, strides and offset, on the same storages or on new ones of
  /// the same size, sharing storages exactly as before) the last
  /// result is returned again with its plain values (ints, floats, strings)
  /// brought up to date: a state of thousands of tensors is not rebuilt at
  /// every snapshot. The last result must no longer be in use (its slot released).
  c10::IValue stage(const c10::IValue& live, const StepOnlyStorages& step_only,
                    const StableContainers& stable = {});
  /// The copies the last stage() listed, one per storage; they stay as they
  /// are until the next stage(), forget_sources() or release().
  const std::vector<StorageCopy>& copies() const { return copies_; }
  /// Frees buffers the last stage() did not use.
  void trim();
  /// Lets go of the live storages the last result was copied from (its
  /// buffers stay; the next stage() builds the result again in them), so a
  /// restore may install new storages in their place.
  void forget_sources();
  /// Frees every buffer.
  void release();

  uint64_t bytes() const { return bytes_; }
  int64_t allocations() const { return allocations_; }
  /// stage() calls that reused the last result.
  int64_t reuses() const { return reuses_; }
  /// Stable containers checked by their tensors alone, not walked again.
  int64_t stable_skips() const { return stable_skips_; }

 private:
  struct Buffer {
    c10::Storage storage;
    bool pinned = false;
  };
  c10::IValue stage_value(const c10::IValue& v, const PathLink* path);
  c10::IValue stage_tensor(const at::Tensor& t, const PathLink* path);
  // Walks `live` beside the last result; false at the first difference in layout.
  bool same_layout(const c10::IValue& live, const c10::IValue& staged);
  bool same_tensor(const at::Tensor& live, const at::Tensor& staged);
  // The part of same_tensor() past the metadata: the storage and its copy.
  bool same_source(const at::Tensor& live);
  bool same_dict(const c10::IValue& live, const c10::IValue& staged);
  // A stable container as last met, for the next walk to check only its tensors.
  struct StableRecord {
    const void* staged = nullptr;  // where in the result
    c10::IValue live;              // held, so that no other container can take its address
    int64_t generation = 0;
    size_t first_tensor = 0;  // tensors_met_ when the walk reached it
    // Its tensors in walk order; not listed once its generation moved at two
    // walks in a row (an RMSprop state's step counts are numbers): listing
    // them at every snapshot would be work for nothing.
    bool listed = false;
    bool moved = false;  // at the last walk
    std::vector<at::Tensor> live_tensors;
    // What each staged tensor was made like (append_shape()): compared
    // from one flat array, not from thousands of scattered TensorImpls.
    std::vector<int64_t> staged_shapes;
  };
  void record_stable(const c10::IValue& live, const c10::IValue& staged, int64_t generation,
                     size_t first_tensor);
  // Whether the copies' sources are still distinct storages after the walk replaced some.
  bool sources_distinct() const;

  std::vector<Buffer> buffers_;
  size_t used_ = 0;  // buffers the last stage() used
  uint64_t bytes_ = 0;
  int64_t allocations_ = 0;
  int64_t reuses_ = 0;
  int64_t stable_skips_ = 0;
  // The last result, its copies, and for each tensor met (in walk order) the copy
  // of its storage; whether it is the first tensor met on that storage.
  c10::IValue last_staged_;
  std::vector<StorageCopy> copies_;
  std::vector<std::pair<size_t, bool>> tensor_copies_;
  size_t tensors_met_ = 0;
  std::vector<size_t> replaced_sources_;  // copies whose source this walk replaced
  // The StepOnlyStorages generation the last result's deferrable flags were set at.
  int64_t flags_generation_ = StepOnlyStorages::kUnknown;
  bool flags_current_ = false;  // this call: keep the reused copies' flags
  std::vector<StableRecord> stable_records_;
  // Per stage() call:
  std::unordered_map<const void*, std::pair<c10::Storage, size_t>> staged_storages_;
  const StepOnlyStorages* step_only_ = nullptr;
  const StableContainers* stable_ = nullptr;
};

/// The deferrable ones of `copies`, run on a background thread
/// (flush.overlap). Whoever needs the result first runs it; everyone else
/// waits for it. `copies` (a staging slot's) must stay as they are until
/// run_or_wait() and modified_since_staging() are done with them; `staged` is
/// the state they were staged for, where a modified source's name is found.
class DeferredCopies {
 public:
  DeferredCopies(const std::vector<StorageCopy>& copies, c10::IValue staged)
      : copies_(copies), staged_(std::move(staged)) {}
  /// Runs the copies unless already run or running; then waits; rethrows their error.
  void run_or_wait();
  /// Marks the result unusable (the training loop moved on without waiting).
  void discard() { discarded_ = true; }
  bool discarded() const { return discarded_; }
  /// After run_or_wait(): the name of a source modified since it was staged
  /// (its tensor's version counter moved on), or "" when none was.
  std::string modified_since_staging() const;

 private:
  enum class State { kPending, kRunning, kDone };
  const std::vector<StorageCopy>& copies_;
  const c10::IValue staged_;
  std::mutex mutex_;
  std::condition_variable done_;
  State state_ = State::kPending;
  std::exception_ptr error_;
  std::atomic<bool> discarded_{false};
};

}  // namespace daemon
}  // namespace autosnap
