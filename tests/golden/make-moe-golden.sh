#!/usr/bin/env bash
# Regenerate tests/golden/moe-<arch>.json: llama.cpp's logits at every
# position of a fixed prompt, and its greedy continuation, on the small
# synthetic MoE models that tests/model/test_moe.c writes itself (the same
# ks-synth parameters, seed 1). Not run by the tests; see README.md.
#
#   tests/golden/make-moe-golden.sh BUILD_DIR [THREADS]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEER_DIR="${KESTREL_PEER_DIR:-$HOME/.cache/kestrel/peer}"
GREEDY="${PEER_GREEDY:-$PEER_DIR/bin/peer_greedy}"
BUILD="${1:?usage: make-moe-golden.sh BUILD_DIR [THREADS]}"
THREADS="${2:-2}"
SYNTH="$BUILD/tests/tools/ks-synth"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

die() { printf 'make-moe-golden: error: %s\n' "$*" >&2; exit 1; }
[ -x "$GREEDY" ] || die "no $GREEDY; run ci/peer.sh first"
[ -x "$SYNTH" ] || die "no $SYNTH; build Kestrel first"

# arch type n_embd n_layers n_head n_head_kv n_ff n_vocab n_expert n_used n_ff_exp
# (keep in step with golden_models[] in tests/model/test_moe.c)
MODELS=(
    "qwen3moe Q4_K 256 2 4 2 512 320 8 2 256"
    "olmoe Q8_0 128 2 4 4 128 320 8 2 0"
    "qwen2moe Q4_0 128 2 4 2 192 320 8 2 64"
)
for spec in "${MODELS[@]}"; do
    set -- $spec
    arch=$1 type=$2
    shift 2
    "$SYNTH" "$TMP/$arch.gguf" "$arch" "$type" "$@" 0
    "$GREEDY" -m "$TMP/$arch.gguf" -t "$THREADS" -n 16 -a \
        -p "The capital of France is" > "$TMP/$arch.json"
    python3 -m json.tool "$TMP/$arch.json" > /dev/null || die "$arch: not valid JSON"
    mv -f "$TMP/$arch.json" "$HERE/moe-$arch.json"
    printf 'make-moe-golden: moe-%s.json\n' "$arch" >&2
done
