#include "autosnap/serialize.h"

#include "autosnap/device.h"
#include "format/shard.h"
#include "fs/atomic_file.h"

namespace autosnap {

void save(const c10::IValue& value, const std::string& path, FileSystem& fs) {
  write_file_atomically(fs, path, [&](WritableFile& out) { format::write_shard(value, out); });
}

c10::IValue load(const std::string& path, const c10::Device& device, FileSystem& fs) {
  check_device_available(device, "map_location");
  auto file = fs.open_for_reading(path);
  return format::read_shard(*file, device, /*check_crc=*/true);
}

c10::IValue load(const std::string& path, const std::string& map_location, FileSystem& fs) {
  return load(path, resolve_device(map_location, "map_location"), fs);
}

}  // namespace autosnap
