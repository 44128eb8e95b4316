#pragma once

// What the Snapshotter tests share: configs, a small model with parameters
// and a buffer, and readers for what a run leaves in its directory.

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autosnap/config.h"

namespace autosnap {
namespace testing {

/// `directory` with the control socket off, log level warn, plus `extra` YAML.
Config make_config(const std::string& directory, const std::string& extra = "");
/// The same with the control socket on.
Config make_config_with_socket(const std::string& directory, const std::string& extra);

/// What `autosnap snapshot` does; a client-side failure (timeout) becomes {"client_error": ...}.
nlohmann::json request_snapshot(const std::string& directory, const std::string& reason);

/// Parameters (a 256×256 weight and a bias: changed by optimizer.step()) and a
/// buffer (changed during forward, like BatchNorm's running stats).
struct Model : torch::nn::Module {
  Model() {
    weight = register_parameter("weight", torch::zeros({256, 256}));
    bias = register_parameter("bias", torch::zeros({256}));
    running = register_buffer("running", torch::zeros({16}));
  }
  void set_all(float v) {
    torch::NoGradGuard no_grad;
    weight.fill_(v);
    bias.fill_(v);
    running.fill_(v);
  }
  torch::Tensor weight, bias, running;
};

/// DIR/events.jsonl, one object per line.
std::vector<nlohmann::json> read_events(const std::string& directory);
/// The same for one events file (another rank's: events.rank-00001.jsonl).
std::vector<nlohmann::json> read_events_file(const std::string& path);
int count_events(const std::string& directory, const std::string& kind);
/// Entry `name` of rank 0's shard of `step`.
c10::IValue read_entry(const std::string& directory, int64_t step, const std::string& name);

}  // namespace testing
}  // namespace autosnap
