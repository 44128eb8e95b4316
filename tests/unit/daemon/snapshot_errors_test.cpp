// Failed background writes: on_error warn (training continues) and abort
// (the next hook throws).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "autosnap/autosnap.h"
#include "autosnap/snapshotter.h"
#include "support/fault_fs.h"
#include "support/snapshotter_fixtures.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::count_events;
using testing::make_config;
using testing::Model;
using testing::TempDir;

TEST(Snapshotter, FailedWritesWarnAndTrainingContinues) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  Snapshotter snap(
      make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\nretention: {keep_last: 0}\n"),
      {&fs});
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
  EXPECT_EQ(snap.stats().failed, 2);
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
  Snapshotter snap(
      make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\non_error: abort\n"), {&fs});
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

// Warnings alone let a job train on for days unprotected: the third failed
// snapshot in a row (max_consecutive_failures) makes the next step's hook
// throw, even with on_error: warn; a success in between starts the count again.
TEST(Snapshotter, FailuresInARowBecomeAnErrorEvenWithWarn) {
  TempDir dir;
  testing::FaultInjectingFileSystem fs;
  Model model;
  Snapshotter snap(
      make_config(dir.path(),
                  "triggers: {every_steps: 1, on_train_end: false}\nmax_consecutive_failures: 3\n"),
      {&fs});
  snap.track("model", model);
  int64_t step = 0;
  auto step_and_wait = [&] {
    snap.on_step_end(step++);
    snap.wait_until_finished();
  };
  fs.fail_writes_errno = ENOSPC;
  step_and_wait();
  step_and_wait();
  fs.fail_writes_errno = 0;
  step_and_wait();  // a success: the count starts again
  fs.fail_writes_errno = ENOSPC;
  step_and_wait();
  step_and_wait();
  EXPECT_NO_THROW(step_and_wait()) << "the third failure in a row is told at the next step";
  const std::string error = testing::error_of<Error>([&] { snap.on_step_end(step++); });
  EXPECT_NE(
      error.find("3 snapshots in a row failed (max_consecutive_failures: 3), so this job is not protected"),
      std::string::npos)
      << error;
  EXPECT_NE(error.find("the last snapshot this run committed or restored is step 2"), std::string::npos)
      << error;
  EXPECT_NE(error.find("No space left on device"), std::string::npos) << error;
  const auto events = testing::read_events(dir.path());
  int64_t in_a_row = 0;
  for (const auto& e : events)
    if (e["event"] == "failed") in_a_row = e["in_a_row"].get<int64_t>();
  EXPECT_EQ(in_a_row, 3) << "events.jsonl counts the failures in a row";
}

}  // namespace
}  // namespace autosnap
