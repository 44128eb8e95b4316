#pragma once

// How the ranks of a job agree, as the daemon sees it: the seam the cluster
// layer plugs c10d into (plugin/src/cluster/), like FileSystem is the seam
// for the disk. The daemon never includes c10d headers.
//
// Every primitive is collective: each rank makes the same calls in the same
// order on a channel. The training thread (triggers, restore) and the writer
// strand (commits) use separate channels, so their calls may interleave
// differently on different ranks without mixing. An implementation throws
// Error when a peer died or did not answer within its timeout; after that it
// is unusable. The writer (snapshot_pipeline) and the restore (restorer)
// agree through these: every rank reports to rank 0 (gather), rank 0 decides
// and tells everyone (broadcast).

#include <cstdint>
#include <string>
#include <vector>

namespace autosnap {
namespace daemon {

enum class Channel { kTraining, kWriter };

class Coordinator {
 public:
  virtual ~Coordinator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  /// The bitwise or of every rank's `mine`, on every rank (flags such as
  /// "this rank wants a snapshot / was asked to stop").
  virtual uint64_t bitwise_or(uint64_t mine, Channel channel) = 0;
  /// True on every rank when `mine` is true on at least one ("did any rank
  /// fail / want a snapshot?").
  bool any(bool mine, Channel channel) { return bitwise_or(mine ? 1 : 0, channel) != 0; }
  /// Rank 0's `value`, on every rank.
  virtual std::string broadcast(const std::string& value, Channel channel) = 0;
  /// On rank 0 every rank's `value`, by rank; elsewhere empty.
  virtual std::vector<std::string> gather(const std::string& value, Channel channel) = 0;
  virtual void barrier(Channel channel) = 0;
};

/// One process: rank 0 of 1; every question answers itself.
class SingleProcessCoordinator final : public Coordinator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  uint64_t bitwise_or(uint64_t mine, Channel) override { return mine; }
  std::string broadcast(const std::string& value, Channel) override { return value; }
  std::vector<std::string> gather(const std::string& value, Channel) override { return {value}; }
  void barrier(Channel) override {}
};

}  // namespace daemon
}  // namespace autosnap
