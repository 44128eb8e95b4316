#pragma once

/// Module state dicts with PyTorch's names and semantics.

#include <ATen/core/ivalue.h>

#include <string>
#include <utility>
#include <vector>

#include "autosnap/export.h"
#include "autosnap/torch_fwd.h"

namespace autosnap {

/// Parameters and buffers by dotted name ("fc1.weight"), in the order
/// Python's `Module.state_dict()` uses. The tensors are detached views of the
/// live ones (no copy), like Python's.
using StateDict = c10::Dict<std::string, at::Tensor>;

AUTOSNAP_API StateDict state_dict(const torch::nn::Module& module);
/// The same for a module holder (`MLP model(...)`, as TORCH_MODULE declares).
template <typename M>
StateDict state_dict(const torch::nn::ModuleHolder<M>& module) {
  return state_dict(static_cast<const torch::nn::Module&>(*module));
}

/// What `load_state_dict` found. `mismatched` holds one sentence per entry
/// whose shape, dtype or type does not fit.
struct AUTOSNAP_API LoadStateDictResult {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
  std::vector<std::string> mismatched;

  bool ok() const { return missing_keys.empty() && unexpected_keys.empty() && mismatched.empty(); }
  /// PyTorch-style "Error(s) in loading state_dict for X: ..." text.
  std::string message(const std::string& module_name) const;
};

/// Copies `state` (a dict of name -> tensor, e.g. from `load()` of a Python
/// state dict) into the module's parameters and buffers.
///
/// strict: any missing key, unexpected key or mismatch throws StateMismatch
/// listing all of them, and nothing is copied. Non-strict: every entry that
/// fits is copied, the rest is reported in the result.
AUTOSNAP_API LoadStateDictResult load_state_dict(torch::nn::Module& module, const c10::IValue& state,
                                                 bool strict = true);
/// The same for a value given up (`load_state_dict(m, load(path))`): where no
/// one else holds it, a tensor alone on its storage becomes the storage of a
/// parameter or buffer alone on its own, without a copy (as torch::load does);
/// the rest is copied. A parameter that shares its storage (a view, a tied
/// weight, a detached alias) is always copied into, so those stay in step.
AUTOSNAP_API LoadStateDictResult load_state_dict(torch::nn::Module& module, c10::IValue&& state,
                                                 bool strict = true);
template <typename M>
LoadStateDictResult load_state_dict(torch::nn::ModuleHolder<M>& module, const c10::IValue& state,
                                    bool strict = true) {
  return load_state_dict(static_cast<torch::nn::Module&>(*module), state, strict);
}
template <typename M>
LoadStateDictResult load_state_dict(torch::nn::ModuleHolder<M>& module, c10::IValue&& state,
                                    bool strict = true) {
  return load_state_dict(static_cast<torch::nn::Module&>(*module), std::move(state), strict);
}

}  // namespace autosnap
