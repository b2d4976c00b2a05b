#!/usr/bin/env bash
# perf-fsync: the engine with --fsync always (2 shards). Per round: the maximum (rate 0), then an
# open-loop run at half that rate, each on a fresh engine and data directory, each with
# `bench --fsync-probe <data dir>` so the disk's write + fdatasync latency is measured in the same
# run, on the same file system, just before the load. 1 KiB messages, LATENCY_FLAGS (8 partitions,
# 2 producers, 64 KiB batches, linger PERF_FSYNC_LINGER_MS, default 1 ms). Then, per round, fixed
# open-loop rates PERF_FSYNC_RATES (default 1000 5000 20000) with --linger-ms 0 (no client-side
# wait: a message goes out as soon as an in-flight slot is free), also with the probe, to show
# the engine's fsync path against the disk where neither CPU nor batching hides it; each fixed
# rate also runs with --fsync never (same probe), so the cost of the fsync itself stands apart.
# Target: publish p99 at half the maximum <= 2 x the fdatasync p99.
source "$(dirname "$0")/lib.sh"

ROUNDS="${PERF_ROUNDS:-2}"
read -ra FIXED_RATES <<<"${PERF_FSYNC_RATES:-1000 5000 20000}"
LINGER_MS="${PERF_FSYNC_LINGER_MS:-1}"
FLAGS=(--partitions "$PERF_PARTITIONS" --producers "$PERF_PRODUCERS" --batch-bytes 65536 --linger-ms "$LINGER_MS")
FIXED_FLAGS=(--partitions "$PERF_PARTITIONS" --producers "$PERF_PRODUCERS" --batch-bytes 65536 --linger-ms 0)
perf_build
perf_scenario fsync

if perf_measuring; then
    perf_batch_begin
    for ((round = 1; round <= ROUNDS; round++)); do
        perf_log "round $round: maximum with fsync always"
        engine_start "max-r$round" --shards 2 --cpus 0-1 --fsync always
        run_bench "max/round-$round" --message-size 1024 "${FLAGS[@]}" --rate 0 --fsync-probe "$BROKER_DATA" \
            --shards 2 --fsync always || true
        broker_stop
        max="$(perf_json_field "max/round-$round" '.produce.messages_per_s')"
        half="$(jq -n -r --argjson max "${max:-0}" '($max / 2 / 100 | round) * 100')"
        if ((half <= 0)); then
            perf_log "round $round: no maximum, skipping the half-rate run"
            continue
        fi
        perf_log "round $round: half of $max msg/s = $half msg/s"
        engine_start "half-r$round" --shards 2 --cpus 0-1 --fsync always
        run_bench "half/round-$round" --message-size 1024 "${FLAGS[@]}" --rate "$half" --fsync-probe "$BROKER_DATA" \
            --shards 2 --fsync always || true
        broker_stop
        # The same fixed rates with fsync never, order alternating, to separate fsync from the rest.
        if ((round % 2 == 1)); then modes=(always never); else modes=(never always); fi
        for rate in "${FIXED_RATES[@]}"; do
            for mode in "${modes[@]}"; do
                perf_batch_checkpoint
                perf_log "round $round: $rate msg/s, linger 0, fsync $mode"
                engine_start "r$rate-$mode-r$round" --shards 2 --cpus 0-1 --fsync "$mode"
                name="r$rate/round-$round"
                if [[ "$mode" == never ]]; then name="never-r$rate/round-$round"; fi
                run_bench "$name" --message-size 1024 "${FIXED_FLAGS[@]}" --rate "$rate" \
                    --fsync-probe "$BROKER_DATA" --shards 2 --fsync "$mode" || true
                broker_stop
            done
        done
    done
    perf_batch_end
fi

perf_summary_head "fsync always: publish latency against the disk's fdatasync" "just perf-fsync (perf/scripts/fsync.sh, PERF_ROUNDS=$ROUNDS)"
{
    echo "Workload: \`--message-size 1024 ${FLAGS[*]}\`, \`--rate 0\` then \`--rate <half of that run's msg/s>\`; then \`--message-size 1024 ${FIXED_FLAGS[*]} --rate R\` for R in ${FIXED_RATES[*]} (each also with \`--fsync never\`); engine \`--shards 2 --cpus 0-1 --fsync always\`; \`--fsync-probe <engine data dir>\` in every run."
    echo
    perf_table_header
    for ((round = 1; round <= ROUNDS; round++)); do
        perf_row "max/round-$round" "max, round $round"
        perf_row "half/round-$round" "half, round $round"
        for rate in "${FIXED_RATES[@]}"; do
            perf_row "r$rate/round-$round" "$rate msg/s linger 0, round $round"
            perf_row "never-r$rate/round-$round" "$rate msg/s linger 0, **fsync never**, round $round"
        done
    done
    echo
    echo "Publish p99 against the fdatasync probe of the same run (probe: 300 writes or 3 s per block size, before the load):"
    echo
    echo "| run | publish p50 ms | publish p99 ms | send-delay p99 ms | probe 4 KiB p50 / p99 ms | probe 64 KiB p50 / p99 ms | publish p99 / probe 4 KiB p99 | publish p99 / probe 64 KiB p99 |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for ((round = 1; round <= ROUNDS; round++)); do
        kinds=(max half)
        for rate in "${FIXED_RATES[@]}"; do kinds+=("r$rate" "never-r$rate"); done
        for kind in "${kinds[@]}"; do
            json="$OUT/$kind/round-$round.json"
            if [[ ! -s "$json" ]]; then continue; fi
            jq -r --arg run "$kind, round $round" '
                def r3: if . == null then "-" else (. * 1000 | round / 1000 | tostring) end;
                def probe($b): (.fsync_probe.results // [] | map(select(.block_bytes == $b)) | .[0]);
                .latency_ms.publish.p99_ms as $p99 |
                probe(4096) as $k4 | probe(65536) as $k64 |
                "| \($run) | \(.latency_ms.publish.p50_ms | r3) | \($p99 | r3) | \(.latency_ms.send_delay.p99_ms | r3) | \($k4.p50_ms | r3) / \($k4.p99_ms | r3) | \($k64.p50_ms | r3) / \($k64.p99_ms | r3) | \(if $k4.p99_ms then ($p99 / $k4.p99_ms * 100 | round / 100) else "-" end) | \(if $k64.p99_ms then ($p99 / $k64.p99_ms * 100 | round / 100) else "-" end) |"
            ' "$json"
        done
    done
    echo
    echo "Target: at half the maximum, publish p99 <= 2 x fdatasync p99."
} >>"$OUT/summary.md"
perf_finish
