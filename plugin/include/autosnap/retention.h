#pragma once

/// Which committed snapshots retention keeps: the config's `retention`
/// section, `autosnap prune`'s options, and SnapshotStore::prune's rule.

#include <cstdint>

namespace autosnap {

struct RetentionRule {
  int64_t keep_last = 3;         ///< newest valid snapshots always kept; 0 keeps all
  int64_t keep_every_steps = 0;  ///< also keep steps with step % K == 0; 0: off
};

}  // namespace autosnap
