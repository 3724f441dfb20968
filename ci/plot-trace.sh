#!/bin/sh
# Renders a governor trace (CSV from scheduler/trace.c) to a PNG with
# gnuplot: temperature against its limit, power against the budget, and
# tokens/s with the CPU thread count, over time.
#   ci/plot-trace.sh TRACE.csv [OUT.png]     (default: TRACE.png)
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 TRACE.csv [OUT.png]" >&2
    exit 2
fi
csv=$1
png=${2:-${csv%.csv}.png}
[ -r "$csv" ] || { echo "$0: cannot read $csv" >&2; exit 1; }
command -v gnuplot >/dev/null 2>&1 ||
    { echo "$0: gnuplot is not installed (apt-get install gnuplot-nox)" >&2; exit 1; }
# Quote for gnuplot's single-quoted strings (a ' is written '').
q() { printf "%s" "$1" | sed "s/'/''/g"; }

gnuplot <<EOF_GP
set terminal pngcairo size 1200,900 font ',10' noenhanced
set output '$(q "$png")'
set datafile separator ','
set key top right
set grid
set lmargin 10
set autoscale xfix
set multiplot layout 3,1 title '$(q "$(basename "$csv")")'
set ylabel 'C'
plot '$(q "$csv")' using 1:3 skip 1 with lines lw 2 title 'temperature', \
     '' using 1:10 skip 1 with lines dt 2 lw 2 title 'limit'
set ylabel 'W'
plot '$(q "$csv")' using 1:4 skip 1 with lines title 'power', \
     '' using 1:5 skip 1 with lines lw 2 title 'budget'
set ylabel 'tokens/s'
set y2label 'threads'
set y2tics
stats '$(q "$csv")' using 6 skip 1 nooutput
set y2range [0:STATS_max + 1]
set ytics nomirror
set xlabel 'time (s)'
plot '$(q "$csv")' using 1:2 skip 1 with lines lw 2 title 'tokens/s', \
     '' using 1:6 skip 1 axes x1y2 with steps title 'threads'
unset multiplot
EOF_GP
echo "$png"
