#!/usr/bin/env bash
# perf-sizes: produce throughput by message size (PERF_SIZES, default 100 B, 1 KiB, 10 KiB) at
# rate 0, 2 shards, fsync never, THROUGHPUT_FLAGS otherwise, on each medium of PERF_MEDIA (default
# "disk tmpfs", see shards.sh); PERF_ROUNDS rounds (default 2), the order of the sizes rotating
# each round, a fresh engine and data directory per run.
source "$(dirname "$0")/lib.sh"

ROUNDS="${PERF_ROUNDS:-2}"
read -ra SIZES <<<"${PERF_SIZES:-100 1024 10240}"
read -ra MEDIA <<<"${PERF_MEDIA:-disk tmpfs}"
perf_build
perf_scenario sizes

if perf_measuring; then
    perf_batch_begin
    for ((round = 1; round <= ROUNDS; round++)); do
        count=${#SIZES[@]}
        for ((i = 0; i < count; i++)); do
            size="${SIZES[$(((i + round - 1) % count))]}"
            for medium in "${MEDIA[@]}"; do
                PERF_DATA_ROOT="$(perf_media_root "$medium")"
                perf_batch_checkpoint
                perf_log "round $round: $size B messages, data on $medium"
                engine_start "$medium-b$size-r$round" --shards 2 --cpus 0-1 --fsync never
                run_bench "$medium/size-$size/round-$round" --message-size "$size" "${THROUGHPUT_FLAGS[@]}" \
                    --shards 2 --fsync never || true
                broker_stop
            done
        done
    done
    perf_batch_end
fi

perf_summary_head "Message-size sweep: produce throughput, 2 shards, fsync never" "just perf-sizes (perf/scripts/sizes.sh, PERF_ROUNDS=$ROUNDS, PERF_MEDIA=\"${MEDIA[*]}\")"
{
    echo "Workload: \`--message-size SIZE ${THROUGHPUT_FLAGS[*]}\`; engine \`--shards 2 --cpus 0-1 --fsync never\`. Data directory: disk = under perf/out/ (ext4 on virtio-blk), tmpfs = /dev/shm."
    for medium in "${MEDIA[@]}"; do
        echo
        echo "### Data on $medium"
        echo
        perf_table_header
        for ((round = 1; round <= ROUNDS; round++)); do
            for size in "${SIZES[@]}"; do perf_row "$medium/size-$size/round-$round" "$size B, round $round"; done
        done
        echo
        echo "Medians over the rounds:"
        echo
        echo "| message | msg/s | MB/s | p50 ms | p99 ms | bench CPU | engine CPU | machine busy |"
        echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        for size in "${SIZES[@]}"; do
            dir="$OUT/$medium/size-$size"
            echo "| $size B | $(perf_round "$(perf_median "$dir" .produce.messages_per_s)" 0) | $(perf_round "$(perf_median "$dir" .produce.mb_per_s)" 2) | $(perf_round "$(perf_median "$dir" .latency_ms.publish.p50_ms)" 3) | $(perf_round "$(perf_median "$dir" .latency_ms.publish.p99_ms)" 3) | $(perf_percent "$(perf_median_cpu "$dir" bench_share)") | $(perf_percent "$(perf_median_cpu "$dir" broker_share)") | $(perf_percent "$(perf_median_cpu "$dir" machine_busy_share)") |"
        done
    done
} >>"$OUT/summary.md"
perf_finish
