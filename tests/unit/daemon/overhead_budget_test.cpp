// triggers.max_overhead (daemon/overhead_budget.h): the interval it picks
// from measured step times and snapshot costs, fed here as figures, and the
// trigger it gives the policy.
#include <gtest/gtest.h>

#include "daemon/overhead_budget.h"
#include "daemon/trigger_policy.h"

namespace autosnap {
namespace {

using daemon::OverheadBudget;
using daemon::TriggerPolicy;

void clean_steps(OverheadBudget& budget, int count, double step_ms) {
  for (int i = 0; i < count; ++i) budget.step_ended(step_ms, /*writing=*/false);
}

// A snapshot that stalls `stall_ms`, then is written over `write_steps` steps, each `slowdown_ms` slower;
// then the steps after it (`after_ms` slower), and a clean one.
void one_snapshot(OverheadBudget& budget, double step_ms, double stall_ms, int write_steps,
                  double slowdown_ms, double after_ms = 0) {
  budget.snapshot_started(stall_ms);
  for (int i = 0; i < write_steps; ++i) budget.step_ended(step_ms + slowdown_ms, /*writing=*/true);
  for (int i = 0; i < OverheadBudget::kSettleSteps; ++i)
    budget.step_ended(step_ms + after_ms, /*writing=*/false);
  budget.step_ended(step_ms, /*writing=*/false);
}

TEST(OverheadBudget, TheFirstSnapshotComesAfterAFewStepsToMeasureThem) {
  OverheadBudget budget(0.02);
  clean_steps(budget, OverheadBudget::kWarmupSteps - 1, 100);
  EXPECT_FALSE(budget.due(1000));
  clean_steps(budget, 1, 100);
  EXPECT_TRUE(budget.due(OverheadBudget::kWarmupSteps));
  budget.snapshot_started(10);
  EXPECT_FALSE(budget.due(1000)) << "never while a snapshot is being written";
  EXPECT_FALSE(budget.interval()) << "nothing measured yet";
}

TEST(OverheadBudget, TheIntervalKeepsTheMeasuredCostUnderTheBudget) {
  OverheadBudget budget(0.02);
  clean_steps(budget, 5, 100);
  // 10 ms of stall and two steps 20 ms slower while it is written: 50 ms a snapshot, 2 % of 25 steps.
  one_snapshot(budget, 100, 10, 2, 20);
  ASSERT_TRUE(budget.interval());
  EXPECT_EQ(*budget.interval(), 25);
  EXPECT_FALSE(budget.due(24));
  EXPECT_TRUE(budget.due(25));
  EXPECT_TRUE(budget.take_change()) << "the first interval is told";
  EXPECT_FALSE(budget.take_change()) << "and not again while it holds";
  EXPECT_NE(budget.why().find("max_overhead 2 %: a snapshot every 25 steps (one costs 50.0 ms"),
            std::string::npos)
      << budget.why();
}

TEST(OverheadBudget, ASlowFirstStepOrANoisyOneDoesNotMoveTheStepTime) {
  OverheadBudget budget(0.02);
  budget.step_ended(2000, /*writing=*/false);  // the first step allocates everything
  clean_steps(budget, 4, 100);
  one_snapshot(budget, 100, 10, 2, 20);
  EXPECT_EQ(*budget.interval(), 25) << budget.why();
  budget.step_ended(700, /*writing=*/false);  // the machine was busy for one step
  clean_steps(budget, 3, 100);
  one_snapshot(budget, 100, 10, 2, 20);
  EXPECT_EQ(*budget.interval(), 25) << budget.why();
}

TEST(OverheadBudget, ItFollowsAStepTimeThatChanges) {
  OverheadBudget budget(0.02);
  clean_steps(budget, 5, 100);
  one_snapshot(budget, 100, 10, 2, 20);
  EXPECT_EQ(*budget.interval(), 25);
  budget.take_change();
  // Steps four times longer, the same snapshot cost: a quarter of the interval (ceil(50 / 8)).
  for (int round = 0; round < 10; ++round) {
    clean_steps(budget, 20, 400);
    one_snapshot(budget, 400, 10, 2, 20);
  }
  EXPECT_EQ(*budget.interval(), 7);
  EXPECT_TRUE(budget.take_change()) << "a change of a quarter or more is told";
  // Snapshots that cost more (a bigger state): a longer interval again.
  for (int round = 0; round < 10; ++round) {
    clean_steps(budget, 20, 400);
    one_snapshot(budget, 400, 40, 4, 40);  // 200 ms
  }
  EXPECT_EQ(*budget.interval(), 25);
}

TEST(OverheadBudget, NeverMoreOftenThanTheWriterCanFinish) {
  OverheadBudget budget(0.5);
  clean_steps(budget, 5, 100);
  one_snapshot(budget, 100, 1, 6, 0);  // cheap for training, but its write spans 6 steps
  EXPECT_EQ(*budget.interval(), 6 + OverheadBudget::kSettleSteps + 1) << "and its aftermath is measured";
}

TEST(OverheadBudget, TheSlowerStepsRightAfterAWriteCountTowardItsCost) {
  OverheadBudget budget(0.02);
  clean_steps(budget, 5, 100);
  one_snapshot(budget, 100, 10, 1, 20, /*after_ms=*/30);  // 10 + 20 + 2 x 30 = 90 ms
  EXPECT_EQ(*budget.interval(), 45);
}

TEST(OverheadBudget, StepsOverAWriteItDidNotSeeStartAreLeftOut) {
  OverheadBudget budget(0.02);
  clean_steps(budget, 5, 100);
  budget.step_ended(900, /*writing=*/true);  // e.g. the restore's persist: not a step's own time
  one_snapshot(budget, 100, 10, 2, 20);
  EXPECT_EQ(*budget.interval(), 25) << "the step time is still 100 ms, the cost 50 ms";
  // The step after a snapshot starts counts as written over even when the write ended within it.
  budget.snapshot_started(10);
  budget.step_ended(160, /*writing=*/false);
  for (int i = 0; i <= OverheadBudget::kSettleSteps; ++i) budget.step_ended(100, /*writing=*/false);
  EXPECT_NE(budget.why().find("one costs 60.0 ms: its stall and the slowdown of the 1.5 steps"),
            std::string::npos)
      << budget.why();  // (50 + 70) / 2, (2 + 1) / 2
}

TEST(OverheadBudget, OffWithoutABudget) {
  OverheadBudget budget(0);
  clean_steps(budget, 50, 100);
  one_snapshot(budget, 100, 10, 2, 20);
  EXPECT_FALSE(budget.enabled());
  EXPECT_FALSE(budget.due(1000));
  EXPECT_FALSE(budget.interval());
}

TEST(OverheadBudget, ThePolicyTakesAMaxOverheadSnapshotWhenRankZeroSaysItIsDue) {
  TriggerConfig triggers;
  triggers.on_train_end = false;
  triggers.max_overhead = 0.02;
  TriggerPolicy policy(triggers);
  for (int64_t step = 1; step <= 5; ++step) {
    policy.budget().step_ended(100, false);
    EXPECT_EQ(policy.wishes(step, /*clock_decides=*/false) & TriggerPolicy::kOverheadBudgetDue, 0u)
        << "only rank 0 decides";
  }
  const uint64_t wishes = policy.wishes(5, /*clock_decides=*/true);
  EXPECT_NE(wishes & TriggerPolicy::kOverheadBudgetDue, 0u);
  EXPECT_EQ(policy.after_step(5, wishes).reason, "max_overhead");
  EXPECT_TRUE(policy.after_step(6, 0).reason.empty()) << "the other ranks follow rank 0's wish";
}

}  // namespace
}  // namespace autosnap
