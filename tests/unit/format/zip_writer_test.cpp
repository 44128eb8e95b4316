// autosnap's zip writer (format/zip_writer.h) against the writer it replaces:
// for the same records it writes the same bytes as LibTorch's
// PyTorchStreamWriter, also past the zip64 limits (a record of 4 GiB, a record
// starting after 4 GiB, more than 65,535 records), and what it writes reads back.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "autosnap/errors.h"
#include "format/checksum.h"
#include "format/zip_reader.h"
#include "format/zip_writer.h"

namespace autosnap {
namespace {

using format::ZipReader;
using format::ZipWriter;

// Keeps every byte written to it.
class StringFile final : public WritableFile {
 public:
  void append(const void* data, size_t size) override { bytes.append(static_cast<const char*>(data), size); }
  void flush() override {}
  void sync() override {}
  void close() override {}
  const std::string& path() const override { return path_; }
  std::string bytes;

 private:
  std::string path_ = "memory";
};

class StringReadable final : public ReadableFile {
 public:
  explicit StringReadable(const std::string& bytes) : bytes_(bytes) {}
  uint64_t size() const override { return bytes_.size(); }
  void read_exact(uint64_t offset, void* buffer, size_t size) override {
    ASSERT_LE(offset + size, bytes_.size());
    std::memcpy(buffer, bytes_.data() + offset, size);
  }
  const std::string& path() const override { return path_; }

 private:
  const std::string& bytes_;
  std::string path_ = "memory";
};

// Counts and hashes what is written and keeps only its first and last 64 KiB
// (where the headers are): for archives of several GiB.
class DigestFile final : public WritableFile {
 public:
  static constexpr size_t kKept = 64 << 10;
  void append(const void* data, size_t size) override {
    hashing_.append(data, size);
    const char* bytes = static_cast<const char*>(data);
    if (head.size() < kKept) head.append(bytes, std::min(size, kKept - head.size()));
    const size_t tail_part = std::min(size, kKept);
    tail.append(bytes + size - tail_part, tail_part);
    if (tail.size() > 2 * kKept) tail.erase(0, tail.size() - kKept);
  }
  std::string last() const { return tail.substr(tail.size() - std::min(tail.size(), kKept)); }
  std::string head, tail;
  void flush() override {}
  void sync() override {}
  void close() override {}
  const std::string& path() const override { return sink_.path(); }
  format::FileDigest digest() const { return hashing_.digest(); }

 private:
  class Discard final : public WritableFile {
   public:
    void append(const void*, size_t) override {}
    void flush() override {}
    void sync() override {}
    void close() override {}
    const std::string& path() const override { return path_; }

   private:
    std::string path_ = "digest";
  };
  Discard sink_;
  format::HashingWritableFile hashing_{sink_};
};

// Where two archives first differ, for the failure message.
std::string first_difference(const std::string& a, const std::string& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  if (i == a.size() && i == b.size()) return "identical";
  auto around = [i](const std::string& s) {
    std::string hex;
    for (size_t j = i; j < std::min(s.size(), i + 16); ++j) {
      static const char digits[] = "0123456789abcdef";
      hex += digits[(s[j] >> 4) & 0xF];
      hex += digits[s[j] & 0xF];
    }
    return hex;
  };
  return "first difference at byte " + std::to_string(i) + ": ours " + around(a) + ", LibTorch's " +
         around(b);
}

struct Record {
  std::string name;
  const void* data;
  uint64_t size;
};

void write_with_autosnap(const std::vector<Record>& records, WritableFile& out) {
  ZipWriter zip(out);
  for (const auto& r : records) zip.add_record(r.name, r.data, r.size);
  zip.finish();
}

void write_with_libtorch(const std::vector<Record>& records, WritableFile& out) {
  caffe2::serialize::PyTorchStreamWriter writer([&out](const void* data, size_t size) {
    out.append(data, size);
    return size;
  });
  for (const auto& r : records) writer.writeRecord(r.name, r.data, r.size);
  writer.writeEndOfFile();
}

TEST(ZipWriter, WritesTheBytesPyTorchStreamWriterWrites) {
  std::string data(300000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + i / 251);
  std::vector<Record> records;
  // Sizes around the 64-byte alignment, empty records, a name long enough to need its own padding.
  for (uint64_t size : {0, 1, 3, 4, 63, 64, 65, 127, 4096, 299999, 300000}) {
    records.push_back({"data/" + std::to_string(records.size()), data.data(), size});
  }
  records.push_back({"data.pkl", data.data() + 5, 1000});
  records.push_back({"a/" + std::string(200, 'n'), data.data() + 17, 77});
  StringFile ours, theirs;
  write_with_autosnap(records, ours);
  write_with_libtorch(records, theirs);
  ASSERT_EQ(first_difference(ours.bytes, theirs.bytes), "identical");

  StringReadable in(ours.bytes);
  ZipReader reader(in);
  ASSERT_EQ(reader.entries().size(), records.size() + 1);  // and "version"
  for (const auto& r : records) {
    const auto* entry = reader.find("archive/" + r.name);
    ASSERT_NE(entry, nullptr) << r.name;
    EXPECT_EQ(reader.read_string(*entry, 1 << 20, /*check_crc=*/true),
              std::string(static_cast<const char*>(r.data), r.size));
  }
  EXPECT_EQ(reader.read_string(*reader.find("archive/version"), 16, true), "3\n");
}

TEST(ZipWriter, WritesTheBytesPyTorchStreamWriterWritesForMoreThan65535Records) {
  const std::string payload = "x";
  std::vector<Record> records;
  for (int i = 0; i < 70000; ++i) records.push_back({"data/" + std::to_string(i), payload.data(), 1});
  StringFile ours, theirs;
  write_with_autosnap(records, ours);
  write_with_libtorch(records, theirs);
  ASSERT_EQ(first_difference(ours.bytes, theirs.bytes), "identical");
  StringReadable in(ours.bytes);
  EXPECT_EQ(ZipReader(in).entries().size(), 70001u);
}

// A record of more than 4 GiB (zip64 sizes) and records after it (zip64 offsets).
// The 4 GiB are never-touched anonymous pages: they read as zeros and take no memory.
TEST(ZipWriter, WritesTheBytesPyTorchStreamWriterWritesPastFourGiB) {
  const uint64_t big = (4ull << 30) + 12345;
  void* zeros = ::mmap(nullptr, big, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(zeros, MAP_FAILED);
  const std::string small = "after four GiB";
  const std::vector<Record> records = {
      {"data.pkl", small.data(), small.size()},
      {"data/0", zeros, big},
      {"data/1", small.data(), small.size()},
      {"data/2", zeros, 100},
  };
  DigestFile ours, theirs;
  write_with_autosnap(records, ours);
  write_with_libtorch(records, theirs);
  ::munmap(zeros, big);
  EXPECT_GT(ours.digest().size, big);
  ASSERT_EQ(ours.digest().size, theirs.digest().size);
  EXPECT_EQ(first_difference(ours.head, theirs.head), "identical");
  EXPECT_EQ(first_difference(ours.last(), theirs.last()), "identical");
  EXPECT_EQ(ours.digest().xxh3, theirs.digest().xxh3);
}

// A record written as its bytes come (the pickle, as it is made) is the same
// bytes as one written whole: PyTorchStreamWriter's.
TEST(ZipWriter, AStreamedRecordIsTheBytesOfTheWholeOne) {
  std::string data(300000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13 + i / 97);
  const std::vector<Record> records = {{"data.pkl", data.data(), 299999}, {"data/0", data.data() + 3, 4096}};
  StringFile ours, theirs;
  {
    ZipWriter zip(ours);
    zip.begin_record("data.pkl");
    // Pieces of every size, crossing the writer's 256 KiB CRC chunks.
    size_t done = 0;
    for (size_t piece = 1; done < 299999; piece = piece * 3 + 1) {
      const size_t n = std::min<size_t>(piece, 299999 - done);
      zip.append_to_record(data.data() + done, n);
      done += n;
    }
    zip.end_record();
    zip.expect_records(2);
    zip.add_record("data/0", data.data() + 3, 4096);
    zip.finish();
  }
  write_with_libtorch(records, theirs);
  EXPECT_EQ(first_difference(ours.bytes, theirs.bytes), "identical");
}

TEST(ZipWriter, AStreamedRecordMustHoldSomeBytesAndEndBeforeTheNext) {
  StringFile out;
  ZipWriter zip(out);
  EXPECT_THROW(zip.append_to_record("x", 1), Error) << "nothing begun";
  zip.begin_record("data.pkl");
  EXPECT_THROW(zip.add_record("data/0", "x", 1), Error) << "data.pkl is still open";
  EXPECT_THROW(zip.finish(), Error) << "data.pkl is still open";
  try {
    zip.end_record();
    ADD_FAILURE() << "an empty streamed record was accepted (its header promised a data descriptor)";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'archive/data.pkl' holds 0 bytes"), std::string::npos) << e.what();
  }
}

TEST(ZipWriter, RefusesRecordsAfterFinish) {
  StringFile out;
  ZipWriter zip(out);
  zip.finish();
  EXPECT_THROW(zip.add_record("data/0", "x", 1), Error);
}

}  // namespace
}  // namespace autosnap
