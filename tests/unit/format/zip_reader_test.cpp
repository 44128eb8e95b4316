// The strict zip reader under every load (format/zip_reader.h): it reads what
// autosnap::save and Python's torch.save write, checks CRC-32s, and refuses
// damaged or hostile archives (truncated, out-of-range offsets, unsafe names)
// with a CorruptSnapshot naming the file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>

#include "autosnap/autosnap.h"
#include "autosnap/tools.h"
#include "format/checksum.h"
#include "format/zip_reader.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using format::ZipReader;
using testing::TempDir;

// ---- building small archives byte by byte ----

uint32_t crc32_of(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void put16(std::string& out, uint64_t v) {
  for (int i = 0; i < 2; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}
void put32(std::string& out, uint64_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}
void put64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}
void set32(std::string& bytes, size_t offset, uint32_t v) {
  for (int i = 0; i < 4; ++i) bytes[offset + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
uint32_t get32(const std::string& bytes, size_t offset) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[offset + i])) << (8 * i);
  return v;
}
uint16_t get16(const std::string& bytes, size_t offset) {
  return static_cast<uint16_t>(static_cast<unsigned char>(bytes[offset]) |
                               (static_cast<unsigned char>(bytes[offset + 1]) << 8));
}

struct ZipEntry {
  std::string name;
  std::string data;
  uint16_t method = 0;  // 0: stored
  uint16_t flags = 0;   // bit 0: encrypted
};

// A stored zip archive as torch.save writes one; with `zip64`, every size and
// offset goes through the zip64 records (as for files over 4 GiB).
std::string make_zip(const std::vector<ZipEntry>& entries, bool zip64 = false) {
  std::string out, directory;
  for (const auto& e : entries) {
    const uint64_t offset = out.size();
    put32(out, 0x04034b50);
    put16(out, 20);
    put16(out, e.flags);
    put16(out, e.method);
    put32(out, 0);  // time, date
    put32(out, crc32_of(e.data));
    put32(out, e.data.size());
    put32(out, e.data.size());
    put16(out, e.name.size());
    put16(out, 0);
    out += e.name + e.data;

    put32(directory, 0x02014b50);
    put16(directory, 45);
    put16(directory, 45);
    put16(directory, e.flags);
    put16(directory, e.method);
    put32(directory, 0);
    put32(directory, crc32_of(e.data));
    put32(directory, zip64 ? 0xFFFFFFFFu : e.data.size());
    put32(directory, zip64 ? 0xFFFFFFFFu : e.data.size());
    put16(directory, e.name.size());
    put16(directory, zip64 ? 28 : 0);
    put16(directory, 0);  // comment
    put16(directory, 0);  // disk
    put16(directory, 0);  // internal attributes
    put32(directory, 0);  // external attributes
    put32(directory, zip64 ? 0xFFFFFFFFu : offset);
    directory += e.name;
    if (zip64) {
      put16(directory, 0x0001);
      put16(directory, 24);
      put64(directory, e.data.size());
      put64(directory, e.data.size());
      put64(directory, offset);
    }
  }
  const uint64_t directory_offset = out.size();
  out += directory;
  if (zip64) {
    const uint64_t end64_offset = out.size();
    put32(out, 0x06064b50);
    put64(out, 44);
    put16(out, 45);
    put16(out, 45);
    put32(out, 0);
    put32(out, 0);
    put64(out, entries.size());
    put64(out, entries.size());
    put64(out, directory.size());
    put64(out, directory_offset);
    put32(out, 0x07064b50);
    put32(out, 0);
    put64(out, end64_offset);
    put32(out, 1);
  }
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, zip64 ? 0xFFFF : entries.size());
  put16(out, zip64 ? 0xFFFF : entries.size());
  put32(out, zip64 ? 0xFFFFFFFFu : directory.size());
  put32(out, zip64 ? 0xFFFFFFFFu : directory_offset);
  put16(out, 0);
  return out;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Offset of the end-of-central-directory record (archives here have no comment).
size_t eocd_offset(const std::string& bytes) {
  const size_t offset = bytes.size() - 22;
  EXPECT_EQ(get32(bytes, offset), 0x06054b50u) << "no end-of-central-directory record at the end";
  return offset;
}

// The CorruptSnapshot message opening `path` gives, or "<no error>".
std::string open_error(const std::string& path) {
  auto file = default_file_system().open_for_reading(path);
  try {
    ZipReader reader(*file);
  } catch (const CorruptSnapshot& e) {
    return e.what();
  }
  return "<no error>";
}

// What Python's zipfile module lists: "name size crc" per entry, in order
// ("" where Debian's python3 with torch is missing).
std::string python_listing(const std::string& path) {
  if (auto reason = testing::python_torch_unavailable_reason()) {
    std::cout << *reason << std::endl;
    return "";
  }
  const auto result = testing::run_python_code(
      "import sys, zipfile\n"
      "for i in zipfile.ZipFile(sys.argv[1]).infolist(): print(i.filename, i.file_size, i.CRC)\n",
      path);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return result.output;
}

std::string our_listing(const ZipReader& reader) {
  std::string out;
  for (const auto& e : reader.entries())
    out += e.name + " " + std::to_string(e.size) + " " + std::to_string(e.crc32) + "\n";
  return out;
}

// Reads every entry with its CRC-32 checked; returns them by name.
std::map<std::string, std::string> read_all_entries(ZipReader& reader) {
  std::map<std::string, std::string> out;
  for (const auto& e : reader.entries()) {
    std::string data(e.size, '\0');
    reader.read(e, data.data(), /*check_crc=*/true);
    EXPECT_EQ(crc32_of(data), e.crc32) << e.name;
    out[e.name] = data;
  }
  return out;
}

std::string data_pkl_name(const ZipReader& reader) {
  for (const auto& e : reader.entries()) {
    if (e.name.size() >= 9 && e.name.compare(e.name.size() - 9, 9, "/data.pkl") == 0) return e.name;
  }
  ADD_FAILURE() << "no data.pkl entry in " << reader.path() << ":\n" << our_listing(reader);
  return "";
}

// Offset of an entry's data: after its local header, name and extra field.
uint64_t data_offset_of(const std::string& bytes, const ZipReader::Entry& e) {
  const size_t local = static_cast<size_t>(e.local_header_offset);
  return local + 30 + get16(bytes, local + 26) + get16(bytes, local + 28);
}

// ---- reading real files ----

TEST(ZipReader, ReadsWhatAutosnapSaveWrites) {
  TempDir dir;
  const std::string path = dir.file("checkpoint.pt");
  const auto weights = torch::arange(1000, torch::kFloat32);
  c10::impl::GenericDict value(c10::StringType::get(), c10::AnyType::get());
  value.insert("weights", weights);
  value.insert("bias", torch::ones({3}, torch::kFloat64));
  value.insert("epoch", int64_t(3));
  save(value, path);

  auto file = default_file_system().open_for_reading(path);
  ZipReader reader(*file);
  EXPECT_EQ(reader.path(), path);
  const std::string pkl = data_pkl_name(reader);
  const std::string prefix = pkl.substr(0, pkl.size() - std::strlen("data.pkl"));
  ASSERT_NE(reader.find(pkl), nullptr);
  EXPECT_EQ(reader.find(prefix + "no-such-record"), nullptr);
  const auto entries = read_all_entries(reader);
  EXPECT_EQ(static_cast<unsigned char>(entries.at(pkl)[0]), 0x80) << "data.pkl starts with a PROTO opcode";
  EXPECT_EQ(entries.at(pkl).back(), '.') << "data.pkl ends with STOP";
  const std::string weight_bytes(static_cast<const char*>(weights.data_ptr()), weights.nbytes());
  int records_with_weights = 0;
  for (const auto& [name, data] : entries) {
    EXPECT_EQ(name.compare(0, prefix.size(), prefix), 0)
        << name << " is outside the archive folder " << prefix;
    if (data == weight_bytes) ++records_with_weights;
  }
  EXPECT_EQ(records_with_weights, 1) << "one record holds the weights' bytes:\n" << our_listing(reader);
  EXPECT_EQ(reader.read_string(*reader.find(pkl), 1 << 20, true), entries.at(pkl));

  const std::string listing = python_listing(path);
  if (!listing.empty()) EXPECT_EQ(our_listing(reader), listing) << "Python's zipfile lists other entries";
}

TEST(ZipReader, ReadsEveryFileWrittenByPyTorch211) {
  for (const std::string name : {"tensor.pt", "checkpoint.pt", "dict.pt", "dtypes.pt", "layouts.pt",
                                 "shared.pt", "state_dict.pt", "py-continued-LBFGS.pt"}) {
    SCOPED_TRACE(name);
    const std::string path = testing::test_data("pytorch-2.11/" + name);
    auto file = default_file_system().open_for_reading(path);
    ZipReader reader(*file);
    const auto entries = read_all_entries(reader);
    EXPECT_EQ(entries.size(), reader.entries().size()) << "duplicate names";
    const std::string pkl = data_pkl_name(reader);
    EXPECT_TRUE(entries.count(pkl));
    const std::string listing = python_listing(path);
    if (!listing.empty()) EXPECT_EQ(our_listing(reader), listing);
  }
}

TEST(ZipReader, ReadsAFileWrittenByThisMachinesPython) {
  AUTOSNAP_REQUIRE_PYTHON_TORCH();
  TempDir dir;
  const std::string path = dir.file("py.pt");
  const auto result = testing::run_python_code(
      "import sys, torch\n"
      "torch.save({'a': torch.arange(10, dtype=torch.float32), 'b': [1, 2.5, 'x']}, sys.argv[1])\n",
      path);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto file = default_file_system().open_for_reading(path);
  ZipReader reader(*file);
  const auto entries = read_all_entries(reader);
  EXPECT_EQ(our_listing(reader), python_listing(path));
  const auto a = torch::arange(10, torch::kFloat32);
  const std::string a_bytes(static_cast<const char*>(a.data_ptr()), a.nbytes());
  bool found = false;
  for (const auto& [name, data] : entries) found = found || data == a_bytes;
  EXPECT_TRUE(found) << "no record holds the tensor's bytes:\n" << our_listing(reader);
}

TEST(ZipReader, ReadsZip64Archives) {
  TempDir dir;
  const std::string path = dir.file("zip64.pt");
  write_bytes(path, make_zip({{"archive/data.pkl", std::string("\x80\x02K\x07.", 5)},
                              {"archive/data/0", "0123456789"}},
                             /*zip64=*/true));
  auto file = default_file_system().open_for_reading(path);
  ZipReader reader(*file);
  ASSERT_EQ(reader.entries().size(), 2u) << our_listing(reader);
  const auto* record = reader.find("archive/data/0");
  ASSERT_NE(record, nullptr);
  EXPECT_EQ(record->size, 10u);
  EXPECT_EQ(reader.read_string(*record, 100, true), "0123456789");
  const std::string listing = python_listing(path);
  if (!listing.empty())
    EXPECT_EQ(our_listing(reader), listing) << "the crafted zip64 archive is valid for Python too";
}

// ---- damage ----

TEST(ZipReader, AFlippedByteInARecordIsACrcErrorNamingTheRecord) {
  TempDir dir;
  const std::string path = dir.file("t.pt");
  save(torch::arange(1000, torch::kFloat32), path);
  std::string record_name;
  uint64_t offset = 0;
  {
    auto file = default_file_system().open_for_reading(path);
    ZipReader reader(*file);
    const std::string bytes = read_bytes(path);
    for (const auto& e : reader.entries()) {
      if (e.size == 4000) {
        record_name = e.name;
        offset = data_offset_of(bytes, e) + 123;
      }
    }
    ASSERT_FALSE(record_name.empty()) << "no 4000-byte record:\n" << our_listing(reader);
  }
  testing::flip_byte(path, offset);

  auto file = default_file_system().open_for_reading(path);
  ZipReader reader(*file);  // the central directory is intact
  const auto& entry = *reader.find(record_name);
  std::string data(entry.size, '\0');
  const std::string message =
      testing::error_of<CorruptSnapshot>([&] { reader.read(entry, data.data(), /*check_crc=*/true); });
  EXPECT_NE(message.find("CRC-32 mismatch in entry '" + record_name + "'"), std::string::npos) << message;
  EXPECT_NE(message.find(path), std::string::npos) << message;

  reader.read(entry, data.data(), /*check_crc=*/false);  // callers with their own checksum skip the CRC
  const auto expected = torch::arange(1000, torch::kFloat32);
  const char* original = static_cast<const char*>(expected.data_ptr());
  EXPECT_EQ(static_cast<unsigned char>(data[123]), static_cast<unsigned char>(~original[123]));
  EXPECT_EQ(std::memcmp(data.data(), original, 123), 0);
}

TEST(ZipReader, TruncatedFilesAreRefused) {
  TempDir dir;
  const std::string path = dir.file("t.pt");
  save(torch::arange(1000, torch::kFloat32), path);
  const std::string bytes = read_bytes(path);
  for (size_t size :
       {bytes.size() - 1, bytes.size() - 22, bytes.size() / 2, size_t(100), size_t(21), size_t(0)}) {
    const std::string cut = dir.file("cut-" + std::to_string(size) + ".pt");
    write_bytes(cut, bytes.substr(0, size));
    const std::string message = open_error(cut);
    EXPECT_NE(message.find("'" + cut + "' is not a valid torch.save file"), std::string::npos) << message;
    const std::string why = size < 22 ? "too short for a zip archive" : "truncated or not a zip file";
    EXPECT_NE(message.find(why), std::string::npos) << "cut to " << size << " bytes: " << message;
  }
}

TEST(ZipReader, OldTorchSaveFormatIsRefusedWithAHint) {
  TempDir dir;
  const std::string path = dir.file("legacy.pt");
  // The legacy format is a bare pickle stream: PROTO 2 first, no zip records.
  write_bytes(path, std::string("\x80\x02", 2) + std::string(78, 'x'));
  const std::string message = open_error(path);
  EXPECT_NE(message.find("legacy (pre-1.6) torch.save format"), std::string::npos) << message;
}

TEST(ZipReader, CentralDirectoryBeyondTheFileIsRefused) {
  TempDir dir;
  const std::string path = dir.file("t.pt");
  save(torch::ones({4}), path);
  const std::string bytes = read_bytes(path);
  const size_t eocd = eocd_offset(bytes);
  ASSERT_NE(get32(bytes, eocd + 16), 0xFFFFFFFFu)
      << "expected a plain (not zip64) end record for a small file";

  std::string beyond = bytes;
  set32(beyond, eocd + 16, static_cast<uint32_t>(bytes.size() + 1000));
  write_bytes(dir.file("beyond.pt"), beyond);
  std::string message = open_error(dir.file("beyond.pt"));
  EXPECT_NE(message.find("central directory (offset " + std::to_string(bytes.size() + 1000)),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("lies outside the file"), std::string::npos) << message;

  std::string too_long = bytes;
  set32(too_long, eocd + 12, 0x7FFFFFFF);  // its size runs past the end
  write_bytes(dir.file("long.pt"), too_long);
  message = open_error(dir.file("long.pt"));
  EXPECT_NE(message.find("lies outside the file"), std::string::npos) << message;

  std::string many = bytes;
  many[eocd + 10] = static_cast<char>(0xFF);  // entry count: more than the directory can hold
  many[eocd + 11] = 0x7F;
  write_bytes(dir.file("many.pt"), many);
  message = open_error(dir.file("many.pt"));
  EXPECT_NE(message.find("central directory claims 32767 entries"), std::string::npos) << message;
}

TEST(ZipReader, UnsafeEntryNamesAreRefused) {
  TempDir dir;
  int index = 0;
  for (const std::string name :
       {"../evil", "archive/../../evil", "archive/..", "/etc/passwd", "archive\\data.pkl", "..\\evil",
        "archive//data", "./archive", "archive/", ""}) {
    const std::string path = dir.file("unsafe-" + std::to_string(index++) + ".pt");
    write_bytes(path, make_zip({{"archive/data.pkl", "x"}, {name, "payload"}}));
    const std::string message = open_error(path);
    EXPECT_NE(message.find("unsafe entry name '" + name + "'"), std::string::npos)
        << "name '" << name << "': " << message;
  }
  write_bytes(dir.file("fine.pt"), make_zip({{"archive/data.pkl", "x"}, {"archive/.data/version", "3"}}));
  EXPECT_EQ(open_error(dir.file("fine.pt")), "<no error>");
}

TEST(ZipReader, CompressedEncryptedAndDuplicateEntriesAreRefused) {
  TempDir dir;
  write_bytes(dir.file("deflated.pt"), make_zip({{"a/data.pkl", "x", /*method=*/8}}));
  EXPECT_NE(open_error(dir.file("deflated.pt")).find("entry 'a/data.pkl' is compressed (method 8)"),
            std::string::npos)
      << open_error(dir.file("deflated.pt"));
  write_bytes(dir.file("encrypted.pt"), make_zip({{"a/data.pkl", "x", 0, /*flags=*/1}}));
  EXPECT_NE(open_error(dir.file("encrypted.pt")).find("entry 'a/data.pkl' is encrypted"), std::string::npos)
      << open_error(dir.file("encrypted.pt"));
  write_bytes(dir.file("twice.pt"), make_zip({{"a/data.pkl", "x"}, {"a/data.pkl", "y"}}));
  EXPECT_NE(open_error(dir.file("twice.pt")).find("duplicate entry 'a/data.pkl'"), std::string::npos)
      << open_error(dir.file("twice.pt"));
}

TEST(ZipReader, EntriesOutsideTheFileAndBadLocalHeadersAreRefused) {
  TempDir dir;
  std::string bytes = make_zip({{"a/data.pkl", "pickle"}, {"a/data/0", "0123456789"}});
  const size_t eocd = eocd_offset(bytes);
  const size_t directory = get32(bytes, eocd + 16);
  const size_t second_entry = directory + 46 + std::strlen("a/data.pkl");
  ASSERT_EQ(get32(bytes, second_entry), 0x02014b50u);

  std::string outside = bytes;
  set32(outside, second_entry + 42, static_cast<uint32_t>(directory + 5));  // local header past the data
  write_bytes(dir.file("outside.pt"), outside);
  EXPECT_NE(open_error(dir.file("outside.pt")).find("entry 'a/data/0' lies outside the file"),
            std::string::npos)
      << open_error(dir.file("outside.pt"));

  std::string bad_local = bytes;
  const size_t local = get32(bytes, second_entry + 42);
  bad_local[local] = 'X';  // the local header's signature
  write_bytes(dir.file("local.pt"), bad_local);
  auto file = default_file_system().open_for_reading(dir.file("local.pt"));
  ZipReader reader(*file);
  const std::string message =
      testing::error_of<CorruptSnapshot>([&] { reader.read_string(*reader.find("a/data/0"), 100, false); });
  EXPECT_NE(message.find("local header of 'a/data/0' is corrupt"), std::string::npos) << message;
  EXPECT_EQ(reader.read_string(*reader.find("a/data.pkl"), 100, true), "pickle")
      << "the other entry still reads";

  const std::string too_big =
      testing::error_of<CorruptSnapshot>([&] { reader.read_string(*reader.find("a/data.pkl"), 5, true); });
  EXPECT_NE(too_big.find("entry 'a/data.pkl' is 6 bytes, more than the allowed 5"), std::string::npos)
      << too_big;
}

// ---- hashing a file in the pass that reads it (restores verify this way) ----

TEST(HashingReadableFile, AnyReadOrderGivesTheWholeFilesDigest) {
  TempDir dir;
  const std::string path = dir.path() + "/data.bin";
  std::string contents((3 << 20) + 17, '\0');
  for (size_t i = 0; i < contents.size(); ++i) contents[i] = static_cast<char>((i * 2654435761u) >> 13);
  testing::write_text(path, contents);
  auto file = default_file_system().open_for_reading(path);
  const format::FileDigest expected = format::digest_file(*file);
  std::vector<char> buffer(contents.size());

  auto check = [&](const std::string& pattern,
                   const std::function<void(format::HashingReadableFile&)>& reads) {
    format::HashingReadableFile hashing(*file);
    reads(hashing);
    const format::FileDigest digest = hashing.finish();
    EXPECT_EQ(digest.size, expected.size) << pattern;
    EXPECT_EQ(digest.xxh3, expected.xxh3) << pattern;
  };
  check("nothing read", [](auto&) {});
  check("forward in small pieces", [&](auto& h) {
    h.start();
    for (uint64_t at = 0; at + 1000 <= contents.size(); at += 1000) h.read_exact(at, buffer.data(), 1000);
  });
  check("the tail before start, gaps, re-reads and overlaps", [&](auto& h) {
    h.read_exact(contents.size() - 100, buffer.data(), 100);  // not hashed: before start()
    h.start();
    h.read_exact(0, buffer.data(), 30);
    h.read_exact(64, buffer.data(), 1 << 20);           // a gap of 34 bytes first
    h.read_exact(10, buffer.data(), 20);                // behind the frontier
    h.read_exact((1 << 20) + 60, buffer.data(), 1000);  // overlaps the frontier
    h.read_exact(2 << 20, buffer.data(), 5);
  });
  format::HashingReadableFile hashing(*file);
  hashing.start();
  hashing.read_exact(0, buffer.data(), contents.size());
  EXPECT_EQ(std::string(buffer.data(), contents.size()), contents) << "reads pass the bytes through";
  EXPECT_EQ(hashing.finish().xxh3, expected.xxh3);
}

}  // namespace
}  // namespace autosnap
