// Snapshots asked for from outside the training loop (control socket,
// snapshot_now): always taken, always answered.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "autosnap/autosnap.h"
#include "autosnap/snapshotter.h"
#include "autosnap/tools.h"
#include "support/fault_fs.h"
#include "support/snapshotter_fixtures.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::make_config;
using testing::make_config_with_socket;
using testing::Model;
using testing::request_snapshot;
using testing::TempDir;
using namespace std::chrono_literals;

TEST(Snapshotter, RequestsAreTakenAndAnsweredEvenWhenBusyWithSkip) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  fs.append_delay_ms = 20;
  Model model;
  Snapshotter snap(make_config_with_socket(dir.path(),
                                           "triggers: {every_steps: 1, on_train_end: false}\n"
                                           "retention: {keep_last: 0}\n"
                                           "flush: {max_pending: 1, when_busy: skip}\n"),
                   {&fs});
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
  EXPECT_GT(snap.stats().skipped, 0) << "automatic snapshots were skipped meanwhile";
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
  Snapshotter snap(make_config_with_socket(dir.path(), "triggers: {every_steps: 1}\n"), {&fs});
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

}  // namespace
}  // namespace autosnap
