// SnapshotPipeline's writes, in steps (on the writer strand): the tmp dir's
// round, this rank's files, the commit's round, the bookkeeping. In a job of
// several ranks each round is one agree() of agreement.h; in one process the
// rounds answer themselves.
#include <nlohmann/json.hpp>

#include "autosnap/errors.h"
#include "daemon/snapshot_pipeline.h"
#include "store/snapshot_writer.h"
#include "util/exception_text.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {

using util::log;

// This rank's part of one write.
struct SnapshotPipeline::Attempt {
  std::unique_ptr<SnapshotWriter> writer;
  std::exception_ptr failure;             // this rank's own, rethrown as it was
  std::optional<SnapshotInfo> committed;  // rank 0, once it committed
};

SnapshotInfo SnapshotPipeline::write(SnapshotJob& job) {
  Attempt attempt;
  try {
    begin(job, attempt);
    write_files(job, attempt);
    commit_when_all_ready(job, attempt);
  } catch (const CoordinationError&) {
    // Another rank may still be writing into the tmp dir: remove it once every rank is past this snapshot.
    settle(job.step, false);
    if (attempt.writer && coordinator_.rank() == 0) abandoned_.push_back(std::move(attempt.writer));
    throw;
  }
  return record_commit(job, attempt);
}

// Round 1: rank 0 begins the tmp dir; every rank hears its name, and how the
// snapshot before this one ended.
void SnapshotPipeline::begin(const SnapshotJob& job, Attempt& attempt) {
  const bool leader = coordinator_.rank() == 0;
  RankReport mine;
  mine.step = job.step;
  if (leader) {
    try {
      attempt.writer = SnapshotWriter::begin(store_, job.step);
    } catch (...) {
      attempt.failure = std::current_exception();
      mine.state = RankReport::State::kFailed;
      mine.problem = util::exception_text(attempt.failure);
    }
  }
  const Verdict verdict =
      agree(coordinator_, Channel::kWriter, mine, [&](const std::vector<RankReport>& reports) {
        Verdict v = first_problem(reports, coordinator_);
        if (v.kind == Verdict::Kind::kGo) v.detail = attempt.writer->tmp_name();
        v.settled_step = settled_step_;
        v.settled_committed = settled_committed_;
        return v;
      });
  learn_settled(verdict);
  if (leader && verdict.kind == Verdict::Kind::kGo) abandoned_.clear();  // every rank is past them: remove
  if (verdict.kind != Verdict::Kind::kGo) {
    settle(job.step, false);
    if (attempt.failure) std::rethrow_exception(attempt.failure);
    throw Error("snapshot of step " + std::to_string(job.step) + " not started: " + verdict.why);
  }
  if (leader) return;
  try {
    attempt.writer = SnapshotWriter::join(store_, job.step, verdict.detail);
  } catch (...) {
    attempt.failure = std::current_exception();  // said in round 2, which every rank must reach
  }
}

// This rank's shard and extra files; a failure is reported in round 2.
void SnapshotPipeline::write_files(const SnapshotJob& job, Attempt& attempt) {
  if (attempt.failure) return;
  try {
    const int rank = coordinator_.rank();
    attempt.writer->write_shard(rank, job.value);
    tracked_.write_extra_files(job.value.toGenericDict(), *attempt.writer, rank);
    if (job.gate && !job.gate->wait()) {
      throw Error("snapshot of step " + std::to_string(job.step) + " discarded: " + job.gate->why());
    }
  } catch (...) {
    attempt.failure = std::current_exception();
  }
}

// Round 2: every rank's files; rank 0 commits only when every rank has them.
void SnapshotPipeline::commit_when_all_ready(const SnapshotJob& job, Attempt& attempt) {
  RankReport mine;
  mine.step = job.step;
  if (attempt.failure) {
    mine.state = RankReport::State::kFailed;
    mine.problem = util::exception_text(attempt.failure);
  } else {
    mine.files = attempt.writer->files();
  }
  const Verdict verdict =
      agree(coordinator_, Channel::kWriter, mine, [&](const std::vector<RankReport>& reports) {
        Verdict v = first_problem(reports, coordinator_);
        if (v.kind != Verdict::Kind::kGo) return v;
        try {
          for (size_t r = 1; r < reports.size(); ++r)
            for (const auto& file : reports[r].files) attempt.writer->add_file(file);
          Manifest manifest;
          manifest.epoch = job.position.epoch;
          manifest.batch = job.position.batch;
          manifest.epoch_ended = job.position.epoch_ended;
          manifest.reason = job.reason;
          manifest.world_size = coordinator_.world_size();
          manifest.entries = tracked_.manifest_entries();
          manifest.job = labels_;
          attempt.committed = attempt.writer->commit(manifest);
        } catch (...) {
          attempt.failure = std::current_exception();
          throw;  // a kFailed verdict naming rank 0
        }
        return v;
      });
  settle(job.step, verdict.kind == Verdict::Kind::kGo);
  if (attempt.failure) std::rethrow_exception(attempt.failure);  // this rank's own error, as it was
  if (verdict.kind != Verdict::Kind::kGo) {
    throw Error("snapshot of step " + std::to_string(job.step) + " not committed: " + verdict.why);
  }
}

// Every rank: counters, the event, the log line; rank 0 applies retention.
SnapshotInfo SnapshotPipeline::record_commit(const SnapshotJob& job, Attempt& attempt) {
  const bool leader = coordinator_.rank() == 0;
  SnapshotInfo committed;
  if (attempt.committed) {
    committed = *attempt.committed;
  } else {  // rank 0 committed it
    committed.step = job.step;
    committed.name = SnapshotStore::directory_name(job.step);
    committed.path = store_.snapshot_path(job.step);
    committed.status = SnapshotStatus::kValid;
  }
  const double persist_ms = milliseconds_since(job.started);
  const uint64_t bytes = committed.manifest ? committed.manifest->total_bytes() : 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.committed;
    stats_.last_stall_ms = job.stall_ms;
    last_committed_ = job.step;
    last_committed_path_ = committed.path;
    consecutive_failures_ = 0;
  }
  if (tier_.memory) {
    log()->debug("memory snapshot of step {} committed in {:.0f} ms; training stalled {:.1f} ms", job.step,
                 persist_ms, job.stall_ms.load());
    apply_retention(job.step);  // a failure here is the tier's failure: it turns off
    return committed;
  }
  nlohmann::json event = {{"step", job.step},
                          {"reason", job.reason},
                          {"stall_ms", job.stall_ms.load()},
                          {"persist_ms", persist_ms},
                          {"path", committed.path}};
  if (leader) event["bytes"] = bytes;
  events_.write("committed", std::move(event));
  log()->info("committed step {} ({}{}) in {:.0f} ms; training stalled {:.1f} ms", job.step, job.reason,
              leader ? ", " + util::human_bytes(bytes) : "", persist_ms, job.stall_ms.load());
  if (leader) {
    try {
      apply_retention(job.step);
    } catch (...) {
      record_failure(job.step, "retention", std::current_exception());
    }
  }
  return committed;
}

void SnapshotPipeline::settle(int64_t step, bool committed) {
  settled_step_ = step;
  settled_committed_ = committed;
}

// A rank that lost rank 0's verdict (its round failed where rank 0's did
// not) learns the outcome from rank 0's record at the next snapshot.
void SnapshotPipeline::learn_settled(const Verdict& verdict) {
  if (coordinator_.rank() == 0 || verdict.settled_step < 0 || !verdict.settled_committed) return;
  if (verdict.settled_step == settled_step_ && settled_committed_) return;
  log()->info(
      "the snapshot of step {} was committed after all: rank 0 committed it, this rank missed the verdict",
      verdict.settled_step);
  events_.write("committed", {{"step", verdict.settled_step},
                              {"path", store_.snapshot_path(verdict.settled_step)},
                              {"verdict_missed", true}});
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.committed;
  last_committed_ = verdict.settled_step;
  last_committed_path_ = store_.snapshot_path(verdict.settled_step);
  consecutive_failures_ = 0;
}

}  // namespace daemon
}  // namespace autosnap
