// Data-parallel training of train_mlp's model on several ranks, with
// automatic snapshots of every rank. Each rank reads its part of a synthetic
// dataset through a ResumableDistributedSampler (its data position is in its
// shard); gradients are averaged over Gloo (the job's own process group;
// autosnap coordinates through a group of its own).
//
//   scripts/launch_local.sh 2 build/examples/train_ddp --config autosnap.yaml --steps 400 --out final.pt
//
// Ranks come from the launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT, or Slurm's SLURM_PROCID, SLURM_NTASKS, ...). Kill the job at
// any moment and launch it again: every rank resumes from the same snapshot
// and rank 0's --out is bitwise the same as after an uninterrupted run.
#include <autosnap/autosnap.h>
#include <autosnap/cluster.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include "example_errors.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
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

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::atoi(value) : fallback;
}

std::string env_text(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

// The training job's own store and process group: the one its gradients go through.
c10::intrusive_ptr<c10d::TCPStore> job_store(int rank, int world) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<std::uint16_t>(env_int("MASTER_PORT", 29500));
  options.isServer = rank == 0;
  options.numWorkers = static_cast<size_t>(world);
  options.waitWorkers = false;
  options.timeout = std::chrono::seconds(60);
  return c10::make_intrusive<c10d::TCPStore>(env_text("MASTER_ADDR", "127.0.0.1"), options);
}

c10::intrusive_ptr<c10d::ProcessGroupGloo> join_training_group(const c10::intrusive_ptr<c10d::Store>& store,
                                                               int rank, int world) {
  auto group_options = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(60));
  group_options->devices.push_back(autosnap::gloo_device());  // this node's interface, also across nodes
  return c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("train", store),
                                                     rank, world, group_options);
}

// Example i: features from a generator of its own, the teacher's answer as the target.
class TeacherDataset : public torch::data::datasets::Dataset<TeacherDataset> {
 public:
  TeacherDataset(size_t size, int64_t input, torch::Tensor teacher, uint64_t seed)
      : size_(size), input_(input), teacher_(std::move(teacher)), seed_(seed) {}
  torch::data::Example<> get(size_t index) override {
    auto generator = at::detail::createCPUGenerator(seed_ * 1000003 + index);
    auto x = at::randn({input_}, generator);
    return {x, torch::tanh(x.matmul(teacher_))};
  }
  torch::optional<size_t> size() const override { return size_; }

 private:
  size_t size_;
  int64_t input_;
  torch::Tensor teacher_;
  uint64_t seed_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Data-parallel training of a small MLP on synthetic data, with automatic snapshots."};
  std::string config_path, out_path;
  int64_t steps = 1000, input = 16, hidden = 64, output = 4, batch = 32, workers = 1, log_every = 50;
  size_t samples = 3200;
  uint64_t seed = 42;
  int sleep_ms = 0;
  bool share_store = false;
  app.add_flag("--share-store", share_store,
               "let autosnap coordinate through this job's TCPStore (Snapshotter::Options::job_store) "
               "instead of its own");
  app.add_option("--config", config_path,
                 "autosnap YAML config (default: $AUTOSNAP_CONFIG, else no snapshots)");
  app.add_option("--steps", steps, "training steps")->check(CLI::PositiveNumber);
  app.add_option("--input", input, "input features")->check(CLI::PositiveNumber);
  app.add_option("--hidden", hidden, "hidden units")->check(CLI::PositiveNumber);
  app.add_option("--output", output, "outputs")->check(CLI::PositiveNumber);
  app.add_option("--batch", batch, "batch size per rank")->check(CLI::PositiveNumber);
  app.add_option("--samples", samples, "examples in the dataset (an epoch: samples / ranks / batch steps)")
      ->check(CLI::PositiveNumber);
  app.add_option("--workers", workers, "data loader worker threads per rank")->check(CLI::NonNegativeNumber);
  app.add_option("--seed", seed, "random seed");
  app.add_option("--sleep-ms", sleep_ms, "sleep after each step (for tests and demos)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--log-every", log_every, "print the loss every N steps")->check(CLI::PositiveNumber);
  app.add_option("--out", out_path, "rank 0, at the end: save model, optimizer, step and loss here");
  CLI11_PARSE(app, argc, argv);

  const int rank = env_int("RANK", env_int("SLURM_PROCID", 0));
  const std::string program = "train_ddp rank " + std::to_string(rank);
  const int world = env_int("WORLD_SIZE", env_int("SLURM_NTASKS", 1));
  return examples::run_reporting_errors(program.c_str(), [&] {
    torch::set_num_threads(1);  // bitwise-reproducible CPU math
    torch::manual_seed(seed);   // the same initial model on every rank
    MLP model(input, hidden, output);
    torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-3));
    auto teacher_generator = at::detail::createCPUGenerator(seed + 1);
    const auto teacher = at::randn({input, output}, teacher_generator);
    torch::manual_seed(seed + 1000 * static_cast<uint64_t>(rank + 1));  // this rank's own noise
    auto store = job_store(rank, world);
    auto group = join_training_group(store, rank, world);

    int64_t epoch = 0, completed_steps = 0;
    double loss_value = 0;
    autosnap::Snapshotter::Options options;
    if (share_store) options.job_store = autosnap::job_store(store);
    auto snap = config_path.empty() ? autosnap::Snapshotter::from_env(options)
                                    : autosnap::Snapshotter::from_config(config_path, options);
    snap.track("model_state_dict", model);
    snap.track("optimizer_state_dict", optimizer);
    snap.track("epoch", epoch);
    snap.track("loss", loss_value);
    snap.track("step", completed_steps);
    autosnap::ResumableDistributedSampler sampler(samples, world, rank, {/*shuffle=*/true, /*seed=*/seed});
    snap.track("data", sampler);

    auto resumed = snap.on_train_start();
    const int64_t first = resumed ? resumed->step + 1 : 0;
    std::cout << "rank " << rank << " of " << world << ": "
              << (resumed ? "resumed from step " + std::to_string(resumed->step)
                          : std::string("starting at step 0"))
              << std::endl;

    // Each rank reads its part of each epoch's order; the loader continues a
    // resumed epoch with the next unseen batch.
    auto loader = torch::data::make_data_loader(
        TeacherDataset(samples, input, teacher, seed).map(torch::data::transforms::Stack<>()), sampler,
        torch::data::DataLoaderOptions().batch_size(batch).workers(workers));
    int64_t step = first;
    const auto training_started = std::chrono::steady_clock::now();
    bool left_early = false;  // stopped by a signal, or --steps reached mid-epoch
    for (int64_t e = resumed ? resumed->next_epoch() : 0; step < steps && !left_early; ++e) {
      snap.on_epoch_start(e);
      epoch = e;
      for (auto& examples : *loader) {
        // Input noise from the default generator: each rank's own, saved in its shard.
        const torch::Tensor x = examples.data + 0.01 * torch::randn_like(examples.data);
        const torch::Tensor y = examples.target;
        optimizer.zero_grad();
        auto loss = torch::mse_loss(model->forward(x), y);
        loss.backward();
        for (auto& p : model->parameters()) {
          std::vector<at::Tensor> grad{p.grad()};
          group->allreduce(grad)->wait();
          p.grad().div_(world);
        }
        snap.before_optimizer_step();
        optimizer.step();
        loss_value = loss.item<double>();
        completed_steps = step + 1;
        if (rank == 0 && step % log_every == 0) {
          std::cout << "step " << std::setw(6) << step << "  loss " << std::setprecision(6) << std::fixed
                    << loss_value << std::endl;
        }
        snap.on_step_end(step++);
        if (sleep_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
        if (snap.should_stop()) {
          std::cout << "rank " << rank << ": stopping after step " << step - 1 << " as asked" << std::endl;
          left_early = true;
        }
        if (left_early || step >= steps) {
          left_early = true;
          break;
        }
      }
      if (!left_early) snap.on_epoch_end(e);
    }
    const bool finished = step >= steps;
    if (finished) snap.on_train_end();
    snap.close();
    if (finished && rank == 0) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - training_started).count();
      std::cout << "finished " << steps << " steps, final loss " << std::setprecision(6) << std::fixed
                << loss_value << " (" << std::setprecision(3)
                << 1000 * seconds / static_cast<double>(std::max<int64_t>(1, steps - first))
                << " ms per step)" << std::endl;
      if (!out_path.empty()) {
        autosnap::save(autosnap::dict({{"model_state_dict", autosnap::state_dict(model)},
                                       {"optimizer_state_dict", autosnap::optimizer_state_dict(optimizer)},
                                       {"step", completed_steps},
                                       {"loss", loss_value}}),
                       out_path);
      }
    }
    group->barrier()->wait();  // rank 0 serves the store: it leaves last
    return snap.exit_code();
  });
}
