#!/usr/bin/env bash
# perf-tls: what TLS costs (issue 13 section 5). One engine with two listeners, PLAINTEXT and SSL
# (rustls, a 2048-bit RSA certificate made here by openssl, TLS 1.3), and the same bench runs
# against one or the other, in one run: produce throughput (1 KiB, THROUGHPUT_FLAGS) and publish
# latency at a fixed rate (PERF_TLS_RATE msg/s, default 5000, LATENCY_FLAGS), engine `--shards 2
# --cpus 0-1 --fsync never`, PERF_ROUNDS rounds (default 4) whose order alternates (plain,tls then
# tls,plain ...), a fresh engine and data directory per run; bench unpinned. The engine is started
# the same way in both modes (both listeners bound), so only the client's listener differs.
source "$(dirname "$0")/lib.sh"

ROUNDS="${PERF_ROUNDS:-4}"
RATE="${PERF_TLS_RATE:-5000}"
ENGINE_FLAGS=(--shards 2 --cpus 0-1 --fsync never)
perf_build
perf_scenario tls

PKI="$OUT/pki"
mkdir -p "$PKI"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.pem" -days 2 \
    -subj /CN=perf-tls-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$PKI/server.key" -out "$PKI/server.csr" -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$PKI/ext"
openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
    -out "$PKI/server.pem" -days 2 -extfile "$PKI/ext" 2>/dev/null

# one_run MODE ROUND: a throughput run and a fixed-rate run against a fresh engine, over the
# PLAINTEXT (plain) or the SSL (tls) listener.
one_run() {
    local mode="$1" round="$2" name tls_port tls=()
    tls_port="$(perf_free_port 2)"
    engine_start "$mode-r$round" "${ENGINE_FLAGS[@]}" --listener "SECURE=SSL://127.0.0.1:$tls_port" \
        --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key"
    local port="$BROKER_PORT"
    if [[ "$mode" == tls ]]; then
        port="$tls_port"
        tls=(--tls-ca "$PKI/ca.pem")
    fi
    for kind in max rate; do
        name="$kind/$mode/round-$round"
        if [[ "$kind" == max ]]; then
            BROKER_PORT="$port" run_bench "$name" --message-size 1024 "${THROUGHPUT_FLAGS[@]}" --shards 2 \
                --fsync never "${tls[@]}" || true
        else
            BROKER_PORT="$port" run_bench "$name" --message-size 1024 "${LATENCY_FLAGS[@]}" --rate "$RATE" \
                --shards 2 --fsync never "${tls[@]}" || true
        fi
    done
    broker_stop
}

perf_ab_rounds plain tls one_run

perf_summary_head "TLS against plaintext: the same engine, the client on its SSL or its PLAINTEXT listener" "just perf-tls (perf/scripts/tls.sh, PERF_ROUNDS=$ROUNDS, PERF_TLS_RATE=$RATE)"
{
    echo "Engine \`${ENGINE_FLAGS[*]} --listener SECURE=SSL://… --tls-cert --tls-key\` (rustls, ring, RSA 2048); bench unpinned, \`--tls-ca\` on the tls runs; \`max\`: \`--message-size 1024 ${THROUGHPUT_FLAGS[*]}\`; \`rate\`: \`--message-size 1024 ${LATENCY_FLAGS[*]} --rate $RATE\`."
    for kind in max rate; do
        echo
        echo "### $kind"
        echo
        perf_table_header
        for ((round = 1; round <= ROUNDS; round++)); do
            for mode in plain tls; do perf_row "$kind/$mode/round-$round" "$mode, round $round"; done
        done
        echo
        echo "| listener | msg/s (median) | p50 ms | p99 ms | p99.9 ms | engine CPU | bench CPU |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        for mode in plain tls; do
            dir="$OUT/$kind/$mode"
            echo "| $mode | $(perf_round "$(perf_median "$dir" .produce.messages_per_s)" 0) | $(perf_round "$(perf_median "$dir" .latency_ms.publish.p50_ms)" 3) | $(perf_round "$(perf_median "$dir" .latency_ms.publish.p99_ms)" 3) | $(perf_round "$(perf_median "$dir" .latency_ms.publish.p99_9_ms)" 3) | $(perf_percent "$(perf_median_cpu "$dir" broker_share)") | $(perf_percent "$(perf_median_cpu "$dir" bench_share)") |"
        done
        plain="$(perf_median "$OUT/$kind/plain" .produce.messages_per_s)"
        tls="$(perf_median "$OUT/$kind/tls" .produce.messages_per_s)"
        echo
        echo "Throughput, TLS / plaintext (medians): $(jq -n -r --argjson a "${tls:-null}" --argjson b "${plain:-null}" 'if $a == null or $b == null then "-" else ($a / $b * 1000 | round) / 1000 end')"
    done
} >>"$OUT/summary.md"
perf_finish
