// The ranks' typed protocol (daemon/agreement.h): reports and verdicts on
// the wire, rank 0's usual decision, and agree() across three ranks run as
// threads (support/thread_job.h).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "autosnap/errors.h"
#include "daemon/agreement.h"
#include "support/test_util.h"
#include "support/thread_job.h"

namespace autosnap {
namespace {

using daemon::Channel;
using daemon::RankReport;
using daemon::Verdict;

TEST(Agreement, ReportsAndVerdictsSurviveTheWire) {
  RankReport report;
  report.state = RankReport::State::kDamaged;
  report.problem = "checksum mismatch in rank-00001.pt";
  report.step = 1200;
  report.files = {{"rank-00001.pt", 4096, 0xfedcba9876543210ull}, {"extra.bin", 0, 1}};
  report.steps = {1199, 1200};
  report.replicas = {{2, {1198, 1199}}, {5, {1199}}};
  report.accepts_replicas = true;
  const RankReport back = daemon::decode_report(daemon::encode(report));
  EXPECT_EQ(back.state, report.state);
  EXPECT_EQ(back.problem, report.problem);
  EXPECT_EQ(back.step, 1200);
  ASSERT_EQ(back.files.size(), 2u);
  EXPECT_EQ(back.files[0].name, "rank-00001.pt");
  EXPECT_EQ(back.files[0].size, 4096u);
  EXPECT_EQ(back.files[0].xxh3, 0xfedcba9876543210ull) << "64-bit checksums pass unchanged";
  EXPECT_EQ(back.steps, report.steps);
  EXPECT_EQ(back.replicas, report.replicas);
  EXPECT_TRUE(back.accepts_replicas);

  Verdict verdict;
  verdict.kind = Verdict::Kind::kGo;
  verdict.step = 40;
  verdict.detail = "step-000000000040.tmp-12-abc";
  verdict.settled_step = 30;
  verdict.settled_committed = true;
  verdict.from_memory = true;
  verdict.persist = true;
  verdict.fetches = {{0, 2}, {1, 3}};
  const Verdict v = daemon::decode_verdict(daemon::encode(verdict));
  EXPECT_EQ(v.kind, Verdict::Kind::kGo);
  EXPECT_EQ(v.step, 40);
  EXPECT_EQ(v.detail, verdict.detail);
  EXPECT_EQ(v.settled_step, 30);
  EXPECT_TRUE(v.settled_committed);
  EXPECT_TRUE(v.from_memory);
  EXPECT_TRUE(v.persist);
  EXPECT_EQ(v.fetches, verdict.fetches);
}

TEST(Agreement, TheMemoryTierResumesTheNewestStepEveryRankHolds) {
  std::vector<RankReport> reports(3);
  reports[0].steps = {8, 9, 10};
  reports[1].steps = {9, 10};
  reports[2].steps = {8, 9};  // killed while writing step 10
  EXPECT_EQ(daemon::newest_common_step(reports), std::optional<int64_t>(9));
  reports[2].steps = {11};
  EXPECT_EQ(daemon::newest_common_step(reports), std::nullopt) << "no step every rank holds";
  reports[2].steps = {};
  EXPECT_EQ(daemon::newest_common_step(reports), std::nullopt) << "a rank without the tier";
}

// Node 2 (ranks 2 and 3) lost its memory; ranks 0 and 1 hold their replicas.
TEST(Agreement, ARankWithoutItsCopyGetsTheNewestStepFromAReplica) {
  std::vector<RankReport> reports(4);
  for (auto& r : reports) r.accepts_replicas = true;
  reports[0].steps = {119, 120};
  reports[1].steps = {119, 120};
  reports[0].replicas = {{2, {119, 120}}};
  reports[1].replicas = {{3, {118, 119}}};  // rank 3's replica of step 120 had not arrived
  std::vector<daemon::ReplicaFetch> fetches;
  EXPECT_EQ(daemon::newest_common_step(reports, &fetches), std::optional<int64_t>(119));
  EXPECT_EQ(fetches, (std::vector<daemon::ReplicaFetch>{{0, 2}, {1, 3}}));

  reports[1].replicas = {{3, {119, 120}}};
  reports[3].steps = {120};  // rank 3 kept its own copy
  EXPECT_EQ(daemon::newest_common_step(reports, &fetches), std::optional<int64_t>(120));
  EXPECT_EQ(fetches, (std::vector<daemon::ReplicaFetch>{{0, 2}})) << "a rank's own copy needs no fetch";

  reports[2].accepts_replicas = false;  // its memory tier did not open
  EXPECT_EQ(daemon::newest_common_step(reports, &fetches), std::nullopt)
      << "a rank that cannot take a replica needs its own copy";
}

TEST(Agreement, MalformedMessagesAreCoordinationErrors) {
  EXPECT_NE(testing::error_of<CoordinationError>([] {
              daemon::decode_report("not json");
            }).find("a malformed report from another rank"),
            std::string::npos);
  EXPECT_NE(testing::error_of<CoordinationError>([] {
              daemon::decode_report(R"({"state": "ready"})");
            }).find("a malformed report from another rank"),
            std::string::npos);
  EXPECT_EQ(
      testing::error_of<CoordinationError>([] {
        daemon::decode_verdict(
            R"({"kind": "maybe", "why": "", "step": 1, "detail": "", "settled_step": -1, "settled_committed": false})");
      }),
      "unknown value 'maybe' in a message between ranks");
}

std::vector<RankReport> reports_at(std::vector<int64_t> steps) {
  std::vector<RankReport> out;
  for (int64_t s : steps) {
    RankReport r;
    r.step = s;
    out.push_back(r);
  }
  return out;
}

TEST(Agreement, RankZeroDecidesFailuresFirstThenDamageThenGo) {
  testing::ThreadJob job(3);
  auto coordinator = job.coordinator(0);
  auto reports = reports_at({7, 7, 7});
  EXPECT_EQ(daemon::first_problem(reports, *coordinator).kind, Verdict::Kind::kGo);
  EXPECT_EQ(daemon::first_problem(reports, *coordinator).step, 7);

  reports[1].state = RankReport::State::kDamaged;
  reports[1].problem = "rank-00001.pt: checksum mismatch";
  reports[2].state = RankReport::State::kFailed;
  reports[2].problem = "disk full";
  Verdict v = daemon::first_problem(reports, *coordinator);
  EXPECT_EQ(v.kind, Verdict::Kind::kFailed) << "an error outranks a damaged snapshot";
  EXPECT_EQ(v.why, "rank 2: disk full");
  reports[2].state = RankReport::State::kReady;
  v = daemon::first_problem(reports, *coordinator);
  EXPECT_EQ(v.kind, Verdict::Kind::kDamaged);
  EXPECT_EQ(v.why, "rank 1: rank-00001.pt: checksum mismatch");

  v = daemon::first_problem(reports_at({7, 8, 7}), *coordinator);
  EXPECT_EQ(v.kind, Verdict::Kind::kFailed) << "ranks about different snapshots never agree";
  EXPECT_EQ(v.why, "the ranks disagree on the step: rank 0 is at step 7, rank 1 at step 8");
}

TEST(Agreement, EveryRankGetsTheVerdictOnlyRankZeroDecides) {
  testing::ThreadJob job(3);
  std::atomic<int> decisions{0};
  std::vector<Verdict> verdicts(3);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 3; ++r) {
    ranks.emplace_back([&, r] {
      auto coordinator = job.coordinator(r);
      RankReport mine;
      mine.step = 5;
      mine.files = {{"rank-0000" + std::to_string(r) + ".pt", static_cast<uint64_t>(100 + r), 0}};
      verdicts[static_cast<size_t>(r)] =
          daemon::agree(*coordinator, Channel::kWriter, mine, [&](const std::vector<RankReport>& reports) {
            ++decisions;
            Verdict v = daemon::first_problem(reports, *coordinator);
            v.detail = std::to_string(reports[2].files.at(0).size);  // rank 0 sees every rank's files
            return v;
          });
    });
  }
  for (auto& t : ranks) t.join();
  EXPECT_EQ(decisions.load(), 1);
  for (const auto& v : verdicts) {
    EXPECT_EQ(v.kind, Verdict::Kind::kGo);
    EXPECT_EQ(v.step, 5);
    EXPECT_EQ(v.detail, "102");
  }
}

TEST(Agreement, ADecisionThatThrowsIsAFailureNamingRankZero) {
  testing::ThreadJob job(2);
  std::vector<Verdict> verdicts(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto coordinator = job.coordinator(r);
      verdicts[static_cast<size_t>(r)] = daemon::agree(
          *coordinator, Channel::kWriter, RankReport{},
          [&](const std::vector<RankReport>&) -> Verdict { throw IoError("rename", "/d/x", ENOSPC); });
    });
  }
  for (auto& t : ranks) t.join();
  for (const auto& v : verdicts) {
    EXPECT_EQ(v.kind, Verdict::Kind::kFailed);
    EXPECT_EQ(v.why.rfind("rank 0: rename '/d/x' failed", 0), 0u) << v.why;
  }
}

TEST(Agreement, ADeadRankIsACoordinationErrorForTheOthers) {
  testing::ThreadJob job(2);
  std::string error;
  std::thread rank0([&] {
    auto coordinator = job.coordinator(0);
    error = testing::error_of<CoordinationError>([&] {
      daemon::agree(*coordinator, Channel::kTraining, RankReport{},
                    [](const std::vector<RankReport>&) { return Verdict{}; });
    });
  });
  job.kill(1);
  rank0.join();
  EXPECT_EQ(error, "rank 0: rank 1 is lost: its process died");
}

}  // namespace
}  // namespace autosnap
