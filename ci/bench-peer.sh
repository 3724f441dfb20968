#!/usr/bin/env bash
# Benchmark a model with the llama.cpp peer built by ci/peer.sh.
#
#   ci/bench-peer.sh MODEL.gguf THREADS
#
# Runs `llama-bench -m MODEL -t THREADS -p 64 -n 32 -r 5 -o json` (prefill of
# 64 tokens, decode of 32, 5 repetitions) and prints llama-bench's JSON on
# stdout, then a one-line summary per test on stderr. The peer is looked up in
# ${KESTREL_PEER_DIR:-$HOME/.cache/kestrel/peer}/build/bin; run ci/peer.sh
# first if it is not there.
set -euo pipefail

PEER_DIR="${KESTREL_PEER_DIR:-$HOME/.cache/kestrel/peer}"
BENCH="$PEER_DIR/build/bin/llama-bench"

die() { printf 'bench-peer: error: %s\n' "$*" >&2; exit 1; }

if [ $# -ne 2 ]; then
    printf 'usage: %s MODEL.gguf THREADS\n' "$0" >&2
    exit 2
fi
MODEL="$1"
THREADS="$2"
[ -f "$MODEL" ] || die "no model file at $MODEL"
MODEL="$(readlink -f "$MODEL")"   # llama-bench runs from the peer dir
case "$THREADS" in
    ''|*[!0-9]*|0) die "THREADS must be a positive integer (got '$THREADS')" ;;
esac
[ -x "$BENCH" ] || die "no llama-bench at $BENCH; build the peer with ci/peer.sh (or set KESTREL_PEER_DIR)"

out="$(cd "$PEER_DIR" && "$BENCH" -m "$MODEL" -t "$THREADS" -p 64 -n 32 -r 5 -o json)" ||
    die "llama-bench failed"
printf '%s\n' "$out"

# Summary for people; the JSON above is the record.
if command -v python3 >/dev/null 2>&1; then
    printf '%s' "$out" | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    kind = "pp%d" % r["n_prompt"] if r["n_prompt"] else "tg%d" % r["n_gen"]
    print("bench-peer: %s %s t=%d: %.2f +- %.2f tokens/s"
          % (r["model_filename"].rsplit("/", 1)[-1], kind, r["n_threads"],
             r["avg_ts"], r["stddev_ts"]), file=sys.stderr)
' || true
fi
