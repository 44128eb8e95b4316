// A DCGAN like PyTorch's C++ example (pytorch/examples cpp/dcgan), on
// synthetic 16×16 images (MNIST cannot be downloaded everywhere): two models
// with BatchNorm, two Adam optimizers, a shuffling torch::data loader with
// worker threads, epoch × batch loops. Snapshots land mid-epoch; a resumed
// run continues with the next unseen batch of the same order and ends bitwise
// equal to an uninterrupted run.
//
//   AUTOSNAP_CONFIG=autosnap.yaml ./train_gan --epochs 5 --workers 2
//
// --stock-sampler uses torch's RandomSampler instead of autosnap's, to show
// what a mid-epoch resume does without a data position.
#include <autosnap/autosnap.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>
#include <type_traits>

#include "example_errors.h"

namespace {

constexpr int64_t kNoise = 16;

// Image i: a bright square whose place and size follow from i, plus noise
// from a generator of its own; the same in every run and every worker.
class SquaresDataset : public torch::data::datasets::Dataset<SquaresDataset> {
 public:
  explicit SquaresDataset(size_t count) : count_(count) {}
  torch::data::Example<> get(size_t index) override {
    auto generator = at::detail::createCPUGenerator(static_cast<uint64_t>(index) + 1);
    auto image = at::randn({1, 16, 16}, generator) * 0.1 - 1.0;
    const int64_t i = static_cast<int64_t>(index), size = 3 + i % 6;
    const int64_t row = i * 7 % (17 - size), col = i * 3 % (17 - size);
    image.narrow(1, row, size).narrow(2, col, size).fill_(1.0);
    return {image.clamp(-1, 1), torch::zeros({1})};
  }
  torch::optional<size_t> size() const override { return count_; }

 private:
  size_t count_;
};

struct GeneratorImpl : torch::nn::Module {
  GeneratorImpl()
      : up1(torch::nn::ConvTranspose2dOptions(kNoise, 32, 4).bias(false)),
        norm1(32),
        up2(torch::nn::ConvTranspose2dOptions(32, 16, 4).stride(2).padding(1).bias(false)),
        norm2(16),
        up3(torch::nn::ConvTranspose2dOptions(16, 1, 4).stride(2).padding(1).bias(false)) {
    register_module("up1", up1);
    register_module("norm1", norm1);
    register_module("up2", up2);
    register_module("norm2", norm2);
    register_module("up3", up3);
  }
  torch::Tensor forward(torch::Tensor z) {
    auto x = torch::relu(norm1(up1(z)));  // 4×4
    x = torch::relu(norm2(up2(x)));       // 8×8
    return torch::tanh(up3(x));           // 16×16
  }
  torch::nn::ConvTranspose2d up1;
  torch::nn::BatchNorm2d norm1;
  torch::nn::ConvTranspose2d up2;
  torch::nn::BatchNorm2d norm2;
  torch::nn::ConvTranspose2d up3;
};
TORCH_MODULE(Generator);

torch::nn::Sequential make_discriminator() {
  using namespace torch::nn;
  return Sequential(Conv2d(Conv2dOptions(1, 16, 4).stride(2).padding(1).bias(false)),  // 8×8
                    LeakyReLU(LeakyReLUOptions().negative_slope(0.2)),
                    Conv2d(Conv2dOptions(16, 32, 4).stride(2).padding(1).bias(false)),  // 4×4
                    BatchNorm2d(32), LeakyReLU(LeakyReLUOptions().negative_slope(0.2)),
                    Conv2d(Conv2dOptions(32, 1, 4).bias(false)),  // 1×1
                    Sigmoid());
}

// The two models and their optimizers.
struct Gan {
  Generator generator;
  torch::nn::Sequential discriminator = make_discriminator();
  torch::optim::Adam generator_optimizer{generator->parameters(),
                                         torch::optim::AdamOptions(2e-4).betas({0.5, 0.999})};
  torch::optim::Adam discriminator_optimizer{discriminator->parameters(),
                                             torch::optim::AdamOptions(2e-4).betas({0.5, 0.999})};
};

struct Settings {
  int64_t epochs = 4, batch_size = 32, workers = 2;
  size_t samples = 500;
  int sleep_ms = 0;
};

// The epoch × batch loop, over any sampler type. Returns 1 when a stop was asked for.
template <typename Sampler>
int train(autosnap::Snapshotter& snap, Sampler sampler, const std::optional<autosnap::ResumePoint>& resumed,
          Gan& gan, const Settings& settings, int64_t& step) {
  auto& [generator, discriminator, generator_optimizer, discriminator_optimizer] = gan;
  auto loader = torch::data::make_data_loader(
      SquaresDataset(settings.samples).map(torch::data::transforms::Stack<>()), std::move(sampler),
      torch::data::DataLoaderOptions().batch_size(settings.batch_size).workers(settings.workers));
  for (int64_t epoch = resumed ? resumed->next_epoch() : 0; epoch < settings.epochs; ++epoch) {
    snap.on_epoch_start(epoch);
    int64_t batch_index = resumed && epoch == resumed->next_epoch() ? resumed->next_batch() : 0;
    // A stock sampler restarts the epoch: skip what was done, as a user would (its order differs, though).
    int64_t skip = std::is_base_of<autosnap::ResumableSampler, Sampler>::value ? 0 : batch_index;
    double d_loss = 0, g_loss = 0;
    for (auto& batch : *loader) {
      if (skip > 0) {
        --skip;
        continue;
      }
      const torch::Tensor images = batch.data;
      const int64_t n = images.size(0);
      // Discriminator: real images (noisy labels, as in the DCGAN example) and fakes.
      discriminator->zero_grad();
      torch::Tensor real_loss = torch::binary_cross_entropy(discriminator->forward(images).reshape(-1),
                                                            torch::empty(n).uniform_(0.8, 1.0));
      torch::Tensor fake = generator->forward(torch::randn({n, kNoise, 1, 1}));
      torch::Tensor fake_loss =
          torch::binary_cross_entropy(discriminator->forward(fake.detach()).reshape(-1), torch::zeros(n));
      (real_loss + fake_loss).backward();
      // Two optimizers: the hook once, before the first optimizer.step() of the step.
      snap.before_optimizer_step();
      discriminator_optimizer.step();
      // Generator: make the discriminator call its fakes real.
      generator->zero_grad();
      torch::Tensor gen_loss =
          torch::binary_cross_entropy(discriminator->forward(fake).reshape(-1), torch::ones(n));
      gen_loss.backward();
      generator_optimizer.step();

      d_loss = (real_loss + fake_loss).item<double>();
      g_loss = gen_loss.item<double>();
      ++batch_index;
      snap.on_step_end(step++);
      if (settings.sleep_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(settings.sleep_ms));
      if (snap.should_stop()) {
        std::cout << "stopping after step " << step - 1 << " as asked" << std::endl;
        return 1;
      }
    }
    std::printf("epoch %lld: %lld batches, step %lld, loss_d %.6f loss_g %.6f\n",
                static_cast<long long>(epoch), static_cast<long long>(batch_index),
                static_cast<long long>(step - 1), d_loss, g_loss);
    std::fflush(stdout);
    snap.on_epoch_end(epoch);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"DCGAN-like training with autosnap snapshots and a resumable data loader"};
  std::string config_path, out_path;
  Settings settings;
  uint64_t seed = 1;
  bool stock_sampler = false;
  app.add_option("--config", config_path, "autosnap YAML config (default: $AUTOSNAP_CONFIG)");
  app.add_option("--epochs", settings.epochs, "epochs")->check(CLI::PositiveNumber);
  app.add_option("--batch-size", settings.batch_size, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--workers", settings.workers, "loader worker threads")->check(CLI::NonNegativeNumber);
  app.add_option("--samples", settings.samples, "images in the dataset")->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "torch::manual_seed");
  app.add_option("--sleep-ms", settings.sleep_ms, "pause after each step (to give a kill time to land)");
  app.add_option("--out", out_path, "after the last epoch, save models, optimizers and RNG state here");
  app.add_flag("--stock-sampler", stock_sampler, "torch's RandomSampler: no data position (for comparison)");
  CLI11_PARSE(app, argc, argv);

  return examples::run_reporting_errors("train_gan", [&] {
    torch::set_num_threads(1);  // bitwise-reproducible CPU math
    torch::manual_seed(seed);
    Gan gan;
    autosnap::ResumableRandomSampler sampler(
        settings.samples);  // its seed comes from torch::manual_seed above

    auto snap = config_path.empty() ? autosnap::Snapshotter::from_env()
                                    : autosnap::Snapshotter::from_config(config_path);
    snap.track("generator", gan.generator);
    snap.track("discriminator", gan.discriminator);
    snap.track("generator_optimizer", gan.generator_optimizer);
    snap.track("discriminator_optimizer", gan.discriminator_optimizer);
    if (!stock_sampler) snap.track("data", sampler);  // the one line that makes mid-epoch resume exact

    auto resumed = snap.on_train_start();
    int64_t step = resumed ? resumed->step + 1 : 0;
    if (resumed) {
      std::cout << "resumed from step " << resumed->step << " (" << resumed->reason << "): epoch "
                << resumed->next_epoch() << ", " << resumed->next_batch() << " batches of it done"
                << std::endl;
    } else {
      std::cout << "starting at step 0" << std::endl;
    }
    const int stopped = stock_sampler ? train(snap, torch::data::samplers::RandomSampler(settings.samples),
                                              resumed, gan, settings, step)
                                      : train(snap, sampler, resumed, gan, settings, step);
    if (stopped) {
      snap.close();
      return snap.exit_code();
    }
    snap.on_train_end();
    snap.close();
    std::cout << "finished " << settings.epochs << " epochs, " << step << " steps" << std::endl;
    if (!out_path.empty()) {
      autosnap::save(
          autosnap::dict(
              {{"generator", autosnap::state_dict(gan.generator)},
               {"discriminator", autosnap::state_dict(gan.discriminator)},
               {"generator_optimizer", autosnap::optimizer_state_dict(gan.generator_optimizer)},
               {"discriminator_optimizer", autosnap::optimizer_state_dict(gan.discriminator_optimizer)},
               {"rng_state", at::detail::getDefaultCPUGenerator().get_state()},
               {"steps", step}}),
          out_path);
    }
    return snap.exit_code();
  });
}
