#pragma once

// Writes the zip container of torch.save files the way LibTorch's
// PyTorchStreamWriter (miniz) writes it, byte for byte: stored records under
// "archive/", each record's data aligned to 64 bytes by an "FB" extra field,
// the CRC-32 and sizes in a data descriptor after the data, zip64 fields
// where a size or an offset reaches 4 GiB, zip64 end records, and the
// "version" record last. Where miniz reads a record once for its CRC and
// again to write it, this writer computes the CRC (libdeflate) chunk by chunk
// just before the chunk is appended, while it is still in the cache.

#include <cstdint>
#include <string>

#include "autosnap/fs.h"

namespace autosnap {
namespace format {

class ZipWriter {
 public:
  explicit ZipWriter(WritableFile& out) : out_(out) {}
  ZipWriter(const ZipWriter&) = delete;
  ZipWriter& operator=(const ZipWriter&) = delete;

  /// Appends record "archive/<name>" holding `size` bytes from `data`.
  void add_record(const std::string& name, const void* data, uint64_t size);
  /// Appends the "version" record, the central directory and the end records.
  void finish();

 private:
  void put(const void* data, size_t size);

  WritableFile& out_;
  uint64_t offset_ = 0;            // bytes written so far
  std::string central_directory_;  // one header per record, written by finish()
  uint64_t records_ = 0;
  bool finished_ = false;
};

}  // namespace format
}  // namespace autosnap
