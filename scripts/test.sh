#!/usr/bin/env bash
# The test command: install what is missing, configure, build (ccache), run the
# tests, the Slurm end-to-end run (scripts/slurm-e2e.sh), the multi-node run
# (scripts/multinode-e2e.sh), then the ASan+UBSan build of the suite and 30 s of each fuzz target
# (scripts/sanitize.sh address). The TSan build and the 1000-kill soak run in
# scripts/crash-soak.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
build_dir=${AUTOSNAP_BUILD_DIR:-build}
jobs=$(nproc)
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DAUTOSNAP_BUILD_TESTS=ON -DAUTOSNAP_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build_dir" -j "$jobs"
(cd "$build_dir" && ctest --output-on-failure -j "$jobs")

# Multi-rank preemption and requeue on a real one-node Slurm (installs it; needs root).
scripts/slurm-e2e.sh "$build_dir"
# Several nodes made of namespaces: node loss, cut links, stalls, lossy links, Slurm across nodes (needs root).
scripts/multinode-e2e.sh "$build_dir"

if [ "${AUTOSNAP_SKIP_SANITIZERS:-0}" != 1 ]; then
  scripts/sanitize.sh address
fi
