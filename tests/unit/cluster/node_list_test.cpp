// Slurm's compressed host lists (cluster/node_list.h), checked against what
// `scontrol show hostnames` prints for the same lists (Slurm 22.05).
#include <gtest/gtest.h>

#include "autosnap/errors.h"
#include "cluster/node_list.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using cluster::expand_node_list;
using Hosts = std::vector<std::string>;

TEST(NodeList, RangesListsAndZeroPadding) {
  EXPECT_EQ(expand_node_list("node1"), Hosts{"node1"});
  EXPECT_EQ(expand_node_list("node[1-2]"), (Hosts{"node1", "node2"}));
  EXPECT_EQ(expand_node_list("node[01-04,07]"), (Hosts{"node01", "node02", "node03", "node04", "node07"}));
  EXPECT_EQ(expand_node_list("gpu-a[1-2],gpu-b3"), (Hosts{"gpu-a1", "gpu-a2", "gpu-b3"}));
  EXPECT_EQ(expand_node_list("n[08-10]"), (Hosts{"n08", "n09", "n10"})) << "padding kept across the carry";
  EXPECT_EQ(expand_node_list("a[9-11]"), (Hosts{"a9", "a10", "a11"}));
  EXPECT_EQ(expand_node_list("a,b,c"), (Hosts{"a", "b", "c"}));
}

TEST(NodeList, SeveralBracketsExpandEveryCombinationInSlurmsOrder) {
  EXPECT_EQ(expand_node_list("rack[3-4]-n[1-2]"), (Hosts{"rack3-n1", "rack3-n2", "rack4-n1", "rack4-n2"}));
  EXPECT_EQ(expand_node_list("x[1,3]y[7],z"), (Hosts{"x1y7", "x3y7", "z"}));
}

TEST(NodeList, MalformedListsNameTheListAndTheProblem) {
  auto error = [](const std::string& list) {
    return testing::error_of<ConfigError>([&] { expand_node_list(list, "environment variable SLURM_JOB_NODELIST"); });
  };
  EXPECT_EQ(error("node[1-2"),
            "environment variable SLURM_JOB_NODELIST 'node[1-2': a '[' without its ']'; expected host names and "
            "bracket ranges such as node[01-04,07],gpu-b3");
  EXPECT_NE(error("node[3-1]").find("the range '3-1' runs backwards"), std::string::npos);
  EXPECT_NE(error("node[a-b]").find("'a' is not a number in a range"), std::string::npos);
  EXPECT_NE(error("node[]").find("an empty bracket"), std::string::npos);
  EXPECT_NE(error("a,,b").find("an empty host name"), std::string::npos);
  EXPECT_NE(error("n[[1]]").find("a bracket inside a bracket"), std::string::npos);
  EXPECT_NE(error("n[1-99999999]").find("more than"), std::string::npos) << "a typo must not exhaust memory";
}

}  // namespace
}  // namespace autosnap
