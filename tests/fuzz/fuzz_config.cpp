// libFuzzer target: the YAML configuration parser. Anything but ConfigError is a bug.
#include <cstdint>
#include <string>

#include "autosnap/config.h"
#include "autosnap/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    autosnap::Config::from_string(text, "fuzz.yaml");
  } catch (const autosnap::ConfigError&) {
  }
  return 0;
}
