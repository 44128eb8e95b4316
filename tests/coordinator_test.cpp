// The Coordinator seam: the questions the daemon asks (may I commit? which
// step do all ranks resume from?) answered from the primitives, for one
// process and for a simulated rank 0 of a larger job.
#include <gtest/gtest.h>

#include <map>

#include "daemon/coordinator.h"

namespace autosnap {
namespace {

using daemon::Channel;
using daemon::Coordinator;

TEST(Coordinator, OneProcessAnswersItself) {
  daemon::SingleProcessCoordinator one;
  EXPECT_EQ(one.rank(), 0);
  EXPECT_EQ(one.world_size(), 1);
  EXPECT_TRUE(one.may_commit(true));
  EXPECT_FALSE(one.may_commit(false));
  EXPECT_EQ(one.agree_on_step(1200), 1200);
  EXPECT_EQ(one.agree_on_step(std::nullopt), std::nullopt);
}

// Rank 0 of a job whose other ranks answered `others` (gathered strings;
// "" = no valid snapshot) and `other_failed` (its flag in bitwise_or()).
class SimulatedRankZero final : public Coordinator {
 public:
  SimulatedRankZero(std::vector<std::string> others, bool other_failed)
      : others_(std::move(others)), other_failed_(other_failed) {}
  int rank() const override { return 0; }
  int world_size() const override { return static_cast<int>(others_.size()) + 1; }
  uint64_t bitwise_or(uint64_t mine, Channel channel) override {
    channels_[channel]++;
    return mine | (other_failed_ ? 1 : 0);
  }
  std::string broadcast(const std::string& value, Channel channel) override {
    channels_[channel]++;
    broadcasted_ = value;
    return value;
  }
  std::vector<std::string> gather(const std::string& value, Channel channel) override {
    channels_[channel]++;
    std::vector<std::string> all{value};
    all.insert(all.end(), others_.begin(), others_.end());
    return all;
  }
  void barrier(Channel) override {}

  std::vector<std::string> others_;
  bool other_failed_;
  std::string broadcasted_;
  std::map<Channel, int> channels_;
};

TEST(Coordinator, AllRanksResumeFromTheOldestOfTheirNewestValidSteps) {
  SimulatedRankZero job({"1200", "1100", "1200"}, false);
  EXPECT_EQ(job.agree_on_step(1300), 1100);
  EXPECT_EQ(job.broadcasted_, "1100") << "rank 0 tells every rank the decision";
  EXPECT_EQ(job.channels_[Channel::kTraining], 2) << "gather + broadcast, on the training thread's channel";
  EXPECT_EQ(job.channels_[Channel::kWriter], 0);
}

TEST(Coordinator, NoResumeWhenAnyRankHasNoValidSnapshot) {
  SimulatedRankZero job({"1200", "", "1200"}, false);
  EXPECT_EQ(job.agree_on_step(1200), std::nullopt);
  EXPECT_EQ(job.broadcasted_, "");
  SimulatedRankZero without_here({"1200"}, false);
  EXPECT_EQ(without_here.agree_on_step(std::nullopt), std::nullopt);
}

TEST(Coordinator, NoCommitWhenAnyRankFailed) {
  SimulatedRankZero healthy({"", ""}, false);
  EXPECT_TRUE(healthy.may_commit(true));
  EXPECT_FALSE(healthy.may_commit(false)) << "this rank failed";
  SimulatedRankZero broken({"", ""}, true);
  EXPECT_FALSE(broken.may_commit(true)) << "another rank failed";
  EXPECT_EQ(broken.channels_[Channel::kWriter], 1) << "the commit question goes on the writer's channel";
}

}  // namespace
}  // namespace autosnap
