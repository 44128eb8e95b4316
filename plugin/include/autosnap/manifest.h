#pragma once

/// manifest.yaml: what one committed snapshot holds. Written last inside the
/// snapshot's tmp directory; together with the checksums it is the truth
/// about whether a snapshot is valid.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "autosnap/export.h"

namespace autosnap {

/// The on-disk format this build writes. Version 2 made `epoch` the epoch the
/// step belongs to, with `batch` and `epoch_ended` beside it (version 1's
/// `epoch` was the last ended epoch, read as {epoch, 0, ended}).
constexpr int kSnapshotFormatVersion = 2;
/// The oldest format this build still reads.
constexpr int kOldestReadableFormatVersion = 1;

struct ManifestFile {
  std::string name;   ///< e.g. "rank-00000.pt", relative to the snapshot directory
  uint64_t size = 0;  ///< bytes
  uint64_t xxh3 = 0;  ///< XXH3-64 of the whole file
};

struct AUTOSNAP_API Manifest {
  int format_version = kSnapshotFormatVersion;
  int64_t step = 0;
  // Where the training loop was at `step` (see ResumePoint). Version 1
  // manifests without `batch` hold only the last ended epoch, read as
  // {epoch, batch 0, epoch_ended}, or no epoch, read as {0, 0, false}.
  int64_t epoch = 0;         ///< the epoch the step belongs to
  int64_t batch = 0;         ///< steps of that epoch completed, the step included
  bool epoch_ended = false;  ///< on_epoch_end(epoch) had run
  std::string time;          ///< UTC, ISO 8601, e.g. "2026-11-28T13:05:07.123Z"
  std::string reason;        ///< what triggered it: "every_steps", "manual", "signal SIGUSR1", ...
  int world_size = 1;
  std::string library_version;
  std::string libtorch_version;
  std::vector<ManifestFile> files;
  /// What each shard entry is ("model_state_dict" -> "module Net",
  /// "optimizer_state_dict" -> "optimizer Adam", "epoch" -> "int"), in order.
  std::vector<std::pair<std::string, std::string>> entries;
  /// Where the job ran, when known: "slurm_job_id", "slurm_restart_count".
  std::vector<std::pair<std::string, std::string>> job;

  uint64_t total_bytes() const;
  const ManifestFile* find(const std::string& name) const;

  std::string to_yaml() const;
  /// Throws CorruptSnapshot naming `source` for unparsable or inconsistent
  /// text, and for a format version this build cannot read.
  static Manifest parse(const std::string& text, const std::string& source);
};

/// The current time in the manifest's format.
AUTOSNAP_API std::string utc_timestamp_now();

/// Shard file name of a rank: "rank-00003.pt".
AUTOSNAP_API std::string shard_file_name(int rank);

/// A file name a manifest may list: one plain path component (no '/', '\\',
/// NUL, '.' or '..'), at most 255 bytes.
AUTOSNAP_API bool is_valid_snapshot_file_name(const std::string& name);

}  // namespace autosnap
