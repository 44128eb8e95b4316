#pragma once

// The daemon's background threads: one Boost.Asio io_context run by
// flush.threads threads (one more with the memory tier). Each tier's
// pipeline writes its snapshots in order on a strand of its own (each store
// sees one writer, and a slow disk never holds up the memory tier). Control-socket and signal handlers run
// on the same threads, never on the training thread.
//
// Thread-safety: construct and join() from the thread that owns the daemon.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

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
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { io_.run(); });
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
