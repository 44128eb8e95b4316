#pragma once

/// The LibTorch classes autosnap's headers name by reference only, declared
/// so that those headers need not include <torch/torch.h> (~20 s per
/// translation unit to compile).

namespace torch {
namespace nn {
class Module;
template <typename Contained>
class ModuleHolder;
}  // namespace nn
namespace optim {
class Optimizer;
}  // namespace optim
namespace jit {
struct Module;
}  // namespace jit
}  // namespace torch
