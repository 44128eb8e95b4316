#pragma once

// How the ranks of a job agree, as the daemon sees it: the seam the cluster
// layer plugs c10d into (plugin/src/cluster/), like FileSystem is the seam
// for the disk. The daemon never includes c10d headers.
//
// The one primitive is exchange(), an all-gather: every rank's message, on
// every rank. It is collective: each rank makes the same calls in the same
// order on a channel. The training thread (triggers, restore) and the writer
// strand (commits) use separate channels, so their calls may interleave
// differently on different ranks without mixing. The writer and the restore
// build their typed agreement on it (agreement.h).
//
// Bulk data between two ranks (the memory tier's replicas) goes point to
// point with send_receive(), on a channel of its own (kReplica) so that a
// transfer never holds up an exchange.
//
// A failed collective is not the end: while every rank is still there, an
// implementation forms its group again and finishes the exchange (see
// c10d_coordinator.h). It throws CoordinationError when it cannot: a rank is
// lost (died, hung past the timeout, cut off) or did not rejoin in time.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace autosnap {
namespace daemon {

enum class Channel { kTraining, kWriter, kReplica };

class Coordinator {
 public:
  virtual ~Coordinator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  /// Every rank's `mine`, by rank, on every rank.
  virtual std::vector<std::string> exchange(const std::string& mine, Channel channel) = 0;

  /// Point to point: sends each message of `sends` to its rank and receives
  /// one message from each rank of `receive_from` (in that order), all at
  /// once, so that ranks sending to each other cannot deadlock. Every
  /// message must be matched by its peer's call on the same channel. Throws
  /// CoordinationError when a transfer fails (a peer lost or past the timeout).
  virtual std::vector<std::string> send_receive(const std::vector<std::pair<int, std::string_view>>& sends,
                                                const std::vector<int>& receive_from, Channel channel);

  /// The node each rank runs on, by rank: ranks with the same number share a
  /// node (its memory); numbered from 0 in the order of their lowest rank.
  virtual std::vector<int> nodes() const { return std::vector<int>(static_cast<size_t>(world_size()), 0); }

  /// Where `rank` runs, for messages: "rank 1 on node2".
  virtual std::string where(int rank) const { return "rank " + std::to_string(rank); }
  /// Any thread: why the job cannot go on (a rank was lost), or empty.
  virtual std::string lost() const { return ""; }
  /// lost(), after a moment for a loss that is happening now to be noticed
  /// (the job's own collective just failed: was a rank lost?).
  virtual std::string lost_after_a_moment() const { return lost(); }
  /// `handler` is called once, from another thread, when a rank is lost.
  virtual void on_lost(std::function<void(const std::string& why)> handler) {}
  /// This rank is done: with `cleanly`, the others do not count it as lost
  /// when it goes.
  virtual void leave(bool cleanly) {}

  // Conveniences built on exchange().
  /// The bitwise or of every rank's `mine`, on every rank (flags such as
  /// "this rank wants a snapshot / was asked to stop").
  uint64_t bitwise_or(uint64_t mine, Channel channel);
  /// True on every rank when `mine` is true on at least one.
  bool any(bool mine, Channel channel) { return bitwise_or(mine ? 1 : 0, channel) != 0; }
  /// Rank 0's `value`, on every rank.
  std::string broadcast(const std::string& value, Channel channel);
  /// On rank 0 every rank's `value`, by rank; elsewhere empty.
  std::vector<std::string> gather(const std::string& value, Channel channel);
  void barrier(Channel channel) { exchange("", channel); }
};

/// One process: rank 0 of 1; every question answers itself.
class SingleProcessCoordinator final : public Coordinator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::vector<std::string> exchange(const std::string& mine, Channel) override { return {mine}; }
};

}  // namespace daemon
}  // namespace autosnap
