#include "store/snapshot_writer.h"

#include <torch/version.h>

#include <cerrno>

#include "autosnap/errors.h"
#include "autosnap/version.h"
#include "format/checksum.h"
#include "format/shard.h"
#include "fs/unique_suffix.h"
#include "store/entry_name.h"

namespace autosnap {

std::unique_ptr<SnapshotWriter> SnapshotWriter::begin(SnapshotStore& store, int64_t step) {
  if (!store.writable()) {
    throw Error("cannot write a snapshot in '" + store.directory() + "': the store is open read-only");
  }
  const std::string final_name = SnapshotStore::directory_name(step);
  if (store.file_system().status(store.snapshot_path(step)).exists) {
    throw Error("snapshot " + final_name + " already exists in '" + store.directory() + "'");
  }
  const std::string tmp = join_path(store.directory(), final_name + ".tmp-" + unique_suffix());
  store.file_system().create_directory(tmp);
  return std::unique_ptr<SnapshotWriter>(new SnapshotWriter(store, step, tmp, /*owner=*/true));
}

std::unique_ptr<SnapshotWriter> SnapshotWriter::join(SnapshotStore& store, int64_t step,
                                                     const std::string& tmp_name) {
  if (!store.writes_shards()) {
    throw Error("cannot write a shard in '" + store.directory() + "': the store is open read-only");
  }
  const auto parsed = store::parse_entry_name(tmp_name);
  if (!parsed || parsed->kind != store::EntryKind::kTmp || parsed->step != step ||
      tmp_name.find('/') != std::string::npos) {
    throw Error("cannot join the snapshot of step " + std::to_string(step) + ": '" + tmp_name +
                "' is not its tmp dir name");
  }
  const std::string tmp = join_path(store.directory(), tmp_name);
  if (!store.file_system().status(tmp).is_directory) {
    throw IoError("join the snapshot of step " + std::to_string(step) + " in", tmp, ENOENT);
  }
  return std::unique_ptr<SnapshotWriter>(new SnapshotWriter(store, step, tmp, /*owner=*/false));
}

SnapshotWriter::SnapshotWriter(SnapshotStore& store, int64_t step, std::string tmp_path, bool owner)
    : store_(store), step_(step), tmp_path_(std::move(tmp_path)), owner_(owner) {}

std::string SnapshotWriter::tmp_name() const { return base_name(tmp_path_); }

SnapshotWriter::~SnapshotWriter() {
  if (!finished_) abort();
}

ManifestFile SnapshotWriter::write_shard(int rank, const c10::IValue& value) {
  return write_file(shard_file_name(rank), [&](WritableFile& out) { format::write_shard(value, out); });
}

ManifestFile SnapshotWriter::write_file(const std::string& name,
                                        const std::function<void(WritableFile&)>& write) {
  if (!is_valid_snapshot_file_name(name) || name == store::kManifestName) {
    throw Error("'" + name + "' is not a valid snapshot file name");
  }
  auto file = store_.file_system().create_exclusive(join_path(tmp_path_, name));
  format::HashingWritableFile hashing(*file);
  write(hashing);
  if (store_.fsyncs()) file->sync();
  file->close();
  const auto digest = hashing.digest();
  ManifestFile record{name, digest.size, digest.xxh3};
  files_.push_back(record);
  return record;
}

void SnapshotWriter::add_file(const ManifestFile& file) { files_.push_back(file); }

SnapshotInfo SnapshotWriter::commit(Manifest manifest) {
  if (!owner_)
    throw Error("snapshot step " + std::to_string(step_) + ": only the writer that began it commits");
  if (finished_) throw Error("snapshot step " + std::to_string(step_) + " was already committed or aborted");
  FileSystem& fs = store_.file_system();
  manifest.format_version = kSnapshotFormatVersion;
  manifest.step = step_;
  manifest.library_version = AUTOSNAP_VERSION;
  manifest.libtorch_version = TORCH_VERSION;
  if (manifest.time.empty()) manifest.time = utc_timestamp_now();
  manifest.files = files_;
  for (int rank = 0; rank < manifest.world_size; ++rank) {
    if (!manifest.find(shard_file_name(rank))) {
      throw Error("cannot commit step " + std::to_string(step_) + ": no shard for rank " +
                  std::to_string(rank));
    }
  }
  const std::string text = manifest.to_yaml();
  auto file = fs.create_exclusive(join_path(tmp_path_, store::kManifestName));
  file->append(text.data(), text.size());
  if (store_.fsyncs()) file->sync();
  file->close();
  if (store_.fsyncs()) fs.sync_directory(tmp_path_);
  const std::string final_path = store_.snapshot_path(step_);
  if (fs.status(final_path).exists) {
    throw Error("snapshot " + SnapshotStore::directory_name(step_) + " already exists in '" +
                store_.directory() + "'");
  }
  fs.rename(tmp_path_, final_path);
  finished_ = true;
  if (store_.fsyncs()) fs.sync_directory(store_.directory());
  return store_.inspect(step_);
}

void SnapshotWriter::abort() noexcept {
  if (finished_) return;
  finished_ = true;
  if (!owner_) return;
  try {
    remove_tree(store_.file_system(), tmp_path_);
  } catch (...) {
    // The tmp dir is removed when the store is next opened for writing.
  }
}

}  // namespace autosnap
