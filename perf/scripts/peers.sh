#!/usr/bin/env bash
# perf-peers: Shardline (fsync never; fsync always) against Tansu 0.6.0 (memory store; SQLite
# store, WAL with synchronous=normal), the same
# bench workload: 1 KiB messages, LATENCY_FLAGS (8 partitions, 2 producers, 64 KiB batches,
# linger 1 ms), fixed open-loop rates PERF_PEER_RATES (default 1000 5000 20000) and the maximum
# (rate 0). Interleaved: for each rate every system runs once, the order rotating, PERF_ROUNDS
# rounds (default 2); each run on a fresh broker (Shardline and Tansu SQLite: a fresh data
# directory; Tansu memory: an empty store). Installs Tansu into perf/out/peers if it is missing
# (~25 min).
source "$(dirname "$0")/lib.sh"

ROUNDS="${PERF_ROUNDS:-2}"
read -ra RATES <<<"${PERF_PEER_RATES:-1000 5000 20000} 0"
read -ra SYSTEMS <<<"${PERF_PEER_SYSTEMS:-shardline-never shardline-always tansu tansu-sqlite}"
perf_build
perf_ensure_tansu
# Not "peers": perf/out/peers is where Tansu is installed.
perf_scenario peer-compare

rate_name() { if (($1 == 0)); then echo max; else echo "r$1"; fi; }

# peers_run SYSTEM RATE ROUND: one run on a fresh broker (perf_rotate's step).
peers_run() {
    local system="$1" rate="$2" round="$3"
    perf_log "round $round: $system at $(rate_name "$rate")"
    series_start "$system" "$system-$(rate_name "$rate")-r$round"
    run_bench "$system/$(rate_name "$rate")-round-$round" --message-size 1024 "${LATENCY_FLAGS[@]}" --rate "$rate" \
        "${SERIES_BENCH_FLAGS[@]}" || true
    broker_stop
}

if perf_measuring; then
    perf_batch_begin
    for ((round = 1; round <= ROUNDS; round++)); do perf_rotate "$round" peers_run; done
    perf_batch_end
fi

perf_summary_head "Peers: Shardline against Tansu $TANSU_VERSION (1 KiB messages)" "just perf-peers (perf/scripts/peers.sh, PERF_ROUNDS=$ROUNDS)"
{
    echo "Workload: \`--message-size 1024 ${LATENCY_FLAGS[*]} --rate R\` for R in ${RATES[*]} (0 = maximum). Shardline: \`--shards 2 --cpus 0-1 --fsync never|always\`; Tansu: \`tansu broker --storage-engine memory://tansu/\` (no disk) and \`--storage-engine sqlite://tansu.db\` (file in a fresh data directory; WAL, synchronous=normal)."
    for system in "${SYSTEMS[@]}"; do
        echo
        echo "### $(series_title "$system")"
        echo
        perf_table_header
        for rate in "${RATES[@]}"; do
            for ((round = 1; round <= ROUNDS; round++)); do
                perf_row "$system/$(rate_name "$rate")-round-$round" "$(rate_name "$rate"), round $round"
            done
        done
    done
    echo
    echo "Medians over the rounds (publish latency, ms; throughput msg/s):"
    echo
    header="| offered |"
    rule="| --- |"
    for system in "${SYSTEMS[@]}"; do
        header+=" $(series_title "$system"): msg/s | p50 | p99 | p99.9 |"
        rule+=" ---: | ---: | ---: | ---: |"
    done
    echo "$header"
    echo "$rule"
    for rate in "${RATES[@]}"; do
        row="| $(rate_name "$rate") |"
        for system in "${SYSTEMS[@]}"; do
            dir="$(mktemp -d)"
            find "$OUT/$system" -maxdepth 1 -name "$(rate_name "$rate")-round-*.json" ! -name '*.cpu.json' -exec cp -t "$dir" {} + 2>/dev/null || true
            row+=" $(perf_round "$(perf_median "$dir" .produce.messages_per_s)" 0) | $(perf_round "$(perf_median "$dir" .latency_ms.publish.p50_ms)" 3) | $(perf_round "$(perf_median "$dir" .latency_ms.publish.p99_ms)" 3) | $(perf_round "$(perf_median "$dir" .latency_ms.publish.p99_9_ms)" 3) |"
            rm -rf "$dir"
        done
        echo "$row"
    done
} >>"$OUT/summary.md"
perf_finish
