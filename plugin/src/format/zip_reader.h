#pragma once

// A strict reader for the zip container of torch.save files.
//
// torch.save (PyTorchStreamWriter) stores every record uncompressed, so this
// reader accepts only stored (method 0), unencrypted entries, and checks every
// size, offset and count against the real file size before it allocates or
// reads anything. Entry names with "..", backslashes or absolute paths are
// rejected. Zip64 is supported (files over 4 GiB).

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "autosnap/fs.h"

namespace autosnap {
namespace format {

class ZipReader {
 public:
  struct Entry {
    std::string name;
    uint64_t size = 0;
    uint32_t crc32 = 0;
    uint64_t local_header_offset = 0;
  };

  /// Parses the central directory; throws CorruptSnapshot naming the file.
  explicit ZipReader(ReadableFile& file);

  const std::vector<Entry>& entries() const { return entries_; }
  /// nullptr when there is no such entry.
  const Entry* find(const std::string& name) const;

  /// Reads a whole entry into `buffer` (which holds entry.size bytes); with
  /// `check_crc` the zip's CRC-32 of the entry is verified.
  void read(const Entry& entry, void* buffer, bool check_crc);
  std::string read_string(const Entry& entry, uint64_t max_size, bool check_crc);

  const std::string& path() const { return file_.path(); }

 private:
  struct CentralDirectory {
    uint64_t entries;
    uint64_t size;
    uint64_t offset;
  };
  // Reads the file's tail into `tail`; returns the end record's offset in it.
  uint64_t find_end_record(std::vector<unsigned char>& tail);
  // Where the central directory is (zip64 records followed), checked against the file.
  CentralDirectory locate_central_directory();
  void read_central_directory(const CentralDirectory& where);
  Entry parse_central_header(const unsigned char* header, uint64_t cd_offset) const;
  uint64_t data_offset(const Entry& entry);
  [[noreturn]] void fail(const std::string& what) const;

  ReadableFile& file_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
  uint64_t central_directory_offset_ = 0;
};

}  // namespace format
}  // namespace autosnap
