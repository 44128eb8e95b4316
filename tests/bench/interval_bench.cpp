// triggers.max_overhead's figures (the README's "An interval that picks
// itself"): the benchmark's training loop (MLP 4 x 2048x2048, Adam, 201 MB of
// state) whose step time grows mid-run (batch 4, then a larger batch), with
// no snapshots and with `triggers: {max_overhead: B}` and flush.overlap,
// interleaved; the intervals autosnap chose (its "interval" events) and the
// overhead measured against the run without snapshots, per phase.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "autosnap/autosnap.h"
#include "bench_support.h"
#include "training_loop.h"

namespace {

using bench::Clock;
using bench::ms_since;
using nlohmann::json;

struct Phase {
  int64_t batch;
  int64_t steps;
};

std::vector<json> events_of(const std::string& directory) {
  std::vector<json> events;
  std::ifstream in(directory + "/events.jsonl");
  for (std::string line; std::getline(in, line);) events.push_back(json::parse(line));
  return events;
}

json measure(const std::string& scratch, double budget, const std::vector<Phase>& phases, int reps) {
  bench::TrainingLoop loop(phases.front().batch);
  std::map<std::string, std::vector<std::vector<double>>> phase_ms;  // mode -> rep -> ms per phase
  json chosen = json::array();
  std::vector<double> snapshots;
  for (int r = 0; r < reps; ++r) {
    // Interleaved, each first in every other repetition: the machine's drift hits both.
    for (const std::string mode :
         r % 2 ? std::vector<std::string>{"budget", "none"} : std::vector<std::string>{"none", "budget"}) {
      const std::string directory = scratch + "/train";
      std::optional<autosnap::Snapshotter> snap;
      if (mode == "budget") {
        snap.emplace(autosnap::Config::from_string(
            "directory: " + directory +
                "\nretention: {keep_last: 1}\ncontrol: {socket: false}\nlog_level: warn\n" +
                "flush: {overlap: true}\ntriggers: {max_overhead: " + std::to_string(budget) +
                ", on_train_end: false}\n",
            "bench.yaml"));
        loop.track(*snap);
      }
      autosnap::Snapshotter* hooks = snap ? &*snap : nullptr;
      std::vector<double> ms;
      int64_t step = 1;
      for (const Phase& phase : phases) {
        loop.set_batch(phase.batch);
        const auto start = Clock::now();
        loop.train(hooks, step, phase.steps);
        ms.push_back(ms_since(start));
        step += phase.steps;
      }
      phase_ms[mode].push_back(ms);
      if (snap) {
        snap->close();
        int64_t taken = 0;
        json intervals = json::array();
        for (const auto& event : events_of(directory)) {
          taken += event["event"] == "committed";
          if (event["event"] != "interval") continue;
          intervals.push_back({{"step", event["step"]}, {"steps", event["steps"]}});
          if (r == 0)
            std::printf("  at step %lld: %s\n", event["step"].get<long long>(),
                        event["why"].get<std::string>().c_str());
        }
        chosen.push_back(intervals);
        snapshots.push_back(static_cast<double>(taken));
      }
      std::filesystem::remove_all(directory);
    }
  }
  json result;
  result["budget"] = budget;
  result["intervals"] = chosen;
  result["snapshots"] = bench::median(snapshots);
  std::printf("\n== max_overhead %.3g %%: MLP 4 x 2048x2048, Adam, flush.overlap; medians of %d pairs ==\n",
              budget * 100, reps);
  // Each repetition's phase is compared with the no-snapshot run of the same
  // repetition, minutes apart at most (this machine's speed drifts several-fold
  // between minutes), and the median of those ratios is the figure.
  for (size_t p = 0; p < phases.size(); ++p) {
    std::vector<double> none, by_rep;
    for (int r = 0; r < reps; ++r) {
      none.push_back(phase_ms["none"][r][p]);
      by_rep.push_back(phase_ms["budget"][r][p] / phase_ms["none"][r][p] - 1);
    }
    const double step_ms = bench::median(none) / phases[p].steps;
    const double overhead = bench::median(by_rep);
    result["phases"].push_back({{"batch", phases[p].batch},
                                {"steps", phases[p].steps},
                                {"step_ms", step_ms},
                                {"overhead", overhead},
                                {"overhead_by_rep", by_rep}});
    std::string each;
    for (const double o : by_rep) {
      char figure[32];
      std::snprintf(figure, sizeof(figure), "%s%+.1f %%", each.empty() ? "" : ", ", 100 * o);
      each += figure;
    }
    std::printf("phase %zu: batch %lld, %lld steps of %.1f ms: %.2f %% slower than without snapshots (%s)\n",
                p + 1, static_cast<long long>(phases[p].batch), static_cast<long long>(phases[p].steps),
                step_ms, 100 * overhead, each.c_str());
  }
  std::printf("snapshots taken: %.0f; intervals chosen (step: every N steps), first run: %s\n",
              result["snapshots"].get<double>(), chosen.empty() ? "[]" : chosen.front().dump().c_str());
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"max_overhead: the interval autosnap picks and the overhead it keeps"};
  std::string scratch = "bench-scratch", json_path;
  double budget = 0.02;
  int reps = 2;
  int64_t steps = 150, long_batch = 16;
  app.add_option("--dir", scratch, "scratch directory (removed after)");
  app.add_option("--json", json_path, "write the figures here");
  app.add_option("--budget", budget, "triggers.max_overhead");
  app.add_option("--reps", reps, "interleaved repetitions (medians)");
  app.add_option("--steps", steps, "steps per phase");
  app.add_option("--long-batch", long_batch, "the second phase's batch (longer steps)");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(1);
  bench::keep_freed_memory_for_reuse();  // the figure is autosnap's cost, not the heap's layout
  const json result = measure(scratch, budget, {{4, steps}, {long_batch, steps}}, reps);
  std::filesystem::remove_all(scratch);
  if (!json_path.empty()) std::ofstream(json_path) << result.dump(2) << "\n";
  return 0;
}
