#!/usr/bin/env bash
# perf-hop: what a cross-shard hop costs. Two engines run side by side (2 shards, fsync never,
# --shard-listeners shared, debug logging of accepted connections): A parks at once when idle, B
# spins 50 us first (--spin-before-park-us 50). Shared listeners (one port for both shards) keep the
# kernel choosing the shard per connection; with the default (a port per shard, d571fd5) a client
# always reaches the partition's own shard and there is no hop to measure. Each holds a 1-partition topic, which lives on one shard. Short
# open-loop runs (1 producer, 1 KiB, PERF_HOP_RATE msg/s, default 5000; linger 0, so each message
# is its own request) alternate between A and B; each run opens a new producer connection, and the
# kernel's SO_REUSEPORT hash gives it to either shard. The run is "local" when the shard that
# accepted the producer's connection (engine log: `connection accepted shard=N peer=...`, matched
# by the local port `ss -tnp` shows for the bench process while it runs) is the shard that opened
# the partition (`partition opened shard=N topic=hop partition=0`), else "remote": every request
# then hops to the other shard and back. Runs continue until each engine has PERF_HOP_MIN_EACH
# (default 4) runs of each kind, or PERF_HOP_RUNS_MAX (default 14) runs.
source "$(dirname "$0")/lib.sh"

RATE="${PERF_HOP_RATE:-5000}"
MIN_EACH="${PERF_HOP_MIN_EACH:-4}"
RUNS_MAX="${PERF_HOP_RUNS_MAX:-14}"
PERF_DURATION="${PERF_HOP_DURATION:-5}"
FLAGS=(--topic hop --partitions 1 --producers 1 --message-size 1024 --linger-ms 0 --rate "$RATE")
perf_build
perf_scenario hop
ENGINE_RUST_LOG="info,shardline_engine=debug"

declare -A PID PORT SPIN=([A]=0 [B]=50)
if perf_measuring; then
    for engine in A B; do
        engine_start "engine-$engine" --shards 2 --cpus 0-1 --fsync never --shard-listeners shared \
            --spin-before-park-us "${SPIN[$engine]}"
        PID[$engine]="$BROKER_PID"
        PORT[$engine]="$BROKER_PORT"
    done

    # While a run measures, note the local ports of the bench's connections to the broker.
    hop_hook() {
        local name="$1" bench_pid="$2" phase="$4"
        if [[ "$phase" != measuring || -e "$OUT/$name.ports" ]]; then return; fi
        ss -Htnp state established "dport = :$BROKER_PORT" | grep "pid=$bench_pid," |
            grep -oE '127\.0\.0\.1:[0-9]+' | awk -F: -v broker="$BROKER_PORT" '$2 != broker { print $2 }' >"$OUT/$name.ports"
    }
    RUN_BENCH_HOOK=hop_hook

    # classify ENGINE NAME: "local"/"remote"/"unknown" for the run NAME on ENGINE, and the shards.
    classify() {
        local engine="$1" name="$2" log="$OUT/engine-$1.engine.log" port accepted partition_shard
        partition_shard="$(grep -E 'partition opened' "$log" | grep -E 'topic=hop partition=0' | grep -oE 'shard=[0-9]+' | tail -n 1 | cut -d= -f2)"
        port="$(head -n 1 "$OUT/$name.ports" 2>/dev/null || true)"
        accepted=""
        if [[ -n "$port" ]]; then
            accepted="$(grep -E "connection accepted.*127\.0\.0\.1:$port\)" "$log" | grep -oE 'shard=[0-9]+' | tail -n 1 | cut -d= -f2)"
        fi
        local kind=unknown
        if [[ -n "$accepted" && -n "$partition_shard" ]]; then
            if [[ "$accepted" == "$partition_shard" ]]; then kind=local; else kind=remote; fi
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${SPIN[$engine]}" "${port:--}" "${accepted:--}" "${partition_shard:--}" "$kind"
    }

    printf 'run\tspin_us\tlocal_port\taccepting_shard\tpartition_shard\tkind\n' >"$OUT/classes.tsv"
    declare -A COUNT=([A-local]=0 [A-remote]=0 [B-local]=0 [B-remote]=0)
    perf_batch_begin
    for ((run = 1; run <= RUNS_MAX; run++)); do
        for engine in A B; do
            BROKER_PID="${PID[$engine]}"
            BROKER_PORT="${PORT[$engine]}"
            name="spin-${SPIN[$engine]}/run-$(printf '%02d' "$run")"
            run_bench "$name" "${FLAGS[@]}" --shards 2 --fsync never || true
            line="$(classify "$engine" "$name")"
            echo "$line" >>"$OUT/classes.tsv"
            kind="$(cut -f6 <<<"$line")"
            COUNT[$engine-$kind]=$((${COUNT[$engine-$kind]:-0} + 1))
            perf_log "engine $engine (spin ${SPIN[$engine]} us) run $run: $kind (port/accepting/partition shard: $(cut -f3-5 <<<"$line" | tr '\t' '/'))"
        done
        perf_batch_checkpoint
        if ((COUNT[A-local] >= MIN_EACH && COUNT[A-remote] >= MIN_EACH && COUNT[B-local] >= MIN_EACH && COUNT[B-remote] >= MIN_EACH)); then
            break
        fi
    done
    perf_batch_end
    for engine in A B; do
        BROKER_PID="${PID[$engine]}"
        BROKER_PORT="${PORT[$engine]}"
        broker_stop
    done
fi

perf_summary_head "Cross-shard hop: publish latency, local vs remote partition" "just perf-hop (perf/scripts/hop.sh)"
{
    echo "Workload: \`${FLAGS[*]}\` (${PERF_WARMUP} s warm-up + ${PERF_DURATION} s per run); engines \`--shards 2 --cpus 0-1 --fsync never --shard-listeners shared --spin-before-park-us 0|50\`, run alternately."
    echo
    echo "| run | spin us | kind | accepting shard | partition shard | msg/s | p50 ms | p90 ms | p99 ms | p99.9 ms | bench CPU | engine CPU |"
    echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    tail -n +2 "$OUT/classes.tsv" | while IFS=$'\t' read -r name spin port accepted partition kind; do
        if [[ ! -s "$OUT/$name.json" ]]; then echo "| $name | $spin | $kind | $accepted | $partition | failed |||||||"; continue; fi
        jq -r --arg run "$name" --arg spin "$spin" --arg kind "$kind" --arg acc "$accepted" --arg part "$partition" \
            --slurpfile cpu "$OUT/$name.cpu.json" '
            def r3: if . == null then "-" else (. * 1000 | round / 1000 | tostring) end;
            def pct: if . == null then "-" else ((. * 1000 | round) / 10 | tostring) + " %" end;
            .latency_ms.publish as $p |
            "| \($run) | \($spin) | \($kind) | \($acc) | \($part) | \(.produce.messages_per_s | round) | \($p.p50_ms | r3) | \($p.p90_ms | r3) | \($p.p99_ms | r3) | \($p.p99_9_ms | r3) | \($cpu[0].bench_share | pct) | \($cpu[0].broker_share | pct) |"' \
            "$OUT/$name.json"
    done
    echo
    echo "Medians over the runs of each kind:"
    echo
    echo "| spin us | kind | runs | p50 ms | p90 ms | p99 ms | p99.9 ms | engine CPU |"
    echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for spin in 0 50; do
        for kind in local remote; do
            files=()
            cpus=()
            while IFS=$'\t' read -r name s _ _ _ k; do
                if [[ "$s" == "$spin" && "$k" == "$kind" && -s "$OUT/$name.json" ]]; then
                    files+=("$OUT/$name.json")
                    cpus+=("$OUT/$name.cpu.json")
                fi
            done < <(tail -n +2 "$OUT/classes.tsv")
            if ((${#files[@]} == 0)); then echo "| $spin | $kind | 0 ||||||"; continue; fi
            jq -s -r --arg spin "$spin" --arg kind "$kind" --argjson cpu "$(jq -s '[.[].broker_share | select(. != null)]' "${cpus[@]}")" '
                def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
                def r3: if . == null then "-" else (. * 1000 | round / 1000 | tostring) end;
                "| \($spin) | \($kind) | \(length) | \([.[].latency_ms.publish.p50_ms] | median | r3) | \([.[].latency_ms.publish.p90_ms] | median | r3) | \([.[].latency_ms.publish.p99_ms] | median | r3) | \([.[].latency_ms.publish.p99_9_ms] | median | r3) | \($cpu | median | if . == null then "-" else ((. * 1000 | round) / 10 | tostring) + " %" end) |"' \
                "${files[@]}"
        done
    done
} >>"$OUT/summary.md"
perf_finish
