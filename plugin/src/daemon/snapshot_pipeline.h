#pragma once

// Taking snapshots: the training thread stages the tracked state into a
// staging slot (staging_slots.h; or, in sync mode or when it does not fit,
// has it written from the live tensors while it waits); the writer strand
// serializes, checksums, writes, commits when every rank may, and applies
// retention. flush.overlap's deferred copies are settled here too.
//
// In a job of several ranks each write is two rounds of agreement.h: the tmp
// dir (rank 0 begins it; every rank also learns whether the snapshot before
// was committed, in case it missed that verdict), then the commit (every
// rank's files; rank 0 commits when all have them). A failed round leaves
// nothing committed and the next snapshot starts afresh; the tmp dir of a
// snapshot abandoned that way is removed once every rank is past it.
// Failures in a row are counted: max_consecutive_failures of them make the
// next hook throw, even with on_error: warn.
//
// Thread-safety: submit(), settle_overlap(), abandon_unconfirmed_overlap()
// and resumed_from() are called from the training thread;
// wait_until_finished(), check_for_errors(), stats() and progress() from any
// thread; the writing itself runs on the strand. One mutex guards the counters
// and errors; no callback runs while it is held.

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "autosnap/config.h"
#include "autosnap/snapshotter.h"
#include "autosnap/store.h"
#include "daemon/agreement.h"
#include "daemon/background.h"
#include "daemon/coordinator.h"
#include "daemon/event_log.h"
#include "daemon/snapshot_job.h"
#include "daemon/staging_slots.h"
#include "daemon/tracked_set.h"
#include "store/snapshot_writer.h"

namespace autosnap {
namespace daemon {

/// Which tier a pipeline writes. The disk tier is the job's store, written
/// together by every rank. The memory tier (memory_tier.h) is one store per
/// rank, written alone: its pipeline's coordinator is a SingleProcessCoordinator,
/// so each memory snapshot is a one-rank snapshot (rank-00000.pt) whose labels
/// say which rank of how many took it (memory_tier_labels). It takes a
/// snapshot every step or so, so it writes no per-snapshot events or info
/// lines, and its first failure turns it off (one warning; the disk tier goes on).
struct PipelineTier {
  bool memory = false;
  /// Memory: asked before the first snapshot, with its size: empty when the
  /// tier has room for it, else why not (the tier turns off).
  std::function<std::string(uint64_t bytes)> room_for;
  /// Memory: called on the strand after each write, committed or not, while
  /// it still counts as in flight (the replicas go then: memory_replicas.h).
  std::function<void(int64_t step, bool committed)> after_write;
};

class SnapshotPipeline {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;
  /// `labels` (where the job runs: Slurm job id, restart count) go into
  /// every manifest and `started` event.
  SnapshotPipeline(const Config& config, SnapshotStore& store, EventLog& events, Coordinator& coordinator,
                   const TrackedSet& tracked, BackgroundThreads& background, Labels labels = {},
                   PipelineTier tier = {});
  SnapshotPipeline(const SnapshotPipeline&) = delete;
  SnapshotPipeline& operator=(const SnapshotPipeline&) = delete;

  /// Stages the snapshot of `step` and queues its write. False when it was
  /// skipped (busy, when_busy: skip; never for kMustTake). A staging failure
  /// is told to `waiters` and thrown.
  bool submit(int64_t step, const LoopPosition& position, const std::string& reason, Urgency urgency,
              std::vector<OutcomeCallback> waiters);
  /// A second snapshot of a step adds nothing; its requesters get the first
  /// one's outcome once the writes queued before them are done.
  void answer_after_pending_writes(int64_t step, std::vector<OutcomeCallback> waiters);

  /// flush.overlap: finishes the deferred copies (commit) or discards the
  /// snapshot whose copies may have seen optimizer.step().
  void settle_overlap(bool commit);
  /// A step ended while a pipelined copy was unconfirmed: discard it and
  /// stage synchronously from now on.
  void abandon_unconfirmed_overlap();

  /// Blocks until every queued snapshot is committed or has failed.
  void wait_until_finished();
  /// Throws the oldest background failure not reported yet.
  void check_for_errors();
  /// True once max_consecutive_failures snapshots in a row have failed here
  /// (whatever on_error says); take_failures_in_a_row() then throws it and
  /// counting starts again.
  bool failing_in_a_row() const;
  void take_failures_in_a_row();
  /// After the writer stopped: removes the tmp dirs of snapshots abandoned
  /// because a rank stopped answering.
  void remove_abandoned();
  /// Before a restore (nothing queued): the staging memory lets go of the live
  /// storages, so the restore may install the storages it read in their place.
  void forget_sources() { slots_.forget_sources(); }
  /// A restore installed `step` from `path`: it counts as the last committed.
  void resumed_from(int64_t step, const std::string& path);

  struct Progress {
    std::optional<int64_t> last_committed;  ///< by this process, or restored
    std::string last_committed_path;
    int in_flight = 0;
    int64_t committed = 0;
    int64_t consecutive_failures = 0;
    std::string last_failure;
  };
  Progress progress() const;
  /// A snapshot is staged or being written now, or one ended since the
  /// last call (`ended`: the count of ended writes that call saw, updated).
  bool wrote_since(int64_t& ended) const;
  SnapshotStats stats() const;
  /// Memory tier: on, and nothing in flight, so a snapshot submitted now is
  /// taken (the training thread is the only one that submits).
  bool ready_for_memory_snapshot() const;
  /// Memory tier: a due snapshot was not taken because a rank was still writing its last one.
  void record_skip();
  /// Memory tier: why it was turned off (empty while it is on).
  std::string off_because() const;
  /// Memory tier: turns it off with one warning (a failure, or no room).
  void turn_off(const std::string& why);

 private:
  std::shared_ptr<SnapshotJob> stage(int64_t step, const std::string& reason, Urgency urgency);
  // Stages `shard` into the job's slot and copies it there: at once, or with
  // flush.overlap what only optimizer.step() modifies later, while the next
  // forward and backward run. `count_bytes`: the job's bytes from its copies.
  void copy_into_slot(const std::shared_ptr<SnapshotJob>& job, const c10::impl::GenericDict& shard,
                      bool count_bytes);
  void run(const std::shared_ptr<SnapshotJob>& job, std::vector<OutcomeCallback> waiters);  // strand

  // One write, in steps (strand).
  struct Attempt;
  SnapshotInfo write(SnapshotJob& job);
  void begin(const SnapshotJob& job, Attempt& attempt);
  void write_files(const SnapshotJob& job, Attempt& attempt);
  void commit_when_all_ready(const SnapshotJob& job, Attempt& attempt);
  SnapshotInfo record_commit(const SnapshotJob& job, Attempt& attempt);
  void settle(int64_t step, bool committed);
  void learn_settled(const Verdict& verdict);
  void apply_retention(int64_t newest);

  void record_failure(int64_t step, const std::string& reason, std::exception_ptr error);
  void add_in_flight(int delta);

  const Config& config_;
  SnapshotStore& store_;
  EventLog& events_;
  Coordinator& coordinator_;
  const TrackedSet& tracked_;
  BackgroundThreads& background_;
  const Labels labels_;
  const PipelineTier tier_;
  BackgroundThreads::Strand strand_;  // this pipeline's writes, in order

  // Training thread only.
  bool overlap_;
  bool room_checked_ = false;                 // memory tier
  std::shared_ptr<SnapshotJob> overlap_job_;  // staged, deferred copies not yet confirmed

  StagingSlots slots_;

  // Strand only.
  int64_t settled_step_ = -1;  // the last snapshot this rank has an outcome for
  bool settled_committed_ = false;
  std::vector<std::unique_ptr<SnapshotWriter>> abandoned_;  // rank 0: tmp dirs a rank may still write into

  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable changed_;
  int in_flight_ = 0;
  int64_t writes_ended_ = 0;
  std::deque<std::exception_ptr> errors_;
  int64_t consecutive_failures_ = 0;
  std::string last_failure_;
  std::exception_ptr failures_in_a_row_;  // to throw at the next hook
  SnapshotStats stats_;
  std::string off_because_;  // memory tier: turned off
  std::optional<int64_t> last_committed_;
  std::string last_committed_path_;
};

}  // namespace daemon
}  // namespace autosnap
