#!/usr/bin/env bash
# The long reliability soak (not part of scripts/test.sh): 1000 SIGKILLs of a
# training job with bitwise-identical resume, 10 minutes per fuzz target under
# ASan+UBSan, and the TSan build of the daemon and concurrency tests.
#   AUTOSNAP_KILLS (default 1000), AUTOSNAP_FUZZ_SECONDS (default 600)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=${AUTOSNAP_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DAUTOSNAP_BUILD_TESTS=ON >/dev/null
cmake --build "$build" -j "$(nproc)"

echo "== ${AUTOSNAP_KILLS:-1000} SIGKILLs with resume"
AUTOSNAP_KILLS=${AUTOSNAP_KILLS:-1000} "$build/tests/autosnap_e2e_tests" --gtest_filter='ResumeAfterKill.*'

echo "== ASan + UBSan: test suite and fuzzers"
AUTOSNAP_FUZZ_SECONDS=${AUTOSNAP_FUZZ_SECONDS:-600} scripts/sanitize.sh address

echo "== TSan: daemon and concurrency tests"
scripts/sanitize.sh thread
