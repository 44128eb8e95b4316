#pragma once

// Timing, peak-memory and page-cache helpers of the benchmark (snapshot_bench.cpp).

#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

inline double median(std::vector<double> values) {
  if (values.empty()) return NAN;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Freed blocks go back to the kernel at once (glibc's default raises the mmap
// threshold to 32 MiB after the first large free, and then keeps freed tensors
// resident), so each measurement pays its own allocations and the peak
// resident memory it reports is its own.
inline void return_freed_memory_to_the_kernel() {
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);  // small blocks stay for reuse; PeakMemory trims
}

// Freed blocks stay in the heap for reuse (up to glibc's 32 MiB mmap
// threshold) and the heap is never trimmed, as a caching allocator keeps them.
// With glibc's defaults the training loop's steps on this VM flip between
// about 110 and 450 ms (batch 4) as the heap's layout lets its 16 MiB
// gradients be reused or has them trimmed and faulted in afresh every step,
// and whether a Snapshotter is attached decides which (in a program of its
// own: 109 ms without one, 329-404 ms with one; 105 and 105 ms with this).
inline void keep_freed_memory_for_reuse() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

// A virtual machine's memory costs more the first time the guest touches a
// page (here about 3x: a restore into never-touched memory took 1.8 s, the
// same restore again 0.55 s). Touching most of the free memory once first
// means no measurement pays that for the others.
inline uint64_t prefault_free_memory(double fraction) {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0, available = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") available = kib * 1024;
  }
  const uint64_t total = static_cast<uint64_t>(available * fraction);
  constexpr uint64_t kChunk = 256ull << 20;
  std::vector<std::unique_ptr<char[]>> chunks;
  for (uint64_t done = 0; done + kChunk <= total; done += kChunk) {
    chunks.emplace_back(new char[kChunk]);
    std::memset(chunks.back().get(), 1, kChunk);
  }
  return chunks.size() * kChunk;
}

inline uint64_t status_kib(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(status, line)) {
    if (line.rfind(prefix, 0) == 0) return std::stoull(line.substr(prefix.size()));
  }
  throw std::runtime_error(std::string("no ") + field + " in /proc/self/status");
}

// Peak resident memory above what the process held when it started: Linux
// resets VmHWM to the current RSS when "5" is written to clear_refs.
class PeakMemory {
 public:
  PeakMemory() {
    malloc_trim(0);  // free heap pages left by earlier measurements go back first
    std::ofstream("/proc/self/clear_refs") << "5";
    start_kib_ = status_kib("VmRSS");
  }
  uint64_t extra_bytes() const {
    const uint64_t peak = status_kib("VmHWM");
    return (peak > start_kib_ ? peak - start_kib_ : 0) * 1024;
  }

 private:
  uint64_t start_kib_ = 0;
};

// Evicts a file (or every file under a directory) from the page cache, so the
// next read comes from the disk. Only clean pages go: callers fsync first.
inline void drop_cache(const std::filesystem::path& path) {
  if (std::filesystem::is_directory(path)) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(path)) {
      if (entry.is_regular_file()) drop_cache(entry.path());
    }
    return;
  }
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error("open " + path.string());
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

inline void fsync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0 || ::fsync(fd) != 0) throw std::runtime_error("fsync " + path);
  ::close(fd);
}

// One timed operation: the median time and the median peak extra memory of its runs.
struct Figure {
  double ms = NAN;
  double peak_bytes = NAN;
};

// Runs `prepare` (untimed) then `operation` (timed, with its peak memory), `reps` times.
template <class Prepare, class Operation>
Figure measure(int reps, Prepare&& prepare, Operation&& operation) {
  std::vector<double> times, peaks;
  for (int r = 0; r < reps; ++r) {
    prepare();
    PeakMemory memory;
    const auto start = Clock::now();
    operation();
    times.push_back(ms_since(start));
    peaks.push_back(static_cast<double>(memory.extra_bytes()));
  }
  return {median(times), median(peaks)};
}

template <class Operation>
Figure measure(int reps, Operation&& operation) {
  return measure(
      reps, [] {}, operation);
}

}  // namespace bench
