#include "daemon/staging_slots.h"

namespace autosnap {
namespace daemon {

StagingSlots::StagingSlots(const FlushConfig& flush)
    : flush_(flush), slots_(static_cast<size_t>(flush.max_pending)) {}

int StagingSlots::acquire(uint64_t bytes, Urgency urgency) {
  const uint64_t limit = flush_.staging_memory_limit;
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    int free = -1;
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (!slots_[i].busy) {
        free = static_cast<int>(i);
        break;
      }
    }
    if (free >= 0) {
      if (limit == 0) {
        slots_[static_cast<size_t>(free)].busy = true;
        return free;
      }
      if (bytes > limit) return kTooBig;
      uint64_t others = 0;
      for (size_t i = 0; i < slots_.size(); ++i) {
        if (static_cast<int>(i) == free) continue;
        if (!slots_[i].busy) slots_[i].arena.release();  // idle buffers give way to the limit
        others += slots_[i].arena.bytes();
      }
      if (others + bytes <= limit) {
        slots_[static_cast<size_t>(free)].busy = true;
        return free;
      }
    }
    if (flush_.when_busy == WhenBusy::kSkip && urgency == Urgency::kMaySkip) return kSkip;
    released_.wait(lock);
  }
}

void StagingSlots::release(int slot) {
  if (slot < 0) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    slots_[static_cast<size_t>(slot)].busy = false;
  }
  released_.notify_all();
}

c10::IValue StagingSlots::stage(int slot, const c10::IValue& live, const StepOnlyStorages& step_only,
                                const StableContainers& stable) {
  std::lock_guard<std::mutex> lock(mutex_);  // bytes() may read the arena meanwhile
  auto& arena = slots_[static_cast<size_t>(slot)].arena;
  c10::IValue staged = arena.stage(live, step_only, stable);
  arena.trim();
  return staged;
}

void StagingSlots::forget_sources() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& slot : slots_) slot.arena.forget_sources();
}

uint64_t StagingSlots::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  uint64_t total = 0;
  for (const auto& slot : slots_) total += slot.arena.bytes();
  return total;
}

int64_t StagingSlots::allocations() const {
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t total = 0;
  for (const auto& slot : slots_) total += slot.arena.allocations();
  return total;
}

}  // namespace daemon
}  // namespace autosnap
