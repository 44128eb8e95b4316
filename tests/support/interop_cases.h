#pragma once

// The C++ side of the interop cases; tests/python/interop.py builds the same
// values in Python. Both sides save them and check what the other wrote.

#include <torch/nn/functional/activation.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/linear.h>

#include <string>
#include <utility>
#include <vector>

namespace autosnap {
namespace testing {

/// fc1 = Linear(3, 4), bn = BatchNorm1d(4), fc2 = Linear(4, 2), with the same
/// deterministic values as interop.py's Net.
struct NetImpl : torch::nn::Module {
  NetImpl();
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::relu(bn(fc1(x)))); }
  torch::nn::Linear fc1{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(Net);

/// (name, value) for every case, in interop.py's order.
std::vector<std::pair<std::string, c10::IValue>> interop_cases();

/// Empty when `got` equals `want` exactly (types, dtypes, shapes, strides,
/// values, container kinds and keys); otherwise what differs and where.
std::string describe_difference(const c10::IValue& got, const c10::IValue& want,
                                const std::string& path = "value");

}  // namespace testing
}  // namespace autosnap
