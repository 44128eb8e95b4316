#pragma once

// A tracked module's or optimizer's state dict for snapshots, kept from one
// snapshot to the next. Building it anew (names, detached aliases, a dict per
// parameter) was most of the training thread's stall with thousands of
// tensors; now each capture walks the live objects, checks that they still
// hold the same tensors, and updates only what changes between steps (the
// optimizer's step counts and hyper-parameters). Anything else that changed
// (a parameter replaced, resized, moved to another dtype, a module added, an
// optimizer state object replaced) builds the dict again.
//
// The returned dict is updated in place by the next capture(): whoever keeps
// a capture must be done with it by then (staging copies it at once; a
// synchronous write finishes before training goes on).

#include <ATen/core/ivalue.h>
#include <c10/macros/Macros.h>

#include <string>
#include <unordered_set>
#include <vector>

#include "autosnap/torch_fwd.h"

namespace torch {
namespace optim {
class OptimizerParamState;
}  // namespace optim
}  // namespace torch

namespace autosnap {
namespace state {

struct OptimizerKind;

/// Like state_dict(module): name -> detached tensor, in Python's order.
class ModuleCapture {
 public:
  explicit ModuleCapture(const torch::nn::Module& module) : module_(module) {}
  c10::IValue capture();
  /// Captures that rebuilt the dict (the first one included).
  int64_t rebuilds() const { return rebuilds_; }
  /// The storages of the parameters (not buffers) met by the last capture().
  void parameter_storages(std::unordered_set<const void*>& out) const;
  /// Drops the last capture (and its aliases of the live storages).
  void forget();

 private:
  bool unchanged() const;

  const torch::nn::Module& module_;
  // As last captured, in walk order: the live tensors, their detached
  // aliases, whether each is a parameter, and the names of the child modules.
  std::vector<at::Tensor> live_;
  std::vector<at::Tensor> detached_;
  std::vector<bool> parameter_;
  std::vector<std::string> children_;
  c10::IValue dict_;
  int64_t rebuilds_ = 0;
};

/// Like optimizer_state_dict(optimizer).
class OptimizerCapture {
 public:
  explicit OptimizerCapture(const torch::optim::Optimizer& optimizer) : optimizer_(optimizer) {}
  c10::IValue capture();
  int64_t rebuilds() const { return rebuilds_; }
  /// Changes whenever the "state" dict of the last capture differs from the
  /// one before in more than its tensors' data: a rebuild, a parameter's state
  /// made anew, a value replaced (another tensor object, another number).
  int64_t state_generation() const { return state_generation_; }

 private:
  struct Parameter {
    at::Tensor live;
    std::string key;  // its key in optimizer.state()
    bool has_state = false;
    c10::impl::GenericDict entries{c10::StringType::get(), c10::AnyType::get()};
    // Where its entry in optimizer.state() and its state object were at the
    // last capture: only prefetched (the next capture finds them again).
    const void* entry_seen = nullptr;
    const void* state_seen = nullptr;
  };
  // A float of a captured dict's tensor of ours (a step), written in place when its value moves on.
  struct ScalarSlot {
    float* data = nullptr;  // nullptr: not one float_scalar() can take; a change rebuilds the entries
    c10::VariableVersion version;
  };
  bool same_parameters() const;
  void rebuild();
  // Notes what parameter i's state object shows (OptimizerKind::observe_state) and where its step floats are.
  void remember(size_t i, const torch::optim::OptimizerParamState& state);
  // Brings parameter i's entries up to date from what `state` shows: true where
  // that took no more than writing steps (nothing else changed since remember()).
  bool update_from_seen(size_t i, const torch::optim::OptimizerParamState& state);
  // Asks for what the capture of parameter i will read (its state entry and
  // object, its step floats and their version counters) before it is reached.
  // Forced inline: see util/prefetch.h.
  C10_ALWAYS_INLINE void prefetch(size_t i) const;

  const torch::optim::Optimizer& optimizer_;
  const OptimizerKind* kind_ = nullptr;
  std::vector<Parameter> parameters_;  // in param group order
  std::vector<c10::List<int64_t>> group_ids_;
  c10::impl::GenericDict state_{c10::IntType::get(), c10::AnyType::get()};
  // Per parameter with state, flat: kind_->state_fields observed numbers, and
  // the kind's scalar fields' slots. A capture reads the state objects and these,
  // not the captured dicts (thousands of scattered objects).
  std::vector<int64_t> seen_;
  std::vector<ScalarSlot> scalar_slots_;
  std::vector<int64_t> now_;  // scratch: what a capture sees
  int64_t rebuilds_ = 0;
  int64_t state_generation_ = 0;
};

}  // namespace state
}  // namespace autosnap
