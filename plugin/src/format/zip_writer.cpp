#include "format/zip_writer.h"

#include <libdeflate.h>

#include <algorithm>

#include "autosnap/errors.h"
#include "format/zip_format.h"

namespace autosnap {
namespace format {
namespace {

// Bit 11: the name is UTF-8; bit 3: CRC and sizes follow the data (miniz
// leaves it out, with the descriptor, for an empty record).
constexpr uint16_t kUtf8Name = 0x0800;
constexpr uint16_t kHasDataDescriptor = 0x0008;
constexpr uint64_t kZip32Limit = 0xFFFFFFFF;  // miniz switches a record to zip64 at this value
constexpr uint64_t kDataAlignment = 64;       // caffe2::serialize::kFieldAlignment
// Small enough that the bytes the CRC just read are still in the L2 cache when
// they are appended (copied and hashed).
constexpr uint64_t kChunk = 256 << 10;
constexpr char kArchivePrefix[] = "archive/";
// What PyTorchStreamWriter writes as "version" for files without TorchScript
// operators (kMinProducedFileFormatVersion).
constexpr char kFileFormatVersion[] = "3\n";

void le16(std::string& out, uint64_t v) {
  for (int i = 0; i < 2; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void le32(std::string& out, uint64_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void le64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

// The zip64 extra field of a record, as miniz writes it: the sizes if the size
// reaches the limit, the header offset if the offset does; empty otherwise.
// In the local header the compressed size is 0 (miniz knows it only after the
// data; readers take it from the data descriptor or the central directory).
std::string zip64_extra(uint64_t size, uint64_t header_offset, bool local) {
  const bool big_size = size >= kZip32Limit;
  const bool big_offset = header_offset >= kZip32Limit;
  std::string extra;
  if (!big_size && !big_offset) return extra;
  le16(extra, kZip64ExtraId);
  le16(extra, (big_size ? 16 : 0) + (big_offset ? 8 : 0));
  if (big_size) {
    le64(extra, size);              // uncompressed
    le64(extra, local ? 0 : size);  // compressed: records are stored
  }
  if (big_offset) le64(extra, header_offset);
  return extra;
}

}  // namespace

void ZipWriter::put(const void* data, size_t size) {
  out_.append(data, size);
  offset_ += size;
}

void ZipWriter::add_record(const std::string& name, const void* data, uint64_t size) {
  write_local_header(name, size);
  append_data(data, size);
  end_record();
}

void ZipWriter::begin_record(const std::string& name) {
  write_local_header(name, 1);
  record_.streamed = true;
}

void ZipWriter::append_to_record(const void* data, size_t size) {
  if (!open_ || !record_.streamed)
    throw Error("zip of '" + out_.path() + "': append_to_record() without begin_record()");
  append_data(data, size);
}

void ZipWriter::expect_records(uint64_t records) {
  // A central header and a name of about "archive/data/12345".
  central_directory_.reserve(central_directory_.size() + records * (kCentralHeaderSize + 24));
}

void ZipWriter::write_local_header(const std::string& name, uint64_t size) {
  if (finished_) throw Error("zip of '" + out_.path() + "': record '" + name + "' added after finish()");
  if (open_)
    throw Error("zip of '" + out_.path() + "': record '" + name + "' begun before the last one ended");
  const std::string full_name = kArchivePrefix + name;
  if (full_name.size() > 0xFFFF) throw Error("zip of '" + out_.path() + "': record name too long");
  const uint64_t header_offset = offset_;
  const std::string zip64 = zip64_extra(size, header_offset, /*local=*/true);
  const uint16_t flags = size == 0 ? kUtf8Name : kUtf8Name | kHasDataDescriptor;

  // "FB" field padding the data to the next multiple of 64 (as PyTorchStreamWriter's getPadding).
  const uint64_t unpadded = header_offset + kLocalHeaderSize + full_name.size() + zip64.size() + 4;
  const uint64_t padding = (kDataAlignment - unpadded % kDataAlignment) % kDataAlignment;
  std::string header;
  header.reserve(kLocalHeaderSize + full_name.size() + zip64.size() + 4 + padding);
  le32(header, kLocalHeaderSignature);
  le16(header, 0);  // version needed
  le16(header, flags);
  le16(header, 0);  // stored
  le16(header, 0);  // time
  le16(header, 0);  // date
  le32(header, 0);  // CRC-32, in the data descriptor
  le32(header, 0);  // compressed size, ditto
  le32(header, 0);  // uncompressed size, ditto
  le16(header, full_name.size());
  le16(header, zip64.size() + 4 + padding);
  header += full_name;
  header += zip64;
  header += "FB";
  le16(header, padding);
  header.append(padding, 'Z');
  put(header.data(), header.size());
  record_ = OpenRecord{full_name, header_offset};
  open_ = true;
}

void ZipWriter::append_data(const void* data, uint64_t size) {
  const char* bytes = static_cast<const char*>(data);
  for (uint64_t done = 0; done < size;) {
    const size_t n = static_cast<size_t>(std::min(kChunk, size - done));
    record_.crc = libdeflate_crc32(record_.crc, bytes + done, n);
    put(bytes + done, n);
    done += n;
  }
  record_.size += size;
}

void ZipWriter::end_record() {
  if (!open_) throw Error("zip of '" + out_.path() + "': end_record() without begin_record()");
  open_ = false;
  const OpenRecord& r = record_;
  if (r.streamed && (r.size == 0 || r.size >= kZip32Limit)) {
    throw Error("zip of '" + out_.path() + "': streamed record '" + r.full_name + "' holds " +
                std::to_string(r.size) + " bytes; a streamed record holds 1 byte to 4 GiB - 1");
  }
  const std::string zip64 = zip64_extra(r.size, r.header_offset, /*local=*/true);
  const uint16_t flags = r.size == 0 ? kUtf8Name : kUtf8Name | kHasDataDescriptor;
  if (flags & kHasDataDescriptor) {
    std::string descriptor;
    le32(descriptor, kDataDescriptorSignature);
    le32(descriptor, r.crc);
    if (zip64.empty()) {
      le32(descriptor, r.size);
      le32(descriptor, r.size);
    } else {
      le64(descriptor, r.size);
      le64(descriptor, r.size);
    }
    put(descriptor.data(), descriptor.size());
  }

  std::string& cd = central_directory_;
  le32(cd, kCentralHeaderSignature);
  le16(cd, 0);  // version made by
  le16(cd, 0);  // version needed
  le16(cd, flags);
  le16(cd, 0);  // stored
  le16(cd, 0);  // time
  le16(cd, 0);  // date
  le32(cd, r.crc);
  le32(cd, std::min(r.size, kZip32Limit));
  le32(cd, std::min(r.size, kZip32Limit));
  le16(cd, r.full_name.size());
  le16(cd, zip64.size());
  le16(cd, 0);  // comment
  le16(cd, 0);  // disk
  le16(cd, 0);  // internal attributes
  le32(cd, 0);  // external attributes
  le32(cd, std::min(r.header_offset, kZip32Limit));
  cd += r.full_name;
  cd += zip64_extra(r.size, r.header_offset, /*local=*/false);
  ++records_;
}

void ZipWriter::finish() {
  if (open_) throw Error("zip of '" + out_.path() + "': finish() before the last record ended");
  add_record("version", kFileFormatVersion, sizeof(kFileFormatVersion) - 1);
  finished_ = true;
  const uint64_t cd_offset = offset_;
  const uint64_t cd_size = central_directory_.size();
  put(central_directory_.data(), central_directory_.size());

  const uint64_t zip64_end_offset = offset_;
  std::string end;
  le32(end, kZip64EndSignature);
  le64(end, kZip64EndSize - 12);  // size of the rest of this record
  le16(end, 0x031E);              // version made by (miniz: Unix, 3.0)
  le16(end, 0x002D);              // version needed: 4.5, zip64
  le32(end, 0);                   // this disk
  le32(end, 0);                   // disk of the central directory
  le64(end, records_);
  le64(end, records_);
  le64(end, cd_size);
  le64(end, cd_offset);

  le32(end, kZip64LocatorSignature);
  le32(end, 0);  // disk of the zip64 end record
  le64(end, zip64_end_offset);
  le32(end, 1);  // disks

  le32(end, kEndOfCentralDirectorySignature);
  le16(end, 0);
  le16(end, 0);
  le16(end, std::min<uint64_t>(records_, 0xFFFF));
  le16(end, std::min<uint64_t>(records_, 0xFFFF));
  le32(end, std::min(cd_size, kZip32Limit));
  le32(end, std::min(cd_offset, kZip32Limit));
  le16(end, 0);  // comment
  put(end.data(), end.size());
}

}  // namespace format
}  // namespace autosnap
