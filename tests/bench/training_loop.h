#pragma once

// The benchmarks' training loop: an MLP of 4 x 2048x2048 with Adam (201 MB of
// state), one fixed batch, the snapshotter's hooks where a training loop calls them.

#include <torch/torch.h>

#include <cstdint>
#include <memory>

#include "autosnap/autosnap.h"

namespace bench {

class TrainingLoop {
 public:
  explicit TrainingLoop(int64_t batch) {
    torch::manual_seed(0);
    for (int i = 0; i < 4; ++i) {
      model->push_back(torch::nn::Linear(2048, 2048));
      model->push_back(torch::nn::ReLU());
    }
    optimizer = std::make_unique<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(1e-4));
    set_batch(batch);
  }

  /// Another batch size from now on (a step time that changes mid-run).
  void set_batch(int64_t batch) {
    input = torch::randn({batch, 2048});
    target = torch::randn({batch, 2048});
  }

  void track(autosnap::Snapshotter& snap) {
    snap.track("model", *model);
    snap.track("optimizer", *optimizer);
  }

  /// Steps first .. first + steps - 1; `snap` (may be null) gets its hooks.
  void train(autosnap::Snapshotter* snap, int64_t first, int64_t steps) {
    for (int64_t step = first; step < first + steps; ++step) {
      optimizer->zero_grad();
      auto loss = torch::mse_loss(model->forward(input), target);
      loss.backward();
      if (snap) snap->before_optimizer_step();
      optimizer->step();
      if (snap) snap->on_step_end(step);
    }
  }

  torch::nn::Sequential model;
  std::unique_ptr<torch::optim::Adam> optimizer;
  torch::Tensor input, target;
};

}  // namespace bench
