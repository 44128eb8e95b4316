#pragma once

// Copies of the memory tier on other nodes (memory.replicas), so that losing
// a node does not lose its ranks' memory snapshots.
//
// Placement is a ring by node: rank r, the i-th rank of its node n, has its
// replicas held by the i-th rank (modulo their count) of nodes n+1, n+2, ...
// Every rank computes the same placement from Coordinator::nodes().
//
// After each memory snapshot (every rank takes them at the same steps: a
// busy rank makes all skip), the memory strand sends this rank's snapshot,
// files as they are in the tier, to its holders and receives those it
// holds, over the coordinator's kReplica channel, never the training's. A
// replica is committed into the holder's tier with the store's protocol,
// each file's checksum compared with its manifest as it is written, in
//   <this rank's tier>/replicas/rank-NNNNN/   (a store per rank held)
// and keeps memory.keep_last. A failed transfer (a peer lost or past the
// timeout) turns replicas off for the rest of the run with one warning; the
// memory tier and the disk go on.
//
// At a restart every rank reports the replicas it holds; a rank that lacks
// its own copy of the chosen step gets it from a holder (fetch()) before
// anyone prepares, into its own tier, and restores it from there.
//
// Thread-safety: after_memory_snapshot() runs on the memory strand;
// held_steps(), fetch() and drop_newer_than() on the training thread during
// a restore, when the strand is idle; off_because() and sent() from any thread.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "autosnap/store.h"
#include "daemon/agreement.h"
#include "daemon/coordinator.h"
#include "daemon/memory_tier.h"

namespace autosnap {
namespace daemon {

/// Who holds whose replicas.
struct ReplicaPlacement {
  std::vector<std::vector<int>> holders;  ///< by rank: the ranks holding its replicas
  std::vector<std::vector<int>> held;     ///< by rank: the ranks whose replicas it holds
  /// The ring by node, with min(replicas, nodes - 1) holders per rank.
  static ReplicaPlacement ring(const std::vector<int>& nodes, int replicas);
};

/// A committed snapshot's files (manifest.yaml last) as one message.
std::string pack_snapshot(const SnapshotStore& store, int64_t step);
/// Commits a packed snapshot into `store` (replacing one of the same step),
/// checking each file against its manifest as it is written; returns its
/// step. Throws CorruptSnapshot when a file does not match, Error when the
/// message is malformed.
int64_t commit_packed_snapshot(const std::string& packed, SnapshotStore& store);

class MemoryReplicas {
 public:
  MemoryReplicas(MemoryTier& tier, Coordinator& coordinator, int replicas, int64_t keep_last);
  MemoryReplicas(const MemoryReplicas&) = delete;
  MemoryReplicas& operator=(const MemoryReplicas&) = delete;

  /// Empty while replicas are sent; else why not (one node, a failed transfer).
  std::string off_because() const;
  /// Memory snapshots of this rank that every holder has committed.
  int64_t sent() const { return sent_.load(); }
  /// "rank 2 on node2": where this rank's replicas go.
  std::string holders_text() const;

  /// Memory strand, after each memory snapshot of this rank (`committed` or
  /// not: the peers expect a message either way).
  void after_memory_snapshot(int64_t step, bool committed);

  /// Restore: the steps of the replicas held here that a job of this world
  /// size may use, by the rank they belong to.
  std::map<int, std::vector<int64_t>> held_steps();
  /// Restore, on every rank named in `fetches`: holders send their replica
  /// of `step`, the others commit theirs into their own tier. Empty, or why
  /// this rank's part failed.
  std::string fetch(int64_t step, const std::vector<ReplicaFetch>& fetches);
  /// After a restore of `step` (-1: none): replicas of later steps belong to
  /// a run that will be done again.
  void drop_newer_than(int64_t step);

 private:
  SnapshotStore& store_of(int rank);
  void turn_off(const std::string& why);

  MemoryTier& tier_;
  Coordinator& coordinator_;
  const int64_t keep_last_;
  ReplicaPlacement placement_;
  std::map<int, std::unique_ptr<SnapshotStore>> held_;  // by the rank they belong to
  std::atomic<int64_t> sent_{0};
  mutable std::mutex mutex_;  // guards off_because_
  std::string off_because_;
};

}  // namespace daemon
}  // namespace autosnap
