#include "autosnap/state_dict.h"

#include <torch/nn/module.h>

#include <memory>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "autosnap/errors.h"
#include "state/restore_plan.h"

namespace autosnap {
namespace state {
namespace {

void collect(const torch::nn::Module& module, const std::string& prefix, NamedTensors& out) {
  // Python's order: a module's own parameters, then its own buffers, then its children.
  for (const auto& item : module.named_parameters(/*recurse=*/false)) {
    if (item.value().defined()) out.emplace_back(prefix + item.key(), item.value().detach());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/false)) {
    if (item.value().defined()) out.emplace_back(prefix + item.key(), item.value().detach());
  }
  for (const auto& child : module.named_children()) {
    collect(*child.value(), prefix + child.key() + ".", out);
  }
}

std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream text;
  text << "[";
  for (size_t i = 0; i < sizes.size(); ++i) text << (i ? ", " : "") << sizes[i];
  text << "]";
  return text.str();
}

}  // namespace

NamedTensors named_state(const torch::nn::Module& module) {
  NamedTensors out;
  collect(module, "", out);
  return out;
}

Commit prepare_tensor_copies(const NamedTensors& live, const c10::IValue& saved, bool strict,
                             const std::string& owner, LoadStateDictResult& result) {
  if (!saved.isGenericDict()) {
    throw StateMismatch("state for " + owner + " should be a dict of name -> tensor, got a " +
                        saved.tagKind());
  }
  std::unordered_map<std::string, const at::Tensor*> by_name;
  for (const auto& [name, tensor] : live) by_name.emplace(name, &tensor);
  auto copies = std::make_shared<std::vector<std::pair<at::Tensor, at::Tensor>>>();  // (destination, source)
  std::unordered_set<std::string> seen;

  for (const auto& entry : saved.toGenericDict()) {
    if (!entry.key().isString()) {
      result.unexpected_keys.push_back(entry.key().isInt() ? std::to_string(entry.key().toInt())
                                                           : "<non-string key>");
      continue;
    }
    const std::string& name = entry.key().toStringRef();
    seen.insert(name);
    auto found = by_name.find(name);
    if (found == by_name.end()) {
      result.unexpected_keys.push_back(name);
      continue;
    }
    const at::Tensor& destination = *found->second;
    const c10::IValue& value = entry.value();
    if (!value.isTensor()) {
      result.mismatched.push_back("type mismatch for " + name + ": the checkpoint holds a " +
                                  value.tagKind() + ", expected a tensor.");
      continue;
    }
    const at::Tensor& source = value.toTensor();
    if (source.sizes() != destination.sizes()) {
      result.mismatched.push_back(
          "size mismatch for " + name + ": copying a param with shape " + shape_text(source.sizes()) +
          " from checkpoint, the shape in current model is " + shape_text(destination.sizes()) + ".");
      continue;
    }
    if (source.scalar_type() != destination.scalar_type()) {
      result.mismatched.push_back("dtype mismatch for " + name + ": copying a param with dtype " +
                                  std::string(c10::toString(source.scalar_type())) +
                                  " from checkpoint, the dtype in current model is " +
                                  std::string(c10::toString(destination.scalar_type())) + ".");
      continue;
    }
    copies->emplace_back(destination, source);
  }
  for (const auto& [name, tensor] : live) {
    if (!seen.count(name)) result.missing_keys.push_back(name);
  }
  if (strict && !result.ok()) throw StateMismatch(result.message(owner));
  return [copies] {
    torch::NoGradGuard no_grad;
    for (auto& [destination, source] : *copies) destination.copy_(source);
  };
}

}  // namespace state

namespace {

std::string quoted_list(const std::vector<std::string>& keys) {
  std::string text;
  for (size_t i = 0; i < keys.size(); ++i) text += (i ? ", \"" : "\"") + keys[i] + "\"";
  return text;
}

}  // namespace

StateDict state_dict(const torch::nn::Module& module) {
  StateDict out;
  for (auto& [name, tensor] : state::named_state(module)) out.insert(name, tensor);
  return out;
}

std::string LoadStateDictResult::message(const std::string& module_name) const {
  std::string text = "Error(s) in loading state_dict for " + module_name + ":";
  if (!missing_keys.empty()) text += "\n\tMissing key(s) in state_dict: " + quoted_list(missing_keys) + ".";
  if (!unexpected_keys.empty()) {
    text += "\n\tUnexpected key(s) in state_dict: " + quoted_list(unexpected_keys) + ".";
  }
  for (const auto& problem : mismatched) text += "\n\t" + problem;
  return text;
}

LoadStateDictResult load_state_dict(torch::nn::Module& module, const c10::IValue& state, bool strict) {
  LoadStateDictResult result;
  state::prepare_tensor_copies(state::named_state(module), state, strict, module.name(), result)();
  return result;
}

}  // namespace autosnap
