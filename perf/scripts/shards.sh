#!/usr/bin/env bash
# perf-shards: produce throughput with 1 shard (--shards 1 --cpus 0) against 2 shards (--shards 2
# --cpus 0-1), fsync never, the same workload (1 KiB messages and THROUGHPUT_FLAGS: rate 0,
# 8 partitions, 2 producers, 64 KiB batches, linger 2 ms), on each medium of PERF_MEDIA (default
# "disk tmpfs": the data directory under perf/out/, or on /dev/shm so that no disk writeback sits
# below the log), PERF_ROUNDS rounds (default 3) whose order alternates (1,2 then 2,1 ...), a fresh
# engine and data directory per run. Reports msg/s, MB/s, latency, and the CPU share of the bench
# process, of the engine and of the whole machine over the measured window.
source "$(dirname "$0")/lib.sh"

ROUNDS="${PERF_ROUNDS:-3}"
read -ra MEDIA <<<"${PERF_MEDIA:-disk tmpfs}"
perf_build
perf_scenario shards

declare -A ENGINE_FLAGS=([1]="--shards 1 --cpus 0" [2]="--shards 2 --cpus 0-1")

if perf_measuring; then
    perf_batch_begin
    for ((round = 1; round <= ROUNDS; round++)); do
        if ((round % 2 == 1)); then order=(1 2); else order=(2 1); fi
        for medium in "${MEDIA[@]}"; do
            PERF_DATA_ROOT="$(perf_media_root "$medium")"
            for shards in "${order[@]}"; do
                perf_batch_checkpoint
                perf_log "round $round: $shards shard(s), data on $medium"
                # shellcheck disable=SC2086 # the engine flags are words on purpose
                engine_start "$medium-s$shards-r$round" ${ENGINE_FLAGS[$shards]} --fsync never
                run_bench "$medium/shards-$shards/round-$round" --message-size 1024 "${THROUGHPUT_FLAGS[@]}" \
                    --shards "$shards" --fsync never || true
                broker_stop
            done
        done
    done
    perf_batch_end
fi

perf_summary_head "Shard sweep: produce throughput, 1 vs 2 shards, fsync never" "just perf-shards (perf/scripts/shards.sh, PERF_ROUNDS=$ROUNDS, PERF_MEDIA=\"${MEDIA[*]}\")"
{
    echo "Workload: \`--message-size 1024 ${THROUGHPUT_FLAGS[*]}\`; engines \`--shards 1 --cpus 0 --fsync never\` and \`--shards 2 --cpus 0-1 --fsync never\`; bench unpinned. Data directory: disk = under perf/out/ (ext4 on virtio-blk), tmpfs = /dev/shm."
    for medium in "${MEDIA[@]}"; do
        echo
        echo "### Data on $medium"
        echo
        perf_table_header
        for ((round = 1; round <= ROUNDS; round++)); do
            for shards in 1 2; do perf_row "$medium/shards-$shards/round-$round" "$shards shard(s), round $round"; done
        done
        echo
        echo "Medians over the rounds:"
        echo
        echo "| shards | msg/s | MB/s | p50 ms | p99 ms | bench CPU | engine CPU | machine busy | msg per engine CPU-second |"
        echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        for shards in 1 2; do
            dir="$OUT/$medium/shards-$shards"
            rate="$(perf_median "$dir" .produce.messages_per_s)"
            engine="$(perf_median_cpu "$dir" broker_share)"
            per_cpu="$(jq -n -r --argjson r "${rate:-null}" --argjson e "${engine:-null}" --argjson c "$CORES" \
                'if $r == null or $e == null or $e == 0 then "-" else ($r / ($e * $c) | round | tostring) end')"
            echo "| $shards | $(perf_round "$rate" 0) | $(perf_round "$(perf_median "$dir" .produce.mb_per_s)" 2) | $(perf_round "$(perf_median "$dir" .latency_ms.publish.p50_ms)" 3) | $(perf_round "$(perf_median "$dir" .latency_ms.publish.p99_ms)" 3) | $(perf_percent "$(perf_median_cpu "$dir" bench_share)") | $(perf_percent "$engine") | $(perf_percent "$(perf_median_cpu "$dir" machine_busy_share)") | $per_cpu |"
        done
        one="$(perf_median "$OUT/$medium/shards-1" .produce.messages_per_s)"
        two="$(perf_median "$OUT/$medium/shards-2" .produce.messages_per_s)"
        echo
        echo "Ratio of medians, 2 shards / 1 shard, data on $medium: $(jq -n -r --argjson a "${two:-null}" --argjson b "${one:-null}" 'if $a == null or $b == null then "-" else ($a / $b * 100 | round) / 100 end') (target >= 1.5)"
    done
} >>"$OUT/summary.md"
perf_finish
