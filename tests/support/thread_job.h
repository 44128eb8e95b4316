#pragma once

// A job of several ranks inside one test process: each rank a thread with
// its own Coordinator, exchanging through shared memory. kill(r) plays a
// rank's process dying: every exchange that needs it throws
// CoordinationError at once on the others, as the c10d Coordinator does when
// its lifeline sees a connection close.

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/coordinator.h"

namespace autosnap {
namespace testing {

class ThreadJob {
 public:
  explicit ThreadJob(int world);
  /// Rank r's coordinator (valid while the job lives).
  std::unique_ptr<daemon::Coordinator> coordinator(int rank);
  /// Rank r died: the others' exchanges throw from now on.
  void kill(int rank);
  int world() const { return world_; }

 private:
  class RankCoordinator;
  std::vector<std::string> exchange(int rank, daemon::Channel channel, int64_t sequence, const std::string& mine);
  std::string lost_locked() const;

  const int world_;
  std::mutex mutex_;
  std::condition_variable changed_;
  // (channel, sequence) -> each rank's message; erased when every rank has read it.
  struct Round {
    std::vector<std::optional<std::string>> messages;
    int read = 0;
  };
  std::map<std::pair<int, int64_t>, Round> rounds_;
  std::vector<bool> dead_;
};

}  // namespace testing
}  // namespace autosnap
