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
  at::Tensor destination;   ///< uint8 host buffer of source.nbytes() bytes
  bool deferrable = false;  ///< only optimizer.step() modifies the source
  // Deferrable copies only: a tensor on the source and its version counter
  // when staged. A newer version once the copy is done means it was modified
  // before (or while) it was copied: the staged value may be torn.
  at::Tensor watched;
  uint32_t version = 0;
  std::string name;  ///< where it is in the shard, for the warning ("model/fc.weight")
};

/// Performs the copies; host ones of more than 32 MiB on up to 4 threads.
void perform_copies(const std::vector<StorageCopy>& copies);

/// Distinct storage bytes of every tensor in `value`.
uint64_t storage_bytes(const c10::IValue& value);

class StagingArena {
 public:
  /// Mirrors `live` with every tensor replaced by a view into a staging
  /// buffer; the copies to perform are appended to `copies`.
  c10::IValue stage(const c10::IValue& live, const std::unordered_set<const void*>& step_only,
                    std::vector<StorageCopy>& copies);
  /// Frees buffers the last stage() did not use.
  void trim();
  /// Frees every buffer.
  void release();

  uint64_t bytes() const { return bytes_; }
  int64_t allocations() const { return allocations_; }

 private:
  struct Buffer {
    at::Tensor bytes;
    bool pinned = false;
  };
  struct PathLink;  // where a value sits, spelt out only when needed
  c10::IValue stage_value(const c10::IValue& v, const PathLink* path);
  c10::IValue stage_tensor(const at::Tensor& t, const PathLink* path);

  std::vector<Buffer> buffers_;
  size_t used_ = 0;  // buffers the last stage() used
  uint64_t bytes_ = 0;
  int64_t allocations_ = 0;
  // Per stage() call:
  std::unordered_map<const void*, c10::Storage> staged_storages_;
  const std::unordered_set<const void*>* step_only_ = nullptr;
  std::vector<StorageCopy>* copies_ = nullptr;
};

/// Copies deferred to a background thread (flush.overlap). Whoever needs the
/// result first runs it; everyone else waits for it.
class DeferredCopies {
 public:
  explicit DeferredCopies(std::vector<StorageCopy> copies) : copies_(std::move(copies)) {}
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
  std::vector<StorageCopy> copies_;
  std::mutex mutex_;
  std::condition_variable done_;
  State state_ = State::kPending;
  std::exception_ptr error_;
  std::atomic<bool> discarded_{false};
};

}  // namespace daemon
}  // namespace autosnap
