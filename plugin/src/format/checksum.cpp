#include "format/checksum.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <vector>

namespace autosnap {
namespace format {

struct Xxh3Hasher::State {
  XXH3_state_t state;
};

Xxh3Hasher::Xxh3Hasher() : state_(std::make_unique<State>()) { XXH3_64bits_reset(&state_->state); }
Xxh3Hasher::~Xxh3Hasher() = default;

void Xxh3Hasher::update(const void* data, size_t size) {
  if (size > 0) XXH3_64bits_update(&state_->state, data, size);
}

uint64_t Xxh3Hasher::digest() const { return XXH3_64bits_digest(&state_->state); }

FileDigest digest_file(ReadableFile& file, const std::function<void(uint64_t)>& progress) {
  constexpr size_t kChunk = 4 << 20;
  std::vector<char> buffer(kChunk);
  Xxh3Hasher hasher;
  const uint64_t size = file.size();
  for (uint64_t done = 0; done < size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, size - done));
    file.read_exact(done, buffer.data(), n);
    hasher.update(buffer.data(), n);
    done += n;
    if (progress) progress(done);
  }
  return {size, hasher.digest()};
}

void HashingReadableFile::hash_gap_until(uint64_t offset) {
  constexpr size_t kChunk = 1 << 20;
  while (frontier_ < offset) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, offset - frontier_));
    if (gap_.size() < n) gap_.resize(n);
    inner_.read_exact(frontier_, gap_.data(), n);
    hasher_.update(gap_.data(), n);
    frontier_ += n;
  }
}

void HashingReadableFile::read_exact(uint64_t offset, void* buffer, size_t size) {
  if (started_ && offset > frontier_) hash_gap_until(offset);
  inner_.read_exact(offset, buffer, size);
  if (!started_ || offset + size <= frontier_) return;
  const uint64_t skip = frontier_ - offset;  // the part already hashed
  hasher_.update(static_cast<const char*>(buffer) + skip, size - skip);
  frontier_ = offset + size;
}

FileDigest HashingReadableFile::finish() {
  started_ = true;
  const uint64_t size = inner_.size();
  hash_gap_until(size);
  return {size, hasher_.digest()};
}

std::string to_hex(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(value));
  return text;
}

bool parse_hex(const std::string& text, uint64_t& value) {
  if (text.size() != 16) return false;
  uint64_t v = 0;
  for (char c : text) {
    int digit;
    if (c >= '0' && c <= '9')
      digit = c - '0';
    else if (c >= 'a' && c <= 'f')
      digit = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      digit = c - 'A' + 10;
    else
      return false;
    v = (v << 4) | static_cast<uint64_t>(digit);
  }
  value = v;
  return true;
}

}  // namespace format
}  // namespace autosnap
