#include "autosnap/state_dict.h"

#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <sstream>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include "autosnap/errors.h"
#include "state/cached_capture.h"
#include "state/restore_plan.h"
#include "util/compact_dict.h"
#include "util/prefetch.h"

namespace autosnap {
namespace state {
namespace {

// Module::parameters_ is protected: a derived class may name it. Reading it
// directly spares named_parameters()' copy of every name at each snapshot.
struct ParametersOf : torch::nn::Module {
  static const torch::OrderedDict<std::string, at::Tensor>& get(const torch::nn::Module& module) {
    return module.*(&ParametersOf::parameters_);
  }
};

// Python's state_dict order: a module's own parameters, then its own buffers,
// then each child (`on_child` recurses if it wants to).
template <typename OnTensor, typename OnChild>
void walk(const torch::nn::Module& module, OnTensor&& on_tensor, OnChild&& on_child) {
  for (const auto& item : ParametersOf::get(module)) {
    if (item.value().defined()) on_tensor(item.key(), item.value(), /*parameter=*/true);
  }
  for (const auto& item : module.named_buffers(/*recurse=*/false)) {
    if (item.value().defined()) on_tensor(item.key(), item.value(), /*parameter=*/false);
  }
  for (const auto& child : module.named_children()) on_child(child.key(), *child.value());
}

void collect(const torch::nn::Module& module, const std::string& prefix, bool detach, NamedTensors& out) {
  walk(
      module,
      [&](const std::string& key, const at::Tensor& t, bool) {
        out.emplace_back(prefix + key, detach ? t.detach() : t);
      },
      [&](const std::string& name, const torch::nn::Module& child) {
        collect(child, prefix + name + ".", detach, out);
      });
}

// A tensor that is its storage: contiguous from the storage's first byte to
// its last, with no lazy conjugate or negation, so installing another storage
// changes no other view of it and the bytes mean the same on either side.
bool fills_its_storage(const at::Tensor& t) {
  return t.has_storage() && t.storage_offset() == 0 && t.is_contiguous() &&
         t.storage().nbytes() == t.nbytes() && !t.is_conj() && !t.is_neg();
}

// Whether a freshly read `source` may become `destination`'s storage without a
// copy, as torch::load does: `source` is the only tensor on its storage and is
// held by nothing but the value being restored (checked when prepared), and
// no other tensor shares `destination`'s storage (a view, a tied weight, an
// alias someone detached), so nothing but `destination` sees the swap.
bool may_install(const at::Tensor& destination, const at::Tensor& source) {
  return fills_its_storage(destination) && destination.storage().use_count() == 1 &&
         destination.device() == source.device() && destination.strides() == source.strides();
}

// may_lend counts the holders of a tensor read in place from a dict entry: a
// c10::Dict that handed out copies would add one.
static_assert(std::is_reference_v<decltype(std::declval<c10::impl::GenericDict&>().begin()->value())>,
              "c10::Dict entries are expected to be read by reference");

// `source`, read in place from a dict entry, is held by that entry alone.
bool may_lend(const at::Tensor& source) {
  return source.use_count() == 1 && fills_its_storage(source) && source.storage().use_count() == 1;
}

// Whether `alias` (detached from `live` earlier) still shows what a new
// detach() of `live` would: set_data(), module.to() or a resize change these.
bool same_alias(const at::Tensor& live, const at::Tensor& alias) {
  const c10::TensorImpl* a = live.unsafeGetTensorImpl();
  const c10::TensorImpl* b = alias.unsafeGetTensorImpl();
  return a->has_storage() && b->has_storage() &&
         a->storage().unsafeGetStorageImpl() == b->storage().unsafeGetStorageImpl() &&
         a->storage_offset() == b->storage_offset() && a->sizes() == b->sizes() &&
         a->strides() == b->strides() && a->dtype() == b->dtype() && a->device() == b->device() &&
         a->is_conj() == b->is_conj() && a->is_neg() == b->is_neg();
}

// Walks the module beside a ModuleCapture's last walk.
struct LastWalk {
  const std::vector<at::Tensor>& live;
  const std::vector<at::Tensor>& detached;
  const std::vector<std::string>& children;
  size_t tensors = 0;
  size_t child = 0;
};

bool matches(const torch::nn::Module& module, LastWalk& last) {
  bool same = true;
  walk(
      module,
      [&](const std::string&, const at::Tensor& t, bool) {
        const size_t i = last.tensors++;
        const size_t ahead = i + util::kPrefetchAhead;
        if (ahead < last.live.size()) {
          util::prefetch_impl(last.live[ahead].unsafeGetTensorImpl());
          util::prefetch_impl(last.detached[ahead].unsafeGetTensorImpl());
        }
        same = same && i < last.live.size() && last.live[i].is_same(t) && same_alias(t, last.detached[i]);
      },
      [&](const std::string& name, const torch::nn::Module& child) {
        const size_t i = last.child++;
        same = same && i < last.children.size() && last.children[i] == name && matches(child, last);
      });
  return same;
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
  collect(module, "", /*detach=*/true, out);
  return out;
}

NamedTensors live_state(const torch::nn::Module& module) {
  NamedTensors out;
  collect(module, "", /*detach=*/false, out);
  return out;
}

void ModuleCapture::forget() {
  live_.clear();
  detached_.clear();
  parameter_.clear();
  children_.clear();
  dict_ = c10::IValue();
}

bool ModuleCapture::unchanged() const {
  LastWalk last{live_, detached_, children_};
  return matches(module_, last) && last.tensors == live_.size() && last.child == children_.size();
}

c10::IValue ModuleCapture::capture() {
  if (!dict_.isNone() && unchanged()) return dict_;
  ++rebuilds_;
  forget();
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  std::function<void(const torch::nn::Module&, const std::string&)> add = [&](const torch::nn::Module& module,
                                                                              const std::string& prefix) {
    walk(
        module,
        [&](const std::string& key, const at::Tensor& t, bool parameter) {
          live_.push_back(t);
          detached_.push_back(t.detach());
          parameter_.push_back(parameter);
          dict.insert(prefix + key, detached_.back());
        },
        [&](const std::string& name, const torch::nn::Module& child) {
          children_.push_back(name);
          add(child, prefix + name + ".");
        });
  };
  add(module_, "");
  util::compact_dict(dict, 0);
  dict_ = std::move(dict);
  return dict_;
}

void ModuleCapture::parameter_storages(std::unordered_set<const void*>& out) const {
  for (size_t i = 0; i < live_.size(); ++i) {
    if (parameter_[i] && live_[i].has_storage()) out.insert(live_[i].storage().unsafeGetStorageImpl());
  }
}

Commit prepare_tensor_copies(const NamedTensors& live, const c10::IValue& saved, bool strict,
                             const std::string& owner, LoadStateDictResult& result, bool may_alias) {
  if (!saved.isGenericDict()) {
    throw StateMismatch("state for " + owner + " should be a dict of name -> tensor, got a " +
                        saved.tagKind());
  }
  std::unordered_map<std::string, const at::Tensor*> by_name;
  for (const auto& [name, tensor] : live) by_name.emplace(name, &tensor);
  struct TensorCopy {
    at::Tensor destination;
    at::Tensor source;
    bool lent;  // the source may become the destination's storage
  };
  auto copies = std::make_shared<std::vector<TensorCopy>>();
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
    const bool lent = may_alias && may_lend(source);  // before the copy below holds it too
    copies->push_back({destination, source, lent});
  }
  for (const auto& [name, tensor] : live) {
    if (!seen.count(name)) result.missing_keys.push_back(name);
  }
  if (strict && !result.ok()) throw StateMismatch(result.message(owner));
  return [copies] {
    torch::NoGradGuard no_grad;
    for (auto& copy : *copies) {
      if (copy.lent && may_install(copy.destination, copy.source)) {
        copy.destination.set_(copy.source);
      } else {
        copy.destination.copy_(copy.source);
      }
    }
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
  state::prepare_tensor_copies(state::live_state(module), state, strict, module.name(), result)();
  return result;
}

LoadStateDictResult load_state_dict(torch::nn::Module& module, c10::IValue&& state, bool strict) {
  const c10::IValue owned = std::move(state);
  // A dict someone else still holds keeps its tensors to itself.
  const bool may_alias = owned.use_count() == 1;
  LoadStateDictResult result;
  state::prepare_tensor_copies(state::live_state(module), owned, strict, module.name(), result, may_alias)();
  return result;
}

}  // namespace autosnap
