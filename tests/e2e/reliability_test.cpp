// Real-process reliability: a restore that keeps crashing, a disk that fills
// up, random I/O failures through libfiu; and the corruption matrix: damaged
// shards and tampered manifests are detected, quarantined, and restore falls
// back to the right snapshot.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <torch/torch.h>
#include <unistd.h>

#include <sys/stat.h>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autosnap/autosnap.h"
#include "autosnap/tools.h"
#include "store/snapshot_writer.h"
#include "support/memory_fs.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::ChildProcess;
using testing::MemoryFileSystem;
using testing::TempDir;

std::vector<nlohmann::json> events_of(const std::string& directory) {
  std::vector<nlohmann::json> events;
  std::ifstream in(directory + "/events.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto event = nlohmann::json::parse(line, nullptr, false);
    if (!event.is_discarded()) events.push_back(event);  // a failed write may have cut a line short
  }
  return events;
}

int count_events(const std::string& directory, const std::string& kind, const std::string& text = "") {
  int n = 0;
  for (const auto& e : events_of(directory))
    n += e["event"] == kind && (text.empty() || e.dump().find(text) != std::string::npos);
  return n;
}

TEST(Reliability, ARestoreThatKeepsCrashingIsQuarantined) {
  TempDir dir;
  const std::string tool = testing::tool_path("restore_crasher");
  ChildProcess writer({tool, dir.path(), "write"});
  writer.read_all();
  ASSERT_EQ(writer.wait(), 0) << writer.output();
  for (int attempt = 1; attempt <= 3; ++attempt) {
    ChildProcess crashing({tool, dir.path(), "resume"});
    crashing.read_all();
    EXPECT_EQ(crashing.wait(), 128 + SIGABRT) << "attempt " << attempt << ":\n" << crashing.output();
  }
  ChildProcess survivor({tool, dir.path(), "resume"});
  survivor.read_all();
  ASSERT_EQ(survivor.wait(), 0) << survivor.output();
  EXPECT_NE(survivor.output().find("resumed from step 1 with value 1"), std::string::npos)
      << survivor.output();
  EXPECT_TRUE(default_file_system().status(dir.file("step-000000000002.corrupt-1")).exists);
  EXPECT_EQ(count_events(dir.path(), "quarantined", "crashed the process 3 times"), 1);
  EXPECT_FALSE(default_file_system().status(dir.file("restore-attempts.json")).exists)
      << "a restore followed by a completed step clears the record";
}

// Being killed right after a restore (preemption, the OOM killer, scancel)
// says nothing about the snapshot: however often it happens, it is not a
// crash loop, and the newest snapshot stays in use.
TEST(Reliability, KillsRightAfterARestoreAreNotCrashes) {
  TempDir dir;
  const std::string tool = testing::tool_path("restore_crasher");
  ChildProcess writer({tool, dir.path(), "write-healthy"});
  writer.read_all();
  ASSERT_EQ(writer.wait(), 0) << writer.output();
  for (int kill = 1; kill <= 5; ++kill) {
    ChildProcess killed({tool, dir.path(), "resume-and-wait"});
    ASSERT_TRUE(killed.wait_for_line("resumed from step 2 with value 2")) << "kill " << kill << ":\n"
                                                                          << killed.output();
    killed.kill(SIGKILL);
    EXPECT_EQ(killed.wait(), 128 + SIGKILL);
  }
  ChildProcess survivor({tool, dir.path(), "resume"});
  survivor.read_all();
  ASSERT_EQ(survivor.wait(), 0) << survivor.output();
  EXPECT_NE(survivor.output().find("resumed from step 2 with value 2"), std::string::npos)
      << survivor.output();
  EXPECT_EQ(count_events(dir.path(), "quarantined"), 0);
}

// A scope that mounts a small tmpfs (needs root or CAP_SYS_ADMIN).
struct SmallTmpfs {
  explicit SmallTmpfs(const std::string& where, const std::string& size) : path(where) {
    ::mkdir(path.c_str(), 0755);
    mounted = ::mount("tmpfs", path.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
    if (!mounted) why = std::string("cannot mount a tmpfs here: ") + std::strerror(errno);
  }
  ~SmallTmpfs() {
    if (mounted) ::umount2(path.c_str(), MNT_DETACH);
  }
  std::string path;
  bool mounted = false;
  std::string why;
};

TEST(Reliability, AFullDiskFailsSnapshotsCleanlyAndTrainingGoesOn) {
  TempDir dir;
  SmallTmpfs disk(dir.file("disk"), "2m");
  if (!disk.mounted) {
    std::cout << "skipped: " << disk.why
              << " (FaultInjection.ShortWritesAndAFullDisk covers ENOSPC in memory)" << std::endl;
    GTEST_SKIP() << disk.why;
  }
  const std::string snaps = disk.path + "/snaps";
  // A full disk fails every snapshot from some point on: by default the 3rd in a row stops the job
  // (max_consecutive_failures); this test is about training going on, so it asks for that.
  testing::write_text(dir.file("c.yaml"),
                      "directory: " + snaps +
                          "\ntriggers: {every_steps: 10}\nretention: {keep_last: 0}\n"
                          "control: {socket: false}\nlog_level: warn\nmax_consecutive_failures: 0\n");
  ChildProcess run({testing::example_path("train_mlp"), "--config", dir.file("c.yaml"), "--steps", "300",
                    "--input", "64", "--hidden", "512", "--log-every", "1000"});
  run.read_all();
  EXPECT_EQ(run.wait(), 0) << "training must go on when the disk is full:\n" << run.output();
  EXPECT_GT(count_events(snaps, "failed", "No space left on device"), 0) << run.output();
  EXPECT_GT(count_events(snaps, "committed"), 1);
  auto store = SnapshotStore::open_read_only(snaps);
  for (const auto& info : store->list()) {
    EXPECT_EQ(info.status, SnapshotStatus::kValid)
        << info.name << ": " << info.problem << " (no tmp dir may remain)";
    EXPECT_TRUE(store->verify(info).ok) << info.name;
  }
}

// autosnap writes file data with pwrite, so failing pwrite hits exactly the
// snapshot files, not the eventfd writes Asio uses to wake its threads.
TEST(Reliability, RandomFsyncWriteAndRenameFailuresThroughLibfiu) {
  AUTOSNAP_REQUIRE_FIU_RUN();
  TempDir dir;
  const std::string snaps = dir.file("snaps");
  // Created beforehand: a failing fsync while creating the directory is a
  // (correct) configuration error; this test is about snapshot writes.
  std::filesystem::create_directory(snaps);
  // Random failures come in runs of 3 now and then: training goes on through them here.
  testing::write_text(dir.file("c.yaml"),
                      "directory: " + snaps +
                          "\ntriggers: {every_steps: 5}\nretention: {keep_last: 0}\n"
                          "control: {socket: false}\nlog_level: error\nmax_consecutive_failures: 0\n");
  const std::string train = testing::example_path("train_mlp") + " --config " + dir.file("c.yaml") +
                            " --steps 400 --log-every 1000";
  int failures = 0;
  for (int round = 0; round < 3; ++round) {  // each round resumes from what the previous one left
    auto result = testing::run_command(
        "fiu-run -x -c 'enable_random name=posix/io/sync/fsync,probability=0.2' "
        "-c 'enable_random name=posix/io/dir/rename,probability=0.2' "
        "-c 'enable_random name=posix/io/rw/pwrite,probability=0.02' "
        "-c 'enable_random name=posix/io/rw/pwrite/reduce,probability=0.3' " +
        train);
    EXPECT_EQ(result.exit_code, 0) << "round " << round << ": " << result.output;
  }
  failures = count_events(snaps, "failed");
  std::cout << "libfiu: " << failures << " snapshot failures recorded, " << count_events(snaps, "committed")
            << " commits" << std::endl;
  EXPECT_GT(failures, 0);
  auto store = SnapshotStore::open_read_only(snaps);
  int committed = 0;
  for (const auto& info : store->list()) {
    if (info.status == SnapshotStatus::kInProgress)
      continue;  // a tmp dir whose removal failed: removed at next open
    ++committed;
    EXPECT_EQ(info.status, SnapshotStatus::kValid) << info.name << ": " << info.problem;
    EXPECT_TRUE(store->verify(info).ok) << info.name;
  }
  EXPECT_GT(committed, 0);
  // Without faults, the job resumes from a valid snapshot and finishes.
  ChildProcess clean({testing::example_path("train_mlp"), "--config", dir.file("c.yaml"), "--steps", "400"});
  clean.read_all();
  EXPECT_EQ(clean.wait(), 0) << clean.output();
}

// ---- the corruption matrix (in memory, for speed) ----

const std::string kDir = "/snaps";

Config matrix_config() {
  return Config::from_string("directory: " + kDir +
                                 "\nflush: {mode: sync}\ntriggers: {every_steps: 10, on_train_end: false}\n"
                                 "retention: {keep_last: 0}\ncontrol: {socket: false}\nlog_level: off\n",
                             "matrix.yaml");
}

struct MatrixState {
  at::Tensor weights = torch::zeros({32, 32});
  int64_t counter = 0;
};

// Steps 10 and 20, values = step.
void two_snapshots(MemoryFileSystem& fs) {
  MatrixState state;
  Snapshotter snap(matrix_config(), {&fs});
  snap.track("weights", state.weights);
  snap.track("counter", state.counter);
  for (int64_t step : {10, 20}) {
    state.weights.fill_(static_cast<float>(step));
    state.counter = step;
    snap.on_step_end(step);
  }
  snap.close();
}

// Damages step 20, then checks that verify says so and restore quarantines
// it (unless `quarantined` is false) and resumes step 10 with step 10's values.
void expect_detected(const std::string& what, const std::function<void(MemoryFileSystem&)>& damage,
                     bool quarantined = true) {
  MemoryFileSystem fs;
  two_snapshots(fs);
  damage(fs);
  {
    auto reader = SnapshotStore::open_read_only(kDir, fs);
    EXPECT_FALSE(reader->verify(reader->inspect(20)).ok) << what << ": verify did not notice";
  }
  MatrixState state;
  Snapshotter snap(matrix_config(), {&fs});
  snap.track("weights", state.weights);
  snap.track("counter", state.counter);
  auto resumed = snap.on_train_start();
  ASSERT_TRUE(resumed) << what;
  EXPECT_EQ(resumed->step, 10) << what;
  EXPECT_EQ(state.counter, 10) << what;
  EXPECT_TRUE(torch::all(state.weights == 10.0f).item<bool>()) << what;
  EXPECT_EQ(fs.status(kDir + "/step-000000000020.corrupt-1").exists, quarantined) << what;
}

const std::string kShard = kDir + "/step-000000000020/rank-00000.pt";
const std::string kManifest = kDir + "/step-000000000020/manifest.yaml";

TEST(CorruptionMatrix, TruncatedShardsAtManyOffsets) {
  MemoryFileSystem probe;
  two_snapshots(probe);
  const size_t size = probe.contents(kShard).size();
  std::vector<size_t> cuts = {0,        1,          2,          30,        64,        100,
                              size / 2, size - 200, size - 100, size - 23, size - 22, size - 1};
  for (size_t i = 1; i < 32; ++i)
    cuts.push_back(size * i / 32);  // header, pickle, tensor data, central directory
  for (size_t cut : cuts) {
    expect_detected("shard truncated to " + std::to_string(cut) + " of " + std::to_string(size) + " bytes",
                    [&](MemoryFileSystem& fs) { fs.overwrite(kShard, fs.contents(kShard).substr(0, cut)); });
  }
  std::cout << "truncations detected: " << cuts.size() << std::endl;
}

TEST(CorruptionMatrix, FlippedBitsAtManyOffsets) {
  MemoryFileSystem probe;
  two_snapshots(probe);
  const size_t size = probe.contents(kShard).size();
  int flips = 0;
  for (size_t i = 0; i < 96; ++i) {
    const size_t offset = i < 64 ? size * i / 64 : size - 1 - (i - 64) * 7;  // spread, and dense near the end
    for (int bit : {0, 7}) {
      expect_detected("bit " + std::to_string(bit) + " flipped at offset " + std::to_string(offset),
                      [&](MemoryFileSystem& fs) {
                        std::string data = fs.contents(kShard);
                        data[offset] = static_cast<char>(data[offset] ^ (1 << bit));
                        fs.overwrite(kShard, data);
                      });
      ++flips;
    }
  }
  std::cout << "bit flips detected: " << flips << std::endl;
}

TEST(CorruptionMatrix, MissingFilesAndTamperedManifests) {
  expect_detected("shard deleted", [](MemoryFileSystem& fs) { fs.remove_file(kShard); });
  expect_detected("manifest deleted", [](MemoryFileSystem& fs) { fs.remove_file(kManifest); });
  expect_detected("manifest emptied", [](MemoryFileSystem& fs) { fs.overwrite(kManifest, ""); });
  expect_detected("manifest is garbage",
                  [](MemoryFileSystem& fs) { fs.overwrite(kManifest, "\x01\x02{[}"); });
  auto edit = [](const std::string& from, const std::string& to) {
    return [from, to](MemoryFileSystem& fs) {
      std::string text = fs.contents(kManifest);
      const auto at = text.find(from);
      ASSERT_NE(at, std::string::npos) << from << " not in\n" << text;
      text.replace(at, from.size(), to);
      fs.overwrite(kManifest, text);
    };
  };
  expect_detected("step changed", edit("step: 20", "step: 21"));
  expect_detected("size changed", edit("size: ", "size: 1"));
  expect_detected("checksum changed", edit("xxh3_64: \"", "xxh3_64: \"f"));
  expect_detected("checksum not hex", edit("xxh3_64: \"", "xxh3_64: \"zz"));
  expect_detected("file renamed away", edit("name: rank-00000.pt", "name: rank-00001.pt"));
  expect_detected("path traversal", edit("name: rank-00000.pt", "name: ../../etc/passwd"));
  expect_detected("world size without shards", edit("world_size: 1", "world_size: 4"));
  expect_detected("negative step", edit("step: 20", "step: -20"));
  expect_detected("files list removed", edit("files:", "nofiles:"));
  // Written by a newer autosnap: skipped, never quarantined.
  expect_detected("unknown format version", edit("format_version: 2", "format_version: 3"),
                  /*quarantined=*/false);
}

TEST(CorruptionMatrix, ReadErrorsAreNotCorruption) {
  MemoryFileSystem fs;
  two_snapshots(fs);
  fs.fail_reads(EIO);
  {
    MatrixState state;
    Snapshotter snap(matrix_config(), {&fs});
    snap.track("weights", state.weights);
    snap.track("counter", state.counter);
    try {
      snap.on_train_start();
      ADD_FAILURE() << "an unreadable snapshot must stop the restore";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find("Input/output error"), std::string::npos) << e.what();
    }
    EXPECT_EQ(state.counter, 0) << "nothing restored, and no silent fallback to the older snapshot";
  }
  fs.fail_reads(0);
  EXPECT_FALSE(fs.status(kDir + "/step-000000000020.corrupt-1").exists) << "an I/O error is not corruption";
  MatrixState state;
  Snapshotter snap(matrix_config(), {&fs});
  snap.track("weights", state.weights);
  snap.track("counter", state.counter);
  ASSERT_TRUE(snap.on_train_start().has_value());
  EXPECT_EQ(state.counter, 20) << "once the disk reads again, the newest snapshot is restored";
}

TEST(CorruptionMatrix, ASnapshotOfAnotherWorldSizeIsAClearError) {
  MemoryFileSystem fs;
  {
    auto store = SnapshotStore::open_for_writing(kDir, true, fs);
    auto writer = SnapshotWriter::begin(*store, 5);
    for (int rank : {0, 1}) writer->write_shard(rank, dict({{"counter", int64_t{5}}}));
    Manifest manifest;
    manifest.world_size = 2;
    writer->commit(manifest);
  }
  int64_t counter = 0;
  Snapshotter snap(matrix_config(), {&fs});
  snap.track("counter", counter);
  try {
    snap.on_train_start();
    ADD_FAILURE() << "restoring a 2-rank snapshot into 1 rank must fail";
  } catch (const StateMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("was written by 2 rank(s); this job runs 1"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(counter, 0);
  EXPECT_FALSE(fs.status(kDir + "/step-000000000005.corrupt-1").exists)
      << "a sound snapshot is not quarantined";
}

}  // namespace
}  // namespace autosnap
