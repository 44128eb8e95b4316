#include "support/test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace autosnap {
namespace testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/autosnap-test-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  if (std::getenv("AUTOSNAP_KEEP_TEST_DIRS") == nullptr) {
    // Restore write permission first: some tests make directories read-only.
    run_command("chmod -R u+rwx " + shell_quote(path_) + " 2>/dev/null; rm -rf " + shell_quote(path_));
  }
}

CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed for: " + command);
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) {
    if (c == '\'')
      quoted += "'\\''";
    else
      quoted += c;
  }
  return quoted + "'";
}

std::string python() {
  const char* override_path = std::getenv("AUTOSNAP_TEST_PYTHON");
  return override_path && *override_path ? override_path : "/usr/bin/python3";
}

std::string python_script(const std::string& name) {
  return std::string(AUTOSNAP_TEST_SOURCE_DIR) + "/python/" + name;
}

CommandResult run_python_code(const std::string& code, const std::string& argument) {
  return run_command(shell_quote(python()) + " -c " + shell_quote(code) + " " + shell_quote(argument));
}

std::string test_data(const std::string& name) {
  return std::string(AUTOSNAP_TEST_SOURCE_DIR) + "/data/" + name;
}

std::optional<std::string> python_torch_unavailable_reason() {
  static const std::optional<std::string> reason = []() -> std::optional<std::string> {
    auto result = run_command(shell_quote(python()) + " -c 'import torch; print(torch.__version__)'");
    if (result.exit_code == 0) return std::nullopt;
    return "Python interop skipped: '" + python() +
           " -c \"import torch\"' failed (install python3-torch): " + result.output;
  }();
  return reason;
}

bool fiu_run_available() { return run_command("command -v fiu-run").exit_code == 0; }

std::string tool_path(const std::string& name) { return std::string(AUTOSNAP_TEST_TOOLS_DIR) + "/" + name; }

std::string example_path(const std::string& name) { return std::string(AUTOSNAP_EXAMPLES_DIR) + "/" + name; }

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  int out[2];
  if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(out[1], STDERR_FILENO);
    ::close(out[0]);
    ::close(out[1]);
    for (const auto& assignment : env) ::putenv(const_cast<char*>(assignment.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out[1]);
  fd_ = out[0];
}

ChildProcess::~ChildProcess() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    wait();
  }
  if (fd_ >= 0) ::close(fd_);
}

bool ChildProcess::wait_for_line(const std::string& text) {
  char buffer[4096];
  while (true) {
    size_t newline;
    while ((newline = pending_.find('\n')) != std::string::npos) {
      std::string line = pending_.substr(0, newline + 1);
      pending_.erase(0, newline + 1);
      output_ += line;
      if (line.find(text) != std::string::npos) return true;
    }
    ssize_t n = ::read(fd_, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      output_ += pending_;
      pending_.clear();
      return false;
    }
    pending_.append(buffer, static_cast<size_t>(n));
  }
}

void ChildProcess::read_all() { wait_for_line(std::string(1, '\0')); }

void ChildProcess::kill(int signal) { ::kill(pid_, signal); }

int ChildProcess::wait() {
  if (!reaped_) {
    ::waitpid(pid_, &status_, 0);
    reaped_ = true;
  }
  return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
}

std::vector<std::string> list_names(const std::string& directory) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return names;
  while (auto* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  return names;
}

uint64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("stat failed: " + path);
  return static_cast<uint64_t>(st.st_size);
}

void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(static_cast<std::streamoff>(offset));
  char c;
  file.get(c);
  file.seekp(static_cast<std::streamoff>(offset));
  file.put(static_cast<char>(~c));
  if (!file) throw std::runtime_error("flip_byte failed: " + path);
}

void truncate_file(const std::string& path, uint64_t size) {
  if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0)
    throw std::runtime_error("truncate failed: " + path);
}

void write_text(const std::string& path, const std::string& contents) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << contents;
  if (!file) throw std::runtime_error("write failed: " + path);
}

}  // namespace testing
}  // namespace autosnap
