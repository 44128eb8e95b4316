#!/usr/bin/env bash
# Installs the built autosnap into a temporary prefix, then configures, builds
# and runs a separate project that uses find_package(autosnap).
set -euo pipefail
build_dir=$1
consumer_src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$consumer_src" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release \
  "${launcher[@]}" >/dev/null
cmake --build "$work/build" -j 2 >/dev/null
"$work/build/consumer" "$work/checkpoint.pt"
test -f "$work/prefix/include/autosnap/autosnap.h"
test -f "$work/prefix/lib/cmake/autosnap/autosnapConfig.cmake"
