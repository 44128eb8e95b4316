#!/usr/bin/env bash
# The main command: install what is missing, build, run the example.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
build_dir=${AUTOSNAP_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DAUTOSNAP_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target seed_cases
out=$(mktemp -d)
"$build_dir/examples/seed_cases" "$out"
echo
echo "Python reads the same files:"
/usr/bin/python3 -c "import torch, sys; c = torch.load(sys.argv[1]); print('  checkpoint.pt keys:', sorted(c), 'epoch', c['epoch'])" "$out/checkpoint.pt"
rm -rf "$out"
