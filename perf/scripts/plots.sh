#!/usr/bin/env bash
# perf-plots: the SVG charts of docs/benchmarks.md, drawn by perf-plot from the recorded baselines
# (perf/baselines/, the default) or from the last runs (PERF_PLOT_FROM=perf/out). Writes into
# PERF_PLOT_DIR (default docs/plots). Charts whose results are missing are skipped with a note.
source "$(dirname "$0")/lib.sh"

FROM="${PERF_PLOT_FROM:-$PERF_ROOT/perf/baselines}"
PLOTS="${PERF_PLOT_DIR:-$PERF_ROOT/docs/plots}"
perf_build
mkdir -p "$PLOTS"

# The latency curve: every series directory that has results.
series=()
for name in shardline-never shardline-always shardline-never-tmpfs tansu; do
    # A series recorded apart lives in curve-tmpfs/ (PERF_CURVE_NAME=curve-tmpfs).
    for dir in "$FROM/curve/$name" "$FROM/curve-tmpfs/$name"; do
        if [[ -d "$dir" ]]; then
            series+=(--series "$(series_title "$name")=$dir")
            break
        fi
    done
done
if ((${#series[@]} > 0)); then
    "$PLOT_BIN" curve --out "$PLOTS/latency-vs-throughput.svg" \
        --title "Publish latency vs throughput: 1 KiB, 8 partitions, 2 producers, open loop" "${series[@]}"
else
    perf_log "no curve results in $FROM/curve: skipping latency-vs-throughput.svg"
fi

shard_series=()
for medium in disk tmpfs; do
    if [[ -d "$FROM/shards/$medium" ]]; then shard_series+=(--series "data on $medium=$FROM/shards/$medium"); fi
done
if ((${#shard_series[@]} > 0)); then
    "$PLOT_BIN" shards --out "$PLOTS/shard-sweep.svg" \
        --title "Shard sweep: produce 1 KiB as fast as possible, fsync never (bar: median; dots: runs)" "${shard_series[@]}"
else
    perf_log "no shard sweep results in $FROM/shards: skipping shard-sweep.svg"
fi
