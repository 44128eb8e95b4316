#include "util/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace autosnap {
namespace util {

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

}  // namespace util
}  // namespace autosnap
