// The cluster layer's pieces: rank discovery from the launcher's
// environment, and the c10d Coordinator with real processes on loopback
// (2 and 4 ranks; a rank that dies or hangs).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>
#include <regex>

#include "autosnap/errors.h"
#include "cluster/gloo_device.h"
#include "cluster/rank_discovery.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using cluster::discover_rank;
using cluster::first_host;
using testing::ChildProcess;

std::function<const char*(const char*)> environment(std::map<std::string, std::string> variables) {
  auto owned = std::make_shared<std::map<std::string, std::string>>(std::move(variables));
  return [owned](const char* name) -> const char* {
    auto it = owned->find(name);
    return it == owned->end() ? nullptr : it->second.c_str();
  };
}

TEST(RankDiscovery, TorchrunVariablesComeFirst) {
  auto info = discover_rank(environment({{"RANK", "3"},
                                         {"WORLD_SIZE", "4"},
                                         {"LOCAL_RANK", "1"},
                                         {"MASTER_ADDR", "node7"},
                                         {"MASTER_PORT", "29400"},
                                         {"SLURM_PROCID", "0"},
                                         {"SLURM_NTASKS", "8"},
                                         {"SLURM_JOB_ID", "55"}}));
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.world_size, 4);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.master_addr, "node7");
  EXPECT_EQ(info.master_port, 29400);
  EXPECT_EQ(info.source, "torchrun variables");
  EXPECT_EQ(info.slurm_job_id, "55");
}

TEST(RankDiscovery, SlurmVariablesWithoutTorchrun) {
  auto info = discover_rank(environment({{"SLURM_PROCID", "2"},
                                         {"SLURM_NTASKS", "4"},
                                         {"SLURM_LOCALID", "0"},
                                         {"SLURM_JOB_NODELIST", "gpu[07-10,12],cpu1"},
                                         {"SLURM_JOB_ID", "1234"},
                                         {"SLURM_RESTART_COUNT", "2"}}));
  EXPECT_EQ(info.rank, 2);
  EXPECT_EQ(info.world_size, 4);
  EXPECT_EQ(info.master_addr, "gpu07");
  EXPECT_EQ(info.master_port, 20000 + 1234 * 2) << "derived from the job id";
  EXPECT_LT(
      discover_rank(environment({{"SLURM_NTASKS", "2"}, {"SLURM_JOB_ID", "987654321"}})).master_port + 1,
      32768)
      << "below the ephemeral ports";
  EXPECT_EQ(info.source, "Slurm");
  EXPECT_EQ(info.slurm_restart_count, 2);
  EXPECT_EQ(
      discover_rank(environment({{"SLURM_NTASKS", "2"}, {"SLURM_PROCID", "1"}, {"MASTER_PORT", "4000"}}))
          .master_port,
      4000)
      << "MASTER_PORT wins over the derived port";
}

TEST(RankDiscovery, NoLauncherIsOneProcess) {
  auto info = discover_rank(environment({}));
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_FALSE(info.slurm_job_id.has_value());
}

TEST(RankDiscovery, BadValuesNameTheVariable) {
  EXPECT_EQ(testing::error_of<ConfigError>([] {
              discover_rank(environment({{"WORLD_SIZE", "two"}, {"RANK", "0"}}));
            }),
            "environment variable WORLD_SIZE='two': expected an integer from 1 to 1048576");
  EXPECT_EQ(testing::error_of<ConfigError>([] {
              discover_rank(environment({{"WORLD_SIZE", "2"}}));
            }),
            "environment variable WORLD_SIZE is set but RANK is not");
  EXPECT_EQ(testing::error_of<ConfigError>([] {
              discover_rank(environment({{"WORLD_SIZE", "2"}, {"RANK", "2"}}));
            }),
            "rank 2 from the torchrun variables is not below the world size 2");
  EXPECT_EQ(testing::error_of<ConfigError>([] {
              discover_rank(environment({{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_PORT", "70000"}}));
            }),
            "environment variable MASTER_PORT='70000': expected an integer from 1 to 65535");
}

TEST(RankDiscovery, FirstHostOfANodeList) {
  EXPECT_EQ(first_host("node01"), "node01");
  EXPECT_EQ(first_host("a,b,c"), "a");
  EXPECT_EQ(first_host("node[01-04,07]"), "node01");
  EXPECT_EQ(first_host("rack[3-4]-n[1-2]"), "rack3-n1") << "every bracket expands, as scontrol show hostnames does";
}

// Which interface Gloo binds (cluster/gloo_device.h).
TEST(GlooDevice, LoopbackForAJobOnThisHost) {
  ::unsetenv("GLOO_SOCKET_IFNAME");
  EXPECT_EQ(cluster::choose_gloo_device("127.0.0.1", /*single_node=*/true).address, "127.0.0.1");
  EXPECT_EQ(cluster::choose_gloo_device("localhost", /*single_node=*/false).address, "127.0.0.1")
      << "MASTER_ADDR on loopback: the job runs here";
}

TEST(GlooDevice, GlooSocketIfnameIsHonouredAndAWrongOneNamed) {
  ::setenv("GLOO_SOCKET_IFNAME", "lo", 1);
  EXPECT_EQ(cluster::choose_gloo_device("192.0.2.1", false).address, "127.0.0.1")
      << "the named interface wins over the route to MASTER_ADDR";
  ::setenv("GLOO_SOCKET_IFNAME", "eth-nosuch", 1);
  const std::string error =
      testing::error_of<ConfigError>([] { cluster::choose_gloo_device("127.0.0.1", true); });
  ::unsetenv("GLOO_SOCKET_IFNAME");
  EXPECT_NE(error.find("environment variable GLOO_SOCKET_IFNAME='eth-nosuch'"), std::string::npos) << error;
  EXPECT_NE(error.find("has no interface of that name with an IPv4 address (it has: "), std::string::npos) << error;
  EXPECT_NE(error.find("lo 127.0.0.1"), std::string::npos) << "lists the interfaces there are: " << error;
}

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
    EXPECT_NE(job.output(r).find("then at once: ") , std::string::npos)
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
