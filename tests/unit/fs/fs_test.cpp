// The POSIX FileSystem (autosnap/fs.h) and the atomic file writer built on it:
// what the store and the daemon rely on. Every error names the path and the
// errno text.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "autosnap/errors.h"
#include "autosnap/fs.h"
#include "fs/atomic_file.h"
#include "fs/write_mode.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::TempDir;

FileSystem& fs() { return default_file_system(); }

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const std::string& path, const std::string& contents) {
  auto file = fs().create_exclusive(path);
  file->append(contents.data(), contents.size());
  file->close();
}

std::vector<std::string> sorted_names(const std::string& directory) {
  std::vector<std::string> names;
  for (const auto& entry : fs().list_directory(directory)) names.push_back(entry.name);
  std::sort(names.begin(), names.end());
  return names;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return "[" + out + "]";
}

// The IoError `f` throws; fails the test when it throws none.
template <typename F>
IoError io_error_of(F&& f) {
  try {
    f();
  } catch (const IoError& e) {
    return e;
  }
  ADD_FAILURE() << "expected an IoError";
  return IoError("none", "none", "none");
}

// An IoError names the path and the errno text, and keeps the errno.
void expect_errno_error(const IoError& e, const std::string& path, int error_number) {
  const std::string what = e.what();
  EXPECT_EQ(e.path(), path) << what;
  EXPECT_EQ(e.error_number(), error_number) << what << "\nexpected errno " << std::strerror(error_number);
  EXPECT_NE(what.find("'" + path + "'"), std::string::npos) << "the message should name the path: " << what;
  EXPECT_NE(what.find(std::strerror(error_number)), std::string::npos)
      << "the message should carry the errno text '" << std::strerror(error_number) << "': " << what;
}

TEST(PosixFileSystem, CreateExclusiveRefusesAnExistingFile) {
  TempDir dir;
  const std::string path = dir.file("shard.pt");
  write_file(path, "old contents");
  const IoError e = io_error_of([&] { fs().create_exclusive(path); });
  expect_errno_error(e, path, EEXIST);
  EXPECT_EQ(e.operation(), "create");
  EXPECT_EQ(read_all(path), "old contents") << "a refused create must not truncate the file";
}

TEST(PosixFileSystem, SeveralMegabytesRoundTripThroughOpenForReading) {
  TempDir dir;
  const std::string path = dir.file("big.bin");
  // Appends of every size class: tiny ones (buffered), ones that straddle the
  // 1 MiB write buffer, and large ones that bypass it.
  std::string expected;
  uint32_t x = 12345;
  auto next_bytes = [&](size_t n) {
    std::string bytes(n, '\0');
    for (auto& c : bytes) {
      x = x * 1664525u + 1013904223u;
      c = static_cast<char>(x >> 24);
    }
    return bytes;
  };
  auto file = fs().create_exclusive(path);
  EXPECT_EQ(file->path(), path);
  for (size_t n : {size_t(1), size_t(7), size_t(1000), size_t(700000), size_t(600000), size_t(3) << 20,
                   size_t(1), size_t(1) << 20, size_t(12345)}) {
    const std::string chunk = next_bytes(n);
    file->append(chunk.data(), chunk.size());
    expected += chunk;
  }
  file->sync();
  file->close();
  file->close();  // idempotent
  ASSERT_GT(expected.size(), 5u << 20);

  auto reader = fs().open_for_reading(path);
  EXPECT_EQ(reader->path(), path);
  ASSERT_EQ(reader->size(), expected.size());
  std::string actual(expected.size(), '\0');
  reader->read_exact(0, actual.data(), actual.size());
  EXPECT_TRUE(actual == expected) << "the bytes read back differ from the bytes written";
  for (uint64_t offset : {uint64_t(0), uint64_t(1) << 20, uint64_t(expected.size() - 10)}) {
    char part[10];
    reader->read_exact(offset, part, sizeof(part));
    EXPECT_EQ(std::string(part, sizeof(part)), expected.substr(offset, sizeof(part)))
        << "at offset " << offset;
  }
  char past[20];
  const IoError e = io_error_of([&] { reader->read_exact(expected.size() - 10, past, sizeof(past)); });
  EXPECT_EQ(e.path(), path);
  EXPECT_NE(std::string(e.what()).find("unexpected end of file"), std::string::npos) << e.what();
  EXPECT_EQ(fs().status(path).size, expected.size());
}

// The process's way of writing big files, set for one test.
class DirectIoFor {
 public:
  explicit DirectIoFor(DirectIo mode) { write_mode_chooser().set_mode(mode); }
  ~DirectIoFor() { write_mode_chooser().set_mode(DirectIo::kAuto); }
};

// Files bigger than the write buffer are written with O_DIRECT in 4 MiB
// blocks, two in flight while a third is filled, or through the page cache
// (as the WriteModeChooser says; always where the file system refuses
// O_DIRECT, e.g. tmpfs before Linux 6.6). A flush in the middle, appends that straddle the
// blocks and an unaligned tail all keep every byte in place, either way.
TEST(PosixFileSystem, BigFilesRoundTripWithAndWithoutDirectWrites) {
  TempDir dir;
  std::vector<std::string> directories = {dir.path()};
  if (access("/dev/shm", W_OK) == 0) directories.push_back("/dev/shm");
  std::vector<std::pair<std::string, DirectIo>> cases;
  for (const DirectIo mode : {DirectIo::kAlways, DirectIo::kNever})
    for (const auto& directory : directories) cases.emplace_back(directory, mode);
  for (const auto& [directory, mode] : cases) {
    DirectIoFor way(mode);
    const std::string path = directory + "/direct-" + std::to_string(::getpid()) + ".bin";
    std::string expected;
    uint32_t x = 777;
    auto append = [&](WritableFile& file, size_t n) {
      std::string bytes(n, '\0');
      for (auto& c : bytes) {
        x = x * 1664525u + 1013904223u;
        c = static_cast<char>(x >> 24);
      }
      file.append(bytes.data(), bytes.size());
      expected += bytes;
    };
    auto file = fs().create_exclusive(path);
    for (size_t n : {size_t(100), size_t(9) << 20, size_t(5), size_t(8) << 20, size_t(3) << 20})
      append(*file, n);
    file->flush();  // mid-file: the tail so far goes out, and the file stays correct after it
    for (size_t n : {size_t(4097), size_t(10) << 20, size_t(33)}) append(*file, n);
    file->sync();
    file->close();
    auto reader = fs().open_for_reading(path);
    ASSERT_EQ(reader->size(), expected.size()) << directory;
    std::string actual(expected.size(), '\0');
    reader->read_exact(0, actual.data(), actual.size());
    EXPECT_TRUE(actual == expected) << "the bytes read back differ from the bytes written in " << directory
                                    << (mode == DirectIo::kAlways ? " with O_DIRECT"
                                                                  : " through the page cache");
    fs().remove_file(path);
  }
}

// Pages of `path` in the page cache (mincore).
size_t cached_pages(const std::string& path, size_t size) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw std::runtime_error("mmap " + path);
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((size + page - 1) / page);
  ::mincore(map, size, resident.data());
  ::munmap(map, size);
  return static_cast<size_t>(
      std::count_if(resident.begin(), resident.end(), [](unsigned char r) { return r & 1; }));
}

// A big read leaves the page cache as it found it: a checkpoint load neither
// pushes the job's own data out nor keeps fresh memory (on this VM, memory the
// guest freed a while ago costs a host fault at its first touch: loads ran 3x slower).
TEST(PosixFileSystem, BigReadsLeaveThePageCache) {
  TempDir dir;
  struct statfs where;
  ASSERT_EQ(::statfs(dir.path().c_str(), &where), 0);
  if (where.f_type == TMPFS_MAGIC) GTEST_SKIP() << "tmpfs keeps every page: nothing to drop";
  const std::string path = dir.file("big.bin");
  const size_t size = 8 << 20;
  {
    std::ofstream out(path, std::ios::binary);
    const std::string chunk(1 << 20, 'x');
    for (size_t done = 0; done < size; done += chunk.size()) out << chunk;
  }
  const int fd = ::open(path.c_str(), O_RDONLY);
  ::fsync(fd);  // dirty pages are not dropped, only clean ones
  ::close(fd);
  auto file = fs().open_for_reading(path);
  std::string bytes(size, '\0');
  file->read_exact(0, bytes.data(), 4096);  // small reads keep their pages
  EXPECT_GT(cached_pages(path, size), 0u);
  file->read_exact(0, bytes.data(), size);
  EXPECT_EQ(bytes.find_first_not_of('x'), std::string::npos);
  EXPECT_LT(cached_pages(path, size), size / 4096 / 10) << "pages of a big read stayed in the page cache";
}

// A big new file's time to its fsync is told to the chooser, by the way it
// was written; one written through the page cache leaves none of its pages
// there (they are clean after the fsync and dropped), as O_DIRECT would. A
// file system that refuses O_DIRECT (tmpfs before Linux 6.6) is marked as
// refusing, and its files stay buffered.
TEST(PosixFileSystem, BigFilesAreTimedForTheChooserAndLeaveThePageCache) {
  TempDir dir;
  std::vector<std::string> directories = {dir.path()};
  if (access("/dev/shm", W_OK) == 0) directories.push_back("/dev/shm");
  const size_t size = WriteModeChooser::kMinTimedBytes + (1 << 20);
  const std::string chunk(1 << 20, 'x');
  auto write = [&](const std::string& path, size_t bytes) {
    auto file = fs().create_exclusive(path);
    for (size_t done = 0; done < bytes; done += chunk.size()) file->append(chunk.data(), chunk.size());
    file->sync();
    file->close();
  };
  for (const auto& directory : directories) {
    struct statfs kind;
    ASSERT_EQ(::statfs(directory.c_str(), &kind), 0);
    const bool tmpfs = kind.f_type == TMPFS_MAGIC;  // keeps every page
    const std::string stem = directory + "/timed-" + std::to_string(::getpid());
    const int probe = ::open((stem + "-probe").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(probe, 0) << directory;
    const bool accepts_direct = ::fcntl(probe, F_SETFL, ::fcntl(probe, F_GETFL) | O_DIRECT) == 0;
    ::close(probe);
    ::unlink((stem + "-probe").c_str());
    struct stat where;
    ASSERT_EQ(::stat(directory.c_str(), &where), 0);
    const uint64_t device = where.st_dev;
    write_mode_chooser().reset();
    {
      DirectIoFor way(DirectIo::kNever);
      write(stem + "-buffered.bin", size);
    }
    EXPECT_GT(write_mode_chooser().buffered_mb_per_s(device), 0) << directory;
    EXPECT_EQ(write_mode_chooser().direct_mb_per_s(device), 0) << directory;
    if (!tmpfs) {
      EXPECT_LT(cached_pages(stem + "-buffered.bin", size), size / 4096 / 10)
          << "a big file written through the page cache stayed in it";
    }
    {
      DirectIoFor way(DirectIo::kAlways);
      write(stem + "-direct.bin", size);
    }
    if (accepts_direct) {
      EXPECT_GT(write_mode_chooser().direct_mb_per_s(device), 0) << directory;
    } else {
      EXPECT_EQ(write_mode_chooser().direct_mb_per_s(device), 0) << directory << " refused O_DIRECT";
      EXPECT_FALSE(write_mode_chooser().use_direct(device)) << directory << ": its files stay buffered";
    }
    // A small one is not timed.
    write_mode_chooser().reset();
    write(stem + "-small.bin", 2 << 20);
    EXPECT_EQ(write_mode_chooser().direct_mb_per_s(device) + write_mode_chooser().buffered_mb_per_s(device),
              0)
        << directory;
    for (const char* name : {"-buffered.bin", "-direct.bin", "-small.bin"}) fs().remove_file(stem + name);
  }
  write_mode_chooser().reset();
}

// A big file told its size is written the way chosen for files of that size.
// Observed through the chooser: the 40 MB file's time joins the medians of
// the way it was written (its 32-128 MiB class is primed, undecided, with
// O_DIRECT next), while the 2-8 GiB class is decided for O_DIRECT. Where the
// file system refuses O_DIRECT, the file asked for it is written buffered and
// the device is marked as refusing.
TEST(PosixFileSystem, ABigFileIsWrittenTheWayChosenForItsExpectedSize) {
  TempDir dir;
  const int probe = ::open(dir.file("probe").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(probe, 0);
  const bool accepts_direct = ::fcntl(probe, F_SETFL, ::fcntl(probe, F_GETFL) | O_DIRECT) == 0;
  ::close(probe);
  struct stat where;
  ASSERT_EQ(::stat(dir.path().c_str(), &where), 0);
  const uint64_t device = where.st_dev;
  const uint64_t size = WriteModeChooser::kMinTimedBytes + (8 << 20), huge = uint64_t{3} << 30;
  const std::string chunk(1 << 20, 'x');
  auto write = [&](const std::string& name, uint64_t expected) {
    write_mode_chooser().reset();
    for (const bool direct : {true, false}) {  // O_DIRECT faster for huge files, twice each
      write_mode_chooser().record(device, dir.file("old"), direct, huge, direct ? 1.0 : 4.0);
      write_mode_chooser().record(device, dir.file("old"), direct, huge, direct ? 1.0 : 4.0);
    }
    // 40 MB files: timed twice with O_DIRECT (100 and 300 MB/s), once buffered (1234 MB/s).
    write_mode_chooser().record(device, dir.file("old"), true, size, size / 1e6 / 100);
    write_mode_chooser().record(device, dir.file("old"), true, size, size / 1e6 / 300);
    write_mode_chooser().record(device, dir.file("old"), false, size, size / 1e6 / 1234);
    auto file = fs().create_exclusive(dir.file(name));
    if (expected) file->expect_size(expected);
    for (uint64_t done = 0; done < size; done += chunk.size()) file->append(chunk.data(), chunk.size());
    file->sync();
    file->close();
  };
  write("told-huge.bin", huge);
  if (accepts_direct) {
    EXPECT_NE(write_mode_chooser().direct_mb_per_s(device, size), 200) << "written with O_DIRECT";
    EXPECT_DOUBLE_EQ(write_mode_chooser().buffered_mb_per_s(device, size), 1234);
  } else {
    EXPECT_FALSE(write_mode_chooser().use_direct(device, huge)) << dir.path() << " refuses O_DIRECT";
  }
  write("told-its-size.bin", size);
  EXPECT_DOUBLE_EQ(write_mode_chooser().direct_mb_per_s(device, size), 200);
  EXPECT_NE(write_mode_chooser().buffered_mb_per_s(device, size), 1234) << "written through the page cache";
  write_mode_chooser().reset();
}

TEST(PosixFileSystem, WritingAfterCloseIsAnError) {
  TempDir dir;
  auto file = fs().create_exclusive(dir.file("f"));
  file->close();
  const IoError e = io_error_of([&] { file->append("x", 1); });
  EXPECT_EQ(e.path(), dir.file("f"));
  EXPECT_NE(std::string(e.what()).find("already closed"), std::string::npos) << e.what();
}

TEST(PosixFileSystem, OpenForAppendAddsToTheEnd) {
  TempDir dir;
  const std::string path = dir.file("events.jsonl");
  auto first = fs().open_for_append(path);  // creates it
  first->append("one\n", 4);
  first->close();
  auto second = fs().open_for_append(path);
  second->append("two\n", 4);
  second->flush();
  EXPECT_EQ(read_all(path), "one\ntwo\n") << "flush() hands the bytes to the OS";
  second->close();
}

TEST(PosixFileSystem, OpenForReadingNamesThePathAndErrno) {
  TempDir dir;
  expect_errno_error(io_error_of([&] { fs().open_for_reading(dir.file("missing")); }), dir.file("missing"),
                     ENOENT);
  expect_errno_error(io_error_of([&] { fs().open_for_reading(dir.path()); }), dir.path(), EISDIR);
}

TEST(PosixFileSystem, RenameReplacesTheTargetAndRemoveDeletes) {
  TempDir dir;
  write_file(dir.file("new"), "new contents");
  write_file(dir.file("target"), "old contents");
  fs().rename(dir.file("new"), dir.file("target"));
  EXPECT_EQ(read_all(dir.file("target")), "new contents");
  EXPECT_FALSE(fs().status(dir.file("new")).exists);

  const IoError missing = io_error_of([&] { fs().rename(dir.file("nothing"), dir.file("target")); });
  EXPECT_EQ(missing.error_number(), ENOENT);
  EXPECT_NE(std::string(missing.what()).find(dir.file("nothing")), std::string::npos) << missing.what();
  EXPECT_NE(std::string(missing.what()).find(dir.file("target")), std::string::npos) << missing.what();
  EXPECT_EQ(read_all(dir.file("target")), "new contents");

  fs().remove_file(dir.file("target"));
  EXPECT_FALSE(fs().status(dir.file("target")).exists);
  expect_errno_error(io_error_of([&] { fs().remove_file(dir.file("target")); }), dir.file("target"), ENOENT);

  fs().create_directory(dir.file("d"));
  write_file(dir.file("d/f"), "x");
  expect_errno_error(io_error_of([&] { fs().remove_directory(dir.file("d")); }), dir.file("d"), ENOTEMPTY);
  fs().remove_file(dir.file("d/f"));
  fs().remove_directory(dir.file("d"));
  EXPECT_FALSE(fs().status(dir.file("d")).exists);
}

TEST(PosixFileSystem, ListDirectoryAndStatus) {
  TempDir dir;
  fs().create_directory(dir.file("step-1"));
  write_file(dir.file("events.jsonl"), "12345");
  write_file(dir.file(".hidden"), "");
  ASSERT_EQ(::symlink(dir.file("step-1").c_str(), dir.file("link").c_str()), 0) << std::strerror(errno);

  const auto names = sorted_names(dir.path());
  EXPECT_EQ(names, (std::vector<std::string>{".hidden", "events.jsonl", "link", "step-1"}))
      << "got " << joined(names) << " ('.' and '..' are never listed)";
  for (const auto& entry : fs().list_directory(dir.path())) {
    const bool expect_directory = entry.name == "step-1" || entry.name == "link";
    EXPECT_EQ(entry.is_directory, expect_directory) << entry.name << " (a link to a directory counts as one)";
  }
  expect_errno_error(io_error_of([&] { fs().list_directory(dir.file("missing")); }), dir.file("missing"),
                     ENOENT);

  const FileStatus file = fs().status(dir.file("events.jsonl"));
  EXPECT_TRUE(file.exists);
  EXPECT_FALSE(file.is_directory);
  EXPECT_EQ(file.size, 5u);
  EXPECT_TRUE(fs().status(dir.file("step-1")).is_directory);
  EXPECT_FALSE(fs().status(dir.file("missing")).exists) << "status() never throws for a missing path";
}

TEST(PosixFileSystem, SyncDirectoryAndSyncFile) {
  TempDir dir;
  write_file(dir.file("f"), "data");
  fs().sync_directory(dir.path());
  fs().sync_file(dir.file("f"));
  expect_errno_error(io_error_of([&] { fs().sync_directory(dir.file("missing")); }), dir.file("missing"),
                     ENOENT);
  expect_errno_error(io_error_of([&] { fs().sync_file(dir.file("missing")); }), dir.file("missing"), ENOENT);
}

TEST(PosixFileSystem, CreateDirectoriesMakesNestedDirectoriesDurably) {
  TempDir dir;
  const std::string nested = dir.file("a/b/c");
  create_directories(fs(), nested, /*durable=*/true);
  EXPECT_TRUE(fs().status(dir.file("a")).is_directory);
  EXPECT_TRUE(fs().status(dir.file("a/b")).is_directory);
  EXPECT_TRUE(fs().status(nested).is_directory);
  create_directories(fs(), nested, /*durable=*/true);  // existing: fine
  create_directories(fs(), dir.file("x/y"));
  EXPECT_TRUE(fs().status(dir.file("x/y")).is_directory);
  fs().create_directory(nested);  // one existing directory: fine too

  write_file(dir.file("a/file"), "");
  expect_errno_error(io_error_of([&] { create_directories(fs(), dir.file("a/file"), true); }),
                     dir.file("a/file"), ENOTDIR);
  expect_errno_error(io_error_of([&] { create_directories(fs(), dir.file("a/file/sub"), true); }),
                     dir.file("a/file"), ENOTDIR);
  expect_errno_error(io_error_of([&] { fs().create_directory(dir.file("a/file")); }), dir.file("a/file"),
                     EEXIST);
}

TEST(PosixFileSystem, RemoveTreeRemovesEverythingAndIgnoresMissingPaths) {
  TempDir dir;
  create_directories(fs(), dir.file("t/a/b"));
  write_file(dir.file("t/a/b/f"), "x");
  write_file(dir.file("t/g"), "y");
  remove_tree(fs(), dir.file("t"));
  EXPECT_FALSE(fs().status(dir.file("t")).exists);
  remove_tree(fs(), dir.file("t"));
  write_file(dir.file("single"), "z");
  remove_tree(fs(), dir.file("single"));
  EXPECT_FALSE(fs().status(dir.file("single")).exists);
}

TEST(PosixFileSystem, ReadSmallFileRefusesLargerFiles) {
  TempDir dir;
  write_file(dir.file("manifest.yaml"), "0123456789");
  EXPECT_EQ(fs().read_small_file(dir.file("manifest.yaml"), 10), "0123456789");
  write_file(dir.file("empty"), "");
  EXPECT_EQ(fs().read_small_file(dir.file("empty"), 10), "");
  const IoError e = io_error_of([&] { fs().read_small_file(dir.file("manifest.yaml"), 9); });
  EXPECT_EQ(e.path(), dir.file("manifest.yaml"));
  EXPECT_NE(std::string(e.what()).find("10 bytes, more than the 9 bytes allowed"), std::string::npos)
      << e.what();
}

TEST(PosixFileSystem, PathHelpers) {
  EXPECT_EQ(join_path("a", "b"), "a/b");
  EXPECT_EQ(join_path("a/", "b"), "a/b");
  EXPECT_EQ(join_path("", "b"), "b");
  EXPECT_EQ(parent_path("a/b/c"), "a/b");
  EXPECT_EQ(parent_path("a/b/"), "a");
  EXPECT_EQ(parent_path("file"), ".");
  EXPECT_EQ(parent_path("/file"), "/");
  EXPECT_EQ(parent_path("/"), "/");
  EXPECT_EQ(base_name("a/b/c"), "c");
  EXPECT_EQ(base_name("a/b/"), "b");
  EXPECT_EQ(base_name("file"), "file");
}

// ---- the lock: flock, one holder per open file (fs.h: "Returns nullptr when someone else holds it") ----

TEST(PosixFileLock, SecondLockInTheSameProcessIsRefusedUntilReleased) {
  TempDir dir;
  const std::string path = dir.file("LOCK");
  EXPECT_EQ(fs().try_lock(path, /*create=*/false), nullptr) << "missing file and create == false";
  EXPECT_FALSE(fs().status(path).exists) << "try_lock without create must not create the file";

  auto first = fs().try_lock(path, /*create=*/true);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(fs().try_lock(path, /*create=*/true), nullptr)
      << "a second open of the file must not get the lock";
  EXPECT_EQ(fs().try_lock(path, /*create=*/false), nullptr);
  first.reset();
  auto again = fs().try_lock(path, /*create=*/false);
  EXPECT_NE(again, nullptr) << "destroying the lock releases it";
}

TEST(PosixFileLock, AnotherProcessCannotTakeAHeldLockNorKeepUsFromOneItReleased) {
  TempDir dir;
  const std::string path = dir.file("LOCK");
  auto lock = fs().try_lock(path, /*create=*/true);
  ASSERT_NE(lock, nullptr);
  // util-linux flock(1) uses flock(2), the same lock.
  auto child = testing::run_command("flock -n " + testing::shell_quote(path) + " -c 'echo got it'");
  EXPECT_NE(child.exit_code, 0) << "another process took the lock we hold: " << child.output;
  lock.reset();
  child = testing::run_command("flock -n " + testing::shell_quote(path) + " -c 'echo got it'");
  EXPECT_EQ(child.exit_code, 0) << "the released lock should be free: " << child.output;

  // A process that holds the lock on its own open of the file until it is killed.
  testing::ChildProcess holder(
      {"/bin/sh", "-c", "exec 9>>\"$0\" && flock -n 9 && echo holding && exec sleep 60", path});
  ASSERT_TRUE(holder.wait_for_line("holding")) << holder.output();
  EXPECT_EQ(fs().try_lock(path, /*create=*/false), nullptr)
      << "a lock held by another process must be refused";
  holder.kill(SIGKILL);
  holder.wait();
  EXPECT_NE(fs().try_lock(path, /*create=*/false), nullptr) << "the holder died, so the lock is free";
}

TEST(PosixFileLock, WriteContentsReplacesTheFile) {
  TempDir dir;
  const std::string path = dir.file("LOCK");
  auto lock = fs().try_lock(path, /*create=*/true);
  ASSERT_NE(lock, nullptr);
  lock->write_contents("pid 123456\n");
  EXPECT_EQ(read_all(path), "pid 123456\n");
  lock->write_contents("pid 7\n");
  EXPECT_EQ(read_all(path), "pid 7\n") << "the old, longer contents must be truncated";
}

// ---- the atomic file writer ----

TEST(AtomicFile, ReplacesTheFileAndLeavesNoTempFile) {
  TempDir dir;
  const std::string path = dir.file("manifest.yaml");
  for (bool durable : {true, false}) {
    write_file_atomically(
        fs(), path, [&](WritableFile& f) { f.append("first", 5); }, durable);
    EXPECT_EQ(read_all(path), "first");
    write_file_atomically(
        fs(), path, [&](WritableFile& f) { f.append("second!", 7); }, durable);
    EXPECT_EQ(read_all(path), "second!");
    EXPECT_EQ(sorted_names(dir.path()), std::vector<std::string>{"manifest.yaml"})
        << joined(sorted_names(dir.path()));
    fs().remove_file(path);
  }
}

TEST(AtomicFile, AThrowingWriterLeavesTheOldContentsAndRemovesItsTempFile) {
  TempDir dir;
  const std::string path = dir.file("manifest.yaml");
  write_file_atomically(fs(), path, [&](WritableFile& f) { f.append("old", 3); });
  std::string temp_path;
  try {
    write_file_atomically(fs(), path, [&](WritableFile& f) {
      temp_path = f.path();
      const std::string half(2 << 20, 'x');  // past the write buffer: bytes reach the temp file
      f.append(half.data(), half.size());
      throw std::runtime_error("writer failed");
    });
    ADD_FAILURE() << "the writer's exception should propagate";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "writer failed");
  }
  EXPECT_EQ(read_all(path), "old");
  EXPECT_NE(temp_path, path) << "the writer must write a temp file, not the target";
  EXPECT_EQ(parent_path(temp_path), dir.path()) << "the temp file lives beside the target (same file system)";
  EXPECT_FALSE(fs().status(temp_path).exists) << temp_path;
  EXPECT_EQ(sorted_names(dir.path()), std::vector<std::string>{"manifest.yaml"})
      << joined(sorted_names(dir.path()));

  // Without an old file, a failed write leaves nothing at all.
  EXPECT_THROW(
      write_file_atomically(fs(), dir.file("new"), [](WritableFile&) { throw std::logic_error("no"); }),
      std::logic_error);
  EXPECT_FALSE(fs().status(dir.file("new")).exists);
  EXPECT_EQ(sorted_names(dir.path()), std::vector<std::string>{"manifest.yaml"})
      << joined(sorted_names(dir.path()));
}

TEST(AtomicFile, StaleTempFilesAreRemovedButLiveOnesKept) {
  TempDir dir;
  std::string live_temp;
  // A write in progress: its temp file exists and is locked while the writer runs.
  write_file_atomically(fs(), dir.file("a"), [&](WritableFile& f) {
    live_temp = f.path();
    EXPECT_TRUE(is_temp_file_name(base_name(live_temp))) << live_temp;
    EXPECT_EQ(remove_stale_temp_files(fs(), dir.path()), 0u) << "a live writer's temp file must be kept";
    EXPECT_TRUE(fs().status(live_temp).exists);
  });
  // A crashed writer's temp file: present, not locked.
  const std::string stale = join_path(dir.path(), base_name(live_temp));
  write_file(stale, "partial");
  write_file(dir.file("unrelated.tmp"), "keep me");
  EXPECT_EQ(remove_stale_temp_files(fs(), dir.path()), 1u);
  EXPECT_FALSE(fs().status(stale).exists);
  EXPECT_TRUE(fs().status(dir.file("unrelated.tmp")).exists);

  // The next atomic write into the directory cleans up too.
  write_file(stale, "partial");
  write_file_atomically(fs(), dir.file("b"), [](WritableFile& f) { f.append("b", 1); });
  EXPECT_FALSE(fs().status(stale).exists);
  EXPECT_EQ(sorted_names(dir.path()), (std::vector<std::string>{"a", "b", "unrelated.tmp"}))
      << joined(sorted_names(dir.path()));
  EXPECT_FALSE(is_temp_file_name("manifest.yaml"));
  EXPECT_FALSE(is_temp_file_name("step-000000000001.tmp-1"));
}

}  // namespace
}  // namespace autosnap
