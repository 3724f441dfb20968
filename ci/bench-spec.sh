#!/usr/bin/env bash
# Speculative decoding benchmarks of issue 10, greedy, on the CPU:
#
#   ci/bench-spec.sh pair [N] [R]   the five coding prompts with the
#       real pair (Qwen2.5-Coder 1.5B Q4_K_M target, 0.5B draft): Kestrel's
#       target alone, Kestrel with the draft (lookup combined), and the
#       peer's llama-completion and llama-speculative when it is built
#   ci/bench-spec.sh edit [N] [R]   the edit task (tests/data/edit-task):
#       the target alone and prompt lookup
#
# N new tokens per prompt (default 256), the median of R runs (default 3).
# Environment: THREADS (2), TARGET, DRAFT (the model files; DRAFT may be a
# requantized draft, e.g. from `kestrel quantize ... Q4_0`), KS (the
# kestrel binary, default build/cli/kestrel), DRAFT_MAX (8).
# Prints one line per prompt and a mean; timings on a shared machine are
# noisy, so say so with the figures.
set -euo pipefail

MODELS="${KESTREL_MODEL_DIR:-$HOME/.cache/kestrel/models}"
TARGET="${TARGET:-$MODELS/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf}"
DRAFT="${DRAFT:-$MODELS/qwen2.5-coder-0.5b-instruct.gguf}"
KS="${KS:-build/cli/kestrel}"
THREADS="${THREADS:-2}"
DRAFT_MAX="${DRAFT_MAX:-8}"
PEER="$(ci/peer.sh --print 2>/dev/null || true)"
MODE="${1:-pair}"
N="${2:-256}"
R="${3:-3}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

die() { printf 'bench-spec: error: %s\n' "$*" >&2; exit 1; }
[ -x "$KS" ] || die "no kestrel at $KS (build first)"
[ -f "$TARGET" ] || die "no target model at $TARGET (ci/fetch-models.sh)"

# ChatML, as the Qwen2.5 instruct models' template writes one user turn
chat() {
    printf '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'
    printf '<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n' "$1"
}

# median of the numbers on stdin
median() { sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

# kestrel run --json ARGS...: prints "decode_tps accept n_lookup", the ids to $TMP/ids
ks_run() {
    "$KS" run -m "$TARGET" -f "$TMP/prompt" -n "$N" -t "$THREADS" --backend cpu --temp 0 \
        --ignore-eos --no-governor --json "$@" > "$TMP/out.json" 2> "$TMP/err" ||
        die "kestrel run failed: $(tail -3 "$TMP/err")"
    python3 - "$TMP/out.json" "$TMP/ids" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
open(sys.argv[2], "w").write(" ".join(map(str, d["ids"] if "ids" in d else d.get("generated", []))))
s = d["stats"]
print("%.3f %.3f %d" % (s["decode_tps"], s.get("accept_rate", 0), s.get("n_lookup", 0)))
PY
}

# llama.cpp: decode tokens/s from its timing lines
peer_plain() {
    "$PEER/llama-completion" -m "$TARGET" -f "$TMP/prompt" -n "$N" -t "$THREADS" --temp 0 \
        -no-cnv --ignore-eos -c 4096 > /dev/null 2> "$TMP/perr" || { echo 0; return; }
    grep -E "eval time" "$TMP/perr" | grep -v prompt | sed -E 's/.*, *([0-9.]+) tokens per second.*/\1/' | tail -1
}
peer_spec() {
    "$PEER/llama-speculative" -m "$TARGET" -md "$DRAFT" -f "$TMP/prompt" -n "$N" -t "$THREADS" \
        --temp 0 --spec-draft-n-max "$DRAFT_MAX" -c 4096 > /dev/null 2> "$TMP/perr" || { echo 0; return; }
    grep -E "decoded .* tokens in .* speed:" "$TMP/perr" | sed -E 's/.*speed: *([0-9.]+) t\/s.*/\1/' | tail -1
}

# rep CMD...: the median over R runs of the first number CMD prints
rep() { for _ in $(seq "$R"); do "$@" | awk '{print $1}'; done | median; }

case "$MODE" in
pair)
    [ -f "$DRAFT" ] || die "no draft model at $DRAFT"
    prompts=(
        "Write a Python function that returns the n-th Fibonacci number iteratively, with a docstring and type hints."
        "Write a C function that reverses a singly linked list in place."
        "Explain what a binary search does and write it in JavaScript."
        "Write a SQL query that returns the ten customers with the highest total order value from tables customers(id, name) and orders(id, customer_id, amount)."
        "Write a bash script that counts the lines of every .c file in a directory tree and prints the total."
    )
    printf 'prompt\tks_target\tks_spec\tspeedup\taccept\tpeer_target\tpeer_spec\tvs_best_peer\n'
    i=0
    for p in "${prompts[@]}"; do
        i=$((i + 1))
        chat "$p" > "$TMP/prompt"
        base=$(rep ks_run --spec off); cp "$TMP/ids" "$TMP/ids.plain"
        spec=$(rep ks_run --draft "$DRAFT" --draft-max "$DRAFT_MAX")
        acc=$(ks_run --draft "$DRAFT" --draft-max "$DRAFT_MAX" | awk '{print $2}')
        cmp -s "$TMP/ids" "$TMP/ids.plain" || echo "bench-spec: prompt $i: tokens differ from target-only greedy!" >&2
        pp=0; ps=0
        if [ -n "$PEER" ] && [ -x "$PEER/llama-speculative" ]; then
            pp=$(rep peer_plain); ps=$(rep peer_spec)
        fi
        python3 -c "
b, s, pp, ps = $base, $spec, ${pp:-0}, ${ps:-0}
best = max(pp, ps)
print('%d\t%.2f\t%.2f\t%.2fx\t%.2f\t%.2f\t%.2f\t%s' % ($i, b, s, s / b, $acc, pp, ps,
      '%.2fx' % (s / best) if best > 0 else '-'))"
    done | tee "$TMP/table"
    awk -F'\t' '{b += $2; s += $3; sp += $4; n++} END {if (n) printf "mean\t%.2f\t%.2f\t%.2fx (mean of speed-ups)\n", b/n, s/n, sp/n}' "$TMP/table"
    ;;
edit)
    D="$(dirname "$0")/../tests/data/edit-task"
    chat "$(cat "$D/instruction.txt")

\`\`\`c
$(cat "$D/inventory.c")
\`\`\`" > "$TMP/prompt"
    base=$(rep ks_run --spec off); cp "$TMP/ids" "$TMP/ids.plain"
    look=$(rep ks_run --spec lookup --draft-max "$DRAFT_MAX")
    line=$(ks_run --spec lookup --draft-max "$DRAFT_MAX")
    cmp -s "$TMP/ids" "$TMP/ids.plain" || echo "bench-spec: edit: tokens differ from target-only greedy!" >&2
    python3 -c "print('edit task: target alone %.2f t/s, lookup %.2f t/s, %.2fx; acceptance %s' % ($base, $look, $look / $base, '$line'.split()[1]))"
    ;;
*)
    die "unknown mode $MODE (pair or edit)"
    ;;
esac
