#include "daemon/restorer.h"

#include "autosnap/errors.h"
#include "daemon/agreement.h"
#include "daemon/snapshot_job.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {

using util::log;

Restorer::Restorer(const Config& config, FileSystem& fs, SnapshotStore& store, EventLog& events,
                   Coordinator& coordinator, const TrackedSet& tracked, c10::Device device,
                   MemoryTier* memory, MemoryReplicas* replicas)
    : config_(config),
      fs_(fs),
      store_(store),
      events_(events),
      coordinator_(coordinator),
      tracked_(tracked),
      device_(device),
      memory_(memory),
      replicas_(replicas) {}

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

Restorer::Attempt Restorer::prepare(const Verdict& chosen, const std::optional<Snapshot>& picked,
                                    RestoreAttempts& attempts) {
  const int64_t step = chosen.step;
  Attempt attempt;
  try {
    // The manifest is read once per restore: rank 0 reuses the handle it chose by.
    const Snapshot snapshot = chosen.from_memory                 ? memory_->store().open(step)
                              : picked && picked->step() == step ? *picked
                                                                 : store_.open(step);
    const Manifest& m = snapshot.manifest();
    const int world = coordinator_.world_size();
    const int rank = coordinator_.rank();
    // A memory snapshot is this rank's own shard, kept as a one-rank snapshot (memory_tier.h).
    const int written_by = chosen.from_memory ? world : m.world_size;
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
    c10::IValue shard = snapshot.read_shard(replicated || chosen.from_memory ? 0 : rank, device_);
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

// Round 1's report: this rank's memory snapshots that a restore of this job
// may use (taken by this rank of this world size), and the replicas it holds.
RankReport Restorer::memory_held() {
  RankReport report;
  if (!memory_) return report;
  try {
    for (const auto& info : memory_->store().list()) {
      if (info.status == SnapshotStatus::kValid &&
          MemoryTier::taken_by(*info.manifest, coordinator_.rank(), coordinator_.world_size()))
        report.steps.push_back(info.step);
    }
  } catch (const std::exception& e) {
    log()->warn("cannot list the memory tier ({}): resuming from the disk", e.what());
    return RankReport{};
  }
  if (replicas_) {
    report.replicas = replicas_->held_steps();
    report.accepts_replicas = true;
  }
  return report;
}

Verdict Restorer::pick(const std::vector<RankReport>& reports, std::optional<Snapshot>& picked) {
  Verdict v;
  const std::optional<int64_t> in_memory = newest_common_step(reports, &v.fetches);
  const auto on_disk = store_.committed_steps();  // names only: nothing of a snapshot is read
  if (in_memory && (on_disk.empty() || *in_memory >= on_disk.back())) {
    v.step = *in_memory;
    v.from_memory = true;
    v.persist = on_disk.empty() || *in_memory > on_disk.back();
    return v;
  }
  // Rank 0's own shard is verified as prepare() reads it, in one pass.
  picked = store_.latest_valid(
      [&](const SnapshotInfo& info, const std::string& problem) { report_quarantined(info, problem); },
      [](const Snapshot& candidate) { return candidate.verify_all_but(shard_file_name(0)); });
  if (in_memory && (!picked || picked->step() < *in_memory)) {  // newer disk ones were damaged
    v.step = *in_memory;
    v.from_memory = true;
    v.persist = true;
  } else if (picked) {
    v.step = picked->step();
  } else {
    v.kind = Verdict::Kind::kNothing;
  }
  return v;
}

std::optional<ResumePoint> Restorer::restore_latest() {
  auto attempts = std::make_unique<RestoreAttempts>(fs_, config_.directory, coordinator_.rank());
  restored_newer_than_disk_ = false;
  while (true) {
    const auto start = Clock::now();
    // Round 1: every rank says which memory snapshots it holds; rank 0 picks the step and its tier.
    std::exception_ptr pick_error;
    std::optional<Snapshot> picked;
    const RankReport held = memory_held();
    const Verdict chosen =
        agree(coordinator_, Channel::kTraining, held, [&](const std::vector<RankReport>& reports) {
          try {
            return pick(reports, picked);
          } catch (...) {
            pick_error = std::current_exception();
            throw;
          }
        });
    if (pick_error) std::rethrow_exception(pick_error);
    if (chosen.kind == Verdict::Kind::kFailed)
      throw Error("rank 0 could not choose a snapshot to resume from: " + chosen.why);
    if (chosen.kind == Verdict::Kind::kNothing) return std::nullopt;
    const int64_t step = chosen.step;

    // The ranks that lack their memory snapshot of the step get it from a replica first.
    std::string fetch_problem;
    if (chosen.from_memory && !chosen.fetches.empty() && replicas_)
      fetch_problem = replicas_->fetch(step, chosen.fetches);

    // Round 2: every rank prepares its part; rank 0 hears them all and decides for all.
    Attempt attempt;
    if (fetch_problem.empty()) {
      attempt = prepare(chosen, picked, *attempts);
    } else {
      attempt.kind = Attempt::kBad;
      attempt.problem = fetch_problem;
    }
    const Verdict verdict =
        agree(coordinator_, Channel::kTraining, attempt.report(step),
              [&](const std::vector<RankReport>& reports) { return first_problem(reports, coordinator_); });
    if (verdict.kind != Verdict::Kind::kGo) {
      forget(*attempts);  // an error or a bad snapshot, not a crash: do not count it
      if (attempt.error) std::rethrow_exception(attempt.error);
      if (verdict.kind == Verdict::Kind::kFailed)
        throw Error("cannot resume from step " + std::to_string(step) + ": " + verdict.why);
      if (chosen.from_memory) {
        if (!chosen.fetches.empty() && replicas_) {
          // Every rank saw the same verdict: all choose again without replicas.
          log()->warn("resuming from the memory tier with replicas failed ({}); choosing again without them",
                      verdict.why);
          replicas_ = nullptr;
        }
        // Damaged in some rank's memory: that rank drops its copy; every rank chooses again.
        if (attempt.kind == Attempt::kBad && fetch_problem.empty())
          discard_memory_copy(step, attempt.problem);
        continue;
      }
      // Damaged: quarantined by rank 0, which picks again (the next round 1) only after that.
      if (coordinator_.rank() == 0) quarantine(step, verdict.why);
      continue;
    }
    attempt.install();
    unconfirmed_ = std::move(attempts);  // confirmed by the first completed step
    restored_newer_than_disk_ = chosen.persist;
    const ResumePoint point = *attempt.point;
    const double load_ms = milliseconds_since(start);
    const char* tier = chosen.from_memory ? "memory" : "disk";
    events_.write("restored",
                  {{"step", point.step}, {"path", point.path}, {"load_ms", load_ms}, {"tier", tier}});
    log()->info("resumed from step {} ({}{}), restored in {:.0f} ms", point.step,
                chosen.from_memory ? "the memory tier: " : "", point.path, load_ms);
    return point;
  }
}

void Restorer::discard_memory_copy(int64_t step, const std::string& problem) {
  log()->warn(
      "the memory snapshot of step {} on {} is damaged ({}); removed it, resuming from an older one or the "
      "disk",
      step, coordinator_.where(coordinator_.rank()), problem);
  events_.write("memory-snapshot-damaged", {{"step", step}, {"problem", problem}});
  try {
    memory_->discard(step);
  } catch (const std::exception& e) {
    log()->warn("cannot remove the damaged memory snapshot: {}; resuming from the disk", e.what());
    memory_ = nullptr;  // it would be offered again
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
