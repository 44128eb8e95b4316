// Saves to one path over and over: {"i": i, "data": float tensor of n(i)
// elements, all equal to i}. Used by atomic_save_kill_test, which kills it
// with SIGKILL at random moments.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <ATen/ops/full.h>

#include "autosnap/serialize.h"
#include "autosnap/values.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: save_loop PATH FIRST_I\n");
    return 2;
  }
  const std::string path = argv[1];
  for (int64_t i = std::atoll(argv[2]);; ++i) {
    const int64_t n = 1 + (i * 7919) % 400000;  // up to 1.6 MB, so kills land mid-write too
    autosnap::save(autosnap::dict({{"i", i}, {"data", at::full({n}, static_cast<float>(i))}}), path);
    std::printf("%lld\n", static_cast<long long>(i));  // progress for the test; it reads the first line
    std::fflush(stdout);
  }
}
