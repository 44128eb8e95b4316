#pragma once

/// The snapshot daemon's configuration, read from YAML. Every key is
/// documented, with its default, in config/autosnap.yaml.
///
/// String values may use `${VAR}` and `${VAR:-default}` (environment
/// variables; `$$` is a literal `$`). Bad input throws ConfigError naming
/// file:line:column, the key and what was expected; an unknown key names the
/// closest known one.

#include <csignal>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "autosnap/export.h"
#include "autosnap/fs.h"  // DirectIo
#include "autosnap/retention.h"

namespace autosnap {

enum class ResumeMode { kAuto, kNever, kRequired };
enum class FlushMode { kAsync, kSync };
enum class WhenBusy { kWait, kSkip };
enum class OnError { kWarn, kAbort };
enum class AfterStop { kExit, kRequeue };
enum class DistributedBackend { kAuto, kNone, kGloo };
enum class OnLostRank { kExit, kThrow };

struct TriggerConfig {
  int64_t every_steps = 0;   ///< 0: off. Fires after step s when s % every_steps == 0.
  double every_seconds = 0;  ///< 0: off. Wall clock since the last snapshot (or the start).
  /// 0: off. The fraction of training time snapshots may cost: autosnap
  /// measures their cost and the step time and picks the interval (CheckFreq).
  double max_overhead = 0;
  bool on_epoch_end = false;
  bool on_train_end = true;
};

struct FlushConfig {
  FlushMode mode = FlushMode::kAsync;
  int max_pending = 1;  ///< snapshots staged or being written at once
  WhenBusy when_busy = WhenBusy::kWait;
  /// Bytes of reusable host staging buffers allowed (0: no limit). A snapshot
  /// that does not fit is written synchronously from the live tensors instead.
  uint64_t staging_memory_limit = 0;
  bool fsync = true;  ///< fsync files and directories on commit (the store's durability)
  /// Stage in the background during the next forward/backward;
  /// before_optimizer_step() waits for it (CheckFreq's pipelining).
  bool overlap = false;
  int threads = 2;  ///< background threads (writes, socket, signals)
  /// Process-wide: the last Snapshotter constructed sets it for every write.
  DirectIo direct_io = DirectIo::kAuto;
};

struct SignalConfig {
  std::vector<int> snapshot = {SIGUSR1};           ///< snapshot at the next step boundary
  std::vector<int> snapshot_and_stop = {SIGTERM};  ///< snapshot, then should_stop() is true
  AfterStop after_stop = AfterStop::kExit;
  int exit_code = 0;  ///< suggested exit status after a stop (see Snapshotter::exit_code)
};

struct ControlConfig {
  bool socket = true;
  std::string socket_path;  ///< empty: DIR/control.sock
};

struct CaptureConfig {
  bool rng = true;  ///< default CPU generator, and CUDA generators when present
};

struct RestoreConfig {
  /// A tracked object missing from the snapshot, or an entry nothing tracks,
  /// is an error (false: log it and restore what matches).
  bool strict = true;
  /// Restores that crash the process this many times in a row quarantine the snapshot.
  int max_attempts = 3;
};

struct DistributedConfig {
  /// auto: gloo when the launcher's environment says world size > 1.
  DistributedBackend backend = DistributedBackend::kAuto;
  /// A rank that dies is noticed at once; one that hangs after this long.
  int64_t timeout_seconds = 300;
  /// Port of autosnap's own TCPStore on rank 0's host; 0: one the kernel
  /// picks, which rank 0 publishes in DIR/coordinator.json.
  int port = 0;
  /// Pure data parallel: every rank holds the same model and optimizer, so a
  /// snapshot of another world size resumes (each rank loads rank 0's state).
  bool replicated = false;
  /// When a rank is lost, every hook of the others throws CoordinationError;
  /// kExit also ends a process whose training thread does not reach a hook
  /// within 2 s (stuck in a collective with the lost rank), with status 5.
  OnLostRank on_lost_rank = OnLostRank::kExit;
};

/// The in-memory tier (the `memory:` section): a snapshot after every
/// `every_steps` steps into files in `directory` (a tmpfs such as /dev/shm)
/// that outlive the process, so a restart on the same node resumes from it
/// without reading the snapshot directory. Absent: off.
struct MemoryConfig {
  bool enabled = false;     ///< the section is present
  int64_t every_steps = 1;  ///< a memory snapshot after step s when s % every_steps == 0
  int64_t keep_last = 2;    ///< memory snapshots kept per rank (>= 1)
  int replicas = 0;         ///< copies held by ranks on other nodes (0: this node only)
  std::string directory = "/dev/shm";
  /// Bytes the tier may use: its keep_last snapshots, the one being written
  /// and its staging buffer (0: as much as `directory` has free).
  uint64_t size_limit = 0;
};

struct AUTOSNAP_API Config {
  std::string directory;  ///< required
  std::string device = "cpu";
  ResumeMode resume = ResumeMode::kAuto;
  TriggerConfig triggers;
  RetentionRule retention;
  FlushConfig flush;
  SignalConfig signals;
  ControlConfig control;
  CaptureConfig capture;
  RestoreConfig restore;
  OnError on_error = OnError::kWarn;
  /// With on_error: warn, this many failed snapshots in a row make the next
  /// hook throw (0: never); a success starts the count again.
  int max_consecutive_failures = 3;
  DistributedConfig distributed;
  MemoryConfig memory;
  std::string log_level = "info";  ///< debug | info | warn | error | off

  std::string source;  ///< the file it came from, for messages
  /// Where keys were given ("directory" → "autosnap.yaml:3:12"), for errors
  /// that check_environment() finds after parsing.
  std::map<std::string, std::string> key_locations;

  /// Reads and validates a YAML file (ConfigError naming file:line:column
  /// and the key). Reads nothing else and changes nothing.
  static Config from_file(const std::string& path);
  /// The same for YAML text; `source` names it in errors.
  static Config from_string(const std::string& yaml, const std::string& source = "<config>");

  /// Checks what the configuration names on this machine: that `device`
  /// exists here and that `directory` can be created and written through
  /// `fs` (it creates the directory). ConfigError naming the key's place in
  /// the file. A Snapshotter calls it before it opens anything; tools that
  /// only read a configuration need not.
  void check_environment(FileSystem& fs) const;

  /// Control socket path: socket_path, or DIR/control.sock.
  std::string control_socket_path() const;
};

/// "SIGUSR1" for 10, etc.
AUTOSNAP_API std::string signal_name(int signal_number);

}  // namespace autosnap
