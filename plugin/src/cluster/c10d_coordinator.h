#pragma once

// The Coordinator of a multi-rank job on LibTorch's own distributed engine:
// a TCPStore (served by rank 0, or the job's own store passed in) and two
// Gloo groups of autosnap's own, one per channel (the training thread's and
// the writer strand's), each under its own key prefix. autosnap never issues
// a collective on the user's process group.
//
// A dead peer makes the waiting ranks throw within a fraction of a second, a
// hung one after `timeout`; the error names this rank and what it waited
// for. After an error the group of that channel is unusable (c10d's groups
// cannot recover): every later call on it throws at once.
//
// Thread-safety: each channel is used by one thread at a time (the
// Coordinator contract); the two channels may be used concurrently.

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <memory>
#include <string>

#include "cluster/rank_discovery.h"
#include "daemon/coordinator.h"

namespace autosnap {
namespace cluster {

class C10dCoordinator final : public daemon::Coordinator {
 public:
  /// Forms the groups (blocks until every rank joined or `timeout`). With
  /// `store` null, rank 0 serves a TCPStore at `port` of info.master_addr.
  C10dCoordinator(const RankInfo& info, int port, std::chrono::milliseconds timeout,
                  c10::intrusive_ptr<c10d::Store> store = {});
  ~C10dCoordinator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  uint64_t bitwise_or(uint64_t mine, daemon::Channel channel) override;
  std::string broadcast(const std::string& value, daemon::Channel channel) override;
  std::vector<std::string> gather(const std::string& value, daemon::Channel channel) override;
  void barrier(daemon::Channel channel) override;

 private:
  struct Group;
  Group& group(daemon::Channel channel);

  int rank_;
  int world_size_;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::Store> store_;
  std::unique_ptr<Group> training_;
  std::unique_ptr<Group> writer_;
};

}  // namespace cluster
}  // namespace autosnap
