// A process saving to one path again and again is SIGKILLed at random
// moments; after every kill the file at the path must load and hold one of
// the values that were saved, and the next save removes the dead temp file.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

#include "autosnap/autosnap.h"
#include "fs/atomic_file.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

constexpr int kKills = 50;

int64_t expected_numel(int64_t i) { return 1 + (i * 7919) % 400000; }

TEST(AtomicSave, SurvivesSigkillAtRandomMoments) {
  testing::TempDir dir;
  const std::string path = dir.file("checkpoint.pt");
  save(dict({{"i", int64_t{0}}, {"data", torch::full({expected_numel(0)}, 0.0f)}}), path);
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay_us(0, 40000);
  int64_t last_seen = 0;
  int progressed = 0;
  int interrupted_saves = 0;  // kills that left a temp file: they hit a save in progress

  for (int kill_index = 0; kill_index < kKills; ++kill_index) {
    int out[2];
    ASSERT_EQ(::pipe(out), 0);
    pid_t child = ::fork();
    if (child == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      const std::string first = std::to_string(last_seen + 1);
      ::execl(testing::tool_path("save_loop").c_str(), "save_loop", path.c_str(), first.c_str(), nullptr);
      ::_exit(127);
    }
    ASSERT_GT(child, 0);
    ::close(out[1]);
    // Wait for the first save (the process start is slow and not what we test), then
    // kill at a random moment of the following saves.
    char c = 0;
    while (::read(out[0], &c, 1) == 1 && c != '\n') {
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    ::close(out[0]);
    ASSERT_TRUE(WIFSIGNALED(status)) << "save_loop exited by itself (status " << status << ")";

    c10::IValue value;
    ASSERT_NO_THROW(value = load(path)) << "after kill " << kill_index << " the file does not load";
    const int64_t i = dict_at(value, "i").toInt();
    const auto data = dict_at(value, "data").toTensor();
    ASSERT_EQ(data.numel(), expected_numel(i)) << "kill " << kill_index;
    ASSERT_TRUE(torch::all(data == static_cast<float>(i)).item<bool>()) << "kill " << kill_index;
    ASSERT_GE(i, last_seen) << "the file went back in time";
    if (i > last_seen) ++progressed;
    last_seen = i;

    // At most the killed writer's temp file is left, and the next save into
    // the directory removes it.
    size_t temps = 0;
    for (const auto& name : testing::list_names(dir.path())) temps += is_temp_file_name(name);
    ASSERT_LE(temps, 1u);
    interrupted_saves += temps == 1;
    if (kill_index % 10 == 9) {
      save(torch::ones({1}), dir.file("other.pt"));
      for (const auto& name : testing::list_names(dir.path())) {
        EXPECT_FALSE(is_temp_file_name(name)) << "stray temp file survived the next save: " << name;
      }
    }
  }
  std::cout << kKills << " kills, " << interrupted_saves
            << " of them in the middle of a save; the file advanced after " << progressed
            << " of them, last i = " << last_seen << std::endl;
  EXPECT_GT(interrupted_saves, 0) << "no kill hit a save in progress: the test proves little";
  EXPECT_GT(progressed, kKills / 4) << "the writer should usually commit something between kills";
}

}  // namespace
}  // namespace autosnap
