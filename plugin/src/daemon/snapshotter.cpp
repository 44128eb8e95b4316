// The Snapshotter: the training hooks, wired to the daemon's parts (trigger
// policy, snapshot pipeline, restorer, control surface), and the public face.
#include "autosnap/snapshotter.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "autosnap/device.h"
#include "autosnap/errors.h"
#include "daemon/background.h"
#include "daemon/control_surface.h"
#include "daemon/coordinator.h"
#include "daemon/event_log.h"
#include "daemon/loop_slips.h"
#include "daemon/memory_replicas.h"
#include "daemon/memory_tier.h"
#include "daemon/restorer.h"
#include "daemon/shared_directory.h"
#include "daemon/snapshot_pipeline.h"
#include "daemon/snapshotter_impl.h"
#include "daemon/tracked_set.h"
#include "daemon/trigger_policy.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {
namespace {

using util::log;

// With distributed.on_lost_rank: exit, how long the training thread has to
// reach a hook (which throws) after a rank is lost before the process ends.
constexpr std::chrono::seconds kLostRankGrace{2};

// What the watcher of a lost rank shares with the training thread; it may
// outlive the snapshotter.
struct HookActivity {
  std::atomic<int64_t> entered{0};  // hooks entered by the training thread
  std::atomic<bool> ended{false};   // the snapshotter is closing or gone
};

// Thread-safety: the hooks, track() and restore on the training thread;
// request_snapshot(), should_stop() and stats() from any thread. The parts
// each guard their own state; none holds its lock while calling another.
class ActiveSnapshotter final : public SnapshotterImpl {
 public:
  ActiveSnapshotter(Config config, FileSystem& fs, JobContext job)
      : config_(for_the_job(std::move(config), job)),
        device_(resolve_device(config_.device, "device")),
        coordinator_(job.coordinator ? std::move(job.coordinator)
                                     : std::make_unique<SingleProcessCoordinator>()),
        leader_(coordinator_->rank() == 0),
        store_(open_store(config_, fs, *coordinator_)),
        events_(fs, join_path(config_.directory, events_file_name(coordinator_->rank()))),
        memory_(open_memory_tier(config_, fs, coordinator_->rank(), job.labels)),
        replicas_(open_replicas(config_, memory_.get(), *coordinator_)),
        tracked_(config_.capture.rng),
        policy_(config_.triggers),
        pipeline_(config_, *store_, events_, *coordinator_, tracked_, background_, job.labels),
        memory_config_(memory_tier_config(config_)),
        restorer_(config_, fs, *store_, events_, *coordinator_, tracked_, device_, memory_.get(),
                  replicas_.get()),
        requeue_(std::move(job.requeue)) {
    util::set_log_level(config_.log_level);
    set_direct_io(config_.flush.direct_io);
    if (memory_) {
      PipelineTier tier;
      tier.memory = true;
      tier.room_for = [memory = memory_.get()](uint64_t bytes) { return memory->check_room(bytes); };
      if (replicas_) {
        tier.after_write = [replicas = replicas_.get()](int64_t step, bool committed) {
          replicas->after_memory_snapshot(step, committed);
        };
      }
      memory_pipeline_ = std::make_unique<SnapshotPipeline>(
          memory_config_, memory_->store(), events_, memory_coordinator_, tracked_, background_,
          MemoryTier::labels(job.labels, coordinator_->rank(), coordinator_->world_size()), std::move(tier));
    }
    // Only rank 0 serves the socket; every rank hears signals (Slurm signals every task).
    surface_ = std::make_unique<ControlSurface>(config_, background_, events_, policy_, pipeline_, leader_,
                                                *coordinator_, memory_pipeline_.get(), replicas_.get());
    background_.start(config_.flush.threads + (memory_ ? 1 : 0));
    watch_for_lost_ranks();
    log()->info("snapshots go to {} (config {})", config_.directory,
                config_.source.empty() ? "in code" : config_.source);
  }
  ~ActiveSnapshotter() override {
    // Ended without close() (an exception): when it was a lost rank (the
    // job's own collective failed first), say which one before going.
    if (!closed_ && coordinator_->world_size() > 1) coordinator_->lost_after_a_moment();
    activity_->ended = true;
    coordinator_->on_lost(nullptr);  // no report from the lifeline's thread once the parts go
    shutdown();
  }

  bool enabled() const override { return true; }
  const Config& config() const override { return config_; }
  void track(const std::string& name, const MakeTracked& make) override { tracked_.add(name, make()); }

  std::optional<ResumePoint> on_train_start() override {
    check_policy();
    if (config_.resume == ResumeMode::kNever) {
      refuse_earlier_runs();
      return std::nullopt;
    }
    auto resumed = restore_latest();
    if (!resumed && config_.resume == ResumeMode::kRequired) {
      throw Error("resume: required, but '" + config_.directory + "' holds no valid snapshot to resume from");
    }
    if (!resumed) log()->info("no snapshot to resume from; starting fresh");
    return resumed;
  }

  void on_epoch_start(int64_t epoch) override {
    check_policy();
    check_epoch_number("on_epoch_start", epoch);
    warn_of(slips_.epoch_starting(epoch, position_));
    position_.epoch_started(epoch);
    if (position_.mid_epoch()) warn_without_data_position();
  }

  void before_optimizer_step() override {
    check_policy();
    pipeline_.settle_overlap(/*commit=*/true);
    if (memory_pipeline_) memory_pipeline_->settle_overlap(/*commit=*/true);
  }

  void on_step_end(int64_t step) override {
    const auto entered = Clock::now();
    check_policy();
    measure_the_step(step, entered);
    pipeline_.abandon_unconfirmed_overlap();
    if (memory_pipeline_) memory_pipeline_->abandon_unconfirmed_overlap();
    warn_of(slips_.step_ending(step, last_step_));
    last_step_ = step;
    tracked_.step_ended();  // data positions count the batch consumed before any snapshot of it
    position_.step_ended();
    restorer_.step_completed();
    if (policy_.should_stop() && !stop_ignored_warned_) {
      stop_ignored_warned_ = true;
      log()->warn(
          "a stop was requested but training goes on: check should_stop() after on_step_end() and leave the "
          "loop");
    }
    // Every rank decides the same: each one's wishes, or-ed across the job; rank 0's clock decides
    // every_seconds.
    uint64_t wishes = policy_.wishes(step, leader_);
    if (pipeline_.failing_in_a_row()) wishes |= TriggerPolicy::kFailingInARow;
    const bool memory_due = memory_pipeline_ && step % config_.memory.every_steps == 0;
    if (memory_due && !memory_pipeline_->ready_for_memory_snapshot())
      wishes |= TriggerPolicy::kMemoryTierBusy;
    if (coordinator_->world_size() > 1) wishes = coordinator_->bitwise_or(wishes, Channel::kTraining);
    if (wishes & TriggerPolicy::kFailingInARow) stop_failing_in_a_row();
    auto due = policy_.after_step(step, wishes);
    // First: the disk's staging copy may make training wait.
    if (memory_due && !(wishes & TriggerPolicy::kMemoryTierBusy)) {
      take_memory_snapshot(step);
    } else if (memory_due) {
      memory_pipeline_->record_skip();
    }
    if (!due.reason.empty()) take_snapshot(step, due);
    if (due.stop) policy_.stopped();  // the stop signal's snapshot is taken: the loop may leave now
    left_step_hook_ = Clock::now();
  }

  void on_epoch_end(int64_t epoch) override {
    check_policy();
    check_epoch_number("on_epoch_end", epoch);
    warn_of(slips_.epoch_ending(epoch, position_));
    position_.epoch_finished(epoch);
    tracked_.epoch_ended();
    if (!config_.triggers.on_epoch_end) return;
    if (!last_step_) {
      log()->warn("on_epoch_end({}) before any on_step_end: no step to snapshot", epoch);
      return;
    }
    take_snapshot(*last_step_, {"epoch_end", Urgency::kMaySkip});
  }

  void on_train_end() override {
    train_end_done_ = true;
    pipeline_.settle_overlap(/*commit=*/true);  // no optimizer step can follow
    if (last_step_) {
      // A request that arrived after the last step boundary (on any rank) is served now.
      TriggerPolicy::Decision due;
      if (coordinator_->any(policy_.has_requests(), Channel::kTraining)) due = policy_.claim_requests();
      if (due.reason.empty() && config_.triggers.on_train_end) due = {"train_end", Urgency::kMustTake};
      if (!due.reason.empty()) take_snapshot(*last_step_, due);
    }
    wait_until_finished();
    check_policy();
  }

  void on_exception(const std::exception& error) override {
    log()->warn("training stopped by an exception: {}; finishing queued snapshots", error.what());
    pipeline_.settle_overlap(/*commit=*/false);  // the step may have been cut short
    wait_until_finished();
  }

  void snapshot_now(const std::string& reason) override {
    check_policy();
    pipeline_.settle_overlap(/*commit=*/true);
    if (!last_step_) {
      // Step 0 would claim a trained step 0 that resume then skips.
      log()->warn("snapshot_now('{}') before any on_step_end: no completed step to snapshot", reason);
      return;
    }
    take_snapshot(*last_step_, {reason, Urgency::kMustTake});
  }

  void request_snapshot(const std::string& reason) override { policy_.request(reason); }

  std::optional<ResumePoint> restore_latest() override {
    pipeline_.settle_overlap(/*commit=*/false);
    if (memory_pipeline_) memory_pipeline_->settle_overlap(/*commit=*/false);
    wait_until_finished();
    pipeline_.forget_sources();
    if (memory_pipeline_) memory_pipeline_->forget_sources();
    auto point = restorer_.restore_latest();
    drop_memory_snapshots_newer_than(point ? point->step : -1);
    if (!point) return std::nullopt;
    last_step_ = point->step;
    position_ = LoopPosition{point->epoch, point->batch, point->epoch_ended};
    slips_.resumed(point->step);
    policy_.resumed_at(point->step);
    if (restorer_.restored_newer_than_disk()) {
      persist_to_disk(*point);
    } else {
      pipeline_.resumed_from(point->step, point->path);
    }
    return point;
  }

  void wait_until_finished() override {
    pipeline_.settle_overlap(/*commit=*/true);
    if (memory_pipeline_) memory_pipeline_->settle_overlap(/*commit=*/true);
    pipeline_.wait_until_finished();
    if (memory_pipeline_) memory_pipeline_->wait_until_finished();
  }
  void check_for_errors() override { pipeline_.check_for_errors(); }
  std::vector<int64_t> all_steps() const override { return store_->valid_steps(); }
  bool should_stop() const override { return policy_.should_stop(); }
  int exit_code() const override { return policy_.should_stop() ? config_.signals.exit_code : 0; }
  SnapshotStats stats() const override {
    SnapshotStats stats = pipeline_.stats();
    if (memory_pipeline_) {
      const SnapshotStats tier = memory_pipeline_->stats();
      stats.memory = {memory_pipeline_->off_because().empty(), tier.committed, tier.skipped, tier.failed,
                      tier.last_stall_ms};
    }
    return stats;
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    std::exception_ptr error;
    try {
      if (!train_end_done_) on_train_end();
      wait_until_finished();
    } catch (...) {
      error = std::current_exception();
    }
    activity_->ended = true;
    coordinator_->leave(/*cleanly=*/!error);  // the others must not count a rank that finished as lost
    shutdown();
    if (!error) remove_memory_tier();
    store_.reset();  // releases the directory lock
    if (error) std::rethrow_exception(error);
    if (leader_ && policy_.should_stop() && config_.signals.after_stop == AfterStop::kRequeue) {
      if (!requeue_)
        throw Error("signals.after_stop: requeue, but this job runs under no scheduler that can requeue it");
      log()->info("requeueing the job (signals.after_stop: requeue)");
      requeue_();
    }
  }

 private:
  // At every hook: a lost rank, and with on_error: abort any failure, end
  // training with an exception.
  void check_policy() {
    activity_->entered.fetch_add(1);
    if (const std::string lost = coordinator_->lost(); !lost.empty()) throw CoordinationError(lost);
    if (config_.on_error == OnError::kAbort) check_for_errors();
  }

  // max_consecutive_failures reached on some rank: every rank stops after
  // the same step, with this rank's own count or the other's word for it.
  void stop_failing_in_a_row() {
    pipeline_.take_failures_in_a_row();
    throw Error("snapshots keep failing on another rank of this job (max_consecutive_failures: " +
                std::to_string(config_.max_consecutive_failures) +
                "), so this job is not protected; see that rank's log and events");
  }

  // The lifeline's thread reports a lost rank: log it, record it, and with
  // on_lost_rank: exit end the process when the training thread is stuck
  // (waiting in one of the job's collectives, it would wait for the lost rank
  // until that collective's own timeout, 30 minutes by PyTorch's default).
  void watch_for_lost_ranks() {
    coordinator_->on_lost([this, activity = activity_](const std::string& why) {
      log()->error("{}; this job cannot go on: every autosnap hook throws from now on", why);
      events_.write("rank-lost", {{"why", why}});
      if (config_.distributed.on_lost_rank != OnLostRank::kExit) return;
      const int64_t seen = activity->entered.load();
      std::thread([activity, seen] {
        std::this_thread::sleep_for(kLostRankGrace);
        if (activity->ended || activity->entered.load() != seen) return;
        log()->error(
            "the training thread reached no autosnap hook within {} s of the loss (it is presumably "
            "waiting in a collective with the lost rank): ending the process with status 5 "
            "(distributed.on_lost_rank: exit)",
            kLostRankGrace.count());
        log()->flush();
        std::fflush(nullptr);
        std::_Exit(5);
      }).detach();
    });
  }

  // Rank 0 holds the lock; in a job of several ranks the directory must be one every node sees.
  static std::unique_ptr<SnapshotStore> open_store(const Config& config, FileSystem& fs,
                                                   Coordinator& coordinator) {
    if (coordinator.world_size() > 1) check_shared_directory(fs, config.directory, coordinator);
    return coordinator.rank() == 0 ? SnapshotStore::open_for_writing(config.directory, config.flush.fsync, fs)
                                   : SnapshotStore::open_for_rank(config.directory, config.flush.fsync, fs);
  }

  // memory.every_steps: skipped on every rank (never waited for) while one is still writing the last one.
  // Its failure (e.g. no host memory to stage into) turns the tier off; training goes on.
  void take_memory_snapshot(int64_t step) {
    try {
      memory_pipeline_->submit(step, position_, "memory", Urgency::kMaySkip, {});
    } catch (const std::exception& e) {
      memory_pipeline_->turn_off("staging the memory snapshot of step " + std::to_string(step) +
                                 " failed: " + e.what());
    }
  }

  // Resumed from a memory snapshot newer than any on disk: snapshot it to disk
  // now, so that losing this node does not lose it.
  void persist_to_disk(const ResumePoint& point) {
    log()->info("the disk has no snapshot of step {} yet: writing the restored state to it", point.step);
    if (pipeline_.submit(point.step, position_, "memory_persist", Urgency::kMustTake, {}))
      policy_.snapshot_taken(point.step);
  }

  // A normal exit leaves nothing in memory, unless the disk lacks its newest step.
  void remove_memory_tier() {
    if (!memory_) return;
    try {
      const auto held = memory_->steps();
      const auto on_disk = store_->committed_steps();
      if (!held.empty() && (on_disk.empty() || held.back() > on_disk.back())) {
        log()->warn(
            "kept the memory snapshot of step {} in {}: the disk's newest is {}; the next start on this node "
            "resumes from it and writes it to disk (`autosnap clean` removes it)",
            held.back(), memory_->path(),
            on_disk.empty() ? "none" : "step " + std::to_string(on_disk.back()));
        return;
      }
      memory_->remove_all();
    } catch (const std::exception& e) {
      log()->warn("cannot remove the memory tier's files: {}", e.what());
    }
  }

  // Memory snapshots later than the step training resumes from (this rank
  // got further than the others before the crash) would collide with the
  // ones this run takes.
  void drop_memory_snapshots_newer_than(int64_t step) {
    try {
      if (memory_) memory_->drop_newer_than(step);
      if (replicas_) replicas_->drop_newer_than(step);
    } catch (const std::exception& e) {
      log()->warn("cannot remove memory snapshots newer than step {}: {}", step, e.what());
    }
  }

  // memory.replicas, when the memory tier is open; without them, each node keeps its own.
  static std::unique_ptr<MemoryReplicas> open_replicas(const Config& config, MemoryTier* memory,
                                                       Coordinator& coordinator) {
    if (!memory || config.memory.replicas == 0) return nullptr;
    try {
      return std::make_unique<MemoryReplicas>(*memory, coordinator, config.memory.replicas,
                                              config.memory.keep_last);
    } catch (const std::exception& e) {
      log()->warn("memory tier replicas are off for this run: {}", e.what());
      return nullptr;
    }
  }

  // The memory tier, when configured and it can be opened here; without it, the disk tier alone.
  static std::unique_ptr<MemoryTier> open_memory_tier(const Config& config, FileSystem& fs, int rank,
                                                      const SnapshotPipeline::Labels& labels) {
    if (!config.memory.enabled) return nullptr;
    std::string job_id = "local";
    for (const auto& [key, value] : labels)
      if (key == "slurm_job_id") job_id = value;
    try {
      return std::make_unique<MemoryTier>(config, fs, rank, job_id);
    } catch (const std::exception& e) {
      log()->warn("the memory tier is off for this run: {}; snapshots go to the disk tier only", e.what());
      return nullptr;
    }
  }

  // The memory tier's pipeline writes alone, never waits and keeps memory.keep_last.
  static Config memory_tier_config(const Config& config) {
    Config memory = config;
    memory.flush.mode = FlushMode::kAsync;
    memory.flush.max_pending = 1;
    memory.flush.when_busy = WhenBusy::kSkip;
    memory.flush.staging_memory_limit = 0;  // MemoryTier::check_room bounds it
    memory.flush.fsync = false;             // a tmpfs: nothing to make durable
    memory.retention = RetentionRule{};
    memory.retention.keep_last = config.memory.keep_last;
    memory.on_error = OnError::kWarn;
    memory.max_consecutive_failures = 0;
    return memory;
  }

  void take_snapshot(int64_t step, TriggerPolicy::Decision due) {
    if (policy_.has_snapshot_of(step)) {
      log()->debug("step {} already has a snapshot; '{}' adds nothing", step, due.reason);
      pipeline_.answer_after_pending_writes(step, std::move(due.waiters));
      return;
    }
    const auto start = Clock::now();
    if (pipeline_.submit(step, position_, due.reason, due.urgency, std::move(due.waiters))) {
      policy_.snapshot_taken(step);
      policy_.budget().snapshot_started(milliseconds_since(start));
    }
  }

  // max_overhead: the step's training time (from the last on_step_end to
  // this one, autosnap's own time in that hook left out) and whether a
  // snapshot was being written at any moment of it (one that ended mid-step
  // counts). Rank 0 decides, so it says what it chose.
  void measure_the_step(int64_t step, Clock::time_point entered) {
    OverheadBudget& budget = policy_.budget();
    if (!budget.enabled()) return;
    if (left_step_hook_) {
      budget.step_ended(std::chrono::duration<double, std::milli>(entered - *left_step_hook_).count(),
                        pipeline_.wrote_since(writes_ended_seen_));
    }
    if (leader_ && budget.take_change()) {
      log()->info("{}", budget.why());
      events_.write("interval", {{"step", step}, {"steps", *budget.interval()}, {"why", budget.why()}});
    }
  }

  static void check_epoch_number(const char* hook, int64_t epoch) {
    if (epoch < 0)
      throw Error(std::string(hook) + "(" + std::to_string(epoch) + "): epochs are numbered from 0");
  }

  static void warn_of(const std::string& slip) {
    if (!slip.empty()) log()->warn("{}", slip);
  }

  // A loop that starts again the epoch it resumes in the middle of, with a
  // torch::data loader whose stock sampler draws a new order (from the just
  // restored generator): say so, once.
  void warn_without_data_position() {
    if (data_position_warned_ || tracked_.tracks_data_position()) return;
    data_position_warned_ = true;
    log()->warn(
        "resumed in the middle of epoch {} ({} batches done) but no data position is tracked: a torch::data "
        "loader with a stock sampler starts the epoch again in a new order, so the run differs from an "
        "uninterrupted one; track an autosnap::ResumableRandomSampler (autosnap/samplers.h)",
        position_.epoch, position_.batch);
  }

  // A new run must not share a directory with an earlier run's snapshots:
  // their step numbers would collide and they would count toward this run's
  // retention.
  void refuse_earlier_runs() {
    std::optional<int64_t> newest;
    for (const auto& info : store_->list()) {
      if (info.status != SnapshotStatus::kInProgress && info.status != SnapshotStatus::kQuarantined)
        newest = info.step;
    }
    if (newest) {
      throw Error(
          "resume: never, but '" + config_.directory +
          "' already holds snapshots of an earlier run (newest: step " + std::to_string(*newest) +
          "); a new run would collide with them: use another directory, remove them, or set resume: auto");
    }
  }

  void shutdown() {
    if (!background_.running()) return;
    surface_->stop();
    policy_.fail_requests("the job ended before the next step boundary");
    pipeline_.wait_until_finished();
    if (memory_pipeline_) memory_pipeline_->wait_until_finished();
    background_.join();
    pipeline_.remove_abandoned();  // before the store goes
    surface_.reset();              // after the threads: no handler can reach it any more
  }

  // A job of several ranks never skips a snapshot: every rank must take the same ones.
  static Config for_the_job(Config config, const JobContext& job) {
    if (job.coordinator && job.coordinator->world_size() > 1 && config.flush.when_busy == WhenBusy::kSkip) {
      log()->warn(
          "flush.when_busy: skip is ignored in a job of {} ranks: every rank must take the same snapshots",
          job.coordinator->world_size());
      config.flush.when_busy = WhenBusy::kWait;
    }
    return config;
  }

  // Rank 0 writes events.jsonl; the others events.rank-00001.jsonl, ...
  static std::string events_file_name(int rank) {
    if (rank == 0) return "events.jsonl";
    char name[48];
    std::snprintf(name, sizeof(name), "events.rank-%05d.jsonl", rank);
    return name;
  }

  Config config_;
  c10::Device device_;  // checked before the directory is touched
  std::unique_ptr<Coordinator> coordinator_;
  bool leader_;  // rank 0: holds the lock, serves the socket, commits
  std::unique_ptr<SnapshotStore> store_;
  EventLog events_;
  std::unique_ptr<MemoryTier> memory_;        // null: no memory tier
  std::unique_ptr<MemoryReplicas> replicas_;  // null: none configured (or the tier is off)
  TrackedSet tracked_;
  TriggerPolicy policy_;
  BackgroundThreads background_;
  SnapshotPipeline pipeline_;
  const Config memory_config_;
  SingleProcessCoordinator memory_coordinator_;  // each rank's memory tier is its own
  std::unique_ptr<SnapshotPipeline> memory_pipeline_;
  Restorer restorer_;
  std::function<void()> requeue_;
  std::unique_ptr<ControlSurface> surface_;
  std::optional<Clock::time_point> left_step_hook_;  // when on_step_end last returned (max_overhead)
  int64_t writes_ended_seen_ = 0;  // the pipeline's ended writes at the last step (max_overhead)
  std::shared_ptr<HookActivity> activity_ = std::make_shared<HookActivity>();

  // Training thread.
  std::optional<int64_t> last_step_;
  LoopPosition position_;
  LoopSlips slips_;
  bool stop_ignored_warned_ = false;
  bool data_position_warned_ = false;
  bool train_end_done_ = false;
  bool closed_ = false;
};

}  // namespace

std::unique_ptr<SnapshotterImpl> make_active_snapshotter(Config config, FileSystem& fs, JobContext job) {
  return std::make_unique<ActiveSnapshotter>(std::move(config), fs, std::move(job));
}

}  // namespace daemon

// ---------------------------------------------------------------------------
// The public face: every call goes to the active or the disabled implementation.
// (from_config, from_env and the Config constructor are the cluster layer's:
// cluster/snapshotter_factory.cpp, which knows the job's ranks.)
// ---------------------------------------------------------------------------

Snapshotter Snapshotter::disabled() { return Snapshotter(std::make_unique<daemon::SnapshotterImpl>()); }

Snapshotter::Snapshotter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Snapshotter::Snapshotter(Snapshotter&&) noexcept = default;
Snapshotter& Snapshotter::operator=(Snapshotter&&) noexcept = default;

Snapshotter::~Snapshotter() {
  if (!impl_) return;  // moved from
  try {
    if (std::uncaught_exceptions() > 0) {
      impl_->wait_until_finished();  // unwinding: no final snapshot of a broken state
    } else {
      impl_->close();
    }
  } catch (const std::exception& e) {
    util::log()->error("while closing: {}", e.what());
  }
}

bool Snapshotter::enabled() const { return impl_->enabled(); }
const Config& Snapshotter::config() const { return impl_->config(); }

void Snapshotter::track(const std::string& name, torch::nn::Module& module) {
  impl_->track(name, [&] { return daemon::track_module(module); });
}
void Snapshotter::track(const std::string& name, torch::jit::Module& module) {
  impl_->track(name, [&] { return daemon::track_script_module(module); });
}
void Snapshotter::track(const std::string& name, torch::optim::Optimizer& optimizer) {
  impl_->track(name, [&] { return daemon::track_optimizer(optimizer); });
}
void Snapshotter::track(const std::string& name, int64_t& value) {
  impl_->track(name, [&] { return daemon::track_int(value); });
}
void Snapshotter::track(const std::string& name, double& value) {
  impl_->track(name, [&] { return daemon::track_double(value); });
}
void Snapshotter::track(const std::string& name, bool& value) {
  impl_->track(name, [&] { return daemon::track_bool(value); });
}
void Snapshotter::track(const std::string& name, std::string& value) {
  impl_->track(name, [&] { return daemon::track_string(value); });
}
void Snapshotter::track(const std::string& name, at::Tensor& tensor) {
  impl_->track(name, [&] { return daemon::track_tensor(tensor); });
}
void Snapshotter::track(const std::string& name, const ResumableSampler& sampler) {
  impl_->track(name, [&] { return daemon::track_sampler(sampler); });
}
void Snapshotter::track(const std::string& name, std::function<c10::IValue()> save,
                        std::function<void(const c10::IValue&)> load) {
  impl_->track(name, [&] { return daemon::track_callbacks(std::move(save), std::move(load)); });
}

std::optional<ResumePoint> Snapshotter::on_train_start() { return impl_->on_train_start(); }
void Snapshotter::on_epoch_start(int64_t epoch) { impl_->on_epoch_start(epoch); }
void Snapshotter::before_optimizer_step() { impl_->before_optimizer_step(); }
void Snapshotter::on_step_end(int64_t step) { impl_->on_step_end(step); }
void Snapshotter::on_epoch_end(int64_t epoch) { impl_->on_epoch_end(epoch); }
void Snapshotter::on_train_end() { impl_->on_train_end(); }
void Snapshotter::on_exception(const std::exception& error) { impl_->on_exception(error); }
void Snapshotter::snapshot_now(const std::string& reason) { impl_->snapshot_now(reason); }
void Snapshotter::request_snapshot(const std::string& reason) { impl_->request_snapshot(reason); }
std::optional<ResumePoint> Snapshotter::restore_latest() { return impl_->restore_latest(); }
void Snapshotter::wait_until_finished() { impl_->wait_until_finished(); }
void Snapshotter::check_for_errors() { impl_->check_for_errors(); }
std::optional<int64_t> Snapshotter::latest_step() const {
  auto steps = impl_->all_steps();
  if (steps.empty()) return std::nullopt;
  return steps.back();
}
std::vector<int64_t> Snapshotter::all_steps() const { return impl_->all_steps(); }
bool Snapshotter::should_stop() const { return impl_->should_stop(); }
int Snapshotter::exit_code() const { return impl_->exit_code(); }
SnapshotStats Snapshotter::stats() const { return impl_ ? impl_->stats() : SnapshotStats{}; }
void Snapshotter::close() { impl_->close(); }

}  // namespace autosnap
