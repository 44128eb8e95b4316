#pragma once

// autosnap's human-readable log: one spdlog logger, "[autosnap] ..." on stderr.

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

#include "util/human_bytes.h"  // log lines print sizes

namespace autosnap {
namespace util {

std::shared_ptr<spdlog::logger> log();
/// debug | info | warn | error | off
void set_log_level(const std::string& level);

}  // namespace util
}  // namespace autosnap
