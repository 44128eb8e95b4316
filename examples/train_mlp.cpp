// A deterministic regression MLP on synthetic data, with automatic snapshots.
//
//   train_mlp --config config/autosnap.yaml --steps 2000 --out final.pt
//
// Kill it at any moment and run the same command again: it resumes from the
// newest valid snapshot and ends with bitwise the same model and optimizer as
// a run that was never interrupted. Without --config (and AUTOSNAP_CONFIG) it
// trains without snapshots.
#include <autosnap/autosnap.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>
#include "example_errors.h"

#include <chrono>
#include <iomanip>
#include <iostream>
#include <thread>

namespace {

struct MLPImpl : torch::nn::Module {
  MLPImpl(int64_t input, int64_t hidden, int64_t output)
      : fc1(register_module("fc1", torch::nn::Linear(input, hidden))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, output))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(MLP);

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train a small MLP on synthetic data with automatic snapshots."};
  std::string config_path, out_path;
  int64_t steps = 1000, input = 16, hidden = 64, output = 4, batch = 32, steps_per_epoch = 50, log_every = 50;
  uint64_t seed = 42;
  int sleep_ms = 0;
  app.add_option("--config", config_path,
                 "autosnap YAML config (default: $AUTOSNAP_CONFIG, else no snapshots)");
  app.add_option("--steps", steps, "training steps")->check(CLI::PositiveNumber);
  app.add_option("--input", input, "input features")->check(CLI::PositiveNumber);
  app.add_option("--hidden", hidden, "hidden units")->check(CLI::PositiveNumber);
  app.add_option("--output", output, "outputs")->check(CLI::PositiveNumber);
  app.add_option("--batch", batch, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--steps-per-epoch", steps_per_epoch, "steps per epoch")->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "random seed");
  app.add_option("--sleep-ms", sleep_ms, "sleep after each step (for tests and demos)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--log-every", log_every, "print the loss every N steps")->check(CLI::PositiveNumber);
  app.add_option("--out", out_path, "at the end, save model, optimizer, step and loss here");
  CLI11_PARSE(app, argc, argv);
  const std::string program = "train_mlp";

  return examples::run_reporting_errors(program.c_str(), [&] {
    torch::set_num_threads(1);  // bitwise-reproducible CPU math
    torch::manual_seed(seed);
    MLP model(input, hidden, output);
    torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-3));
    // The function to learn: a fixed random map, from its own generator.
    auto teacher_generator = at::detail::createCPUGenerator(seed + 1);
    const auto teacher = at::randn({input, output}, teacher_generator);

    int64_t epoch = 0, completed_steps = 0;
    double loss_value = 0;
    auto snap = config_path.empty() ? autosnap::Snapshotter::from_env()
                                    : autosnap::Snapshotter::from_config(config_path);
    snap.track("model_state_dict", model);
    snap.track("optimizer_state_dict", optimizer);
    snap.track("epoch", epoch);
    snap.track("loss", loss_value);
    snap.track("step", completed_steps);

    auto resumed = snap.on_train_start();
    const int64_t first = resumed ? resumed->step + 1 : 0;
    if (resumed) {
      std::cout << "resumed from step " << resumed->step << " (" << resumed->reason << ", loss " << loss_value
                << ") in " << resumed->path << std::endl;
    } else {
      std::cout << "starting at step 0" << std::endl;
    }

    int64_t step = first;
    for (; step < steps; ++step) {
      // A flat loop with epochs: say when one begins (a resumed run then counts the same epochs).
      if (step % steps_per_epoch == 0) snap.on_epoch_start(step / steps_per_epoch);
      auto x = torch::randn({batch, input});  // the default generator: captured in every snapshot
      auto y = torch::tanh(x.mm(teacher));
      optimizer.zero_grad();
      auto loss = torch::mse_loss(model->forward(x), y);
      loss.backward();
      snap.before_optimizer_step();
      optimizer.step();
      loss_value = loss.item<double>();
      completed_steps = step + 1;
      epoch = step / steps_per_epoch;
      if (step % log_every == 0) {
        std::cout << "step " << std::setw(6) << step << "  loss " << std::setprecision(6) << std::fixed
                  << loss_value << std::endl;
      }
      snap.on_step_end(step);
      if (completed_steps % steps_per_epoch == 0) snap.on_epoch_end(epoch);  // after its last step
      if (sleep_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
      if (snap.should_stop()) {
        std::cout << "stopping after step " << step << " as asked" << std::endl;
        break;
      }
    }
    const bool finished = step >= steps;
    if (finished) snap.on_train_end();
    snap.close();
    if (finished) {
      std::cout << "finished " << steps << " steps, final loss " << std::setprecision(6) << std::fixed
                << loss_value << std::endl;
      if (!out_path.empty()) {
        autosnap::save(autosnap::dict({{"model_state_dict", autosnap::state_dict(model)},
                                       {"optimizer_state_dict", autosnap::optimizer_state_dict(optimizer)},
                                       {"step", completed_steps},
                                       {"loss", loss_value}}),
                       out_path);
      }
    }
    return snap.exit_code();
  });
}
