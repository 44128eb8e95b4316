// The snapshot store: layout, commit, validity, verification, quarantine,
// leftover tmp dirs, unrelated files and the single-writer lock.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "autosnap/autosnap.h"
#include "autosnap/tools.h"
#include "store/snapshot_writer.h"
#include "support/fault_fs.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::TempDir;

c10::IValue shard_value(int64_t step) {
  return dict({{"step", step}, {"weights", torch::full({256, 64}, static_cast<float>(step))}});
}

void commit_step(SnapshotStore& store, int64_t step, const std::string& reason = "test") {
  auto writer = SnapshotWriter::begin(store, step);
  writer->write_shard(0, shard_value(step));
  Manifest manifest;
  manifest.epoch = step / 100;
  manifest.reason = reason;
  writer->commit(manifest);
}

std::string shard_path(const SnapshotStore& store, int64_t step) {
  return store.snapshot_path(step) + "/" + shard_file_name(0);
}

std::vector<std::string> sorted_names(const std::string& dir) {
  auto names = testing::list_names(dir);
  std::sort(names.begin(), names.end());
  return names;
}

// Damages step 200 with `damage`, then checks that restore falls back to 100
// and that 200 is quarantined intact (renamed, not deleted).
void expect_fallback_after(const std::function<void(SnapshotStore&)>& damage, const std::string& problem) {
  TempDir dir;
  auto store = SnapshotStore::open_for_writing(dir.path());
  commit_step(*store, 100);
  commit_step(*store, 200);
  damage(*store);
  std::vector<std::string> quarantined;
  auto latest = store->latest_valid([&](const SnapshotInfo& info, const std::string& why) {
    quarantined.push_back(info.name);
    EXPECT_NE(why.find(problem), std::string::npos) << why;
  });
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step(), 100);
  EXPECT_EQ(quarantined, std::vector<std::string>{"step-000000000200.corrupt-1"});
  EXPECT_EQ(sorted_names(dir.path()),
            (std::vector<std::string>{"LOCK", "step-000000000100", "step-000000000200.corrupt-1"}));
  auto value = store->open(100).read_shard(0, torch::kCPU);
  EXPECT_EQ(dict_at(value, "step").toInt(), 100);
}

TEST(Store, CommitWritesTheDocumentedLayout) {
  TempDir dir;
  auto store = SnapshotStore::open_for_writing(dir.path());
  commit_step(*store, 1200, "every_steps");
  EXPECT_EQ(sorted_names(dir.path()), (std::vector<std::string>{"LOCK", "step-000000001200"}));
  EXPECT_EQ(sorted_names(dir.file("step-000000001200")),
            (std::vector<std::string>{"manifest.yaml", "rank-00000.pt"}));

  auto entries = store->list();
  ASSERT_EQ(entries.size(), 1u);
  const auto& info = entries[0];
  EXPECT_EQ(info.status, SnapshotStatus::kValid);
  ASSERT_TRUE(info.manifest.has_value());
  EXPECT_EQ(info.manifest->format_version, kSnapshotFormatVersion);
  EXPECT_EQ(info.manifest->step, 1200);
  EXPECT_EQ(info.manifest->epoch, 12);
  EXPECT_EQ(info.manifest->reason, "every_steps");
  EXPECT_EQ(info.manifest->world_size, 1);
  EXPECT_EQ(info.manifest->library_version, AUTOSNAP_VERSION);
  EXPECT_FALSE(info.manifest->libtorch_version.empty());
  EXPECT_EQ(info.manifest->time.size(), 24u) << info.manifest->time;
  ASSERT_EQ(info.manifest->files.size(), 1u);
  EXPECT_EQ(info.manifest->files[0].size, testing::file_size(shard_path(*store, 1200)));

  auto verified = store->open(1200).verify();
  EXPECT_TRUE(verified.ok) << verified.problem;
  EXPECT_EQ(verified.bytes_checked, info.manifest->files[0].size);
  // The shard is a plain torch.save file.
  auto value = load(shard_path(*store, 1200));
  EXPECT_EQ(dict_at(value, "step").toInt(), 1200);
}

TEST(Store, LatestValidIsTheNewestAndReadsBack) {
  TempDir dir;
  auto store = SnapshotStore::open_for_writing(dir.path());
  for (int64_t step : {100, 300, 200}) commit_step(*store, step);
  EXPECT_EQ(store->valid_steps(), (std::vector<int64_t>{100, 200, 300}));
  auto latest = store->latest_valid();
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->step(), 300);
  auto value = store->open(300).read_shard(0, torch::kCPU);
  EXPECT_TRUE(torch::equal(dict_at(value, "weights").toTensor(), torch::full({256, 64}, 300.0f)));
}

TEST(Store, TruncatedShardFallsBack) {
  expect_fallback_after([](SnapshotStore& s) { testing::truncate_file(shard_path(s, 200), 1000); },
                        "is 1000 bytes");
}

TEST(Store, FlippedByteFallsBack) {
  expect_fallback_after(
      [](SnapshotStore& s) {
        auto path = shard_path(s, 200);
        testing::flip_byte(path, testing::file_size(path) / 2);
        EXPECT_EQ(s.list().back().status, SnapshotStatus::kValid)
            << "size still matches: only checksums can tell";
        EXPECT_FALSE(s.verify(s.inspect(200)).ok);
      },
      "checksum mismatch");
}

TEST(Store, MissingManifestFallsBack) {
  expect_fallback_after([](SnapshotStore& s) { ::unlink((s.snapshot_path(200) + "/manifest.yaml").c_str()); },
                        "manifest.yaml is missing");
}

TEST(Store, GarbageManifestFallsBack) {
  expect_fallback_after(
      [](SnapshotStore& s) { testing::write_text(s.snapshot_path(200) + "/manifest.yaml", "{{{ not yaml"); },
      "not valid YAML");
}

TEST(Store, TamperedManifestFallsBack) {
  expect_fallback_after(
      [](SnapshotStore& s) {
        testing::write_text(s.snapshot_path(200) + "/manifest.yaml",
                            "format_version: 1\nstep: 200\nepoch: 2\ntime: x\nreason: r\nworld_size: 2\n"
                            "library_version: x\nlibtorch_version: x\nfiles:\n"
                            "  - {name: rank-00000.pt, size: 1, xxh3_64: \"0000000000000000\"}\n");
      },
      "world size 2 but no file for rank 1");
}

// Commits step 100, damages its shard with `damage(path)` and expects
// read_shard to refuse it as a checksum mismatch.
void expect_read_shard_reports_checksum_mismatch(const std::function<void(const std::string&)>& damage) {
  TempDir dir;
  auto store = SnapshotStore::open_for_writing(dir.path());
  commit_step(*store, 100);
  damage(shard_path(*store, 100));
  try {
    store->open(100).read_shard(0, torch::kCPU);
    ADD_FAILURE() << "a damaged shard must not be read";
  } catch (const CorruptSnapshot& e) {
    EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
  }
}

TEST(Store, ReadShardVerifiesItsChecksum) {
  expect_read_shard_reports_checksum_mismatch(
      [](const std::string& path) { testing::flip_byte(path, testing::file_size(path) / 2); });
}

// The checksum is computed in the pass that parses the shard: a shard too
// damaged to parse is still reported as a checksum mismatch (quarantined by a
// restore), not as whatever the parser tripped over.
TEST(Store, AShardThatFailsToParseIsReportedByItsChecksum) {
  expect_read_shard_reports_checksum_mismatch([](const std::string& path) {
    for (uint64_t offset = 64; offset < 96; ++offset) testing::flip_byte(path, offset);  // the pickle
  });
}

// A restore checks the shard it reads in that same read: its check of a
// candidate leaves that shard to the read, and still verifies every other file.
TEST(Store, LatestValidLeavesTheShardReadLaterToTheRead) {
  TempDir dir;
  auto store = SnapshotStore::open_for_writing(dir.path());
  commit_step(*store, 100);
  commit_step(*store, 200);
  const auto path = shard_path(*store, 200);
  testing::flip_byte(path, testing::file_size(path) / 2);
  auto latest = store->latest_valid(
      {}, [](const Snapshot& candidate) { return candidate.verify_all_but(shard_file_name(0)); });
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->step(), 200) << "its shard's checksum is the reader's to check";
  EXPECT_THROW(latest->read_shard(0, torch::kCPU), CorruptSnapshot);
  EXPECT_FALSE(store->open(200).verify().ok);
  EXPECT_TRUE(store->open(200).verify_all_but(shard_file_name(0)).ok);
  EXPECT_EQ(store->latest_valid()->step(), 100) << "by default everything is verified";
}

TEST(Store, UnknownFormatVersionIsSkippedNotQuarantined) {
  TempDir dir;
  auto store = SnapshotStore::open_for_writing(dir.path());
  commit_step(*store, 100);
  commit_step(*store, 200);
  const auto manifest_path = store->snapshot_path(200) + "/manifest.yaml";
  auto text = default_file_system().read_small_file(manifest_path, 1 << 20);
  text.replace(text.find("format_version: 2"), 17, "format_version: 9");
  testing::write_text(manifest_path, text);
  EXPECT_EQ(store->list().back().status, SnapshotStatus::kUnsupported);
  EXPECT_NE(store->list().back().problem.find("format version 9"), std::string::npos);
  auto latest = store->latest_valid();
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->step(), 100);
  EXPECT_EQ(sorted_names(dir.path()),
            (std::vector<std::string>{"LOCK", "step-000000000100", "step-000000000200"}));
}

TEST(Store, QuarantineNeverOverwritesAnEarlierOne) {
  TempDir dir;
  auto store = SnapshotStore::open_for_writing(dir.path());
  commit_step(*store, 100);
  EXPECT_EQ(store->quarantine(100), "step-000000000100.corrupt-1");
  commit_step(*store, 100);
  EXPECT_EQ(store->quarantine(100), "step-000000000100.corrupt-2");
  EXPECT_FALSE(store->latest_valid().has_value());
  auto entries = store->list();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].status, SnapshotStatus::kQuarantined);
}

TEST(Store, LeftoverTmpDirsAreRemovedOnlyByAWriter) {
  TempDir dir;
  {
    auto store = SnapshotStore::open_for_writing(dir.path());
    commit_step(*store, 100);
  }
  ::mkdir(dir.file("step-000000000300.tmp-123-abc").c_str(), 0755);
  testing::write_text(dir.file("step-000000000300.tmp-123-abc/rank-00000.pt"), "half-written");

  auto reader = SnapshotStore::open_read_only(dir.path());
  auto entries = reader->list();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[1].status, SnapshotStatus::kInProgress);
  EXPECT_EQ(reader->latest_valid()->step(), 100) << "a tmp dir is never chosen";
  EXPECT_EQ(testing::list_names(dir.path()).size(), 3u) << "a read-only store changes nothing";

  auto writer = SnapshotStore::open_for_writing(dir.path());
  EXPECT_EQ(sorted_names(dir.path()), (std::vector<std::string>{"LOCK", "step-000000000100"}));
}

TEST(Store, EmptyDirectoryHasNoSnapshot) {
  TempDir dir;
  auto store = SnapshotStore::open_for_writing(dir.file("fresh/nested"));
  EXPECT_TRUE(store->list().empty());
  EXPECT_FALSE(store->latest_valid().has_value());
  EXPECT_THROW(SnapshotStore::open_read_only(dir.file("absent")), IoError);
}

TEST(Store, UnrelatedFilesAreIgnoredAndUntouched) {
  TempDir dir;
  auto store = SnapshotStore::open_for_writing(dir.path());
  commit_step(*store, 100);
  testing::write_text(dir.file("notes.txt"), "mine");
  testing::write_text(dir.file("step-000000000500"), "a file, not a directory");
  ::mkdir(dir.file("step-abc").c_str(), 0755);
  ::mkdir(dir.file("step-000000000600.bak").c_str(), 0755);
  ::mkdir(dir.file("step-0000000007").c_str(), 0755);
  auto entries = store->list();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].step, 100);
  EXPECT_EQ(store->latest_valid()->step(), 100);
  EXPECT_EQ(testing::list_names(dir.path()).size(), 7u);
}

TEST(Store, AbortedAndDuplicateSnapshots) {
  TempDir dir;
  auto store = SnapshotStore::open_for_writing(dir.path());
  {
    auto writer = SnapshotWriter::begin(*store, 100);
    writer->write_shard(0, shard_value(100));
  }  // destroyed without commit
  EXPECT_EQ(sorted_names(dir.path()), std::vector<std::string>{"LOCK"});
  commit_step(*store, 100);
  EXPECT_THROW(SnapshotWriter::begin(*store, 100), Error);
  auto writer = SnapshotWriter::begin(*store, 200);
  Manifest two_ranks;
  two_ranks.world_size = 2;
  writer->write_shard(0, shard_value(200));
  EXPECT_THROW(writer->commit(two_ranks), Error) << "rank 1's shard is missing";
}

TEST(Store, RemoveDeletesOnlyThatSnapshot) {
  TempDir dir;
  auto store = SnapshotStore::open_for_writing(dir.path());
  commit_step(*store, 100);
  commit_step(*store, 200);
  store->remove(100);
  EXPECT_EQ(sorted_names(dir.path()), (std::vector<std::string>{"LOCK", "step-000000000200"}));
  EXPECT_THROW(store->remove(100), Error);
  auto reader = SnapshotStore::open_read_only(dir.path());
  EXPECT_THROW(reader->remove(200), Error);
  EXPECT_THROW(SnapshotWriter::begin(*reader, 300), Error);
}

TEST(Store, ASecondWriterIsRefusedWithTheHoldersPid) {
  TempDir dir;
  auto first = SnapshotStore::open_for_writing(dir.path());
  try {
    SnapshotStore::open_for_writing(dir.path());
    ADD_FAILURE() << "a second writer must be refused";
  } catch (const LockedError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(dir.path()), std::string::npos) << message;
    EXPECT_NE(message.find("pid " + std::to_string(::getpid())), std::string::npos) << message;
  }
  first.reset();
  EXPECT_NO_THROW(SnapshotStore::open_for_writing(dir.path())) << "the lock is released with the store";
}

TEST(Store, TheLockHoldsWhenItsHolderNoteCannotBeWritten) {
  TempDir dir;
  testing::FaultInjectingFileSystem failing_writes;
  failing_writes.fail_only = "write";
  failing_writes.fail_writes_errno = EIO;
  std::unique_ptr<SnapshotStore> first;
  ASSERT_NO_THROW(first = SnapshotStore::open_for_writing(dir.path(), true, failing_writes))
      << "the note naming the holder is informational; the flock is the lock";
  EXPECT_TRUE(first->writable());
  try {
    SnapshotStore::open_for_writing(dir.path());
    ADD_FAILURE() << "a second writer must be refused";
  } catch (const LockedError& e) {
    EXPECT_NE(std::string(e.what()).find("holder unknown"), std::string::npos) << e.what();
  }
}

TEST(Store, AWriterInAnotherProcessHoldsTheLock) {
  TempDir dir;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  if (child == 0) {
    auto store = SnapshotStore::open_for_writing(dir.path());
    char byte = 1;
    if (::write(ready[1], &byte, 1) != 1) ::_exit(2);
    ::pause();
    ::_exit(0);
  }
  char byte;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  try {
    SnapshotStore::open_for_writing(dir.path());
    ADD_FAILURE() << "a second writer must be refused";
  } catch (const LockedError& e) {
    EXPECT_NE(std::string(e.what()).find("pid " + std::to_string(child)), std::string::npos) << e.what();
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_NO_THROW(SnapshotStore::open_for_writing(dir.path())) << "a dead holder's lock is free";
  ::close(ready[0]);
  ::close(ready[1]);
}

}  // namespace
}  // namespace autosnap
