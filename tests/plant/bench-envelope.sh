#!/bin/sh
# The governor on issue 14's plants, driven by the real CPU time of a
# decode: a synthetic ~134M Q4_0 model, N tokens (default 1500) per plant.
# Prints a markdown table (one row per plant) and renders the traces of
# the 2 s and the two-time-constant plants with ci/plot-trace.sh. Takes
# about a minute per plant; timings on a shared machine are noisy.
#   tests/plant/bench-envelope.sh BUILD_DIR [OUT_DIR] [N_TOKENS] [PLANT...]
set -eu
build=${1:?usage: $0 BUILD_DIR [OUT_DIR] [N_TOKENS] [PLANT...]}
out=${2:-$build/envelope}
n=${3:-1500}
[ $# -gt 3 ] && shift 3 || set --
plants=${*:-tau1 tau2 tau10 tau40 die2-board30 tau2-q1 tau2-x1.5 cap3w}
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
model=$out/synth-134m-q4_0.gguf
[ -s "$model" ] || "$build/tests/tools/ks-synth" "$model" >/dev/null
echo "| plant | peak after approach (C) | limit | 2nd-half tokens/s | best fixed | % of best | mean W | cap W | tokens/J | 10 s forecast MAE (C) | forecasts | headroom callbacks | s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for p in $plants; do
    row=$(nice "$build/tests/plant/bench_envelope" "$model" "$p" "$n" \
          "$out/$p.csv" 2>"$out/$p.log" | grep '^ROW|') ||
        { echo "| $p | failed: see $out/$p.log |"; continue; }
    echo "$row" | awk -F'|' '{ printf "| %s | %s | %s | %s | %s (%s thr) | %s | %s | %s | %s | %s | %s | %s | %s |\n",
        $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 }'
done
for p in tau2 die2-board30; do
    [ -s "$out/$p.csv" ] && sh "$root/ci/plot-trace.sh" "$out/$p.csv" "$out/$p.png" >/dev/null &&
        echo "plot: $out/$p.png"
done
