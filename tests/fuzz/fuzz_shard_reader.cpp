// libFuzzer target: the torch.save-format reader (zip container + restricted
// unpickler) on arbitrary bytes. Anything but an autosnap::Error is a bug.
#include <cstdint>
#include <cstring>
#include <string>

#include "autosnap/errors.h"
#include "format/shard.h"

namespace {

class BufferFile final : public autosnap::ReadableFile {
 public:
  BufferFile(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint64_t size() const override { return size_; }
  void read_exact(uint64_t offset, void* buffer, size_t size) override {
    if (offset > size_ || size > size_ - offset) throw autosnap::IoError("read", path_, "past the end");
    std::memcpy(buffer, data_ + offset, size);
  }
  const std::string& path() const override { return path_; }

 private:
  const uint8_t* data_;
  size_t size_;
  std::string path_ = "fuzz.pt";
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  BufferFile file(data, size);
  try {
    autosnap::format::read_shard(file, c10::Device(c10::kCPU), /*check_crc=*/true);
  } catch (const autosnap::Error&) {
  }
  return 0;
}
