#!/usr/bin/env bash
# What the `metrics` and `tracing` features cost on the submit path: builds `benches/observe.rs`
# with the features off and on, runs the builds alternately (ROUNDS rounds, default 3, so
# the machine's drift hits both alike) and prints each one's jobs/s and its ratio to "off".
#   bash benches/observe.sh            # BENCH_SECS / BENCH_REPS as in observe.rs
set -euo pipefail
cd "$(dirname "$0")/.."
exe() { cargo bench --bench observe "$@" --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p'; }
off=$(exe)
on=$(exe --features metrics,tracing)
rounds=${ROUNDS:-3}
declare -A sum=([off]=0 [quiet]=0 [spans]=0)
for r in $(seq "$rounds"); do
    for mode in off quiet spans; do
        if [ "$mode" = off ]; then line=$("$off" --bench); else line=$("$on" --bench "$mode"); fi
        echo "round $r $mode: $line"
        rate=$(echo "$line" | awk '{print $2}')
        sum[$mode]=$(echo "${sum[$mode]} + $rate" | bc)
    done
done
echo
echo "| build | jobs/s (mean of $rounds rounds' medians) | vs off |"
echo "|---|---|---|"
for mode in off quiet spans; do
    mean=$(echo "${sum[$mode]} / $rounds" | bc -l)
    printf "| %s | %.0f | %.3f |\n" "$mode" "$mean" "$(echo "$mean / (${sum[off]} / $rounds)" | bc -l)"
done
