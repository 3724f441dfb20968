#!/usr/bin/env bash
# Every test: unit and model tests under meson (warnings as errors), the
# same unit tests under ASan+UBSan, the aarch64 cross build's tests under
# qemu (ci/arm.sh), the example program built against the
# installed library through pkg-config, and the fuzzers for a bounded time.
# Installs what it needs and fetches the real models first. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash ci/setup.sh
bash ci/fetch-models.sh all
bash ci/fetch-vocab.sh >/dev/null

passed=0 failed=0 skipped=0
tally() {  # adds up the counts meson test printed in log file $1
    local ok fail skip
    ok=$(grep -E '^Ok:' "$1" | awk '{s+=$2} END {print s+0}')
    fail=$(grep -E '^(Fail|Unexpected Pass|Timeout):' "$1" | awk '{s+=$NF} END {print s+0}')
    skip=$(grep -E '^Skipped:' "$1" | awk '{s+=$2} END {print s+0}')
    passed=$((passed + ok)) failed=$((failed + fail)) skipped=$((skipped + skip))
}
run_meson_tests() {  # $1 build dir, rest: extra meson test args
    local dir=$1 log
    shift
    log=$(mktemp)
    if meson test -C "$dir" --print-errorlogs "$@" 2>&1 | tee "$log"; then :; fi
    tally "$log"
    rm -f "$log"
}

echo "== build and unit/model tests ==" >&2
[ -f build-test/build.ninja ] ||
    meson setup build-test --buildtype=debugoptimized -Dwerror=true \
        --prefix="$root/build-test/prefix" >/dev/null
ninja -C build-test
run_meson_tests build-test

echo "== ASan + UBSan build of the unit tests ==" >&2
[ -f build-asan/build.ninja ] ||
    CC=clang meson setup build-asan --buildtype=debug -Dwerror=true \
        -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
ninja -C build-asan
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# Model tests and the real-time closed loop need optimized code: they run
# in the release-like build above.
run_meson_tests build-asan --no-suite model --no-suite vk --no-suite realtime \
    --timeout-multiplier 4
# The Vulkan driver (lavapipe, LLVM) leaks from libraries it has unloaded,
# which LeakSanitizer cannot attribute; memory errors are still caught.
ASAN_OPTIONS=detect_leaks=0 run_meson_tests build-asan --suite vk --no-suite model --timeout-multiplier 4

echo "== aarch64 cross build, tests under qemu (at most 8 minutes) ==" >&2
log=$(mktemp) before=$failed arm_rc=0
timeout 480 bash ci/arm.sh 2>&1 | tee "$log" || arm_rc=$?
tally "$log"
rm -f "$log"
# a build failure or the time limit counts once, as meson counted nothing
[ "$arm_rc" -eq 0 ] || [ "$failed" -gt "$before" ] || failed=$((failed + 1))

echo "== example through pkg-config ==" >&2
ninja -C build-test install >/dev/null
bash ci/example.sh "$root/build-test/prefix" && passed=$((passed + 1)) || failed=$((failed + 1))

echo "== fuzzers (${FUZZ_SECONDS:-60} s each) ==" >&2
if bash ci/fuzz.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

echo "kestrel tests: $passed passed, $failed failed, $skipped skipped" >&2
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
