#pragma once

// Two-phase restores: `prepare_*` checks saved state against live objects
// and throws StateMismatch without touching anything; the returned Commit
// then copies it in. The snapshotter prepares every tracked object first
// and commits only when all of them fit, so a mismatch never leaves a
// half-restored training state.

#include <ATen/core/ivalue.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "autosnap/state_dict.h"
#include "autosnap/torch_fwd.h"

namespace autosnap {
namespace state {

using Commit = std::function<void()>;
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

/// Parameters and buffers in Python's state_dict order (module's own
/// parameters, own buffers, then each child), detached, without copies.
NamedTensors named_state(const torch::nn::Module& module);

/// The same tensors themselves (not detached), for restores into them.
NamedTensors live_state(const torch::nn::Module& module);

/// Checks `saved` (name -> tensor dict) against `live`. Fills `result`; with
/// `strict` any problem throws StateMismatch whose text is
/// result.message(owner). The commit copies every entry that fits; with
/// `may_alias` (no one else holds `saved`) a saved tensor alone on its storage
/// becomes the storage of a live tensor alone on its own instead (no copy).
Commit prepare_tensor_copies(const NamedTensors& live, const c10::IValue& saved, bool strict,
                             const std::string& owner, LoadStateDictResult& result, bool may_alias = false);

/// Converts and checks a Python-layout optimizer state; the commit installs it.
/// With `may_alias` (`saved` is a freshly read shard no one else holds) its
/// tensors become the state without a copy where they already fit.
Commit prepare_optimizer_restore(torch::optim::Optimizer& optimizer, const c10::IValue& saved,
                                 bool may_alias);

}  // namespace state
}  // namespace autosnap
