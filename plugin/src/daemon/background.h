#pragma once

// The daemon's background threads: one Boost.Asio io_context run by
// flush.threads threads, with one strand on which snapshots are written in
// order (the store sees one writer). Control-socket and signal handlers run
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

  BackgroundThreads() : work_(boost::asio::make_work_guard(io_)), strand_(boost::asio::make_strand(io_)) {}
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
  Strand& strand() { return strand_; }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  Strand strand_;
  std::vector<std::thread> threads_;
};

}  // namespace daemon
}  // namespace autosnap
