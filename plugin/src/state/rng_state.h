#pragma once

// Random generator states: the default CPU generator and, when CUDA is
// present, each device's default generator. The CPU state is the same uint8
// tensor Python's torch.get_rng_state() returns.

#include <ATen/core/ivalue.h>

#include "state/restore_plan.h"

namespace autosnap {
namespace state {

/// {"cpu": uint8 tensor, "cuda": [uint8 tensor per device]}
c10::IValue capture_rng_state();

/// Checks a captured state; the commit installs it. CUDA states are restored
/// for the devices present in both the snapshot and this process.
Commit prepare_rng_restore(const c10::IValue& saved);

}  // namespace state
}  // namespace autosnap
