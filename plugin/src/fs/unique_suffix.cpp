#include "fs/unique_suffix.h"

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <random>

namespace autosnap {

std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t seed = std::random_device{}();
  // The pid is mixed in on every call: a forked child shares the seed and counter.
  const uint64_t pid = static_cast<uint64_t>(::getpid());
  std::mt19937_64 rng(seed ^ (pid << 32) ^ counter.fetch_add(1));
  char text[48];
  std::snprintf(text, sizeof(text), "%llu-%016llx", static_cast<unsigned long long>(pid),
                static_cast<unsigned long long>(rng()));
  return text;
}

}  // namespace autosnap
