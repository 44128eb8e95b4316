// The Coordinator seam's single-process implementation: every collective
// answers itself (the c10d one is tested with real ranks in cluster_test.cpp).
#include <gtest/gtest.h>

#include "daemon/coordinator.h"

namespace autosnap {
namespace {

using daemon::Channel;

TEST(Coordinator, OneProcessAnswersItself) {
  daemon::SingleProcessCoordinator one;
  EXPECT_EQ(one.rank(), 0);
  EXPECT_EQ(one.world_size(), 1);
  EXPECT_EQ(one.bitwise_or(5, Channel::kTraining), 5u);
  EXPECT_TRUE(one.any(true, Channel::kWriter));
  EXPECT_FALSE(one.any(false, Channel::kWriter));
  EXPECT_EQ(one.broadcast("step 1200", Channel::kTraining), "step 1200");
  EXPECT_EQ(one.gather("files", Channel::kWriter), std::vector<std::string>{"files"});
  one.barrier(Channel::kTraining);
}

}  // namespace
}  // namespace autosnap
