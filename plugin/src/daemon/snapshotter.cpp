// The Snapshotter: the training hooks, wired to the daemon's parts (trigger
// policy, snapshot pipeline, restorer, control surface), and the public face.
#include "autosnap/snapshotter.h"

#include <cstdlib>

#include "autosnap/device.h"
#include "autosnap/errors.h"
#include "daemon/background.h"
#include "daemon/control_surface.h"
#include "daemon/coordinator.h"
#include "daemon/event_log.h"
#include "daemon/restorer.h"
#include "daemon/snapshot_pipeline.h"
#include "daemon/snapshotter_impl.h"
#include "daemon/tracked_set.h"
#include "daemon/trigger_policy.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {
namespace {

using util::log;

// Thread-safety: the hooks, track() and restore on the training thread;
// request_snapshot(), should_stop() and stats() from any thread. The parts
// each guard their own state; none holds its lock while calling another.
class ActiveSnapshotter final : public SnapshotterImpl {
 public:
  ActiveSnapshotter(Config config, FileSystem& fs)
      : config_(std::move(config)),
        device_(resolve_device(config_.device, "device")),
        store_(SnapshotStore::open_for_writing(config_.directory, config_.flush.fsync, fs)),
        events_(fs, join_path(config_.directory, "events.jsonl")),
        tracked_(config_.capture.rng),
        policy_(config_.triggers),
        pipeline_(config_, *store_, events_, coordinator_, tracked_, background_),
        restorer_(config_, fs, *store_, events_, coordinator_, tracked_, device_) {
    util::set_log_level(config_.log_level);
    surface_ = std::make_unique<ControlSurface>(config_, background_, events_, policy_, pipeline_);
    background_.start(config_.flush.threads);
    log()->info("snapshots go to {} (config {})", config_.directory,
                config_.source.empty() ? "in code" : config_.source);
  }
  ~ActiveSnapshotter() override { shutdown(); }

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

  void before_optimizer_step() override {
    check_policy();
    pipeline_.settle_overlap(/*commit=*/true);
  }

  void on_step_end(int64_t step) override {
    check_policy();
    pipeline_.abandon_unconfirmed_overlap();
    last_step_ = step;
    restorer_.step_completed();
    if (policy_.should_stop() && !stop_ignored_warned_) {
      stop_ignored_warned_ = true;
      log()->warn(
          "a stop was requested but training goes on: check should_stop() after on_step_end() and leave the "
          "loop");
    }
    auto due = policy_.after_step(step);
    if (!due.reason.empty()) take_snapshot(step, due);
    if (due.stop) policy_.stopped();  // the stop signal's snapshot is taken: the loop may leave now
  }

  void on_epoch_end(int64_t epoch) override {
    check_policy();
    epoch_ = epoch;
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
      // A request that arrived after the last step boundary is served now.
      auto due = policy_.pending_requests();
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
    wait_until_finished();
    auto point = restorer_.restore_latest();
    if (!point) return std::nullopt;
    last_step_ = point->step;
    epoch_ = point->epoch;
    policy_.resumed_at(point->step);
    pipeline_.resumed_from(point->step, point->path);
    return point;
  }

  void wait_until_finished() override {
    pipeline_.settle_overlap(/*commit=*/true);
    pipeline_.wait_until_finished();
  }
  void check_for_errors() override { pipeline_.check_for_errors(); }
  std::vector<int64_t> all_steps() const override { return store_->valid_steps(); }
  bool should_stop() const override { return policy_.should_stop(); }
  int exit_code() const override { return policy_.should_stop() ? config_.signals.exit_code : 0; }
  SnapshotterStats stats() const override { return pipeline_.stats(); }

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
    shutdown();
    store_.reset();  // releases the directory lock
    if (error) std::rethrow_exception(error);
  }

 private:
  void check_policy() {
    if (config_.on_error == OnError::kAbort) check_for_errors();
  }

  void take_snapshot(int64_t step, TriggerPolicy::Decision due) {
    if (policy_.has_snapshot_of(step)) {
      log()->debug("step {} already has a snapshot; '{}' adds nothing", step, due.reason);
      pipeline_.answer_after_pending_writes(step, std::move(due.waiters));
      return;
    }
    if (pipeline_.submit(step, epoch_, due.reason, due.urgency, std::move(due.waiters)))
      policy_.snapshot_taken(step);
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
    background_.join();
    surface_.reset();  // after the threads: no handler can reach it any more
  }

  Config config_;
  c10::Device device_;  // checked before the directory is touched
  std::unique_ptr<SnapshotStore> store_;
  EventLog events_;
  SingleProcessCoordinator coordinator_;
  TrackedSet tracked_;
  TriggerPolicy policy_;
  BackgroundThreads background_;
  SnapshotPipeline pipeline_;
  Restorer restorer_;
  std::unique_ptr<ControlSurface> surface_;

  // Training thread.
  std::optional<int64_t> last_step_;
  std::optional<int64_t> epoch_;
  bool stop_ignored_warned_ = false;
  bool train_end_done_ = false;
  bool closed_ = false;
};

}  // namespace

std::unique_ptr<SnapshotterImpl> make_active_snapshotter(Config config, FileSystem& fs) {
  return std::make_unique<ActiveSnapshotter>(std::move(config), fs);
}

SnapshotterStats stats_of(const Snapshotter& snapshotter) {
  return snapshotter.impl_ ? snapshotter.impl_->stats() : SnapshotterStats{};
}

}  // namespace daemon

// ---------------------------------------------------------------------------
// The public face: every call goes to the active or the disabled implementation.
// ---------------------------------------------------------------------------

Snapshotter Snapshotter::from_config(const std::string& path) { return Snapshotter(Config::from_file(path)); }

Snapshotter Snapshotter::from_env() {
  const char* path = std::getenv("AUTOSNAP_CONFIG");
  if (path == nullptr || *path == '\0') {
    util::log()->info("AUTOSNAP_CONFIG is not set: snapshots are disabled");
    return disabled();
  }
  return from_config(path);
}

Snapshotter Snapshotter::disabled() { return Snapshotter(std::make_unique<daemon::SnapshotterImpl>()); }

Snapshotter::Snapshotter(std::unique_ptr<daemon::SnapshotterImpl> impl) : impl_(std::move(impl)) {}
Snapshotter::Snapshotter(Config config, FileSystem& fs)
    : impl_(daemon::make_active_snapshotter(std::move(config), fs)) {}
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
void Snapshotter::track(const std::string& name, std::function<c10::IValue()> save,
                        std::function<void(const c10::IValue&)> load) {
  impl_->track(name, [&] { return daemon::track_callbacks(std::move(save), std::move(load)); });
}

std::optional<ResumePoint> Snapshotter::on_train_start() { return impl_->on_train_start(); }
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
void Snapshotter::close() { impl_->close(); }

}  // namespace autosnap
