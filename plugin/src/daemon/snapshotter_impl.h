#pragma once

// The Snapshotter's engine. The training thread captures and stages; a
// Boost.Asio thread pool writes, commits and applies retention, ordered on
// one strand so the store sees one writer.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "autosnap/snapshotter.h"
#include "autosnap/store.h"
#include "daemon/control_server.h"
#include "daemon/event_log.h"
#include "daemon/restore_attempts.h"
#include "daemon/snapshot_job.h"
#include "daemon/staging.h"
#include "daemon/tracked.h"

namespace autosnap {
namespace daemon {

/// The shard entry holding the random generators' state; no tracked object may use the name.
constexpr const char* kRngEntry = "rng_state";

}  // namespace daemon

/// The outcome of a snapshot asked for from outside the training thread.
struct SnapshotOutcome {
  bool committed = false;
  int64_t step = 0;
  std::string path;
  std::string error;  ///< when not committed
  /// For requests: the last completed step when the request was queued (the
  /// snapshot is of the first step that ends after it, or of that step itself
  /// when training has ended).
  std::optional<int64_t> requested_after_step;
};
using OutcomeCallback = std::function<void(const SnapshotOutcome&)>;

class Snapshotter::Impl {
 public:
  Impl(Config config, FileSystem& fs);
  ~Impl();

  void track(const std::string& name, std::unique_ptr<daemon::TrackedState> state);

  std::optional<ResumePoint> on_train_start();
  void before_optimizer_step();
  void on_step_end(int64_t step);
  void on_epoch_end(int64_t epoch);
  void on_train_end();
  void on_exception(const std::exception& error);
  void snapshot_now(const std::string& reason);
  /// Thread-safe: a snapshot at the next step boundary; `done` (optional) is
  /// called from a background thread once it is committed or has failed.
  void request_snapshot(const std::string& reason, OutcomeCallback done = {});
  int exit_code() const;
  std::optional<ResumePoint> restore_latest();
  void wait_until_finished();
  void check_for_errors();
  std::vector<int64_t> all_steps() const;
  bool should_stop() const { return stop_requested_; }
  void close();
  SnapshotterStats stats() const;

  const Config& config() const { return config_; }
  SnapshotStore& store() { return *store_; }
  daemon::EventLog& events() { return events_; }
  boost::asio::io_context& io() { return io_; }

  /// For status queries from other threads.
  struct Status {
    std::optional<int64_t> step;            ///< last completed step
    std::optional<int64_t> last_committed;  ///< newest snapshot committed by this process
    std::string last_committed_path;
    int in_flight = 0;
    int64_t committed = 0;
  };
  Status status() const;

 private:
  struct Slot {
    daemon::StagingArena arena;
    bool busy = false;
  };
  static constexpr int kSkip = -1;
  static constexpr int kTooBig = -2;

  void check_policy();
  std::string due_reason(int64_t step);
  /// Automatic triggers may be skipped when busy (flush.when_busy: skip);
  /// requested ones (command, signal, snapshot_now, train end) never are.
  enum class Urgency { kMaySkip, kMustTake };
  void take_snapshot(int64_t step, const std::string& reason, Urgency urgency,
                     std::vector<OutcomeCallback> waiters = {});
  std::shared_ptr<daemon::SnapshotJob> stage_job(int64_t step, const std::string& reason, Urgency urgency);
  void answer_after_pending_writes(int64_t step, std::vector<OutcomeCallback> waiters);
  int acquire_slot(uint64_t bytes, Urgency urgency);
  void release_slot(int slot);
  void settle_overlap(bool commit);
  void run_job(const std::shared_ptr<daemon::SnapshotJob>& job, std::vector<OutcomeCallback> waiters);
  SnapshotInfo write_job(daemon::SnapshotJob& job);
  void apply_retention(int64_t newest);
  void record_failure(const daemon::SnapshotJob& job, std::exception_ptr error);
  void apply_snapshot(const SnapshotInfo& info, const c10::IValue& value);
  void forget_restore_attempt(daemon::RestoreAttempts& attempts);
  void shutdown();
  void start_control_socket();
  void start_signal_handling();
  void wait_for_signal();
  bool take_requested_snapshot(int64_t step, bool step_just_ended);
  void on_signal(int signal_number);
  nlohmann::json status_json() const;
  void fail_pending_requests(const std::string& why);

  Config config_;
  FileSystem& fs_;
  c10::Device device_;
  std::unique_ptr<SnapshotStore> store_;
  daemon::EventLog events_;
  int rank_ = 0;
  int world_size_ = 1;
  std::vector<std::pair<std::string, std::unique_ptr<daemon::TrackedState>>> tracked_;

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  std::vector<std::thread> threads_;
  std::unique_ptr<daemon::ControlServer> control_;
  std::unique_ptr<boost::asio::signal_set> signals_;

  mutable std::mutex mutex_;  // guards everything below up to the training-thread section
  std::condition_variable changed_;
  std::vector<Slot> slots_;
  int in_flight_ = 0;
  std::deque<std::exception_ptr> errors_;
  SnapshotterStats stats_;
  std::optional<int64_t> last_committed_;
  std::string last_committed_path_;
  std::optional<int64_t> current_step_;  // mirror of last_step_ for status(); also written under request_mutex_

  // Requests from other threads (signals, control socket).
  std::mutex request_mutex_;
  std::vector<std::string> requested_reasons_;
  std::vector<OutcomeCallback> request_waiters_;
  std::atomic<bool> stop_pending_{false};    // a stop signal arrived; honoured at the next step boundary
  std::atomic<bool> stop_requested_{false};  // should_stop()

  // Training-thread state.
  std::optional<int64_t> last_step_;
  std::optional<int64_t> last_snapshot_step_;
  std::optional<int64_t> epoch_;
  daemon::Clock::time_point last_snapshot_time_ = daemon::Clock::now();
  std::shared_ptr<daemon::SnapshotJob> overlap_job_;
  bool overlap_ = false;
  std::unique_ptr<daemon::RestoreAttempts> restore_attempts_;  // a restore not yet followed by a completed step
  bool stop_ignored_warned_ = false;
  bool train_end_done_ = false;
  bool closed_ = false;
};

}  // namespace autosnap
