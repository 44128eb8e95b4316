#pragma once

// DIR/events.jsonl: one JSON object per line for every snapshot event
// (started, committed, skipped, failed, restored, quarantined,
// retention-deleted, ...), for people and tools to follow a run.
// Thread-safe. A failure to write the log is reported once and never
// stops training.

#include <nlohmann/json.hpp>

#include <memory>
#include <mutex>
#include <string>

#include "autosnap/fs.h"

namespace autosnap {
namespace daemon {

class EventLog {
 public:
  EventLog(FileSystem& fs, std::string path);
  /// Adds "time" and "pid", appends one line, hands it to the OS.
  void write(const std::string& event, nlohmann::json fields = nlohmann::json::object());
  const std::string& path() const { return path_; }

 private:
  FileSystem& fs_;
  std::string path_;
  std::mutex mutex_;
  std::unique_ptr<WritableFile> file_;
  bool failed_ = false;
  bool start_new_line_ = false;  // a failed write may have left half a line
};

}  // namespace daemon
}  // namespace autosnap
