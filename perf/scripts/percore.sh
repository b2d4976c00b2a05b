#!/usr/bin/env bash
# perf-percore: the broker's own figures on a 2-core machine (design note §7 "Measuring fairly on two
# cores", issue 11 §2). Every thread of the broker is confined to CPU PERF_BROKER_CPU (default 0:
# `taskset -c` at exec, `taskset -a -p` over all threads after start and again after each run, each
# thread's allowed CPUs listed in <tag>.affinity.txt); the load tool is pinned to PERF_LOAD_CPU
# (default 1). The broker's CPU time (utime + stime of the whole process, /proc/PID/stat) over the
# measured window gives "CPU µs per message", which does not depend on how busy the other core is.
#
# Per round (PERF_ROUNDS, default 2), all on fresh brokers:
#   1. the loopback floor: `floor-probe serve` (one blocking thread, 1 KiB request, 16 B reply) on the
#      broker's CPU, `floor-probe load` open loop on the load CPU, at PERF_FLOOR_RATES (default
#      1000 5000) requests/s;
#   2. publish latency: for each rate of PERF_PERCORE_RATES (default 1000 5000 20000) and the maximum
#      (rate 0), each system of PERF_PERCORE_SYSTEMS (default Shardline 1 shard `--fsync never`, 1 shard
#      `--fsync always`, Tansu memory store; Tansu skipped with a note if its binary is missing), the
#      order rotating: 1 KiB messages, 1 partition, 1 producer, acks=all, linger 0, 64 KiB batches;
#      every Shardline run also probes write + fdatasync in its data directory (`--fsync-probe`);
#   3. the price of sharding: Shardline 1 shard, then 2 shards both on the broker's CPU (order
#      alternating by round), PERF_PERCORE_SHARDING_RATE (default 20000) msg/s over 8 partitions,
#      PERF_PERCORE_SHARDING_PRODUCERS (default 4) producers, linger 0, for each fsync mode of
#      PERF_PERCORE_SHARDING_FSYNC (default never); the figure is CPU µs per message, 2 ÷ 1.
# Writes perf/out/percore/summary.md. Knobs also: PERF_DURATION, PERF_WARMUP, PERF_TANSU_BIN.
source "$(dirname "$0")/lib.sh"

ROUNDS="${PERF_ROUNDS:-2}"
read -ra RATES <<<"${PERF_PERCORE_RATES:-1000 5000 20000} 0"
read -ra SYSTEMS <<<"${PERF_PERCORE_SYSTEMS:-shardline-1-never shardline-1-always tansu}"
read -ra FLOOR_RATES <<<"${PERF_FLOOR_RATES:-1000 5000}"
SHARDING_RATE="${PERF_PERCORE_SHARDING_RATE:-20000}"
SHARDING_PRODUCERS="${PERF_PERCORE_SHARDING_PRODUCERS:-4}"
read -ra SHARDING_FSYNC <<<"${PERF_PERCORE_SHARDING_FSYNC:-never}"
BROKER_CPUS="${PERF_BROKER_CPU:-0}"
LOAD_CPUS="${PERF_LOAD_CPU:-1}"
FLAGS=(--partitions 1 --producers 1 --message-size 1024 --batch-bytes 65536 --linger-ms 0 --acks all)
SHARDING_FLAGS=(--partitions 8 --producers "$SHARDING_PRODUCERS" --message-size 1024 --batch-bytes 65536
    --linger-ms 0 --acks all --rate "$SHARDING_RATE")

if ((CORES < 2)) && perf_measuring; then
    perf_log "perf-percore needs 2 CPUs (broker on one, load on the other); this machine has $CORES"
    exit 2
fi
perf_build
perf_scenario percore

NOTES=()
perf_skip_missing_tansu

rate_name() { if (($1 == 0)); then echo max; else echo "r$1"; fi; }

# percore_rate_run SYSTEM RATE ROUND: the publish-latency run of SYSTEM at RATE (perf_rotate's step).
percore_rate_run() {
    local system="$1" rate="$2" round="$3"
    perf_log "round $round: $system at $(rate_name "$rate")"
    percore_run "$system" "$system/$(rate_name "$rate")-round-$round" "$system-$(rate_name "$rate")-r$round" \
        "${FLAGS[@]}" --rate "$rate"
}

# percore_run SYSTEM NAME TAG BENCH_FLAGS...: one run on a fresh, confined broker; a failure is noted
# in failed.txt and the scenario goes on.
percore_run() {
    local system="$1" name="$2" tag="$3"
    shift 3
    local probe=()
    if ! series_start "$system" "$tag"; then
        perf_failed "$name" "$system did not start"
        broker_stop
        return
    fi
    if [[ "$system" == shardline-* ]]; then probe=(--fsync-probe "$BROKER_DATA"); fi
    run_bench "$name" "$@" "${SERIES_BENCH_FLAGS[@]}" "${probe[@]}" || perf_failed "$name"
    # Threads started during the load (e.g. io_uring workers) are listed and confined too.
    perf_confine "$tag"
    broker_stop
}

if perf_measuring; then
    perf_batch_begin
    for ((round = 1; round <= ROUNDS; round++)); do
        for rate in "${FLOOR_RATES[@]}"; do
            perf_batch_checkpoint
            perf_log "round $round: loopback floor at $rate req/s"
            name="floor/r$rate-round-$round"
            if floor_start "floor-r$rate-r$round"; then
                run_floor "$name" "$rate" || perf_failed "$name"
            else
                perf_failed "$name" "floor-probe serve did not start"
            fi
            broker_stop
        done
        perf_rotate "$round" percore_rate_run
        if ((round % 2 == 1)); then order=(1 2); else order=(2 1); fi
        for mode in "${SHARDING_FSYNC[@]}"; do
            for shards in "${order[@]}"; do
                perf_batch_checkpoint
                perf_log "round $round: sharding cost, $shards shard(s) on CPU $BROKER_CPUS, fsync $mode"
                percore_run "shardline-$shards-$mode" "sharding-$mode/shards-$shards-round-$round" \
                    "sharding-$mode-s$shards-r$round" "${SHARDING_FLAGS[@]}"
            done
        done
    done
    perf_batch_end
fi

# The summary, from every run's JSON and CPU window (jq over perf_runs).
RUNS="$(perf_runs "$OUT")"
TITLES="$(for system in "${SYSTEMS[@]}"; do
    jq -n --arg k "$system" --arg v "$(series_title "$system")" '{($k): $v}'
done | jq -s 'add + {floor: "floor-probe (1 KiB request, 16 B reply)"}')"
JQ_PERCORE="$PERF_JQ_DEFS"'
def series: .name | split("/")[0];
def round: .name | capture("round-(?<n>[0-9]+)").n;
def rate_order: if .run.flags.rate == 0 then infinite else .run.flags.rate end;
def ordered: sort_by(series, rate_order, (round | tonumber));
def offered: if .run.flags.rate == 0 then "max" else .run.flags.rate | tostring end;
def per_s($k): if (.cpu.window_s // 0) == 0 then null else .cpu[$k] / .cpu.window_s end;
def title: if series | startswith("sharding-") then "Shardline, \(.run.broker.shards) shard(s)" else $titles[series] // series end;
def stamp: .run.started_at_unix_ms / 1000 | floor | todate;
def row: "| \(title)\(if .cpu.compiler_seen then " (compiler running!)" else "" end) | \(.run.broker.fsync // "-") | \(offered) | \(round) | \(.run.produce.messages_per_s | r(0)) | \(p("p50_ms") | r(3)) | \(p("p99_ms") | r(3)) | \(p("p99_9_ms") | r(3)) | \(p("max_ms") | r(3)) | \(.run.latency_ms.send_delay.p99_ms | r(3)) | \(if (.run.produce.requests // 0) > 0 then .run.produce.messages_acknowledged / .run.produce.requests else null end | r(1)) | \(cpu_us_per_msg | r(1)) | \(per_s("broker_cpu_s") | r(2)) | \(per_s("bench_cpu_s") | r(2)) | \(stamp) |";
def header: "| system | fsync | offered msg/s | round | msg/s | p50 ms | p99 ms | p99.9 ms | max ms | send-delay p99 ms | msg/request | broker CPU µs/msg | broker cores | load cores | started (UTC) |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |";
def probe($bytes; $k): [.[] | .run.fsync_probe.results[]? | select(.block_bytes == $bytes) | .[$k]] | median;
'
percore_jq() { jq -r --argjson titles "$TITLES" "$JQ_PERCORE $1" <<<"$RUNS"; }

perf_summary_head "Per core: broker confined to CPU $BROKER_CPUS, load on CPU $LOAD_CPUS (1 KiB messages)" \
    "just perf-percore (perf/scripts/percore.sh, PERF_ROUNDS=$ROUNDS)"
{
    echo "Workload: \`bench ${FLAGS[*]} --rate R\` for R in ${RATES[*]} (0 = maximum), pinned to CPU $LOAD_CPUS (\`taskset -c $LOAD_CPUS\`); brokers confined to CPU $BROKER_CPUS (\`taskset -c $BROKER_CPUS\` at exec and \`taskset -a -p -c $BROKER_CPUS\` over every thread after start and after each run): Shardline \`--shards 1 --cpus $BROKER_CPUS --fsync never|always\`, Tansu $TANSU_VERSION \`--storage-engine memory://tansu/\`. Order rotating by rate, a fresh broker per run; every Shardline run probes write + fdatasync in its data directory before the load. Broker CPU µs/msg = the broker's utime + stime (\`/proc/PID/stat\`, whole process) over the measured window ÷ wall time ÷ msg/s; broker cores and load cores = CPU seconds per second."
    echo
    echo "Stamp: machine and kernel as above (the same in every run's JSON); every row names its fsync mode and start time (UTC)."
    perf_summary_notes
    loose="$(find "$OUT" -name '*.affinity.txt' -print0 | xargs -0 -r awk -F'\t' -v want="$BROKER_CPUS" \
        'NF == 3 && $3 != want { print $2 }' | sort | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " }')"
    echo
    if [[ -n "$loose" ]]; then
        echo "Threads that stayed outside CPU $BROKER_CPUS (thread name x samples, from *.affinity.txt): $loose. Their CPU time still counts in the broker's."
    else
        echo "Every broker thread seen (after start and after each run) was confined to CPU $BROKER_CPUS."
    fi

    echo
    echo "### Publish latency and broker CPU, every run"
    echo
    percore_jq 'header, (ordered[] | select(series as $s | $titles[$s] != null and $s != "floor") | row)'
    echo
    echo "### Medians over the rounds"
    echo
    echo "| system | fsync | offered msg/s | runs | msg/s | p50 ms | p99 ms | p99.9 ms | max ms | broker CPU µs/msg |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    percore_jq '[.[] | select(series | startswith("shardline") or . == "tansu")] | group_by([series, rate_order])[] |
        "| \(.[0] | title) | \(.[0].run.broker.fsync // "-") | \(.[0] | offered) | \(length) | \(map(.run.produce.messages_per_s) | median | r(0)) | \(map(p("p50_ms")) | median | r(3)) | \(map(p("p99_ms")) | median | r(3)) | \(map(p("p99_9_ms")) | median | r(3)) | \(map(p("max_ms")) | median | r(3)) | \(map(cpu_us_per_msg) | median | r(1)) |"'

    echo
    echo "### The loopback floor (floor-probe: server on CPU $BROKER_CPUS, open-loop client on CPU $LOAD_CPUS)"
    echo
    echo "The smallest request/response server there is (one blocking thread, 1 KiB request, 16 B reply), measured like the brokers: the floor this VM allows. Broker CPU µs/msg here is the server's CPU per request."
    echo
    percore_jq 'header, (ordered[] | select(series == "floor") | row)'
    echo
    echo "### Tails against the floor (issue 11: broker p99.9 ≤ 2 × the floor's p99.9, same run)"
    echo
    echo "| system | fsync | rate | broker p99.9 ms (median) | floor p99.9 ms (median) | ratio | broker p99 ms | floor p99 ms |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    percore_jq '. as $all | [.[] | select(series == "floor")] | group_by(.run.flags.rate)[] |
        (map(p("p99_9_ms")) | median) as $floor999 | (map(p("p99_ms")) | median) as $floor99 | .[0].run.flags.rate as $rate |
        ($all | [.[] | select((series | startswith("shardline") or . == "tansu") and .run.flags.rate == $rate)] | group_by(series)[] |
            (map(p("p99_9_ms")) | median) as $b999 |
            "| \(.[0] | title) | \(.[0].run.broker.fsync // "-") | \($rate) | \($b999 | r(3)) | \($floor999 | r(3)) | \(if $b999 != null and ($floor999 // 0) > 0 then $b999 / $floor999 else null end | r(2)) | \(map(p("p99_ms")) | median | r(3)) | \($floor99 | r(3)) |")'

    echo
    echo "### fsync always against the disk's fdatasync (probes of this run)"
    echo
    echo "fdatasync probe (\`bench --fsync-probe\` in each Shardline run's data directory, 2,000 writes or 3 s per size, before the load), medians over the runs: $(percore_jq '"4 KiB p50 \(probe(4096; "p50_ms") | r(3)) / p99 \(probe(4096; "p99_ms") | r(3)) / p99.9 \(probe(4096; "p99_9_ms") | r(3)) / max \(probe(4096; "max_ms") | r(3)) ms; 64 KiB p50 \(probe(65536; "p50_ms") | r(3)) / p99 \(probe(65536; "p99_ms") | r(3)) ms"')."
    echo
    echo "| system | offered msg/s | publish p99 ms (median) | publish p99.9 ms (median) | fdatasync 4 KiB p99 / p99.9 ms (median) | p99 ÷ fdatasync p99 (target ≤ 2) | p99.9 ÷ fdatasync p99.9 (target ≤ 4) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    percore_jq '(probe(4096; "p99_ms")) as $sync | (probe(4096; "p99_9_ms")) as $sync999 | [.[] | select(series | test("^shardline-[0-9]+-always$"))] | group_by([series, rate_order])[] |
        (map(p("p99_ms")) | median) as $p99 | (map(p("p99_9_ms")) | median) as $p999 |
        "| \(.[0] | title) | \(.[0] | offered) | \($p99 | r(3)) | \($p999 | r(3)) | \($sync | r(3)) / \($sync999 | r(3)) | \(if $p99 != null and ($sync // 0) > 0 then $p99 / $sync else null end | r(2)) | \(if $p999 != null and ($sync999 // 0) > 0 then $p999 / $sync999 else null end | r(2)) |"'

    echo
    echo "### The price of sharding: 2 shards against 1, both confined to CPU $BROKER_CPUS"
    echo
    echo "Workload: \`bench ${SHARDING_FLAGS[*]}\`; Shardline \`--shards 1|2 --cpus $BROKER_CPUS\` (with 2 shards both executors share the core), order alternating by round. Issue 11's target: CPU per message with 2 shards ≤ 1.1 × with 1."
    echo
    percore_jq 'header, (ordered[] | select(series | startswith("sharding-")) | row)'
    echo
    echo "| fsync | 1 shard: broker CPU µs/msg (median) | 2 shards: broker CPU µs/msg (median) | 2 ÷ 1 | p99 ms 1 / 2 shards |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    percore_jq '[.[] | select(series | startswith("sharding-"))] | group_by(.run.broker.fsync)[] |
        ([.[] | select(.run.broker.shards == 1)]) as $one | ([.[] | select(.run.broker.shards == 2)]) as $two |
        ($one | map(cpu_us_per_msg) | median) as $c1 | ($two | map(cpu_us_per_msg) | median) as $c2 |
        "| \(.[0].run.broker.fsync) | \($c1 | r(1)) | \($c2 | r(1)) | \(if $c1 != null and $c2 != null and $c1 > 0 then $c2 / $c1 else null end | r(2)) | \($one | map(p("p99_ms")) | median | r(3)) / \($two | map(p("p99_ms")) | median | r(3)) |"'
} >>"$OUT/summary.md"
perf_finish
