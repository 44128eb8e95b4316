#include "format/zip_reader.h"

#include <libdeflate.h>

#include <algorithm>
#include <cstring>

#include "autosnap/errors.h"
#include "format/zip_format.h"

namespace autosnap {
namespace format {
namespace {

constexpr size_t kMaxCommentSize = 0xFFFF;
constexpr uint64_t kMaxCentralDirectorySize = 256ull << 20;

uint16_t le16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t le64(const unsigned char* p) {
  return static_cast<uint64_t>(le32(p)) | (static_cast<uint64_t>(le32(p + 4)) << 32);
}

bool safe_entry_name(const std::string& name) {
  if (name.empty() || name.front() == '/' || name.back() == '/') return false;
  if (name.find('\\') != std::string::npos || name.find('\0') != std::string::npos) return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    std::string part = name.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

}  // namespace

void ZipReader::fail(const std::string& what) const {
  throw CorruptSnapshot("'" + file_.path() + "' is not a valid torch.save file: " + what);
}

ZipReader::ZipReader(ReadableFile& file) : file_(file) {
  const CentralDirectory cd = locate_central_directory();
  central_directory_offset_ = cd.offset;
  read_central_directory(cd);
}

uint64_t ZipReader::find_end_record(std::vector<unsigned char>& tail) {
  const uint64_t file_size = file_.size();
  if (file_size < kEndOfCentralDirectorySize) {
    fail("file is " + std::to_string(file_size) + " bytes, too short for a zip archive");
  }
  // The end-of-central-directory record sits in the last 22 + 65535 bytes.
  tail.resize(std::min<uint64_t>(file_size, kEndOfCentralDirectorySize + kMaxCommentSize));
  file_.read_exact(file_size - tail.size(), tail.data(), tail.size());
  for (int64_t i = static_cast<int64_t>(tail.size() - kEndOfCentralDirectorySize); i >= 0; --i) {
    if (le32(&tail[i]) == kEndOfCentralDirectorySignature &&
        i + kEndOfCentralDirectorySize + le16(&tail[i + 20]) == tail.size()) {
      return static_cast<uint64_t>(i);
    }
  }
  unsigned char head[2] = {0, 0};
  file_.read_exact(0, head, std::min<uint64_t>(2, file_size));
  if (head[0] == 0x80) {
    fail(
        "it is in the legacy (pre-1.6) torch.save format; re-save it in Python with "
        "torch.save(obj, path) from PyTorch >= 1.6");
  }
  fail("no zip end-of-central-directory record (truncated or not a zip file)");
}

ZipReader::CentralDirectory ZipReader::locate_central_directory() {
  std::vector<unsigned char> tail;
  const uint64_t eocd = find_end_record(tail);
  const unsigned char* e = &tail[eocd];
  const uint64_t eocd_offset = file_.size() - tail.size() + eocd;
  if (le16(e + 4) != 0 || le16(e + 6) != 0) fail("multi-disk zip archives are not supported");
  CentralDirectory cd{le16(e + 10), le32(e + 12), le32(e + 16)};
  uint64_t cd_end_limit = eocd_offset;
  if (cd.entries == 0xFFFF || cd.size == 0xFFFFFFFF || cd.offset == 0xFFFFFFFF) {
    if (eocd_offset < kZip64LocatorSize) fail("zip64 locator missing");
    unsigned char locator[kZip64LocatorSize];
    file_.read_exact(eocd_offset - kZip64LocatorSize, locator, sizeof(locator));
    if (le32(locator) != kZip64LocatorSignature) fail("zip64 locator missing");
    const uint64_t zip64_end_offset = le64(locator + 8);
    if (zip64_end_offset > eocd_offset - kZip64LocatorSize ||
        eocd_offset - kZip64LocatorSize - zip64_end_offset < kZip64EndSize) {
      fail("zip64 end record offset out of range");
    }
    unsigned char end64[kZip64EndSize];
    file_.read_exact(zip64_end_offset, end64, sizeof(end64));
    if (le32(end64) != kZip64EndSignature) fail("zip64 end record signature mismatch");
    cd = CentralDirectory{le64(end64 + 32), le64(end64 + 40), le64(end64 + 48)};
    cd_end_limit = zip64_end_offset;
  }
  if (cd.offset > cd_end_limit || cd.size > cd_end_limit - cd.offset) {
    fail("central directory (offset " + std::to_string(cd.offset) + ", size " + std::to_string(cd.size) +
         ") lies outside the file");
  }
  if (cd.size > kMaxCentralDirectorySize) fail("central directory is implausibly large");
  if (cd.entries > cd.size / kCentralHeaderSize) {
    fail("central directory claims " + std::to_string(cd.entries) + " entries in " + std::to_string(cd.size) +
         " bytes");
  }
  return cd;
}

void ZipReader::read_central_directory(const CentralDirectory& where) {
  std::vector<unsigned char> cd(static_cast<size_t>(where.size));
  if (!cd.empty()) file_.read_exact(where.offset, cd.data(), cd.size());
  size_t pos = 0;
  entries_.reserve(static_cast<size_t>(where.entries));
  for (uint64_t i = 0; i < where.entries; ++i) {
    if (cd.size() - pos < kCentralHeaderSize || le32(&cd[pos]) != kCentralHeaderSignature) {
      fail("central directory entry " + std::to_string(i) + " is malformed");
    }
    const unsigned char* h = &cd[pos];
    const size_t name_len = le16(h + 28);
    const size_t extra_len = le16(h + 30);
    const size_t comment_len = le16(h + 32);
    if (cd.size() - pos - kCentralHeaderSize < name_len + extra_len + comment_len) {
      fail("central directory entry " + std::to_string(i) + " overruns the directory");
    }
    Entry entry = parse_central_header(h, where.offset);
    if (!index_.emplace(entry.name, entries_.size()).second) fail("duplicate entry '" + entry.name + "'");
    entries_.push_back(std::move(entry));
    pos += kCentralHeaderSize + name_len + extra_len + comment_len;
  }
}

// One central directory header `h` (its name and extra fields known to fit).
ZipReader::Entry ZipReader::parse_central_header(const unsigned char* h, uint64_t cd_offset) const {
  const uint16_t flags = le16(h + 8);
  const uint16_t method = le16(h + 10);
  uint64_t compressed = le32(h + 20);
  uint64_t uncompressed = le32(h + 24);
  const size_t name_len = le16(h + 28);
  const size_t extra_len = le16(h + 30);
  uint64_t local_offset = le32(h + 42);
  Entry entry;
  entry.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_len);
  entry.crc32 = le32(h + 16);
  // Zip64 extended information replaces the 32-bit fields that are all ones.
  const unsigned char* extra = h + kCentralHeaderSize + name_len;
  size_t extra_pos = 0;
  while (extra_len - extra_pos >= 4) {
    const uint16_t id = le16(extra + extra_pos);
    const uint16_t len = le16(extra + extra_pos + 2);
    if (extra_len - extra_pos - 4 < len) fail("extra field of '" + entry.name + "' overruns");
    if (id == kZip64ExtraId) {
      const unsigned char* z = extra + extra_pos + 4;
      size_t avail = len;
      auto take = [&](uint64_t& field) {
        if (field != 0xFFFFFFFF) return;
        if (avail < 8) fail("zip64 field of '" + entry.name + "' is truncated");
        field = le64(z);
        z += 8;
        avail -= 8;
      };
      take(uncompressed);
      take(compressed);
      take(local_offset);
    }
    extra_pos += 4 + len;
  }
  if (!safe_entry_name(entry.name)) fail("unsafe entry name '" + entry.name + "'");
  if (flags & 0x1) fail("entry '" + entry.name + "' is encrypted");
  if (method != 0) {
    fail("entry '" + entry.name + "' is compressed (method " + std::to_string(method) +
         "); torch.save writes stored entries only");
  }
  if (compressed != uncompressed) fail("entry '" + entry.name + "' has inconsistent sizes");
  if (local_offset > cd_offset || uncompressed > cd_offset - local_offset) {
    fail("entry '" + entry.name + "' lies outside the file");
  }
  entry.size = uncompressed;
  entry.local_header_offset = local_offset;
  return entry;
}

const ZipReader::Entry* ZipReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

uint64_t ZipReader::data_offset(const Entry& entry) {
  unsigned char local[kLocalHeaderSize];
  if (central_directory_offset_ - entry.local_header_offset < kLocalHeaderSize) {
    fail("local header of '" + entry.name + "' is truncated");
  }
  file_.read_exact(entry.local_header_offset, local, sizeof(local));
  if (le32(local) != kLocalHeaderSignature) fail("local header of '" + entry.name + "' is corrupt");
  const uint64_t header_size = kLocalHeaderSize + le16(local + 26) + le16(local + 28);
  const uint64_t available = central_directory_offset_ - entry.local_header_offset;
  if (header_size > available || entry.size > available - header_size) {
    fail("data of '" + entry.name + "' runs past the central directory");
  }
  return entry.local_header_offset + header_size;
}

void ZipReader::read(const Entry& entry, void* buffer, bool check_crc) {
  const uint64_t offset = data_offset(entry);
  char* out = static_cast<char*>(buffer);
  uint32_t crc = 0;
  // Chunks small enough that the CRC reads them from the cache, right after the read.
  constexpr uint64_t kChunk = 4ull << 20;
  for (uint64_t done = 0; done < entry.size;) {
    const uint64_t n = std::min(kChunk, entry.size - done);
    file_.read_exact(offset + done, out + done, static_cast<size_t>(n));
    if (check_crc) crc = libdeflate_crc32(crc, out + done, static_cast<size_t>(n));
    done += n;
  }
  if (check_crc && crc != entry.crc32) {
    throw CorruptSnapshot("'" + file_.path() + "': CRC-32 mismatch in entry '" + entry.name +
                          "' (the file is damaged)");
  }
}

std::string ZipReader::read_string(const Entry& entry, uint64_t max_size, bool check_crc) {
  if (entry.size > max_size) {
    fail("entry '" + entry.name + "' is " + std::to_string(entry.size) + " bytes, more than the allowed " +
         std::to_string(max_size));
  }
  std::string data(static_cast<size_t>(entry.size), '\0');
  read(entry, data.data(), check_crc);
  return data;
}

}  // namespace format
}  // namespace autosnap
