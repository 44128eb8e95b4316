#pragma once

// Helpers shared by autosnap's tests: temp directories, running commands,
// finding Debian's python3 with torch.

#include <sys/types.h>

#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace autosnap {
namespace testing {

/// A fresh directory under $TMPDIR, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

/// The message of the E that f throws, or "<no exception>".
template <typename E, typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<no exception>";
}

/// Runs a shell command and captures its output.
CommandResult run_command(const std::string& command);

/// Quotes a string for /bin/sh.
std::string shell_quote(const std::string& text);

/// Debian's interpreter (python3-torch lives there), overridable with AUTOSNAP_TEST_PYTHON.
std::string python();
/// Runs Python source with Debian's interpreter; `argument` becomes sys.argv[1].
CommandResult run_python_code(const std::string& code, const std::string& argument);
/// Path of a helper script in tests/python/.
std::string python_script(const std::string& name);
/// Path of a committed fixture in tests/data/.
std::string test_data(const std::string& name);
/// Why Python interop tests cannot run here, or nullopt when they can.
std::optional<std::string> python_torch_unavailable_reason();
/// Skips the current test, saying why, when Debian's python3 with torch is missing.
#define AUTOSNAP_REQUIRE_PYTHON_TORCH()                                         \
  do {                                                                          \
    if (auto reason = ::autosnap::testing::python_torch_unavailable_reason()) { \
      std::cout << *reason << std::endl;                                        \
      GTEST_SKIP() << *reason;                                                  \
    }                                                                           \
  } while (0)

/// True when libfiu's `fiu-run` is on PATH (setup.sh installs fiu-utils).
bool fiu_run_available();
/// Skips the current test, saying why, when `fiu-run` is missing.
#define AUTOSNAP_REQUIRE_FIU_RUN()                                                \
  do {                                                                            \
    if (!::autosnap::testing::fiu_run_available()) {                              \
      const char* why = "fiu-run is not installed (setup.sh installs fiu-utils)"; \
      std::cout << "skipped: " << why << std::endl;                               \
      GTEST_SKIP() << why;                                                        \
    }                                                                             \
  } while (0)

/// Path of a helper program built next to the tests.
std::string tool_path(const std::string& name);

/// Path of an example program.
std::string example_path(const std::string& name);

/// A child process whose stdout (and stderr) we read line by line.
class ChildProcess {
 public:
  /// Starts `argv` with `env` added to the environment.
  ChildProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  /// Reads lines until one contains `text` (true) or the output ends (false).
  /// Every line read is appended to output().
  bool wait_for_line(const std::string& text);
  /// Reads everything until the child closes its output.
  void read_all();
  void kill(int signal);
  /// Waits for exit; returns the exit code, or 128 + signal.
  int wait();
  pid_t pid() const { return pid_; }
  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string output_;
  std::string pending_;
  bool reaped_ = false;
  int status_ = 0;
};

/// Names of the entries in a directory.
std::vector<std::string> list_names(const std::string& directory);
/// Size of a file in bytes.
uint64_t file_size(const std::string& path);
/// Overwrites one byte of a file with its bitwise complement.
void flip_byte(const std::string& path, uint64_t offset);
/// Truncates a file to `size` bytes.
void truncate_file(const std::string& path, uint64_t size);
/// Writes `contents` to `path`, replacing it.
void write_text(const std::string& path, const std::string& contents);

}  // namespace testing
}  // namespace autosnap
