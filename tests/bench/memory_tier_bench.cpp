// The memory tier's figures (the README's "Memory tier" section):
//   - steady overhead of a memory snapshot every step, with flush.overlap, on
//     the training loop of snapshot_bench (MLP 4 x 2048x2048, Adam), against
//     no snapshots, interleaved; and how many steps it actually covered
//     (a step whose memory snapshot is still being written is skipped);
//   - restore after a kill: from the memory tier against a cold restore from
//     disk of the same state (its page cache dropped), with the bytes each
//     read from the block device (/proc/self/io read_bytes) and opened from
//     the snapshot directory.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

#include "autosnap/autosnap.h"
#include "bench_support.h"
#include "training_loop.h"

namespace {

using bench::Clock;
using bench::ms_since;
using nlohmann::json;

uint64_t io_read_bytes() {
  std::ifstream in("/proc/self/io");
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value)
    if (key == "read_bytes:") return value;
  return 0;
}

autosnap::Config config(const std::string& directory, const std::string& shm, const std::string& extra) {
  return autosnap::Config::from_string("directory: " + directory +
                                           "\nretention: {keep_last: 1}\ncontrol: {socket: false}\n"
                                           "log_level: warn\n" +
                                           (shm.empty() ? "" : "memory: {directory: " + shm + "}\n") + extra,
                                       "bench.yaml");
}

json measure_overhead(const std::string& scratch, const std::string& shm, int reps, int64_t batch) {
  bench::TrainingLoop loop(batch);
  constexpr int64_t kSteps = 40;
  std::map<std::string, std::vector<double>> rates;
  std::vector<double> covered, step_ms;
  for (int r = 0; r < reps; ++r) {
    for (const std::string mode : {"none", "memory"}) {
      const std::string directory = scratch + "/train";
      std::optional<autosnap::Snapshotter> snap;
      if (mode == "memory") {
        // on_train_end: the disk then has the last step, so close() removes the memory tier.
        snap.emplace(config(directory, shm,
                            "triggers: {every_steps: 1000000, on_train_end: true}\n"
                            "flush: {overlap: true}\n"));
        loop.track(*snap);
      }
      autosnap::Snapshotter* hooks = snap ? &*snap : nullptr;
      loop.train(hooks, 1, 5);  // warm-up: staging buffers allocated
      if (snap) snap->wait_until_finished();
      const int64_t before = snap ? snap->stats().memory.committed : 0;
      const auto start = Clock::now();
      loop.train(hooks, 6, kSteps);
      const double ms = ms_since(start);
      rates[mode].push_back(kSteps * 1000.0 / ms);
      if (snap) covered.push_back(static_cast<double>(snap->stats().memory.committed - before));
      if (!snap) step_ms.push_back(ms / kSteps);
      if (snap) snap->close();
      std::filesystem::remove_all(directory);
    }
  }
  json result = {{"steps", kSteps},
                 {"batch", batch},
                 {"step_ms", bench::median(step_ms)},
                 {"none_steps_per_s", bench::median(rates["none"])},
                 {"memory_steps_per_s", bench::median(rates["memory"])},
                 {"memory_snapshots_per_40_steps", bench::median(covered)}};
  const double slower =
      100 * (1 - result["memory_steps_per_s"].get<double>() / result["none_steps_per_s"].get<double>());
  result["overhead_percent"] = slower;
  std::printf(
      "== memory tier, training overhead: MLP 4 x 2048x2048 (201 MB with Adam), batch %lld, one step %.0f ms "
      "==\n"
      "no snapshots %.2f steps/s; a memory snapshot every step (flush.overlap) %.2f steps/s: %.1f%% slower; "
      "%.0f of %lld steps got their memory snapshot (the others were skipped while one was written)\n",
      static_cast<long long>(batch), result["step_ms"].get<double>(),
      result["none_steps_per_s"].get<double>(), result["memory_steps_per_s"].get<double>(), slower,
      result["memory_snapshots_per_40_steps"].get<double>(), static_cast<long long>(kSteps));
  return result;
}

struct State {
  explicit State(int64_t megabytes) {
    const int64_t elements = megabytes * 1000 * 1000 / 3 / 4, count = (elements + (4 << 20) - 1) / (4 << 20);
    for (int64_t i = 0; i < count; ++i)
      model.register_parameter("p" + std::to_string(i), torch::randn({elements / count}));
    optimizer = std::make_unique<torch::optim::Adam>(model.parameters(), torch::optim::AdamOptions(1e-3));
    for (auto& p : model.parameters()) p.mutable_grad() = torch::ones_like(p);
    optimizer->step();
  }
  void track(autosnap::Snapshotter& snap) {
    snap.track("model", model);
    snap.track("optimizer", *optimizer);
  }
  torch::nn::Module model;
  std::unique_ptr<torch::optim::Adam> optimizer;
};

// One restore: a new snapshotter's on_train_start(), as at a restart; then
// "killed" (it goes while an exception unwinds), so the memory tier stays.
json restore(State& state, const autosnap::Config& config) {
  json result;
  try {
    const uint64_t read_before = io_read_bytes();
    const auto start = Clock::now();
    autosnap::Snapshotter snap(config);
    state.track(snap);
    const auto resumed = snap.on_train_start();
    const double ms = ms_since(start);
    if (!resumed) throw std::logic_error("nothing restored");
    result = {{"ms", ms}, {"read_bytes", io_read_bytes() - read_before}, {"path", resumed->path}};
    throw std::runtime_error("killed");
  } catch (const std::runtime_error&) {
  }
  return result;
}

json measure_restore(const std::string& scratch, const std::string& shm, int64_t megabytes, int reps) {
  State state(megabytes);
  const std::string disk = scratch + "/restore";
  // Step 7 in both tiers, then "killed": the snapshotter goes while an exception unwinds.
  try {
    autosnap::Snapshotter snap(config(disk, shm, "triggers: {every_steps: 7, on_train_end: false}\n"));
    state.track(snap);
    for (int64_t step = 1; step <= 7; ++step) {
      snap.on_step_end(step);
      snap.wait_until_finished();
    }
    throw std::runtime_error("killed");
  } catch (const std::runtime_error&) {
  }
  std::vector<double> memory_ms, disk_ms;
  uint64_t memory_read = 0, disk_read = 0;
  for (int r = 0; r < reps; ++r) {  // interleaved
    bench::drop_cache(disk);
    const json from_memory = restore(state, config(disk, shm, "triggers: {every_steps: 1000000}\n"));
    if (from_memory["path"].get<std::string>().rfind(shm, 0) != 0)
      throw std::runtime_error("expected a memory restore, got " + from_memory["path"].get<std::string>());
    memory_ms.push_back(from_memory["ms"]);
    memory_read = std::max<uint64_t>(memory_read, from_memory["read_bytes"]);
    bench::drop_cache(disk);
    const json from_disk = restore(state, config(disk, "", "triggers: {every_steps: 1000000}\n"));
    disk_ms.push_back(from_disk["ms"]);
    disk_read = std::max<uint64_t>(disk_read, from_disk["read_bytes"]);
  }
  autosnap::Snapshotter cleanup(config(disk, shm, "triggers: {every_steps: 1000000}\n"));  // a normal exit
  state.track(cleanup);
  cleanup.on_train_start();
  cleanup.close();
  std::filesystem::remove_all(disk);
  json result = {{"megabytes", megabytes},
                 {"memory_ms", bench::median(memory_ms)},
                 {"disk_cold_ms", bench::median(disk_ms)},
                 {"memory_read_bytes", memory_read},
                 {"disk_read_bytes", disk_read}};
  std::printf(
      "== memory tier, restore after a kill: %lld MB state (parameters + Adam) ==\n"
      "from memory %.0f ms, %llu bytes read from the block device; cold from disk (page cache dropped) %.0f "
      "ms, "
      "%llu bytes read; memory is %.1fx faster\n",
      static_cast<long long>(megabytes), result["memory_ms"].get<double>(),
      static_cast<unsigned long long>(memory_read), result["disk_cold_ms"].get<double>(),
      static_cast<unsigned long long>(disk_read),
      result["disk_cold_ms"].get<double>() / result["memory_ms"].get<double>());
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"autosnap memory-tier benchmark"};
  std::string scratch = "bench-scratch", shm = "/dev/shm", json_path;
  int reps = 3;
  int64_t megabytes = 512;
  std::vector<int64_t> batches = {4, 64};
  bool restore_figure = true;
  app.add_option("--dir", scratch, "scratch directory on the disk");
  app.add_option("--memory-dir", shm, "the tmpfs of the memory tier");
  app.add_option("--reps", reps, "repetitions (median)")->check(CLI::PositiveNumber);
  app.add_option("--restore-mb", megabytes, "state size of the restore figure")->check(CLI::PositiveNumber);
  app.add_option("--json", json_path, "write the figures here");
  app.add_option("--batches", batches, "batch sizes of the overhead figure")->delimiter(',');
  app.add_flag("!--no-restore", restore_figure, "skip the restore figure");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(1);
  std::filesystem::create_directories(scratch);
  json report = {{"reps", reps}, {"torch_threads", 1}};
  if (restore_figure) report["restore"] = measure_restore(scratch, shm, megabytes, reps);
  for (int64_t batch : batches) report["overhead"].push_back(measure_overhead(scratch, shm, reps, batch));
  if (!json_path.empty()) std::ofstream(json_path) << report.dump(2) << "\n";
  return 0;
}
