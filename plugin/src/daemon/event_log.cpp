#include "daemon/event_log.h"

#include <unistd.h>

#include "autosnap/manifest.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {

using util::log;

EventLog::EventLog(FileSystem& fs, std::string path) : fs_(fs), path_(std::move(path)) {}

void EventLog::write(const std::string& event, nlohmann::json fields) {
  nlohmann::json line = {
      {"time", utc_timestamp_now()}, {"event", event}, {"pid", static_cast<int>(::getpid())}};
  line.update(fields);
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string text = (start_new_line_ ? "\n" : "") + line.dump() + "\n";
  try {
    if (!file_) file_ = fs_.open_for_append(path_);
    file_->append(text.data(), text.size());
    file_->flush();
    start_new_line_ = false;
  } catch (const std::exception& e) {
    file_.reset();
    start_new_line_ = true;
    if (!failed_) log()->warn("cannot write the event log {}: {}", path_, e.what());
    failed_ = true;
  }
}

}  // namespace daemon
}  // namespace autosnap
