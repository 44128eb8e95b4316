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
  /// The same record written as its bytes come (a pickle as it is made, with
  /// no copy of it in memory): begin_record(), append_to_record() any number
  /// of times, end_record(). The bytes are those add_record() writes, for a
  /// record of at least one byte and less than 4 GiB (its local header is
  /// written before its size is known); end_record() refuses any other.
  void begin_record(const std::string& name);
  void append_to_record(const void* data, size_t size);
  void end_record();
  /// Reserves room for the central directory of about `records` more records.
  void expect_records(uint64_t records);
  /// Appends the "version" record, the central directory and the end records.
  void finish();

 private:
  void put(const void* data, size_t size);
  // `size`: the record's size, or (streamed) any size of its kind: 1 to 4 GiB - 1.
  void write_local_header(const std::string& name, uint64_t size);
  void append_data(const void* data, uint64_t size);

  struct OpenRecord {
    std::string full_name;
    uint64_t header_offset = 0;
    uint64_t size = 0;
    uint32_t crc = 0;
    bool streamed = false;
  };

  WritableFile& out_;
  uint64_t offset_ = 0;            // bytes written so far
  std::string central_directory_;  // one header per record, written by finish()
  uint64_t records_ = 0;
  bool open_ = false;  // a record begun and not ended
  OpenRecord record_;
  bool finished_ = false;
};

}  // namespace format
}  // namespace autosnap
