// Staging and writing: a staged snapshot is one consistent step, flush.overlap
// (deferred copies, the commit gate), backpressure (wait, skip), sync mode and
// the staging memory limit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "autosnap/autosnap.h"
#include "autosnap/snapshotter.h"
#include "autosnap/tools.h"
#include "support/fault_fs.h"
#include "support/snapshotter_fixtures.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::count_events;
using testing::make_config;
using testing::Model;
using testing::read_entry;
using testing::TempDir;

TEST(Snapshotter, StagedSnapshotIsConsistentWhileParametersChange) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  Snapshotter snap(make_config(dir.path(),
                               "triggers: {every_steps: 1, on_train_end: false}\nretention: {keep_last: 0}\n"
                               "capture: {rng: false}\n"),
                   {&fs});
  snap.track("model", model);
  fs.append_delay_ms = 30;  // the write takes a while
  for (int64_t step = 0; step < 3; ++step) {
    model.set_all(static_cast<float>(step));
    snap.on_step_end(step);
    // Step `step + 1` changes every parameter while step `step` is being written.
    model.set_all(static_cast<float>(step + 1000));
  }
  snap.wait_until_finished();
  const auto stats = snap.stats();
  EXPECT_EQ(stats.committed, 3);
  for (int64_t step = 0; step < 3; ++step) {
    auto state = read_entry(dir.path(), step, "model");
    for (const char* name : {"weight", "bias", "running"}) {
      auto t = dict_at(state, name).toTensor();
      EXPECT_TRUE(torch::all(t == static_cast<float>(step)).item<bool>()) << "step " << step << " " << name;
    }
  }
  // Staging buffers are allocated once and reused.
  EXPECT_EQ(stats.staging_allocations, 3) << "weight, bias and running: one buffer each, reused";
  EXPECT_EQ(stats.staging_bytes, (256 * 256 + 256 + 16) * 4u);
}

TEST(Snapshotter, OverlapStagesDuringTheNextStepAndWaitsBeforeTheOptimizer) {
  TempDir dir;
  Model model;
  auto config = make_config(dir.path(),
                            "triggers: {every_steps: 1, on_train_end: false}\nflush: {overlap: true}\n"
                            "retention: {keep_last: 0}\n");
  Snapshotter snap(config);
  snap.track("model", model);
  for (int64_t step = 0; step < 4; ++step) {
    model.set_all(static_cast<float>(step));
    snap.on_step_end(step);
    // "forward/backward" of the next step: buffers may change, parameters may not.
    {
      torch::NoGradGuard no_grad;
      model.running.fill_(-1);
    }
    snap.before_optimizer_step();
  }
  snap.wait_until_finished();
  EXPECT_EQ(snap.stats().committed, 4);
  for (int64_t step = 0; step < 4; ++step) {
    auto state = read_entry(dir.path(), step, "model");
    EXPECT_TRUE(torch::all(dict_at(state, "weight").toTensor() == static_cast<float>(step)).item<bool>());
    EXPECT_TRUE(torch::all(dict_at(state, "running").toTensor() == static_cast<float>(step)).item<bool>())
        << "buffers are copied at the step boundary, not later";
  }
}

// What makes overlap's stall small: only buffers are copied at the step
// boundary; parameter copies (changed only by optimizer.step()) are deferred.

TEST(Snapshotter, OverlapWithoutBeforeOptimizerStepDiscardsInsteadOfSavingAMix) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  Snapshotter snap(make_config(dir.path(),
                               "triggers: {every_steps: 1, on_train_end: false}\nflush: {overlap: true}\n"
                               "retention: {keep_last: 0}\n"),
                   {&fs});
  snap.track("model", model);
  fs.append_delay_ms = 20;
  model.set_all(0);
  snap.on_step_end(0);
  model.set_all(1);  // an optimizer step without before_optimizer_step()
  snap.on_step_end(1);
  snap.wait_until_finished();
  EXPECT_EQ(snap.all_steps(), std::vector<int64_t>{1}) << "step 0's pipelined snapshot must be discarded";
  EXPECT_EQ(count_events(dir.path(), "failed"), 1);
  EXPECT_THROW(snap.check_for_errors(), Error);
}

// Two optimizers (a GAN's): before_optimizer_step() belongs before the first
// optimizer.step(). Called after it, the first optimizer has already changed
// its parameters while their copies were pending: the version counters tell,
// and that snapshot is discarded instead of committed. (Adam here: LibTorch's
// SGD updates parameters through .data(), which no version counter sees; see
// README.)
struct TwoOptimizerLoop {
  Model a, b;
  torch::optim::Adam opt_a{a.parameters(), torch::optim::AdamOptions(0.1)};
  torch::optim::Adam opt_b{b.parameters(), torch::optim::AdamOptions(0.1)};
  std::vector<at::Tensor> a_weight_at_step;  // what each step's snapshot must hold

  explicit TwoOptimizerLoop(Snapshotter& snap) {
    snap.track("a", a);
    snap.track("b", b);
    snap.track("opt_a", opt_a);
    snap.track("opt_b", opt_b);
    for (auto* p : {&a.weight, &a.bias, &b.weight, &b.bias}) p->mutable_grad() = torch::ones_like(*p);
  }
  // One step; `hook_after_first`: the misplaced before_optimizer_step().
  void step(Snapshotter& snap, int64_t step, bool hook_after_first) {
    if (!hook_after_first) snap.before_optimizer_step();
    opt_a.step();
    if (hook_after_first) snap.before_optimizer_step();
    opt_b.step();
    a_weight_at_step.push_back(a.weight.detach().clone());
    snap.on_step_end(step);
  }
  bool snapshot_holds_its_step(const std::string& dir, int64_t step) const {
    return torch::equal(dict_at(read_entry(dir, step, "a"), "weight").toTensor(), a_weight_at_step.at(step));
  }
};

TEST(Snapshotter, OverlapWithTwoOptimizersCommitsWhenTheHookPrecedesTheFirst) {
  TempDir dir;
  Snapshotter snap(make_config(dir.path(),
                               "triggers: {every_steps: 1, on_train_end: false}\nflush: {overlap: true}\n"
                               "retention: {keep_last: 0}\n"));
  TwoOptimizerLoop loop(snap);
  for (int64_t step = 0; step < 3; ++step) loop.step(snap, step, /*hook_after_first=*/false);
  snap.before_optimizer_step();  // settles step 2's copies
  snap.wait_until_finished();
  EXPECT_EQ(snap.all_steps(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(count_events(dir.path(), "failed"), 0);
  for (int64_t step = 0; step < 3; ++step)
    EXPECT_TRUE(loop.snapshot_holds_its_step(dir.path(), step)) << step;
}

TEST(Snapshotter, OverlapDiscardsATornSnapshotAndNamesTheTensor) {
  TempDir dir;
  Snapshotter snap(make_config(dir.path(),
                               "triggers: {every_steps: 1, on_train_end: false}\nflush: {overlap: true}\n"
                               "retention: {keep_last: 0}\n"));
  TwoOptimizerLoop loop(snap);
  loop.step(snap, 0, /*hook_after_first=*/false);
  loop.step(snap, 1,
            /*hook_after_first=*/true);  // opt_a changed a's parameters before step 0's copies settled
  loop.step(snap, 2, /*hook_after_first=*/true);  // overlap is off now: staged at the boundary, consistent
  snap.wait_until_finished();
  EXPECT_EQ(snap.all_steps(), (std::vector<int64_t>{1, 2})) << "step 0's torn snapshot must not be committed";
  bool named = false;
  for (const auto& event : testing::read_events(dir.path())) {
    if (event["event"] == "failed" && event["step"] == 0) {
      named = event["error"].get<std::string>().find(
                  "'a/weight' was modified before before_optimizer_step()") != std::string::npos;
    }
  }
  EXPECT_TRUE(named) << "the failed event names the first modified tensor";
  EXPECT_THROW(snap.check_for_errors(), Error);
  for (int64_t step = 1; step < 3; ++step)
    EXPECT_TRUE(loop.snapshot_holds_its_step(dir.path(), step)) << step;
}

TEST(Snapshotter, BackpressureWaitKeepsEverySnapshot) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  Snapshotter snap(make_config(dir.path(),
                               "triggers: {every_steps: 1, on_train_end: false}\nretention: {keep_last: 0}\n"
                               "flush: {max_pending: 1, when_busy: wait}\n"),
                   {&fs});
  snap.track("model", model);
  fs.append_delay_ms = 10;
  for (int64_t step = 0; step < 5; ++step) snap.on_step_end(step);
  snap.wait_until_finished();
  EXPECT_EQ(snap.all_steps().size(), 5u);
  EXPECT_EQ(snap.stats().skipped, 0);
}

TEST(Snapshotter, BackpressureSkipLogsTheSkippedSteps) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  Snapshotter snap(make_config(dir.path(),
                               "triggers: {every_steps: 1, on_train_end: false}\nretention: {keep_last: 0}\n"
                               "flush: {max_pending: 1, when_busy: skip}\n"),
                   {&fs});
  snap.track("model", model);
  fs.append_delay_ms = 40;
  for (int64_t step = 0; step < 5; ++step) snap.on_step_end(step);
  snap.wait_until_finished();
  const auto stats = snap.stats();
  EXPECT_GT(stats.skipped, 0);
  EXPECT_EQ(stats.committed + stats.skipped, 5);
  EXPECT_EQ(count_events(dir.path(), "skipped"), stats.skipped);
}

// when_busy: skip drops automatic snapshots, never one somebody asked for:
// the request waits for a free slot and is answered.

TEST(Snapshotter, SynchronousModeAndStagingLimit) {
  TempDir dir;
  Model model;
  {
    Snapshotter snap(make_config(dir.path() + "/sync", "triggers: {every_steps: 1}\nflush: {mode: sync}\n"));
    snap.track("model", model);
    model.set_all(3);
    snap.on_step_end(0);
    model.set_all(4);  // the write already happened
    EXPECT_EQ(snap.stats().committed, 1);
    EXPECT_EQ(snap.stats().staging_bytes, 0u) << "sync mode writes from the live tensors";
  }
  EXPECT_TRUE(torch::all(dict_at(read_entry(dir.path() + "/sync", 0, "model"), "weight").toTensor() == 3)
                  .item<bool>());
  Snapshotter snap(make_config(dir.path() + "/limited",
                               "triggers: {every_steps: 1}\nflush: {staging_memory_limit: 1KiB}\n"));
  snap.track("model", model);
  snap.on_step_end(0);
  EXPECT_EQ(snap.stats().committed, 1) << "too big to stage: written synchronously";
  EXPECT_EQ(snap.stats().staging_bytes, 0u);
}

}  // namespace
}  // namespace autosnap
