// Conversion between LibTorch's optimizer state classes and the Python
// optimizers' state_dict layout (PyTorch 1.13 key names and value types).
#include "autosnap/optimizer_state.h"

#include <ATen/ops/scalar_tensor.h>
#include <c10/util/Type.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/lbfgs.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <functional>
#include <typeinfo>

#include "autosnap/errors.h"
#include "state/restore_plan.h"

namespace autosnap {
namespace {

using c10::IValue;
using torch::optim::Optimizer;
using torch::optim::OptimizerOptions;
using torch::optim::OptimizerParamState;
using Entries = c10::impl::GenericDict;

Entries new_entries() { return Entries(c10::StringType::get(), c10::AnyType::get()); }

enum class Kind { kSGD, kAdam, kAdamW, kRMSprop, kAdagrad, kLBFGS };

Kind kind_of(const Optimizer& optimizer) {
  if (dynamic_cast<const torch::optim::SGD*>(&optimizer)) return Kind::kSGD;
  if (dynamic_cast<const torch::optim::Adam*>(&optimizer)) return Kind::kAdam;
  if (dynamic_cast<const torch::optim::AdamW*>(&optimizer)) return Kind::kAdamW;
  if (dynamic_cast<const torch::optim::RMSprop*>(&optimizer)) return Kind::kRMSprop;
  if (dynamic_cast<const torch::optim::Adagrad*>(&optimizer)) return Kind::kAdagrad;
  if (dynamic_cast<const torch::optim::LBFGS*>(&optimizer)) return Kind::kLBFGS;
  throw Error("optimizer type " + c10::demangle(typeid(optimizer).name()) +
              " is not supported; supported are SGD, Adam, AdamW, RMSprop, Adagrad and LBFGS");
}

std::string param_key(const at::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

// Python 1.13 keeps Adam's and Adagrad's step as a float32 scalar tensor.
IValue step_tensor(int64_t step) { return at::scalar_tensor(static_cast<double>(step), at::kFloat); }
IValue tensor_or_none(const at::Tensor& t) { return t.defined() ? IValue(t) : IValue(); }

// ---- reading a Python-layout dict, with errors that name the entry ----
class Reader {
 public:
  Reader(const IValue& value, std::string where) : where_(std::move(where)) {
    if (!value.isGenericDict()) fail(std::string("expected a dict, got ") + value.tagKind());
    dict_ = value.toGenericDict();
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw StateMismatch("optimizer state " + where_ + ": " + what);
  }
  bool has(const std::string& key) const { return dict_.contains(key); }
  const IValue& get(const std::string& key) const {
    auto it = dict_.find(key);
    if (it == dict_.end()) fail("'" + key + "' is missing");
    return it->value();
  }
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
  // A state tensor, copied onto the parameter's device (and dtype, if floating).
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
      out.push_back(cast_like(e.toTensor(), param, key));
    }
    return out;
  }
  void forbid_true(const std::string& key) const {
    if (boolean(key, false)) fail("'" + key + "' is True, which LibTorch's optimizer does not support");
  }
  const std::string& where() const { return where_; }

 private:
  at::Tensor cast_like(const at::Tensor& t, const at::Tensor& param, const std::string& key) const {
    if (t.is_floating_point() && param.is_floating_point()) {
      return t.to(param.device(), param.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
    }
    (void)key;
    return t.to(param.device(), t.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
  }

  c10::impl::GenericDict dict_{c10::AnyType::get(), c10::AnyType::get()};
  std::string where_;
};

void require_shape(const Reader& r, const std::string& key, const at::Tensor& t, const at::Tensor& param) {
  if (t.defined() && t.sizes() != param.sizes()) {
    r.fail("'" + key + "' has shape " + c10::str(t.sizes()) + " but the parameter has shape " +
           c10::str(param.sizes()));
  }
}

// ---- per-optimizer conversions ----
struct Codec {
  std::function<Entries(const OptimizerOptions&)> options_to_dict;
  std::function<void(const Reader&, OptimizerOptions&)> options_from_dict;
  std::function<Entries(const OptimizerParamState&)> state_to_dict;
  // nullptr: the saved entry carries no state LibTorch keeps (e.g. SGD's None buffer).
  std::function<std::unique_ptr<OptimizerParamState>(const Reader&, const at::Tensor&)> state_from_dict;
};

template <typename Options, typename State>
Codec make_codec(std::function<void(const Options&, Entries&)> write_options,
                 std::function<void(const Reader&, Options&)> read_options,
                 std::function<void(const State&, Entries&)> write_state,
                 std::function<bool(const Reader&, const at::Tensor&, State&)> read_state) {
  Codec codec;
  codec.options_to_dict = [write_options](const OptimizerOptions& o) {
    Entries d = new_entries();
    write_options(static_cast<const Options&>(o), d);
    return d;
  };
  codec.options_from_dict = [read_options](const Reader& r, OptimizerOptions& o) {
    read_options(r, static_cast<Options&>(o));
  };
  codec.state_to_dict = [write_state](const OptimizerParamState& s) {
    Entries d = new_entries();
    write_state(static_cast<const State&>(s), d);
    return d;
  };
  codec.state_from_dict = [read_state](const Reader& r, const at::Tensor& param) {
    auto state = std::make_unique<State>();
    if (!read_state(r, param, *state)) return std::unique_ptr<OptimizerParamState>();
    return std::unique_ptr<OptimizerParamState>(std::move(state));
  };
  return codec;
}

IValue betas_tuple(const std::tuple<double, double>& betas) {
  return c10::ivalue::Tuple::create({std::get<0>(betas), std::get<1>(betas)});
}
std::tuple<double, double> read_betas(const Reader& r) {
  const IValue& v = r.get("betas");
  if (v.isTuple() && v.toTupleRef().elements().size() == 2) {
    const auto& e = v.toTupleRef().elements();
    if ((e[0].isDouble() || e[0].isInt()) && (e[1].isDouble() || e[1].isInt())) {
      return {e[0].isDouble() ? e[0].toDouble() : e[0].toInt(), e[1].isDouble() ? e[1].toDouble() : e[1].toInt()};
    }
  }
  if (v.isList() && v.toListRef().size() == 2) {
    const auto& e = v.toListRef();
    if ((e[0].isDouble() || e[0].isInt()) && (e[1].isDouble() || e[1].isInt())) {
      return {e[0].isDouble() ? e[0].toDouble() : e[0].toInt(), e[1].isDouble() ? e[1].toDouble() : e[1].toInt()};
    }
  }
  r.fail("'betas' should be a pair of numbers");
}

template <typename State>
void write_adam_state(const State& s, Entries& d) {
  d.insert("step", step_tensor(s.step()));
  d.insert("exp_avg", s.exp_avg());
  d.insert("exp_avg_sq", s.exp_avg_sq());
  if (s.max_exp_avg_sq().defined()) d.insert("max_exp_avg_sq", s.max_exp_avg_sq());
}
template <typename State>
bool read_adam_state(const Reader& r, const at::Tensor& p, State& s) {
  s.step(r.integer("step"));
  s.exp_avg(r.tensor("exp_avg", p));
  s.exp_avg_sq(r.tensor("exp_avg_sq", p));
  s.max_exp_avg_sq(r.tensor("max_exp_avg_sq", p, /*optional=*/true));
  require_shape(r, "exp_avg", s.exp_avg(), p);
  require_shape(r, "exp_avg_sq", s.exp_avg_sq(), p);
  require_shape(r, "max_exp_avg_sq", s.max_exp_avg_sq(), p);
  return true;
}

const Codec& codec_for(Kind kind) {
  using namespace torch::optim;
  static const Codec sgd = make_codec<SGDOptions, SGDParamState>(
      [](const SGDOptions& o, Entries& d) {
        d.insert("lr", o.lr());
        d.insert("momentum", o.momentum());
        d.insert("dampening", o.dampening());
        d.insert("weight_decay", o.weight_decay());
        d.insert("nesterov", o.nesterov());
        d.insert("maximize", false);
        d.insert("foreach", IValue());
        d.insert("differentiable", false);
      },
      [](const Reader& r, SGDOptions& o) {
        o.lr(r.number("lr")).momentum(r.number("momentum")).dampening(r.number("dampening"));
        o.weight_decay(r.number("weight_decay")).nesterov(r.boolean("nesterov", false));
        r.forbid_true("maximize");
      },
      [](const SGDParamState& s, Entries& d) { d.insert("momentum_buffer", tensor_or_none(s.momentum_buffer())); },
      [](const Reader& r, const at::Tensor& p, SGDParamState& s) {
        // Python keeps None buffers (momentum 0, or no grad yet); LibTorch keeps no entry.
        s.momentum_buffer(r.tensor("momentum_buffer", p, /*optional=*/true));
        require_shape(r, "momentum_buffer", s.momentum_buffer(), p);
        return s.momentum_buffer().defined();
      });
  static const Codec adam = make_codec<AdamOptions, AdamParamState>(
      [](const AdamOptions& o, Entries& d) {
        d.insert("lr", o.lr());
        d.insert("betas", betas_tuple(o.betas()));
        d.insert("eps", o.eps());
        d.insert("weight_decay", o.weight_decay());
        d.insert("amsgrad", o.amsgrad());
        d.insert("maximize", false);
        d.insert("foreach", IValue());
        d.insert("capturable", false);
        d.insert("differentiable", false);
        d.insert("fused", false);
      },
      [](const Reader& r, AdamOptions& o) {
        o.lr(r.number("lr")).betas(read_betas(r)).eps(r.number("eps"));
        o.weight_decay(r.number("weight_decay")).amsgrad(r.boolean("amsgrad", false));
        r.forbid_true("maximize");
      },
      write_adam_state<AdamParamState>, read_adam_state<AdamParamState>);
  static const Codec adamw = make_codec<AdamWOptions, AdamWParamState>(
      [](const AdamWOptions& o, Entries& d) {
        d.insert("lr", o.lr());
        d.insert("betas", betas_tuple(o.betas()));
        d.insert("eps", o.eps());
        d.insert("weight_decay", o.weight_decay());
        d.insert("amsgrad", o.amsgrad());
        d.insert("foreach", IValue());
        d.insert("maximize", false);
        d.insert("capturable", false);
      },
      [](const Reader& r, AdamWOptions& o) {
        o.lr(r.number("lr")).betas(read_betas(r)).eps(r.number("eps"));
        o.weight_decay(r.number("weight_decay")).amsgrad(r.boolean("amsgrad", false));
        r.forbid_true("maximize");
      },
      write_adam_state<AdamWParamState>, read_adam_state<AdamWParamState>);
  static const Codec rmsprop = make_codec<RMSpropOptions, RMSpropParamState>(
      [](const RMSpropOptions& o, Entries& d) {
        d.insert("lr", o.lr());
        d.insert("momentum", o.momentum());
        d.insert("alpha", o.alpha());
        d.insert("eps", o.eps());
        d.insert("centered", o.centered());
        d.insert("weight_decay", o.weight_decay());
        d.insert("foreach", IValue());
        d.insert("maximize", false);
        d.insert("differentiable", false);
      },
      [](const Reader& r, RMSpropOptions& o) {
        o.lr(r.number("lr")).momentum(r.number("momentum")).alpha(r.number("alpha")).eps(r.number("eps"));
        o.centered(r.boolean("centered", false)).weight_decay(r.number("weight_decay"));
        r.forbid_true("maximize");
      },
      [](const RMSpropParamState& s, Entries& d) {
        d.insert("step", s.step());  // a plain int in Python's RMSprop
        d.insert("square_avg", s.square_avg());
        if (s.momentum_buffer().defined()) d.insert("momentum_buffer", s.momentum_buffer());
        if (s.grad_avg().defined()) d.insert("grad_avg", s.grad_avg());
      },
      [](const Reader& r, const at::Tensor& p, RMSpropParamState& s) {
        s.step(r.integer("step"));
        s.square_avg(r.tensor("square_avg", p));
        s.momentum_buffer(r.tensor("momentum_buffer", p, /*optional=*/true));
        s.grad_avg(r.tensor("grad_avg", p, /*optional=*/true));
        require_shape(r, "square_avg", s.square_avg(), p);
        require_shape(r, "momentum_buffer", s.momentum_buffer(), p);
        require_shape(r, "grad_avg", s.grad_avg(), p);
        return true;
      });
  static const Codec adagrad = make_codec<AdagradOptions, AdagradParamState>(
      [](const AdagradOptions& o, Entries& d) {
        d.insert("lr", o.lr());
        d.insert("lr_decay", o.lr_decay());
        d.insert("eps", o.eps());
        d.insert("weight_decay", o.weight_decay());
        d.insert("initial_accumulator_value", o.initial_accumulator_value());
        d.insert("foreach", IValue());
        d.insert("maximize", false);
      },
      [](const Reader& r, AdagradOptions& o) {
        o.lr(r.number("lr")).lr_decay(r.number("lr_decay")).eps(r.number("eps"));
        o.weight_decay(r.number("weight_decay")).initial_accumulator_value(r.number("initial_accumulator_value"));
        r.forbid_true("maximize");
      },
      [](const AdagradParamState& s, Entries& d) {
        d.insert("step", step_tensor(s.step()));
        d.insert("sum", s.sum());
      },
      [](const Reader& r, const at::Tensor& p, AdagradParamState& s) {
        s.step(r.integer("step"));
        s.sum(r.tensor("sum", p));
        require_shape(r, "sum", s.sum(), p);
        return true;
      });
  static const Codec lbfgs = make_codec<LBFGSOptions, LBFGSParamState>(
      [](const LBFGSOptions& o, Entries& d) {
        d.insert("lr", o.lr());
        d.insert("max_iter", o.max_iter());
        d.insert("max_eval", o.max_eval() ? IValue(*o.max_eval()) : IValue());
        d.insert("tolerance_grad", o.tolerance_grad());
        d.insert("tolerance_change", o.tolerance_change());
        d.insert("history_size", o.history_size());
        d.insert("line_search_fn", o.line_search_fn() ? IValue(*o.line_search_fn()) : IValue());
      },
      [](const Reader& r, LBFGSOptions& o) {
        o.lr(r.number("lr")).max_iter(r.integer("max_iter"));
        o.max_eval(r.get("max_eval").isNone() ? c10::optional<int64_t>() : r.integer("max_eval"));
        o.tolerance_grad(r.number("tolerance_grad")).tolerance_change(r.number("tolerance_change"));
        o.history_size(r.integer("history_size"));
        const IValue& search = r.get("line_search_fn");
        if (!search.isNone() && !search.isString()) r.fail("'line_search_fn' should be None or a string");
        o.line_search_fn(search.isNone() ? c10::optional<std::string>() : search.toStringRef());
      },
      [](const LBFGSParamState& s, Entries& d) {
        auto to_list = [](const auto& tensors) {
          c10::List<IValue> list(c10::AnyType::get());
          for (const auto& t : tensors) list.push_back(tensor_or_none(t));
          return list;
        };
        d.insert("func_evals", s.func_evals());
        d.insert("n_iter", s.n_iter());
        if (s.al()) d.insert("al", to_list(*s.al()));
        d.insert("d", tensor_or_none(s.d()));
        d.insert("t", s.t());
        d.insert("old_dirs", to_list(s.old_dirs()));
        d.insert("old_stps", to_list(s.old_stps()));
        d.insert("ro", to_list(s.ro()));
        d.insert("H_diag", tensor_or_none(s.H_diag()));
        d.insert("prev_flat_grad", tensor_or_none(s.prev_flat_grad()));
        d.insert("prev_loss", s.prev_loss());
      },
      [](const Reader& r, const at::Tensor& p, LBFGSParamState& s) {
        // LBFGS keeps one flat state for all parameters, stored under the first one.
        s.func_evals(r.integer("func_evals")).n_iter(r.integer("n_iter"));
        s.t(r.number("t")).prev_loss(r.number("prev_loss"));
        s.d(r.tensor("d", p, true)).H_diag(r.tensor("H_diag", p, true));
        s.prev_flat_grad(r.tensor("prev_flat_grad", p, true));
        s.old_dirs(r.tensor_list("old_dirs", p)).old_stps(r.tensor_list("old_stps", p));
        s.ro(r.tensor_list("ro", p));
        if (r.has("al") && !r.get("al").isNone()) {
          const IValue& al = r.get("al");
          if (!al.isList()) r.fail("'al' should be a list");
          std::vector<at::Tensor> values;
          for (const IValue& e : al.toListRef()) {
            if (e.isNone()) {
              values.emplace_back();
            } else if (e.isTensor()) {
              values.push_back(e.toTensor().to(p.device(), p.scalar_type(), false, true));
            } else {
              r.fail("'al' should hold tensors or None");
            }
          }
          s.al(std::move(values));
        }
        return true;
      });
  switch (kind) {
    case Kind::kSGD: return sgd;
    case Kind::kAdam: return adam;
    case Kind::kAdamW: return adamw;
    case Kind::kRMSprop: return rmsprop;
    case Kind::kAdagrad: return adagrad;
    case Kind::kLBFGS: return lbfgs;
  }
  throw Error("unknown optimizer kind");
}

}  // namespace

std::string optimizer_type_name(const Optimizer& optimizer) {
  switch (kind_of(optimizer)) {
    case Kind::kSGD: return "SGD";
    case Kind::kAdam: return "Adam";
    case Kind::kAdamW: return "AdamW";
    case Kind::kRMSprop: return "RMSprop";
    case Kind::kAdagrad: return "Adagrad";
    case Kind::kLBFGS: return "LBFGS";
  }
  return "?";
}

c10::impl::GenericDict optimizer_state_dict(const Optimizer& optimizer) {
  const Codec& codec = codec_for(kind_of(optimizer));
  c10::impl::GenericDict state(c10::IntType::get(), c10::AnyType::get());
  c10::List<IValue> groups(c10::AnyType::get());
  int64_t index = 0;
  for (const auto& group : optimizer.param_groups()) {
    Entries entry = codec.options_to_dict(group.options());
    c10::List<int64_t> ids;
    for (const auto& param : group.params()) {
      auto found = optimizer.state().find(param_key(param));
      if (found != optimizer.state().end()) state.insert(index, codec.state_to_dict(*found->second));
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

Commit prepare_optimizer_restore(Optimizer& optimizer, const IValue& value) {
  const Codec& codec = codec_for(kind_of(optimizer));
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
      group.fail("it lists " + std::to_string(ids.toListRef().size()) + " parameters, the optimizer's group has " +
                 std::to_string(live_params.size()));
    }
    for (size_t i = 0; i < live_params.size(); ++i) {
      const IValue& id = ids.toListRef()[i];
      if (!id.isInt()) group.fail("'params' should be a list of ints");
      if (!param_by_id.emplace(id.toInt(), live_params[i]).second) {
        group.fail("parameter id " + std::to_string(id.toInt()) + " appears twice");
      }
    }
    auto options = live_groups[g].options().clone();
    codec.options_from_dict(group, *options);
    new_options.push_back(std::move(options));
  }

  std::vector<std::pair<std::string, std::unique_ptr<OptimizerParamState>>> new_state;
  for (const auto& entry : state_value.toGenericDict()) {
    if (!entry.key().isInt()) top.fail("'state' keys should be parameter ids (ints)");
    const int64_t id = entry.key().toInt();
    auto param = param_by_id.find(id);
    if (param == param_by_id.end()) {
      top.fail("'state' has an entry for parameter id " + std::to_string(id) + ", which no param group lists");
    }
    Reader reader(entry.value(), "state[" + std::to_string(id) + "]");
    auto state = codec.state_from_dict(reader, param->second);
    if (state) new_state.emplace_back(param_key(param->second), std::move(state));
  }

  auto options = std::make_shared<decltype(new_options)>(std::move(new_options));
  auto states = std::make_shared<decltype(new_state)>(std::move(new_state));
  return [&optimizer, options, states] {
    auto& groups = optimizer.param_groups();
    for (size_t g = 0; g < groups.size(); ++g) groups[g].set_options(std::move((*options)[g]));
    optimizer.state().clear();
    for (auto& [key, state] : *states) optimizer.state()[key] = std::move(state);
  };
}

}  // namespace state

void load_optimizer_state_dict(Optimizer& optimizer, const IValue& value) {
  state::prepare_optimizer_restore(optimizer, value)();
}


}  // namespace autosnap
