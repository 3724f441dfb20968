#!/usr/bin/env bash
# Regenerate tests/golden/<model-stem>.json with the llama.cpp peer.
# Not run by the tests; see tests/golden/README.md.
#
#   tests/golden/make-golden.sh [THREADS]      (default 2)
#
# Needs the peer (ci/peer.sh), the real models (ci/fetch-models.sh) and the
# stories260K models under ${KESTREL_SHARED_DIR:-/work/shared}/models.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEER_DIR="${KESTREL_PEER_DIR:-$HOME/.cache/kestrel/peer}"
MODEL_DIR="${KESTREL_MODEL_DIR:-$HOME/.cache/kestrel/models}"
SHARED="${KESTREL_SHARED_DIR:-/work/shared}"
GREEDY="$PEER_DIR/bin/peer_greedy"
THREADS="${1:-2}"
N_PREDICT=64

die() { printf 'make-golden: error: %s\n' "$*" >&2; exit 1; }

[ -x "$GREEDY" ] || die "no $GREEDY; run ci/peer.sh first"

MODELS=(
    "$SHARED/models/stories260K/stories260K-f32.gguf"
    "$SHARED/models/stories260K/stories260K-Q8_0.gguf"
    "$SHARED/models/stories260K/stories260K-Q4_0.gguf"
    "$SHARED/models/stories260K/stories260K-Q4_K_M.gguf"
    "$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
    "$MODEL_DIR/gemma-3-270m-q4_k_m.gguf"
)

for m in "${MODELS[@]}"; do
    [ -f "$m" ] || die "missing model $m"
    stem="$(basename "$m" .gguf)"
    out="$HERE/$stem.json"
    printf 'make-golden: %s\n' "$stem" >&2
    "$GREEDY" -m "$m" -t "$THREADS" -n "$N_PREDICT" \
        -p "The capital of France is" \
        -p "Once upon a time" \
        -p "def fibonacci(n):" > "$out.tmp"
    python3 -m json.tool "$out.tmp" > /dev/null || die "$out.tmp is not valid JSON"
    mv -f "$out.tmp" "$out"
done
