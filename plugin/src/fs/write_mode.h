#pragma once

// How a big new file is written: with O_DIRECT from aligned blocks, or
// through the page cache; then fsync. Neither wins everywhere. On one virtual
// disk measured, O_DIRECT wrote 1.6-2.5 GB/s and buffered + fsync 0.3-1.5; on
// another the host caches O_DIRECT writes too, the fsync then waits for them
// all over again, and buffered + fsync took 0.55-0.7x the time (64 and
// 512 MB). So each device's big files are timed, from their creation to the
// end of their fsync, and the faster way is used, the other tried again now
// and then (a disk's speed changes with its load).

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>

#include "autosnap/fs.h"  // DirectIo

namespace autosnap {

class WriteModeChooser {
 public:
  /// Smaller files time the fsync's fixed latency more than the disk.
  static constexpr uint64_t kMinTimedBytes = 32 << 20;
  /// Files timed per way and device (the newest; their median decides).
  static constexpr size_t kTimedFiles = 3;
  /// Once decided, every this-many-th big file goes the other way.
  static constexpr int kRetryEvery = 16;

  void set_mode(DirectIo mode);
  DirectIo mode() const;
  /// Whether the next big new file on `device` is written with O_DIRECT.
  bool use_direct(uint64_t device);
  /// A file of `bytes` on `device` was written (`direct` or buffered) and
  /// fsynced `seconds` after its creation. Files under kMinTimedBytes are left out.
  void record(uint64_t device, const std::string& path, bool direct, uint64_t bytes, double seconds);
  /// `device` refused O_DIRECT (e.g. tmpfs before Linux 6.6): its files stay buffered.
  void direct_refused(uint64_t device);
  /// Median MB/s of the files timed on `device` each way (0: none timed).
  double direct_mb_per_s(uint64_t device) const;
  double buffered_mb_per_s(uint64_t device) const;
  /// Forgets every device's timings.
  void reset();

 private:
  struct Device {
    std::deque<double> direct, buffered;  // MB/s of the newest files timed
    bool refused = false;
    int decided = 0;  // files since both ways had been timed
    int faster = -1;  // the way last said to be faster: 1 direct, 0 buffered
  };
  static bool timed_enough(const Device& d);
  static double median(std::deque<double> values);

  mutable std::mutex mutex_;
  DirectIo mode_ = DirectIo::kAuto;
  std::unordered_map<uint64_t, Device> devices_;
};

/// The process's chooser, used by the default file system.
WriteModeChooser& write_mode_chooser();

}  // namespace autosnap
