// Crash consistency the way storage engines prove it: run a snapshot +
// commit + retention sequence on an in-memory file system that models what
// fsync makes durable, crash at every file-system call in turn, lose power
// (forget everything not durable), reboot, and check that the store picks a
// valid snapshot — the new one if its commit was durable, else an older one —
// and never a partial one. Then the same with injected I/O errors, short
// writes and a full disk instead of crashes.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cerrno>
#include <functional>
#include <map>
#include <thread>

#include "autosnap/autosnap.h"
#include "autosnap/tools.h"
#include "daemon/snapshotter_impl.h"
#include "support/memory_fs.h"
#include "support/rank_fs.h"
#include "support/thread_job.h"

namespace autosnap {
namespace {

using testing::MemoryFileSystem;
using testing::SimulatedCrash;

const std::string kDirectory = "/snaps";

Config config(const std::string& flush = "flush: {mode: sync}\n") {
  return Config::from_string("directory: " + kDirectory + "\n" + flush +
                                 "retention: {keep_last: 1}\n"
                                 "triggers: {every_steps: 10, on_train_end: false}\n"
                                 "control: {socket: false}\ncapture: {rng: false}\nlog_level: off\n",
                             "crash.yaml");
}

struct State {
  at::Tensor weights = torch::zeros({64, 64});
  int64_t counter = 0;
  void set(int64_t step) {
    weights.fill_(static_cast<float>(step));
    counter = step;
  }
  void track(Snapshotter& snap) {
    snap.track("weights", weights);
    snap.track("counter", counter);
  }
};

// Step 10 committed and durable: what "the user had committed" before the scenario.
void populate(MemoryFileSystem& fs) {
  State state;
  Snapshotter snap(config(), {&fs});
  state.track(snap);
  state.set(10);
  snap.on_step_end(10);
  snap.close();
}

// Resume, then snapshot steps 20 and 30; retention (keep_last 1) deletes the older ones.
void scenario(MemoryFileSystem& fs, const std::string& flush = "flush: {mode: sync}\n") {
  State state;
  Snapshotter snap(config(flush), {&fs});
  state.track(snap);
  snap.on_train_start();
  for (int64_t step : {20, 30}) {
    state.set(step);
    snap.on_step_end(step);
  }
  snap.close();
}

// Runs the scenario, swallowing the simulated crash wherever it surfaces.
void run_crashing(MemoryFileSystem& fs, const std::string& flush = "flush: {mode: sync}\n") {
  try {
    scenario(fs, flush);
  } catch (const SimulatedCrash&) {
  } catch (const Error&) {
    // A failure surfaced by on_train_start/close after the crash point: the process is dead anyway.
  }
}

// After a reboot: the store opens, the newest valid snapshot is consistent,
// nothing corrupt or half-written is visible. Returns its step.
int64_t check_after_reboot(MemoryFileSystem& fs, const std::string& context) {
  auto store = SnapshotStore::open_for_writing(kDirectory, true, fs);
  for (const auto& info : store->list()) {
    EXPECT_EQ(info.status, SnapshotStatus::kValid) << context << ": " << info.name << " " << info.problem;
  }
  auto latest = store->latest_valid();
  if (!latest) {
    ADD_FAILURE() << context << ": no valid snapshot left (committed data was lost)";
    return -1;
  }
  auto value = latest->read_shard(0, torch::kCPU);
  const auto shard = value.toGenericDict();
  EXPECT_EQ(shard.at("counter").toInt(), latest->step()) << context;
  EXPECT_TRUE(torch::all(shard.at("weights").toTensor() == static_cast<float>(latest->step())).item<bool>())
      << context;
  return latest->step();
}

// Where, in a crash-free run, each step's commit became durable (the fsync of
// DIR after its rename) and where it was renamed.
struct Milestones {
  std::map<int64_t, int64_t> renamed, durable;
};

Milestones find_milestones(const std::vector<std::string>& log, int64_t base) {
  Milestones m;
  std::map<int64_t, bool> pending;
  for (size_t i = static_cast<size_t>(base); i < log.size(); ++i) {
    const int64_t call = static_cast<int64_t>(i) + 1;
    for (int64_t step : {20, 30}) {
      const std::string final_name = kDirectory + "/" + SnapshotStore::directory_name(step);
      if (log[i].rfind("rename ", 0) == 0 && log[i].size() >= final_name.size() &&
          log[i].compare(log[i].size() - final_name.size(), final_name.size(), final_name) == 0) {
        m.renamed[step] = call;
        pending[step] = true;
      }
      if (pending[step] && log[i] == "fsync-dir " + kDirectory) {
        m.durable[step] = call;
        pending[step] = false;
      }
    }
  }
  return m;
}

// Crashes the scenario at each of its file-system calls in turn, loses power,
// reboots, and checks the recovered step against where each commit became durable.
void check_every_crash_point(const std::string& flush) {
  MemoryFileSystem reference;
  populate(reference);
  const int64_t base = reference.calls();
  scenario(reference, flush);
  const int64_t total = reference.calls() - base;
  const auto milestones = find_milestones(reference.call_log(), base);
  ASSERT_EQ(milestones.durable.size(), 2u) << "both commits must be found in the call log";
  ASSERT_GT(total, 20);

  int newer = 0;
  for (int64_t n = 1; n <= total + 1; ++n) {
    MemoryFileSystem fs;
    populate(fs);
    const int64_t crash_call = fs.calls() + n;
    fs.crash_at(n);
    run_crashing(fs, flush);
    fs.power_loss();
    const std::string context =
        "crash at call " + std::to_string(n) + " of " + std::to_string(total) + " (" +
        (n <= total ? reference.call_log()[static_cast<size_t>(base + n - 1)] : "after the end") + ")";
    const int64_t step = check_after_reboot(fs, context);
    int64_t floor = 10, ceiling = 10;
    for (int64_t s : {20, 30}) {
      if (milestones.durable.at(s) < crash_call) floor = s;
      if (milestones.renamed.at(s) < crash_call) ceiling = s;
    }
    EXPECT_GE(step, floor) << context << ": a durably committed snapshot was lost";
    EXPECT_LE(step, ceiling) << context << ": a snapshot appeared that was never committed";
    newer += step > 10;
  }
  std::cout << "crash points checked with " << flush.substr(0, flush.size() - 1) << ": " << total + 1
            << " (every file-system call of snapshot+commit+retention); " << newer
            << " recovered a newer snapshot, the rest the older one" << std::endl;
}

TEST(CrashPoints, EveryCallOfSnapshotCommitAndRetention) { check_every_crash_point("flush: {mode: sync}\n"); }

// The background writer (Asio strand) performs the same calls in the same
// order; a crash there must leave the same guarantees.
TEST(CrashPoints, EveryCallOfABackgroundFlush) { check_every_crash_point("flush: {mode: async}\n"); }

TEST(CrashPoints, WithoutFsyncNothingPartialIsEverChosen) {
  MemoryFileSystem reference;
  populate(reference);
  const int64_t base = reference.calls();
  scenario(reference, "flush: {mode: sync, fsync: false}\n");
  const int64_t total = reference.calls() - base;
  for (int64_t n = 1; n <= total + 1; ++n) {
    MemoryFileSystem fs;
    populate(fs);
    fs.crash_at(n);
    run_crashing(fs, "flush: {mode: sync, fsync: false}\n");
    fs.power_loss();
    // Recent snapshots may be lost, but retention only deleted step 10 after making a newer one durable.
    check_after_reboot(fs, "fsync: false, crash at call " + std::to_string(n));
  }
  std::cout << "crash points checked without fsync: " << total + 1 << std::endl;
}

// The memory tier: a process killed (the machine lives on: nothing is lost
// from the tmpfs, no fsync matters) at every file-system call of three memory
// snapshots and their retention restarts from the newest one renamed before
// the kill, or the disk's step 10, never a torn one; and writes it to disk.
Config memory_config() {
  return Config::from_string("directory: " + kDirectory +
                                 "\nflush: {mode: sync}\nretention: {keep_last: 1}\n"
                                 "triggers: {every_steps: 10, on_train_end: false}\n"
                                 "memory: {every_steps: 1, keep_last: 2, directory: /shm}\n"
                                 "control: {socket: false}\ncapture: {rng: false}\nlog_level: off\n",
                             "memory-crash.yaml");
}

void memory_scenario_until_killed(MemoryFileSystem& fs) {
  State state;
  try {
    Snapshotter snap(memory_config(), {&fs});
    state.track(snap);
    snap.on_train_start();
    for (int64_t step = 11; step <= 13; ++step) {
      state.set(step);
      snap.on_step_end(step);
      snap.wait_until_finished();  // each step's memory snapshot is taken (none skipped): one call sequence
    }
    throw SimulatedCrash();  // killed after step 13
  } catch (const SimulatedCrash&) {
  } catch (const Error&) {
  }
}

TEST(CrashPoints, EveryCallOfMemorySnapshotsKilledMidCopy) {
  MemoryFileSystem reference;
  populate(reference);
  const int64_t base = reference.calls();
  memory_scenario_until_killed(reference);
  const int64_t total = reference.calls() - base;
  const auto log = reference.call_log();
  std::map<int64_t, int64_t> renamed;  // step -> the call that committed its memory snapshot
  for (size_t i = static_cast<size_t>(base); i < log.size(); ++i) {
    for (int64_t step : {11, 12, 13}) {
      const std::string final_name = "/rank-00000/" + SnapshotStore::directory_name(step);
      if (log[i].rfind("rename /shm/", 0) == 0 && log[i].size() > final_name.size() &&
          log[i].compare(log[i].size() - final_name.size(), final_name.size(), final_name) == 0)
        renamed[step] = static_cast<int64_t>(i) + 1;
    }
  }
  ASSERT_EQ(renamed.size(), 3u) << "every memory commit must be found in the call log";

  for (int64_t n = 1; n <= total + 1; ++n) {
    MemoryFileSystem fs;
    populate(fs);
    const int64_t crash_call = fs.calls() + n;
    fs.crash_at(n);
    memory_scenario_until_killed(fs);
    fs.process_killed();
    const std::string context = "killed at call " + std::to_string(n) + " of " + std::to_string(total) +
                                " (" +
                                (n <= total ? log[static_cast<size_t>(base + n - 1)] : "after the end") + ")";
    int64_t expected = 10;
    for (const auto& [step, call] : renamed)
      if (call < crash_call) expected = step;
    State state;
    Snapshotter snap(memory_config(), {&fs});
    state.track(snap);
    const auto resumed = snap.on_train_start();
    ASSERT_TRUE(resumed) << context;
    EXPECT_EQ(resumed->step, expected) << context;
    EXPECT_EQ(state.counter, resumed->step) << context << ": a torn memory snapshot was restored";
    EXPECT_TRUE(torch::all(state.weights == static_cast<float>(resumed->step)).item<bool>()) << context;
    snap.wait_until_finished();
    EXPECT_EQ(SnapshotStore::open_read_only(kDirectory, fs)->valid_steps().back(), expected)
        << context << ": the restored memory snapshot must be written to disk";
  }
  std::cout << "memory-tier kill points checked: " << total + 1 << std::endl;
}

TEST(CrashPoints, AtomicSaveKeepsTheOldOrTheNewFile) {
  MemoryFileSystem reference;
  reference.create_directory("/data");
  reference.sync_directory("/");
  save(torch::full({100}, 1.0f), "/data/x.pt", reference);
  const int64_t base = reference.calls();
  save(torch::full({100}, 2.0f), "/data/x.pt", reference);
  const int64_t total = reference.calls() - base;
  for (int64_t n = 1; n <= total + 1; ++n) {
    MemoryFileSystem fs;
    fs.create_directory("/data");
    fs.sync_directory("/");
    save(torch::full({100}, 1.0f), "/data/x.pt", fs);
    fs.crash_at(n);
    try {
      save(torch::full({100}, 2.0f), "/data/x.pt", fs);
    } catch (const SimulatedCrash&) {
    }
    fs.power_loss();
    auto value = load("/data/x.pt", "cpu", fs).toTensor();
    const float v = value[0].item<float>();
    EXPECT_TRUE(v == 1.0f || v == 2.0f) << "crash at call " << n;
    EXPECT_TRUE(torch::all(value == v).item<bool>()) << "crash at call " << n << ": a mix of old and new";
    if (n > total) EXPECT_EQ(v, 2.0f) << "a completed save must survive a power loss";
  }
  std::cout << "crash points checked for save(): " << total + 1 << std::endl;
}

// ---- Two ranks: every rank writes its shard into rank 0's tmp dir, rank 0 commits ----

// Rank r's state at `step`: distinct per rank, so a restore of the wrong shard shows.
struct RankState {
  at::Tensor weights = torch::zeros({64, 64});
  int64_t counter = 0;
  void set(int64_t step, int rank) {
    weights.fill_(static_cast<float>(step * 10 + rank));
    counter = step;
  }
};

using RankBody = std::function<void(daemon::SnapshotterImpl&, RankState&, int rank)>;

// Runs `body` on both ranks of a two-rank job, one thread each, over `shared`
// seen through `views`. A rank whose process "dies" (a simulated crash, or
// the error that its peer's death causes) leaves the job at once, as a
// killed process does; returns the step each rank's restore (if any) found.
void run_two_ranks(std::vector<std::unique_ptr<testing::RankFileSystem>>& views, const std::string& flush,
                   const RankBody& body) {
  testing::ThreadJob job(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      RankState state;
      std::unique_ptr<daemon::SnapshotterImpl> snap;
      try {
        daemon::JobContext context;
        context.coordinator = job.coordinator(rank);
        snap = daemon::make_active_snapshotter(config(flush), *views[static_cast<size_t>(rank)],
                                               std::move(context));
        snap->track("weights", [&] { return daemon::track_tensor(state.weights); });
        snap->track("counter", [&] { return daemon::track_int(state.counter); });
        body(*snap, state, rank);
        snap->close();
      } catch (const std::exception&) {
        job.kill(rank);  // before the snapshotter goes: its own waits end too
      }
      snap.reset();
    });
  }
  for (auto& t : threads) t.join();
}

std::vector<std::unique_ptr<testing::RankFileSystem>> views_of(MemoryFileSystem& shared) {
  std::vector<std::unique_ptr<testing::RankFileSystem>> views;
  for (int rank = 0; rank < 2; ++rank) views.push_back(std::make_unique<testing::RankFileSystem>(shared));
  return views;
}

void populate_two_ranks(MemoryFileSystem& fs) {
  auto views = views_of(fs);
  run_two_ranks(views, "flush: {mode: sync}\n",
                [](daemon::SnapshotterImpl& snap, RankState& state, int rank) {
                  state.set(10, rank);
                  snap.on_step_end(10);
                });
}

void two_rank_scenario(daemon::SnapshotterImpl& snap, RankState& state, int rank) {
  snap.on_train_start();
  for (int64_t step : {20, 30}) {
    state.set(step, rank);
    snap.on_step_end(step);
  }
}

// After the power loss: both ranks restore the same step, each its own
// shard, and every snapshot on disk is complete. Returns the step.
int64_t check_two_ranks_after_reboot(MemoryFileSystem& fs, const std::string& context) {
  auto views = views_of(fs);
  std::vector<int64_t> restored(2, -1);
  std::vector<std::string> problems(2);
  run_two_ranks(views, "flush: {mode: sync}\n",
                [&](daemon::SnapshotterImpl& snap, RankState& state, int rank) {
                  auto point = snap.on_train_start();
                  if (!point) return;
                  restored[static_cast<size_t>(rank)] = point->step;
                  const float want = static_cast<float>(point->step * 10 + rank);
                  if (state.counter != point->step || !torch::all(state.weights == want).item<bool>())
                    problems[static_cast<size_t>(rank)] =
                        "rank " + std::to_string(rank) + " restored another state than its own";
                });
  EXPECT_EQ(restored[0], restored[1]) << context << ": the ranks resumed from different steps";
  for (const auto& p : problems) EXPECT_TRUE(p.empty()) << context << ": " << p;
  auto store = SnapshotStore::open_for_writing(kDirectory, true, fs);
  for (const auto& info : store->list()) {
    EXPECT_EQ(info.status, SnapshotStatus::kValid) << context << ": " << info.name << " " << info.problem;
    if (info.status != SnapshotStatus::kValid) continue;
    EXPECT_NE(info.manifest->find(shard_file_name(0)), nullptr) << context << ": " << info.name;
    EXPECT_NE(info.manifest->find(shard_file_name(1)), nullptr)
        << context << ": " << info.name << " lacks rank 1";
  }
  if (restored[0] < 0) ADD_FAILURE() << context << ": no valid snapshot left (committed data was lost)";
  return restored[0];
}

// Crashes rank `victim` at each of its own file-system calls of the two-rank
// scenario in turn (the other rank goes on until it finds its peer gone),
// loses power, relaunches both ranks and checks what they resume from.
void check_every_crash_point_of_two_ranks(int victim, const std::string& flush) {
  MemoryFileSystem reference;
  populate_two_ranks(reference);
  auto reference_views = views_of(reference);
  run_two_ranks(reference_views, flush, two_rank_scenario);
  const int64_t total = reference_views[static_cast<size_t>(victim)]->calls();
  ASSERT_GT(total, 10);
  ASSERT_EQ(SnapshotStore::open_read_only(kDirectory, reference)->valid_steps(), std::vector<int64_t>{30});

  int newer = 0;
  for (int64_t n = 1; n <= total + 1; ++n) {
    MemoryFileSystem fs;
    populate_two_ranks(fs);
    const int64_t base = fs.calls();
    auto views = views_of(fs);
    views[static_cast<size_t>(victim)]->crash_at(n);
    run_two_ranks(views, flush, two_rank_scenario);
    fs.power_loss();
    const std::string context = "rank " + std::to_string(victim) + " crashed at its call " +
                                std::to_string(n) + " of " + std::to_string(total) + " (" +
                                flush.substr(0, flush.size() - 1) + ")";
    // What this run made durable, and what it renamed into place.
    const auto milestones = find_milestones(fs.call_log(), base);
    int64_t floor = 10, ceiling = 10;
    for (int64_t s : {20, 30}) {
      if (milestones.durable.count(s)) floor = s;
      if (milestones.renamed.count(s)) ceiling = s;
    }
    const int64_t step = check_two_ranks_after_reboot(fs, context);
    EXPECT_GE(step, floor) << context << ": a durably committed snapshot was lost";
    EXPECT_LE(step, ceiling) << context << ": a snapshot appeared that was never committed";
    if (n > total) EXPECT_EQ(step, 30) << context;
    newer += step > 10;
  }
  std::cout << "two-rank crash points with rank " << victim << " dying (" << flush.substr(0, flush.size() - 1)
            << "): " << total + 1 << "; " << newer << " resumed from a newer snapshot, the rest from step 10"
            << std::endl;
}

TEST(CrashPoints, EveryCallOfATwoRankCommitWithRankZeroDying) {
  check_every_crash_point_of_two_ranks(0, "flush: {mode: sync}\n");
  check_every_crash_point_of_two_ranks(0, "flush: {mode: async}\n");
}

TEST(CrashPoints, EveryCallOfATwoRankCommitWithRankOneDying) {
  check_every_crash_point_of_two_ranks(1, "flush: {mode: sync}\n");
  check_every_crash_point_of_two_ranks(1, "flush: {mode: async}\n");
}

// Instead of crashing, the n-th call fails (EIO, ENOSPC, EROFS, EACCES in turn).
TEST(FaultInjection, EveryCallFailingOnceLeavesAConsistentStore) {
  MemoryFileSystem reference;
  populate(reference);
  const int64_t base = reference.calls();
  scenario(reference);
  const int64_t total = reference.calls() - base;
  const int errors[] = {EIO, ENOSPC, EROFS, EACCES};
  int64_t failed_snapshots = 0;
  for (int64_t n = 1; n <= total; ++n) {
    MemoryFileSystem fs;
    populate(fs);
    fs.fail_at(n, errors[n % 4]);
    try {
      scenario(fs);
    } catch (const Error&) {
      // e.g. the restore's own bookkeeping failed: reported to the caller, nothing damaged.
    }
    failed_snapshots += fs.faults_injected();
    const int64_t step = check_after_reboot(fs, "failure at call " + std::to_string(n));
    EXPECT_GE(step, 10);
  }
  std::cout << "I/O errors injected: " << failed_snapshots << " (one at each of " << total << " calls)"
            << std::endl;
}

TEST(FaultInjection, ShortWritesAndAFullDisk) {
  int64_t faults = 0;
  for (int64_t n = 1; n <= 40; ++n) {
    MemoryFileSystem fs;
    populate(fs);
    fs.short_write_at(n);
    scenario(fs);
    faults += fs.faults_injected();
    check_after_reboot(fs, "short write at append " + std::to_string(n));
  }
  // A disk that fills up part-way: older snapshots stay, the next one fails cleanly.
  for (uint64_t capacity : {20000u, 40000u, 60000u}) {
    MemoryFileSystem fs;
    populate(fs);
    fs.set_capacity(capacity);
    scenario(fs);
    faults += fs.faults_injected();
    EXPECT_GE(check_after_reboot(fs, "capacity " + std::to_string(capacity)), 10);
  }
  std::cout << "short writes and ENOSPC injected: " << faults << std::endl;
}

}  // namespace
}  // namespace autosnap
