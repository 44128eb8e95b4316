// WriteModeChooser (fs/write_mode.h): which way big files are written on a
// device, O_DIRECT or through the page cache, from how fast each went.
#include "fs/write_mode.h"

#include <gtest/gtest.h>

#include "support/log_capture.h"

namespace autosnap {
namespace {

constexpr uint64_t kDisk = 42;
constexpr uint64_t kBig = 100'000'000;  // 100 MB: a file the chooser times

// A file of 100 MB written at `mb_per_s`.
void wrote(WriteModeChooser& chooser, bool direct, double mb_per_s) {
  chooser.record(kDisk, "/snaps/step-1/shard.pt", direct, kBig, 100.0 / mb_per_s);
}

TEST(WriteModeChooser, TimesBothWaysTwiceThenWritesTheFasterOneAndSaysSo) {
  testing::LogCapture log;
  WriteModeChooser chooser;
  EXPECT_TRUE(chooser.use_direct(kDisk)) << "O_DIRECT first, as before any timing";
  wrote(chooser, true, 700);
  EXPECT_FALSE(chooser.use_direct(kDisk));
  wrote(chooser, false, 1000);
  EXPECT_TRUE(chooser.use_direct(kDisk));
  wrote(chooser, true, 720);
  EXPECT_FALSE(chooser.use_direct(kDisk));
  EXPECT_FALSE(log.has("written")) << "nothing is said before both ways were timed twice";
  wrote(chooser, false, 1040);
  EXPECT_TRUE(
      log.has("big files on the device of /snaps/step-1 are written through the page cache "
              "from now on (O_DIRECT 710 MB/s, through the page cache 1020 MB/s"))
      << log.text();
  EXPECT_DOUBLE_EQ(chooser.direct_mb_per_s(kDisk), 710);
  EXPECT_DOUBLE_EQ(chooser.buffered_mb_per_s(kDisk), 1020);
  // Decided: the page cache, except every kRetryEvery-th file, which tries O_DIRECT again.
  int direct = 0;
  for (int i = 1; i <= 2 * WriteModeChooser::kRetryEvery; ++i) {
    if (chooser.use_direct(kDisk)) {
      ++direct;
      EXPECT_EQ(i % WriteModeChooser::kRetryEvery, 0) << "file " << i;
    }
  }
  EXPECT_EQ(direct, 2);
  EXPECT_TRUE(chooser.use_direct(kDisk + 1)) << "another device is timed on its own";
}

TEST(WriteModeChooser, FollowsADiskWhoseSpeedChanges) {
  testing::LogCapture log;
  WriteModeChooser chooser;
  for (int i = 0; i < 2; ++i) {
    wrote(chooser, true, 2000);
    wrote(chooser, false, 800);
  }
  EXPECT_TRUE(chooser.use_direct(kDisk));
  EXPECT_TRUE(log.has("are written with O_DIRECT from now on")) << log.text();
  // The retries find O_DIRECT slower now (the host began caching it): the median turns.
  wrote(chooser, true, 600);
  EXPECT_TRUE(chooser.use_direct(kDisk)) << "one slow file does not turn a median of three";
  wrote(chooser, true, 650);
  EXPECT_FALSE(chooser.use_direct(kDisk));
  EXPECT_TRUE(log.has("are written through the page cache from now on (O_DIRECT 650 MB/s")) << log.text();
}

TEST(WriteModeChooser, SmallFilesAreNotTimed) {
  WriteModeChooser chooser;
  chooser.record(kDisk, "/snaps/manifest.yaml", false, WriteModeChooser::kMinTimedBytes - 1, 0.001);
  EXPECT_EQ(chooser.buffered_mb_per_s(kDisk), 0) << "a small file times the fsync's latency, not the disk";
  EXPECT_TRUE(chooser.use_direct(kDisk));
  EXPECT_TRUE(chooser.use_direct(kDisk)) << "untimed files change nothing";
}

TEST(WriteModeChooser, AFixedModeAndARefusingDeviceAreObeyed) {
  WriteModeChooser chooser;
  for (int i = 0; i < 3; ++i) {
    wrote(chooser, true, 500);
    wrote(chooser, false, 1500);
  }
  EXPECT_FALSE(chooser.use_direct(kDisk));
  chooser.set_mode(DirectIo::kAlways);
  for (int i = 0; i < WriteModeChooser::kRetryEvery; ++i) EXPECT_TRUE(chooser.use_direct(kDisk));
  chooser.set_mode(DirectIo::kNever);
  chooser.reset();
  for (int i = 0; i < WriteModeChooser::kRetryEvery; ++i) EXPECT_FALSE(chooser.use_direct(kDisk));
  chooser.set_mode(DirectIo::kAuto);
  chooser.direct_refused(kDisk);  // e.g. tmpfs
  EXPECT_FALSE(chooser.use_direct(kDisk));
  EXPECT_TRUE(chooser.use_direct(kDisk + 1));
}

}  // namespace
}  // namespace autosnap
