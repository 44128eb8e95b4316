#include "support/test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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
    if (c == '\'') quoted += "'\\''";
    else quoted += c;
  }
  return quoted + "'";
}

std::string python() {
  const char* override_path = std::getenv("AUTOSNAP_TEST_PYTHON");
  return override_path && *override_path ? override_path : "/usr/bin/python3";
}

std::string python_script(const std::string& name) { return std::string(AUTOSNAP_TEST_SOURCE_DIR) + "/python/" + name; }

std::optional<std::string> python_torch_unavailable_reason() {
  static const std::optional<std::string> reason = []() -> std::optional<std::string> {
    auto result = run_command(shell_quote(python()) + " -c 'import torch; print(torch.__version__)'");
    if (result.exit_code == 0) return std::nullopt;
    return "Python interop skipped: '" + python() + " -c \"import torch\"' failed (install python3-torch): " +
           result.output;
  }();
  return reason;
}

std::string tool_path(const std::string& name) { return std::string(AUTOSNAP_TEST_TOOLS_DIR) + "/" + name; }

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
  if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0) throw std::runtime_error("truncate failed: " + path);
}

void write_text(const std::string& path, const std::string& contents) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << contents;
  if (!file) throw std::runtime_error("write failed: " + path);
}

}  // namespace testing
}  // namespace autosnap
