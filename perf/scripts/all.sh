#!/usr/bin/env bash
# perf-all: every scenario in turn, then the charts. Each scenario waits for a quiet machine and
# keeps its own measurement batches under 10 minutes. Without PERF_RECORD=1 the charts are drawn
# from these runs into perf/out/plots; with it every scenario is recorded into perf/baselines/ and
# the charts of docs/plots/ are redrawn from there.
set -euo pipefail
here="$(dirname "$0")"
root="$(cd "$here/../.." && pwd)"
bash "$here/shards.sh"
export PERF_SKIP_BUILD=1
# peers before curve: it installs Tansu if it is missing, and the curve then includes it.
for scenario in sizes fsync idle hop peers curve percore users; do
    bash "$here/$scenario.sh"
done
if [[ "${PERF_RECORD:-0}" == 1 ]]; then
    bash "$here/plots.sh"
else
    PERF_PLOT_FROM="$root/perf/out" PERF_PLOT_DIR="$root/perf/out/plots" bash "$here/plots.sh"
fi
