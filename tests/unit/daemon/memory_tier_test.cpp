// The memory tier (daemon/memory_tier.h): snapshots that outlive the process
// in a tmpfs, restored without reading the snapshot directory, persisted to
// disk when newer, checked like shards, bounded, cleaned up.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <stdexcept>

#include "autosnap/autosnap.h"
#include "autosnap/tools.h"
#include "daemon/memory_tier.h"
#include "store/snapshot_writer.h"
#include "support/fault_fs.h"
#include "support/log_capture.h"
#include "support/snapshotter_fixtures.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using daemon::MemoryTier;
using testing::FaultInjectingFileSystem;
using testing::LogCapture;
using testing::make_config;
using testing::TempDir;

// A snapshot directory and a tmpfs stand-in, both under one TempDir.
struct Dirs {
  TempDir temp;
  std::string disk = temp.file("ckpt");
  std::string shm = temp.file("shm");
  Config config(int64_t disk_every = 50, const std::string& memory = "") const {
    return make_config(disk, "triggers: {every_steps: " + std::to_string(disk_every) +
                                 ", on_train_end: true}\nmemory: {every_steps: 1, keep_last: 2, directory: " +
                                 shm + memory + "}\n");
  }
  std::string job_path() const {
    return join_path(MemoryTier::root(shm), MemoryTier::job_key(disk, "local"));
  }
  std::string rank_path() const { return join_path(job_path(), "rank-00000"); }
};

struct State {
  at::Tensor weights = torch::zeros({128, 128});
  int64_t counter = 0;
  void set(int64_t step) {
    weights.fill_(static_cast<float>(step));
    counter = step;
  }
  void track(Snapshotter& snap) {
    snap.track("weights", weights);
    snap.track("counter", counter);
  }
  bool is(int64_t step) const {
    return counter == step && torch::all(weights == static_cast<float>(step)).item<bool>();
  }
};

// Steps first..last with a memory snapshot after each (waited for, so each is
// taken), then the process "dies": the snapshotter goes while an exception
// unwinds, so nothing of a normal exit runs.
void train_then_die(const Config& config, int64_t first, int64_t last, FileSystem* fs = nullptr) {
  State state;
  try {
    Snapshotter snap(config, {fs});
    state.track(snap);
    snap.on_train_start();
    for (int64_t step = first; step <= last; ++step) {
      state.set(step);
      snap.on_step_end(step);
      snap.wait_until_finished();
    }
    throw std::runtime_error("killed");
  } catch (const std::runtime_error&) {
  }
}

TEST(MemoryTier, ARestartResumesTheNewestMemorySnapshotWithoutReadingTheSnapshotDirectory) {
  Dirs dirs;
  train_then_die(dirs.config(), 1, 57);  // disk: step 50; memory: 56 and 57
  EXPECT_EQ(SnapshotStore::open_read_only(dirs.disk)->valid_steps(), std::vector<int64_t>{50});
  EXPECT_EQ(SnapshotStore::open_read_only(dirs.rank_path())->valid_steps(), (std::vector<int64_t>{56, 57}))
      << "keep_last: 2";

  FaultInjectingFileSystem fs;
  fs.count_reads_under = dirs.disk + "/step-";
  State state;
  Snapshotter snap(dirs.config(), {&fs});
  state.track(snap);
  const auto resumed = snap.on_train_start();
  ASSERT_TRUE(resumed);
  EXPECT_EQ(resumed->step, 57) << "at most the step the process was in is lost";
  EXPECT_TRUE(state.is(57));
  EXPECT_EQ(fs.reads_counted.load(), 0) << "a memory restore reads nothing of the disk's snapshots";
  EXPECT_NE(resumed->path.find(dirs.rank_path()), std::string::npos) << resumed->path;
  snap.wait_until_finished();
  EXPECT_EQ(SnapshotStore::open_read_only(dirs.disk)->valid_steps(), (std::vector<int64_t>{50, 57}))
      << "a memory snapshot newer than the disk's is written to disk at once";
  bool restored_from_memory = false;
  for (const auto& event : testing::read_events(dirs.disk))
    if (event["event"] == "restored") restored_from_memory = event["tier"] == "memory" && event["step"] == 57;
  EXPECT_TRUE(restored_from_memory);
}

TEST(MemoryTier, TheDiskWinsWhenItIsNewerAndATieGoesToMemory) {
  Dirs dirs;
  train_then_die(dirs.config(10), 1, 10);  // disk 10, memory 9 and 10
  FaultInjectingFileSystem fs;
  fs.count_reads_under = dirs.disk + "/step-";
  {
    State state;
    Snapshotter snap(dirs.config(10), {&fs});
    state.track(snap);
    ASSERT_EQ(snap.on_train_start()->step, 10);
    EXPECT_EQ(fs.reads_counted.load(), 0) << "the same step in memory: read from memory";
    EXPECT_EQ(SnapshotStore::open_read_only(dirs.disk)->valid_steps(), std::vector<int64_t>{10});
  }
  // A newer disk snapshot (another node ran on) than this node's memory.
  train_then_die(dirs.config(10), 11, 20);  // disk 20, memory 19, 20
  remove_tree(default_file_system(), join_path(dirs.rank_path(), SnapshotStore::directory_name(20)));
  State state;
  Snapshotter snap(dirs.config(10), {&fs});
  state.track(snap);
  EXPECT_EQ(snap.on_train_start()->step, 20);
  EXPECT_TRUE(state.is(20));
}

// Flips one byte in the middle of a memory snapshot's shard.
void damage(const std::string& snapshot_path) {
  const std::string shard = join_path(snapshot_path, "rank-00000.pt");
  std::fstream file(shard, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(0, std::ios::end);
  const auto middle = file.tellg() / 2;
  file.seekg(middle);
  char byte = 0;
  file.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x40);
  file.seekp(middle);
  file.write(&byte, 1);
}

TEST(MemoryTier, ADamagedMemorySnapshotIsNamedAndTheNextNewestIsUsed) {
  Dirs dirs;
  train_then_die(dirs.config(), 1, 57);  // disk 50, memory 56, 57
  damage(join_path(dirs.rank_path(), SnapshotStore::directory_name(57)));
  {
    LogCapture log;
    State state;
    Snapshotter snap(dirs.config(), {});
    state.track(snap);
    EXPECT_EQ(snap.on_train_start()->step, 56);
    EXPECT_TRUE(state.is(56));
    EXPECT_TRUE(log.has("the memory snapshot of step 57 on rank 0 is damaged (checksum mismatch"))
        << log.text();
  }
  // Both memory copies damaged: the disk.
  train_then_die(dirs.config(), 57, 58);  // memory 57, 58 (disk 50, 56)
  for (int64_t step : {57, 58}) damage(join_path(dirs.rank_path(), SnapshotStore::directory_name(step)));
  LogCapture log;
  State state;
  Snapshotter snap(dirs.config(), {});
  state.track(snap);
  EXPECT_EQ(snap.on_train_start()->step, 56);
  EXPECT_TRUE(state.is(56));
  EXPECT_TRUE(log.has("memory snapshot of step 58")) << log.text();
  EXPECT_TRUE(log.has("memory snapshot of step 57")) << log.text();
}

TEST(MemoryTier, ANormalExitLeavesNothingBehind) {
  Dirs dirs;
  {
    State state;
    Snapshotter snap(dirs.config(), {});
    state.track(snap);
    snap.on_train_start();
    for (int64_t step = 1; step <= 5; ++step) {
      state.set(step);
      snap.on_step_end(step);
      snap.wait_until_finished();
    }
    EXPECT_EQ(snap.stats().memory.committed, 5);
    EXPECT_TRUE(snap.stats().memory.on);
    EXPECT_TRUE(default_file_system().status(dirs.rank_path()).is_directory);
    snap.close();  // train end: step 5 on disk
  }
  EXPECT_FALSE(default_file_system().status(dirs.job_path()).exists);
  EXPECT_EQ(SnapshotStore::open_read_only(dirs.disk)->valid_steps(), std::vector<int64_t>{5});
}

TEST(MemoryTier, ANormalExitKeepsAMemorySnapshotTheDiskLacks) {
  Dirs dirs;
  LogCapture log;
  {
    State state;
    Snapshotter snap(make_config(dirs.disk,
                                 "triggers: {every_steps: 50, on_train_end: false}\nmemory: "
                                 "{directory: " +
                                     dirs.shm + "}\n"),
                     {});
    state.track(snap);
    for (int64_t step = 1; step <= 3; ++step) {
      state.set(step);
      snap.on_step_end(step);
      snap.wait_until_finished();
    }
    snap.close();
  }
  EXPECT_TRUE(log.has("kept the memory snapshot of step 3")) << log.text();
  EXPECT_EQ(SnapshotStore::open_read_only(dirs.rank_path())->valid_steps(), (std::vector<int64_t>{2, 3}));
}

TEST(MemoryTier, NoRoomTurnsTheTierOffWithOneWarningAndTheDiskGoesOn) {
  Dirs dirs;
  FaultInjectingFileSystem fs;
  fs.available = 100 * 1024;  // the state is 64 KiB: three copies do not fit
  LogCapture log;
  State state;
  Snapshotter snap(dirs.config(2), {&fs});
  state.track(snap);
  for (int64_t step = 1; step <= 4; ++step) {
    state.set(step);
    snap.on_step_end(step);
    snap.wait_until_finished();
  }
  EXPECT_FALSE(snap.stats().memory.on);
  EXPECT_EQ(snap.stats().memory.committed, 0);
  EXPECT_EQ(snap.stats().committed, 2) << "the disk tier goes on";
  const std::string text = log.text();
  EXPECT_NE(text.find("the memory tier is off for the rest of this run: 3 memory snapshots of"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("memory tier is off"), text.rfind("memory tier is off")) << "one warning: " << text;

  const Dirs limited;
  State other;
  LogCapture limit_log;
  Snapshotter small(limited.config(50, ", size_limit: 100KiB"), {});
  other.track(small);
  small.on_step_end(1);
  small.wait_until_finished();
  EXPECT_FALSE(small.stats().memory.on);
  EXPECT_TRUE(limit_log.has("more than memory.size_limit")) << limit_log.text();
}

TEST(MemoryTier, AFullTmpfsTurnsTheTierOffWithOneWarning) {
  Dirs dirs;
  FaultInjectingFileSystem fs;
  LogCapture log;
  State state;
  Snapshotter snap(dirs.config(2), {&fs});
  state.track(snap);
  state.set(1);
  snap.on_step_end(1);
  snap.wait_until_finished();
  ASSERT_EQ(snap.stats().memory.committed, 1);
  fs.fail_under = dirs.shm;
  fs.fail_writes_errno = ENOSPC;
  for (int64_t step = 2; step <= 4; ++step) {
    state.set(step);
    snap.on_step_end(step);
    snap.wait_until_finished();
  }
  EXPECT_FALSE(snap.stats().memory.on);
  EXPECT_EQ(snap.stats().memory.failed, 1) << "no more attempts once it is off";
  EXPECT_EQ(snap.stats().committed, 2) << "disk steps 2 and 4";
  EXPECT_TRUE(log.has("the memory snapshot of step 2 failed")) << log.text();
  EXPECT_TRUE(log.has("No space left on device")) << log.text();
}

// Leaves a tier of `job` for the snapshot directory `disk` holding `step`, held by no process.
void leave_tier(const Dirs& dirs, const std::string& job, int64_t step) {
  MemoryTier tier(dirs.config(), default_file_system(), 0, job);
  auto writer = SnapshotWriter::begin(tier.store(), step);
  c10::impl::GenericDict shard(c10::StringType::get(), c10::AnyType::get());
  shard.insert("counter", step);
  writer->write_shard(0, shard);
  Manifest manifest;
  writer->commit(manifest);
}

TEST(MemoryTier, AnotherJobsLeftoversAreNeverRestoredAndAreCleanedWhenTheDiskHasThem) {
  Dirs dirs;
  create_directories(default_file_system(), dirs.disk);
  leave_tier(dirs, "1001", 7);  // the disk has nothing: kept
  LogCapture log;
  {
    MemoryTier tier(dirs.config(), default_file_system(), 0, "1002");
    EXPECT_TRUE(tier.steps().empty()) << "another job's snapshots are not this job's";
  }
  EXPECT_TRUE(log.has("kept leftover memory snapshots")) << log.text();
  EXPECT_TRUE(log.has("hold step 7, newer than that directory has")) << log.text();
  const std::string other = join_path(MemoryTier::root(dirs.shm), MemoryTier::job_key(dirs.disk, "1001"));
  EXPECT_TRUE(default_file_system().status(other).exists);

  // Once the directory has step 7, the leftover is removed at the next start.
  {
    State state;
    Snapshotter snap(make_config(dirs.disk), {});
    state.track(snap);
    state.set(7);
    snap.on_step_end(7);
    snap.close();
  }
  {
    MemoryTier tier(dirs.config(), default_file_system(), 0, "1002");
    EXPECT_FALSE(default_file_system().status(other).exists);
  }
  // A tier a live process holds is never touched.
  MemoryTier held(dirs.config(), default_file_system(), 0, "1003");
  MemoryTier another(dirs.config(), default_file_system(), 0, "1004");
  EXPECT_TRUE(default_file_system().status(held.path()).exists);
  const auto found = daemon::find_memory_leftovers(default_file_system(), dirs.shm);
  int held_ones = 0;
  for (const auto& leftover : found) held_ones += leftover.held;
  EXPECT_EQ(held_ones, 2);
}

TEST(MemoryTier, TwoProcessesCannotShareOneRanksTier) {
  Dirs dirs;
  MemoryTier first(dirs.config(), default_file_system(), 0, "local");
  EXPECT_NE(testing::error_of<LockedError>([&] {
              MemoryTier second(dirs.config(), default_file_system(), 0, "local");
            }).find("is locked by another writer"),
            std::string::npos);
}

}  // namespace
}  // namespace autosnap
