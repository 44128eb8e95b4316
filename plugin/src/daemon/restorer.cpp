#include "daemon/restorer.h"

#include "autosnap/errors.h"
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

void Restorer::quarantine(const SnapshotInfo& info, const std::string& problem) {
  SnapshotInfo quarantined = info;
  quarantined.name = store_.quarantine(info.step);
  report_quarantined(quarantined, problem);
}

std::optional<ResumePoint> Restorer::restore_latest() {
  auto on_quarantine = [&](const SnapshotInfo& info, const std::string& problem) {
    report_quarantined(info, problem);
  };
  auto attempts = std::make_unique<RestoreAttempts>(fs_, config_.directory);
  while (true) {
    const auto start = Clock::now();
    auto latest = store_.latest_valid(on_quarantine);
    const auto agreed =
        coordinator_.agree_on_step(latest ? std::optional<int64_t>(latest->step) : std::nullopt);
    if (!agreed) return std::nullopt;
    if (*agreed != latest->step) {
      // Another rank's newest valid snapshot is older: every rank resumes from that one.
      const VerifyResult verified = store_.verify(*agreed);
      if (!verified.ok) {
        throw CorruptSnapshot("the ranks agreed to resume from step " + std::to_string(*agreed) +
                              ", which is not valid here: " + verified.problem);
      }
      latest->step = *agreed;
      latest->name = SnapshotStore::directory_name(*agreed);
      latest->path = store_.snapshot_path(*agreed);
      latest->manifest = verified.manifest;
    }
    if (latest->manifest->world_size != coordinator_.world_size()) {
      throw StateMismatch("snapshot " + latest->path + " was written by " +
                          std::to_string(latest->manifest->world_size) + " rank(s); this job runs " +
                          std::to_string(coordinator_.world_size()) +
                          "; resume it with the same number of ranks");
    }
    const int crashes = attempts->crashes(latest->step);
    if (crashes >= config_.restore.max_attempts) {
      quarantine(*latest, "restoring it crashed the process " + std::to_string(crashes) +
                              " times in a row (restore.max_attempts)");
      forget(*attempts);
      continue;
    }
    // Count this attempt durably before touching anything: if it crashes us, the next start knows.
    try {
      attempts->begin(latest->step);
    } catch (const IoError& e) {
      log()->warn("cannot record the restore attempt ({}); crash-loop protection is off for this start",
                  e.what());
    }
    try {
      const c10::IValue value =
          store_.read_shard(latest->step, coordinator_.rank(), device_, /*verify=*/false);  // verified above
      tracked_.apply(value, config_.restore.strict, latest->path);
    } catch (const CorruptSnapshot& e) {
      forget(*attempts);
      quarantine(*latest, e.what());
      continue;
    } catch (const Error&) {
      forget(*attempts);  // an error, not a crash: do not count it
      throw;
    }
    unconfirmed_ = std::move(attempts);  // confirmed by the first completed step
    ResumePoint point{latest->step, latest->manifest->epoch, latest->manifest->reason, latest->path};
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
