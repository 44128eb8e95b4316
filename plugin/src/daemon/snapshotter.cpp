// The Snapshotter: construction, the training hooks, requests from other
// threads (signals, control socket), status and closing. Taking and writing
// snapshots: snapshot_writing.cpp; restoring: snapshot_restore.cpp.
#include <algorithm>
#include <cstdlib>

#include "autosnap/device.h"
#include "autosnap/errors.h"
#include "util/log.h"
#include "daemon/snapshotter_impl.h"

#include <unistd.h>

namespace autosnap {

using daemon::Clock;
using daemon::kRngEntry;
using util::log;
using daemon::milliseconds_since;
using nlohmann::json;

namespace {

bool valid_track_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-' || c == '.';
  });
}

}  // namespace

// ---------------------------------------------------------------------------
// Construction and shutdown
// ---------------------------------------------------------------------------

Snapshotter::Impl::Impl(Config config, FileSystem& fs)
    : config_(std::move(config)),
      fs_(fs),
      device_(resolve_device(config_.device, "device")),
      store_(SnapshotStore::open_for_writing(config_.directory, StoreOptions{config_.flush.fsync}, fs)),
      events_(fs, join_path(config_.directory, "events.jsonl")),
      work_(boost::asio::make_work_guard(io_)),
      strand_(boost::asio::make_strand(io_)),
      slots_(static_cast<size_t>(config_.flush.max_pending)),
      overlap_(config_.flush.overlap && config_.flush.mode == FlushMode::kAsync) {
  util::set_log_level(config_.log_level);
  if (config_.control.socket) start_control_socket();
  start_signal_handling();
  for (int i = 0; i < config_.flush.threads; ++i) threads_.emplace_back([this] { io_.run(); });
  log()->info("snapshots go to {} (config {})", config_.directory, config_.source.empty() ? "in code" : config_.source);
}

void Snapshotter::Impl::start_control_socket() {
  daemon::ControlTarget target;
  target.status = [this] { return status_json(); };
  target.snapshot = [this](const std::string& reason, daemon::ControlReply reply) {
    log()->info("snapshot requested through the control socket ({})", reason);
    request_snapshot(reason, [reply](const SnapshotOutcome& outcome) {
      json answer = {{"ok", outcome.committed}, {"step", outcome.step}};
      answer["requested_after_step"] = outcome.requested_after_step ? json(*outcome.requested_after_step) : json(nullptr);
      if (outcome.committed) {
        answer["path"] = outcome.path;
      } else {
        answer["error"] = outcome.error;
      }
      reply(answer);
    });
  };
  try {
    control_ = std::make_unique<daemon::ControlServer>(io_, config_.control_socket_path(), std::move(target));
  } catch (const IoError& e) {
    // Training matters more than the socket: say why and go on without it.
    log()->warn("control socket disabled: {}", e.what());
  } catch (const boost::system::system_error& e) {
    log()->warn("control socket disabled: cannot serve '{}': {}", config_.control_socket_path(), e.what());
  }
}

void Snapshotter::Impl::start_signal_handling() {
  std::vector<int> all = config_.signals.snapshot;
  all.insert(all.end(), config_.signals.snapshot_and_stop.begin(), config_.signals.snapshot_and_stop.end());
  if (all.empty()) return;
  signals_ = std::make_unique<boost::asio::signal_set>(io_);
  for (int signal_number : all) signals_->add(signal_number);
  wait_for_signal();
}

void Snapshotter::Impl::wait_for_signal() {
  // No work in a signal handler: Asio delivers the signal here, on a pool thread.
  signals_->async_wait([this](const boost::system::error_code& error, int signal_number) {
    if (error) return;  // cancelled at shutdown
    on_signal(signal_number);
    wait_for_signal();
  });
}

void Snapshotter::Impl::on_signal(int signal_number) {
  const std::string name = signal_name(signal_number);
  const auto& stop_signals = config_.signals.snapshot_and_stop;
  const bool stop = std::find(stop_signals.begin(), stop_signals.end(), signal_number) != stop_signals.end();
  log()->info("{} received: snapshot at the next step boundary{}", name, stop ? ", then stop" : "");
  events_.write("signal", {{"signal", name}, {"stop", stop}});
  request_snapshot("signal " + name);
  if (stop) stop_pending_ = true;
}

json Snapshotter::Impl::status_json() const {
  const Status s = status();
  json last = nullptr;
  if (s.last_committed) last = {{"step", *s.last_committed}, {"path", s.last_committed_path}};
  return {{"ok", true},
          {"pid", static_cast<int>(::getpid())},
          {"directory", config_.directory},
          {"step", s.step ? json(*s.step) : json(nullptr)},
          {"last_committed", last},
          {"in_flight", s.in_flight},
          {"committed", s.committed},
          {"stopping", stop_requested_ || stop_pending_}};
}

void Snapshotter::Impl::fail_pending_requests(const std::string& why) {
  std::vector<OutcomeCallback> waiters;
  {
    std::lock_guard<std::mutex> lock(request_mutex_);
    waiters.swap(request_waiters_);
    requested_reasons_.clear();
  }
  SnapshotOutcome outcome;
  outcome.step = last_step_.value_or(0);
  outcome.error = why;
  for (auto& waiter : waiters) waiter(outcome);
}

int Snapshotter::Impl::exit_code() const { return stop_requested_ ? config_.signals.exit_code : 0; }

Snapshotter::Impl::~Impl() { shutdown(); }

void Snapshotter::Impl::shutdown() {
  if (threads_.empty()) return;
  if (control_) control_->stop();
  if (signals_) {
    boost::system::error_code ignored;
    signals_->cancel(ignored);
  }
  fail_pending_requests("the job ended before the next step boundary");
  {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return in_flight_ == 0; });
  }
  work_.reset();
  io_.stop();
  for (auto& thread : threads_) thread.join();
  threads_.clear();
  control_.reset();  // after the threads: no handler can reach it any more
  signals_.reset();
}

void Snapshotter::Impl::track(const std::string& name, std::unique_ptr<daemon::TrackedState> state) {
  if (!valid_track_name(name)) {
    throw Error("cannot track '" + name + "': names may use letters, digits, '_', '-' and '.' only");
  }
  if (name == kRngEntry) throw Error("cannot track '" + name + "': the name is reserved for the random generator state");
  for (const auto& [existing, _] : tracked_) {
    if (existing == name) throw Error("cannot track '" + name + "': the name is already tracked");
  }
  tracked_.emplace_back(name, std::move(state));
}

// ---------------------------------------------------------------------------
// Hooks (training thread)
// ---------------------------------------------------------------------------

std::optional<ResumePoint> Snapshotter::Impl::on_train_start() {
  check_policy();
  if (config_.resume == ResumeMode::kNever) {
    // A new run must not share a directory with an earlier run's snapshots:
    // their step numbers would collide and they would count toward this run's
    // retention.
    std::optional<int64_t> newest;
    for (const auto& info : store_->list()) {
      if (info.status != SnapshotStatus::kInProgress && info.status != SnapshotStatus::kQuarantined) newest = info.step;
    }
    if (newest) {
      throw Error("resume: never, but '" + config_.directory + "' already holds snapshots of an earlier run (newest: step " +
                  std::to_string(*newest) +
                  "); a new run would collide with them: use another directory, remove them, or set resume: auto");
    }
    return std::nullopt;
  }
  auto resumed = restore_latest();
  if (!resumed && config_.resume == ResumeMode::kRequired) {
    throw Error("resume: required, but '" + config_.directory + "' holds no valid snapshot to resume from");
  }
  if (!resumed) log()->info("no snapshot to resume from; starting fresh");
  return resumed;
}

void Snapshotter::Impl::before_optimizer_step() {
  check_policy();
  settle_overlap(/*commit=*/true);
}

void Snapshotter::Impl::on_step_end(int64_t step) {
  check_policy();
  if (overlap_job_) {
    // A new step ended while a pipelined copy was still unconfirmed: the
    // optimizer may have run during the copy, so that snapshot is unsafe.
    log()->warn("flush.overlap needs before_optimizer_step() before optimizer.step(); discarding the snapshot of "
                "step {} and staging synchronously from now on",
                overlap_job_->step);
    settle_overlap(/*commit=*/false);
    overlap_ = false;
  }
  last_step_ = step;
  if (restore_attempts_) {
    // A step completed after the restore: it did not crash us.
    try {
      restore_attempts_->end();
    } catch (const IoError& e) {
      log()->warn("cannot clear the restore attempt record: {}", e.what());
    }
    restore_attempts_.reset();
  }
  if (stop_requested_ && !stop_ignored_warned_) {
    stop_ignored_warned_ = true;
    log()->warn("a stop was requested but training goes on: check should_stop() after on_step_end() and leave the loop");
  }
  const bool stop = stop_pending_.exchange(false);
  if (!take_requested_snapshot(step, /*step_just_ended=*/true)) {
    const std::string reason = due_reason(step);
    if (!reason.empty()) take_snapshot(step, reason, Urgency::kMaySkip);
  }
  if (stop) stop_requested_ = true;  // the stop signal's snapshot is taken: the loop may leave now
}

bool Snapshotter::Impl::take_requested_snapshot(int64_t step, bool step_just_ended) {
  std::vector<OutcomeCallback> waiters;
  std::string reason;
  {
    // Publishing the step and claiming the requests in one critical section:
    // a request queued before is served by this step, one queued after
    // already sees this step as the last completed one.
    std::lock_guard<std::mutex> lock(request_mutex_);
    if (step_just_ended) {
      std::lock_guard<std::mutex> status_lock(mutex_);
      current_step_ = step;
    }
    if (requested_reasons_.empty()) return false;
    reason = requested_reasons_.front();
    requested_reasons_.clear();
    waiters.swap(request_waiters_);
  }
  take_snapshot(step, reason, Urgency::kMustTake, std::move(waiters));
  return true;
}

void Snapshotter::Impl::on_epoch_end(int64_t epoch) {
  check_policy();
  epoch_ = epoch;
  if (!config_.triggers.on_epoch_end) return;
  if (!last_step_) {
    log()->warn("on_epoch_end({}) before any on_step_end: no step to snapshot", epoch);
    return;
  }
  take_snapshot(*last_step_, "epoch_end", Urgency::kMaySkip);
}

void Snapshotter::Impl::on_train_end() {
  train_end_done_ = true;
  settle_overlap(/*commit=*/true);  // no optimizer step can follow
  // A request that arrived after the last step boundary is served now.
  if (last_step_ && !take_requested_snapshot(*last_step_, /*step_just_ended=*/false) && config_.triggers.on_train_end) {
    take_snapshot(*last_step_, "train_end", Urgency::kMustTake);
  }
  wait_until_finished();
  check_policy();
}

void Snapshotter::Impl::on_exception(const std::exception& error) {
  log()->warn("training stopped by an exception: {}; finishing queued snapshots", error.what());
  settle_overlap(/*commit=*/false);  // the step may have been cut short
  wait_until_finished();
}

void Snapshotter::Impl::snapshot_now(const std::string& reason) {
  check_policy();
  settle_overlap(/*commit=*/true);
  if (!last_step_) {
    // Step 0 would claim a trained step 0 that resume then skips.
    log()->warn("snapshot_now('{}') before any on_step_end: no completed step to snapshot", reason);
    return;
  }
  take_snapshot(*last_step_, reason, Urgency::kMustTake);
}

void Snapshotter::Impl::request_snapshot(const std::string& reason, OutcomeCallback done) {
  std::lock_guard<std::mutex> lock(request_mutex_);
  requested_reasons_.push_back(reason);
  if (!done) return;
  std::optional<int64_t> asked_at;
  {
    std::lock_guard<std::mutex> status_lock(mutex_);
    asked_at = current_step_;
  }
  request_waiters_.push_back([done = std::move(done), asked_at](const SnapshotOutcome& outcome) {
    SnapshotOutcome answered = outcome;
    answered.requested_after_step = asked_at;
    done(answered);
  });
}


std::string Snapshotter::Impl::due_reason(int64_t step) {
  const auto& t = config_.triggers;
  if (t.every_steps > 0 && step % t.every_steps == 0) return "every_steps";
  if (t.every_seconds > 0 && milliseconds_since(last_snapshot_time_) >= t.every_seconds * 1000) return "every_seconds";
  return "";
}

void Snapshotter::Impl::check_policy() {
  if (config_.on_error == OnError::kAbort) check_for_errors();
}

void Snapshotter::Impl::check_for_errors() {
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (errors_.empty()) return;
    error = errors_.front();
    errors_.pop_front();
  }
  std::rethrow_exception(error);
}

void Snapshotter::Impl::settle_overlap(bool commit) {
  if (!overlap_job_) return;
  auto job = std::move(overlap_job_);
  overlap_job_.reset();
  const auto start = Clock::now();
  if (commit) {
    try {
      job->deferred->run_or_wait();
    } catch (const std::exception&) {
      // The writer reports it as the snapshot's failure.
    }
  }
  job->gate->open(commit);
  job->stall_ms = job->stall_ms + milliseconds_since(start);
}

// ---------------------------------------------------------------------------
// Waiting, status, closing
// ---------------------------------------------------------------------------

void Snapshotter::Impl::wait_until_finished() {
  settle_overlap(/*commit=*/true);
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return in_flight_ == 0; });
}

std::vector<int64_t> Snapshotter::Impl::all_steps() const { return store_->valid_steps(); }

SnapshotterStats Snapshotter::Impl::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  SnapshotterStats s = stats_;
  s.staging_bytes = 0;
  s.staging_allocations = 0;
  for (const auto& slot : slots_) {
    s.staging_bytes += slot.arena.bytes();
    s.staging_allocations += slot.arena.allocations();
  }
  return s;
}

Snapshotter::Impl::Status Snapshotter::Impl::status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {current_step_, last_committed_, last_committed_path_, in_flight_, stats_.committed};
}

void Snapshotter::Impl::close() {
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

// ---------------------------------------------------------------------------
// The public face
// ---------------------------------------------------------------------------

Snapshotter Snapshotter::from_config(const std::string& path) { return Snapshotter(Config::from_file(path)); }

Snapshotter Snapshotter::from_env() {
  const char* path = std::getenv("AUTOSNAP_CONFIG");
  if (path == nullptr || *path == '\0') {
    log()->info("AUTOSNAP_CONFIG is not set: snapshots are disabled");
    return disabled();
  }
  return from_config(path);
}

Snapshotter Snapshotter::disabled() { return Snapshotter(); }

Snapshotter::Snapshotter(Config config, FileSystem& fs) : impl_(std::make_unique<Impl>(std::move(config), fs)) {}
Snapshotter::Snapshotter(Snapshotter&&) noexcept = default;
Snapshotter& Snapshotter::operator=(Snapshotter&&) noexcept = default;

Snapshotter::~Snapshotter() {
  if (!impl_) return;
  try {
    if (std::uncaught_exceptions() > 0) {
      impl_->wait_until_finished();  // unwinding: no final snapshot of a broken state
    } else {
      impl_->close();
    }
  } catch (const std::exception& e) {
    log()->error("while closing: {}", e.what());
  }
}

const Config& Snapshotter::config() const {
  static const Config none;
  return impl_ ? impl_->config() : none;
}

void Snapshotter::track(const std::string& name, torch::nn::Module& module) {
  if (impl_) impl_->track(name, daemon::track_module(module));
}
void Snapshotter::track(const std::string& name, torch::jit::Module& module) {
  if (impl_) impl_->track(name, daemon::track_script_module(module));
}
void Snapshotter::track(const std::string& name, torch::optim::Optimizer& optimizer) {
  if (impl_) impl_->track(name, daemon::track_optimizer(optimizer));
}
void Snapshotter::track(const std::string& name, int64_t& value) {
  if (impl_) impl_->track(name, daemon::track_int(value));
}
void Snapshotter::track(const std::string& name, double& value) {
  if (impl_) impl_->track(name, daemon::track_double(value));
}
void Snapshotter::track(const std::string& name, bool& value) {
  if (impl_) impl_->track(name, daemon::track_bool(value));
}
void Snapshotter::track(const std::string& name, std::string& value) {
  if (impl_) impl_->track(name, daemon::track_string(value));
}
void Snapshotter::track(const std::string& name, at::Tensor& tensor) {
  if (impl_) impl_->track(name, daemon::track_tensor(tensor));
}
void Snapshotter::track(const std::string& name, std::function<c10::IValue()> save,
                        std::function<void(const c10::IValue&)> load) {
  if (impl_) impl_->track(name, daemon::track_callbacks(std::move(save), std::move(load)));
}

std::optional<ResumePoint> Snapshotter::on_train_start() { return impl_ ? impl_->on_train_start() : std::nullopt; }
void Snapshotter::before_optimizer_step() {
  if (impl_) impl_->before_optimizer_step();
}
void Snapshotter::on_step_end(int64_t step) {
  if (impl_) impl_->on_step_end(step);
}
void Snapshotter::on_epoch_end(int64_t epoch) {
  if (impl_) impl_->on_epoch_end(epoch);
}
void Snapshotter::on_train_end() {
  if (impl_) impl_->on_train_end();
}
void Snapshotter::on_exception(const std::exception& error) {
  if (impl_) impl_->on_exception(error);
}
void Snapshotter::snapshot_now(const std::string& reason) {
  if (impl_) impl_->snapshot_now(reason);
}
void Snapshotter::request_snapshot(const std::string& reason) {
  if (impl_) impl_->request_snapshot(reason);
}
std::optional<ResumePoint> Snapshotter::restore_latest() { return impl_ ? impl_->restore_latest() : std::nullopt; }
void Snapshotter::wait_until_finished() {
  if (impl_) impl_->wait_until_finished();
}
void Snapshotter::check_for_errors() {
  if (impl_) impl_->check_for_errors();
}
std::optional<int64_t> Snapshotter::latest_step() const {
  if (!impl_) return std::nullopt;
  auto steps = impl_->all_steps();
  if (steps.empty()) return std::nullopt;
  return steps.back();
}
std::vector<int64_t> Snapshotter::all_steps() const { return impl_ ? impl_->all_steps() : std::vector<int64_t>{}; }
bool Snapshotter::should_stop() const { return impl_ && impl_->should_stop(); }
int Snapshotter::exit_code() const { return impl_ ? impl_->exit_code() : 0; }
void Snapshotter::close() {
  if (impl_) impl_->close();
}
SnapshotterStats Snapshotter::stats() const { return impl_ ? impl_->stats() : SnapshotterStats{}; }

}  // namespace autosnap
