// Bitwise-identical resume: train_mlp is SIGKILLed at random moments (while
// training, while a snapshot is being flushed, while one is being committed)
// and restarted each time; every restart must resume from a valid snapshot,
// and the final model and optimizer must equal an uninterrupted run's, bit
// for bit. $AUTOSNAP_KILLS sets the number of kills (default 100;
// scripts/crash-soak.sh runs 1000).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
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

int kill_count() {
  const char* text = std::getenv("AUTOSNAP_KILLS");
  return text && *text ? std::max(20, std::atoi(text)) : 100;
}

// Long enough that the kills never reach the end (each run gets a few dozen steps in).
std::string total_steps() { return std::to_string(40 * kill_count()); }

std::vector<std::string> training_command(const std::string& out, const std::string& config) {
  std::vector<std::string> argv = {testing::example_path("train_mlp"),
                                   "--steps",
                                   total_steps(),
                                   "--input",
                                   "128",
                                   "--hidden",
                                   "1024",
                                   "--log-every",
                                   "1",
                                   "--seed",
                                   "7"};
  if (!config.empty()) argv.insert(argv.end(), {"--config", config});
  if (!out.empty()) argv.insert(argv.end(), {"--out", out});
  return argv;
}

int64_t resumed_step(const std::string& output) {
  std::smatch match;
  static const std::regex pattern("resumed from step ([0-9]+)");
  return std::regex_search(output, match, pattern) ? std::stoll(match[1]) : -1;
}

std::string last_events(const std::string& path) {
  const std::string text = default_file_system().read_small_file(path, 64 << 20);
  return text.substr(text.size() > 6000 ? text.size() - 6000 : 0);
}

TEST(ResumeAfterKill, RandomKillsEndBitwiseEqualToAnUninterruptedRun) {
  const int kills = kill_count();
  TempDir dir;
  const std::string config = dir.file("autosnap.yaml");
  testing::write_text(config, "directory: " + dir.file("snapshots") +
                                  "\ntriggers: {every_steps: 2}\nretention: {keep_last: 2}\n"
                                  "control: {socket: false}\nlog_level: warn\n");

  ChildProcess reference(training_command(dir.file("reference.pt"), ""), {"AUTOSNAP_CONFIG="});
  reference.read_all();
  ASSERT_EQ(reference.wait(), 0) << reference.output();

  std::mt19937 rng(2024);
  std::uniform_int_distribution<int> delay_ms(0, 300);
  int mid_flush = 0, mid_commit = 0;
  int64_t last_resumed = -1;
  for (int kill = 0; kill < kills; ++kill) {
    ChildProcess run(training_command("", config));
    // Kill only once training runs (startup is not what this tests).
    ASSERT_TRUE(run.wait_for_line("step ")) << run.output();
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    run.kill(SIGKILL);
    ASSERT_EQ(run.wait(), 128 + SIGKILL) << "the run ended before it was killed:\n" << run.output();
    const int64_t resumed = resumed_step(run.output());
    EXPECT_GE(resumed, last_resumed) << "a restart went back to an older snapshot:\n"
                                     << run.output() << "\nlast events:\n"
                                     << last_events(dir.file("snapshots/events.jsonl"));
    last_resumed = resumed;
    for (const auto& name : testing::list_names(dir.file("snapshots"))) {
      if (name.find(".tmp-") == std::string::npos) continue;
      ++mid_flush;  // the kill hit a snapshot being written...
      const auto inside = testing::list_names(dir.file("snapshots/" + name));
      if (std::find(inside.begin(), inside.end(), "manifest.yaml") != inside.end())
        ++mid_commit;  // ...or committed
      break;
    }
  }

  ChildProcess last(training_command(dir.file("resumed.pt"), config));
  last.read_all();
  ASSERT_EQ(last.wait(), 0) << last.output();
  EXPECT_GT(resumed_step(last.output()), 0) << last.output();
  std::cout << kills << " kills (" << mid_flush << " during a flush, " << mid_commit
            << " of them during the commit); the last run resumed from step " << resumed_step(last.output())
            << std::endl;
  EXPECT_GT(mid_flush, 0) << "no kill landed during a flush; the test would prove less than it claims";

  const auto expected = load(dir.file("reference.pt"));
  const auto actual = load(dir.file("resumed.pt"));
  EXPECT_EQ(testing::describe_difference(actual, expected, "final"), "");
  // Bitwise: the files themselves (NaN payloads and -0.0 included) are identical.
  auto& fs = default_file_system();
  EXPECT_TRUE(fs.read_small_file(dir.file("resumed.pt"), 64 << 20) ==
              fs.read_small_file(dir.file("reference.pt"), 64 << 20))
      << "the resumed run's --out differs from the reference byte for byte";
}

}  // namespace
}  // namespace autosnap
