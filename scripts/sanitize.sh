#!/usr/bin/env bash
# Sanitizer runs, called by scripts/test.sh (address) and scripts/crash-soak.sh (both).
#
#   scripts/sanitize.sh address   clang ASan+UBSan build: the whole test suite (the unit tests
#                                 in one process per core) and every
#                                 libFuzzer target for $AUTOSNAP_FUZZ_SECONDS (30) each. Left
#                                 out: the SIGKILL loops (they restart uninstrumented-speed
#                                 processes hundreds of times; test.sh runs them), the libfiu
#                                 runs (LeakSanitizer reports fiu's own preload library, and
#                                 injected faults break ASan's symbolizer too) and
#                                 the install test (it links the instrumented library into an
#                                 uninstrumented program), and the multi-rank jobs (ClusterJob,
#                                 C10dCoordinator: dozens of instrumented processes, and Debian's
#                                 Gloo, whose threads do the work there, is not instrumented;
#                                 test.sh runs them).
#   scripts/sanitize.sh thread    TSan build: the daemon and concurrency tests (with the
#                                 threaded staging copies and background O_DIRECT writes), the
#                                 two-rank commits of CrashPoints and the two-rank c10d job in one
#                                 process of StallRecovery (Gloo groups, the lifeline's thread,
#                                 groups formed again after a stall)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-address}
jobs=$(nproc)
fuzz_seconds=${AUTOSNAP_FUZZ_SECONDS:-30}
scripts/setup.sh

# Debian's LibTorch is not instrumented: leaks and races inside it are not ours.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$PWD/tests/sanitizers/ubsan.supp"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/sanitizers/tsan.supp"

case "$mode" in
  address)
    build=${AUTOSNAP_ASAN_BUILD_DIR:-build-asan}
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DAUTOSNAP_SANITIZE=address -DAUTOSNAP_BUILD_FUZZERS=ON -DAUTOSNAP_BUILD_TESTS=ON >/dev/null
    # The test binaries (with the programs they start) and the fuzzers; not the benchmark.
    fuzz_targets="shard_reader manifest config control"
    # shellcheck disable=SC2046 # one target per word
    cmake --build "$build" -j "$jobs" --target autosnap_unit_tests autosnap_e2e_tests $(printf 'fuzz_%s ' $fuzz_targets)
    # The unit tests run in one process per core (gtest shards), not one per
    # test as ctest would: an instrumented process takes ~3 s to start, 200 times over.
    shards=()
    for shard in $(seq 0 $((jobs - 1))); do
      (cd "$build/tests" && GTEST_TOTAL_SHARDS=$jobs GTEST_SHARD_INDEX=$shard ./autosnap_unit_tests \
        > "../unit-shard-$shard.log" 2>&1) &
      shards+=($!)
    done
    unit_failed=0
    for shard in $(seq 0 $((jobs - 1))); do
      if ! wait "${shards[$shard]}"; then
        tail -n 100 "$build/unit-shard-$shard.log"
        echo "unit tests failed under ASan+UBSan (shard $shard of $jobs); the whole log: $build/unit-shard-$shard.log" >&2
        unit_failed=1
      fi
      grep -h '^\[  PASSED  \]' "$build/unit-shard-$shard.log" || true
    done
    [ "$unit_failed" = 0 ]
    (cd "$build" && ctest --output-on-failure -j "$jobs" -LE unit \
      -E 'ResumeAfterKill\.|AtomicSave\.|GanResume\.RandomKills|Libfiu|InstallConsumer|ClusterJob\.|C10dCoordinator\.')
    summary="$build/fuzz-summary.txt"
    : > "$summary"
    for target in $fuzz_targets; do
      corpus="$build/fuzz-corpus/$target"
      mkdir -p "$corpus"
      cp -n tests/fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null || true
      max_len=4096
      [ "$target" = control ] && max_len=9000
      [ "$target" = shard_reader ] && max_len=16384
      echo "fuzzing $target for ${fuzz_seconds}s"
      "$build/tests/fuzz/fuzz_$target" "$corpus" -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -timeout=10 \
        -max_len="$max_len" -print_final_stats=1 -close_fd_mask=3 -artifact_prefix="$build/" \
        > "$build/fuzz-$target.log" 2>&1 || {
        tail -n 60 "$build/fuzz-$target.log"
        echo "fuzz_$target found a problem; the input is in $build/ (crash-*/leak-*/timeout-*)" >&2
        exit 1
      }
      runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/fuzz-$target.log" | grep -o '[0-9]*$')
      echo "fuzz_$target: $runs executions in ${fuzz_seconds}s, no crash, leak, hang or excessive allocation" | tee -a "$summary"
    done
    ;;
  thread)
    build=${AUTOSNAP_TSAN_BUILD_DIR:-build-tsan}
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DAUTOSNAP_SANITIZE=thread -DAUTOSNAP_BUILD_TESTS=ON >/dev/null
    cmake --build "$build" -j "$jobs" --target autosnap_unit_tests autosnap_e2e_tests save_loop restore_crasher train_mlp autosnap_cli
    (cd "$build" && ctest --output-on-failure -j "$jobs" -R 'Snapshotter|Control|CrashPoints|FaultInjection|Store|Staging|DeferredCopies|PosixFileSystem|StallRecovery|Agreement')
    ;;
  *)
    echo "usage: scripts/sanitize.sh address|thread" >&2
    exit 2
    ;;
esac
