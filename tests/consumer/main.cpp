// Saves and loads a checkpoint through the installed autosnap package.
#include <ATen/ops/arange.h>
#include <autosnap/autosnap.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  auto x = at::arange(10);
  autosnap::save(autosnap::dict({{"epoch", 7}, {"x", x}}), argv[1]);
  auto loaded = autosnap::load(argv[1]);
  const bool ok =
      autosnap::dict_at(loaded, "epoch").toInt() == 7 && autosnap::dict_at(loaded, "x").toTensor().equal(x);
  std::printf("consumer built against autosnap %s: %s\n", AUTOSNAP_VERSION, ok ? "ok" : "MISMATCH");
  return ok ? 0 : 1;
}
