#pragma once

// A job of several ranks keeps one snapshot directory, which every node must
// see: rank 0 commits the shards the other ranks wrote. A directory on a
// node's own disk (/tmp, /dev/shm, a local scratch) would give snapshots
// that lack shards, found out only at the first commit. So when the job
// starts, every rank writes a probe file there, every rank looks for rank
// 0's, and rank 0 for everyone's.

#include <string>

#include "autosnap/fs.h"
#include "daemon/coordinator.h"

namespace autosnap {
namespace daemon {

/// Collective (training channel). ConfigError on every rank, naming the
/// ranks and nodes that cannot see each other's files, when the directory
/// is not shared; the probes are removed either way.
void check_shared_directory(FileSystem& fs, const std::string& directory, Coordinator& coordinator);

}  // namespace daemon
}  // namespace autosnap
