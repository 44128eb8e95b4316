#pragma once

// A restricted unpickler for the pickles inside torch.save files.
//
// It understands the pickle opcodes Python's torch.save (protocol 2) and
// LibTorch's Pickler emit, and builds only known values: tensors (through
// torch._utils._rebuild_tensor_v2 / _rebuild_parameter), lists, tuples, dicts,
// OrderedDicts (their _metadata is dropped), None, bool, int, float, complex,
// str, torch.device. Any other global is refused with a clear error; nothing
// from the file is imported or executed. Containers may not be modified after
// they were nested, so a hostile pickle can build neither cycles nor nesting
// deeper than kMaxNesting.

#include <ATen/core/ivalue.h>

#include <cstdint>
#include <functional>
#include <string>

namespace autosnap {
namespace format {

/// A storage asked for by a pickle's persistent id.
struct StorageRequest {
  std::string key;
  at::ScalarType dtype = at::kByte;
  uint64_t numel = 0;
  std::string location;
};

using StorageLoader = std::function<c10::Storage(const StorageRequest&)>;

constexpr size_t kMaxNesting = 1000;

/// Parses `size` bytes of pickle. `source` names the file in error messages.
/// Throws CorruptSnapshot for malformed or unsupported content.
c10::IValue unpickle(const char* data, size_t size, const StorageLoader& load_storage,
                     const std::string& source);

}  // namespace format
}  // namespace autosnap
