// The loop position in manifests and resume points: the same step has the
// same epoch and batch whether or not the run was interrupted, and a snapshot
// of an epoch's last step (taken before on_epoch_end) is not off by one.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <tuple>

#include "autosnap/autosnap.h"
#include "autosnap/tools.h"
#include "daemon/loop_position.h"
#include "daemon/loop_slips.h"
#include "support/log_capture.h"
#include "support/snapshotter_fixtures.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::make_config;
using testing::TempDir;

constexpr int64_t kEpochs = 3, kBatchesPerEpoch = 4;
const char* const kTriggers =
    "triggers: {every_steps: 3, on_epoch_end: true, on_train_end: true}\nretention: {keep_last: 0}\n";

struct Killed {};

// An epoch × batch loop without a sampler (it skips the done batches itself).
// After step `kill_after` it leaves by an exception, like a kill: no final snapshot.
std::optional<ResumePoint> run(const std::string& dir, int64_t kill_after) {
  std::optional<ResumePoint> resumed;
  try {
    int64_t x = 0;
    Snapshotter snap(make_config(dir, kTriggers));
    snap.track("x", x);
    resumed = snap.on_train_start();
    int64_t step = resumed ? resumed->step + 1 : 0;
    for (int64_t epoch = resumed ? resumed->next_epoch() : 0; epoch < kEpochs; ++epoch) {
      snap.on_epoch_start(epoch);
      const int64_t first = resumed && epoch == resumed->next_epoch() ? resumed->next_batch() : 0;
      for (int64_t batch = first; batch < kBatchesPerEpoch; ++batch) {
        ++x;
        snap.on_step_end(step);
        if (step++ == kill_after) {
          snap.wait_until_finished();
          throw Killed();
        }
      }
      snap.on_epoch_end(epoch);
    }
    snap.close();
  } catch (const Killed&) {
  }
  return resumed;
}

using Positions = std::map<int64_t, std::tuple<int64_t, int64_t, bool>>;

Positions positions(const std::string& dir) {
  Positions out;
  auto store = SnapshotStore::open_read_only(dir);
  for (const auto& info : store->list()) {
    if (info.manifest)
      out[info.step] = {info.manifest->epoch, info.manifest->batch, info.manifest->epoch_ended};
  }
  return out;
}

TEST(LoopPosition, TheSameStepHasTheSamePositionWithAndWithoutInterruption) {
  TempDir whole;
  run(whole.path(), -1);
  const Positions expected = positions(whole.path());
  // every_steps: 3 snapshots steps 0, 3, 6, 9; epoch ends add 7 and 11.
  ASSERT_EQ(expected.size(), 6u);
  EXPECT_EQ(expected.at(3), std::make_tuple(int64_t{0}, int64_t{4}, false))
      << "the snapshot of epoch 0's last step is taken before on_epoch_end: still epoch 0, all 4 batches";
  EXPECT_EQ(expected.at(6), std::make_tuple(int64_t{1}, int64_t{3}, false));
  EXPECT_EQ(expected.at(7), std::make_tuple(int64_t{1}, int64_t{4}, true));
  EXPECT_EQ(expected.at(11), std::make_tuple(int64_t{2}, int64_t{4}, true));

  TempDir dir;
  EXPECT_FALSE(run(dir.path(), 2));
  auto resumed = run(dir.path(), 5);
  ASSERT_TRUE(resumed);
  EXPECT_EQ(resumed->step, 0);
  EXPECT_EQ(resumed->next_epoch(), 0);
  EXPECT_EQ(resumed->next_batch(), 1);

  resumed = run(dir.path(), 8);
  ASSERT_TRUE(resumed);
  EXPECT_EQ(resumed->step, 3);
  EXPECT_EQ(std::make_tuple(resumed->epoch, resumed->batch, resumed->epoch_ended),
            std::make_tuple(int64_t{0}, int64_t{4}, false));
  EXPECT_EQ(resumed->next_epoch(), 0) << "epoch 0 resumes with nothing left, so on_epoch_end(0) still runs";
  EXPECT_EQ(resumed->next_batch(), 4);

  resumed = run(dir.path(), -1);
  ASSERT_TRUE(resumed);
  EXPECT_EQ(resumed->step, 7);
  EXPECT_TRUE(resumed->epoch_ended);
  EXPECT_EQ(resumed->next_epoch(), 2);
  EXPECT_EQ(resumed->next_batch(), 0);
  EXPECT_EQ(positions(dir.path()), expected);
}

TEST(LoopPosition, EpochsCountedFromOneAreTakenFromTheHooks) {
  daemon::LoopPosition p;
  p.epoch_started(1);
  p.step_ended();
  EXPECT_EQ(p.epoch, 1);
  EXPECT_EQ(p.batch, 1);
  p.step_ended();
  p.epoch_finished(1);
  p.step_ended();  // no on_epoch_start: the next epoch begins
  EXPECT_EQ(p.epoch, 2);
  EXPECT_EQ(p.batch, 1);
  p.epoch_started(2);  // a resumed run's loop calls it again for the epoch in progress
  EXPECT_EQ(p.batch, 1);
  EXPECT_TRUE(p.mid_epoch());
}

TEST(LoopPosition, ANegativeEpochIsAnErrorNotAQuarantinedSnapshot) {
  TempDir dir;
  Snapshotter snap(make_config(dir.path()));
  EXPECT_THROW(snap.on_epoch_start(-1), Error);
  EXPECT_THROW(snap.on_epoch_end(-1), Error);
}

TEST(LoopPosition, AManifestFromBeforeTheLoopPositionReadsAsAnEndedEpoch) {
  const std::string old_text =
      "format_version: 1\nstep: 41\nepoch: 3\ntime: \"2026-11-28T13:05:07.123Z\"\nreason: \"train_end\"\n"
      "world_size: 1\nlibrary_version: \"0.1.0\"\nlibtorch_version: \"1.13.1\"\n"
      "files: [{name: rank-00000.pt, size: 1, xxh3_64: \"0000000000000001\"}]\n";
  const Manifest m = Manifest::parse(old_text, "old");
  EXPECT_EQ(m.epoch, 3);
  EXPECT_TRUE(m.epoch_ended);
  const Manifest again = Manifest::parse(m.to_yaml(), "again");
  EXPECT_EQ(std::make_tuple(again.epoch, again.batch, again.epoch_ended),
            std::make_tuple(m.epoch, m.batch, m.epoch_ended));
  EXPECT_THROW(Manifest::parse(old_text + "batch: -1\nepoch_ended: false\n", "negative"), CorruptSnapshot);
}

// Version 2 is the loop position's format: a manifest of it without one is
// damaged; version 1 manifests written with it (before the bump) keep it.
TEST(LoopPosition, VersionTwoManifestsHoldTheLoopPositionAndVersionOneIsStillRead) {
  const std::string rest =
      "step: 41\nepoch: 3\ntime: \"2026-11-28T13:05:07.123Z\"\nreason: \"train_end\"\n"
      "world_size: 1\nlibrary_version: \"0.1.0\"\nlibtorch_version: \"1.13.1\"\n"
      "files: [{name: rank-00000.pt, size: 1, xxh3_64: \"0000000000000001\"}]\n";
  EXPECT_THROW(Manifest::parse("format_version: 2\n" + rest, "v2"), CorruptSnapshot);
  const Manifest v2 = Manifest::parse("format_version: 2\n" + rest + "batch: 5\nepoch_ended: false\n", "v2");
  EXPECT_EQ(std::make_tuple(v2.epoch, v2.batch, v2.epoch_ended),
            std::make_tuple(int64_t{3}, int64_t{5}, false));
  const Manifest v1 = Manifest::parse("format_version: 1\n" + rest + "batch: 5\nepoch_ended: false\n", "v1");
  EXPECT_EQ(std::make_tuple(v1.epoch, v1.batch, v1.epoch_ended),
            std::make_tuple(int64_t{3}, int64_t{5}, false));
  EXPECT_EQ(Manifest().to_yaml().find("format_version: 2"), 0u) << "new snapshots are written as version 2";
  EXPECT_THROW(Manifest::parse("format_version: 0\n" + rest, "v0"), UnsupportedFormat);
}

// The DCGAN example's loop, ported as a user first does: epochs numbered from
// 1, on_epoch_end(epoch) but no on_epoch_start. Its first epoch's steps are
// counted in epoch 0, so a snapshot in them resumes one epoch too early and
// the run trains an epoch more than an uninterrupted one: said at once.
TEST(LoopSlips, EpochsNumberedFromOneWithoutOnEpochStartAreWarnedAbout) {
  testing::LogCapture log;
  TempDir dir;
  {
    int64_t x = 0;
    Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 2}\n"));
    snap.track("x", x);
    snap.on_train_start();
    int64_t step = 0;
    for (int64_t epoch = 1; epoch <= 2; ++epoch) {
      for (int64_t batch = 0; batch < 3; ++batch) snap.on_step_end(step++);
      snap.on_epoch_end(epoch);
    }
    snap.close();
  }
  EXPECT_TRUE(log.has("on_epoch_end(1), but autosnap counted the 3 step(s) since the epoch began in epoch 0"))
      << log.text();
  EXPECT_TRUE(log.has("call on_epoch_start(epoch) at the top of every epoch")) << log.text();
}

// A resumed loop that ignores the ResumePoint: it starts at another epoch and
// counts steps from a batch counter. Both slips are named, with what the loop should have done.
TEST(LoopSlips, AResumedLoopThatStartsOverIsWarnedAbout) {
  TempDir dir;
  run(dir.path(), 5);  // killed after step 5: the newest snapshot is step 3, epoch 0's last (before its end)
  testing::LogCapture log;
  {
    int64_t x = 0;  // tracked objects outlive the snapshotter: its destructor takes the train-end snapshot
    Snapshotter snap(make_config(dir.path(), kTriggers));
    snap.track("x", x);
    auto resumed = snap.on_train_start();
    ASSERT_TRUE(resumed);
    snap.on_epoch_start(1);  // should be next_epoch()
    snap.on_step_end(1);     // should be resumed->step + 1
    snap.wait_until_finished();
  }
  EXPECT_TRUE(
      log.has("on_epoch_start(1) right after resuming from step 3, which was taken in epoch 0 after 4 "
              "batch(es): the loop should continue with epoch 0 (ResumePoint::next_epoch())"))
      << log.text();
  EXPECT_TRUE(log.has("on_step_end(1) after step 3: step numbers must grow")) << log.text();
  EXPECT_TRUE(log.has("continues with step 4 (ResumePoint::step + 1)")) << log.text();
}

// The loops that are right stay silent, each slip is told once.
TEST(LoopSlips, RightLoopsAreNotWarnedAboutAndASlipIsToldOnce) {
  daemon::LoopSlips slips;
  daemon::LoopPosition p;
  std::optional<int64_t> last;  // the snapshotter's last step
  for (int64_t epoch = 1; epoch <= 3; ++epoch) {  // numbered from 1, with on_epoch_start
    EXPECT_EQ(slips.epoch_starting(epoch, p), "");
    p.epoch_started(epoch);
    for (int64_t b = 0; b < 2; ++b) {
      const int64_t step = (epoch - 1) * 2 + b;
      EXPECT_EQ(slips.step_ending(step, last), "");
      last = step;
      p.step_ended();
    }
    EXPECT_EQ(slips.epoch_ending(epoch, p), "");
    p.epoch_finished(epoch);
  }
  // Resumed at an epoch's last step before its on_epoch_end: that epoch again, with nothing left.
  daemon::LoopSlips resumed;
  daemon::LoopPosition at{2, 2, false};
  resumed.resumed(5);
  EXPECT_EQ(resumed.epoch_starting(2, at), "");
  EXPECT_EQ(resumed.epoch_ending(2, at), "");
  at.epoch_finished(2);
  EXPECT_EQ(resumed.epoch_starting(3, at), "");
  EXPECT_EQ(resumed.step_ending(6, 5), "");
  // Told once.
  EXPECT_NE(resumed.step_ending(6, 6), "");
  EXPECT_EQ(resumed.step_ending(6, 6), "");
  EXPECT_NE(resumed.epoch_starting(5, at), "") << "after on_epoch_end(2), epoch 3 is next";
  EXPECT_EQ(resumed.epoch_starting(5, at), "");
}

}  // namespace
}  // namespace autosnap
