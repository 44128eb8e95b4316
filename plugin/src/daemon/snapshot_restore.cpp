// Restore: the newest valid snapshot is verified, read and loaded into
// everything tracked, with crash-loop protection. Part of Snapshotter::Impl
// (snapshotter_impl.h).
#include "autosnap/errors.h"
#include "util/log.h"
#include "daemon/snapshotter_impl.h"
#include "state/rng_state.h"

namespace autosnap {

using daemon::Clock;
using daemon::kRngEntry;
using util::log;
using daemon::milliseconds_since;

namespace {

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// Restore (training thread)
// ---------------------------------------------------------------------------

std::optional<ResumePoint> Snapshotter::Impl::restore_latest() {
  settle_overlap(/*commit=*/false);
  wait_until_finished();
  auto on_quarantine = [&](const SnapshotInfo& info, const std::string& problem) {
    log()->warn("snapshot {} is damaged ({}); quarantined as {}", info.step, problem, info.name);
    events_.write("quarantined", {{"step", info.step}, {"name", info.name}, {"problem", problem}});
  };
  auto quarantine = [&](const SnapshotInfo& info, const std::string& problem) {
    SnapshotInfo quarantined = info;
    quarantined.name = store_->quarantine(info.step);
    on_quarantine(quarantined, problem);
  };
  auto attempts = std::make_unique<daemon::RestoreAttempts>(fs_, config_.directory);
  while (true) {
    const auto start = Clock::now();
    auto latest = store_->latest_valid(on_quarantine);
    if (!latest) return std::nullopt;
    if (latest->manifest->world_size != world_size_) {
      throw StateMismatch("snapshot " + latest->path + " was written by " + std::to_string(latest->manifest->world_size) +
                          " rank(s); this job runs " + std::to_string(world_size_) +
                          "; resume it with the same number of ranks");
    }
    const int crashes = attempts->crashes(latest->step);
    if (crashes >= config_.restore.max_attempts) {
      quarantine(*latest, "restoring it crashed the process " + std::to_string(crashes) +
                              " times in a row (restore.max_attempts)");
      forget_restore_attempt(*attempts);
      continue;
    }
    // Count this attempt durably before touching anything: if it crashes us, the next start knows.
    try {
      attempts->begin(latest->step);
    } catch (const IoError& e) {
      log()->warn("cannot record the restore attempt ({}); crash-loop protection is off for this start", e.what());
    }
    try {
      const c10::IValue value = store_->read_shard(latest->step, rank_, device_, /*verify=*/false);  // verified above
      apply_snapshot(*latest, value);
    } catch (const CorruptSnapshot& e) {
      forget_restore_attempt(*attempts);
      quarantine(*latest, e.what());
      continue;
    } catch (const Error&) {
      forget_restore_attempt(*attempts);  // an error, not a crash: do not count it
      throw;
    }
    restore_attempts_ = std::move(attempts);  // confirmed by the first completed step
    ResumePoint point{latest->step, latest->manifest->epoch, latest->manifest->reason, latest->path};
    last_step_ = point.step;
    last_snapshot_step_ = point.step;
    epoch_ = point.epoch;
    last_snapshot_time_ = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      current_step_ = point.step;
      last_committed_ = point.step;
      last_committed_path_ = point.path;
    }
    const double load_ms = milliseconds_since(start);
    events_.write("restored", {{"step", point.step}, {"path", point.path}, {"load_ms", load_ms}});
    log()->info("resumed from step {} ({}), restored in {:.0f} ms", point.step, point.path, load_ms);
    return point;
  }
}

void Snapshotter::Impl::forget_restore_attempt(daemon::RestoreAttempts& attempts) {
  try {
    attempts.end();
  } catch (const IoError& e) {
    log()->warn("cannot clear the restore attempt record: {}", e.what());
  }
}

void Snapshotter::Impl::apply_snapshot(const SnapshotInfo& info, const c10::IValue& value) {
  if (!value.isGenericDict()) throw StateMismatch("snapshot " + info.path + " does not hold a dict of tracked objects");
  const auto shard = value.toGenericDict();
  std::vector<std::string> missing, untracked;
  for (const auto& [name, state] : tracked_) {
    if (!shard.contains(name)) missing.push_back(name);
  }
  for (const auto& entry : shard) {
    const std::string key = entry.key().isString() ? entry.key().toStringRef() : c10::str(entry.key());
    const bool known = key == kRngEntry ||
                       std::any_of(tracked_.begin(), tracked_.end(), [&](const auto& t) { return t.first == key; });
    if (!known) untracked.push_back(key);
  }
  if (!missing.empty() || !untracked.empty()) {
    std::string problem = "snapshot " + info.path + " does not match what is tracked:";
    if (!missing.empty()) problem += " tracked but not in the snapshot: " + join(missing) + ";";
    if (!untracked.empty()) problem += " in the snapshot but not tracked: " + join(untracked) + ";";
    if (config_.restore.strict) throw StateMismatch(problem + " (set restore.strict: false to restore what matches)");
    log()->warn("{} restoring what matches (restore.strict: false)", problem);
  }
  // Check everything first; change the live objects only when all of it fits.
  std::vector<state::Commit> commits;
  for (const auto& [name, state] : tracked_) {
    if (shard.contains(name)) commits.push_back(state->prepare_restore(shard.at(name), config_.restore.strict, name));
  }
  if (config_.capture.rng && shard.contains(kRngEntry)) commits.push_back(state::prepare_rng_restore(shard.at(kRngEntry)));
  for (auto& commit : commits) commit();
}

}  // namespace autosnap
