#pragma once

// What autosnap logs while a LogCapture lives (besides stderr as usual).
// Make it before the snapshotter whose lines it wants, and let it go after:
// the logger's list of sinks is not guarded against threads that log.

#include <spdlog/sinks/ostream_sink.h>

#include <algorithm>
#include <memory>
#include <sstream>
#include <string>

#include "util/log.h"

namespace autosnap {
namespace testing {

class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(lines_)) {
    util::log()->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = util::log()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::string text() {
    sink_->flush();
    return lines_.str();
  }
  bool has(const std::string& part) { return text().find(part) != std::string::npos; }

 private:
  std::ostringstream lines_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

}  // namespace testing
}  // namespace autosnap
