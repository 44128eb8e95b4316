// The snapshot daemon in one process: triggers, background flush and its
// consistency, overlap, backpressure, retention, error policy, restore and
// its fallbacks, events, TorchScript modules.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <atomic>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "autosnap/autosnap.h"
#include "autosnap/snapshotter.h"
#include "autosnap/torchscript.h"
#include "control_client.h"
#include "daemon/snapshotter_stats.h"
#include "daemon/staging.h"
#include "daemon/tracked.h"
#include "support/fault_fs.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::TempDir;
using testing::error_of;
using namespace std::chrono_literals;

Config make_config(const std::string& directory, const std::string& extra = "") {
  return Config::from_string("directory: " + directory + "\ncontrol: {socket: false}\nlog_level: warn\n" + extra,
                             "test.yaml");
}

Config make_config_with_socket(const std::string& directory, const std::string& extra) {
  return Config::from_string("directory: " + directory + "\nlog_level: warn\n" + extra, "test.yaml");
}

// What `autosnap snapshot` does, from another thread; a client-side failure (timeout) becomes {"client_error": ...}.
nlohmann::json request_snapshot(const std::string& directory, const std::string& reason) {
  try {
    return control::send_request(directory + "/control.sock", {{"cmd", "snapshot"}, {"reason", reason}}, 30s);
  } catch (const std::exception& e) {
    return {{"client_error", e.what()}};
  }
}

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

std::vector<nlohmann::json> read_events(const std::string& directory) {
  std::vector<nlohmann::json> events;
  std::ifstream in(directory + "/events.jsonl");
  std::string line;
  while (std::getline(in, line)) events.push_back(nlohmann::json::parse(line));
  return events;
}

int count_events(const std::string& directory, const std::string& kind) {
  int n = 0;
  for (const auto& e : read_events(directory)) n += e["event"] == kind;
  return n;
}

c10::IValue read_entry(const std::string& directory, int64_t step, const std::string& name) {
  auto store = SnapshotStore::open_read_only(directory);
  return dict_at(store->read_shard(step, 0, torch::kCPU), name);
}

TEST(Snapshotter, EveryStepsTriggerCommitsAndEventsDescribeIt) {
  TempDir dir;
  Model model;
  int64_t counter = 0;
  {
    Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 5, on_train_end: false}\nretention: {keep_last: 0}\n"));
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

TEST(Snapshotter, StagedSnapshotIsConsistentWhileParametersChange) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\nretention: {keep_last: 0}\n"
                                           "capture: {rng: false}\n"),
                   fs);
  snap.track("model", model);
  fs.append_delay_ms = 30;  // the write takes a while
  for (int64_t step = 0; step < 3; ++step) {
    model.set_all(static_cast<float>(step));
    snap.on_step_end(step);
    // Step `step + 1` changes every parameter while step `step` is being written.
    model.set_all(static_cast<float>(step + 1000));
  }
  snap.wait_until_finished();
  const auto stats = daemon::stats_of(snap);
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
  auto config = make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\nflush: {overlap: true}\n"
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
  EXPECT_EQ(daemon::stats_of(snap).committed, 4);
  for (int64_t step = 0; step < 4; ++step) {
    auto state = read_entry(dir.path(), step, "model");
    EXPECT_TRUE(torch::all(dict_at(state, "weight").toTensor() == static_cast<float>(step)).item<bool>());
    EXPECT_TRUE(torch::all(dict_at(state, "running").toTensor() == static_cast<float>(step)).item<bool>())
        << "buffers are copied at the step boundary, not later";
  }
}

// What makes overlap's stall small: only buffers are copied at the step
// boundary; parameter copies (changed only by optimizer.step()) are deferred.
TEST(Staging, OverlapDefersParameterCopiesAndCopiesBuffersAtOnce) {
  Model model;
  model.set_all(1);
  auto tracked = daemon::track_module(model);
  const c10::IValue live = tracked->capture();
  std::unordered_set<const void*> step_only;
  tracked->step_only_storages(live, step_only);
  daemon::StagingArena arena;
  std::vector<daemon::StorageCopy> copies;
  const c10::IValue staged = arena.stage(live, step_only, copies);
  ASSERT_EQ(copies.size(), 3u);
  std::vector<daemon::StorageCopy> now, later;
  for (auto& copy : copies) (copy.deferrable ? later : now).push_back(copy);
  EXPECT_EQ(now.size(), 1u) << "the buffer 'running'";
  EXPECT_EQ(later.size(), 2u) << "the parameters 'weight' and 'bias'";

  daemon::perform_copies(now);
  const auto staged_weight = dict_at(staged, "weight").toTensor();
  const auto staged_running = dict_at(staged, "running").toTensor();
  EXPECT_TRUE(torch::all(staged_running == 1).item<bool>()) << "buffers are staged at the boundary";
  EXPECT_FALSE(torch::equal(staged_weight, model.weight)) << "parameters are not copied yet";
  {
    torch::NoGradGuard no_grad;
    model.running.fill_(2);  // the next forward pass
  }
  daemon::DeferredCopies deferred(later);
  deferred.run_or_wait();  // before_optimizer_step()
  EXPECT_TRUE(torch::all(staged_weight == 1).item<bool>());
  EXPECT_TRUE(torch::all(staged_running == 1).item<bool>()) << "the staged buffer keeps the boundary's values";
}

TEST(Snapshotter, OverlapWithoutBeforeOptimizerStepDiscardsInsteadOfSavingAMix) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\nflush: {overlap: true}\n"
                                           "retention: {keep_last: 0}\n"),
                   fs);
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

TEST(Snapshotter, BackpressureWaitKeepsEverySnapshot) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\nretention: {keep_last: 0}\n"
                                           "flush: {max_pending: 1, when_busy: wait}\n"),
                   fs);
  snap.track("model", model);
  fs.append_delay_ms = 10;
  for (int64_t step = 0; step < 5; ++step) snap.on_step_end(step);
  snap.wait_until_finished();
  EXPECT_EQ(snap.all_steps().size(), 5u);
  EXPECT_EQ(daemon::stats_of(snap).skipped, 0);
}

TEST(Snapshotter, BackpressureSkipLogsTheSkippedSteps) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\nretention: {keep_last: 0}\n"
                                           "flush: {max_pending: 1, when_busy: skip}\n"),
                   fs);
  snap.track("model", model);
  fs.append_delay_ms = 40;
  for (int64_t step = 0; step < 5; ++step) snap.on_step_end(step);
  snap.wait_until_finished();
  const auto stats = daemon::stats_of(snap);
  EXPECT_GT(stats.skipped, 0);
  EXPECT_EQ(stats.committed + stats.skipped, 5);
  EXPECT_EQ(count_events(dir.path(), "skipped"), stats.skipped);
}

// when_busy: skip drops automatic snapshots, never one somebody asked for:
// the request waits for a free slot and is answered.
TEST(Snapshotter, RequestsAreTakenAndAnsweredEvenWhenBusyWithSkip) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  fs.append_delay_ms = 20;
  Model model;
  Snapshotter snap(make_config_with_socket(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\n"
                                                       "retention: {keep_last: 0}\n"
                                                       "flush: {max_pending: 1, when_busy: skip}\n"),
                   fs);
  snap.track("model", model);
  snap.on_step_end(0);
  std::atomic<bool> answered{false};
  nlohmann::json reply;
  std::thread client([&] {
    reply = request_snapshot(dir.path(), "by hand");
    answered = true;
  });
  for (int64_t step = 1; !answered && step < 5000; ++step) {
    snap.on_step_end(step);
    std::this_thread::sleep_for(2ms);
  }
  client.join();
  snap.wait_until_finished();
  ASSERT_TRUE(reply.value("ok", false)) << reply.dump();
  const auto step = reply["step"].get<int64_t>();
  EXPECT_EQ(step, reply["requested_after_step"].get<int64_t>() + 1) << reply.dump();
  EXPECT_GT(daemon::stats_of(snap).skipped, 0) << "automatic snapshots were skipped meanwhile";
  std::string reason;
  for (const auto& info : SnapshotStore::open_read_only(dir.path())->list()) {
    if (info.step == step && info.manifest) reason = info.manifest->reason;
  }
  EXPECT_EQ(reason, "by hand");
}

// A request that arrives after the last step, while that step's snapshot is
// still being written, is answered with that snapshot once it is committed.
TEST(Snapshotter, RequestAfterTheLastStepIsAnsweredOnceItsSnapshotCommits) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  fs.append_delay_ms = 200;
  Model model;
  Snapshotter snap(make_config_with_socket(dir.path(), "triggers: {every_steps: 1}\n"), fs);
  snap.track("model", model);
  snap.on_step_end(0);  // its snapshot is written slowly
  nlohmann::json reply;
  std::thread client([&] { reply = request_snapshot(dir.path(), "by hand"); });
  std::this_thread::sleep_for(100ms);  // the request is queued while step 0 is still being written
  snap.on_train_end();
  client.join();
  ASSERT_TRUE(reply.value("ok", false)) << reply.dump();
  EXPECT_EQ(reply["step"], 0) << reply.dump();
  EXPECT_EQ(snap.all_steps(), (std::vector<int64_t>{0}));
}

// Before any step there is no completed step: step 0 would claim training
// that did not happen, and resume would skip it.
TEST(Snapshotter, SnapshotNowBeforeAnyStepTakesNothing) {
  TempDir dir;
  Model model;
  Snapshotter snap(make_config(dir.path(), "triggers: {on_train_end: false, every_steps: 100}\n"));
  snap.track("model", model);
  EXPECT_FALSE(snap.on_train_start().has_value());
  EXPECT_NO_THROW(snap.snapshot_now("init"));
  snap.wait_until_finished();
  EXPECT_TRUE(snap.all_steps().empty());
  snap.on_step_end(0);  // every_steps fires at step 0
  snap.wait_until_finished();
  EXPECT_EQ(snap.all_steps(), (std::vector<int64_t>{0}));
}

TEST(Snapshotter, EverySecondsTriggerFollowsTheWallClock) {
  TempDir dir;
  int64_t value = 0;
  Snapshotter snap(make_config(dir.path(), "triggers: {every_seconds: 1, on_train_end: false}\nretention: {keep_last: 0}\n"));
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

TEST(Snapshotter, RetentionKeepsTheNewestAndEveryKth) {
  TempDir dir;
  Model model;
  Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\n"
                                           "retention: {keep_last: 2, keep_every_steps: 10}\n"));
  snap.track("model", model);
  for (int64_t step = 0; step < 26; ++step) snap.on_step_end(step);
  snap.wait_until_finished();
  EXPECT_EQ(snap.all_steps(), (std::vector<int64_t>{0, 10, 20, 24, 25}));
  EXPECT_EQ(count_events(dir.path(), "retention-deleted"), 26 - 5);
}

TEST(Snapshotter, FailedWritesWarnAndTrainingContinues) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\nretention: {keep_last: 0}\n"), fs);
  snap.track("model", model);
  snap.on_step_end(0);
  snap.wait_until_finished();
  fs.fail_writes_errno = EROFS;  // the directory became read-only: not even the tmp dir can be made
  EXPECT_NO_THROW(snap.on_step_end(1));
  snap.wait_until_finished();
  fs.fail_writes_errno = ENOSPC;  // the disk filled up while the shard was being written into the tmp dir
  fs.fail_only = "write";
  const int64_t appends_before = fs.appends;
  EXPECT_NO_THROW(snap.on_step_end(2));
  snap.wait_until_finished();
  EXPECT_GT(fs.appends, appends_before) << "the shard write must have started";
  fs.fail_writes_errno = 0;
  fs.fail_only = nullptr;
  EXPECT_NO_THROW(snap.on_step_end(3));  // the next trigger tries again
  snap.wait_until_finished();
  EXPECT_EQ(snap.all_steps(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(daemon::stats_of(snap).failed, 2);
  EXPECT_EQ(count_events(dir.path(), "failed"), 2);
  for (const auto& name : testing::list_names(dir.path())) {
    EXPECT_EQ(name.find(".tmp-"), std::string::npos) << "a failed snapshot left " << name;
  }
  try {
    snap.check_for_errors();
    ADD_FAILURE() << "check_for_errors must report the failure";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("Read-only file system"), std::string::npos) << e.what();
  }
}

TEST(Snapshotter, FailedWritesWithAbortThrowAtTheNextHook) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\non_error: abort\n"), fs);
  snap.track("model", model);
  fs.fail_writes_errno = ENOSPC;
  snap.on_step_end(0);
  snap.wait_until_finished();
  fs.fail_writes_errno = 0;
  try {
    snap.on_step_end(1);
    ADD_FAILURE() << "on_error: abort must throw at the next hook";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("No space left on device"), std::string::npos) << e.what();
  }
}

TEST(Snapshotter, RestoreBringsBackEverythingTracked) {
  TempDir dir;
  Model model;
  torch::optim::Adam optimizer(model.parameters(), torch::optim::AdamOptions(0.1));
  int64_t epoch = 3;
  double loss = 0.25;
  bool flag = true;
  std::string note = "hello";
  at::Tensor extra = torch::arange(5);
  at::Tensor lazily_defined;
  std::vector<int64_t> user_state = {1, 2, 3};
  auto track_all = [&](Snapshotter& snap) {
    snap.track("model", model);
    snap.track("optimizer", optimizer);
    snap.track("epoch", epoch);
    snap.track("loss", loss);
    snap.track("flag", flag);
    snap.track("note", note);
    snap.track("extra", extra);
    snap.track("lazy", lazily_defined);
    snap.track("user", [&] { return c10::IValue(user_state); },
               [&](const c10::IValue& v) { user_state = v.toIntVector(); });
  };
  model.set_all(1.5);
  model.weight.mutable_grad() = torch::ones_like(model.weight);
  model.bias.mutable_grad() = torch::ones_like(model.bias);
  optimizer.step();
  const auto trained_weight = model.weight.detach().clone();
  lazily_defined = torch::ones({2});
  torch::manual_seed(7);
  at::Tensor expected_random;
  {
    Snapshotter snap(make_config(dir.path(), "triggers: {on_train_end: true}\n"));
    track_all(snap);
    snap.on_step_end(41);
    snap.on_epoch_end(3);
    snap.on_train_end();
    expected_random = torch::randn({4});  // what a resumed run must draw next
  }
  model.set_all(0);
  optimizer.param_groups()[0].options().set_lr(9);
  epoch = 0;
  loss = 0;
  flag = false;
  note = "";
  extra.zero_();
  lazily_defined = at::Tensor();
  user_state.clear();
  torch::manual_seed(123);

  Snapshotter snap(make_config(dir.path()));
  track_all(snap);
  auto resumed = snap.on_train_start();
  ASSERT_TRUE(resumed);
  EXPECT_EQ(resumed->step, 41);
  EXPECT_EQ(resumed->epoch, 3);
  EXPECT_EQ(resumed->reason, "train_end");
  EXPECT_TRUE(torch::equal(model.weight, trained_weight));
  EXPECT_TRUE(torch::all(model.running == 1.5).item<bool>());
  EXPECT_DOUBLE_EQ(optimizer.param_groups()[0].options().get_lr(), 0.1);
  EXPECT_EQ(epoch, 3);
  EXPECT_DOUBLE_EQ(loss, 0.25);
  EXPECT_TRUE(flag);
  EXPECT_EQ(note, "hello");
  EXPECT_TRUE(torch::equal(extra, torch::arange(5)));
  ASSERT_TRUE(lazily_defined.defined());
  EXPECT_TRUE(torch::equal(lazily_defined, torch::ones({2})));
  EXPECT_EQ(user_state, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_TRUE(torch::equal(torch::randn({4}), expected_random)) << "the random generator state must be restored";
  EXPECT_EQ(count_events(dir.path(), "restored"), 1);
}

TEST(Snapshotter, RestoreFallsBackPastACorruptSnapshot) {
  TempDir dir;
  int64_t value = 0;
  {
    Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\n"));
    snap.track("value", value);
    for (int64_t step = 0; step < 3; ++step) {
      value = step * 10;
      snap.on_step_end(step);
    }
  }
  const std::string shard = dir.path() + "/step-000000000002/rank-00000.pt";
  testing::flip_byte(shard, testing::file_size(shard) / 2);
  Snapshotter snap(make_config(dir.path()));
  snap.track("value", value);
  auto resumed = snap.on_train_start();
  ASSERT_TRUE(resumed);
  EXPECT_EQ(resumed->step, 1);
  EXPECT_EQ(value, 10);
  EXPECT_TRUE(default_file_system().status(dir.path() + "/step-000000000002.corrupt-1").exists);
  EXPECT_EQ(count_events(dir.path(), "quarantined"), 1);
}

TEST(Snapshotter, ResumeModes) {
  TempDir dir;
  int64_t value = 0;
  {
    Snapshotter snap(make_config(dir.path(), "resume: required\n"));
    snap.track("value", value);
    try {
      snap.on_train_start();
      ADD_FAILURE() << "resume: required without a snapshot must fail";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("resume: required, but"), std::string::npos) << e.what();
    }
  }
  {
    Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1}\n"));
    snap.track("value", value);
    value = 5;
    snap.on_step_end(0);
  }
  value = 0;
  {
    // A new run would collide with the earlier run's steps: refused, nothing touched.
    Snapshotter snap(make_config(dir.path(), "resume: never\n"));
    snap.track("value", value);
    const auto message = error_of<Error>([&] { snap.on_train_start(); });
    EXPECT_NE(message.find("resume: never, but '" + dir.path() + "' already holds snapshots of an earlier run (newest: step 0)"),
              std::string::npos)
        << message;
    EXPECT_EQ(value, 0);
  }
  EXPECT_EQ(SnapshotStore::open_read_only(dir.path())->valid_steps(), (std::vector<int64_t>{0}));
  TempDir fresh;
  Snapshotter snap(make_config(fresh.path(), "resume: never\n"));
  snap.track("value", value);
  EXPECT_FALSE(snap.on_train_start().has_value());
}

TEST(Snapshotter, StrictRestoreNamesWhatDoesNotMatchAndChangesNothing) {
  TempDir dir;
  int64_t a = 1, b = 2;
  {
    Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1}\n"));
    snap.track("a", a);
    snap.track("b", b);
    snap.on_step_end(0);
  }
  a = 0;
  int64_t c = 0;
  {
    Snapshotter snap(make_config(dir.path()));
    snap.track("a", a);
    snap.track("c", c);
    try {
      snap.on_train_start();
      ADD_FAILURE() << "a mismatch must fail with restore.strict";
    } catch (const StateMismatch& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("tracked but not in the snapshot: c"), std::string::npos) << message;
      EXPECT_NE(message.find("in the snapshot but not tracked: b"), std::string::npos) << message;
    }
    EXPECT_EQ(a, 0) << "nothing may be restored when the snapshot does not fit";
  }
  {
    Snapshotter snap(make_config(dir.path(), "restore: {strict: false}\n"));
    snap.track("a", a);
    snap.track("c", c);
    ASSERT_TRUE(snap.on_train_start().has_value());
    EXPECT_EQ(a, 1);
    EXPECT_EQ(c, 0);
  }

  double wrong_type = 0;
  Snapshotter typed(make_config(dir.path(), "restore: {strict: false}\n"));
  typed.track("a", wrong_type);
  EXPECT_NO_THROW(typed.on_train_start()) << "an int restores into a double";
  EXPECT_EQ(wrong_type, 1.0);
}

TEST(Snapshotter, TrackNamesAreChecked) {
  TempDir dir;
  Snapshotter snap(make_config(dir.path()));
  int64_t x = 0;
  snap.track("x", x);
  EXPECT_THROW(snap.track("x", x), Error);
  EXPECT_THROW(snap.track("rng_state", x), Error);
  EXPECT_THROW(snap.track("a/b", x), Error);
  EXPECT_THROW(snap.track("", x), Error);
}

TEST(Snapshotter, OneSnapshotPerStep) {
  TempDir dir;
  int64_t x = 0;
  Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 2, on_epoch_end: true, on_train_end: true}\n"));
  snap.track("x", x);
  snap.on_step_end(0);  // every_steps
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
    Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\nflush: {max_pending: 3}\n"
                                             "retention: {keep_last: 0}\n"),
                     fs);
    snap.track("model", model);
    fs.append_delay_ms = 20;
    for (int64_t step = 0; step < 3; ++step) snap.on_step_end(step);
    snap.close();
  }
  auto store = SnapshotStore::open_read_only(dir.path());
  EXPECT_EQ(store->valid_steps(), (std::vector<int64_t>{0, 1, 2}));
}

TEST(Snapshotter, SynchronousModeAndStagingLimit) {
  TempDir dir;
  Model model;
  {
    Snapshotter snap(make_config(dir.path() + "/sync", "triggers: {every_steps: 1}\nflush: {mode: sync}\n"));
    snap.track("model", model);
    model.set_all(3);
    snap.on_step_end(0);
    model.set_all(4);  // the write already happened
    EXPECT_EQ(daemon::stats_of(snap).committed, 1);
    EXPECT_EQ(daemon::stats_of(snap).staging_bytes, 0u) << "sync mode writes from the live tensors";
  }
  EXPECT_TRUE(torch::all(dict_at(read_entry(dir.path() + "/sync", 0, "model"), "weight").toTensor() == 3).item<bool>());
  Snapshotter snap(make_config(dir.path() + "/limited", "triggers: {every_steps: 1}\nflush: {staging_memory_limit: 1KiB}\n"));
  snap.track("model", model);
  snap.on_step_end(0);
  EXPECT_EQ(daemon::stats_of(snap).committed, 1) << "too big to stage: written synchronously";
  EXPECT_EQ(daemon::stats_of(snap).staging_bytes, 0u);
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
