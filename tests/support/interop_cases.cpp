#include "support/interop_cases.h"

#include <torch/torch.h>

#include <sstream>

#include "autosnap/state_dict.h"
#include "autosnap/values.h"

namespace autosnap {
namespace testing {

NetImpl::NetImpl() {
  fc1 = register_module("fc1", torch::nn::Linear(3, 4));
  bn = register_module("bn", torch::nn::BatchNorm1d(4));
  fc2 = register_module("fc2", torch::nn::Linear(4, 2));
  torch::NoGradGuard no_grad;
  int64_t i = 0;
  for (const auto& item : state_dict(*this)) {
    at::Tensor p = item.value();
    if (p.is_floating_point()) {
      p.copy_(torch::arange(p.numel(), p.options()).reshape(p.sizes()) / 10 - static_cast<double>(i));
    } else {
      p.fill_(7);
    }
    ++i;
  }
}

namespace {

c10::IValue dtype_cases() {
  auto base = torch::arange(6).reshape({2, 3});
  auto d = dict();
  const std::vector<std::pair<std::string, at::ScalarType>> types = {
      {"float16", at::kHalf},      {"float32", at::kFloat}, {"float64", at::kDouble},
      {"bfloat16", at::kBFloat16}, {"int8", at::kChar},     {"int16", at::kShort},
      {"int32", at::kInt},         {"int64", at::kLong},    {"uint8", at::kByte}};
  for (const auto& [name, type] : types)
    d.insert(name, type == at::kByte ? base.to(type) : (base - 2).to(type));
  d.insert("bool", (base % 2) == 1);
  d.insert("complex64", torch::complex(base.to(at::kFloat), -base.to(at::kFloat)));
  d.insert("complex128", torch::complex(base.to(at::kDouble) / 2, base.to(at::kDouble)));
  return d;
}

c10::IValue layout_cases() {
  auto a = torch::arange(24, torch::kFloat32).reshape({4, 6});
  return dict({{"transposed", a.t()},
               {"strided", a.slice(1, 0, 6, 2)},
               {"offset_view", a.slice(0, 1, 3).slice(1, 2, 5)},
               {"zero_size", torch::empty({0, 3})},
               {"scalar", torch::tensor(3.5f)},
               {"expanded", torch::arange(3.0, torch::kFloat32).reshape({3, 1}).expand({3, 4})}});
}

}  // namespace

std::vector<std::pair<std::string, c10::IValue>> interop_cases() {
  auto x = torch::arange(4, torch::kInt64).reshape({2, 2});
  auto y = torch::arange(9, torch::kFloat64).reshape({3, 3}) * 1.5;
  auto shared = torch::arange(10, torch::kFloat32);
  Net net;
  c10::impl::GenericDict int_keys(c10::IntType::get(), c10::AnyType::get());
  int_keys.insert(0, x);
  int_keys.insert(7, "seven");
  auto scalars = dict({{"int", 42},
                       {"neg", -7},
                       {"big", int64_t{1} << 40},
                       {"float", 0.25},
                       {"true", true},
                       {"false", false},
                       {"none", c10::IValue()},
                       {"text", "h\u00e9llo \u4e16\u754c"},
                       {"nested", dict({{"list", list({1, 2.5, "x", c10::IValue(), list({true})})},
                                        {"tuple", tuple({1, tuple({2, 3})})}})},
                       {"int_keys", int_keys}});
  return {
      {"tensor", torch::arange(12, torch::kFloat32).reshape({3, 4})},
      {"list", list({x, y})},
      {"tuple", tuple({x, y})},
      {"dict", dict({{"x", x}, {"y", y}})},
      {"one_entry", dict({{"only", x}})},
      {"shared", list({shared, shared.slice(0, 0, 5)})},
      {"cloned", list({shared, shared.slice(0, 0, 5).clone()})},
      {"dtypes", dtype_cases()},
      {"layouts", layout_cases()},
      {"scalars", scalars},
      {"state_dict", state_dict(*net)},
      {"checkpoint", dict({{"epoch", 5}, {"loss", 0.125}, {"model_state_dict", state_dict(*net)}})},
  };
}

std::string describe_difference(const c10::IValue& got, const c10::IValue& want, const std::string& path) {
  std::ostringstream out;
  auto kind = [](const c10::IValue& v) {
    if (v.isList()) return std::string("list");
    return std::string(v.tagKind());
  };
  if (kind(got) != kind(want)) {
    out << path << ": got a " << kind(got) << ", want a " << kind(want);
    return out.str();
  }
  if (want.isTensor()) {
    const auto& g = got.toTensor();
    const auto& w = want.toTensor();
    if (g.scalar_type() != w.scalar_type() || g.sizes() != w.sizes()) {
      out << path << ": got " << g.scalar_type() << g.sizes() << ", want " << w.scalar_type() << w.sizes();
    } else if (g.strides() != w.strides() || g.storage_offset() != w.storage_offset()) {
      out << path << ": got stride " << g.strides() << " offset " << g.storage_offset() << ", want stride "
          << w.strides() << " offset " << w.storage_offset();
    } else if (!torch::equal(g, w)) {
      out << path << ": values differ:\n got " << g << "\n want " << w;
    }
    return out.str();
  }
  if (want.isGenericDict()) {
    auto g = got.toGenericDict();
    auto w = want.toGenericDict();
    if (g.size() != w.size()) {
      out << path << ": got " << g.size() << " keys, want " << w.size();
      return out.str();
    }
    auto gi = g.begin();
    for (auto wi = w.begin(); wi != w.end(); ++wi, ++gi) {
      const std::string key =
          wi->key().isString() ? "'" + wi->key().toStringRef() + "'" : std::to_string(wi->key().toInt());
      if (gi->key() != wi->key()) {
        out << path << ": key " << gi->key() << " where " << key << " was expected";
        return out.str();
      }
      auto sub = describe_difference(gi->value(), wi->value(), path + "[" + key + "]");
      if (!sub.empty()) return sub;
    }
    return "";
  }
  if (want.isList() || want.isTuple()) {
    std::vector<c10::IValue> g = want.isList() ? got.toList().vec() : got.toTupleRef().elements().vec();
    std::vector<c10::IValue> w = want.isList() ? want.toList().vec() : want.toTupleRef().elements().vec();
    if (g.size() != w.size()) {
      out << path << ": got " << g.size() << " items, want " << w.size();
      return out.str();
    }
    for (size_t i = 0; i < w.size(); ++i) {
      auto sub = describe_difference(g[i], w[i], path + "[" + std::to_string(i) + "]");
      if (!sub.empty()) return sub;
    }
    return "";
  }
  bool same = false;
  if (want.isNone())
    same = true;
  else if (want.isInt())
    same = got.toInt() == want.toInt();
  else if (want.isDouble())
    same = got.toDouble() == want.toDouble();
  else if (want.isBool())
    same = got.toBool() == want.toBool();
  else if (want.isString())
    same = got.toStringRef() == want.toStringRef();
  else if (want.isComplexDouble())
    same = got.toComplexDouble() == want.toComplexDouble();
  else if (want.isDevice())
    same = got.toDevice() == want.toDevice();
  if (!same) out << path << ": got " << got << ", want " << want;
  return out.str();
}

}  // namespace testing
}  // namespace autosnap
