#pragma once

/// The snapshot daemon. A training loop adds a few lines once; from then on
/// the YAML configuration decides when snapshots are taken, and a rerun after
/// a crash continues where the last valid snapshot left off.
///
///   auto snap = autosnap::Snapshotter::from_env();      // or from_config(path)
///   snap.track("model_state_dict", *model);
///   snap.track("optimizer_state_dict", optimizer);
///   snap.track("epoch", epoch);
///   auto resumed = snap.on_train_start();                // restores when resume says so
///   for (int64_t step = resumed ? resumed->step + 1 : 0; step < total; ++step) {
///     ... forward, backward ...
///     snap.before_optimizer_step();
///     optimizer.step();
///     snap.on_step_end(step);
///     if (snap.should_stop()) break;
///   }
///   snap.close();
///
/// Thread-safety: the hooks, track() and restore are called from the training
/// thread. request_snapshot() and should_stop() may be called from any thread.
/// Tracked objects are held by reference and must outlive the Snapshotter.

#include <ATen/core/ivalue.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "autosnap/callback.h"
#include "autosnap/config.h"
#include "autosnap/export.h"
#include "autosnap/fs.h"
#include "autosnap/torch_fwd.h"

namespace autosnap {

class ResumableSampler;
struct JobStore;  // autosnap/cluster.h

/// Counters of this process's snapshots since the Snapshotter was made
/// (`autosnap status` shows them for a running job). Zeros when disabled.
struct SnapshotStats {
  int64_t committed = 0;
  int64_t skipped = 0;  ///< triggers that came while the previous snapshot was still being written
  int64_t failed = 0;
  uint64_t staging_bytes = 0;       ///< host staging buffers held now
  int64_t staging_allocations = 0;  ///< buffers allocated since the start
  double last_stall_ms = 0;         ///< training-thread time of the last snapshot
  /// The memory tier's own counters (config `memory:`); all zero without it.
  struct Memory {
    bool on = false;  ///< configured, opened, and not turned off by a failure
    int64_t committed = 0;
    int64_t skipped = 0;  ///< steps due while the last memory snapshot was still being written
    int64_t failed = 0;
    double last_stall_ms = 0;
  } memory;
};

/// What a Snapshotter may be given besides its Config (Snapshotter::Options).
struct SnapshotterOptions {
  /// Where snapshots are written and read; null: the real file system.
  /// Must outlive the snapshotter (tests pass fault-injecting ones).
  FileSystem* file_system = nullptr;
  /// A multi-rank job's own c10d store to coordinate through
  /// (autosnap::job_store in cluster.h); null: autosnap serves its own.
  std::shared_ptr<const JobStore> job_store;
};

class AUTOSNAP_API Snapshotter final : public Callback {
 public:
  using Options = SnapshotterOptions;

  /// Reads the YAML file (ConfigError on bad input), checks the environment
  /// it names, opens and locks the snapshot directory.
  static Snapshotter from_config(const std::string& path, const Options& options = {});
  /// The config file named by $AUTOSNAP_CONFIG; when it is unset, a disabled
  /// snapshotter that logs one line and does nothing.
  static Snapshotter from_env(const Options& options = {});
  /// A snapshotter that does nothing.
  static Snapshotter disabled();

  explicit Snapshotter(Config config, const Options& options = {});
  Snapshotter(Snapshotter&&) noexcept;
  Snapshotter& operator=(Snapshotter&&) noexcept;
  Snapshotter(const Snapshotter&) = delete;
  Snapshotter& operator=(const Snapshotter&) = delete;
  /// Closes (see close()); errors are logged, not thrown.
  ~Snapshotter() override;

  bool enabled() const;
  const Config& config() const;

  // ---- what is saved; names become the keys of each rank's shard dict ----
  void track(const std::string& name, torch::nn::Module& module);
  template <typename M>
  void track(const std::string& name, torch::nn::ModuleHolder<M>& module) {
    track(name, static_cast<torch::nn::Module&>(*module));
  }
  /// Structure + weights: the snapshot also holds a TorchScript archive
  /// `rank-NNNNN.<name>.torchscript.pt` that loads without the C++ class.
  void track(const std::string& name, torch::jit::Module& module);
  void track(const std::string& name, torch::optim::Optimizer& optimizer);
  void track(const std::string& name, int64_t& value);
  void track(const std::string& name, double& value);
  void track(const std::string& name, bool& value);
  void track(const std::string& name, std::string& value);
  /// Restored in place when shape and dtype match; assigned when undefined.
  void track(const std::string& name, at::Tensor& tensor);
  /// Data position (autosnap/samplers.h): the epoch's order and the batches
  /// the loop consumed, counted at each on_step_end(). Copies of a sampler
  /// share it, so this may be the one handed to make_data_loader or another.
  void track(const std::string& name, const ResumableSampler& sampler);
  /// User state: `save` is called on the training thread at each snapshot,
  /// `load` with the saved value on restore.
  void track(const std::string& name, std::function<c10::IValue()> save,
             std::function<void(const c10::IValue&)> load);

  /// What it forwards to (internal: plugin/src/daemon/snapshotter_impl.h).
  class Impl;

  // ---- the hooks of Callback (callback.h documents them), forwarded ----
  std::optional<ResumePoint> on_train_start() override;
  void on_epoch_start(int64_t epoch) override;
  void before_optimizer_step() override;
  void on_step_end(int64_t step) override;
  void on_epoch_end(int64_t epoch) override;
  void on_train_end() override;
  void on_exception(const std::exception& error) override;

  /// Takes a snapshot now, at the last completed step.
  void snapshot_now(const std::string& reason = "manual");
  /// Asks for a snapshot at the next step boundary (any thread).
  void request_snapshot(const std::string& reason);
  /// Restores the newest valid snapshot into the tracked objects (after
  /// verifying it fully; corrupt ones are quarantined and skipped).
  std::optional<ResumePoint> restore_latest();

  /// Blocks until every queued snapshot is committed or has failed.
  void wait_until_finished();
  /// Throws the oldest background failure not reported yet.
  void check_for_errors();
  /// Newest valid snapshot step in the directory.
  std::optional<int64_t> latest_step() const;
  std::vector<int64_t> all_steps() const;
  /// True once a stop was requested (a snapshot_and_stop signal, SIGTERM by
  /// default) and its snapshot was taken: leave the loop and close().
  bool should_stop() const;
  /// The exit status to end the process with: signals.exit_code after a
  /// stop, else 0.
  int exit_code() const;
  SnapshotStats stats() const;
  /// Finishes: runs on_train_end() if it was not called, waits for queued
  /// snapshots, stops the background threads, releases the directory lock.
  void close();

 private:
  explicit Snapshotter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl>
      impl_;  // never null (a disabled snapshotter holds one that does nothing), unless moved from
};

}  // namespace autosnap
