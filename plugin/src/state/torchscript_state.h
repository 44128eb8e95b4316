#pragma once

// Internal TorchScript helpers shared by torchscript.cpp and the snapshotter.

#include "autosnap/fs.h"
#include "autosnap/torch_fwd.h"
#include "state/restore_plan.h"

namespace autosnap {
namespace state {

/// Parameters and buffers of a scripted module in Python's state_dict order.
NamedTensors named_state(const torch::jit::Module& module);

/// Writes the TorchScript archive (structure + weights) into `out`.
void write_module(const torch::jit::Module& module, WritableFile& out);

}  // namespace state
}  // namespace autosnap
