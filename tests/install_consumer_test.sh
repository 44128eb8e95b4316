#!/usr/bin/env bash
# Installs the built autosnap into a temporary prefix, then configures, builds
# and runs a separate project that uses find_package(autosnap). For a shared
# libautosnap the consumer must not need autosnap's private dependencies:
# their find_package is disabled, and the exported link interface must not name
# them (IMPORTED_LINK_DEPENDENT_LIBRARIES may: the linker's hint for finding
# libautosnap.so's own DT_NEEDED libraries, not a requirement).
set -euo pipefail
build_dir=$1
consumer_src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/include/autosnap/autosnap.h"
test -f "$work/prefix/lib/cmake/autosnap/autosnapConfig.cmake"

options=(-DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release)
if command -v ccache >/dev/null; then options+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
private="yaml-cpp spdlog Boost nlohmann_json libdeflate fmt"
if ls "$work/prefix/lib/"libautosnap.so* >/dev/null 2>&1; then
  echo "shared libautosnap: the consumer builds without: $private"
  for package in $private; do options+=(-DCMAKE_DISABLE_FIND_PACKAGE_"$package"=TRUE); done
  if grep -E 'INTERFACE_LINK_LIBRARIES' "$work/prefix/lib/cmake/autosnap/"autosnapTargets*.cmake | grep -nE 'yaml|spdlog|Boost|nlohmann|deflate|fmt::'; then
    echo "the exported targets name a private dependency (above)" >&2
    exit 1
  fi
  if grep -rnE '#include <(yaml-cpp|spdlog|boost|nlohmann|libdeflate|fmt)' "$work/prefix/include/autosnap"; then
    echo "an installed header includes a private dependency (above)" >&2
    exit 1
  fi
fi
cmake -S "$consumer_src" -B "$work/build" "${options[@]}" >/dev/null
cmake --build "$work/build" -j 2 >/dev/null
"$work/build/consumer" "$work/checkpoint.pt"
