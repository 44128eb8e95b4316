#pragma once

/// The snapshot store: one directory of snapshots.
///
///   DIR/LOCK                          flock'ed by the one writer process
///   DIR/step-000000001200/            a committed snapshot
///       manifest.yaml                 written last inside the tmp dir
///       rank-00000.pt                 torch.save-format shards
///   DIR/step-000000001300.tmp-<id>/   in progress; never read; removed at next open
///   DIR/step-000000000900.corrupt-1/  quarantined; never deleted automatically
///
/// Commit protocol: shards and the manifest are written into the tmp dir
/// (O_EXCL, fsynced), the tmp dir is fsynced, renamed to its final name, and
/// DIR is fsynced. A snapshot is valid when its final-named directory holds a
/// parsable manifest and every listed file has the listed size and XXH3-64.
///
/// Thread-safety: a store may be read from several threads; writes (snapshot
/// commits, remove, quarantine, prune) must be serialized by the caller.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "autosnap/export.h"
#include "autosnap/fs.h"
#include "autosnap/manifest.h"
#include "autosnap/retention.h"
#include "autosnap/snapshot.h"

namespace autosnap {

enum class SnapshotStatus {
  kValid,        ///< committed; manifest parses and sizes match (checksums: see verify)
  kCorrupt,      ///< committed name, but the manifest or a file is bad
  kInProgress,   ///< a tmp dir (being written, or left by a crash)
  kQuarantined,  ///< renamed step-….corrupt-N after failing verification
  kUnsupported,  ///< committed in a format version this build cannot read; skipped, not quarantined
  kUnreadable,   ///< an I/O error (not bad content) stopped the checks; never quarantined
};

AUTOSNAP_API const char* to_string(SnapshotStatus status);

struct SnapshotInfo {
  int64_t step = 0;
  std::string name;  ///< directory name inside the store
  std::string path;  ///< full path
  SnapshotStatus status = SnapshotStatus::kCorrupt;
  std::optional<Manifest> manifest;  ///< set when the manifest parsed
  std::string problem;               ///< why it is not valid
};

/// Writing snapshots is the daemon's job: plugin/src/store/snapshot_writer.h.

class AUTOSNAP_API SnapshotStore {
 public:
  /// Opens `directory` for writing: creates it if missing, takes DIR/LOCK
  /// (LockedError naming the holder's pid if another writer has it) and
  /// removes tmp dirs left by crashed writers. With `fsync` (config
  /// `flush.fsync`) files and directories are fsynced on commit; without it
  /// a power loss may lose recent snapshots, but never exposes a partial one
  /// as valid: checksums still decide.
  static std::unique_ptr<SnapshotStore> open_for_writing(const std::string& directory, bool fsync = true,
                                                         FileSystem& fs = default_file_system());
  /// Opens the directory for a rank other than 0 of a multi-rank job: it
  /// writes its shards into the snapshots rank 0 starts (SnapshotWriter::join)
  /// and reads, but never locks, commits, removes, quarantines or prunes.
  static std::unique_ptr<SnapshotStore> open_for_rank(const std::string& directory, bool fsync = true,
                                                      FileSystem& fs = default_file_system());
  /// Opens an existing directory for reading; never changes anything in it.
  static std::unique_ptr<SnapshotStore> open_read_only(const std::string& directory,
                                                       FileSystem& fs = default_file_system());

  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;
  ~SnapshotStore();

  const std::string& directory() const { return directory_; }
  /// Opened for writing: holds the lock, commits, removes, prunes.
  bool writable() const { return lock_ != nullptr; }
  /// May write shards into snapshots being written (writable, or opened for a rank).
  bool writes_shards() const { return writable() || writes_shards_; }
  /// Files and directories are fsynced on commit (config flush.fsync).
  bool fsyncs() const { return fsync_; }
  FileSystem& file_system() const { return fs_; }

  /// Every snapshot-like entry (committed, tmp, quarantined), by step then
  /// name, with cheap checks only (manifest parses, sizes). Other files are ignored.
  std::vector<SnapshotInfo> list() const;
  /// The cheap checks (manifest parses, sizes) of the committed snapshot of `step`.
  SnapshotInfo inspect(int64_t step) const;
  /// Steps of committed snapshots that pass the cheap checks, ascending.
  std::vector<int64_t> valid_steps() const;
  /// Steps of committed snapshots by their directory names alone, ascending:
  /// reads no manifest (a restore from the memory tier compares against it).
  std::vector<int64_t> committed_steps() const;

  /// Opens the committed snapshot of `step` (its manifest parsed once, its
  /// sizes checked): CorruptSnapshot when it fails those checks,
  /// UnsupportedFormat when this build cannot read its format, IoError when
  /// it cannot be read. Its checksums are checked by Snapshot::verify and
  /// Snapshot::read_shard.
  Snapshot open(int64_t step) const;
  /// The same for an entry list() or inspect() returned, without reading its manifest again.
  Snapshot open(const SnapshotInfo& info) const;
  /// What `autosnap verify` says of an entry list() or inspect() returned:
  /// Snapshot::verify() when it passed the cheap checks, else their problem
  /// as a failed result (io_error when it could not be read).
  VerifyResult verify(const SnapshotInfo& info, const VerifyProgress& progress = {}) const;

  /// How latest_valid() checks a candidate; the default, `&Snapshot::verify`
  /// without progress, checks every file.
  using Check = std::function<VerifyResult(const Snapshot&)>;

  /// The newest snapshot that passes `check`. In a writable store, each newer
  /// one that fails is quarantined (`on_quarantine` is told its new name and
  /// the problem); a read-only store only skips them. An I/O error while
  /// checking one throws IoError: that snapshot may be fine, so neither
  /// quarantining it nor silently resuming an older one is right.
  std::optional<Snapshot> latest_valid(
      const std::function<void(const SnapshotInfo&, const std::string&)>& on_quarantine = {},
      const Check& check = {});

  /// Removes a committed snapshot (rename to tmp, fsync DIR, delete).
  void remove(int64_t step);
  /// Applies `rule` to the committed snapshots that pass the cheap checks and
  /// returns the steps it deletes (with `dry_run`: would delete). The newest
  /// valid snapshot, anything at or above `below` (when given), corrupt,
  /// quarantined and in-progress ones are never touched. Before deleting,
  /// the newest snapshot is made durable if the store does not fsync.
  std::vector<int64_t> prune(const RetentionRule& rule, bool dry_run = false,
                             std::optional<int64_t> below = std::nullopt);
  /// fsyncs a committed snapshot's files and directories (for stores opened
  /// without `fsync`, before retention may delete anything older).
  void sync_snapshot(int64_t step);
  /// Renames a committed snapshot to step-….corrupt-N; returns the new name.
  std::string quarantine(int64_t step);

  /// "step-000000001200"
  static std::string directory_name(int64_t step);
  std::string snapshot_path(int64_t step) const;

 private:
  SnapshotStore(std::string directory, FileSystem& fs, bool fsync, std::unique_ptr<FileLock> lock,
                bool writes_shards = false);
  void require_writable(const char* operation) const;
  SnapshotInfo inspect_committed(int64_t step, const std::string& name) const;

  std::string directory_;
  FileSystem& fs_;
  bool fsync_;
  std::unique_ptr<FileLock> lock_;
  bool writes_shards_;  // open_for_rank
};

}  // namespace autosnap
