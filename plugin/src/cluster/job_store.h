#pragma once

// Where autosnap's ranks find each other: a c10d store. Either the job's own
// store, when the program lends it (Snapshotter::Options::job_store), or a TCPStore
// served by rank 0: at distributed.port when that is set, else at a port the
// kernel picks, which rank 0 publishes in the snapshot directory
// (DIR/coordinator.json) for the other ranks to read. A fixed port such as
// MASTER_PORT + 1 collides with a second job launched at the next port
// (torchrun's habit: 29500, 29501); a published one cannot.
//
// Every user gets a connection of its own (connect()), so that a blocking
// wait on one (a group forming again) never holds up another.
//
// Thread-safety: connect() from one thread at a time; each connection is
// used by one thread at a time.

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <string>

#include "cluster/rank_discovery.h"

namespace c10d {
class TCPStore;
}

namespace autosnap {
namespace cluster {

class JobStore {
 public:
  struct Options {
    std::chrono::milliseconds timeout{300000};
    int port = 0;           ///< rank 0's TCPStore port; 0: one the kernel picks, published in `directory`
    std::string directory;  ///< the snapshot directory (shared by every node)
    c10::intrusive_ptr<c10d::Store> lent;  ///< the job's own store (Snapshotter::Options::job_store)
  };

  /// Rank 0 serves (unless a store is lent); the others connect, waiting up
  /// to the timeout for rank 0. CoordinationError naming what was tried.
  JobStore(const RankInfo& info, const Options& options);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  /// A connection of its own, its keys under `prefix`.
  c10::intrusive_ptr<c10d::Store> connect(const std::string& prefix);
  /// "autosnap's TCPStore at node1:41234", for messages.
  const std::string& describe() const { return description_; }

  /// The file rank 0 publishes its port in.
  static std::string published_path(const std::string& directory);

 private:
  void serve(const RankInfo& info, const Options& options);
  void find_published(const RankInfo& info, const Options& options);
  c10::intrusive_ptr<c10d::Store> open_client(std::chrono::milliseconds connect_timeout);

  std::chrono::milliseconds timeout_;
  std::string host_;
  int port_ = 0;
  c10::intrusive_ptr<c10d::Store> lent_;       // shared when it is not a TCPStore we can open clients to
  c10::intrusive_ptr<c10d::TCPStore> server_;  // rank 0's
  std::string published_;                      // rank 0: the file to remove at the end
  std::string description_;
};

}  // namespace cluster
}  // namespace autosnap
