#pragma once

// The Coordinator of a multi-rank job on LibTorch's own distributed engine:
// a store (job_store.h), three Gloo groups of autosnap's own, one per channel
// (the training thread's, the writer strand's and the memory tier's
// replicas'), and a lifeline that
// notices a lost rank (lifeline.h). autosnap never issues a collective on
// the user's process group.
//
// A collective that fails (a peer slow past the timeout, a connection
// dropped) breaks that channel's Gloo group; c10d's groups cannot recover.
// So the group is formed again under a new generation, whose number every
// rank finds in the store (a rank that abandons generation k moves the
// store's counter to k+1; a rank that comes later joins where the others
// wait), and the exchange is finished there. Each exchange carries a
// sequence number, so nobody takes one exchange's message for another's: a
// rank that completed the failed exchange (its peers did not) hands its
// result to the others, so every rank ends with the same result; a rank
// whose exchange the others gave up (they timed out and moved on) fails it
// too. When the lifeline knows a rank is lost, or the group cannot be
// formed again within the timeout, exchange() throws CoordinationError
// naming the rank and its node. Point-to-point transfers (send_receive) are
// not retried: a failed one breaks its channel for the rest of the run (the
// memory tier then goes on without replicas).
//
// Thread-safety: each channel is used by one thread at a time (the
// Coordinator contract); the channels may be used concurrently.

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/gloo_device.h"
#include "cluster/job_store.h"
#include "cluster/lifeline.h"
#include "cluster/rank_discovery.h"
#include "daemon/coordinator.h"

namespace autosnap {
namespace cluster {

class C10dCoordinator final : public daemon::Coordinator {
 public:
  using Options = JobStore::Options;

  /// Forms the groups and the lifeline (blocks until every rank joined;
  /// CoordinationError after the timeout, naming what did not answer).
  C10dCoordinator(const RankInfo& info, const Options& options);
  ~C10dCoordinator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::vector<std::string> exchange(const std::string& mine, daemon::Channel channel) override;
  std::vector<std::string> send_receive(const std::vector<std::pair<int, std::string_view>>& sends,
                                        const std::vector<int>& receive_from,
                                        daemon::Channel channel) override;
  std::vector<int> nodes() const override { return nodes_; }
  std::string where(int rank) const override;
  std::string lost() const override;
  std::string lost_after_a_moment() const override;
  void on_lost(std::function<void(const std::string&)> handler) override;
  void leave(bool cleanly) override;

  /// How the groups were formed, for the log: "gloo on 10.77.0.12 (...), store ...".
  std::string describe() const;

 private:
  struct Group;
  Group& group(daemon::Channel channel);
  void form(Group& group);
  void form_again(Group& group);
  std::optional<std::vector<std::string>> exchange_once(Group& group, int64_t sequence,
                                                        const std::string& mine);

  const int rank_;
  const int world_size_;
  const std::chrono::milliseconds timeout_;
  std::unique_ptr<JobStore> store_;
  GlooDevice device_;
  std::vector<std::string> hosts_;    // by rank; all empty when every rank runs on one host
  std::vector<int> nodes_;            // by rank: host and node rank (GROUP_RANK, SLURM_NODEID) together
  std::unique_ptr<Group> groups_[3];  // by Channel
  std::unique_ptr<Lifeline> lifeline_;
};

}  // namespace cluster
}  // namespace autosnap
