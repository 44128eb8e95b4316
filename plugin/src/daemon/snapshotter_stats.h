#pragma once

// Counters the tests and the benchmark read from a Snapshotter; not part of
// the public API.

#include <cstdint>

namespace autosnap {

class Snapshotter;

namespace daemon {

struct SnapshotterStats {
  int64_t committed = 0;
  int64_t skipped = 0;
  int64_t failed = 0;
  uint64_t staging_bytes = 0;       ///< host staging buffers held now
  int64_t staging_allocations = 0;  ///< buffers allocated since the start
  double last_stall_ms = 0;         ///< training-thread time of the last snapshot
};

/// Zeros for a disabled snapshotter.
SnapshotterStats stats_of(const Snapshotter& snapshotter);

}  // namespace daemon
}  // namespace autosnap
