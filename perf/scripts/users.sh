#!/usr/bin/env bash
# perf-users: what users see (design note §7, issue 11's first row). An unmodified client, librdkafka
# through confluent-kafka (the project's .venv; perf/scripts/librdkafka_latency.py: open loop, latency
# from the intended send time to the delivery callback, exact percentiles), produces 1 KiB messages to
# a 1-partition topic, acks=all, linger.ms=1, at each rate of PERF_USERS_RATES (default 5000 1000)
# msg/s, against brokers with their default settings and nothing pinned by the harness:
#   shards-1  engine --shards 1 --fsync never
#   default   engine --fsync never (one shard per core, each shard on its own port)
#   shared    engine --shards 2 --shard-listeners shared --fsync never (one port for all shards: the
#             kernel picks the shard per connection, as before d571fd5)
#   tansu     Tansu 0.6.0, memory store (skipped with a note if its binary is missing)
# PERF_USERS_SYSTEMS picks among them. Interleaved: per round and rate every system runs once on a
# fresh broker, the order rotating; PERF_ROUNDS rounds (default 3). Reports medians over the rounds,
# and the question it answers: p99 with the default shard count ÷ p99 with --shards 1 (issue 11
# target ≤ 1.1), and against Tansu-memory's p99 in the same run. Knobs also: PERF_DURATION,
# PERF_WARMUP, PERF_TANSU_BIN, PERF_PYTHON.
source "$(dirname "$0")/lib.sh"

ROUNDS="${PERF_ROUNDS:-3}"
read -ra RATES <<<"${PERF_USERS_RATES:-5000 1000}"
read -ra SYSTEMS <<<"${PERF_USERS_SYSTEMS:-shards-1 default shared tansu}"
declare -A ENGINE_FLAGS=([shards-1]="--shards 1" [default]="" [shared]="--shards 2 --shard-listeners shared")
declare -A TITLES=([shards-1]="Shardline --shards 1" [default]="Shardline, default shards ($CORES, own ports)"
    [shared]="Shardline --shards 2 --shard-listeners shared" [tansu]="Tansu $TANSU_VERSION, memory store")
perf_build
perf_ensure_python
perf_scenario users

NOTES=()
perf_skip_missing_tansu

# users_run SYSTEM RATE ROUND: one run on a fresh broker; a failure is noted in failed.txt.
users_run() {
    local system="$1" rate="$2" round="$3" name="$1/r$2-round-$3" tag="$1-r$2-r$3" stamp=() started=0
    perf_log "round $round: $system at $rate msg/s"
    if [[ "$system" == tansu ]]; then
        tansu_start "$tag" memory && started=1
        stamp=(--broker-version "tansu $TANSU_VERSION (memory store)" --fsync "none (memory store)")
    else
        # shellcheck disable=SC2086 # the engine flags are words on purpose
        engine_start "$tag" ${ENGINE_FLAGS[$system]} --fsync never && started=1
        read -r shards _ < <(perf_engine_ports ${ENGINE_FLAGS[$system]})
        stamp=(--broker-version "shardline $(perf_shardline_version) ${ENGINE_FLAGS[$system]:-(defaults)}"
            --shards "$shards" --fsync never)
    fi
    if ((started == 1)); then
        run_load "$name" "$PERF_PYTHON" "$PERF_ROOT/perf/scripts/librdkafka_latency.py" \
            --brokers "127.0.0.1:$BROKER_PORT" --rate "$rate" --message-size 1024 --linger-ms 1 --acks all \
            --warmup-s "$PERF_WARMUP" --duration-s "$PERF_DURATION" --json "$OUT/$name.json" "${stamp[@]}" ||
            perf_failed "$name"
    else
        perf_failed "$name" "$system did not start"
    fi
    broker_stop
}

if perf_measuring; then
    perf_batch_begin
    for ((round = 1; round <= ROUNDS; round++)); do perf_rotate "$round" users_run; done
    perf_batch_end
fi

RUNS="$(perf_runs "$OUT")"
TITLES_JSON="$(for system in "${!TITLES[@]}"; do jq -n --arg k "$system" --arg v "${TITLES[$system]}" '{($k): $v}'; done | jq -s add)"
users_jq() { jq -r --argjson titles "$TITLES_JSON" "$PERF_JQ_DEFS"'
    def series: .name | split("/")[0];
    def title: $titles[series] // series;
    def medians($k): group_by(series) | map({key: .[0] | series, value: (map(p($k)) | median)}) | from_entries;
    def ratio($a; $b): if $a == null or ($b // 0) == 0 then null else $a / $b end;
    '"$1" <<<"$RUNS"; }

perf_summary_head "What users see: librdkafka producer, engines unpinned with default flags" \
    "just perf-users (perf/scripts/users.sh, PERF_ROUNDS=$ROUNDS)"
{
    echo "Workload: \`librdkafka_latency.py --rate R --message-size 1024 --linger-ms 1 --acks all\` ($(jq -r '.[0].run.tool_version // "?"' <<<"$RUNS")), 1 partition, R in ${RATES[*]} msg/s, open loop (latency = delivery callback − intended send time), unpinned. All Shardline runs \`--fsync never\`; engines: $(for system in "${SYSTEMS[@]}"; do [[ "$system" == tansu ]] || printf '`engine %s --fsync never`; ' "${ENGINE_FLAGS[$system]:-}"; done)Tansu \`--storage-engine memory://tansu/\`. Per round and rate each system once, order rotating, a fresh broker per run. CPU columns as in the other scenarios (\"bench\" = the Python client)."
    perf_summary_notes
    for system in "${SYSTEMS[@]}"; do
        echo
        echo "### ${TITLES[$system]}"
        echo
        perf_table_header
        for rate in "${RATES[@]}"; do
            for ((round = 1; round <= ROUNDS; round++)); do
                if [[ -s "$OUT/$system/r$rate-round-$round.json" ]]; then perf_row "$system/r$rate-round-$round" "$rate msg/s, round $round"; fi
            done
        done
    done
    echo
    echo "### Medians over the rounds"
    echo
    echo "| system | msg/s offered | runs | p50 ms | p99 ms | p99.9 ms | max ms | broker CPU µs/msg |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    users_jq 'group_by([series, .run.flags.rate])[] |
        "| \(.[0] | title) | \(.[0].run.flags.rate) | \(length) | \(map(p("p50_ms")) | median | r(3)) | \(map(p("p99_ms")) | median | r(3)) | \(map(p("p99_9_ms")) | median | r(3)) | \(map(p("max_ms")) | median | r(3)) | \(map(cpu_us_per_msg) | median | r(1)) |"'
    echo
    echo "### The question: a second shard must not cost the user (issue 11, target ≤ 1.1)"
    echo
    echo "| msg/s | default ÷ --shards 1, p99 | default ÷ Tansu-memory, p99 | shared ÷ --shards 1, p99 | default ÷ --shards 1, p99.9 |"
    echo "| ---: | ---: | ---: | ---: | ---: |"
    users_jq 'group_by(.run.flags.rate)[] | medians("p99_ms") as $p99 | medians("p99_9_ms") as $p999 |
        "| \(.[0].run.flags.rate) | \(ratio($p99.default; $p99["shards-1"]) | r(2)) | \(ratio($p99.default; $p99.tansu) | r(2)) | \(ratio($p99.shared; $p99["shards-1"]) | r(2)) | \(ratio($p999.default; $p999["shards-1"]) | r(2)) |"'
} >>"$OUT/summary.md"
perf_finish
