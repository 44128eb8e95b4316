// Exact mid-epoch resume of a real loop: train_gan (two models with
// BatchNorm, two Adam optimizers, a shuffling loader with 2 worker threads,
// epoch × batch loops) is SIGKILLed at random moments and restarted; the
// final models, optimizers and random generator state must equal an
// uninterrupted run's byte for byte. Once with flush.overlap off, once on.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <random>
#include <regex>
#include <thread>

#include "autosnap/autosnap.h"
#include "support/interop_cases.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::ChildProcess;
using testing::TempDir;

constexpr int kKills = 12;
constexpr int kBatchesPerEpoch = 16;  // 500 samples, batches of 32: the last has 20

// 30 epochs of 16 steps: more than the kills can get through (each killed run
// lives at most 700 ms and pauses 20 ms per step: at most 35 steps, 420 in all).
std::vector<std::string> gan_command(const std::string& out, const std::string& config, bool slow = false,
                                     int epochs = 30) {
  std::vector<std::string> argv = {testing::example_path("train_gan"), "--epochs", std::to_string(epochs),
                                   "--workers", "2"};
  if (slow) argv.insert(argv.end(), {"--sleep-ms", "20"});
  if (!config.empty()) argv.insert(argv.end(), {"--config", config});
  if (!out.empty()) argv.insert(argv.end(), {"--out", out});
  return argv;
}

struct Resumed {
  int64_t step = -1, epoch = -1, batches_done = -1;
};

Resumed resumed_from(const std::string& output) {
  static const std::regex pattern("resumed from step ([0-9]+) \\([^)]*\\): epoch ([0-9]+), ([0-9]+) batches");
  std::smatch match;
  Resumed r;
  if (std::regex_search(output, match, pattern)) {
    r.step = std::stoll(match[1]);
    r.epoch = std::stoll(match[2]);
    r.batches_done = std::stoll(match[3]);
  }
  return r;
}

constexpr const char* kNoDataPosition = "no data position is tracked";

std::string write_config(const TempDir& dir, const std::string& flush) {
  const std::string config = dir.file("autosnap.yaml");
  testing::write_text(config, "directory: " + dir.file("snapshots") +
                                  "\ntriggers: {every_steps: 3}\nretention: {keep_last: 2}\n"
                                  "flush: " +
                                  flush + "\ncontrol: {socket: false}\nlog_level: warn\n");
  return config;
}

void kill_and_resume(const std::string& flush) {
  TempDir dir;
  const std::string config = write_config(dir, flush);

  ChildProcess reference(gan_command(dir.file("reference.pt"), ""), {"AUTOSNAP_CONFIG="});
  reference.read_all();
  ASSERT_EQ(reference.wait(), 0) << reference.output();

  std::mt19937 rng(11);
  std::uniform_int_distribution<int> delay_ms(100, 700);
  int mid_epoch = 0;
  int64_t last_step = -1;
  for (int kill = 0; kill < kKills; ++kill) {
    ChildProcess run(gan_command("", config, /*slow=*/true));
    ASSERT_TRUE(run.wait_for_line(" step "))
        << run.output();  // "starting at step 0" or "resumed from step N"
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    run.kill(SIGKILL);
    ASSERT_EQ(run.wait(), 128 + SIGKILL) << "the run ended before it was killed:\n" << run.output();
    const Resumed r = resumed_from(run.output());
    EXPECT_EQ(run.output().find(kNoDataPosition), std::string::npos) << run.output();
    if (kill > 0) {
      ASSERT_GE(r.step, last_step) << run.output();
    }
    if (r.batches_done > 0 && r.batches_done < kBatchesPerEpoch) ++mid_epoch;
    last_step = r.step;
  }

  ChildProcess last(gan_command(dir.file("resumed.pt"), config));
  last.read_all();
  ASSERT_EQ(last.wait(), 0) << last.output();
  const Resumed r = resumed_from(last.output());
  EXPECT_GT(r.step, 0) << last.output();
  if (r.batches_done > 0 && r.batches_done < kBatchesPerEpoch) ++mid_epoch;
  std::cout << kKills << " kills (flush " << flush << "); " << mid_epoch << " of " << kKills
            << " restarts resumed mid-epoch; the last from step " << r.step << std::endl;
  EXPECT_GE(mid_epoch, kKills / 2) << "most restarts must resume mid-epoch, or the test proves little";

  auto& fs = default_file_system();
  const auto expected = load(dir.file("reference.pt"));
  const auto actual = load(dir.file("resumed.pt"));
  EXPECT_EQ(testing::describe_difference(actual, expected, "final"), "");
  EXPECT_TRUE(fs.read_small_file(dir.file("resumed.pt"), 64 << 20) ==
              fs.read_small_file(dir.file("reference.pt"), 64 << 20))
      << "the resumed run's --out differs from the reference byte for byte";
}

TEST(GanResume, RandomKillsMidEpochEndBitwiseEqual) { kill_and_resume("{mode: async}"); }

TEST(GanResume, RandomKillsMidEpochEndBitwiseEqualWithOverlap) {
  kill_and_resume("{mode: async, overlap: true}");
}

// What the README says happens without a data position: the same loop with
// torch's RandomSampler, resumed mid-epoch, is warned about and ends differently.
TEST(GanResume, AStockSamplerResumedMidEpochIsWarnedAboutAndDiverges) {
  TempDir dir;
  const std::string config = write_config(dir, "{mode: async}");
  auto stock = [&](std::vector<std::string> argv) {
    argv.push_back("--stock-sampler");
    return argv;
  };
  ChildProcess reference(stock(gan_command(dir.file("reference.pt"), "", false, 3)), {"AUTOSNAP_CONFIG="});
  reference.read_all();
  ASSERT_EQ(reference.wait(), 0) << reference.output();
  ChildProcess killed(stock(gan_command("", config, /*slow=*/true, 3)));
  ASSERT_TRUE(killed.wait_for_line("starting at step 0")) << killed.output();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  killed.kill(SIGKILL);
  ASSERT_EQ(killed.wait(), 128 + SIGKILL) << killed.output();
  ChildProcess resumed(stock(gan_command(dir.file("resumed.pt"), config, false, 3)));
  resumed.read_all();
  ASSERT_EQ(resumed.wait(), 0) << resumed.output();
  const Resumed r = resumed_from(resumed.output());
  ASSERT_GT(r.batches_done, 0) << "the kill must leave a mid-epoch snapshot:\n" << resumed.output();
  ASSERT_LT(r.batches_done, kBatchesPerEpoch) << resumed.output();
  EXPECT_NE(resumed.output().find(kNoDataPosition), std::string::npos) << resumed.output();
  EXPECT_NE(
      testing::describe_difference(load(dir.file("resumed.pt")), load(dir.file("reference.pt")), "final"),
      "");
}

}  // namespace
}  // namespace autosnap
