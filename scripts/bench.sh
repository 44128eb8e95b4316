#!/usr/bin/env bash
# Builds and runs the snapshot benchmark (tests/bench/snapshot_bench.cpp); the
# README records its output. Arguments go to the benchmark (e.g. --sizes-mb 64,256).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build_dir=${AUTOSNAP_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DAUTOSNAP_BUILD_TESTS=ON >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target snapshot_bench >/dev/null
scratch=$(mktemp -d -p "${AUTOSNAP_BENCH_DIR:-$PWD}")
trap 'rm -rf "$scratch"' EXIT
"$build_dir/tests/snapshot_bench" --dir "$scratch" "$@"
