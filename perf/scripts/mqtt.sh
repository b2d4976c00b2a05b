#!/usr/bin/env bash
# perf-mqtt: the engine's MQTT listener against Debian's mosquitto, side by side in one run (issue 15
# section 4). Each broker is confined to CPU 0 (BROKER_CPUS) and the bench to CPU 1, as
# ../shared/design.md section 7 asks on two cores. Per round and broker, a fresh broker and data
# directory, then `bench --protocol mqtt` at QoS 1: PERF_MQTT_PUBLISHERS publishers (default 4), one
# subscriber, PERF_MQTT_RATE msg/s (default 10000), 256-byte messages. The engine runs with one shard
# and `--fsync always` (a PUBACK means fsynced; PERF_MQTT_FSYNC=never shows the protocol path's own
# cost); mosquitto keeps messages in memory (no fsync).
# Rounds alternate the order (engine first, then mosquitto first). Broker CPU time is read from
# /proc/PID/stat before and after each bench run (warm-up included) and reported per delivered
# message. Results: $OUT/summary.tsv, one line per run.
# Then the most each broker carries on its one core: one run per broker at PERF_MQTT_MAX_RATE msg/s
# (default 80000, above what either sustains on one core here), PERF_MQTT_MAX_SECONDS (default 5) s,
# QoS 1; delivered messages per wall-clock second of the run (bench start to its last delivery or
# drain deadline) and broker CPU per message; mosquitto there with max_inflight_messages 0 and
# max_queued_messages 0 (its defaults drop most messages at this rate). Results: $OUT/summary-max.tsv.
# Then other shapes, PERF_MQTT_SHAPE_ROUNDS rounds each: QoS 0 fan-in (4 publishers, 1 subscriber,
# 10,000 msg/s) and fan-out (1 publisher, 8 subscribers, 2,500 publications/s = 20,000 deliveries/s)
# at QoS 1 and 0 (PERF_MQTT_SHAPES; results: $OUT/summary-shapes.tsv).
# PERF_MQTT_BASELINE=/path/to/engine adds a third broker, `baseline`: that engine binary (an older
# build) with the same flags, in the same rounds, to measure a change side by side.
source "$(dirname "$0")/lib.sh"

ROUNDS="${PERF_ROUNDS:-4}"
RATE="${PERF_MQTT_RATE:-10000}"
PUBLISHERS="${PERF_MQTT_PUBLISHERS:-4}"
# The engine's fsync policy (always: a PUBACK means fsynced; never: the protocol path's own cost).
ENGINE_FSYNC="${PERF_MQTT_FSYNC:-always}"
BASELINE_BIN="${PERF_MQTT_BASELINE:-}"
KINDS=(engine mosquitto)
if [[ -n "$BASELINE_BIN" ]]; then
    [[ -x "$BASELINE_BIN" ]] || { echo "PERF_MQTT_BASELINE=$BASELINE_BIN is not an executable" >&2; exit 2; }
    KINDS=(engine baseline mosquitto)
fi
BROKER_CPUS=0
LOAD_CPUS=1
perf_build
perf_scenario mqtt

# broker_cpu_ticks: utime + stime of the running broker, in clock ticks.
broker_cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$BROKER_PID/stat"
}

# start_broker KIND TAG [MOSQUITTO_CONF_LINES]: the engine or mosquitto on a free port; sets MQTT_PORT.
start_broker() {
    local kind="$1" tag="$2" extra_conf="${3:-}"
    MQTT_PORT="$(perf_free_port)"
    if [[ "$kind" == engine || "$kind" == baseline ]]; then
        local engine_bin="$ENGINE_BIN"
        [[ "$kind" == baseline ]] && ENGINE_BIN="$BASELINE_BIN"
        engine_start "$tag" --shards 1 --cpus 0 --fsync "$ENGINE_FSYNC" --mqtt-listen "127.0.0.1:$MQTT_PORT"
        ENGINE_BIN="$engine_bin"
        perf_wait_listening "$MQTT_PORT" "$BROKER_PID" 20
    else
        printf 'listener %s 127.0.0.1\nallow_anonymous true\n%s' "$MQTT_PORT" "$extra_conf" >"$OUT/$tag.conf"
        BROKER_PORT="$MQTT_PORT"
        broker_launch "$tag" "$OUT/$tag.mosquitto.log" "$MQTT_PORT" 1 mosquitto -c "$OUT/$tag.conf"
    fi
}

# one_run KIND ROUND QOS PUBLISHERS SUBSCRIBERS RATE SUMMARY [SHAPE]: one bench run against a fresh
# broker; appends a line to SUMMARY (prefixed with SHAPE when given). CPU is per delivered message
# (with N subscribers each publication is delivered N times).
one_run() {
    local kind="$1" round="$2" qos="$3" publishers="$4" subscribers="$5" rate="$6" summary="$7" shape="${8:-}"
    local tag before after json
    tag="$kind-r$round${shape:+-$shape}"
    start_broker "$kind" "$tag"
    json="$OUT/$tag.json"
    before="$(broker_cpu_ticks)"
    taskset -c "$LOAD_CPUS" "$BENCH_BIN" --protocol mqtt --qos "$qos" --brokers "127.0.0.1:$MQTT_PORT" \
        --topic "bench/$tag" --producers "$publishers" --consumers "$subscribers" --rate "$rate" \
        --message-size 256 --warmup "${PERF_WARMUP}s" --duration "${PERF_DURATION}s" --json "$json" --quiet
    after="$(broker_cpu_ticks)"
    python3 - "$json" "$kind" "$round" "$((after - before))" "$CLOCK_TICKS" "$shape" >>"$summary" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
kind, rnd, ticks, hz, shape = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
d = report["deliver_latency"]
a = report.get("ack_latency") or {}
delivered = max(report["delivered"], 1)
cpu_us = ticks * 1e6 / hz / delivered
prefix = f"{shape}\t" if shape else ""
print(f"{prefix}{kind}\t{rnd}\t{report['sent']}\t{report['delivered']}\t{d['p50_us']}\t{d['p99_us']}\t{d['p99.9_us']}"
      f"\t{d['max_us']}\t{a.get('p50_us', '-')}\t{a.get('p99_us', '-')}\t{cpu_us:.1f}")
EOF
    broker_stop
}

# round_order ROUND: sets `order` to the brokers of round ROUND, odd rounds in KINDS' order, even
# rounds reversed.
round_order() {
    order=("${KINDS[@]}")
    if (($1 % 2 == 0)); then
        local i j swap
        for ((i = 0, j = ${#order[@]} - 1; i < j; i++, j--)); do
            swap="${order[i]}" && order[i]="${order[j]}" && order[j]="$swap"
        done
    fi
}

perf_batch_begin
printf 'broker\tround\tsent\tdelivered\tdeliver_p50_us\tdeliver_p99_us\tdeliver_p99.9_us\tdeliver_max_us\tpuback_p50_us\tpuback_p99_us\tbroker_cpu_us_per_msg\n' >"$OUT/summary.tsv"
for ((round = 1; round <= ROUNDS; round++)); do
    round_order "$round"
    for kind in "${order[@]}"; do
        perf_log "round $round: $kind"
        one_run "$kind" "$round" 1 "$PUBLISHERS" 1 "$RATE" "$OUT/summary.tsv"
    done
done

# Other shapes (issue 15 section 4: QoS 0 and 1, fan-in and fan-out), each
# NAME:QOS:PUBLISHERS:SUBSCRIBERS:RATE (publications per second), PERF_MQTT_SHAPE_ROUNDS rounds
# (default 2) in alternating order. PERF_MQTT_SHAPES="" skips them.
SHAPES="${PERF_MQTT_SHAPES-qos0-fanin:0:4:1:10000 qos1-fanout:1:1:8:2500 qos0-fanout:0:1:8:2500}"
SHAPE_ROUNDS="${PERF_MQTT_SHAPE_ROUNDS:-2}"
printf 'shape\tbroker\tround\tsent\tdelivered\tdeliver_p50_us\tdeliver_p99_us\tdeliver_p99.9_us\tdeliver_max_us\tpuback_p50_us\tpuback_p99_us\tbroker_cpu_us_per_delivery\n' >"$OUT/summary-shapes.tsv"
for shape in $SHAPES; do
    IFS=: read -r name qos publishers subscribers rate <<<"$shape"
    for ((round = 1; round <= SHAPE_ROUNDS; round++)); do
        round_order "$round"
        for kind in "${order[@]}"; do
            perf_log "$name round $round: $kind"
            one_run "$kind" "$round" "$qos" "$publishers" "$subscribers" "$rate" "$OUT/summary-shapes.tsv" "$name"
        done
    done
done
MAX_RATE="${PERF_MQTT_MAX_RATE:-80000}"
MAX_SECONDS="${PERF_MQTT_MAX_SECONDS:-5}"
printf 'broker\trate\tsent\tdelivered\twall_s\tdelivered_per_s\tbroker_cpu_us_per_msg\tbroker_cpu_share\n' >"$OUT/summary-max.tsv"
for kind in "${KINDS[@]}"; do
    perf_log "most per core: $kind at $MAX_RATE msg/s"
    tag="$kind-max"
    # mosquitto's defaults (20 QoS 1 messages in flight, 1,000 queued per client) drop most messages
    # at this rate; unbounded, it carries them all, so its most is measured without drops.
    start_broker "$kind" "$tag" $'max_inflight_messages 0\nmax_queued_messages 0\n'
    json="$OUT/$tag.json"
    before="$(broker_cpu_ticks)"
    started="$(date +%s.%N)"
    taskset -c "$LOAD_CPUS" "$BENCH_BIN" --protocol mqtt --qos 1 --brokers "127.0.0.1:$MQTT_PORT" \
        --topic "bench/$tag" --producers "$PUBLISHERS" --consumers 1 --rate "$MAX_RATE" --message-size 256 \
        --warmup 0s --duration "${MAX_SECONDS}s" --json "$json" --quiet
    ended="$(date +%s.%N)"
    after="$(broker_cpu_ticks)"
    python3 - "$json" "$kind" "$((after - before))" "$CLOCK_TICKS" "$started" "$ended" >>"$OUT/summary-max.tsv" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
kind, ticks, hz = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
wall = float(sys.argv[6]) - float(sys.argv[5])
delivered = max(report["delivered"], 1)
cpu_s = ticks / hz
print(f"{kind}\t{report['rate']}\t{report['sent']}\t{report['delivered']}\t{wall:.2f}\t{delivered / wall:.0f}"
      f"\t{cpu_s * 1e6 / delivered:.1f}\t{cpu_s / wall:.2f}")
EOF
    broker_stop
done
perf_batch_end
column -t "$OUT/summary.tsv"
column -t "$OUT/summary-shapes.tsv"
column -t "$OUT/summary-max.tsv"
