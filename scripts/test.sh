#!/usr/bin/env bash
# The test command: install what is missing, configure, build (ccache), run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
build_dir=${AUTOSNAP_BUILD_DIR:-build}
jobs=$(nproc)
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DAUTOSNAP_BUILD_TESTS=ON -DAUTOSNAP_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build_dir" -j "$jobs"
cd "$build_dir"
ctest --output-on-failure -j "$jobs"
