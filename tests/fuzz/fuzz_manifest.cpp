// libFuzzer target: manifest.yaml parsing. Anything but CorruptSnapshot (damaged)
// or UnsupportedFormat (another format version) is a bug.
#include <cstdint>
#include <string>

#include "autosnap/errors.h"
#include "autosnap/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    autosnap::Manifest manifest = autosnap::Manifest::parse(text, "fuzz.yaml");
    // What parses must survive its own round trip.
    autosnap::Manifest again = autosnap::Manifest::parse(manifest.to_yaml(), "fuzz-again.yaml");
    if (again.to_yaml() != manifest.to_yaml()) __builtin_trap();
  } catch (const autosnap::CorruptSnapshot&) {
  } catch (const autosnap::UnsupportedFormat&) {
  }
  return 0;
}
