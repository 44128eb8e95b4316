// What a snapshot costs the training loop, against the plain way of doing it.
//
// For models of several sizes (float32 parameters plus Adam state), measures:
//   blocking save   autosnap::save of the checkpoint dict with fsync: the training
//                   thread waits for all of it (what torch.save + fsync costs)
//   async stall     Snapshotter (flush: async): time on_step_end() keeps the training
//                   thread (staging copy into reused host buffers)
//   overlap stall   flush.overlap with 100 ms of "forward/backward" between on_step_end()
//                   and before_optimizer_step(): time both hooks keep the training thread
//   persist         from the trigger until the snapshot is committed (background)
//   restore         restore_latest(): verify every checksum, read, copy into the model
//   verify          full checksum verification throughput
// Each figure is the median of --reps runs. Ratios compare figures of one run.
//
//   snapshot_bench [--sizes-mb 64,256,1024] [--reps 3] [--dir PATH]
#include <autosnap/autosnap.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Parameters of `megabytes` total in 16 MiB layers, with Adam state (2 more copies).
struct Workload {
  explicit Workload(int64_t megabytes) {
    const int64_t layer_elements = 4 << 20;  // 16 MiB of float32
    const int64_t layers = std::max<int64_t>(1, megabytes / 16);
    for (int64_t i = 0; i < layers; ++i) {
      model.register_parameter("layer" + std::to_string(i), torch::randn({layer_elements}));
    }
    optimizer = std::make_unique<torch::optim::Adam>(model.parameters(), torch::optim::AdamOptions(1e-3));
    for (auto& p : model.parameters()) p.mutable_grad() = torch::ones_like(p);
    optimizer->step();  // creates the Adam state
  }
  void step() {
    torch::NoGradGuard no_grad;
    for (auto& p : model.parameters()) p.add_(1e-3);
  }
  uint64_t bytes() const {
    uint64_t total = 0;
    for (const auto& p : model.parameters()) total += p.numel() * 4;
    return total * 3;  // parameters + exp_avg + exp_avg_sq
  }
  torch::nn::Module model;
  std::unique_ptr<torch::optim::Adam> optimizer;
};

autosnap::Config config_for(const std::string& directory, const std::string& flush) {
  return autosnap::Config::from_string(
      "directory: " + directory +
          "\ntriggers: {every_steps: 1, on_train_end: false}\n"
          "retention: {keep_last: 1}\ncontrol: {socket: false}\nlog_level: warn\n" +
          flush,
      "bench.yaml");
}

struct Row {
  int64_t megabytes;
  double blocking, async_stall, overlap_stall, persist, restore, verify_mb_s;
};

Row measure(int64_t megabytes, int reps, const std::string& root) {
  Workload work(megabytes);
  const double mb = work.bytes() / 1e6;
  Row row{megabytes, 0, 0, 0, 0, 0, 0};
  std::vector<double> blocking, async_stall, overlap_stall, persist, restore, verify;

  const std::string plain = root + "/plain.pt";
  for (int r = 0; r < reps; ++r) {
    work.step();
    const auto start = Clock::now();
    autosnap::save(
        autosnap::dict({{"model_state_dict", autosnap::state_dict(work.model)},
                        {"optimizer_state_dict", autosnap::optimizer_state_dict(*work.optimizer)}}),
        plain);
    blocking.push_back(ms_since(start));
  }
  std::filesystem::remove(plain);

  for (const bool overlap : {false, true}) {
    const std::string directory = root + (overlap ? "/overlap" : "/async");
    autosnap::Snapshotter snap(config_for(directory, overlap ? "flush: {overlap: true}\n" : ""));
    snap.track("model_state_dict", work.model);
    snap.track("optimizer_state_dict", *work.optimizer);
    for (int r = 0; r <= reps; ++r) {  // the first one allocates the staging buffers
      snap.before_optimizer_step();
      work.step();
      const auto trigger = Clock::now();
      snap.on_step_end(r);
      double stall = ms_since(trigger);
      if (overlap) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // forward + backward of the next step
        const auto wait = Clock::now();
        snap.before_optimizer_step();
        stall += ms_since(wait);
      }
      snap.wait_until_finished();
      if (r == 0) continue;
      (overlap ? overlap_stall : async_stall).push_back(stall);
      if (!overlap) persist.push_back(ms_since(trigger));
    }
    snap.close();
    if (!overlap) {
      auto store = autosnap::SnapshotStore::open_read_only(directory);
      for (int r = 0; r < reps; ++r) {
        const auto start = Clock::now();
        auto result = store->verify(reps);
        verify.push_back(result.bytes_checked / 1e3 / ms_since(start));
      }
      for (int r = 0; r < reps; ++r) {
        autosnap::Snapshotter again(config_for(directory, ""));
        again.track("model_state_dict", work.model);
        again.track("optimizer_state_dict", *work.optimizer);
        const auto start = Clock::now();
        again.restore_latest();
        restore.push_back(ms_since(start));
      }
    }
    std::filesystem::remove_all(directory);
  }
  row.blocking = median(blocking);
  row.async_stall = median(async_stall);
  row.overlap_stall = median(overlap_stall);
  row.persist = median(persist);
  row.restore = median(restore);
  row.verify_mb_s = median(verify);
  std::printf(
      "%7.0f MB | %9.1f ms | %9.1f ms (%5.1f%%) | %9.1f ms (%5.2f%%) | %8.1f ms | %8.1f ms | %6.0f MB/s\n",
      mb, row.blocking, row.async_stall, 100 * row.async_stall / row.blocking, row.overlap_stall,
      100 * row.overlap_stall / row.blocking, row.persist, row.restore, row.verify_mb_s);
  std::fflush(stdout);
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"autosnap snapshot benchmark"};
  std::vector<int64_t> sizes = {64, 256, 1024};
  int reps = 3;
  std::string directory = "bench-snapshots";
  app.add_option("--sizes-mb", sizes, "parameter megabytes per model (Adam state triples the checkpoint)")
      ->delimiter(',');
  app.add_option("--reps", reps, "repetitions per figure (median)")->check(CLI::PositiveNumber);
  app.add_option("--dir", directory, "scratch directory on the disk to measure");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(1);
  std::filesystem::create_directories(directory);
  std::printf(
      "checkpoint |  blocking save | async stall (of blocking) | overlap stall (of blocking) |  persist   |  "
      "restore   |  verify\n");
  for (int64_t size : sizes) measure(size, reps, directory);
  std::filesystem::remove_all(directory);
  return 0;
}
