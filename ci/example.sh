#!/usr/bin/env bash
# Builds examples/simple.c against an installed Kestrel found through
# pkg-config and runs it on a small model. $1: the install prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$1
pcdir=$(dirname "$(find "$prefix" -name kestrel.pc | head -n 1)")
out=$(mktemp -d)
export PKG_CONFIG_PATH="$pcdir"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -o "$out/simple" examples/simple.c \
    $(pkg-config --cflags --libs kestrel)
model="${KESTREL_SHARED_DIR:-../shared}/models/stories260K/stories260K-f32.gguf"
if [ ! -f "$model" ]; then
    model="${KESTREL_MODEL_DIR:-$HOME/.cache/kestrel/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
fi
LD_LIBRARY_PATH="$(dirname "$(find "$prefix" -name 'libkestrel.so' | head -n 1)")" \
    "$out/simple" "$model" "Once upon a time" | tee "$out/text"
[ -s "$out/text" ]
rm -rf "$out"
