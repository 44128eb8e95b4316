// Taking a snapshot: the training thread stages tracked state into a slot's
// host buffers; the strand serializes, checksums, writes, commits and applies
// retention. Part of Snapshotter::Impl (snapshotter_impl.h).
#include <boost/asio/post.hpp>

#include <future>

#include "autosnap/errors.h"
#include "util/log.h"
#include "daemon/snapshotter_impl.h"
#include "state/rng_state.h"

namespace autosnap {

using daemon::Clock;
using daemon::kRngEntry;
using util::log;
using daemon::milliseconds_since;
using daemon::SnapshotJob;

namespace {

std::string describe(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Taking a snapshot (training thread)
// ---------------------------------------------------------------------------

void Snapshotter::Impl::take_snapshot(int64_t step, const std::string& reason, Urgency urgency,
                                      std::vector<OutcomeCallback> waiters) {
  if (last_snapshot_step_ && *last_snapshot_step_ == step) {
    log()->debug("step {} already has a snapshot; '{}' adds nothing", step, reason);
    answer_after_pending_writes(step, std::move(waiters));
    return;
  }
  std::shared_ptr<SnapshotJob> job;
  try {
    job = stage_job(step, reason, urgency);
  } catch (const std::exception& e) {
    // Whoever asked hears about it; the training loop gets the exception.
    SnapshotOutcome outcome;
    outcome.step = step;
    outcome.error = e.what();
    for (auto& waiter : waiters) waiter(outcome);
    throw;
  }
  if (!job) return;  // skipped (never with waiters: requests are kMustTake)

  last_snapshot_step_ = step;
  last_snapshot_time_ = Clock::now();
  events_.write("started", {{"step", step}, {"reason", reason}, {"bytes", job->bytes}, {"synchronous", job->synchronous}});
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++in_flight_;
  }
  if (!job->synchronous) {
    job->stall_ms = milliseconds_since(job->started);
    boost::asio::post(strand_, [this, job, waiters = std::move(waiters)]() mutable { run_job(job, std::move(waiters)); });
    return;
  }
  // Synchronous: still on the strand (the store has one writer), but wait for it.
  auto done = std::make_shared<std::promise<void>>();
  auto finished = done->get_future();
  boost::asio::post(strand_, [this, job, done, waiters = std::move(waiters)]() mutable {
    job->stall_ms = milliseconds_since(job->started);
    run_job(job, std::move(waiters));
    done->set_value();
  });
  finished.wait();
}

std::shared_ptr<SnapshotJob> Snapshotter::Impl::stage_job(int64_t step, const std::string& reason, Urgency urgency) {
  auto job = std::make_shared<SnapshotJob>();
  job->step = step;
  job->reason = reason;
  job->epoch = epoch_;

  // Capture: the live state of everything tracked, no copies yet.
  c10::impl::GenericDict shard(c10::StringType::get(), c10::AnyType::get());
  std::unordered_set<const void*> step_only;
  for (const auto& [name, state] : tracked_) {
    c10::IValue value = state->capture();
    if (overlap_) state->step_only_storages(value, step_only);
    shard.insert(name, std::move(value));
  }
  if (config_.capture.rng) shard.insert(kRngEntry, state::capture_rng_state());
  job->bytes = daemon::storage_bytes(shard);

  job->synchronous = config_.flush.mode == FlushMode::kSync;
  if (!job->synchronous) {
    job->slot = acquire_slot(job->bytes, urgency);
    if (job->slot == kSkip) {
      log()->info("skipped the snapshot of step {} ({}): {} snapshot(s) still being written and flush.when_busy is skip",
                  step, reason, config_.flush.max_pending);
      events_.write("skipped", {{"step", step}, {"reason", reason}, {"why", "busy"}});
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.skipped;
      return nullptr;
    }
    if (job->slot == kTooBig) {
      log()->info("the snapshot of step {} needs {} bytes of staging, more than flush.staging_memory_limit ({}); "
                  "writing it synchronously",
                  step, job->bytes, config_.flush.staging_memory_limit);
      job->synchronous = true;
      job->slot = -1;
    }
  }
  if (job->synchronous) {
    job->value = shard;  // live tensors: the training thread waits until the write is done
    return job;
  }
  try {
    std::vector<daemon::StorageCopy> copies;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto& arena = slots_[static_cast<size_t>(job->slot)].arena;
      job->value = arena.stage(shard, step_only, copies);
      arena.trim();
    }
    if (!overlap_) {
      daemon::perform_copies(copies);
      return job;
    }
    std::vector<daemon::StorageCopy> now, later;
    for (auto& copy : copies) (copy.deferrable ? later : now).push_back(std::move(copy));
    daemon::perform_copies(now);
    job->deferred = std::make_shared<daemon::DeferredCopies>(std::move(later));
    job->gate = std::make_shared<daemon::CommitGate>();
    boost::asio::post(io_, [deferred = job->deferred] {
      try {
        deferred->run_or_wait();
      } catch (const std::exception&) {
        // Reported by the writer.
      }
    });
    overlap_job_ = job;
    return job;
  } catch (...) {
    release_slot(job->slot);  // e.g. out of host memory for staging: the slot must not stay taken
    changed_.notify_all();
    throw;
  }
}

// A second snapshot of a step adds nothing; its requesters get the first
// one's outcome once the writes queued before them are done.
void Snapshotter::Impl::answer_after_pending_writes(int64_t step, std::vector<OutcomeCallback> waiters) {
  if (waiters.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++in_flight_;  // wait_until_finished() covers the answer too
  }
  boost::asio::post(strand_, [this, step, waiters = std::move(waiters)] {
    SnapshotOutcome outcome;
    outcome.step = step;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      outcome.committed = last_committed_ == step;
      outcome.path = outcome.committed ? last_committed_path_ : "";
    }
    if (!outcome.committed) outcome.error = "the snapshot of step " + std::to_string(step) + " failed (see events.jsonl)";
    for (auto& waiter : waiters) waiter(outcome);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --in_flight_;
    }
    changed_.notify_all();
  });
}

int Snapshotter::Impl::acquire_slot(uint64_t bytes, Urgency urgency) {
  const uint64_t limit = config_.flush.staging_memory_limit;
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    int free = -1;
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (!slots_[i].busy) {
        free = static_cast<int>(i);
        break;
      }
    }
    if (free >= 0) {
      if (limit == 0) {
        slots_[static_cast<size_t>(free)].busy = true;
        return free;
      }
      if (bytes > limit) return kTooBig;
      uint64_t others = 0;
      for (size_t i = 0; i < slots_.size(); ++i) {
        if (static_cast<int>(i) == free) continue;
        if (!slots_[i].busy) slots_[i].arena.release();  // idle buffers give way to the limit
        others += slots_[i].arena.bytes();
      }
      if (others + bytes <= limit) {
        slots_[static_cast<size_t>(free)].busy = true;
        return free;
      }
    }
    if (config_.flush.when_busy == WhenBusy::kSkip && urgency == Urgency::kMaySkip) return kSkip;
    changed_.wait(lock);
  }
}

void Snapshotter::Impl::release_slot(int slot) {
  if (slot < 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  slots_[static_cast<size_t>(slot)].busy = false;
}

// ---------------------------------------------------------------------------
// Writing (strand)
// ---------------------------------------------------------------------------

void Snapshotter::Impl::run_job(const std::shared_ptr<SnapshotJob>& job, std::vector<OutcomeCallback> waiters) {
  SnapshotOutcome outcome;
  outcome.step = job->step;
  try {
    if (job->deferred) job->deferred->run_or_wait();
    SnapshotInfo info = write_job(*job);
    outcome.committed = true;
    outcome.path = info.path;
  } catch (...) {
    outcome.error = describe(std::current_exception());
    record_failure(*job, std::current_exception());
  }
  release_slot(job->slot);
  for (auto& waiter : waiters) {
    try {
      waiter(outcome);
    } catch (const std::exception& e) {
      log()->warn("snapshot notification failed: {}", e.what());
    }
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --in_flight_;
  }
  changed_.notify_all();
}

SnapshotInfo Snapshotter::Impl::write_job(SnapshotJob& job) {
  auto writer = store_->begin(job.step);
  writer->write_shard(rank_, job.value);
  const auto shard = job.value.toGenericDict();
  for (const auto& [name, state] : tracked_) state->write_extra_files(name, shard.at(name), *writer, rank_);
  if (job.gate && !job.gate->wait()) {
    throw Error("snapshot of step " + std::to_string(job.step) +
                " discarded: with flush.overlap, call before_optimizer_step() before optimizer.step()");
  }
  Manifest manifest;
  manifest.epoch = job.epoch;
  manifest.reason = job.reason;
  manifest.world_size = world_size_;
  for (const auto& [name, state] : tracked_) manifest.entries.emplace_back(name, state->kind());
  if (config_.capture.rng) manifest.entries.emplace_back(kRngEntry, "random generator states");
  SnapshotInfo info = writer->commit(manifest);
  const double persist_ms = milliseconds_since(job.started);
  const uint64_t bytes = info.manifest ? info.manifest->total_bytes() : 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.committed;
    stats_.last_stall_ms = job.stall_ms;
    last_committed_ = job.step;
    last_committed_path_ = info.path;
  }
  events_.write("committed", {{"step", job.step},
                              {"reason", job.reason},
                              {"bytes", bytes},
                              {"stall_ms", job.stall_ms.load()},
                              {"persist_ms", persist_ms},
                              {"path", info.path}});
  log()->info("committed step {} ({}, {}) in {:.0f} ms; training stalled {:.1f} ms", job.step, job.reason,
              util::human_bytes(bytes), persist_ms, job.stall_ms.load());
  try {
    apply_retention(job.step);
  } catch (...) {
    SnapshotJob retention_job;
    retention_job.step = job.step;
    retention_job.reason = "retention";
    record_failure(retention_job, std::current_exception());
  }
  return info;
}

void Snapshotter::Impl::apply_retention(int64_t newest) {
  const RetentionRule rule{config_.retention.keep_last, config_.retention.keep_every_steps};
  for (int64_t step : store_->prune(rule, /*dry_run=*/false, /*below=*/newest)) {
    events_.write("retention-deleted", {{"step", step}, {"newest", newest}});
    log()->debug("retention removed step {}", step);
  }
}

void Snapshotter::Impl::record_failure(const SnapshotJob& job, std::exception_ptr error) {
  const std::string message = describe(error);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.failed;
    errors_.push_back(error);
    while (errors_.size() > 100) errors_.pop_front();
  }
  events_.write("failed", {{"step", job.step}, {"reason", job.reason}, {"error", message}});
  if (config_.on_error == OnError::kAbort) {
    log()->error("snapshot of step {} failed: {} (on_error: abort: the next hook call throws)", job.step, message);
  } else {
    log()->warn("snapshot of step {} failed: {}; training continues (on_error: warn)", job.step, message);
  }
}

}  // namespace autosnap
