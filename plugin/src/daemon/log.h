#pragma once

// autosnap's human-readable log: one spdlog logger, "[autosnap] ..." on stderr.

#include <spdlog/spdlog.h>

#include <cstdint>
#include <memory>
#include <string>

namespace autosnap {
namespace daemon {

std::shared_ptr<spdlog::logger> log();
/// debug | info | warn | error | off
void set_log_level(const std::string& level);

/// "812 B", "14.2 kB", "3.1 MB", "2.40 GB".
std::string human_bytes(uint64_t bytes);

}  // namespace daemon
}  // namespace autosnap
