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

int WriteModeChooser::size_class(uint64_t bytes) {
  int k = 0;
  for (uint64_t top = kMinTimedBytes * 4; bytes >= top && k < kSizeClasses - 1; top *= 4) ++k;
  return k;
}

namespace {

std::string size_class_name(int k) {
  auto size = [](int k) {
    const uint64_t mib = (WriteModeChooser::kMinTimedBytes >> 20) << (2 * k);
    return mib >= 1024 ? std::to_string(mib >> 10) + " GiB" : std::to_string(mib) + " MiB";
  };
  return k == WriteModeChooser::kSizeClasses - 1 ? size(k) + " or more" : size(k) + " to " + size(k + 1);
}

}  // namespace

bool WriteModeChooser::timed_enough(const SizeClass& s) {
  return s.direct.size() >= 2 && s.buffered.size() >= 2;
}

double WriteModeChooser::median(std::deque<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

bool WriteModeChooser::use_direct(uint64_t device, uint64_t expected_bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (mode_ != DirectIo::kAuto) return mode_ == DirectIo::kAlways;
  Device& d = devices_[device];
  if (d.refused) return false;
  SizeClass& s = d.sizes[class_for(d, expected_bytes)];
  // Until both ways have been timed twice: alternately, O_DIRECT first.
  if (!timed_enough(s)) return s.direct.size() <= s.buffered.size();
  const bool direct_faster = median(s.direct) >= median(s.buffered);
  return ++s.decided % kRetryEvery == 0 ? !direct_faster : direct_faster;
}

void WriteModeChooser::record(uint64_t device, const std::string& path, bool direct, uint64_t bytes,
                              double seconds) {
  if (bytes < kMinTimedBytes || seconds <= 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  Device& d = devices_[device];
  d.last_timed = size_class(bytes);
  SizeClass& s = d.sizes[d.last_timed];
  auto& timed = direct ? s.direct : s.buffered;
  timed.push_back(static_cast<double>(bytes) / 1e6 / seconds);
  if (timed.size() > kTimedFiles) timed.pop_front();
  if (mode_ != DirectIo::kAuto || !timed_enough(s)) return;
  const double direct_mb_s = median(s.direct), buffered_mb_s = median(s.buffered);
  const int faster = direct_mb_s >= buffered_mb_s ? 1 : 0;
  if (faster == s.faster) return;
  s.faster = faster;
  // Said when the choice is first made and whenever it turns.
  util::log()->info(
      "big files on the device of {} are written {} from now on (O_DIRECT {:.0f} MB/s, through the page "
      "cache {:.0f} MB/s: medians of the last {} files or fewer each way, all of {}, fsync included; the "
      "other way is tried every {} files; flush.direct_io: always | never fixes it)",
      path.substr(0, path.find_last_of('/')), faster ? "with O_DIRECT" : "through the page cache",
      direct_mb_s, buffered_mb_s, kTimedFiles, size_class_name(d.last_timed), kRetryEvery);
}

void WriteModeChooser::direct_refused(uint64_t device) {
  std::lock_guard<std::mutex> lock(mutex_);
  devices_[device].refused = true;
}

const WriteModeChooser::SizeClass* WriteModeChooser::find(uint64_t device, uint64_t bytes) const {
  auto it = devices_.find(device);
  if (it == devices_.end()) return nullptr;
  return &it->second.sizes[class_for(it->second, bytes)];
}

double WriteModeChooser::direct_mb_per_s(uint64_t device, uint64_t bytes) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const SizeClass* s = find(device, bytes);
  return s ? median(s->direct) : 0;
}

double WriteModeChooser::buffered_mb_per_s(uint64_t device, uint64_t bytes) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const SizeClass* s = find(device, bytes);
  return s ? median(s->buffered) : 0;
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
