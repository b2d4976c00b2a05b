#!/usr/bin/env bash
# perf-metrics: the cost of the metrics endpoint (issue 14 section 5). The same engine and workload with
# /metrics scraped every second (PERF_SCRAPE_INTERVAL, curl, as a Prometheus server would) and not
# scraped, in one run: produce throughput (1 KiB, THROUGHPUT_FLAGS) and publish latency at a fixed
# rate (PERF_METRICS_RATE msg/s, default 5000, LATENCY_FLAGS), engine `--shards 2 --cpus 0-1 --fsync
# never`, PERF_ROUNDS rounds (default 3) whose order alternates (off,on then on,off ...), a fresh engine
# and data directory per run. Every scrape's status and size go to $OUT/NAME.scrapes.tsv; a failed
# scrape is reported. Target: throughput within 2 % (median of rounds, scraped / not scraped).
source "$(dirname "$0")/lib.sh"

ROUNDS="${PERF_ROUNDS:-3}"
RATE="${PERF_METRICS_RATE:-5000}"
SCRAPE_INTERVAL="${PERF_SCRAPE_INTERVAL:-1}"
ENGINE_FLAGS=(--shards 2 --cpus 0-1 --fsync never)
perf_build
perf_scenario metrics

# scraper_start NAME: curl /metrics of the running engine every SCRAPE_INTERVAL s in the background,
# one line per scrape (time, HTTP status, bytes, seconds) in $OUT/NAME.scrapes.tsv. Sets SCRAPER_PID.
scraper_start() {
    local file="$OUT/$1.scrapes.tsv"
    mkdir -p "$(dirname "$file")"
    printf 'unix_ms\tstatus\tbytes\tseconds\n' >"$file"
    (
        while true; do
            curl -s -o /dev/null -w "$(date +%s%3N)\t%{http_code}\t%{size_download}\t%{time_total}\n" \
                --max-time 10 "http://127.0.0.1:$BROKER_HTTP_PORT/metrics" >>"$file" || true
            sleep "$SCRAPE_INTERVAL"
        done
    ) &
    SCRAPER_PID=$!
    PERF_PIDS+=("$SCRAPER_PID")
}

scraper_stop() {
    kill -TERM "$SCRAPER_PID" 2>/dev/null || true
    perf_wait_exit "$SCRAPER_PID" 5 || kill -KILL "$SCRAPER_PID" 2>/dev/null || true
    local remaining=() pid
    for pid in "${PERF_PIDS[@]}"; do
        if [[ "$pid" != "$SCRAPER_PID" ]]; then remaining+=("$pid"); fi
    done
    PERF_PIDS=("${remaining[@]+"${remaining[@]}"}")
}

# one_run MODE ROUND: a throughput run and a fixed-rate run against a fresh engine, scraped (on) or not (off).
one_run() {
    local mode="$1" round="$2" name
    engine_start "$mode-r$round" "${ENGINE_FLAGS[@]}"
    for kind in max rate; do
        name="$kind/$mode/round-$round"
        if [[ "$mode" == on ]]; then scraper_start "$name"; fi
        if [[ "$kind" == max ]]; then
            run_bench "$name" --message-size 1024 "${THROUGHPUT_FLAGS[@]}" --shards 2 --fsync never || true
        else
            run_bench "$name" --message-size 1024 "${LATENCY_FLAGS[@]}" --rate "$RATE" --shards 2 --fsync never || true
        fi
        if [[ "$mode" == on ]]; then scraper_stop; fi
    done
    broker_stop
}

perf_ab_rounds off on one_run "/metrics scraping "

perf_summary_head "Cost of the metrics endpoint: /metrics scraped every ${SCRAPE_INTERVAL} s vs not" "just perf-metrics (perf/scripts/metrics.sh, PERF_ROUNDS=$ROUNDS, PERF_METRICS_RATE=$RATE)"
{
    echo "Engine \`${ENGINE_FLAGS[*]}\`; bench unpinned; \`max\`: \`--message-size 1024 ${THROUGHPUT_FLAGS[*]}\`; \`rate\`: \`--message-size 1024 ${LATENCY_FLAGS[*]} --rate $RATE\`. Scraping: curl of /metrics every ${SCRAPE_INTERVAL} s during the whole bench run."
    for kind in max rate; do
        echo
        echo "### $kind"
        echo
        perf_table_header
        for ((round = 1; round <= ROUNDS; round++)); do
            for mode in off on; do perf_row "$kind/$mode/round-$round" "scraping $mode, round $round"; done
        done
        echo
        echo "| scraping | msg/s (median) | p50 ms | p99 ms | engine CPU | scrapes (failed) |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: |"
        for mode in off on; do
            dir="$OUT/$kind/$mode"
            scrapes="-"
            if [[ "$mode" == on ]]; then
                scrapes="$(cat "$dir"/*.scrapes.tsv 2>/dev/null | awk -F'\t' 'NR > 1 && $1 != "unix_ms" { n++; if ($2 != 200) f++ } END { printf "%d (%d)", n, f }')"
            fi
            echo "| $mode | $(perf_round "$(perf_median "$dir" .produce.messages_per_s)" 0) | $(perf_round "$(perf_median "$dir" .latency_ms.publish.p50_ms)" 3) | $(perf_round "$(perf_median "$dir" .latency_ms.publish.p99_ms)" 3) | $(perf_percent "$(perf_median_cpu "$dir" broker_share)") | $scrapes |"
        done
        off="$(perf_median "$OUT/$kind/off" .produce.messages_per_s)"
        on="$(perf_median "$OUT/$kind/on" .produce.messages_per_s)"
        echo
        echo "Throughput, scraped / not scraped (medians): $(jq -n -r --argjson a "${on:-null}" --argjson b "${off:-null}" 'if $a == null or $b == null then "-" else ($a / $b * 1000 | round) / 1000 end') (target >= 0.98)"
    done
} >>"$OUT/summary.md"
perf_finish
