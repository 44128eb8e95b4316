#pragma once

/// TorchScript modules: "save the whole model" (structure + weights), so it
/// can be loaded and run without its C++ class, and state dicts of scripted
/// modules. Files are TorchScript archives: Python reads them with
/// torch.jit.load and C++ with torch::jit::load or load_module.

#include <string>

#include "autosnap/export.h"
#include "autosnap/fs.h"
#include "autosnap/state_dict.h"
#include "autosnap/torch_fwd.h"

namespace autosnap {

/// Saves structure and weights atomically (temp file, fsync, rename).
AUTOSNAP_API void save_module(const torch::jit::Module& module, const std::string& path,
                              FileSystem& fs = default_file_system());

/// Loads a TorchScript archive onto `map_location` ("cpu", "cuda", "cuda:N").
/// Call eval() on the result for inference.
AUTOSNAP_API torch::jit::Module load_module(const std::string& path, const std::string& map_location = "cpu");

/// Parameters and buffers of a scripted module, with Python's names and order.
AUTOSNAP_API StateDict state_dict(const torch::jit::Module& module);

/// As load_state_dict for nn::Module: strict lists every problem and copies nothing.
AUTOSNAP_API LoadStateDictResult load_state_dict(torch::jit::Module& module, const c10::IValue& state,
                                                 bool strict = true);

}  // namespace autosnap
