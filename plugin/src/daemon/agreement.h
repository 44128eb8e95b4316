#pragma once

// How the ranks of a job decide together, in one typed protocol: every rank
// reports (RankReport), rank 0 decides from every report (Verdict), and
// every rank gets rank 0's verdict. The writer agrees on each snapshot's tmp
// dir and on its commit; the restore on the snapshot to resume from and on
// whether every rank can install it. Reports and verdicts are serialized here
// and nowhere else.
//
// Thread-safety: agree() uses the coordinator's channel; one thread per
// channel at a time (the Coordinator contract).

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "autosnap/manifest.h"
#include "daemon/coordinator.h"

namespace autosnap {
namespace daemon {

/// What one rank says in a round.
struct RankReport {
  enum class State {
    kReady,    ///< its part is done
    kDamaged,  ///< the snapshot is damaged here (restore): quarantine it, try an older one
    kFailed,   ///< an error here: the round fails on every rank
  };
  State state = State::kReady;
  std::string problem;              ///< kDamaged, kFailed: why, in this rank's words
  int64_t step = -1;                ///< the snapshot the round is about (-1: none yet)
  std::vector<ManifestFile> files;  ///< writer: the files this rank wrote into the tmp dir
  std::vector<int64_t> steps;       ///< restore: the memory snapshots this rank holds, ascending
  /// Restore: the replicas of other ranks' memory snapshots this rank holds, by rank, ascending.
  std::map<int, std::vector<int64_t>> replicas;
  /// Restore: this rank can take its memory snapshot from a replica.
  bool accepts_replicas = false;
};

/// Restore: `rank` lacks its memory snapshot of the chosen step; `holder` sends its replica.
struct ReplicaFetch {
  int holder = -1;
  int rank = -1;
  bool operator==(const ReplicaFetch& other) const { return holder == other.holder && rank == other.rank; }
};

/// What rank 0 decided, on every rank.
struct Verdict {
  enum class Kind {
    kGo,       ///< go ahead (with `step`)
    kNothing,  ///< nothing to do (restore: no snapshot to resume from)
    kDamaged,  ///< a rank found the snapshot damaged (`why`)
    kFailed,   ///< a rank failed (`why`)
  };
  Kind kind = Kind::kGo;
  std::string why;     ///< kDamaged, kFailed: "rank 1 on node2: ..."
  int64_t step = -1;   ///< the snapshot decided on
  std::string detail;  ///< writer: the tmp dir rank 0 began, for the others to join
  /// Writer: rank 0's record of the snapshot before this one (-1: none), so
  /// that a rank that missed its verdict learns whether it was committed.
  int64_t settled_step = -1;
  bool settled_committed = false;
  /// Restore: resume from every rank's memory tier, not the disk; `persist`:
  /// the disk has no snapshot of that step yet, so take one at once.
  bool from_memory = false;
  bool persist = false;
  /// Restore from memory: the replicas to send before anyone prepares.
  std::vector<ReplicaFetch> fetches;
};

/// One round. `decide` runs on rank 0 only, with every rank's report by rank;
/// it may act (commit, quarantine) and may throw, which is a kFailed verdict
/// naming rank 0. Throws CoordinationError when the ranks cannot exchange.
Verdict agree(Coordinator& coordinator, Channel channel, const RankReport& mine,
              const std::function<Verdict(const std::vector<RankReport>&)>& decide);

/// The usual decision: ranks about different steps fail; else the first
/// rank that failed, else the first that found damage, else go with the step.
Verdict first_problem(const std::vector<RankReport>& reports, const Coordinator& coordinator);

/// Restore: the newest step every rank can get, from its own `steps` or
/// (when it accepts_replicas) from a replica another rank holds (nullopt
/// when there is none); with
/// `fetches`, which replicas must be sent for it (the lowest holder's).
std::optional<int64_t> newest_common_step(const std::vector<RankReport>& reports,
                                          std::vector<ReplicaFetch>* fetches = nullptr);

// The wire format (JSON), exposed for tests. Parsing throws CoordinationError
// for malformed text.
std::string encode(const RankReport& report);
std::string encode(const Verdict& verdict);
RankReport decode_report(const std::string& text);
Verdict decode_verdict(const std::string& text);

}  // namespace daemon
}  // namespace autosnap
