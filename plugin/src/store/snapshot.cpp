#include "autosnap/snapshot.h"

#include "autosnap/errors.h"
#include "format/checksum.h"
#include "format/shard.h"

namespace autosnap {
namespace {

// Empty when `digest` is what the manifest lists for the file, else the problem.
std::string digest_mismatch(const ManifestFile& expected, const format::FileDigest& digest,
                            const std::string& label) {
  if (digest.size == expected.size && digest.xxh3 == expected.xxh3) return "";
  return "checksum mismatch in '" + label + "' (expected " + format::to_hex(expected.xxh3) + ", found " +
         format::to_hex(digest.xxh3) + ")";
}

}  // namespace

Snapshot::Snapshot(Manifest manifest, std::shared_ptr<const SnapshotSource> source)
    : manifest_(std::move(manifest)), source_(std::move(source)) {}

VerifyResult Snapshot::verify(const VerifyProgress& progress) const { return verify_files(progress, ""); }

VerifyResult Snapshot::verify_all_but(const std::string& file_name) const {
  return verify_files({}, file_name);
}

VerifyResult Snapshot::verify_files(const VerifyProgress& progress, const std::string& skip) const {
  VerifyResult result;
  const uint64_t total = manifest_.total_bytes();
  for (const auto& file : manifest_.files) {
    if (file.name == skip) continue;
    try {
      auto reader = source_->open_file(file.name);
      const uint64_t before = result.bytes_checked;
      auto digest = format::digest_file(*reader, [&](uint64_t done) {
        if (progress) progress(before + done, total);
      });
      result.bytes_checked += digest.size;
      result.problem = digest_mismatch(file, digest, file.name);
      if (!result.problem.empty()) return result;
    } catch (const IoError& e) {
      result.problem = e.what();
      result.io_error = true;
      return result;
    }
  }
  result.ok = true;
  return result;
}

c10::IValue Snapshot::read_shard(int rank, const c10::Device& device) const {
  const std::string name = shard_file_name(rank);
  const ManifestFile* expected = manifest_.find(name);
  if (expected == nullptr) {
    throw CorruptSnapshot("snapshot '" + path() + "' has no shard for rank " + std::to_string(rank) +
                          " (world size " + std::to_string(manifest_.world_size) + ")");
  }
  auto file = source_->open_file(name);
  // Hashed while read, compared before the value is returned: a damaged shard
  // never reaches live objects. One that fails to parse is reported by its checksum.
  format::FileDigest digest;
  const auto check_digest = [&] {
    const std::string problem = digest_mismatch(*expected, digest, join_path(path(), name));
    if (!problem.empty()) throw CorruptSnapshot(problem);
  };
  c10::IValue value;
  try {
    value = format::read_shard(*file, device, /*check_crc=*/false, &digest);
  } catch (const IoError&) {
    throw;
  } catch (...) {
    check_digest();
    throw;
  }
  check_digest();
  return value;
}

}  // namespace autosnap
