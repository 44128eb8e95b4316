#include "daemon/event_log.h"

#include <unistd.h>

#include "autosnap/manifest.h"
#include "daemon/log.h"

namespace autosnap {
namespace daemon {

EventLog::EventLog(FileSystem& fs, std::string path) : fs_(fs), path_(std::move(path)) {}

void EventLog::write(const std::string& event, nlohmann::json fields) {
  nlohmann::json line = {{"time", utc_timestamp_now()}, {"event", event}, {"pid", static_cast<int>(::getpid())}};
  line.update(fields);
  const std::string text = line.dump() + "\n";
  std::lock_guard<std::mutex> lock(mutex_);
  try {
    if (!file_) file_ = fs_.open_for_append(path_);
    file_->append(text.data(), text.size());
    file_->flush();
  } catch (const std::exception& e) {
    file_.reset();
    if (!failed_) log()->warn("cannot write the event log {}: {}", path_, e.what());
    failed_ = true;
  }
}

}  // namespace daemon
}  // namespace autosnap
