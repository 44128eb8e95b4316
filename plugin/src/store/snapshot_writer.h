#pragma once

// The write path of the snapshot store, used by the daemon (and tests): one
// snapshot being written into its tmp dir and committed by the protocol in
// store.h.
//
// Thread-safety: one writer at a time per store (the daemon's strand).

#include <ATen/core/ivalue.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autosnap/fs.h"
#include "autosnap/manifest.h"
#include "autosnap/store.h"

namespace autosnap {

/// One snapshot being written into its tmp dir. Destroying the writer that
/// began it without commit() removes the tmp dir; a joined writer (another
/// rank's) leaves that to the writer that began it.
class SnapshotWriter {
 public:
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;
  ~SnapshotWriter();

  /// Starts the snapshot of `step` in a fresh tmp dir of a writable store.
  /// Throws if `step` is already committed.
  static std::unique_ptr<SnapshotWriter> begin(SnapshotStore& store, int64_t step);

  /// Another rank's writer for the snapshot rank 0 began in `tmp_name`
  /// (its tmp dir's name, as rank 0's tmp_name() returned it). It writes
  /// files; it cannot commit.
  static std::unique_ptr<SnapshotWriter> join(SnapshotStore& store, int64_t step,
                                              const std::string& tmp_name);

  int64_t step() const { return step_; }
  const std::string& tmp_path() const { return tmp_path_; }
  /// The tmp dir's name inside the store, for the other ranks to join.
  std::string tmp_name() const;

  /// Streams a rank's shard into the tmp dir (fsynced when the store fsyncs).
  ManifestFile write_shard(int rank, const c10::IValue& value);
  /// Writes any other file of the snapshot into the tmp dir through `write`,
  /// checksummed on the way and fsynced when the store fsyncs. `name` must be
  /// a valid manifest file name (is_valid_snapshot_file_name) other than the manifest's.
  ManifestFile write_file(const std::string& name, const std::function<void(WritableFile&)>& write);
  /// Records a file another process wrote into tmp_path() (multi-rank).
  void add_file(const ManifestFile& file);
  /// The files written or added so far.
  const std::vector<ManifestFile>& files() const { return files_; }

  /// Writes manifest.yaml (from `manifest`, with step, format/library versions
  /// and files filled in), fsyncs, renames to the final name, fsyncs DIR.
  SnapshotInfo commit(Manifest manifest);
  /// Removes the tmp dir (the owner; a joined writer only stops). Idempotent.
  void abort() noexcept;

 private:
  SnapshotWriter(SnapshotStore& store, int64_t step, std::string tmp_path, bool owner);

  SnapshotStore& store_;
  int64_t step_;
  std::string tmp_path_;
  std::vector<ManifestFile> files_;
  bool owner_;  // began the tmp dir: commits it or removes it
  bool finished_ = false;
};

}  // namespace autosnap
