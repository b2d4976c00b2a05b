#!/usr/bin/env bash
# perf-idle: resident memory of an engine holding 1,000 idle partitions. For each shard count in
# PERF_IDLE_SHARDS (default "2 1"): a fresh engine (fsync always, the default), its memory 3 s after
# start, then PERF_IDLE_TOPICS topics x PERF_IDLE_PER_TOPIC partitions (default 10 x 100) created
# with kafka-python's admin client (the project's .venv, created if missing), then
# PERF_IDLE_WAIT_S (default 10) seconds idle, then VmRSS, VmHWM and the rest of
# /proc/PID/status; then one 1 KiB record written to every partition (so each has data in its
# active segment and index), the same wait, the same reading. Target: VmRSS <= 256 MiB.
source "$(dirname "$0")/lib.sh"

read -ra SHARD_COUNTS <<<"${PERF_IDLE_SHARDS:-2 1}"
TOPICS="${PERF_IDLE_TOPICS:-10}"
PER_TOPIC="${PERF_IDLE_PER_TOPIC:-100}"
WAIT_S="${PERF_IDLE_WAIT_S:-10}"

perf_build
perf_ensure_python
PYTHON="$PERF_PYTHON"
perf_scenario idle

# memory_of PID: the /proc/PID/status memory lines as a JSON object of KiB values, plus threads and fds.
memory_of() {
    local pid="$1" fds
    fds="$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
    awk -v fds="$fds" '
        /^(VmPeak|VmSize|VmHWM|VmRSS|RssAnon|RssFile|RssShmem|VmData|VmLck|VmPin):/ { kib[$1] = $2 }
        /^Threads:/ { threads = $2 }
        END {
            printf "{"
            for (k in kib) { name = k; sub(":", "", name); printf "\"%s_kib\": %d, ", name, kib[k] }
            printf "\"threads\": %d, \"open_fds\": %d}", threads, fds
        }' "/proc/$pid/status"
}

if perf_measuring; then
    perf_batch_begin
    for shards in "${SHARD_COUNTS[@]}"; do
        perf_log "$shards shard(s): start"
        engine_start "idle-s$shards" --shards "$shards" --cpus "0-$((shards - 1))"
        sleep 2
        before="$(memory_of "$BROKER_PID")"
        perf_log "$shards shard(s): creating $TOPICS x $PER_TOPIC partitions"
        created="$("$PYTHON" "$PERF_ROOT/perf/scripts/create_topics.py" "127.0.0.1:$BROKER_PORT" "$TOPICS" "$PER_TOPIC" 2>&1 | tail -n 1)" || true
        perf_log "$created"
        sleep "$WAIT_S"
        after="$(memory_of "$BROKER_PID")"
        perf_log "$shards shard(s): one record to each partition"
        touched="$("$PYTHON" "$PERF_ROOT/perf/scripts/create_topics.py" "127.0.0.1:$BROKER_PORT" "$TOPICS" "$PER_TOPIC" touch 2>&1 | tail -n 1)" || true
        perf_log "$touched"
        sleep "$WAIT_S"
        after_touch="$(memory_of "$BROKER_PID")"
        opened="$(grep -c 'partition opened' "$OUT/idle-s$shards.engine.log" || true)"
        data_kib="$(du -sk "$BROKER_DATA" | cut -f1)"
        jq -n --argjson shards "$shards" --argjson before "$before" --argjson after "$after" \
            --arg created "$created" --arg touched "$touched" --argjson after_touch "$after_touch" --argjson opened "$opened" --argjson data_kib "$data_kib" \
            --argjson topics "$TOPICS" --argjson per_topic "$PER_TOPIC" --argjson wait_s "$WAIT_S" \
            --arg at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg host "$(hostname)" --arg kernel "$(uname -r)" \
            --arg cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" --argjson cores "$CORES" \
            '{at: $at, host: {hostname: $host, kernel: $kernel, cpu_model: $cpu, cores: $cores},
              engine: {shards: $shards, fsync: "always"}, topics: $topics, partitions_per_topic: $per_topic,
              partitions_opened: $opened, created: $created, idle_wait_s: $wait_s, data_dir_kib: $data_kib,
              before_topics: $before, after_idle: $after, touched: $touched, after_one_record_each: $after_touch}' >"$OUT/idle-s$shards.json"
        broker_stop
    done
    perf_batch_end
fi

perf_summary_head "Resident memory with $((TOPICS * PER_TOPIC)) idle partitions" "just perf-idle (perf/scripts/idle.sh)" none
{
    first="$(find "$OUT" -maxdepth 1 -name 'idle-s*.json' | sort | head -n 1)"
    echo "Machine: $(jq -r '"\(.host.hostname) | \(.host.cpu_model) x\(.host.cores) | kernel \(.host.kernel)"' "$first")."
    echo "Engine \`--shards N --cpus 0-(N-1)\`, fsync always (default); $TOPICS topics x $PER_TOPIC partitions created with kafka-python, ${WAIT_S} s idle, read; one 1 KiB record to every partition, ${WAIT_S} s idle, read."
    echo
    echo "| shards | state | partitions opened | VmRSS MiB | VmHWM MiB | RssAnon MiB | RssFile MiB | VmSize GiB | threads | open fds |"
    echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for shards in "${SHARD_COUNTS[@]}"; do
        jq -r 'def mib: if . == null then "-" else (. / 1024 * 10 | round / 10 | tostring) end;
            def gib: if . == null then "-" else (. / 1048576 * 10 | round / 10 | tostring) end;
            def row($state; $m; $parts): "| \(.engine.shards) | \($state) | \($parts) | \($m.VmRSS_kib | mib) | \($m.VmHWM_kib | mib) | \($m.RssAnon_kib | mib) | \($m.RssFile_kib | mib) | \($m.VmSize_kib | gib) | \($m.threads) | \($m.open_fds) |";
            row("started, no topics"; .before_topics; 0),
            row("\(.topics * .partitions_per_topic) empty partitions, \(.idle_wait_s) s idle"; .after_idle; .partitions_opened),
            row("one 1 KiB record in each, \(.idle_wait_s) s idle"; .after_one_record_each; .partitions_opened)' \
            "$OUT/idle-s$shards.json"
    done
    echo
    for shards in "${SHARD_COUNTS[@]}"; do
        jq -r '"- \(.engine.shards) shard(s): \(.created); \(.touched); data directory \(.data_dir_kib / 1024 | round) MiB at the end."' "$OUT/idle-s$shards.json"
    done
    echo
    echo "Target: VmRSS <= 256 MiB."
} >>"$OUT/summary.md"
perf_finish
