// The loop position in manifests and resume points: the same step has the
// same epoch and batch whether or not the run was interrupted, and a snapshot
// of an epoch's last step (taken before on_epoch_end) is not off by one.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <tuple>

#include "autosnap/autosnap.h"
#include "daemon/loop_position.h"
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
    Snapshotter snap(make_config(dir, kTriggers));
    int64_t x = 0;
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

}  // namespace
}  // namespace autosnap
