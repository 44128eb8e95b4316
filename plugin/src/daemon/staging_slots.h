#pragma once

// Backpressure: flush.max_pending slots of reusable host staging memory. A
// snapshot takes a slot while it is staged and written; with none free it
// waits (when_busy: wait, and always for requested snapshots) or is skipped;
// flush.staging_memory_limit caps the bytes all slots hold.
//
// Thread-safety: acquire() and stage() on the training thread, release()
// on the writer strand, bytes()/allocations() from any thread. One mutex;
// nothing is called while it is held.

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "autosnap/config.h"
#include "daemon/snapshot_job.h"
#include "daemon/staging.h"

namespace autosnap {
namespace daemon {

class StagingSlots {
 public:
  explicit StagingSlots(const FlushConfig& flush);

  static constexpr int kSkip = -1;    ///< busy and the snapshot may be skipped
  static constexpr int kTooBig = -2;  ///< `bytes` exceed staging_memory_limit: write it synchronously
  /// A free slot for a snapshot of `bytes`, waiting for one if need be; or kSkip / kTooBig.
  int acquire(uint64_t bytes, Urgency urgency);
  /// Frees `slot` (ignored when negative) and wakes a waiting acquire().
  void release(int slot);

  /// Stages `live` into `slot`'s buffers (StagingArena::stage), dropping the
  /// buffers this snapshot did not use.
  c10::IValue stage(int slot, const c10::IValue& live, const StepOnlyStorages& step_only,
                    const StableContainers& stable = {});
  /// The copies the last stage() into `slot` listed; by whoever holds the slot.
  const std::vector<StorageCopy>& copies(int slot) const {
    return slots_[static_cast<size_t>(slot)].arena.copies();
  }

  /// StagingArena::forget_sources() for every slot (none may be busy).
  void forget_sources();

  uint64_t bytes() const;       ///< held by all slots now
  int64_t allocations() const;  ///< buffers allocated since the start

 private:
  struct Slot {
    StagingArena arena;
    bool busy = false;
  };
  const FlushConfig& flush_;
  mutable std::mutex mutex_;
  std::condition_variable released_;
  std::vector<Slot> slots_;
};

}  // namespace daemon
}  // namespace autosnap
