// The snapshot daemon in one process: triggers (every_steps, every_seconds),
// events, retention, one snapshot per step, closing, the directory lock,
// tracked names and TorchScript modules. The other parts: snapshot_pipeline_test
// (staging, overlap, backpressure), snapshot_requests_test, snapshot_errors_test,
// restore_test.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "autosnap/autosnap.h"
#include "autosnap/snapshotter.h"
#include "autosnap/tools.h"
#include "autosnap/torchscript.h"
#include "fs/write_mode.h"
#include "support/fault_fs.h"
#include "support/snapshotter_fixtures.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::count_events;
using testing::make_config;
using testing::Model;
using testing::read_entry;
using testing::read_events;
using testing::TempDir;
using namespace std::chrono_literals;

TEST(Snapshotter, EveryStepsTriggerCommitsAndEventsDescribeIt) {
  TempDir dir;
  Model model;
  int64_t counter = 0;
  {
    Snapshotter snap(make_config(
        dir.path(), "triggers: {every_steps: 5, on_train_end: false}\nretention: {keep_last: 0}\n"));
    snap.track("model", model);
    snap.track("counter", counter);
    EXPECT_FALSE(snap.on_train_start().has_value());
    for (int64_t step = 0; step < 12; ++step) {
      counter = step;
      snap.on_step_end(step);
    }
    snap.wait_until_finished();
    EXPECT_EQ(snap.all_steps(), (std::vector<int64_t>{0, 5, 10}));
    EXPECT_EQ(snap.latest_step(), 10);
  }
  EXPECT_EQ(read_entry(dir.path(), 10, "counter").toInt(), 10);
  const auto events = read_events(dir.path());
  int committed = 0;
  for (const auto& e : events) {
    if (e["event"] != "committed") continue;
    ++committed;
    for (const char* key : {"time", "step", "bytes", "stall_ms", "persist_ms", "path", "reason"}) {
      EXPECT_TRUE(e.contains(key)) << key << " missing in " << e.dump();
    }
    EXPECT_EQ(e["reason"], "every_steps");
    EXPECT_GT(e["bytes"].get<int64_t>(), 256 * 256 * 4);
  }
  EXPECT_EQ(committed, 3);
}

TEST(Snapshotter, EverySecondsTriggerFollowsTheWallClock) {
  TempDir dir;
  int64_t value = 0;
  Snapshotter snap(make_config(
      dir.path(), "triggers: {every_seconds: 1, on_train_end: false}\nretention: {keep_last: 0}\n"));
  snap.track("value", value);
  EXPECT_FALSE(snap.on_train_start().has_value());
  snap.on_step_end(0);  // under a second since the start
  snap.wait_until_finished();
  EXPECT_TRUE(snap.all_steps().empty());
  std::this_thread::sleep_for(1100ms);
  snap.on_step_end(1);
  snap.on_step_end(2);  // just after a snapshot
  snap.wait_until_finished();
  EXPECT_EQ(snap.all_steps(), (std::vector<int64_t>{1}));
  EXPECT_EQ(read_events(dir.path()).back()["reason"], "every_seconds");
}

// triggers.max_overhead on a loop whose step time grows tenfold mid-run:
// the interval it picks (told in the log and an "interval" event) shrinks
// with it, since the same snapshot costs a smaller share of a longer step.
TEST(Snapshotter, MaxOverheadPicksAShorterIntervalWhenStepsGrowLonger) {
  TempDir dir;
  at::Tensor weights = torch::rand({2048, 2048});  // 16 MB
  Snapshotter snap(make_config(
      dir.path(), "triggers: {max_overhead: 0.05, on_train_end: false}\nretention: {keep_last: 2}\n"));
  snap.track("weights", weights);
  snap.on_train_start();
  auto train = [&](int64_t first, int64_t last, std::chrono::milliseconds step_time) {
    for (int64_t step = first; step <= last; ++step) {
      std::this_thread::sleep_for(step_time);
      weights.add_(1);
      snap.on_step_end(step);
    }
  };
  auto interval_at = [&](int64_t last) {
    int64_t interval = -1;
    for (const auto& event : read_events(dir.path()))
      if (event["event"] == "interval" && event["step"] <= last) interval = event["steps"];
    return interval;
  };
  int64_t short_end = 120;
  train(1, short_end, 2ms);
  // The interval is chosen once the first snapshot is written: under a sanitizer
  // on a busy machine that takes longer than 120 short steps, so run more of them.
  while (interval_at(short_end) < 0 && short_end < 1200) {
    train(short_end + 1, short_end + 40, 2ms);
    short_end += 40;
  }
  const int64_t short_steps = interval_at(short_end);
  const int64_t long_end = short_end + 180;
  train(short_end + 1, long_end, 20ms);
  snap.wait_until_finished();
  const int64_t long_steps = interval_at(long_end);
  ASSERT_GT(short_steps, 0) << "an interval was chosen and told";
  ASSERT_GT(long_steps, 0);
  EXPECT_LE(long_steps * 3, short_steps) << "steps 10x longer: the interval shrinks";
  int64_t taken = 0;
  for (const auto& event : read_events(dir.path()))
    if (event["event"] == "committed") taken += event["reason"] == "max_overhead";
  // As many as the chosen interval allows: under a sanitizer on a busy machine a
  // snapshot costs more, so the interval is longer (311 steps of 20 ms once, under TSan).
  const int64_t due = 1 + (long_end - short_end) / long_steps;
  EXPECT_GE(taken, std::min<int64_t>(3, due)) << "snapshots follow the interval chosen";
  std::cout << "max_overhead 5 %: every " << short_steps << " steps of ~2 ms, every " << long_steps
            << " steps of ~20 ms; " << taken << " snapshots" << std::endl;
}

TEST(Snapshotter, RetentionKeepsTheNewestAndEveryKth) {
  TempDir dir;
  Model model;
  Snapshotter snap(make_config(dir.path(),
                               "triggers: {every_steps: 1, on_train_end: false}\n"
                               "retention: {keep_last: 2, keep_every_steps: 10}\n"));
  snap.track("model", model);
  for (int64_t step = 0; step < 26; ++step) snap.on_step_end(step);
  snap.wait_until_finished();
  EXPECT_EQ(snap.all_steps(), (std::vector<int64_t>{0, 10, 20, 24, 25}));
  EXPECT_EQ(count_events(dir.path(), "retention-deleted"), 26 - 5);
}

// flush.direct_io decides how the snapshot's big files are written, for the
// whole process, until another Snapshotter says otherwise.
TEST(Snapshotter, FlushDirectIoSetsHowBigFilesAreWritten) {
  TempDir dir;
  struct stat where;
  ASSERT_EQ(::stat(dir.path().c_str(), &where), 0);
  auto weights = torch::randn({static_cast<int64_t>(WriteModeChooser::kMinTimedBytes / 4) + 1000});
  write_mode_chooser().reset();
  {
    Snapshotter snap(make_config(dir.file("never"), "flush: {direct_io: never}\n"));
    EXPECT_EQ(write_mode_chooser().mode(), DirectIo::kNever);
    snap.track("weights", weights);
    snap.on_step_end(0);
    snap.snapshot_now("test");
    snap.close();
  }
  EXPECT_GT(write_mode_chooser().buffered_mb_per_s(where.st_dev), 0)
      << "the shard went through the page cache";
  EXPECT_EQ(write_mode_chooser().direct_mb_per_s(where.st_dev), 0);
  {
    Snapshotter snap(make_config(dir.file("auto")));
    EXPECT_EQ(write_mode_chooser().mode(), DirectIo::kAuto);
  }
  write_mode_chooser().reset();
}

TEST(Snapshotter, TrackNamesAreChecked) {
  TempDir dir;
  int64_t x = 0;
  Snapshotter snap(make_config(dir.path()));
  snap.track("x", x);
  EXPECT_THROW(snap.track("x", x), Error);
  EXPECT_THROW(snap.track("rng_state", x), Error);
  EXPECT_THROW(snap.track("a/b", x), Error);
  EXPECT_THROW(snap.track("", x), Error);
}

TEST(Snapshotter, OneSnapshotPerStep) {
  TempDir dir;
  int64_t x = 0;
  Snapshotter snap(
      make_config(dir.path(), "triggers: {every_steps: 2, on_epoch_end: true, on_train_end: true}\n"));
  snap.track("x", x);
  snap.on_step_end(0);   // every_steps
  snap.on_epoch_end(0);  // same step: nothing new
  snap.snapshot_now("manual");
  snap.on_step_end(1);
  snap.on_epoch_end(1);  // a new step: epoch_end snapshot
  snap.on_train_end();   // same step again
  EXPECT_EQ(snap.all_steps(), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(count_events(dir.path(), "committed"), 2);
}

TEST(Snapshotter, CloseFinishesQueuedSnapshots) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  {
    Snapshotter snap(make_config(dir.path(),
                                 "triggers: {every_steps: 1, on_train_end: false}\nflush: {max_pending: 3}\n"
                                 "retention: {keep_last: 0}\n"),
                     {&fs});
    snap.track("model", model);
    fs.append_delay_ms = 20;
    for (int64_t step = 0; step < 3; ++step) snap.on_step_end(step);
    snap.close();
  }
  auto store = SnapshotStore::open_read_only(dir.path());
  EXPECT_EQ(store->valid_steps(), (std::vector<int64_t>{0, 1, 2}));
}

TEST(Snapshotter, SecondSnapshotterOnTheSameDirectoryIsRefused) {
  TempDir dir;
  Snapshotter first(make_config(dir.path()));
  EXPECT_THROW(Snapshotter(make_config(dir.path())), LockedError);
}

TEST(Snapshotter, TorchScriptModuleRoundTripsWithItsStructure) {
  TempDir dir;
  torch::jit::Module module("ScaledLinear");
  module.register_parameter("weight", torch::arange(9, torch::kFloat32).reshape({3, 3}), false);
  module.register_buffer("scale", torch::full({1}, 2.0));
  module.define(R"(
    def forward(self, x):
        return x.mm(self.weight) * self.scale
  )");
  const auto input = torch::ones({1, 3});
  const auto expected = module.forward({input}).toTensor();
  {
    Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1}\n"));
    snap.track("model", module);
    snap.on_step_end(0);
  }
  // Change the live weights, then restore them in place.
  {
    torch::NoGradGuard no_grad;
    module.attr("weight").toTensor().zero_();
  }
  Snapshotter snap(make_config(dir.path()));
  snap.track("model", module);
  ASSERT_TRUE(snap.on_train_start().has_value());
  EXPECT_TRUE(torch::equal(module.forward({input}).toTensor(), expected));
  // The whole model loads and runs without its definition.
  const auto archive = dir.path() + "/step-000000000000/rank-00000.model.torchscript.pt";
  auto loaded = load_module(archive);
  loaded.eval();
  EXPECT_TRUE(torch::equal(loaded.forward({input}).toTensor(), expected));
  auto manifest = SnapshotStore::open_read_only(dir.path())->list().at(0).manifest;
  ASSERT_TRUE(manifest);
  EXPECT_NE(manifest->find("rank-00000.model.torchscript.pt"), nullptr) << "the archive is checksummed too";
  // save_module / load_module directly.
  save_module(module, dir.file("whole.pt"));
  EXPECT_TRUE(torch::equal(load_module(dir.file("whole.pt")).forward({input}).toTensor(), expected));
  EXPECT_TRUE(torch::equal(state_dict(loaded).at("weight"), state_dict(module).at("weight")));
}

}  // namespace
}  // namespace autosnap
