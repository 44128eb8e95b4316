#pragma once

/// Optimizer state in PyTorch's Python layout:
///
///   {"state": {0: {"step": tensor(3.), "exp_avg": ..., ...}, 1: {...}},
///    "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), ..., "params": [0, 1]}]}
///
/// with the key names and value types of PyTorch 1.13's Python optimizers, so
/// a state saved from C++ loads in Python with `optimizer.load_state_dict(...)`
/// and the reverse. Supported: SGD, Adam, AdamW, RMSprop, Adagrad, LBFGS.

#include <ATen/core/ivalue.h>

#include <string>

#include "autosnap/export.h"
#include "autosnap/torch_fwd.h"

namespace autosnap {

/// The optimizer's state and param groups. State tensors are the live ones
/// (no copy), like Python's `Optimizer.state_dict()`.
/// Throws autosnap::Error for an optimizer type not listed above.
AUTOSNAP_API c10::impl::GenericDict optimizer_state_dict(const torch::optim::Optimizer& optimizer);

/// Replaces the optimizer's state and hyper-parameters with `state`, mapping
/// saved parameter ids to live parameters by position, as Python does.
/// Floating-point state tensors are copied to each parameter's dtype and
/// device, never aliasing `state`: into the memory of the optimizer's own
/// state tensor when it has one of that shape that nothing else shares (no
/// new memory), else into a new tensor. Everything is checked before anything
/// changes: a layout that does not fit (group count or sizes, state shapes,
/// missing keys, options LibTorch lacks such as maximize=True) throws
/// StateMismatch naming the entry.
AUTOSNAP_API void load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const c10::IValue& state);
/// The same for a value given up (`load_optimizer_state_dict(opt, take(loaded,
/// "optimizer_state_dict"))`): where no one else holds it, its state tensors
/// that fit (device, dtype) become the optimizer's without a copy.
AUTOSNAP_API void load_optimizer_state_dict(torch::optim::Optimizer& optimizer, c10::IValue&& state);

/// "SGD", "Adam", ... for a supported optimizer; throws otherwise.
AUTOSNAP_API std::string optimizer_type_name(const torch::optim::Optimizer& optimizer);

}  // namespace autosnap
