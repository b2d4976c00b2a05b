#!/usr/bin/env bash
# perf-curve: publish latency against throughput. For each series (PERF_CURVE_SERIES, default
# "shardline-never shardline-always shardline-never-tmpfs tansu"; tansu only if it is installed;
# see series_start in lib.sh) first the maximum (rate 0), then fixed open-loop rates at 10 %, 20 %,
# ... 100 % of that series' own maximum. The points of all series
# are interleaved (10 % of each, then 20 % of each, ...; the order of the series alternates), each
# run on a fresh broker. 1 KiB messages, LATENCY_FLAGS (8 partitions, 2 producers, 64 KiB batches,
# linger 1 ms). Results: $OUT/<series>/max.json and $OUT/<series>/pNNN.json; chart with perf-plots.
source "$(dirname "$0")/lib.sh"

read -ra SERIES <<<"${PERF_CURVE_SERIES:-shardline-never shardline-always shardline-never-tmpfs tansu}"
read -ra PERCENTS <<<"${PERF_CURVE_PERCENTS:-10 20 30 40 50 60 70 80 90 100}"
perf_build
# PERF_CURVE_NAME: another results directory (perf/out/NAME, perf/baselines/NAME) for extra series.
perf_scenario "${PERF_CURVE_NAME:-curve}"

active=()
for series in "${SERIES[@]}"; do
    if ! perf_measuring; then
        if [[ -d "$OUT/$series" ]]; then active+=("$series"); fi
        continue
    fi
    if [[ "$series" == tansu* ]] && ! perf_have_tansu; then
        perf_log "no tansu ($TANSU_FEATURES) at $TANSU_BIN: curve without $series (just perf-install-peers installs it)"
        continue
    fi
    active+=("$series")
done

if perf_measuring; then
    declare -A MAX_RATE
    perf_batch_begin
    for series in "${active[@]}"; do
        perf_log "$series: maximum (rate 0)"
        series_start "$series" "$series-max"
        run_bench "$series/max" --message-size 1024 "${LATENCY_FLAGS[@]}" --rate 0 "${SERIES_BENCH_FLAGS[@]}" || true
        broker_stop
        max="$(perf_json_field "$series/max" '.produce.messages_per_s')"
        MAX_RATE[$series]="${max:-0}"
        perf_log "$series: maximum $max msg/s"
    done

    index=0
    for percent in "${PERCENTS[@]}"; do
        ordered=("${active[@]}")
        if ((index % 2 == 1)); then
            ordered=()
            for ((i = ${#active[@]} - 1; i >= 0; i--)); do ordered+=("${active[$i]}"); done
        fi
        index=$((index + 1))
        for series in "${ordered[@]}"; do
            # Rates rounded to 100 msg/s.
            rate="$(jq -n -r --argjson max "${MAX_RATE[$series]}" --argjson p "$percent" '($max * $p / 100 / 100 | round) * 100')"
            if ((rate <= 0)); then continue; fi
            perf_batch_checkpoint
            perf_log "$series: $percent % = $rate msg/s"
            series_start "$series" "$series-p$percent"
            run_bench "$series/p$(printf '%03d' "$percent")" --message-size 1024 "${LATENCY_FLAGS[@]}" --rate "$rate" \
                "${SERIES_BENCH_FLAGS[@]}" || true
            broker_stop
        done
    done
    perf_batch_end
fi

perf_summary_head "Latency against throughput (1 KiB messages)" "just perf-curve (perf/scripts/curve.sh, PERF_CURVE_SERIES=\"${SERIES[*]}\"${PERF_CURVE_NAME:+, PERF_CURVE_NAME=$PERF_CURVE_NAME})"
{
    echo "Workload: \`--message-size 1024 ${LATENCY_FLAGS[*]} --rate R\`, R = 10 % … 100 % of each series' own maximum (its \`--rate 0\` run)."
    for series in "${active[@]}"; do
        echo
        echo "### $(series_title "$series")"
        echo
        perf_table_header
        perf_row "$series/max" "maximum (rate 0)"
        for percent in "${PERCENTS[@]}"; do
            perf_row "$series/p$(printf '%03d' "$percent")" "$percent %"
        done
    done
} >>"$OUT/summary.md"
perf_finish
