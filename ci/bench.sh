#!/usr/bin/env bash
# Kestrel against llama.cpp on the same machine, files and thread count, in
# one run: prefill (pp) and decode (tg) tokens/s as medians, their ratios,
# and decode bandwidth use (bytes of weights read per token x tg /
# bandwidth; for a mixture of experts, of the active experts only).
#
#   ci/bench.sh [THREADS] [REPS]        (default 2 threads, 5 repetitions)
#
# Needs a built tree (ci/build.sh), the models (ci/fetch-models.sh all) and
# the peer (ci/peer.sh). Writes a synthetic ~110M llama in Q4_0 to the model
# cache the first time. KESTREL_BW_GBS overrides the memory bandwidth used
# for the percentages (default 20, measured here with 2 threads). Speed is
# never asserted: this is a report, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
reps=${2:-5}
models="${KESTREL_MODEL_DIR:-$HOME/.cache/kestrel/models}"
peer="${KESTREL_PEER_DIR:-$HOME/.cache/kestrel/peer}/build/bin/llama-bench"
bw=${KESTREL_BW_GBS:-20}
[ -x "$peer" ] || { echo "bench: no llama-bench at $peer; run ci/peer.sh" >&2; exit 1; }
[ -x build/cli/kestrel ] || { echo "bench: build first (ci/build.sh)" >&2; exit 1; }
synth="$models/synthetic-llama-110M-Q4_0.gguf"
[ -f "$synth" ] || build/tests/tools/ks-synth "$synth" llama Q4_0
extra=()
[ -n "${KESTREL_BENCH_EXTRA:-}" ] && read -r -a extra <<< "$KESTREL_BENCH_EXTRA"

printf '| model | MB | kestrel pp | llama.cpp pp | ratio | kestrel tg | llama.cpp tg | ratio | tg bandwidth use |\n'
printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
for m in "$models/SmolLM2-135M-Instruct.Q4_1.gguf" "$models/gemma-3-270m-q4_k_m.gguf" \
         "$synth" "${extra[@]}"; do
    [ -f "$m" ] || { echo "bench: $m absent, skipped" >&2; continue; }
    k=$(build/cli/kestrel bench -m "$m" -t "$threads" -p 64 -n 32 -r "$reps" --json 2>/dev/null)
    l=$("$peer" -m "$m" -t "$threads" -p 64 -n 32 -r "$reps" -o json 2>/dev/null)
    python3 - "$m" "$bw" "$k" "$l" <<'PY'
import json, os, sys
path, bw, k, l = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
import statistics
def med(t):  # llama-bench reports each repetition in samples_ts
    return statistics.median(t["samples_ts"]) if t.get("samples_ts") else t["avg_ts"]
pp = next(med(t) for t in l if t["n_prompt"] > 0)
tg = next(med(t) for t in l if t["n_gen"] > 0)
size = os.path.getsize(path)
# decode reads the weights but the embedding table (and of a mixture of
# experts only the active experts): Kestrel's active_bytes
active = k.get("active_bytes") or size
print(f"| {os.path.basename(path)} | {size/1e6:.0f} | {k['pp_tps']:.1f} | {pp:.1f} | "
      f"{k['pp_tps']/pp:.2f} | {k['tg_tps']:.1f} | {tg:.1f} | {k['tg_tps']/tg:.2f} | "
      f"{active*k['tg_tps']/(bw*1e9)*100:.0f} % (llama.cpp {active*tg/(bw*1e9)*100:.0f} %) |")
PY
done
