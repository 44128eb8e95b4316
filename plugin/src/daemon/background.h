#pragma once

// The daemon's background threads: one Boost.Asio io_context run by
// flush.threads threads (one more with the memory tier). Each tier's
// pipeline writes its snapshots in order on a strand of its own (each store
// sees one writer, and a slow disk never holds up the memory tier). Control-socket and signal handlers run
// on the same threads, never on the training thread.
//
// The threads run as SCHED_BATCH: woken (a snapshot to write, a deferred
// copy) they wait for a free core or the end of the running thread's time
// slice instead of preempting it. As ordinary threads, one woken by the
// training thread on a 2-core VM took its core for a whole slice: the
// 64 MB overlap stall was 2.9-3.0 ms of it, 0.14-0.18 ms without. Threads
// they start (the copies' helpers) inherit it.
//
// Thread-safety: construct and join() from the thread that owns the daemon.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <pthread.h>
#include <sched.h>

#include <thread>
#include <vector>

namespace autosnap {
namespace daemon {

class BackgroundThreads {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

  BackgroundThreads() : work_(boost::asio::make_work_guard(io_)) {}
  ~BackgroundThreads() { join(); }
  BackgroundThreads(const BackgroundThreads&) = delete;
  BackgroundThreads& operator=(const BackgroundThreads&) = delete;

  void start(int threads) {
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this] {
#ifdef SCHED_BATCH  // Linux
        const sched_param no_priority{};
        pthread_setschedparam(pthread_self(), SCHED_BATCH, &no_priority);  // best effort: a hint only
#endif
        io_.run();
      });
    }
  }
  /// Stops the threads; handlers not run yet are dropped, so the owner waits
  /// for its queued work first.
  void join() {
    if (threads_.empty()) return;
    work_.reset();
    io_.stop();
    for (auto& thread : threads_) thread.join();
    threads_.clear();
  }
  bool running() const { return !threads_.empty(); }

  boost::asio::io_context& io() { return io_; }
  Strand make_strand() { return boost::asio::make_strand(io_); }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
};

}  // namespace daemon
}  // namespace autosnap
