// The daemon's background threads (daemon/background.h) run as SCHED_BATCH,
// so that waking one never preempts the training thread; the thread that
// owns them keeps its own policy.
#include <gtest/gtest.h>
#include <sched.h>

#include <boost/asio/post.hpp>
#include <future>
#include <thread>

#include "daemon/background.h"

namespace autosnap {
namespace {

TEST(BackgroundThreads, RunAsBatchThreadsThatDoNotPreemptTraining) {
  const int owner_policy = sched_getscheduler(0);
  daemon::BackgroundThreads background;
  background.start(2);
  std::promise<std::pair<int, int>> seen;
  boost::asio::post(background.io(), [&seen] {
    int helper_policy = -1;
    std::thread helper([&helper_policy] { helper_policy = sched_getscheduler(0); });  // a copy's helper
    helper.join();
    seen.set_value({sched_getscheduler(0), helper_policy});
  });
  const auto [policy, helper_policy] = seen.get_future().get();
  EXPECT_EQ(policy, SCHED_BATCH) << "a background thread woken by the training thread would preempt it";
  EXPECT_EQ(helper_policy, SCHED_BATCH) << "threads a background thread starts inherit its policy";
  EXPECT_EQ(sched_getscheduler(0), owner_policy) << "the owning (training) thread keeps its policy";
  background.join();
}

}  // namespace
}  // namespace autosnap
