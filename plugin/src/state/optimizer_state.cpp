// Conversion between LibTorch's optimizer state classes and the Python
// optimizers' state_dict layout (PyTorch 1.13 key names and value types).
#include "autosnap/optimizer_state.h"

#include <ATen/ops/empty.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Type.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/lbfgs.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <typeinfo>

#include "autosnap/errors.h"
#include "state/cached_capture.h"
#include "state/restore_plan.h"
#include "state/saved_dict.h"
#include "util/compact_dict.h"
#include "util/prefetch.h"

namespace autosnap {
namespace {

using c10::IValue;
using torch::optim::Optimizer;
using torch::optim::OptimizerOptions;
using torch::optim::OptimizerParamState;
using Entries = c10::impl::GenericDict;

Entries new_entries() { return Entries(c10::StringType::get(), c10::AnyType::get()); }

std::string param_key(const at::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

IValue tensor_or_none(const at::Tensor& t) { return t.defined() ? IValue(t) : IValue(); }

// Which memory a parameter's loaded state tensors go into.
struct StateTargets {
  // The saved tensors are ours (a freshly read shard): no copy where they fit.
  bool may_alias = false;
  // The parameter's live state, if any, and the copies into its memory
  // (live memory, saved) that the commit makes.
  Entries live = new_entries();
  std::vector<std::pair<at::Tensor, at::Tensor>>* deferred = nullptr;
};

// ---- reading a Python-layout dict, with errors that name the entry ----
// A SavedDict, plus the optimizer's numbers (Python saves some as floats or
// one-element tensors) and its state tensors, cast like their parameter.
class Reader {
 public:
  Reader(const IValue& value, std::string where, StateTargets targets = {})
      : dict_(value, "optimizer state " + where), where_(std::move(where)), targets_(std::move(targets)) {}
  [[noreturn]] void fail(const std::string& what) const { dict_.fail(what); }
  bool has(const std::string& key) const { return dict_.has(key); }
  const IValue& get(const std::string& key) const { return dict_.get(key); }
  double number(const std::string& key) const {
    const IValue& v = get(key);
    if (v.isDouble()) return v.toDouble();
    if (v.isInt()) return static_cast<double>(v.toInt());
    if (v.isTensor() && v.toTensor().numel() == 1) return v.toTensor().item<double>();
    fail("'" + key + "' should be a number, got " + v.tagKind());
  }
  int64_t integer(const std::string& key) const {
    double d = number(key);
    if (d != std::floor(d) || d < 0) fail("'" + key + "' should be a non-negative integer");
    return static_cast<int64_t>(d);
  }
  bool boolean(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const IValue& v = get(key);
    if (!v.isBool()) fail("'" + key + "' should be a bool, got " + v.tagKind());
    return v.toBool();
  }
  // A state tensor on the parameter's device (and dtype, if floating): the
  // saved one where it may alias, else the live state's memory when it can be
  // reused (filled at commit), else a copy.
  at::Tensor cast_like(const at::Tensor& t, const at::Tensor& param, const std::string& key = "") const {
    const auto dtype =
        t.is_floating_point() && param.is_floating_point() ? param.scalar_type() : t.scalar_type();
    // Only a tensor the saved dict alone holds (read in place from it) may become live state.
    const bool alias = targets_.may_alias && t.use_count() == 1;
    if (!alias) {
      at::Tensor reused = reusable(key, t, param.device(), dtype);
      if (reused.defined()) return reused;
    }
    return t.to(param.device(), dtype, /*non_blocking=*/false, /*copy=*/!alias);
  }
  at::Tensor tensor(const std::string& key, const at::Tensor& param, bool optional = false) const {
    if (optional && (!has(key) || get(key).isNone())) return {};
    const IValue& v = get(key);
    if (!v.isTensor()) fail("'" + key + "' should be a tensor, got " + v.tagKind());
    return cast_like(v.toTensor(), param, key);
  }
  std::deque<at::Tensor> tensor_list(const std::string& key, const at::Tensor& param) const {
    const IValue& v = get(key);
    if (!v.isList()) fail("'" + key + "' should be a list of tensors");
    std::deque<at::Tensor> out;
    for (const IValue& e : v.toListRef()) {
      if (!e.isTensor()) fail("'" + key + "' should hold only tensors");
      out.push_back(cast_like(e.toTensor(), param));
    }
    return out;
  }
  void forbid_true(const std::string& key) const {
    if (boolean(key, false)) fail("'" + key + "' is True, which LibTorch's optimizer does not support");
  }
  const std::string& where() const { return where_; }

 private:
  // The live state's tensor for `key`, when the saved one fits it and nothing
  // else holds its memory: loading then needs no new memory (no page faults).
  // The saved values are copied into it when the load commits.
  at::Tensor reusable(const std::string& key, const at::Tensor& saved, const c10::Device& device,
                      at::ScalarType dtype) const {
    if (key.empty() || targets_.deferred == nullptr || !targets_.live.contains(key)) return {};
    const IValue value = targets_.live.at(key);  // a copy (Dict::at returns one)
    if (!value.isTensor()) return {};
    const at::Tensor& live = value.toTensor();
    // Held only by the optimizer's state, `targets_.live` and `value`; its storage by it alone.
    const bool private_memory =
        live.use_count() <= 3 && live.has_storage() && live.storage().use_count() == 1;
    if (!private_memory || live.sizes() != saved.sizes() || live.scalar_type() != dtype ||
        live.device() != device || !live.is_contiguous() || live.storage_offset() != 0) {
      return {};
    }
    at::Tensor target = at::empty({0}, live.options());
    target.set_(live.storage(), 0, live.sizes(), live.strides());
    targets_.deferred->emplace_back(target, saved);
    return target;
  }

  state::SavedDict dict_;
  std::string where_;
  StateTargets targets_;
};

void require_shape(const Reader& r, const std::string& key, const at::Tensor& t, const at::Tensor& param) {
  if (t.defined() && t.sizes() != param.sizes()) {
    r.fail("'" + key + "' has shape " + c10::str(t.sizes()) + " but the parameter has shape " +
           c10::str(param.sizes()));
  }
}

IValue betas_tuple(const std::tuple<double, double>& betas) {
  return c10::ivalue::Tuple::create({std::get<0>(betas), std::get<1>(betas)});
}
std::tuple<double, double> read_betas(const Reader& r) {
  const IValue& v = r.get("betas");
  if (v.isTuple() && v.toTupleRef().elements().size() == 2) {
    const auto& e = v.toTupleRef().elements();
    if ((e[0].isDouble() || e[0].isInt()) && (e[1].isDouble() || e[1].isInt())) {
      return {e[0].isDouble() ? e[0].toDouble() : e[0].toInt(),
              e[1].isDouble() ? e[1].toDouble() : e[1].toInt()};
    }
  }
  if (v.isList() && v.toListRef().size() == 2) {
    const auto& e = v.toListRef();
    if ((e[0].isDouble() || e[0].isInt()) && (e[1].isDouble() || e[1].isInt())) {
      return {e[0].isDouble() ? e[0].toDouble() : e[0].toInt(),
              e[1].isDouble() ? e[1].toDouble() : e[1].toInt()};
    }
  }
  r.fail("'betas' should be a pair of numbers");
}

// ---- the optimizers: one table entry each ----

// One entry of a Python dict, bound to LibTorch's class T: an options class
// (a param_group's hyper-parameters) or a per-parameter state class.
template <typename T>
struct Field {
  std::string key;
  // The key as one string object that every captured dict shares: thousands
  // of per-parameter dicts hold no copies of it.
  IValue key_value;
  std::function<c10::optional<IValue>(const T&)> write;                  // nullopt: Python leaves the key out
  std::function<void(const Reader&, const at::Tensor& param, T&)> read;  // empty: not read back
  // Set for a per-parameter tensor: checked against the parameter's shape once every entry is read.
  std::function<const at::Tensor&(const T&)> tensor;
  // Set for an entry always present that a capture may update in place: false when `existing` cannot take it.
  std::function<bool(const IValue& existing, const T&)> refresh;
  // Set where one number tells whether the entry changed: a tensor's identity
  // (0: none), a step's value. A capture compares these with what it saw last
  // instead of walking the captured dict.
  std::function<int64_t(const T&)> observe;
  // The observed number is a float's bits, kept in a float_scalar() of ours:
  // a change is written into that tensor, not into the dict.
  bool scalar = false;
};

template <typename T>
struct Of {
  using type = T;
};

// The entry kinds below return binders: called with Of<T>, a binder gives the
// Field<T>. So one binder serves every class with a member of that name (Adam's
// and AdamW's), and a table entry names its LibTorch classes once, not per entry.
template <typename Write, typename Read, typename Get = std::nullptr_t>
auto field(const char* key, Write write, Read read, Get tensor = nullptr) {
  return [=](auto of) {
    using T = typename decltype(of)::type;
    Field<T> f;
    f.key = key;
    f.key_value = IValue(key);
    f.write = [=](const T& x) -> c10::optional<IValue> { return write(x); };
    if constexpr (!std::is_null_pointer_v<Read>) {
      f.read = [=](const Reader& r, const at::Tensor& param, T& x) { read(r, param, x); };
    }
    if constexpr (!std::is_null_pointer_v<Get>) {
      f.tensor = [=](const T& x) -> const at::Tensor& { return tensor(x); };
    }
    return f;
  };
}

// KEY(name): the Python key and the accessor of LibTorch's TORCH_ARG member of
// the same name (they agree for every entry here). The accessor's `auto&` gives
// a const reference when writing a dict and a mutable one when reading it back.
#define KEY(name) \
#name, [](auto& x) -> auto& { return x.name(); }

int64_t float_bits(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// A captured dict holds its tensors: another tensor cannot have the same address.
int64_t identity(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<intptr_t>(t.unsafeGetTensorImpl()) : 0;
}

// Observes a tensor entry by its identity.
template <typename Get>
auto identity_of(Get get) {
  return [=](const auto& s) { return identity(get(s)); };
}

// `binder`'s Field, observed by observe(state).
template <typename Binder, typename Observe>
auto observed(Binder binder, Observe observe) {
  return [=](auto of) {
    auto f = binder(of);
    using T = typename decltype(of)::type;
    f.observe = [=](const T& s) -> int64_t { return observe(s); };
    return f;
  };
}

// ---- param_group entries (hyper-parameters) ----

template <typename Get>
auto number(const char* key, Get get) {  // a Python float
  return field(
      key, [=](const auto& o) { return IValue(get(o)); },
      [=](const Reader& r, const at::Tensor&, auto& o) { get(o) = r.number(key); });
}
template <typename Get>
auto integer(const char* key, Get get) {  // a Python int
  return observed(field(
                      key, [=](const auto& o) { return IValue(get(o)); },
                      [=](const Reader& r, const at::Tensor&, auto& o) { get(o) = r.integer(key); }),
                  [=](const auto& o) { return static_cast<int64_t>(get(o)); });
}
template <typename Get>
auto flag(const char* key, Get get) {  // a Python bool; False when absent
  return field(
      key, [=](const auto& o) { return IValue(get(o)); },
      [=](const Reader& r, const at::Tensor&, auto& o) { get(o) = r.boolean(key, false); });
}
template <typename Get>
auto optional_integer(const char* key, Get get) {  // an int or None
  return field(
      key, [=](const auto& o) { return get(o) ? IValue(*get(o)) : IValue(); },
      [=](const Reader& r, const at::Tensor&, auto& o) {
        get(o) = r.get(key).isNone() ? c10::optional<int64_t>() : r.integer(key);
      });
}
template <typename Get>
auto optional_string(const char* key, Get get) {  // a str or None
  return field(
      key, [=](const auto& o) { return get(o) ? IValue(*get(o)) : IValue(); },
      [=](const Reader& r, const at::Tensor&, auto& o) {
        const IValue& v = r.get(key);
        if (!v.isNone() && !v.isString()) r.fail("'" + std::string(key) + "' should be None or a string");
        get(o) = v.isNone() ? c10::optional<std::string>() : v.toStringRef();
      });
}
template <typename Get>
auto pair(const char* key, Get get) {  // a tuple of two floats (Adam's betas)
  return field(
      key, [=](const auto& o) { return betas_tuple(get(o)); },
      [=](const Reader& r, const at::Tensor&, auto& o) { get(o) = read_betas(r); });
}
// An option only Python has: written with Python's default, ignored when read.
auto python_only(const char* key, const IValue& value) {
  return field(
      key, [=](const auto&) { return value; }, nullptr);
}
// A Python option LibTorch cannot honour: written False; True refuses the restore.
auto unsupported_flag(const char* key) {
  return field(
      key, [](const auto&) { return IValue(false); },
      [=](const Reader& r, const at::Tensor&, const auto&) { r.forbid_true(key); });
}

// ---- per-parameter state entries ----

// A float32 0-dim tensor built directly: at::scalar_tensor's dispatcher call,
// once per parameter at every snapshot, was a large part of capturing the state.
at::Tensor float_scalar(double value) {
  c10::Storage storage(c10::Storage::use_byte_size_t(), sizeof(float), c10::GetDefaultCPUAllocator(),
                       /*resizable=*/true);
  *static_cast<float*>(storage.data()) = static_cast<float>(value);
  auto impl = c10::make_intrusive<c10::TensorImpl>(
      std::move(storage), c10::DispatchKeySet(c10::DispatchKey::CPU), caffe2::TypeMeta::Make<float>());
  impl->set_sizes_contiguous({});
  return at::Tensor(std::move(impl));
}

// Whether `value` is a tensor float_scalar() could have made, whose float can be written in place.
bool is_float_scalar(const IValue& value) {
  if (!value.isTensor()) return false;
  const at::Tensor& t = value.toTensor();
  return t.dim() == 0 && t.scalar_type() == at::kFloat && t.device().is_cpu() && t.has_storage();
}

// Writes `value` into a float_scalar() made by an earlier capture, so that a
// capture of thousands of parameters makes no new tensors (and staging keeps
// copying from the same storages). Its version moves on when the value does:
// a deferred copy still reading it would see the change and name it.
bool refresh_float_scalar(const IValue& existing, double value) {
  if (!is_float_scalar(existing)) return false;
  const at::Tensor& t = existing.toTensor();
  float* data = t.data_ptr<float>();
  const auto now = static_cast<float>(value);
  if (std::memcmp(data, &now, sizeof(now)) != 0) {
    *data = now;
    if (!t.is_inference()) t.unsafeGetTensorImpl()->bump_version();
  }
  return true;
}

template <typename Get>
auto step_tensor(const char* key,
                 Get get) {  // Python 1.13 keeps Adam's and Adagrad's step as a float32 tensor
  return [=](auto of) {
    auto f = field(
        key, [=](const auto& s) { return IValue(float_scalar(static_cast<double>(get(s)))); },
        [=](const Reader& r, const at::Tensor&, auto& s) { get(s) = r.integer(key); })(of);
    using T = typename decltype(of)::type;
    f.refresh = [=](const IValue& existing, const T& s) {
      return refresh_float_scalar(existing, static_cast<double>(get(s)));
    };
    f.observe = [=](const T& s) { return float_bits(static_cast<float>(get(s))); };
    f.scalar = true;
    return f;
  };
}
template <typename Get>
auto tensor(const char* key, Get get) {  // always present
  return [=](auto of) {
    auto f = field(
        key, [=](const auto& s) { return IValue(get(s)); },
        [=](const Reader& r, const at::Tensor& p, auto& s) { get(s) = r.tensor(key, p); }, get)(of);
    using T = typename decltype(of)::type;
    // Mostly the tensor captured before: recognised without making an IValue of it.
    f.refresh = [=](const IValue& existing, const T& s) {
      return existing.isTensor() && existing.toTensor().is_same(get(s));
    };
    f.observe = identity_of(get);
    return f;
  };
}
template <typename Get>
auto optional_tensor(const char* key, Get get) {  // left out while LibTorch has none
  return observed(
      field(
          key, [=](const auto& s) { return get(s).defined() ? c10::optional<IValue>(get(s)) : c10::nullopt; },
          [=](const Reader& r, const at::Tensor& p, auto& s) {
            get(s) = r.tensor(key, p, /*optional=*/true);
          },
          get),
      identity_of(get));
}
template <typename Get>
auto nullable_tensor(const char* key, Get get) {  // None while LibTorch has none
  return observed(field(
                      key, [=](const auto& s) { return tensor_or_none(get(s)); },
                      [=](const Reader& r, const at::Tensor& p, auto& s) {
                        get(s) = r.tensor(key, p, /*optional=*/true);
                      },
                      get),
                  identity_of(get));
}

template <typename Tensors>
IValue list_of(const Tensors& tensors) {
  c10::List<IValue> list(c10::AnyType::get());
  for (const auto& t : tensors) list.push_back(tensor_or_none(t));
  return list;
}
template <typename Get>
auto tensors(const char* key, Get get) {  // a list of tensors (LBFGS's history)
  return field(
      key, [=](const auto& s) { return list_of(get(s)); },
      [=](const Reader& r, const at::Tensor& p, auto& s) { get(s) = r.tensor_list(key, p); });
}
template <typename Get>
auto optional_tensors(const char* key,
                      Get get) {  // a list of tensors or None, left out (or None) while absent
  return field(
      key, [=](const auto& s) { return get(s) ? c10::optional<IValue>(list_of(*get(s))) : c10::nullopt; },
      [=](const Reader& r, const at::Tensor& p, auto& s) {
        if (!r.has(key) || r.get(key).isNone()) return;
        const IValue& list = r.get(key);
        const std::string name = "'" + std::string(key) + "'";
        if (!list.isList()) r.fail(name + " should be a list");
        std::vector<at::Tensor> values;
        for (const IValue& e : list.toListRef()) {
          if (e.isNone()) {
            values.emplace_back();
          } else if (e.isTensor()) {
            values.push_back(r.cast_like(e.toTensor(), p));
          } else {
            r.fail(name + " should hold tensors or None");
          }
        }
        get(s) = std::move(values);
      });
}

template <typename... Binders>
auto entries(Binders... binders) {
  return std::make_tuple(binders...);
}

template <typename T, typename Binders>
std::vector<Field<T>> bind_fields(const Binders& binders) {
  return std::apply([](const auto&... b) { return std::vector<Field<T>>{b(Of<T>{})...}; }, binders);
}

// ---- type-erased, for the optimizer at hand ----

// Whether per-parameter state tensors have their parameter's shape.
enum class StateShape { kPerParameter, kFlat };

struct KeepAll {
  template <typename State>
  bool operator()(const State&) const {
    return true;
  }
};

}  // namespace

namespace state {

struct OptimizerKind {
  std::string python_name;  // torch.optim's class name
  std::function<bool(const Optimizer&)> is;
  std::function<Entries(const OptimizerOptions&)> options_to_dict;  // with room for the "params" added next
  std::function<void(const Reader&, OptimizerOptions&)> options_from_dict;
  std::function<Entries(const OptimizerParamState&)> state_to_dict;
  // Writes the state's values over those of a dict state_to_dict() made
  // earlier; false (the dict half written) when the state now has other keys.
  // False when the entries cannot be refreshed in place; `replaced`: a value was
  // replaced (another tensor object, another number), not only written into.
  std::function<bool(Entries&, const OptimizerParamState&, bool& replaced)> refresh_state_dict;
  // Each state entry as one number (Field::observe), into `seen[0, state_fields)`;
  // empty where some entry has none (LBFGS's lists).
  std::function<void(const OptimizerParamState&, int64_t* seen)> observe_state;
  size_t state_fields = 0;
  // The entries whose number is a float kept in a tensor of ours (the step), and their keys.
  std::vector<size_t> scalar_fields;
  std::vector<IValue> scalar_keys;
  // nullptr: the saved entry carries no state LibTorch keeps (e.g. SGD's None buffer).
  std::function<std::unique_ptr<OptimizerParamState>(const Reader&, const at::Tensor&)> state_from_dict;
};

}  // namespace state

namespace {

using state::OptimizerKind;

// `more`: entries the caller inserts after these (a table filled to the brim
// would otherwise grow for them at every capture).
template <typename T>
Entries write_entries(const std::vector<Field<T>>& fields, const T& x, size_t more = 0) {
  Entries d = new_entries();
  util::compact_dict(d, fields.size() + more);
  for (const auto& f : fields) {
    if (auto value = f.write(x)) d.insert(f.key_value, std::move(*value));
  }
  return d;
}

template <typename T>
bool same_key(const IValue& key, const Field<T>& f) {
  return key.isSameIdentity(f.key_value) || key.toStringRef() == f.key;
}

// The entries are in field order (write_entries), so the dict is walked beside
// the fields: no key is hashed or allocated.
template <typename T>
bool refresh_entries(const std::vector<Field<T>>& fields, Entries& d, const T& x, bool& replaced) {
  auto entry = d.begin();
  for (const auto& f : fields) {
    if (f.refresh && entry != d.end() && same_key(entry->key(), f) && f.refresh(entry->value(), x)) {
      ++entry;
      continue;
    }
    auto value = f.write(x);
    if (!value) continue;
    if (entry == d.end() || !same_key(entry->key(), f)) return false;
    if (!entry->value().isSameIdentity(*value)) {
      entry->setValue(std::move(*value));
      replaced = true;
    }
    ++entry;
  }
  return entry == d.end();
}

// `group` and `state` list the entries in the order Python 1.13 writes them
// (the saved files keep that order); they are read back in the same order.
template <typename Opt, typename Options, typename State, typename Group, typename PerParameter,
          typename Keep = KeepAll>
OptimizerKind kind(std::string python_name, const Group& group, const PerParameter& state,
                   StateShape shape = StateShape::kPerParameter, Keep keep = {}) {
  auto options_fields = std::make_shared<std::vector<Field<Options>>>(bind_fields<Options>(group));
  auto state_fields = std::make_shared<std::vector<Field<State>>>(bind_fields<State>(state));
  OptimizerKind k;
  k.python_name = std::move(python_name);
  k.is = [](const Optimizer& o) { return dynamic_cast<const Opt*>(&o) != nullptr; };
  k.options_to_dict = [options_fields](const OptimizerOptions& o) {
    return write_entries(*options_fields, static_cast<const Options&>(o), /*more=*/1);
  };
  k.options_from_dict = [options_fields](const Reader& r, OptimizerOptions& o) {
    for (const auto& f : *options_fields) {
      if (f.read) f.read(r, at::Tensor(), static_cast<Options&>(o));
    }
  };
  k.state_to_dict = [state_fields](const OptimizerParamState& s) {
    return write_entries(*state_fields, static_cast<const State&>(s));
  };
  k.refresh_state_dict = [state_fields](Entries& d, const OptimizerParamState& s, bool& replaced) {
    return refresh_entries(*state_fields, d, static_cast<const State&>(s), replaced);
  };
  k.state_fields = state_fields->size();
  const bool observable =
      std::all_of(state_fields->begin(), state_fields->end(), [](const auto& f) { return bool(f.observe); });
  if (observable) {
    k.observe_state = [state_fields](const OptimizerParamState& s, int64_t* seen) {
      for (const auto& f : *state_fields) *seen++ = f.observe(static_cast<const State&>(s));
    };
  }
  for (size_t j = 0; j < state_fields->size(); ++j) {
    if ((*state_fields)[j].scalar) {
      k.scalar_fields.push_back(j);
      k.scalar_keys.push_back((*state_fields)[j].key_value);
    }
  }
  k.state_from_dict = [state_fields, shape, keep](const Reader& r, const at::Tensor& param) {
    auto s = std::make_unique<State>();
    for (const auto& f : *state_fields) f.read(r, param, *s);
    if (shape == StateShape::kPerParameter) {
      for (const auto& f : *state_fields) {
        if (f.tensor) require_shape(r, f.key, f.tensor(*s), param);
      }
    }
    if (!keep(*s)) return std::unique_ptr<OptimizerParamState>();
    return std::unique_ptr<OptimizerParamState>(std::move(s));
  };
  return k;
}

const std::vector<OptimizerKind>& optimizer_kinds() {
  using namespace torch::optim;
  static const std::vector<OptimizerKind> kinds = [] {
    const IValue None;
    // Adam and AdamW keep the same entries; Python 1.13 writes different
    // Python-only options after them.
    auto adam_group = [](auto... python_only_options) {
      return entries(number(KEY(lr)), pair(KEY(betas)), number(KEY(eps)), number(KEY(weight_decay)),
                     flag(KEY(amsgrad)), python_only_options...);
    };
    const auto adam_state = entries(step_tensor(KEY(step)), tensor(KEY(exp_avg)), tensor(KEY(exp_avg_sq)),
                                    optional_tensor(KEY(max_exp_avg_sq)));
    return std::vector<OptimizerKind>{
        kind<SGD, SGDOptions, SGDParamState>(
            "SGD",
            entries(number(KEY(lr)), number(KEY(momentum)), number(KEY(dampening)), number(KEY(weight_decay)),
                    flag(KEY(nesterov)), unsupported_flag("maximize"), python_only("foreach", None),
                    python_only("differentiable", false)),
            entries(nullable_tensor(KEY(momentum_buffer))), StateShape::kPerParameter,
            // Python keeps None buffers (momentum 0, or no grad yet); LibTorch keeps no entry.
            [](const SGDParamState& s) { return s.momentum_buffer().defined(); }),
        kind<Adam, AdamOptions, AdamParamState>(
            "Adam",
            adam_group(unsupported_flag("maximize"), python_only("foreach", None),
                       python_only("capturable", false), python_only("differentiable", false),
                       python_only("fused", false)),
            adam_state),
        kind<AdamW, AdamWOptions, AdamWParamState>(
            "AdamW",
            adam_group(python_only("foreach", None), unsupported_flag("maximize"),
                       python_only("capturable", false)),
            adam_state),
        kind<RMSprop, RMSpropOptions, RMSpropParamState>(
            "RMSprop",
            entries(number(KEY(lr)), number(KEY(momentum)), number(KEY(alpha)), number(KEY(eps)),
                    flag(KEY(centered)), number(KEY(weight_decay)), python_only("foreach", None),
                    unsupported_flag("maximize"), python_only("differentiable", false)),
            entries(integer(KEY(step)),  // a plain int in Python's RMSprop
                    tensor(KEY(square_avg)), optional_tensor(KEY(momentum_buffer)),
                    optional_tensor(KEY(grad_avg)))),
        kind<Adagrad, AdagradOptions, AdagradParamState>(
            "Adagrad",
            entries(number(KEY(lr)), number(KEY(lr_decay)), number(KEY(eps)), number(KEY(weight_decay)),
                    number(KEY(initial_accumulator_value)), python_only("foreach", None),
                    unsupported_flag("maximize")),
            entries(step_tensor(KEY(step)), tensor(KEY(sum)))),
        kind<LBFGS, LBFGSOptions, LBFGSParamState>(
            "LBFGS",
            entries(number(KEY(lr)), integer(KEY(max_iter)), optional_integer(KEY(max_eval)),
                    number(KEY(tolerance_grad)), number(KEY(tolerance_change)), integer(KEY(history_size)),
                    optional_string(KEY(line_search_fn))),
            // LBFGS keeps one flat state for all parameters, stored under the first one.
            entries(integer(KEY(func_evals)), integer(KEY(n_iter)), optional_tensors(KEY(al)),
                    nullable_tensor(KEY(d)), number(KEY(t)), tensors(KEY(old_dirs)), tensors(KEY(old_stps)),
                    tensors(KEY(ro)), nullable_tensor(KEY(H_diag)), nullable_tensor(KEY(prev_flat_grad)),
                    number(KEY(prev_loss))),
            StateShape::kFlat),
    };
  }();
  return kinds;
}

#undef KEY

const OptimizerKind& kind_of(const Optimizer& optimizer) {
  for (const auto& kind : optimizer_kinds()) {
    if (kind.is(optimizer)) return kind;
  }
  std::string names;
  const auto& kinds = optimizer_kinds();
  for (size_t i = 0; i < kinds.size(); ++i) {
    names += (i == 0 ? "" : i + 1 == kinds.size() ? " and " : ", ") + kinds[i].python_name;
  }
  throw Error("optimizer type " + c10::demangle(typeid(optimizer).name()) +
              " is not supported; supported are " + names);
}

}  // namespace

std::string optimizer_type_name(const Optimizer& optimizer) { return kind_of(optimizer).python_name; }

c10::impl::GenericDict optimizer_state_dict(const Optimizer& optimizer) {
  const OptimizerKind& optimizer_kind = kind_of(optimizer);
  c10::impl::GenericDict state(c10::IntType::get(), c10::AnyType::get());
  c10::List<IValue> groups(c10::AnyType::get());
  int64_t index = 0;
  for (const auto& group : optimizer.param_groups()) {
    Entries entry = optimizer_kind.options_to_dict(group.options());
    c10::List<int64_t> ids;
    for (const auto& param : group.params()) {
      auto found = optimizer.state().find(param_key(param));
      if (found != optimizer.state().end()) state.insert(index, optimizer_kind.state_to_dict(*found->second));
      ids.push_back(index++);
    }
    entry.insert("params", ids);
    groups.push_back(entry);
  }
  Entries result = new_entries();
  result.insert("state", state);
  result.insert("param_groups", groups);
  return result;
}

namespace state {

bool OptimizerCapture::same_parameters() const {
  if (&kind_of(optimizer_) != kind_) return false;
  const auto& groups = optimizer_.param_groups();
  if (groups.size() != group_ids_.size()) return false;
  size_t i = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& params = groups[g].params();
    if (params.size() != group_ids_[g].size() || i + params.size() > parameters_.size()) return false;
    for (const auto& param : params) {
      if (!param.is_same(parameters_[i++].live)) return false;
    }
  }
  return i == parameters_.size();
}

void OptimizerCapture::rebuild() {
  ++rebuilds_;
  ++state_generation_;
  kind_ = &kind_of(optimizer_);
  parameters_.clear();
  group_ids_.clear();
  state_ = c10::impl::GenericDict(c10::IntType::get(), c10::AnyType::get());
  util::compact_dict(state_, optimizer_.state().size());
  seen_.clear();
  scalar_slots_.clear();
  now_.assign(kind_->state_fields, 0);
  const bool observed = bool(kind_->observe_state);
  int64_t index = 0;
  for (const auto& group : optimizer_.param_groups()) {
    c10::List<int64_t> ids;
    for (const auto& param : group.params()) {
      Parameter p;
      p.live = param;
      p.key = param_key(param);
      auto found = optimizer_.state().find(p.key);
      if (found != optimizer_.state().end()) {
        p.has_state = true;
        p.entry_seen = &*found;
        p.state_seen = found->second.get();
        p.entries = kind_->state_to_dict(*found->second);
        state_.insert(index, p.entries);
      }
      parameters_.push_back(std::move(p));
      if (observed) {
        seen_.resize(parameters_.size() * kind_->state_fields);
        scalar_slots_.resize(parameters_.size() * kind_->scalar_fields.size());
        if (found != optimizer_.state().end()) remember(parameters_.size() - 1, *found->second);
      }
      ids.push_back(index++);
    }
    group_ids_.push_back(std::move(ids));
  }
}

void OptimizerCapture::remember(size_t i, const OptimizerParamState& state) {
  if (!kind_->observe_state) return;
  kind_->observe_state(state, &seen_[i * kind_->state_fields]);
  const Entries& entries = parameters_[i].entries;
  for (size_t k = 0; k < kind_->scalar_fields.size(); ++k) {
    ScalarSlot& slot = scalar_slots_[i * kind_->scalar_fields.size() + k];
    slot = ScalarSlot();
    auto entry = entries.find(kind_->scalar_keys[k]);
    if (entry == entries.end() || !is_float_scalar(entry->value())) continue;
    const at::Tensor& t = entry->value().toTensor();
    slot.data = t.data_ptr<float>();
    if (!t.is_inference()) slot.version = t.unsafeGetTensorImpl()->version_counter();
  }
}

bool OptimizerCapture::update_from_seen(size_t i, const OptimizerParamState& state) {
  if (!kind_->observe_state) return false;
  kind_->observe_state(state, now_.data());
  int64_t* seen = &seen_[i * kind_->state_fields];
  const size_t scalars = kind_->scalar_fields.size();
  ScalarSlot* slots = scalars ? &scalar_slots_[i * scalars] : nullptr;
  // All checked before anything is written: a change of another kind leaves it to the dict walk.
  for (size_t j = 0, k = 0; j < kind_->state_fields; ++j) {
    const bool scalar = k < scalars && kind_->scalar_fields[k] == j;
    if (now_[j] != seen[j] && !(scalar && slots[k].data)) return false;
    k += scalar;
  }
  for (size_t k = 0; k < scalars; ++k) {
    const size_t j = kind_->scalar_fields[k];
    if (now_[j] == seen[j]) continue;
    // As refresh_float_scalar: the value, and the version a deferred copy still reading it checks.
    const auto bits = static_cast<uint32_t>(now_[j]);
    std::memcpy(slots[k].data, &bits, sizeof(bits));
    if (slots[k].version.enabled()) slots[k].version.bump();
    seen[j] = now_[j];
  }
  return true;
}

C10_ALWAYS_INLINE void OptimizerCapture::prefetch(size_t i) const {
  const Parameter& p = parameters_[i];
  if (!p.has_state) return;
  // An entry is a key and a pointer; a state object a few tensors and counts.
  __builtin_prefetch(p.entry_seen);
  __builtin_prefetch(p.state_seen);
  const size_t scalars = kind_->scalar_fields.size();
  if (scalar_slots_.empty()) return;  // a kind without observe_state
  for (size_t k = 0; k < scalars; ++k) {
    const ScalarSlot& slot = scalar_slots_[i * scalars + k];
    if (!slot.data) continue;
    __builtin_prefetch(slot.data, 1);
    util::prefetch_version(slot.version, /*for_write=*/true);
  }
}

c10::IValue OptimizerCapture::capture() {
  bool fresh = false;
  if (!same_parameters()) {
    rebuild();
    fresh = true;
  }
  // The state objects are found again: a step may have created them, and a
  // restore replaces them all (a new object may even reuse an old address).
  for (size_t i = 0; i < parameters_.size() && !fresh; ++i) {
    if (i + util::kPrefetchAhead < parameters_.size()) prefetch(i + util::kPrefetchAhead);
    Parameter& p = parameters_[i];
    auto found = optimizer_.state().find(p.key);
    const bool has_state = found != optimizer_.state().end();
    if (has_state) {
      p.entry_seen = &*found;
      p.state_seen = found->second.get();
    }
    if (has_state != p.has_state) {
      rebuild();  // keeps Python's order: state entries by parameter index
      fresh = true;
    } else if (has_state && !update_from_seen(i, *found->second)) {
      bool replaced = false;
      if (!kind_->refresh_state_dict(p.entries, *found->second, replaced)) {
        p.entries = kind_->state_to_dict(*found->second);
        state_.insert_or_assign(static_cast<int64_t>(i), p.entries);
        replaced = true;
      }
      if (replaced) ++state_generation_;
      remember(i, *found->second);
    }
  }
  // Hyper-parameters may change at every step (a learning-rate schedule); groups are few.
  c10::List<IValue> groups(c10::AnyType::get());
  const auto& live_groups = optimizer_.param_groups();
  for (size_t g = 0; g < live_groups.size(); ++g) {
    Entries entry = kind_->options_to_dict(live_groups[g].options());
    entry.insert("params", group_ids_[g]);
    groups.push_back(entry);
  }
  Entries result = new_entries();
  result.insert("state", state_);
  result.insert("param_groups", groups);
  return result;
}

Commit prepare_optimizer_restore(Optimizer& optimizer, const IValue& value, bool may_alias) {
  const OptimizerKind& optimizer_kind = kind_of(optimizer);
  Reader top(value, "(top level)");
  const IValue& groups_value = top.get("param_groups");
  const IValue& state_value = top.get("state");
  if (!groups_value.isList()) top.fail("'param_groups' should be a list");
  if (!state_value.isGenericDict()) top.fail("'state' should be a dict");
  const auto saved_groups = groups_value.toListRef();
  auto& live_groups = optimizer.param_groups();
  if (saved_groups.size() != live_groups.size()) {
    top.fail("it has " + std::to_string(saved_groups.size()) + " param group(s), the optimizer has " +
             std::to_string(live_groups.size()));
  }

  // Check and convert everything first; only then replace the live state.
  std::unordered_map<int64_t, at::Tensor> param_by_id;
  std::vector<std::unique_ptr<OptimizerOptions>> new_options;
  for (size_t g = 0; g < saved_groups.size(); ++g) {
    Reader group(saved_groups[g], "param_groups[" + std::to_string(g) + "]");
    const IValue& ids = group.get("params");
    if (!ids.isList()) group.fail("'params' should be a list of ints");
    const auto& live_params = live_groups[g].params();
    if (ids.toListRef().size() != live_params.size()) {
      group.fail("it lists " + std::to_string(ids.toListRef().size()) +
                 " parameters, the optimizer's group has " + std::to_string(live_params.size()));
    }
    for (size_t i = 0; i < live_params.size(); ++i) {
      const IValue& id = ids.toListRef()[i];
      if (!id.isInt()) group.fail("'params' should be a list of ints");
      if (!param_by_id.emplace(id.toInt(), live_params[i]).second) {
        group.fail("parameter id " + std::to_string(id.toInt()) + " appears twice");
      }
    }
    auto options = live_groups[g].options().clone();
    optimizer_kind.options_from_dict(group, *options);
    new_options.push_back(std::move(options));
  }

  std::vector<std::pair<std::string, std::unique_ptr<OptimizerParamState>>> new_state;
  auto deferred = std::make_shared<std::vector<std::pair<at::Tensor, at::Tensor>>>();
  for (const auto& entry : state_value.toGenericDict()) {
    if (!entry.key().isInt()) top.fail("'state' keys should be parameter ids (ints)");
    const int64_t id = entry.key().toInt();
    auto param = param_by_id.find(id);
    if (param == param_by_id.end()) {
      top.fail("'state' has an entry for parameter id " + std::to_string(id) +
               ", which no param group lists");
    }
    StateTargets targets;
    targets.may_alias = may_alias;
    const auto live = optimizer.state().find(param_key(param->second));
    if (!may_alias && live != optimizer.state().end()) {
      targets.live = optimizer_kind.state_to_dict(*live->second);
      targets.deferred = deferred.get();
    }
    Reader reader(entry.value(), "state[" + std::to_string(id) + "]", std::move(targets));
    auto state = optimizer_kind.state_from_dict(reader, param->second);
    if (state) new_state.emplace_back(param_key(param->second), std::move(state));
  }

  auto options = std::make_shared<decltype(new_options)>(std::move(new_options));
  auto states = std::make_shared<decltype(new_state)>(std::move(new_state));
  return [&optimizer, options, states, deferred] {
    {
      torch::NoGradGuard no_grad;
      for (auto& [live, saved] : *deferred) live.copy_(saved);
    }
    auto& groups = optimizer.param_groups();
    for (size_t g = 0; g < groups.size(); ++g) groups[g].set_options(std::move((*options)[g]));
    optimizer.state().clear();
    for (auto& [key, state] : *states) optimizer.state()[key] = std::move(state);
  };
}

}  // namespace state

void load_optimizer_state_dict(Optimizer& optimizer, const IValue& value) {
  // Python's load_state_dict copies too: the caller's dict stays its own.
  state::prepare_optimizer_restore(optimizer, value, /*may_alias=*/false)();
}

void load_optimizer_state_dict(Optimizer& optimizer, IValue&& value) {
  const IValue owned = std::move(value);
  // A dict someone else still holds keeps its tensors to itself.
  state::prepare_optimizer_restore(optimizer, owned, /*may_alias=*/owned.use_count() == 1)();
}

}  // namespace autosnap
