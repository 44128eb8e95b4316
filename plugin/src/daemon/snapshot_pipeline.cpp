#include "daemon/snapshot_pipeline.h"

#include <boost/asio/post.hpp>

#include <future>
#include <nlohmann/json.hpp>

#include "autosnap/errors.h"
#include "store/snapshot_writer.h"
#include "util/exception_text.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {

using util::log;

SnapshotPipeline::SnapshotPipeline(const Config& config, SnapshotStore& store, EventLog& events,
                                   Coordinator& coordinator, const TrackedSet& tracked,
                                   BackgroundThreads& background, Labels labels, PipelineTier tier)
    : config_(config),
      store_(store),
      events_(events),
      coordinator_(coordinator),
      tracked_(tracked),
      background_(background),
      labels_(std::move(labels)),
      tier_(std::move(tier)),
      strand_(background.make_strand()),
      overlap_(config.flush.overlap && config.flush.mode == FlushMode::kAsync),
      slots_(config.flush) {}

// ---------------------------------------------------------------------------
// Staging (training thread)
// ---------------------------------------------------------------------------

bool SnapshotPipeline::submit(int64_t step, const LoopPosition& position, const std::string& reason,
                              Urgency urgency, std::vector<OutcomeCallback> waiters) {
  if (tier_.memory && !off_because().empty()) return false;
  std::shared_ptr<SnapshotJob> job;
  try {
    job = stage(step, reason, urgency);
  } catch (const std::exception& e) {
    // Whoever asked hears about it; the training loop gets the exception.
    SnapshotOutcome outcome;
    outcome.step = step;
    outcome.error = e.what();
    for (auto& waiter : waiters) waiter(outcome);
    throw;
  }
  if (!job) return false;  // skipped (never with waiters: requests are kMustTake)

  job->position = position;
  if (!tier_.memory) {
    nlohmann::json started = {
        {"step", step}, {"reason", reason}, {"bytes", job->bytes}, {"synchronous", job->synchronous}};
    for (const auto& [key, value] : labels_) started[key] = value;
    events_.write("started", std::move(started));
  }
  add_in_flight(+1);
  if (!job->synchronous) {
    job->stall_ms = milliseconds_since(job->started);
    boost::asio::post(strand_,
                      [this, job, waiters = std::move(waiters)]() mutable { run(job, std::move(waiters)); });
    return true;
  }
  // Synchronous: still on the strand (the store has one writer), but wait for it.
  auto done = std::make_shared<std::promise<void>>();
  auto finished = done->get_future();
  boost::asio::post(strand_, [this, job, done, waiters = std::move(waiters)]() mutable {
    job->stall_ms = milliseconds_since(job->started);
    run(job, std::move(waiters));
    done->set_value();
  });
  finished.wait();
  return true;
}

std::shared_ptr<SnapshotJob> SnapshotPipeline::stage(int64_t step, const std::string& reason,
                                                     Urgency urgency) {
  auto job = std::make_shared<SnapshotJob>();
  job->step = step;
  job->reason = reason;

  // Capture: the live state of everything tracked, no copies yet.
  const c10::impl::GenericDict shard = tracked_.capture();
  job->synchronous = config_.flush.mode == FlushMode::kSync;
  // The bytes to stage, counted up front only where they decide something
  // before staging; otherwise staging's copies tell them (one per storage),
  // without another walk of thousands of tensors.
  const bool bytes_first =
      job->synchronous || config_.flush.staging_memory_limit != 0 || (tier_.memory && !room_checked_);
  if (bytes_first) job->bytes = storage_bytes(shard);
  if (tier_.memory && !room_checked_) {
    room_checked_ = true;
    const std::string no_room = tier_.room_for ? tier_.room_for(job->bytes) : "";
    if (!no_room.empty()) {
      turn_off(no_room);
      return nullptr;
    }
  }

  if (!job->synchronous) {
    job->slot = slots_.acquire(job->bytes, urgency);
    if (job->slot == StagingSlots::kSkip) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ++stats_.skipped;
      }
      if (tier_.memory) return nullptr;  // the next step's will do: the memory tier never makes training wait
      log()->info(
          "skipped the snapshot of step {} ({}): {} snapshot(s) still being written and flush.when_busy is "
          "skip",
          step, reason, config_.flush.max_pending);
      events_.write("skipped", {{"step", step}, {"reason", reason}, {"why", "busy"}});
      return nullptr;
    }
    if (job->slot == StagingSlots::kTooBig) {
      log()->info(
          "the snapshot of step {} needs {} bytes of staging, more than flush.staging_memory_limit ({}); "
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
    copy_into_slot(job, shard, /*count_bytes=*/!bytes_first);
  } catch (...) {
    slots_.release(job->slot);  // e.g. out of host memory for staging: the slot must not stay taken
    throw;
  }
  return job;
}

void SnapshotPipeline::copy_into_slot(const std::shared_ptr<SnapshotJob>& job,
                                      const c10::impl::GenericDict& shard, bool count_bytes) {
  const StepOnlyStorages step_only =
      overlap_ ? StepOnlyStorages([&](auto& out) { tracked_.step_only_storages(shard, out); },
                                  tracked_.step_only_generation())
               : StepOnlyStorages();
  StableContainers stable;
  tracked_.stable_containers(shard, stable);
  job->value = slots_.stage(job->slot, shard, step_only, stable);
  // The slot's own list: the job holds the slot until it is written, and the
  // copies are run from it without a copy of thousands of entries.
  const std::vector<StorageCopy>& copies = slots_.copies(job->slot);
  if (count_bytes) {
    for (const auto& copy : copies) job->bytes += copy.bytes;
  }
  if (!overlap_) {
    perform_copies(copies);
    return;
  }
  perform_copies(copies, CopySelection::kNotDeferrable);
  job->deferred = std::make_shared<DeferredCopies>(copies, job->value);
  job->gate = std::make_shared<CommitGate>();
  boost::asio::post(background_.io(), [deferred = job->deferred] {
    try {
      deferred->run_or_wait();
    } catch (const std::exception&) {
      // Reported by the writer.
    }
  });
  overlap_job_ = job;
}

void SnapshotPipeline::answer_after_pending_writes(int64_t step, std::vector<OutcomeCallback> waiters) {
  if (waiters.empty()) return;
  add_in_flight(+1);  // wait_until_finished() covers the answer too
  boost::asio::post(strand_, [this, step, waiters = std::move(waiters)] {
    SnapshotOutcome outcome;
    outcome.step = step;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      outcome.committed = last_committed_ == step;
      outcome.path = outcome.committed ? last_committed_path_ : "";
    }
    if (!outcome.committed)
      outcome.error = "the snapshot of step " + std::to_string(step) + " failed (see events.jsonl)";
    for (auto& waiter : waiters) waiter(outcome);
    add_in_flight(-1);
  });
}

void SnapshotPipeline::add_in_flight(int delta) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    in_flight_ += delta;
    if (delta < 0) writes_ended_ += -delta;
  }
  if (delta < 0) changed_.notify_all();
}

void SnapshotPipeline::settle_overlap(bool commit) {
  if (!overlap_job_) return;
  auto job = std::move(overlap_job_);
  overlap_job_.reset();
  const auto start = Clock::now();
  std::string why = "with flush.overlap, call before_optimizer_step() before optimizer.step()";
  // Waited for even when the snapshot is dropped: the next capture may update
  // in place what the copies read (the optimizer's step counts).
  try {
    job->deferred->run_or_wait();
  } catch (const std::exception&) {
    // The writer reports it as the snapshot's failure.
  }
  if (commit) {
    const std::string torn = job->deferred->modified_since_staging();
    if (!torn.empty()) {
      // An optimizer step ran before before_optimizer_step(): the copy may mix two steps.
      why = "'" + torn +
            "' was modified before before_optimizer_step(), while its staging copy may have been running; "
            "with several optimizers, call before_optimizer_step() once, before the first optimizer.step()";
      log()->warn("discarding the snapshot of step {}: {}; staging without overlap from now on", job->step,
                  why);
      commit = false;
      overlap_ = false;
    }
  }
  job->gate->open(commit, why);
  job->stall_ms = job->stall_ms + milliseconds_since(start);
}

void SnapshotPipeline::abandon_unconfirmed_overlap() {
  if (!overlap_job_) return;
  // The optimizer may have run during the copy, so that snapshot is unsafe.
  log()->warn(
      "flush.overlap needs before_optimizer_step() before optimizer.step(); discarding the snapshot of "
      "step {} and staging synchronously from now on",
      overlap_job_->step);
  settle_overlap(/*commit=*/false);
  overlap_ = false;
}

// ---------------------------------------------------------------------------
// Writing (strand)
// ---------------------------------------------------------------------------

void SnapshotPipeline::run(const std::shared_ptr<SnapshotJob>& job, std::vector<OutcomeCallback> waiters) {
  SnapshotOutcome outcome;
  outcome.step = job->step;
  try {
    if (job->deferred) job->deferred->run_or_wait();
    SnapshotInfo info = write(*job);
    outcome.committed = true;
    outcome.path = info.path;
  } catch (...) {
    outcome.error = util::exception_text(std::current_exception());
    record_failure(job->step, job->reason, std::current_exception());
  }
  slots_.release(job->slot);
  if (tier_.after_write) tier_.after_write(job->step, outcome.committed);
  for (auto& waiter : waiters) {
    try {
      waiter(outcome);
    } catch (const std::exception& e) {
      log()->warn("snapshot notification failed: {}", e.what());
    }
  }
  add_in_flight(-1);
}

void SnapshotPipeline::apply_retention(int64_t newest) {
  for (int64_t step : store_.prune(config_.retention, /*dry_run=*/false, /*below=*/newest)) {
    if (tier_.memory) continue;
    events_.write("retention-deleted", {{"step", step}, {"newest", newest}});
    log()->debug("retention removed step {}", step);
  }
}

void SnapshotPipeline::record_failure(int64_t step, const std::string& reason, std::exception_ptr error) {
  const std::string message = util::exception_text(error);
  if (tier_.memory) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.failed;
    }
    turn_off("the memory snapshot of step " + std::to_string(step) + " failed: " + message);
    return;
  }
  int64_t in_a_row = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.failed;
    errors_.push_back(error);
    while (errors_.size() > 100) errors_.pop_front();
    in_a_row = ++consecutive_failures_;
    last_failure_ = message;
  }
  events_.write("failed", {{"step", step}, {"reason", reason}, {"error", message}, {"in_a_row", in_a_row}});
  const int limit = config_.max_consecutive_failures;
  if (config_.on_error == OnError::kAbort) {
    log()->error("snapshot of step {} failed: {} (on_error: abort: the next hook call throws)", step,
                 message);
  } else if (limit > 0 && in_a_row % limit == 0) {
    std::string newest = "no snapshot committed or restored by this run";
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (last_committed_)
        newest =
            "the last snapshot this run committed or restored is step " + std::to_string(*last_committed_);
      failures_in_a_row_ = std::make_exception_ptr(
          Error(std::to_string(in_a_row) +
                " snapshots in a row failed (max_consecutive_failures: " + std::to_string(limit) +
                "), so this job is not protected: " + newest + "; the last failure: " + message));
    }
    log()->error(
        "snapshot of step {} failed: {}; that is {} in a row (max_consecutive_failures: {}): the next hook "
        "call throws",
        step, message, in_a_row, limit);
  } else {
    log()->warn("snapshot of step {} failed: {}; training continues (on_error: warn; {} in a row)", step,
                message, in_a_row);
  }
}

void SnapshotPipeline::remove_abandoned() { abandoned_.clear(); }

// ---------------------------------------------------------------------------
// Waiting and status (any thread)
// ---------------------------------------------------------------------------

void SnapshotPipeline::wait_until_finished() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return in_flight_ == 0; });
}

void SnapshotPipeline::check_for_errors() {
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (errors_.empty()) return;
    error = errors_.front();
    errors_.pop_front();
  }
  std::rethrow_exception(error);
}

bool SnapshotPipeline::failing_in_a_row() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failures_in_a_row_ != nullptr;
}

void SnapshotPipeline::take_failures_in_a_row() {
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    std::swap(error, failures_in_a_row_);
  }
  if (error) std::rethrow_exception(error);
}

void SnapshotPipeline::resumed_from(int64_t step, const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  last_committed_ = step;
  last_committed_path_ = path;
}

SnapshotPipeline::Progress SnapshotPipeline::progress() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {last_committed_,  last_committed_path_,  in_flight_,
          stats_.committed, consecutive_failures_, last_failure_};
}

bool SnapshotPipeline::wrote_since(int64_t& ended) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const bool wrote = in_flight_ > 0 || writes_ended_ != ended;
  ended = writes_ended_;
  return wrote;
}

bool SnapshotPipeline::ready_for_memory_snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return in_flight_ == 0 && off_because_.empty();
}

void SnapshotPipeline::record_skip() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.skipped;
}

std::string SnapshotPipeline::off_because() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return off_because_;
}

void SnapshotPipeline::turn_off(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!off_because_.empty()) return;
    off_because_ = why;
  }
  log()->warn("the memory tier is off for the rest of this run: {}; snapshots go to the disk tier only", why);
  events_.write("memory-tier-off", {{"why", why}});
}

SnapshotStats SnapshotPipeline::stats() const {
  SnapshotStats s;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    s = stats_;
  }
  s.staging_bytes = slots_.bytes();
  s.staging_allocations = slots_.allocations();
  return s;
}

}  // namespace daemon
}  // namespace autosnap
