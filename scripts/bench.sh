#!/usr/bin/env bash
# Builds and runs the benchmark (tests/bench/snapshot_bench.cpp): autosnap next to
# torch::save / torch::load and Python's torch.save / torch.load. Writes
# bench-results/bench.json and draws bench-results/bench.png (the README shows
# docs/bench.png, a copy of a run). Arguments go to the benchmark
# (e.g. --sizes-mb 64,512 --reps 1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! dpkg-query -W -f='${Status}' python3-matplotlib 2>/dev/null | grep -q 'install ok installed'; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null
fi
build_dir=${AUTOSNAP_BUILD_DIR:-build}
# The configuration of scripts/test.sh, so both share one build directory.
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DAUTOSNAP_BUILD_TESTS=ON \
  -DAUTOSNAP_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target snapshot_bench memory_tier_bench interval_bench >/dev/null
out=bench-results
mkdir -p "$out"
scratch=$(mktemp -d -p "${AUTOSNAP_BENCH_DIR:-$PWD}")
trap 'rm -rf "$scratch"' EXIT
"$build_dir/tests/snapshot_bench" --dir "$scratch" --json "$out/bench.json" "$@"
# The memory tier's figures (restore from memory against a cold disk restore, and its training overhead).
"$build_dir/tests/memory_tier_bench" --dir "$scratch/memory-tier" --json "$out/memory_tier.json"
# max_overhead: the interval it picks as the step time changes, and the overhead it keeps.
"$build_dir/tests/interval_bench" --dir "$scratch/interval" --json "$out/interval.json"
/usr/bin/python3 scripts/bench_chart.py "$out/bench.json" "$out/bench.png"
echo "bench: wrote $out/bench.json, $out/memory_tier.json, $out/interval.json and $out/bench.png"
