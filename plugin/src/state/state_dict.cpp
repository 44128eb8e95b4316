#include "autosnap/state_dict.h"

#include <torch/nn/module.h>

#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "autosnap/errors.h"

namespace autosnap {
namespace {

void collect(const torch::nn::Module& module, const std::string& prefix, StateDict& out) {
  // Python's order: a module's own parameters, then its own buffers, then its children.
  for (const auto& item : module.named_parameters(/*recurse=*/false)) {
    if (item.value().defined()) out.insert(prefix + item.key(), item.value().detach());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/false)) {
    if (item.value().defined()) out.insert(prefix + item.key(), item.value().detach());
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

std::string quoted_list(const std::vector<std::string>& keys) {
  std::string text;
  for (size_t i = 0; i < keys.size(); ++i) text += (i ? ", \"" : "\"") + keys[i] + "\"";
  return text;
}

}  // namespace

StateDict state_dict(const torch::nn::Module& module) {
  StateDict out;
  collect(module, "", out);
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
  if (!state.isGenericDict()) {
    throw StateMismatch(std::string("load_state_dict expects a dict of name -> tensor, got ") + state.tagKind());
  }
  StateDict live = state_dict(module);
  LoadStateDictResult result;
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (destination, source)
  std::unordered_set<std::string> seen;

  for (const auto& entry : state.toGenericDict()) {
    if (!entry.key().isString()) {
      result.unexpected_keys.push_back(entry.key().isInt() ? std::to_string(entry.key().toInt()) : "<non-string key>");
      continue;
    }
    const std::string& name = entry.key().toStringRef();
    seen.insert(name);
    auto found = live.find(name);
    if (found == live.end()) {
      result.unexpected_keys.push_back(name);
      continue;
    }
    const at::Tensor& destination = found->value();
    const c10::IValue& value = entry.value();
    if (!value.isTensor()) {
      result.mismatched.push_back("type mismatch for " + name + ": the checkpoint holds a " +
                                  value.tagKind() + ", expected a tensor.");
      continue;
    }
    const at::Tensor& source = value.toTensor();
    if (source.sizes() != destination.sizes()) {
      result.mismatched.push_back("size mismatch for " + name + ": copying a param with shape " +
                                  shape_text(source.sizes()) + " from checkpoint, the shape in current model is " +
                                  shape_text(destination.sizes()) + ".");
      continue;
    }
    if (source.scalar_type() != destination.scalar_type()) {
      result.mismatched.push_back("dtype mismatch for " + name + ": copying a param with dtype " +
                                  std::string(c10::toString(source.scalar_type())) +
                                  " from checkpoint, the dtype in current model is " +
                                  std::string(c10::toString(destination.scalar_type())) + ".");
      continue;
    }
    copies.emplace_back(destination, source);
  }
  for (const auto& item : live) {
    if (!seen.count(item.key())) result.missing_keys.push_back(item.key());
  }

  if (strict && !result.ok()) throw StateMismatch(result.message(module.name()));

  torch::NoGradGuard no_grad;
  for (auto& [destination, source] : copies) destination.copy_(source);
  return result;
}

}  // namespace autosnap
