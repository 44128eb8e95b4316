#include "daemon/tracked.h"

#include <torch/csrc/jit/api/module.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdio>

#include "autosnap/errors.h"
#include "autosnap/optimizer_state.h"
#include "autosnap/samplers.h"
#include "daemon/staging.h"
#include "state/cached_capture.h"
#include "state/torchscript_state.h"
#include "store/snapshot_writer.h"

namespace autosnap {
namespace daemon {
namespace {

c10::IValue named_tensors_to_dict(const state::NamedTensors& tensors) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::TensorType::get());
  for (const auto& [name, tensor] : tensors) d.insert(name, tensor);
  return d;
}

void add_storages(const state::NamedTensors& tensors, std::unordered_set<const void*>& out) {
  for (const auto& [name, tensor] : tensors) {
    if (tensor.has_storage()) out.insert(tensor.storage().unsafeGetStorageImpl());
  }
}

// "MLPImpl" rather than "(anonymous namespace)::MLPImpl".
std::string readable_type_name(std::string name) {
  const std::string anonymous = "(anonymous namespace)::";
  for (size_t at; (at = name.find(anonymous)) != std::string::npos;) name.erase(at, anonymous.size());
  return name;
}

class ModuleState final : public TrackedState {
 public:
  explicit ModuleState(torch::nn::Module& module) : module_(module), captured_(module) {}
  std::string kind() const override { return "module " + readable_type_name(module_.name()); }
  c10::IValue capture() override { return captured_.capture(); }
  void step_only_storages(const c10::IValue&, std::unordered_set<const void*>& out) const override {
    // Parameters change only in optimizer.step(); buffers (e.g. BatchNorm
    // running stats) change during forward, so they are copied at once.
    captured_.parameter_storages(out);
  }
  int64_t step_only_generation() const override { return captured_.rebuilds(); }
  void stable_containers(const c10::IValue& captured, StableContainers& out) const override {
    // A capture that did not rebuild returns the last dict untouched.
    out.add(captured, captured_.rebuilds());
  }
  state::Commit prepare_restore(const c10::IValue& saved, bool strict, const std::string& name) override {
    LoadStateDictResult result;
    state::Commit install = state::prepare_tensor_copies(state::live_state(module_), saved, strict,
                                                         "'" + name + "' (" + kind() + ")", result,
                                                         /*may_alias=*/true);
    // The capture's aliases of the live storages would keep the read ones from being installed.
    return [this, install] {
      captured_.forget();
      install();
    };
  }

 private:
  torch::nn::Module& module_;
  state::ModuleCapture captured_;
};

class ScriptModuleState final : public TrackedState {
 public:
  // The structure copy is made now, on the training thread, so background
  // writes never read live weights: they fill it from the staged copy.
  explicit ScriptModuleState(torch::jit::Module& module) : module_(module), structure_(module.clone()) {
    structure_.to(c10::Device(c10::kCPU));
  }
  std::string kind() const override { return "TorchScript module"; }
  c10::IValue capture() override {
    ++captures_;
    return named_tensors_to_dict(state::named_state(module_));
  }
  void step_only_storages(const c10::IValue&, std::unordered_set<const void*>& out) const override {
    state::NamedTensors params;
    for (const auto& p : module_.named_parameters()) params.emplace_back(p.name, p.value);
    add_storages(params, out);
  }
  int64_t step_only_generation() const override { return captures_; }  // not cached: each capture may differ
  state::Commit prepare_restore(const c10::IValue& saved, bool strict, const std::string& name) override {
    LoadStateDictResult result;
    return state::prepare_tensor_copies(state::named_state(module_), saved, strict,
                                        "'" + name + "' (" + kind() + ")", result);
  }
  void write_extra_files(const std::string& name, const c10::IValue& staged, SnapshotWriter& writer,
                         int rank) override {
    LoadStateDictResult result;
    state::prepare_tensor_copies(state::named_state(structure_), staged, /*strict=*/true, name, result)();
    writer.write_file(torchscript_file_name(rank, name),
                      [&](WritableFile& out) { state::write_module(structure_, out); });
  }

 private:
  torch::jit::Module& module_;
  torch::jit::Module structure_;
  int64_t captures_ = 0;
};

class OptimizerState final : public TrackedState {
 public:
  explicit OptimizerState(torch::optim::Optimizer& optimizer)
      : optimizer_(optimizer), type_(optimizer_type_name(optimizer)), captured_(optimizer) {}
  std::string kind() const override { return "optimizer " + type_; }
  c10::IValue capture() override { return captured_.capture(); }
  void step_only_storages(const c10::IValue& captured, std::unordered_set<const void*>& out) const override {
    // All state tensors (moments, buffers) change only in optimizer.step().
    const auto state = captured.toGenericDict().at("state").toGenericDict();
    for (const auto& param : state) {
      for (const auto& entry : param.value().toGenericDict()) {
        const auto& v = entry.value();
        if (v.isTensor() && v.toTensor().has_storage())
          out.insert(v.toTensor().storage().unsafeGetStorageImpl());
        if (v.isList()) {
          for (const auto& e : v.toListRef()) {
            if (e.isTensor() && e.toTensor().has_storage())
              out.insert(e.toTensor().storage().unsafeGetStorageImpl());
          }
        }
      }
    }
  }
  int64_t step_only_generation() const override { return captured_.rebuilds(); }
  void stable_containers(const c10::IValue& captured, StableContainers& out) const override {
    out.add(captured.toGenericDict().at("state"), captured_.state_generation());
  }
  state::Commit prepare_restore(const c10::IValue& saved, bool, const std::string& name) override {
    try {
      return state::prepare_optimizer_restore(optimizer_, saved, /*may_alias=*/true);
    } catch (const StateMismatch& e) {
      throw StateMismatch("'" + name + "' (" + kind() + "): " + e.what());
    }
  }

 private:
  torch::optim::Optimizer& optimizer_;
  std::string type_;
  state::OptimizerCapture captured_;
};

template <typename T>
class ScalarState final : public TrackedState {
 public:
  ScalarState(T& value, std::string kind) : value_(value), kind_(std::move(kind)) {}
  std::string kind() const override { return kind_; }
  c10::IValue capture() override { return c10::IValue(value_); }
  state::Commit prepare_restore(const c10::IValue& saved, bool, const std::string& name) override {
    T restored = convert(saved, name);
    return [this, restored] { value_ = restored; };
  }

 private:
  T convert(const c10::IValue& saved, const std::string& name) const {
    auto mismatch = [&]() -> T {
      throw StateMismatch("'" + name + "' is tracked as " + kind_ + " but the snapshot holds a " +
                          saved.tagKind());
    };
    if constexpr (std::is_same_v<T, int64_t>) {
      return saved.isInt() ? saved.toInt() : mismatch();
    } else if constexpr (std::is_same_v<T, double>) {
      if (saved.isDouble()) return saved.toDouble();
      return saved.isInt() ? static_cast<double>(saved.toInt()) : mismatch();
    } else if constexpr (std::is_same_v<T, bool>) {
      return saved.isBool() ? saved.toBool() : mismatch();
    } else {
      return saved.isString() ? saved.toStringRef() : mismatch();
    }
  }

  T& value_;
  std::string kind_;
};

class TensorState final : public TrackedState {
 public:
  explicit TensorState(at::Tensor& tensor) : tensor_(tensor) {}
  std::string kind() const override { return "tensor"; }
  c10::IValue capture() override { return tensor_.defined() ? c10::IValue(tensor_.detach()) : c10::IValue(); }
  state::Commit prepare_restore(const c10::IValue& saved, bool, const std::string& name) override {
    if (saved.isNone()) return [this] { tensor_ = at::Tensor(); };
    if (!saved.isTensor()) {
      throw StateMismatch("'" + name + "' is tracked as a tensor but the snapshot holds a " +
                          saved.tagKind());
    }
    at::Tensor source = saved.toTensor();
    if (!tensor_.defined()) return [this, source] { tensor_ = source; };
    if (source.sizes() != tensor_.sizes() || source.scalar_type() != tensor_.scalar_type()) {
      throw StateMismatch("'" + name + "': the snapshot holds a " +
                          std::string(c10::toString(source.scalar_type())) + c10::str(source.sizes()) +
                          " tensor, the tracked one is " + std::string(c10::toString(tensor_.scalar_type())) +
                          c10::str(tensor_.sizes()));
    }
    return [this, source] {
      at::NoGradGuard no_grad;
      tensor_.copy_(source);
    };
  }

 private:
  at::Tensor& tensor_;
};

class CallbackState final : public TrackedState {
 public:
  CallbackState(std::function<c10::IValue()> save, std::function<void(const c10::IValue&)> load)
      : save_(std::move(save)), load_(std::move(load)) {}
  std::string kind() const override { return "user state"; }
  c10::IValue capture() override { return save_(); }
  state::Commit prepare_restore(const c10::IValue& saved, bool, const std::string&) override {
    return [this, saved] { load_(saved); };
  }

 private:
  std::function<c10::IValue()> save_;
  std::function<void(const c10::IValue&)> load_;
};

// Holds its own copy of the sampler: copies share one position, so the
// user's object may be the one handed to the loader or go out of scope.
class SamplerState final : public TrackedState {
 public:
  explicit SamplerState(const ResumableSampler& sampler) : sampler_(sampler) {}
  std::string kind() const override { return "data position"; }
  c10::IValue capture() override { return sampler_.state(); }
  state::Commit prepare_restore(const c10::IValue& saved, bool, const std::string& name) override {
    try {
      sampler_.check(saved);
    } catch (const StateMismatch& e) {
      throw StateMismatch("'" + name + "': " + e.what());
    }
    return [this, saved] { sampler_.restore(saved); };
  }
  void step_ended() override { sampler_.batch_consumed(); }
  void epoch_ended() override { sampler_.epoch_finished(); }
  bool is_data_position() const override { return true; }

 private:
  ResumableSampler sampler_;
};

}  // namespace

std::unique_ptr<TrackedState> track_module(torch::nn::Module& module) {
  return std::make_unique<ModuleState>(module);
}
std::unique_ptr<TrackedState> track_script_module(torch::jit::Module& module) {
  return std::make_unique<ScriptModuleState>(module);
}
std::unique_ptr<TrackedState> track_optimizer(torch::optim::Optimizer& optimizer) {
  return std::make_unique<OptimizerState>(optimizer);
}
std::unique_ptr<TrackedState> track_int(int64_t& value) {
  return std::make_unique<ScalarState<int64_t>>(value, "int");
}
std::unique_ptr<TrackedState> track_double(double& value) {
  return std::make_unique<ScalarState<double>>(value, "double");
}
std::unique_ptr<TrackedState> track_bool(bool& value) {
  return std::make_unique<ScalarState<bool>>(value, "bool");
}
std::unique_ptr<TrackedState> track_string(std::string& value) {
  return std::make_unique<ScalarState<std::string>>(value, "string");
}
std::unique_ptr<TrackedState> track_tensor(at::Tensor& tensor) {
  return std::make_unique<TensorState>(tensor);
}
std::unique_ptr<TrackedState> track_sampler(const ResumableSampler& sampler) {
  return std::make_unique<SamplerState>(sampler);
}
std::unique_ptr<TrackedState> track_callbacks(std::function<c10::IValue()> save,
                                              std::function<void(const c10::IValue&)> load) {
  return std::make_unique<CallbackState>(std::move(save), std::move(load));
}

std::string torchscript_file_name(int rank, const std::string& name) {
  char prefix[32];
  std::snprintf(prefix, sizeof(prefix), "rank-%05d.", rank);
  return prefix + name + ".torchscript.pt";
}

}  // namespace daemon
}  // namespace autosnap
