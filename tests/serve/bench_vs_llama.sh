#!/usr/bin/env bash
# Benchmark (not a test): kestrel serve --parallel 2 against llama-server
# from the peer build (ci/peer.sh) with the same slots, threads and context,
# on the default model, in one run: C concurrent clients, each R streamed
# greedy chat requests of N tokens (bench_serve.py, the openai client from
# the serve-venv). Prints each server's aggregate tokens/s and p50/p99 TTFT.
# Usage: bench_vs_llama.sh KESTREL [THREADS] [CLIENTS] [REQUESTS] [TOKENS]
set -u
KESTREL=$1 T=${2:-2} C=${3:-8} R=${4:-3} N=${5:-32}
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$HOME/.cache/kestrel/models/SmolLM2-135M-Instruct.Q4_1.gguf
PY=$HOME/.cache/kestrel/serve-venv/bin/python
LLAMA=${LLAMA_SERVER:-$HOME/.cache/kestrel/peer/build/bin/llama-server}
[ -r "$MODEL" ] || { echo "no $MODEL (ci/fetch-models.sh)"; exit 1; }
"$PY" -c 'import openai' 2>/dev/null || { echo "no openai in $PY (run meson test serve_openai once)"; exit 1; }
LOG=$(mktemp)
trap 'rm -f "$LOG"; [ -n "${SP:-}" ] && kill $SP 2>/dev/null' EXIT
wait_up() {  # URL: until /health answers 200 (60 s)
    for _ in $(seq 1 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/health")" = 200 ] && return 0
        sleep 0.1
    done
    echo "server at $1 did not come up"; cat "$LOG"; exit 1
}
echo "model $(basename "$MODEL"), 2 slots, $T threads, ctx 2048 per slot; $C clients x $R requests x $N tokens"
"$KESTREL" serve -m "$MODEL" --backend cpu -t "$T" -c 2048 --parallel 2 --queue 64 --port 18971 2>"$LOG" &
SP=$!
wait_up http://127.0.0.1:18971
echo "kestrel serve:"
"$PY" "$HERE/bench_serve.py" http://127.0.0.1:18971/v1 "$C" "$R" "$N"
kill $SP; wait $SP 2>/dev/null; SP=
if [ -x "$LLAMA" ]; then
    # llama-server's -c is the total context, shared by its -np slots
    "$LLAMA" -m "$MODEL" -t "$T" -np 2 -c 4096 --port 18972 >"$LOG" 2>&1 &
    SP=$!
    wait_up http://127.0.0.1:18972
    echo "llama-server ($LLAMA):"
    "$PY" "$HERE/bench_serve.py" http://127.0.0.1:18972/v1 "$C" "$R" "$N"
else
    echo "no llama-server at $LLAMA (ci/peer.sh builds it)"
fi
