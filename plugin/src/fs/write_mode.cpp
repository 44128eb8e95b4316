#include "fs/write_mode.h"

#include <algorithm>

#include "util/log.h"

namespace autosnap {

void WriteModeChooser::set_mode(DirectIo mode) {
  std::lock_guard<std::mutex> lock(mutex_);
  mode_ = mode;
}

DirectIo WriteModeChooser::mode() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return mode_;
}

bool WriteModeChooser::timed_enough(const Device& d) {
  return d.direct.size() >= 2 && d.buffered.size() >= 2;
}

double WriteModeChooser::median(std::deque<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

bool WriteModeChooser::use_direct(uint64_t device) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (mode_ != DirectIo::kAuto) return mode_ == DirectIo::kAlways;
  Device& d = devices_[device];
  if (d.refused) return false;
  // Until both ways have been timed twice: alternately, O_DIRECT first.
  if (!timed_enough(d)) return d.direct.size() <= d.buffered.size();
  const bool direct_faster = median(d.direct) >= median(d.buffered);
  return ++d.decided % kRetryEvery == 0 ? !direct_faster : direct_faster;
}

void WriteModeChooser::record(uint64_t device, const std::string& path, bool direct, uint64_t bytes,
                              double seconds) {
  if (bytes < kMinTimedBytes || seconds <= 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  Device& d = devices_[device];
  auto& timed = direct ? d.direct : d.buffered;
  timed.push_back(static_cast<double>(bytes) / 1e6 / seconds);
  if (timed.size() > kTimedFiles) timed.pop_front();
  if (mode_ != DirectIo::kAuto || !timed_enough(d)) return;
  const double direct_mb_s = median(d.direct), buffered_mb_s = median(d.buffered);
  const int faster = direct_mb_s >= buffered_mb_s ? 1 : 0;
  if (faster == d.faster) return;
  d.faster = faster;
  // Said when the choice is first made and whenever it turns.
  util::log()->info(
      "big files on the device of {} are written {} from now on (O_DIRECT {:.0f} MB/s, through the page "
      "cache {:.0f} MB/s: medians of the last {} files or fewer each way, fsync included; the other way is "
      "tried every {} files; flush.direct_io: always | never fixes it)",
      path.substr(0, path.find_last_of('/')), faster ? "with O_DIRECT" : "through the page cache",
      direct_mb_s, buffered_mb_s, kTimedFiles, kRetryEvery);
}

void WriteModeChooser::direct_refused(uint64_t device) {
  std::lock_guard<std::mutex> lock(mutex_);
  devices_[device].refused = true;
}

double WriteModeChooser::direct_mb_per_s(uint64_t device) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = devices_.find(device);
  return it == devices_.end() ? 0 : median(it->second.direct);
}

double WriteModeChooser::buffered_mb_per_s(uint64_t device) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = devices_.find(device);
  return it == devices_.end() ? 0 : median(it->second.buffered);
}

void WriteModeChooser::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  devices_.clear();
}

WriteModeChooser& write_mode_chooser() {
  static WriteModeChooser chooser;
  return chooser;
}

void set_direct_io(DirectIo mode) { write_mode_chooser().set_mode(mode); }

}  // namespace autosnap
