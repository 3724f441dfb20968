#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan + fuzzer) in
# build-fuzz/ ($FUZZ_BUILD_DIR) and runs every fuzz_* target found there for $FUZZ_SECONDS
# seconds each (default 60), printing each target's execution count.
# Seeds: tests/fuzz/corpus_<name>/ (committed) plus, for fuzz_gguf, the real
# stories260K-Q4_0.gguf when $KESTREL_SHARED_DIR (default ../shared) has it.
# A dictionary tests/fuzz/<target>.dict is used when present. New corpus
# entries go to build-fuzz/corpus/<target>/, crashes to build-fuzz/artifacts/.
# Needs clang and libclang-rt-14-dev (Debian) or the matching compiler-rt.
# Exit status 1 if any target found a crash, leak, timeout or failed to build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
secs=${FUZZ_SECONDS:-60}
shared=${KESTREL_SHARED_DIR:-$root/../shared}
bdir=${FUZZ_BUILD_DIR:-build-fuzz}

if [ ! -f "$bdir/build.ninja" ]; then
    CC=${FUZZ_CC:-clang} meson setup "$bdir" --buildtype=debugoptimized \
        -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
targets=$(ninja -C "$bdir" -t targets all |
    sed -n 's|^\(tests/fuzz/fuzz_[A-Za-z0-9_]*\): .*|\1|p' | sort -u)
# FUZZ_ONLY=fuzz_tokenizer runs one target
if [ -n "${FUZZ_ONLY:-}" ]; then
    targets=$(printf '%s\n' $targets | grep "/${FUZZ_ONLY}\$" || true)
fi
if [ -z "$targets" ]; then
    echo "fuzz: no fuzz_* targets in $bdir" >&2
    exit 1
fi
# shellcheck disable=SC2086
ninja -C "$bdir" $targets

status=0
for t in $targets; do
    exe=$bdir/$t
    name=$(basename "$t")
    [ -f "$exe" ] && [ -x "$exe" ] || continue
    corpus=$bdir/corpus/$name
    mkdir -p "$corpus" "$bdir/artifacts"
    args=(-max_total_time="$secs" -timeout=25 -rss_limit_mb=2048
          -print_final_stats=1 -artifact_prefix="$bdir/artifacts/$name-")
    [ -f "tests/fuzz/$name.dict" ] && args+=(-dict="tests/fuzz/$name.dict")
    dirs=("$corpus")
    seeds=tests/fuzz/corpus_${name#fuzz_}
    [ -d "$seeds" ] && dirs+=("$seeds")
    if [ "$name" = fuzz_gguf ] &&
       [ -f "$shared/models/stories260K/stories260K-Q4_0.gguf" ]; then
        cp -f "$shared/models/stories260K/stories260K-Q4_0.gguf" \
            "$corpus/stories260K-Q4_0.gguf"
    fi
    log=$bdir/$name.log
    echo "== $name: ${secs}s ==" >&2
    rc=0
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
        "$exe" "${args[@]}" "${dirs[@]}" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 || true)
    echo "$name: ${execs:-?} executions in ${secs}s, ${cov:-cov: ?}, exit $rc"
    if [ "$rc" -ne 0 ]; then
        status=1
        tail -40 "$log" >&2
    fi
done
exit $status
