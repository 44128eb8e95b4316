#include "autosnap/torchscript.h"

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>

#include <ostream>

#include "autosnap/device.h"
#include "autosnap/errors.h"
#include "fs/atomic_file.h"
#include "fs/file_streambuf.h"
#include "state/restore_plan.h"
#include "state/torchscript_state.h"

namespace autosnap {
namespace state {
namespace {

void collect(const torch::jit::Module& module, const std::string& prefix, NamedTensors& out) {
  for (const auto& item : module.named_parameters(/*recurse=*/false)) {
    if (item.value.defined()) out.emplace_back(prefix + item.name, item.value.detach());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/false)) {
    if (item.value.defined()) out.emplace_back(prefix + item.name, item.value.detach());
  }
  for (const auto& child : module.named_children()) collect(child.value, prefix + child.name + ".", out);
}

}  // namespace

NamedTensors named_state(const torch::jit::Module& module) {
  NamedTensors out;
  collect(module, "", out);
  return out;
}

void write_module(const torch::jit::Module& module, WritableFile& out) {
  WritableFileStreambuf buffer(out);
  std::ostream stream(&buffer);
  try {
    module.save(stream);
  } catch (const c10::Error& e) {
    if (buffer.error()) std::rethrow_exception(buffer.error());
    throw Error(std::string("cannot save TorchScript module: ") + e.what_without_backtrace());
  }
  stream.flush();
  if (buffer.error()) std::rethrow_exception(buffer.error());
  if (!stream) throw IoError("write", out.path(), "the TorchScript writer reported a failed stream");
}

}  // namespace state

void save_module(const torch::jit::Module& module, const std::string& path, FileSystem& fs) {
  write_file_atomically(fs, path, [&](WritableFile& out) { state::write_module(module, out); });
}

torch::jit::Module load_module(const std::string& path, const std::string& map_location) {
  const c10::Device device = resolve_device(map_location, "map_location");
  try {
    return torch::jit::load(path, device);
  } catch (const c10::Error& e) {
    throw CorruptSnapshot("'" + path +
                          "' is not a loadable TorchScript archive: " + e.what_without_backtrace());
  }
}

StateDict state_dict(const torch::jit::Module& module) {
  StateDict out;
  for (auto& [name, tensor] : state::named_state(module)) out.insert(name, tensor);
  return out;
}

LoadStateDictResult load_state_dict(torch::jit::Module& module, const c10::IValue& state, bool strict) {
  LoadStateDictResult result;
  const std::string owner =
      module.type()->name() ? module.type()->name()->qualifiedName() : "TorchScript module";
  state::prepare_tensor_copies(state::named_state(module), state, strict, owner, result)();
  return result;
}

}  // namespace autosnap
