#pragma once

/// One committed snapshot, opened: its manifest parsed once, its files read
/// through it. A restore, `autosnap verify`, `inspect` and `export` all work
/// on this handle, so none of them reads or parses the manifest again.
///
///   auto store = autosnap::SnapshotStore::open_read_only("/ckpt");
///   if (auto snapshot = store->latest_valid()) {          // fully verified
///     c10::IValue shard = snapshot->read_shard(0, torch::kCPU);
///   }
///
/// Where the files live is the business of its SnapshotSource: a directory
/// of the store (SnapshotStore::open), or another kind of source (an
/// in-memory tier) that implements the same two calls. A handle is a value:
/// copies share the source, and it may be used from several threads.

#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "autosnap/export.h"
#include "autosnap/fs.h"
#include "autosnap/manifest.h"

namespace autosnap {

/// Where a snapshot's files are read from.
class AUTOSNAP_API SnapshotSource {
 public:
  virtual ~SnapshotSource() = default;
  /// Names the snapshot in messages, e.g. "/ckpt/step-000000001200".
  virtual const std::string& location() const = 0;
  /// Opens one file of the snapshot (a name from its manifest) for reading.
  virtual std::unique_ptr<ReadableFile> open_file(const std::string& name) const = 0;
};

/// The result of checking a snapshot's files against its manifest.
struct VerifyResult {
  bool ok = false;
  std::string problem;    ///< empty when ok
  bool io_error = false;  ///< the files could not be read (as opposed to: they are damaged)
  uint64_t bytes_checked = 0;
};

using VerifyProgress = std::function<void(uint64_t done, uint64_t total)>;

class AUTOSNAP_API Snapshot {
 public:
  /// `manifest` must be the parsed manifest of the snapshot `source` reads.
  Snapshot(Manifest manifest, std::shared_ptr<const SnapshotSource> source);

  int64_t step() const { return manifest_.step; }
  const Manifest& manifest() const { return manifest_; }
  /// Where it is (for a snapshot of a store: its directory).
  const std::string& path() const { return source_->location(); }

  /// Every file's size and XXH3-64 against the manifest; `progress` is told
  /// the bytes checked so far.
  VerifyResult verify(const VerifyProgress& progress = {}) const;
  /// The same, leaving out `file_name`: for a caller that reads that file
  /// next with read_shard(), which checks it in that same read.
  VerifyResult verify_all_but(const std::string& file_name) const;

  /// Reads one rank's shard onto `device`, checking its size and XXH3-64
  /// against the manifest in the same single pass (CorruptSnapshot on a
  /// mismatch, before the value is returned; IoError when it cannot be read).
  c10::IValue read_shard(int rank, const c10::Device& device) const;

 private:
  VerifyResult verify_files(const VerifyProgress& progress, const std::string& skip) const;

  Manifest manifest_;
  std::shared_ptr<const SnapshotSource> source_;
};

}  // namespace autosnap
