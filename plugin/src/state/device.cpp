#include "autosnap/device.h"

#include <torch/cuda.h>

#include "autosnap/errors.h"

namespace autosnap {

c10::Device resolve_device(const std::string& spec, const std::string& what) {
  const bool plausible = spec == "cpu" || spec == "cuda" || spec.rfind("cuda:", 0) == 0;
  if (!plausible) {
    throw Error(what + " '" + spec + "' is not supported: expected cpu, cuda or cuda:N");
  }
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(spec);
  } catch (const c10::Error&) {
    throw Error(what + " '" + spec + "' is not a valid device: expected cpu, cuda or cuda:N");
  }
  check_device_available(device, what);
  return device;
}

void check_device_available(const c10::Device& device, const std::string& what) {
  if (device.is_cpu()) return;
  if (!device.is_cuda()) {
    throw Error(what + " '" + device.str() + "' is not supported: expected cpu, cuda or cuda:N");
  }
  if (!torch::cuda::is_available()) {
    throw Error(what + " '" + device.str() +
                "' cannot be used: CUDA is not available (this LibTorch is built without CUDA, "
                "or no GPU is visible to the process)");
  }
  const auto count = static_cast<int64_t>(torch::cuda::device_count());
  if (device.has_index() && device.index() >= count) {
    throw Error(what + " '" + device.str() + "' does not exist: this process sees " + std::to_string(count) +
                " CUDA device(s)");
  }
}

}  // namespace autosnap
