#pragma once

/// Data position as state: `torch::data` samplers whose place in an epoch a
/// snapshot saves, so that a resumed run continues with exactly the next
/// unseen batch of the same order.
///
///   autosnap::ResumableRandomSampler sampler(dataset.size().value());
///   snap.track("data", sampler);                       // before on_train_start()
///   auto loader = torch::data::make_data_loader(dataset, sampler, options);  // a copy: same position
///
/// Why stock samplers are not enough: torch's RandomSampler draws each epoch's
/// order from the global generator when the loader starts the epoch, which a
/// restore has just set to a mid-epoch state, and the loader asks for batches
/// ahead of the training loop (about 2 × workers), so the sampler's own index
/// is not what the loop has consumed.
///
/// These samplers
/// - derive epoch e's order from (seed, e) only: `torch.randperm(size,
///   generator=torch.Generator().manual_seed(seed + e))`, the formula of
///   Python's DistributedSampler; restoring the random generators cannot change it;
/// - count a batch as consumed when the Snapshotter's on_step_end() runs (one
///   batch per step), not when the loader fetches it. The loader must return
///   batches in order (`enforce_ordering`, the default);
/// - start a new epoch at each reset() (the loader calls it when a `for` loop
///   over it begins), except the first reset() after a restore, which resumes
///   the restored epoch after its consumed batches (or starts the next one when
///   the loop had called on_epoch_end). A restore takes effect at that reset():
///   restore before the loop over the loader begins.
///
/// Copies share one position: track one, hand a copy to make_data_loader.
/// Track only the training loader's sampler: every tracked sampler counts a
/// batch at each on_step_end (a validation loader's would count wrongly).
/// The saved state is a dict of plain values (Python-readable): kind (str),
/// size, seed, epoch, position (samples of the epoch consumed), batches (ints),
/// epoch_ended (bool); the distributed sampler adds num_replicas, rank,
/// shuffle, drop_last, and rest_of_epoch (a list) after a re-split.

#include <torch/data/samplers/base.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "autosnap/export.h"

namespace autosnap {

namespace state {
struct SamplerShared;  // what every copy of one sampler shares (internal: plugin/src/state/samplers.cpp)
}  // namespace state

class AUTOSNAP_API ResumableSampler : public torch::data::samplers::Sampler<std::vector<size_t>> {
 public:
  /// Starts the next epoch, or resumes a restored one. `new_size` changes the
  /// dataset size from the next order on.
  void reset(torch::optional<size_t> new_size = torch::nullopt) override;
  /// The next indices of this epoch's order, at most `batch_size`; nullopt at its end.
  torch::optional<std::vector<size_t>> next(size_t batch_size) override;
  /// torch::save / torch::load of the sampler: the same state as a snapshot's.
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  /// The epoch in progress (0 for the first; -1 before the first reset()).
  int64_t epoch() const;
  /// Batches of this epoch the training loop has consumed.
  int64_t batches_consumed() const;
  /// Dataset size.
  size_t size() const;

  /// The training loop consumed the oldest batch handed out (the Snapshotter
  /// calls this at on_step_end; call it yourself only without a Snapshotter).
  void batch_consumed();
  /// The training loop finished this epoch (the Snapshotter calls this at
  /// on_epoch_end): a restore of this state starts the next epoch.
  void epoch_finished();
  /// The saved form (see above).
  c10::IValue state() const;
  /// Checks `saved` against this sampler (StateMismatch naming what differs)
  /// and makes the next reset() resume it.
  void restore(const c10::IValue& saved);
  /// Throws what restore() would throw; changes nothing.
  void check(const c10::IValue& saved) const;

 protected:
  using Shared = state::SamplerShared;
  explicit ResumableSampler(std::shared_ptr<Shared> shared);

 private:
  std::shared_ptr<Shared> shared_;
};

/// A new random order each epoch. Without `seed`, one is drawn from torch's
/// default generator here (so torch::manual_seed before construction fixes it).
/// Seeds are below 2^63 (a non-negative int in Python).
class AUTOSNAP_API ResumableRandomSampler : public ResumableSampler {
 public:
  explicit ResumableRandomSampler(size_t size, std::optional<uint64_t> seed = std::nullopt);
};

/// 0, 1, ..., size - 1 every epoch.
class AUTOSNAP_API ResumableSequentialSampler : public ResumableSampler {
 public:
  explicit ResumableSequentialSampler(size_t size);
};

/// Rank `rank`'s part of each epoch's order, as Python's DistributedSampler
/// splits it: the order (shuffled or not) padded by wrapping around to a
/// multiple of `num_replicas` (or cut to one with `drop_last`), then every
/// num_replicas-th index starting at `rank`. Every rank gets as many batches.
/// Restored with another num_replicas (distributed.replicated: every rank
/// reads rank 0's state), the samples the job had not consumed of the epoch
/// in progress are split among the new ranks, and the next epochs as usual.
class AUTOSNAP_API ResumableDistributedSampler : public ResumableSampler {
 public:
  struct Options {
    bool shuffle = true;
    std::optional<uint64_t> seed;  ///< the same on every rank; default 0, as Python's
    bool drop_last = false;
  };
  ResumableDistributedSampler(size_t size, size_t num_replicas, size_t rank, Options options);
  ResumableDistributedSampler(size_t size, size_t num_replicas, size_t rank)
      : ResumableDistributedSampler(size, num_replicas, rank, Options{}) {}
};

}  // namespace autosnap
