// The cluster layer's pieces: rank discovery from the launcher's
// environment and the Gloo device choice. (The c10d Coordinator with real
// processes is tests/e2e/c10d_coordinator_test.cpp.)
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>

#include "autosnap/errors.h"
#include "cluster/gloo_device.h"
#include "cluster/rank_discovery.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using cluster::discover_rank;
using cluster::first_host;

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
  EXPECT_EQ(first_host("rack[3-4]-n[1-2]"), "rack3-n1")
      << "every bracket expands, as scontrol show hostnames does";
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
  EXPECT_NE(error.find("has no interface of that name with an IPv4 address (it has: "), std::string::npos)
      << error;
  EXPECT_NE(error.find("lo 127.0.0.1"), std::string::npos) << "lists the interfaces there are: " << error;
}

}  // namespace
}  // namespace autosnap
