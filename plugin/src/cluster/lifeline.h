#pragma once

// Notices a lost rank while training runs, whatever the training thread is
// doing (computing, or waiting in one of the job's own collectives, which
// may wait 30 minutes by PyTorch's default): every rank keeps a TCP
// connection to rank 0, and both ends send a heartbeat several times per
// timeout. A connection that closes without a goodbye is a process that died
// (its node's kernel closes it: noticed at once); one that stays silent for
// distributed.timeout_seconds is a hung process, a cut link or a lost node.
// Rank 0 tells every other rank whom it lost, so all ranks report the same.
// It runs on a thread of its own, so a busy process cannot delay it.
//
// Thread-safety: lost(), on_lost() and leave() from any thread.

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace c10d {
class Store;
}

namespace autosnap {
namespace cluster {

class Lifeline {
 public:
  /// Connects every rank to rank 0, which listens on `address` (a port the
  /// kernel picks, published in `store`). `hosts`: each rank's host, for
  /// messages (empty entries when every rank runs on one host). Blocks until
  /// every rank is connected; CoordinationError after `timeout`.
  Lifeline(int rank, int world, const std::string& address, std::vector<std::string> hosts,
           std::chrono::milliseconds timeout, c10d::Store& store);
  /// Stops watching; without a clean leave() first, the others count this rank as lost.
  ~Lifeline();
  Lifeline(const Lifeline&) = delete;
  Lifeline& operator=(const Lifeline&) = delete;

  /// Why the job lost a rank ("rank 1 on node2 is lost: ..."), or empty.
  std::string lost() const;
  /// lost(), after giving a loss that happens now the time to be noticed and
  /// said (a connection just reset: was it a death?). At most about one
  /// heartbeat interval plus the moment ranks of one node are gathered.
  std::string lost_after_settling() const;
  /// `handler` runs once, on the lifeline's thread, when a rank is lost (at
  /// once on this thread when one already is). Replacing it (with nullptr to
  /// stop) waits for a call in progress.
  void on_lost(std::function<void(const std::string&)> handler);
  /// This rank is done: with `cleanly`, the others are told it leaves on purpose.
  void leave(bool cleanly);

 private:
  struct Link {
    int fd = -1;
    int rank = -1;
    std::chrono::steady_clock::time_point heard;
    std::string unread;     // a partial line
    bool departed = false;  // said goodbye
    bool closed = false;
  };
  void form_as_rank0(const std::string& address, c10d::Store& store);
  void form_as_peer(c10d::Store& store);
  void run();
  void read_from(Link& link, std::chrono::steady_clock::time_point now);
  void suspect(int rank, const std::string& why);
  void announce(const std::string& why);
  std::string describe_suspects() const;
  std::string where(int rank) const;

  const int rank_;
  const int world_;
  const std::vector<std::string> hosts_;
  const std::chrono::milliseconds timeout_;
  const std::chrono::milliseconds interval_;
  const std::chrono::milliseconds gather_;  // after a first loss, others of the same node are awaited this long
  std::vector<Link> links_;  // rank 0: one per other rank; others: rank 0's
  int wake_fd_ = -1;         // eventfd: leave() and the destructor interrupt the thread's poll

  // Lifeline thread only.
  std::vector<std::pair<int, std::string>> suspects_;  // rank 0: lost ranks not announced yet
  std::chrono::steady_clock::time_point first_suspected_;

  mutable std::mutex mutex_;  // guards the two below
  std::string lost_;
  bool leaving_cleanly_ = false;
  std::mutex handler_mutex_;  // held while the handler runs
  std::function<void(const std::string&)> handler_;
  bool handled_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace cluster
}  // namespace autosnap
