// The c10d Coordinator with real processes: ranks of coordinator_probe that
// agree, die, hang or stall, and what the others see within the timeout.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>
#include <regex>

#include "autosnap/errors.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::ChildProcess;

// A port nothing listens on right now.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

struct Job {
  std::vector<std::unique_ptr<ChildProcess>> ranks;
  std::vector<int> exit_codes;
  Job(int world, const std::vector<std::string>& fault = {}) {
    const std::string port = std::to_string(free_port());
    for (int r = 0; r < world; ++r) {
      std::vector<std::string> argv = {testing::tool_path("coordinator_probe"), port};
      argv.insert(argv.end(), fault.begin(), fault.end());
      ranks.push_back(std::make_unique<ChildProcess>(
          argv, std::vector<std::string>{"RANK=" + std::to_string(r), "WORLD_SIZE=" + std::to_string(world),
                                         "MASTER_ADDR=127.0.0.1"}));
    }
    for (auto& rank : ranks) {
      rank->read_all();
      exit_codes.push_back(rank->wait());
    }
  }
  std::string output(int r) const { return ranks[static_cast<size_t>(r)]->output(); }
};

void expect_every_answer(int world) {
  Job job(world);
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(job.exit_codes[static_cast<size_t>(r)], 0) << "rank " << r << ":\n" << job.output(r);
    EXPECT_NE(job.output(r).find("bitwise_or = " + std::to_string((1 << world) - 1)), std::string::npos)
        << job.output(r);
  }
  std::string want;
  for (int r = 0; r < world; ++r)
    want += "r" + std::to_string(r) + std::string(static_cast<size_t>(r), 'x') + ";";
  EXPECT_NE(job.output(0).find("gather = " + want), std::string::npos) << job.output(0);
  std::cout << job.output(0);
}

TEST(C10dCoordinator, TwoRanksAgree) { expect_every_answer(2); }
TEST(C10dCoordinator, FourRanksAgree) { expect_every_answer(4); }

// The seconds after which the survivors reported the error.
double seconds_until_error(const std::string& output) {
  std::smatch match;
  if (!std::regex_search(output, match, std::regex("error after ([0-9.]+) s"))) return -1;
  return std::stod(match[1]);
}

TEST(C10dCoordinator, ADeadRankIsAnErrorForTheOthersAtOnce) {
  Job job(3, {"die-before-commit"});
  EXPECT_EQ(job.exit_codes[2], 128 + SIGKILL);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(job.exit_codes[static_cast<size_t>(r)], 0) << job.output(r);
    const double waited = seconds_until_error(job.output(r));
    EXPECT_GE(waited, 0) << job.output(r);
    EXPECT_LT(waited, 5.0) << "a dead peer is noticed before the 5 s timeout:\n" << job.output(r);
    EXPECT_NE(job.output(r).find("then at once: "), std::string::npos)
        << "a group whose rank is lost refuses further calls at once:\n"
        << job.output(r);
    EXPECT_NE(job.output(r).find("rank 2 is lost: the connection closed"), std::string::npos)
        << "the error names the lost rank:\n"
        << job.output(r);
  }
}

TEST(C10dCoordinator, AHungRankIsAnErrorAfterTheTimeout) {
  // Hung past the timeout and the one more timeout that the group formed again waits.
  Job job(2, {"hang-before-commit", "12"});
  const double waited = seconds_until_error(job.output(0));
  EXPECT_GE(waited, 4.0) << job.output(0);
  EXPECT_LT(waited, 15.0) << "the 5 s timeout applies, not c10d's default:\n" << job.output(0);
}

// A rank stalled past the timeout but back within the next one (a slow disk,
// a paused process): the group is formed again, the exchange completes on
// every rank with the right answer, and nothing is lost.
TEST(C10dCoordinator, AStalledRankThatComesBackIsWaitedForOnce) {
  Job job(2, {"hang-before-commit", "7"});
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(job.exit_codes[static_cast<size_t>(r)], 0) << job.output(r);
    EXPECT_NE(job.output(r).find("answered after"), std::string::npos) << job.output(r);
  }
  EXPECT_NE(job.output(0).find("formed again (generation 1)"), std::string::npos) << job.output(0);
  std::smatch waited;
  const std::string out = job.output(0);
  ASSERT_TRUE(std::regex_search(out, waited, std::regex("answered after ([0-9.]+) s"))) << out;
  EXPECT_GE(std::stod(waited[1]), 6.0) << "it waited for the stalled rank:\n" << out;
}

}  // namespace
}  // namespace autosnap
