#include "daemon/restorer.h"

#include "autosnap/errors.h"
#include "daemon/agreement.h"
#include "daemon/snapshot_job.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {

using util::log;

Restorer::Restorer(const Config& config, FileSystem& fs, SnapshotStore& store, EventLog& events,
                   Coordinator& coordinator, const TrackedSet& tracked, c10::Device device)
    : config_(config),
      fs_(fs),
      store_(store),
      events_(events),
      coordinator_(coordinator),
      tracked_(tracked),
      device_(device) {}

void Restorer::report_quarantined(const SnapshotInfo& info, const std::string& problem) {
  log()->warn("snapshot {} is damaged ({}); quarantined as {}", info.step, problem, info.name);
  events_.write("quarantined", {{"step", info.step}, {"name", info.name}, {"problem", problem}});
}

void Restorer::quarantine(int64_t step, const std::string& problem) {
  SnapshotInfo quarantined;
  quarantined.step = step;
  quarantined.name = store_.quarantine(step);
  report_quarantined(quarantined, problem);
}

// This rank's part of restoring one snapshot.
struct Restorer::Attempt {
  enum Kind { kReady, kBad, kError } kind = kError;  // kBad: quarantine it and try an older one
  std::string problem;
  std::exception_ptr error;          // kError on this rank
  std::function<void()> install;     // kReady
  std::optional<ResumePoint> point;  // kReady

  RankReport report(int64_t step) const {
    RankReport r;
    r.step = step;
    r.state = kind == kReady ? RankReport::State::kReady
                             : (kind == kBad ? RankReport::State::kDamaged : RankReport::State::kFailed);
    r.problem = problem;
    return r;
  }
};

Restorer::Attempt Restorer::prepare(int64_t step, const std::optional<Snapshot>& picked,
                                    RestoreAttempts& attempts) {
  Attempt attempt;
  try {
    // The manifest is read once per restore: rank 0 reuses the handle it chose by.
    const Snapshot snapshot = picked && picked->step() == step ? *picked : store_.open(step);
    const Manifest& m = snapshot.manifest();
    const int world = coordinator_.world_size();
    const int rank = coordinator_.rank();
    const int written_by = m.world_size;
    if (written_by != world && !config_.distributed.replicated) {
      throw StateMismatch(
          "snapshot " + snapshot.path() + " was written by " + std::to_string(written_by) +
          " rank(s); this job runs " + std::to_string(world) +
          "; resume it with the same number of ranks (or, for pure data parallel training, set "
          "distributed.replicated: true)");
    }
    const int crashes = attempts.crashes(step);
    if (crashes >= config_.restore.max_attempts) {
      attempt.kind = Attempt::kBad;
      attempt.problem = "restoring it crashed " +
                        (world == 1 ? std::string("the process") : "rank " + std::to_string(rank)) + " " +
                        std::to_string(crashes) + " times in a row (restore.max_attempts)";
      return attempt;
    }
    // Count this attempt durably before touching anything: if it crashes us, the next start knows.
    try {
      attempts.begin(step);
    } catch (const IoError& e) {
      log()->warn("cannot record the restore attempt ({}); crash-loop protection is off for this start",
                  e.what());
    }
    // Replicated state: rank 0's shard, with this rank's own random state when it has a shard.
    const bool replicated = written_by != world;
    // Every rank checks the shards it reads as it reads them (rank 0's latest_valid() checked the others).
    c10::IValue shard = snapshot.read_shard(replicated ? 0 : rank, device_);
    // Rank 0's own random state is in the shard it just read: no second read.
    if (replicated && config_.capture.rng && rank != 0) {
      auto dict = shard.toGenericDict();
      static_cast<void>(dict.erase(kRngEntry));  // replaced by this rank's own, when it has one
      if (rank < written_by) {
        const auto own = snapshot.read_shard(rank, device_).toGenericDict();
        if (own.contains(kRngEntry)) dict.insert(kRngEntry, own.at(kRngEntry));
      }
    }
    attempt.install = tracked_.prepare(shard, config_.restore.strict,
                                       "of step " + std::to_string(step) + " (" + snapshot.path() + ")");
    attempt.point = ResumePoint{step, m.epoch, m.batch, m.epoch_ended, m.reason, snapshot.path()};
    attempt.kind = Attempt::kReady;
  } catch (const CorruptSnapshot& e) {
    attempt.kind = Attempt::kBad;
    attempt.problem = e.what();
  } catch (const std::exception& e) {
    attempt.kind = Attempt::kError;
    attempt.problem = e.what();
    attempt.error = std::current_exception();
  }
  return attempt;
}

std::optional<ResumePoint> Restorer::restore_latest() {
  auto on_quarantine = [&](const SnapshotInfo& info, const std::string& problem) {
    report_quarantined(info, problem);
  };
  auto attempts = std::make_unique<RestoreAttempts>(fs_, config_.directory, coordinator_.rank());
  while (true) {
    const auto start = Clock::now();
    // Round 1: rank 0 picks the newest snapshot whose every file (every rank's shard) verifies.
    std::exception_ptr pick_error;
    std::optional<Snapshot> picked;
    const Verdict pick =
        agree(coordinator_, Channel::kTraining, RankReport{}, [&](const std::vector<RankReport>&) {
          Verdict v;
          try {
            // Rank 0's own shard is verified as prepare() reads it, in one pass.
            picked = store_.latest_valid(on_quarantine, [](const Snapshot& candidate) {
              return candidate.verify_all_but(shard_file_name(0));
            });
            if (picked) {
              v.step = picked->step();
            } else {
              v.kind = Verdict::Kind::kNothing;
            }
          } catch (...) {
            pick_error = std::current_exception();
            throw;
          }
          return v;
        });
    if (pick_error) std::rethrow_exception(pick_error);
    if (pick.kind == Verdict::Kind::kFailed)
      throw Error("rank 0 could not choose a snapshot to resume from: " + pick.why);
    if (pick.kind == Verdict::Kind::kNothing) return std::nullopt;
    const int64_t step = pick.step;

    // Round 2: every rank prepares its part; rank 0 hears them all and decides for all.
    Attempt attempt = prepare(step, picked, *attempts);
    const Verdict verdict =
        agree(coordinator_, Channel::kTraining, attempt.report(step),
              [&](const std::vector<RankReport>& reports) { return first_problem(reports, coordinator_); });
    if (verdict.kind != Verdict::Kind::kGo) {
      forget(*attempts);  // an error or a bad snapshot, not a crash: do not count it
      if (attempt.error) std::rethrow_exception(attempt.error);
      if (verdict.kind == Verdict::Kind::kFailed)
        throw Error("cannot resume from step " + std::to_string(step) + ": " + verdict.why);
      // Damaged: quarantined by rank 0, which picks again (the next round 1) only after that.
      if (coordinator_.rank() == 0) quarantine(step, verdict.why);
      continue;
    }
    attempt.install();
    unconfirmed_ = std::move(attempts);  // confirmed by the first completed step
    const ResumePoint point = *attempt.point;
    const double load_ms = milliseconds_since(start);
    events_.write("restored", {{"step", point.step}, {"path", point.path}, {"load_ms", load_ms}});
    log()->info("resumed from step {} ({}), restored in {:.0f} ms", point.step, point.path, load_ms);
    return point;
  }
}

void Restorer::step_completed() {
  if (!unconfirmed_) return;
  forget(*unconfirmed_);
  unconfirmed_.reset();
}

void Restorer::forget(RestoreAttempts& attempts) {
  try {
    attempts.end();
  } catch (const IoError& e) {
    log()->warn("cannot clear the restore attempt record: {}", e.what());
  }
}

}  // namespace daemon
}  // namespace autosnap
