#include "state/rng_state.h"

#include <ATen/Context.h>
#include <torch/cuda.h>

#include <mutex>

#include "autosnap/errors.h"
#include "autosnap/values.h"
#include "state/saved_dict.h"

namespace autosnap {
namespace state {
namespace {

at::Tensor generator_state(const c10::Device& device) {
  auto generator = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void set_generator_state(const c10::Device& device, const at::Tensor& state) {
  auto generator = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

bool is_state_tensor(const c10::IValue& v) {
  return v.isTensor() && v.toTensor().scalar_type() == at::kByte && v.toTensor().dim() == 1;
}

}  // namespace

c10::IValue capture_rng_state() {
  auto cuda = list();
  const auto devices = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  for (size_t i = 0; i < devices; ++i) {
    cuda.push_back(generator_state(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(i))));
  }
  return dict({{"cpu", generator_state(c10::Device(c10::kCPU))}, {"cuda", cuda}});
}

Commit prepare_rng_restore(const c10::IValue& saved) {
  const SavedDict d(saved, "rng_state");
  const c10::IValue& cpu = d.get("cpu");
  if (!is_state_tensor(cpu)) d.fail("'cpu' should be a uint8 generator state tensor");
  std::vector<at::Tensor> cuda;
  if (d.has("cuda") && d.get("cuda").isList()) {
    for (const auto& v : d.get("cuda").toListRef()) {
      if (!is_state_tensor(v)) d.fail("'cuda' should hold uint8 generator state tensors");
      cuda.push_back(v.toTensor().cpu());
    }
  }
  at::Tensor cpu_state = cpu.toTensor().cpu().contiguous();
  return [cpu_state, cuda] {
    set_generator_state(c10::Device(c10::kCPU), cpu_state);
    const auto devices = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
    for (size_t i = 0; i < std::min(devices, cuda.size()); ++i) {
      set_generator_state(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(i)), cuda[i]);
    }
  };
}

}  // namespace state
}  // namespace autosnap
