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

// One process: its own wishes are the job's.
TriggerPolicy::Decision step_ends(TriggerPolicy& policy, int64_t step) {
  return policy.after_step(step, policy.wishes(step));
}

TEST(TriggerPolicy, EveryStepsFiresAfterStepsThatAreMultiples) {
  TriggerConfig triggers;
  triggers.every_steps = 5;
  TriggerPolicy policy(triggers);
  std::vector<int64_t> due;
  for (int64_t step = 0; step < 12; ++step) {
    auto decision = step_ends(policy, step);
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
  step_ends(policy, 6);
  std::optional<SnapshotOutcome> answer;
  std::thread other([&] { policy.request("before upgrade", [&](const SnapshotOutcome& o) { answer = o; }); });
  other.join();
  EXPECT_EQ(policy.last_completed_step(), 6);
  auto decision = step_ends(policy, 7);
  EXPECT_EQ(decision.reason, "before upgrade");
  EXPECT_EQ(decision.urgency, Urgency::kMustTake) << "requests are never skipped";
  ASSERT_EQ(decision.waiters.size(), 1u);
  SnapshotOutcome outcome;
  outcome.committed = true;
  outcome.step = 7;
  decision.waiters[0](outcome);
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->requested_after_step, 6);
  EXPECT_EQ(step_ends(policy, 8).reason, "every_steps") << "the request was claimed once";
}

TEST(TriggerPolicy, AStopComesWithItsSnapshotAndHoldsAfterwards) {
  TriggerConfig triggers;
  triggers.every_steps = 100;
  TriggerPolicy policy(triggers);
  step_ends(policy, 0);
  policy.request("signal SIGTERM");
  policy.request_stop();
  EXPECT_TRUE(policy.stopping());
  EXPECT_FALSE(policy.should_stop()) << "not before the step boundary took the snapshot";
  auto decision = step_ends(policy, 1);
  EXPECT_EQ(decision.reason, "signal SIGTERM");
  EXPECT_TRUE(decision.stop);
  policy.stopped();
  EXPECT_TRUE(policy.should_stop());
  EXPECT_FALSE(step_ends(policy, 2).stop) << "a stop is decided once";
}

TEST(TriggerPolicy, RequestsAtTheEndAreServedOrFailedNeverLost) {
  TriggerPolicy policy(TriggerConfig{});
  step_ends(policy, 3);
  std::vector<std::string> errors;
  policy.request("late", [&](const SnapshotOutcome& o) { errors.push_back(o.error); });
  EXPECT_TRUE(policy.has_requests());
  EXPECT_EQ(policy.claim_requests().reason, "late");
  policy.request("too late", [&](const SnapshotOutcome& o) { errors.push_back(o.error); });
  policy.fail_requests("the job ended");
  EXPECT_EQ(errors, std::vector<std::string>{"the job ended"});
  EXPECT_FALSE(policy.has_requests());
}

TEST(TriggerPolicy, EverySecondsCountsFromTheLastSnapshot) {
  TriggerConfig triggers;
  triggers.every_seconds = 0.05;
  TriggerPolicy policy(triggers);
  policy.snapshot_taken(0);
  EXPECT_TRUE(step_ends(policy, 1).reason.empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  EXPECT_EQ(step_ends(policy, 2).reason, "every_seconds");
  policy.snapshot_taken(2);
  EXPECT_TRUE(policy.has_snapshot_of(2));
  EXPECT_TRUE(step_ends(policy, 3).reason.empty());
}

}  // namespace
}  // namespace autosnap

namespace autosnap {
namespace {

using daemon::TriggerPolicy;

TEST(TriggerPolicy, EveryRankDecidesFromTheJobsWishes) {
  TriggerConfig triggers;
  triggers.every_seconds = 1e6;  // never due by the clock here
  TriggerPolicy rank0(triggers), rank1(triggers);
  rank1.request("signal SIGUSR1");  // only rank 1 was asked
  const uint64_t job = rank0.wishes(7, /*clock_decides=*/true) | rank1.wishes(7, /*clock_decides=*/false);
  auto on_rank0 = rank0.after_step(7, job);
  auto on_rank1 = rank1.after_step(7, job);
  EXPECT_EQ(on_rank1.reason, "signal SIGUSR1");
  EXPECT_EQ(on_rank0.reason, "request on another rank") << "rank 0 snapshots the same step";
  EXPECT_EQ(on_rank0.urgency, on_rank1.urgency);
  EXPECT_TRUE(rank0.after_step(8, rank0.wishes(8) | rank1.wishes(8, false)).reason.empty());
  // The clock: only the rank told to decide sets the flag; the others follow it.
  TriggerConfig every_second;
  every_second.every_seconds = 0.001;
  TriggerPolicy a(every_second), b(every_second);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(b.wishes(1, /*clock_decides=*/false), 0u);
  const uint64_t both = a.wishes(1, true) | b.wishes(1, false);
  EXPECT_EQ(b.after_step(1, both).reason, "every_seconds");
}

}  // namespace
}  // namespace autosnap
