#include "daemon/restore_attempts.h"

#include <cstdio>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>

#include "autosnap/errors.h"
#include "fs/atomic_file.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {

using util::log;
namespace {

constexpr const char* kRecordFile = "restore-attempts.json";
constexpr const char* kMarkerFile = "restore-crashed";

// Process-wide: signal handlers are. Only async-signal-safe calls in the handler.
constexpr int kCrashSignals[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
constexpr size_t kSignalCount = sizeof(kCrashSignals) / sizeof(kCrashSignals[0]);
struct sigaction g_previous[kSignalCount];
char g_marker_path[4096];
volatile sig_atomic_t g_armed = 0;
std::mutex g_install_mutex;
bool g_installed = false;

extern "C" void mark_crash(int signal_number) {
  if (g_armed) {
    g_armed = 0;
    const int fd = ::open(g_marker_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) ::close(fd);
  }
  // Hand the signal on: the previous disposition takes it once this returns.
  for (size_t i = 0; i < kSignalCount; ++i) {
    if (kCrashSignals[i] == signal_number) ::sigaction(signal_number, &g_previous[i], nullptr);
  }
  ::raise(signal_number);
}

void arm(const std::string& marker_path) {
  std::lock_guard<std::mutex> lock(g_install_mutex);
  if (marker_path.size() >= sizeof(g_marker_path)) {
    log()->warn("crash-loop protection is off for this restore: path too long ({})", marker_path);
    return;
  }
  std::memcpy(g_marker_path, marker_path.c_str(), marker_path.size() + 1);
  if (!g_installed) {
    struct sigaction action {};
    action.sa_handler = mark_crash;
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < kSignalCount; ++i) ::sigaction(kCrashSignals[i], &action, &g_previous[i]);
    g_installed = true;
  }
  g_armed = 1;
}

void disarm() {
  std::lock_guard<std::mutex> lock(g_install_mutex);
  g_armed = 0;
  if (!g_installed) return;
  for (size_t i = 0; i < kSignalCount; ++i) ::sigaction(kCrashSignals[i], &g_previous[i], nullptr);
  g_installed = false;
}

void remove_if_present(FileSystem& fs, const std::string& path) {
  if (fs.status(path).exists) fs.remove_file(path);
}

}  // namespace

namespace {

// Rank 0 keeps the names single-process jobs always had; other ranks add theirs.
std::string per_rank(const std::string& name, int rank) {
  if (rank == 0) return name;
  char suffix[32];
  std::snprintf(suffix, sizeof(suffix), ".rank-%05d", rank);
  const size_t dot = name.find('.');
  return dot == std::string::npos ? name + suffix : name.substr(0, dot) + suffix + name.substr(dot);
}

}  // namespace

RestoreAttempts::RestoreAttempts(FileSystem& fs, const std::string& directory, int rank)
    : fs_(fs),
      directory_(directory),
      record_path_(join_path(directory, per_rank(kRecordFile, rank))),
      marker_path_(join_path(directory, per_rank(kMarkerFile, rank))) {
  try {
    if (fs_.status(record_path_).exists) {
      const auto record = nlohmann::json::parse(fs_.read_small_file(record_path_, 4096));
      step_ = record.at("step").get<int64_t>();
      crashes_ = record.value("crashes", 0);
    }
  } catch (const std::exception&) {
    step_ = -1;  // unreadable: start counting afresh
    crashes_ = 0;
  }
  if (fs_.status(marker_path_).exists && step_ >= 0) ++crashes_;  // the last restore of step_ crashed
}

RestoreAttempts::~RestoreAttempts() {
  if (armed_) disarm();
}

void RestoreAttempts::begin(int64_t step) {
  if (step != step_) crashes_ = 0;
  step_ = step;
  write_record();  // the count, marker folded in, is durable before the marker goes
  remove_if_present(fs_, marker_path_);
  arm(marker_path_);
  armed_ = true;
}

void RestoreAttempts::end() {
  if (armed_) disarm();
  armed_ = false;
  step_ = -1;
  crashes_ = 0;
  remove_if_present(fs_, record_path_);
  remove_if_present(fs_, marker_path_);
}

void RestoreAttempts::write_record() {
  const std::string record = nlohmann::json{{"step", step_}, {"crashes", crashes_}}.dump() + "\n";
  write_file_atomically(fs_, record_path_,
                        [&](WritableFile& out) { out.append(record.data(), record.size()); });
}

}  // namespace daemon
}  // namespace autosnap
