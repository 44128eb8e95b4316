// WriteModeChooser (fs/write_mode.h): which way big files are written on a
// device, O_DIRECT or through the page cache, from how fast each went.
#include "fs/write_mode.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "autosnap/values.h"
#include "format/checksum.h"
#include "format/shard.h"
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

TEST(WriteModeChooser, SizeClassesAreTimedAndDecidedApart) {
  constexpr uint64_t kMiB = 1 << 20;
  EXPECT_EQ(WriteModeChooser::size_class(1), 0);
  EXPECT_EQ(WriteModeChooser::size_class(128 * kMiB - 1), 0);
  EXPECT_EQ(WriteModeChooser::size_class(128 * kMiB), 1);
  EXPECT_EQ(WriteModeChooser::size_class(2048 * kMiB), 3);
  EXPECT_EQ(WriteModeChooser::size_class(uint64_t{1} << 40), WriteModeChooser::kSizeClasses - 1);

  testing::LogCapture log;
  WriteModeChooser chooser;
  constexpr uint64_t kHuge = 2200 * kMiB;  // 2.3 GB
  auto wrote_huge = [&](bool direct, double mb_per_s) {
    chooser.record(kDisk, "/snaps/step-2/shard.pt", direct, kHuge, kHuge / 1e6 / mb_per_s);
  };
  // 100 MB files: as fast either way, the page cache a little faster.
  for (int i = 0; i < 2; ++i) {
    wrote(chooser, true, 650);
    wrote(chooser, false, 660);
  }
  EXPECT_FALSE(chooser.use_direct(kDisk, kBig));
  // A 2.3 GB file is timed on its own, both ways, O_DIRECT first, before its size is decided.
  EXPECT_TRUE(chooser.use_direct(kDisk, kHuge));
  wrote_huge(true, 1700);
  EXPECT_FALSE(chooser.use_direct(kDisk, kHuge));
  wrote_huge(false, 700);
  EXPECT_TRUE(chooser.use_direct(kDisk, kHuge));
  wrote_huge(true, 1650);
  wrote_huge(false, 720);
  EXPECT_TRUE(log.has(
      "big files on the device of /snaps/step-2 are written with O_DIRECT from now on (O_DIRECT "
      "1675 MB/s, through the page cache 710 MB/s: medians of the last 3 files or fewer each way, all "
      "of 2 GiB to 8 GiB, fsync"))
      << log.text();
  EXPECT_TRUE(chooser.use_direct(kDisk, kHuge));
  EXPECT_FALSE(chooser.use_direct(kDisk, kBig)) << "the 100 MB files' choice stands";
  EXPECT_TRUE(chooser.use_direct(kDisk)) << "a file of unknown size is taken for the newest timed one's size";
  EXPECT_DOUBLE_EQ(chooser.direct_mb_per_s(kDisk, kHuge), 1675);
  EXPECT_DOUBLE_EQ(chooser.direct_mb_per_s(kDisk, kBig), 650);
  EXPECT_DOUBLE_EQ(chooser.buffered_mb_per_s(kDisk, kBig), 660);
}

// A file of a torch.save-format shard hears its size before its first byte:
// the bytes of its tensors' storages.
TEST(WriteModeChooser, AShardTellsItsFileItsSize) {
  class SizeHeard final : public WritableFile {
   public:
    void append(const void*, size_t size) override {
      if (heard_before_append == 0 && written == 0) heard_before_append = heard;
      written += size;
    }
    void expect_size(uint64_t bytes) override { heard = bytes; }
    void flush() override {}
    void sync() override {}
    void close() override {}
    const std::string& path() const override { return path_; }
    uint64_t heard = 0, heard_before_append = 0, written = 0;

   private:
    std::string path_ = "memory";
  } file;
  const auto state = dict({{"weights", torch::zeros({1000})},
                           {"layers", c10::List<at::Tensor>({torch::zeros({10, 10}, torch::kFloat64)})},
                           {"step", int64_t{7}}});
  format::HashingWritableFile hashing(file);  // passes it on, as every writer's wrapper does
  format::write_shard(state, hashing);
  EXPECT_EQ(file.heard_before_append, 4000u + 800u);
  EXPECT_GT(file.written, 4800u);
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
