#!/usr/bin/env bash
# perf-consume: consume throughput from hot data (issue 11, the consume row), per core and against
# the loopback's own stream floor in the same run. The broker is confined to CPU PERF_BROKER_CPU
# (default 0) as perf-percore confines it; the load tool is pinned to PERF_LOAD_CPU (default 1).
#
# Per round (PERF_ROUNDS, default 2), each on a fresh broker, the order turning by round:
#   1. the stream floor: `floor-probe stream-serve` (one blocking thread writing 1 MiB chunks) on the
#      broker's CPU, `floor-probe stream-load` reading it on the load CPU: MB/s of one loopback TCP
#      stream with no broker work at all;
#   2. each system of PERF_CONSUME_SYSTEMS (default Shardline 1 shard `--fsync never`):
#      `bench --prefill PERF_CONSUME_MESSAGES` (default 4,000,000 messages of 1 KiB, 1 partition,
#      64 KiB batches, not timed), then 1 consumer reads them all back from the start with no
#      warm-up; the measured window ends when it has read the fill (or at PERF_DURATION).
#      Tansu 0.6.0 (`tansu`) can be named, but its Fetch v12 responses carry tagged field 0, which
#      the protocol defines from v16 only, and bench's decoder (kafka-protocol) refuses them.
# Writes perf/out/consume/summary.md. Knobs also: PERF_WARMUP, PERF_TANSU_BIN.
source "$(dirname "$0")/lib.sh"

ROUNDS="${PERF_ROUNDS:-2}"
read -ra SYSTEMS <<<"${PERF_CONSUME_SYSTEMS:-shardline-1-never}"
MESSAGES="${PERF_CONSUME_MESSAGES:-4000000}"
BROKER_CPUS="${PERF_BROKER_CPU:-0}"
LOAD_CPUS="${PERF_LOAD_CPU:-1}"
FLAGS=(--partitions 1 --producers 1 --consumers 1 --message-size 1024 --batch-bytes 65536 --linger-ms 5
    --acks 1 --prefill "$MESSAGES" --consume-from earliest)
FLOOR_STREAM_S=10

if ((CORES < 2)) && perf_measuring; then
    perf_log "perf-consume needs 2 CPUs (broker on one, load on the other); this machine has $CORES"
    exit 2
fi
perf_build
perf_scenario consume

NOTES=()
perf_skip_missing_tansu

# stream_floor NAME TAG: the loopback stream floor, result in $OUT/NAME.json.
stream_floor() {
    local name="$1" tag="$2"
    BROKER_PORT="$(perf_free_port)"
    BROKER_DATA=""
    if ! broker_launch "$tag" "$OUT/$tag.floor.log" "$BROKER_PORT" 1 \
        "$FLOOR_BIN" stream-serve --listen "127.0.0.1:$BROKER_PORT"; then
        perf_failed "$name" "floor-probe stream-serve did not start"
        broker_stop
        return
    fi
    mkdir -p "$(dirname "$OUT/$name.json")"
    taskset -c "$LOAD_CPUS" "$FLOOR_BIN" stream-load --connect "127.0.0.1:$BROKER_PORT" \
        --warmup-s "$PERF_WARMUP" --duration-s "$FLOOR_STREAM_S" --json "$OUT/$name.json" \
        >"$OUT/$name.txt" 2>&1 || perf_failed "$name"
    broker_stop
}

# consume_run SYSTEM ROUND: fill, then read back, on a fresh confined broker.
consume_run() {
    local system="$1" round="$2" name="$1/round-$2" tag="$1-r$2"
    perf_log "round $round: $system, fill $MESSAGES then consume"
    if ! series_start "$system" "$tag"; then
        perf_failed "$name" "$system did not start"
        broker_stop
        return
    fi
    # No warm-up: the consumer would read the fill during it.
    run_load "$name" "$BENCH_BIN" --brokers "127.0.0.1:$BROKER_PORT" --warmup 0s --duration "${PERF_DURATION}s" \
        --json "$OUT/$name.json" "${FLAGS[@]}" "${SERIES_BENCH_FLAGS[@]}" || perf_failed "$name"
    perf_confine "$tag"
    broker_stop
}

if perf_measuring; then
    perf_batch_begin
    for ((round = 1; round <= ROUNDS; round++)); do
        perf_batch_checkpoint
        perf_log "round $round: loopback stream floor"
        stream_floor "floor/round-$round" "floor-r$round"
        count=${#SYSTEMS[@]}
        for ((i = 0; i < count; i++)); do
            perf_batch_checkpoint
            consume_run "${SYSTEMS[$(((i + round) % count))]}" "$round"
        done
    done
    perf_batch_end
fi

perf_summary_head "Consume from hot data: broker confined to CPU $BROKER_CPUS, load on CPU $LOAD_CPUS" \
    "just perf-consume (perf/scripts/consume.sh, PERF_ROUNDS=$ROUNDS)" none
{
    echo "Workload: \`bench ${FLAGS[*]}\` pinned to CPU $LOAD_CPUS; the fill is not timed, the window is the one consumer reading it back (1 partition). Brokers confined to CPU $BROKER_CPUS as perf-percore confines them: Shardline \`--shards 1 --cpus $BROKER_CPUS --fsync never\`. The stream floor is one loopback TCP stream, \`floor-probe stream-serve\` (one thread writing 1 MiB chunks) on CPU $BROKER_CPUS read by \`floor-probe stream-load\` on CPU $LOAD_CPUS, ${FLOOR_STREAM_S} s after ${PERF_WARMUP} s."
    perf_summary_notes
    echo
    echo "| system | round | consumed msg/s | consumed MB/s | ÷ stream floor MB/s (same round) | records read of the fill | fetches | broker cores | started (UTC) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for ((round = 1; round <= ROUNDS; round++)); do
        floor_json="$OUT/floor/round-$round.json"
        floor_mb="$(jq -r '.stream.mb_per_s // empty' "$floor_json" 2>/dev/null || true)"
        if [[ -n "$floor_mb" ]]; then
            printf '| loopback stream floor | %s | - | %.0f | 1.00 | - | - | - | %s |\n' "$round" "$floor_mb" \
                "$(jq -r '.started_at_unix_ms / 1000 | floor | todate' "$floor_json")"
        fi
        for system in "${SYSTEMS[@]}"; do
            json="$OUT/$system/round-$round.json"
            [[ -s "$json" ]] || continue
            cpu="$OUT/$system/round-$round.cpu.json"
            jq -r --arg system "$(series_title "$system")" --arg round "$round" --arg floor "${floor_mb:-}" \
                --argjson broker "$(jq '.broker_share // null' "$cpu" 2>/dev/null || echo null)" --argjson cores "$CORES" '
                def r(n): if . == null then "-" else (. * pow(10; n) | round) / pow(10; n) | tostring end;
                "| \($system) | \($round) | \(.consume.messages_per_s | r(0)) | \(.consume.mb_per_s | r(0)) | \(if $floor == "" then "-" else .consume.mb_per_s / ($floor | tonumber) | r(2) end) | \(.consume.messages_consumed_in_window) of \(.prefill.messages_to_consume // "-") | \(.consume.fetch_requests) | \(if $broker == null then "-" else $broker * $cores | r(2) end) | \(.started_at_unix_ms / 1000 | floor | todate) |"' "$json"
        done
    done
} >>"$OUT/summary.md"
perf_finish
