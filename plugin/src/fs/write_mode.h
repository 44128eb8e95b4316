#pragma once

// How a big new file is written: with O_DIRECT from aligned blocks, or
// through the page cache; then fsync. Neither wins everywhere. On one virtual
// disk measured, O_DIRECT wrote 1.6-2.5 GB/s and buffered + fsync 0.3-1.5; on
// another the host caches O_DIRECT writes too, the fsync then waits for them
// all over again, and buffered + fsync took 0.55-0.7x the time (64 and
// 512 MB). So each device's big files are timed, from their creation to the
// end of their fsync, and the faster way is used, the other tried again now
// and then (a disk's speed changes with its load). Sizes are timed apart: on
// the second disk, 128 MB files took about as long either way while 2 GB ones
// went 2.4x faster with O_DIRECT (most likely a big buffered write outgrows
// the page cache's dirty limit and is throttled to the disk's pace).

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
  /// Once decided, every this-many-th big file of a size class goes the other way.
  static constexpr int kRetryEvery = 16;
  /// Size classes, timed and decided apart: powers of four from
  /// kMinTimedBytes (32-128 MiB, 128-512 MiB, 512 MiB-2 GiB, 2-8 GiB, more).
  static constexpr int kSizeClasses = 5;
  static int size_class(uint64_t bytes);

  void set_mode(DirectIo mode);
  DirectIo mode() const;
  /// Whether the next big new file on `device`, of about `expected_bytes`, is
  /// written with O_DIRECT. An unknown size (0) is taken for the size of the
  /// device's last timed file.
  bool use_direct(uint64_t device, uint64_t expected_bytes = 0);
  /// A file of `bytes` on `device` was written (`direct` or buffered) and
  /// fsynced `seconds` after its creation. Files under kMinTimedBytes are left out.
  void record(uint64_t device, const std::string& path, bool direct, uint64_t bytes, double seconds);
  /// `device` refused O_DIRECT (e.g. tmpfs before Linux 6.6): its files stay buffered.
  void direct_refused(uint64_t device);
  /// Median MB/s of the files of `bytes`'s size class timed on `device` each
  /// way (0: none timed). `bytes` 0: the class of the device's last timed file.
  double direct_mb_per_s(uint64_t device, uint64_t bytes = 0) const;
  double buffered_mb_per_s(uint64_t device, uint64_t bytes = 0) const;
  /// Forgets every device's timings.
  void reset();

 private:
  struct SizeClass {
    std::deque<double> direct, buffered;  // MB/s of the newest files timed
    int decided = 0;                      // files since both ways had been timed
    int faster = -1;                      // the way last said to be faster: 1 direct, 0 buffered
  };
  struct Device {
    SizeClass sizes[kSizeClasses];
    int last_timed = 0;  // the size class of the newest file timed
    bool refused = false;
  };
  static bool timed_enough(const SizeClass& s);
  static double median(std::deque<double> values);
  // Where files of `bytes` (0: unknown) are timed on `d`.
  static int class_for(const Device& d, uint64_t bytes) { return bytes ? size_class(bytes) : d.last_timed; }
  // The size class of `bytes` on `device`; nullptr for an unknown device.
  const SizeClass* find(uint64_t device, uint64_t bytes) const;

  mutable std::mutex mutex_;
  DirectIo mode_ = DirectIo::kAuto;
  std::unordered_map<uint64_t, Device> devices_;
};

/// The process's chooser, used by the default file system.
WriteModeChooser& write_mode_chooser();

}  // namespace autosnap
