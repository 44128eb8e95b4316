// A job of two ranks in this process on LibTorch's c10d (autosnap's TCPStore,
// Gloo groups and lifeline), each rank a thread with its own snapshotter and
// its own view of the disk, the training threads meeting at every step as a
// job's own allreduce makes them. Rank 1's disk stalls once while it writes a
// shard — longer than distributed.timeout_seconds — and the job must go on
// snapshotting afterwards, never stop protecting itself silently (the defect
// this replaces: one timed-out collective failed every later snapshot).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <condition_variable>
#include <functional>
#include <thread>

#include "autosnap/autosnap.h"
#include "autosnap/tools.h"
#include "cluster/c10d_coordinator.h"
#include "daemon/snapshotter_impl.h"
#include "fs/unique_suffix.h"
#include "support/fault_fs.h"
#include "support/snapshotter_fixtures.h"
#include "support/test_util.h"
#include "support/thread_job.h"

namespace autosnap {
namespace {

using testing::FaultInjectingFileSystem;
using testing::TempDir;

constexpr int kTimeoutSeconds = 2;

// The training's own collective: no rank passes a step until every rank has
// finished it (no timeout, like a job's allreduce with PyTorch's 30 minutes).
class StepBarrier {
 public:
  explicit StepBarrier(int ranks) : ranks_(ranks) {}
  void arrive() {
    std::unique_lock<std::mutex> lock(mutex_);
    const int64_t round = round_;
    if (++arrived_ == ranks_) {
      arrived_ = 0;
      ++round_;
      changed_.notify_all();
      return;
    }
    changed_.wait(lock, [&] { return round_ != round; });
  }

 private:
  const int ranks_;
  std::mutex mutex_;
  std::condition_variable changed_;
  int arrived_ = 0;
  int64_t round_ = 0;
};

struct RankResult {
  std::string error;       // what the training thread caught, if anything
  int64_t last_step = -1;  // the last step whose on_step_end returned
  SnapshotStats stats;
};

// Trains `steps` steps on both ranks with a snapshot every 10; `before_step`
// runs on each rank's thread before each step.
std::vector<RankResult> run_job(const std::string& directory, FaultInjectingFileSystem (&disks)[2], int steps,
                                const std::function<void(int rank, int64_t step)>& before_step,
                                const std::string& extra = "") {
  const std::string yaml =
      "directory: " + directory +
      "\ntriggers: {every_steps: 10}\nretention: {keep_last: 0}\ncontrol: {socket: false}\n"
      "capture: {rng: false}\nlog_level: warn\n"
      "distributed: {timeout_seconds: " +
      std::to_string(kTimeoutSeconds) + ", on_lost_rank: throw}\n" + extra;
  const std::string launch = "stall-test-" + unique_suffix();
  StepBarrier training(2);
  std::vector<RankResult> results(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] {
      RankResult& result = results[static_cast<size_t>(rank)];
      try {
        cluster::RankInfo info;
        info.rank = rank;
        info.world_size = 2;
        info.local_rank = rank;
        info.source = "test";
        info.launch = launch;
        cluster::C10dCoordinator::Options options;
        options.timeout = std::chrono::seconds(kTimeoutSeconds);
        options.directory = directory;
        daemon::JobContext job;
        job.coordinator = std::make_unique<cluster::C10dCoordinator>(info, options);
        auto snap = daemon::make_active_snapshotter(Config::from_string(yaml, "stall.yaml"), disks[rank],
                                                    std::move(job));
        at::Tensor weights = torch::zeros({64, 64});
        int64_t counter = 0;
        snap->track("weights", [&] { return daemon::track_tensor(weights); });
        snap->track("counter", [&] { return daemon::track_int(counter); });
        snap->on_train_start();
        for (int64_t step = 0; step < steps; ++step) {
          before_step(rank, step);
          weights.fill_(static_cast<float>(step * 10 + rank));
          counter = step;
          training.arrive();
          snap->on_step_end(step);
          result.last_step = step;
        }
        snap->close();
        result.stats = snap->stats();
      } catch (const std::exception& e) {
        result.error = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  return results;
}

void expect_complete_snapshots(const std::string& directory, const std::vector<int64_t>& steps) {
  auto store = SnapshotStore::open_read_only(directory);
  EXPECT_EQ(store->valid_steps(), steps);
  for (int64_t step : store->valid_steps()) {
    const Snapshot snapshot = store->open(step);
    const auto result = snapshot.verify();
    EXPECT_TRUE(result.ok) << step << ": " << result.problem;
    EXPECT_NE(snapshot.manifest().find(shard_file_name(1)), nullptr)
        << "step " << step << " lacks rank 1's shard";
  }
  for (const auto& name : testing::list_names(directory))
    EXPECT_EQ(name.find(".tmp-"), std::string::npos) << name << ": a tmp dir was left behind";
}

// Trains `steps` steps; rank 1's shard write of step 10 stalls `timeouts` × the timeout.
std::vector<RankResult> run_with_a_stall(const std::string& directory, int steps, double timeouts) {
  FaultInjectingFileSystem disks[2];
  return run_job(directory, disks, steps, [&](int rank, int64_t step) {
    if (rank == 1 && step == 10)
      disks[1].stall_next_append_ms = static_cast<int>(timeouts * 1000 * kTimeoutSeconds);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  });
}

// Stalled 1.5 timeouts: the group is formed again while the stalled rank
// comes back, and even the snapshot being written then is committed.
TEST(StallRecovery, AWriteStalledPastTheTimeoutStillCommits) {
  TempDir dir;
  auto results = run_with_a_stall(dir.file("snaps"), 41, 1.5);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[static_cast<size_t>(r)].error, "") << "rank " << r;
    EXPECT_EQ(results[static_cast<size_t>(r)].stats.failed, 0) << "rank " << r;
  }
  expect_complete_snapshots(dir.file("snaps"), {0, 10, 20, 30, 40});
}

// Stalled 2.5 timeouts: that snapshot fails on both ranks (the others could
// not wait for it), its tmp dir is removed once every rank is past it, and
// the next snapshots commit again; the job finishes normally.
TEST(StallRecovery, AWriteStalledPastTwoTimeoutsFailsThatSnapshotOnlyAndSaysSo) {
  TempDir dir;
  auto results = run_with_a_stall(dir.file("snaps"), 61, 2.5);
  for (int r = 0; r < 2; ++r) {
    const auto& result = results[static_cast<size_t>(r)];
    EXPECT_EQ(result.error, "") << "rank " << r;
    EXPECT_GE(result.stats.failed, 1) << "rank " << r << ": the stalled snapshot is a failure, said";
    EXPECT_GE(result.stats.committed, 3) << "rank " << r << ": snapshots go on after the stall";
  }
  auto store = SnapshotStore::open_read_only(dir.file("snaps"));
  const auto steps = store->valid_steps();
  ASSERT_FALSE(steps.empty());
  EXPECT_EQ(steps.back(), 60) << "the train-end snapshot is committed";
  EXPECT_EQ(std::count(steps.begin(), steps.end(), 10), 0) << "the stalled snapshot is not committed";
  expect_complete_snapshots(dir.file("snaps"), steps);
  const auto failed = testing::count_events(dir.file("snaps"), "failed");
  EXPECT_GE(failed, 1);
}

// A rank whose every shard write fails: after max_consecutive_failures
// failed snapshots in a row, the next hook throws on every rank, even with
// on_error: warn — a job that keeps failing must not train on unprotected.
TEST(StallRecovery, FailuresInARowBecomeAnErrorOnEveryRank) {
  TempDir dir;
  FaultInjectingFileSystem disks[2];
  disks[1].fail_writes_errno = ENOSPC;
  disks[1].fail_only = "write";
  auto results = run_job(
      dir.file("snaps"), disks, 100, [](int, int64_t) {}, "max_consecutive_failures: 3\n");
  // Rank 1's shards fail, so every snapshot fails on both ranks; whichever
  // counts 3 first stops both after the same step.
  const std::string both = results[0].error + "\n" + results[1].error;
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(results[static_cast<size_t>(r)].error.find("max_consecutive_failures: 3"), std::string::npos)
        << "rank " << r << ": " << results[static_cast<size_t>(r)].error;
  }
  EXPECT_NE(both.find("3 snapshots in a row failed"), std::string::npos) << both;
  EXPECT_NE(both.find("No space left on device"), std::string::npos) << "names the cause: " << both;
  EXPECT_EQ(results[0].last_step, results[1].last_step) << "both ranks stop after the same step";
  EXPECT_LT(results[0].last_step, 99) << "before the end of training";
}

// A rank whose commit verdict never arrived (its exchange failed after rank
// 0 had committed) records a failure — and learns at the next snapshot that
// it was committed after all, so every rank's record agrees with the disk.
class LosesOneWriterExchange final : public daemon::Coordinator {
 public:
  LosesOneWriterExchange(std::unique_ptr<daemon::Coordinator> inner, int64_t lose)
      : inner_(std::move(inner)), lose_(lose) {}
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  std::vector<std::string> exchange(const std::string& mine, daemon::Channel channel) override {
    auto result = inner_->exchange(mine, channel);
    if (channel == daemon::Channel::kWriter && ++writer_exchanges_ == lose_)
      throw CoordinationError("rank 1: the verdict did not arrive (lost on purpose by the test)");
    return result;
  }

 private:
  std::unique_ptr<daemon::Coordinator> inner_;
  const int64_t lose_;
  int64_t writer_exchanges_ = 0;
};

TEST(StallRecovery, ARankThatMissedACommitVerdictLearnsItAtTheNextSnapshot) {
  TempDir dir;
  testing::ThreadJob job(2);
  std::vector<SnapshotStats> stats(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] {
      daemon::JobContext context;
      // The 4th exchange of the writer is the first snapshot's commit verdict.
      context.coordinator =
          rank == 1 ? std::make_unique<LosesOneWriterExchange>(job.coordinator(1), 4) : job.coordinator(0);
      auto snap = daemon::make_active_snapshotter(
          testing::make_config(dir.path(),
                               "triggers: {every_steps: 10, on_train_end: false}\ncapture: {rng: false}\n"
                               "retention: {keep_last: 0}\nflush: {mode: sync}\n"),
          default_file_system(), std::move(context));
      at::Tensor weights = torch::full({8}, static_cast<float>(rank));
      snap->track("weights", [&] { return daemon::track_tensor(weights); });
      for (int64_t step = 0; step <= 10; ++step) snap->on_step_end(step);
      snap->close();
      stats[static_cast<size_t>(rank)] = snap->stats();
    });
  }
  for (auto& t : ranks) t.join();
  EXPECT_EQ(SnapshotStore::open_read_only(dir.path())->valid_steps(), (std::vector<int64_t>{0, 10}));
  EXPECT_EQ(stats[0].committed, 2);
  EXPECT_EQ(stats[0].failed, 0);
  EXPECT_EQ(stats[1].failed, 1) << "rank 1 could not know at the time";
  EXPECT_EQ(stats[1].committed, 2) << "and counts step 0 once it learns it was committed";
  bool learned = false;
  for (const auto& event : testing::read_events_file(dir.file("events.rank-00001.jsonl"))) {
    learned |= event["event"] == "committed" && event["step"] == 0 && event.value("verdict_missed", false);
  }
  EXPECT_TRUE(learned) << "rank 1's events say step 0 was committed after all";
}

}  // namespace
}  // namespace autosnap
