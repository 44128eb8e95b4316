#include <ATen/ops/empty.h>

#include <functional>

#include "autosnap/errors.h"
#include "format/read_storage.h"
#include "format/shard.h"
#include "format/unpickler.h"
#include "format/zip_reader.h"

namespace autosnap {
namespace format {
namespace {

constexpr uint64_t kMaxPickleSize = 1ull << 30;

bool safe_storage_key(const std::string& key) {
  if (key.empty() || key.size() > 64) return false;
  for (char c : key) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

// The archive's record prefix: torch.save names records "<prefix>/data.pkl".
std::string find_prefix(const ZipReader& zip) {
  std::string prefix;
  for (const auto& entry : zip.entries()) {
    const auto slash = entry.name.find('/');
    if (slash != std::string::npos && entry.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      if (!prefix.empty()) {
        throw CorruptSnapshot("'" + zip.path() + "' holds more than one data.pkl record");
      }
      prefix = entry.name.substr(0, slash);
    }
  }
  if (prefix.empty()) {
    throw CorruptSnapshot("'" + zip.path() +
                          "' is a zip file without a data.pkl record (not a torch.save file)");
  }
  return prefix;
}

// `directory_read` runs once the zip's directory (at the end of the file) is
// read, before the records are.
c10::IValue parse_shard(ReadableFile& file, const c10::Device& device, bool check_crc,
                        const std::function<void()>& directory_read) {
  ZipReader zip(file);
  directory_read();
  const std::string prefix = find_prefix(zip);
  if (zip.find(prefix + "/constants.pkl") != nullptr) {
    throw Error("'" + file.path() +
                "' is a TorchScript module archive (torch.jit.save); load it with torch::jit::load");
  }
  const std::string pickle = zip.read_string(*zip.find(prefix + "/data.pkl"), kMaxPickleSize, check_crc);

  StorageLoader load_storage = [&](const StorageRequest& request) -> c10::Storage {
    if (!safe_storage_key(request.key)) {
      throw CorruptSnapshot("'" + file.path() + "': invalid storage key '" + request.key + "'");
    }
    const auto* entry = zip.find(prefix + "/data/" + request.key);
    if (entry == nullptr) {
      throw CorruptSnapshot("'" + file.path() + "': storage record data/" + request.key + " is missing");
    }
    const uint64_t element_size = c10::elementSize(request.dtype);
    if (request.numel > entry->size / element_size || request.numel * element_size != entry->size) {
      throw CorruptSnapshot("'" + file.path() + "': storage data/" + request.key + " should hold " +
                            std::to_string(request.numel) + " elements of " + std::to_string(element_size) +
                            " bytes but the record is " + std::to_string(entry->size) + " bytes");
    }
    c10::Storage storage = allocate_read_storage(static_cast<size_t>(entry->size));
    if (entry->size > 0) zip.read(*entry, storage.data(), check_crc);
    if (device.is_cpu()) return storage;
    // One copy per storage, so views that shared it on disk share it on the device.
    at::Tensor bytes = at::empty({0}, at::TensorOptions().dtype(at::kByte));
    bytes.set_(storage, 0, {static_cast<int64_t>(entry->size)}, {1});
    return bytes.to(device).storage();
  };
  return unpickle(pickle.data(), pickle.size(), load_storage, file.path());
}

}  // namespace

c10::IValue read_shard(ReadableFile& file, const c10::Device& device, bool check_crc, FileDigest* digest) {
  if (digest == nullptr) return parse_shard(file, device, check_crc, [] {});
  HashingReadableFile hashing(file);
  try {
    c10::IValue value = parse_shard(hashing, device, check_crc, [&] { hashing.start(); });
    *digest = hashing.finish();
    return value;
  } catch (const IoError&) {
    throw;
  } catch (...) {
    *digest = hashing.finish();  // a damaged file may fail to parse: its digest tells
    throw;
  }
}

}  // namespace format
}  // namespace autosnap
