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
#include <map>

#include "autosnap/autosnap.h"
#include "support/memory_fs.h"

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
                             "crash.yaml", /*check_environment=*/false);
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
  Snapshotter snap(config(), fs);
  state.track(snap);
  state.set(10);
  snap.on_step_end(10);
  snap.close();
}

// Resume, then snapshot steps 20 and 30; retention (keep_last 1) deletes the older ones.
void scenario(MemoryFileSystem& fs, const std::string& flush = "flush: {mode: sync}\n") {
  State state;
  Snapshotter snap(config(flush), fs);
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
  auto value = store->read_shard(latest->step, 0, torch::kCPU);
  const auto shard = value.toGenericDict();
  EXPECT_EQ(shard.at("counter").toInt(), latest->step) << context;
  EXPECT_TRUE(torch::all(shard.at("weights").toTensor() == static_cast<float>(latest->step)).item<bool>())
      << context;
  return latest->step;
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
