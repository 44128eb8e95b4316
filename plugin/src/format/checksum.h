#pragma once

// XXH3-64 checksums, computed incrementally while bytes stream to or from disk.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autosnap/fs.h"

namespace autosnap {
namespace format {

class Xxh3Hasher {
 public:
  Xxh3Hasher();
  ~Xxh3Hasher();
  Xxh3Hasher(const Xxh3Hasher&) = delete;
  Xxh3Hasher& operator=(const Xxh3Hasher&) = delete;

  void update(const void* data, size_t size);
  uint64_t digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

/// Size and XXH3-64 of a whole file.
struct FileDigest {
  uint64_t size = 0;
  uint64_t xxh3 = 0;
};

/// A WritableFile decorator that counts and hashes every byte on its way
/// to `inner`, so checksums cost no extra pass over the data.
class HashingWritableFile final : public WritableFile {
 public:
  explicit HashingWritableFile(WritableFile& inner) : inner_(inner) {}
  void append(const void* data, size_t size) override {
    inner_.append(data, size);
    hasher_.update(data, size);
    bytes_ += size;
  }
  void expect_size(uint64_t bytes) override { inner_.expect_size(bytes); }
  void flush() override { inner_.flush(); }
  void sync() override { inner_.sync(); }
  void close() override { inner_.close(); }
  const std::string& path() const override { return inner_.path(); }
  FileDigest digest() const { return {bytes_, hasher_.digest()}; }

 private:
  WritableFile& inner_;
  Xxh3Hasher hasher_;
  uint64_t bytes_ = 0;
};

/// A ReadableFile decorator that hashes a file front to back while a reader
/// reads it, so a reader that goes forward (a zip's records in file order)
/// verifies the whole file in its own single pass. Before start() reads pass
/// through unhashed (a zip reader first reads its directory at the end); after
/// it, bytes read at the hashed frontier are hashed as they pass, a jump forward
/// first reads and hashes the gap, and reads behind the frontier pass through.
class HashingReadableFile final : public ReadableFile {
 public:
  explicit HashingReadableFile(ReadableFile& inner) : inner_(inner) {}
  void start() { started_ = true; }
  uint64_t size() const override { return inner_.size(); }
  void read_exact(uint64_t offset, void* buffer, size_t size) override;
  const std::string& path() const override { return inner_.path(); }
  /// Hashes what was not read yet and returns the digest of the whole file.
  FileDigest finish();

 private:
  void hash_gap_until(uint64_t offset);

  ReadableFile& inner_;
  Xxh3Hasher hasher_;
  bool started_ = false;
  uint64_t frontier_ = 0;  // bytes [0, frontier_) are hashed
  std::vector<char> gap_;
};

/// Reads the file sequentially and hashes it. `progress(bytes_done)` is called
/// after every chunk when given.
FileDigest digest_file(ReadableFile& file, const std::function<void(uint64_t)>& progress = {});

/// 16 lowercase hex digits.
std::string to_hex(uint64_t value);
/// Parses 16 hex digits; returns false on anything else.
bool parse_hex(const std::string& text, uint64_t& value);

}  // namespace format
}  // namespace autosnap
