#pragma once

// Crash-loop protection for restores. DIR/restore-attempts.json counts how
// many times in a row restoring a step crashed the process; a snapshot that
// keeps crashing it is quarantined instead of crashing it forever.
//
// A restore counts as crashed when a crash signal (abort, segfault, bus
// error, floating-point error, illegal instruction) arrives before the first
// step completes after it: the handler leaves DIR/restore-crashed behind and
// hands the signal on. Being killed (SIGKILL, SIGTERM: preemption, the OOM
// killer, scancel) says nothing about the snapshot and is not counted.

#include <cstdint>
#include <string>

#include "autosnap/fs.h"

namespace autosnap {
namespace daemon {

class RestoreAttempts {
 public:
  /// Reads the record and folds in a crash marker left by the last process.
  /// Each rank of a job keeps its own (DIR/restore-attempts.rank-00001.json, ...).
  RestoreAttempts(FileSystem& fs, const std::string& directory, int rank = 0);
  /// Disarms the handlers (the record stays: the restore is still unconfirmed).
  ~RestoreAttempts();
  RestoreAttempts(const RestoreAttempts&) = delete;
  RestoreAttempts& operator=(const RestoreAttempts&) = delete;

  /// Crashes in a row while restoring `step` (0 if the record is about another step).
  int crashes(int64_t step) const { return step == step_ ? crashes_ : 0; }

  /// Before restoring `step`: records the attempt durably and arms the crash
  /// signal handlers. Throws IoError if the record cannot be written.
  void begin(int64_t step);

  /// A step completed after the restore, the restore failed with an error
  /// (not a crash), or the snapshot was quarantined: forget the record.
  void end();

 private:
  void write_record();

  FileSystem& fs_;
  std::string directory_;
  std::string record_path_;
  std::string marker_path_;
  int64_t step_ = -1;
  int crashes_ = 0;
  bool armed_ = false;
};

}  // namespace daemon
}  // namespace autosnap
