#include "daemon/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace autosnap {
namespace daemon {

std::shared_ptr<spdlog::logger> log() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto l = std::make_shared<spdlog::logger>("autosnap", sink);
    l->set_pattern("[autosnap %Y-%m-%d %H:%M:%S.%e] %l: %v");
    l->set_level(spdlog::level::info);
    l->flush_on(spdlog::level::info);
    return l;
  }();
  return logger;
}

void set_log_level(const std::string& level) { log()->set_level(spdlog::level::from_str(level)); }

std::string human_bytes(uint64_t bytes) {
  if (bytes < 1000) return std::to_string(bytes) + " B";
  if (bytes < 1000 * 1000) return fmt::format("{:.1f} kB", bytes / 1e3);
  if (bytes < 1000ull * 1000 * 1000) return fmt::format("{:.1f} MB", bytes / 1e6);
  return fmt::format("{:.2f} GB", bytes / 1e9);
}

}  // namespace daemon
}  // namespace autosnap
