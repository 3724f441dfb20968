#!/usr/bin/env bash
# kestrel perplexity, calibrate and prune on a synthetic 4-layer model that
# ks-synth writes, with the test text of tests/data/text: exit statuses,
# the files they write, and the facts that tie them together (a model
# against its own saved log-probabilities agrees on every top token;
# pruning the last two layers is the exit after layer 1).
# Usage: test_quality.sh KESTREL KS_SYNTH TEXT
set -u

KS=$1
SYNTH=$2
TEXT=$3
TMP=$(mktemp -d /tmp/kestrel-test-quality-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
failures=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

run() {
    local name=$1
    shift
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
    echo $? >"$TMP/$name.rc"
}

expect_rc() {
    local got
    got=$(cat "$TMP/$1.rc")
    [ "$got" = "$2" ] || fail "$1: exit status $got, expected $2 (stderr: $(head -c 400 "$TMP/$1.err"))"
}

expect_in() {  # NAME out|err TEXT
    grep -qF -- "$3" "$TMP/$1.$2" || fail "$1: '$3' not in its std$2: $(head -c 400 "$TMP/$1.$2")"
}

M=$TMP/m.gguf
"$SYNTH" "$M" qwen2 Q8_0 64 4 4 2 96 300 >/dev/null || { echo "FAIL: ks-synth"; exit 1; }
Q=(-f "$TEXT" -c 32 --chunks 2 -t 1)

run ppl "$KS" perplexity -m "$M" "${Q[@]}" --kl-save "$TMP/base.kld"
expect_rc ppl 0
expect_in ppl out "Final estimate: PPL = "
[ -s "$TMP/base.kld" ] || fail "ppl: --kl-save wrote nothing"
run self "$KS" perplexity -m "$M" --kl-base "$TMP/base.kld" -t 1 --json
expect_rc self 0
expect_in self out '"top1":1.000000'
run exit1 "$KS" perplexity -m "$M" --kl-base "$TMP/base.kld" -t 1 --layers 2 --json
expect_rc exit1 0
run both "$KS" perplexity -m "$M" "${Q[@]}" --kl-save a --kl-base b
expect_rc both 2
run nofile "$KS" perplexity -m "$M" --kl-base "$TMP/absent.kld"
expect_rc nofile 1
expect_in nofile err "cannot open"

run cal "$KS" calibrate -m "$M" "${Q[@]}" -n 4
expect_rc cal 0
expect_in cal out "| L | top-1 agree | KL mean |"
expect_in cal out "| T | top-1 agree | KL mean |"

run prune "$KS" prune "$M" "$TMP/p.gguf" --drop-layers 3,2 "${Q[@]}"
expect_rc prune 0
expect_in prune out "without layers 3,2"
run pinfo "$KS" info "$TMP/p.gguf"
expect_in pinfo out "qwen2.block_count = 2"
# dropping the last two layers is the exit after layer 1: the same KL
kl_exit=$(sed -n 's/.*"kl_mean":\([^,]*\),.*/\1/p' "$TMP/exit1.out")
run pppl "$KS" perplexity -m "$TMP/p.gguf" --kl-base "$TMP/base.kld" -t 1 --json
kl_pruned=$(sed -n 's/.*"kl_mean":\([^,]*\),.*/\1/p' "$TMP/pppl.out")
[ -n "$kl_exit" ] && [ "$kl_exit" = "$kl_pruned" ] ||
    fail "KL of the exit after layer 1 ($kl_exit) is not that of the pruned model ($kl_pruned)"

run auto "$KS" prune "$M" "$TMP/a.gguf" --drop-layers auto:1 "${Q[@]}"
expect_rc auto 0
expect_in auto err "layer  3: KL"
expect_in auto out "quality on"
run bad "$KS" prune "$M" "$TMP/b.gguf" --drop-layers 9 "${Q[@]}"
expect_rc bad 1
expect_in bad err "layer 9 does not exist"
run noauto "$KS" prune "$M" "$TMP/b.gguf" --drop-layers auto
expect_rc noauto 2

[ "$failures" = 0 ] && echo "all quality CLI checks passed"
exit $((failures > 0))
