// The trigger policy: what is due after a step, from the configured
// triggers, from requests of other threads and from a stop.
#include <gtest/gtest.h>

#include <thread>

#include "daemon/trigger_policy.h"

namespace autosnap {
namespace {

using daemon::SnapshotOutcome;
using daemon::TriggerPolicy;
using daemon::Urgency;

TEST(TriggerPolicy, EveryStepsFiresAfterStepsThatAreMultiples) {
  TriggerConfig triggers;
  triggers.every_steps = 5;
  TriggerPolicy policy(triggers);
  std::vector<int64_t> due;
  for (int64_t step = 0; step < 12; ++step) {
    auto decision = policy.after_step(step);
    if (!decision.reason.empty()) {
      EXPECT_EQ(decision.reason, "every_steps");
      EXPECT_EQ(decision.urgency, Urgency::kMaySkip) << "automatic snapshots may be skipped when busy";
      due.push_back(step);
    }
  }
  EXPECT_EQ(due, (std::vector<int64_t>{0, 5, 10}));
}

TEST(TriggerPolicy, ARequestOutranksTheTriggersAndIsAnsweredWithTheStepItFollowed) {
  TriggerConfig triggers;
  triggers.every_steps = 1;
  TriggerPolicy policy(triggers);
  policy.after_step(6);
  std::optional<SnapshotOutcome> answer;
  std::thread other([&] { policy.request("before upgrade", [&](const SnapshotOutcome& o) { answer = o; }); });
  other.join();
  EXPECT_EQ(policy.last_completed_step(), 6);
  auto decision = policy.after_step(7);
  EXPECT_EQ(decision.reason, "before upgrade");
  EXPECT_EQ(decision.urgency, Urgency::kMustTake) << "requests are never skipped";
  ASSERT_EQ(decision.waiters.size(), 1u);
  SnapshotOutcome outcome;
  outcome.committed = true;
  outcome.step = 7;
  decision.waiters[0](outcome);
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->requested_after_step, 6);
  EXPECT_EQ(policy.after_step(8).reason, "every_steps") << "the request was claimed once";
}

TEST(TriggerPolicy, AStopComesWithItsSnapshotAndHoldsAfterwards) {
  TriggerConfig triggers;
  triggers.every_steps = 100;
  TriggerPolicy policy(triggers);
  policy.after_step(0);
  policy.request("signal SIGTERM");
  policy.request_stop();
  EXPECT_TRUE(policy.stopping());
  EXPECT_FALSE(policy.should_stop()) << "not before the step boundary took the snapshot";
  auto decision = policy.after_step(1);
  EXPECT_EQ(decision.reason, "signal SIGTERM");
  EXPECT_TRUE(decision.stop);
  policy.stopped();
  EXPECT_TRUE(policy.should_stop());
  EXPECT_FALSE(policy.after_step(2).stop) << "a stop is decided once";
}

TEST(TriggerPolicy, RequestsAtTheEndAreServedOrFailedNeverLost) {
  TriggerPolicy policy(TriggerConfig{});
  policy.after_step(3);
  std::vector<std::string> errors;
  policy.request("late", [&](const SnapshotOutcome& o) { errors.push_back(o.error); });
  EXPECT_EQ(policy.pending_requests().reason, "late");
  policy.request("too late", [&](const SnapshotOutcome& o) { errors.push_back(o.error); });
  policy.fail_requests("the job ended");
  EXPECT_EQ(errors, std::vector<std::string>{"the job ended"});
  EXPECT_TRUE(policy.pending_requests().reason.empty());
}

TEST(TriggerPolicy, EverySecondsCountsFromTheLastSnapshot) {
  TriggerConfig triggers;
  triggers.every_seconds = 0.05;
  TriggerPolicy policy(triggers);
  policy.snapshot_taken(0);
  EXPECT_TRUE(policy.after_step(1).reason.empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  EXPECT_EQ(policy.after_step(2).reason, "every_seconds");
  policy.snapshot_taken(2);
  EXPECT_TRUE(policy.has_snapshot_of(2));
  EXPECT_TRUE(policy.after_step(3).reason.empty());
}

}  // namespace
}  // namespace autosnap
