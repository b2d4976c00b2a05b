#!/usr/bin/env bash
# perf-failover: the cluster failure test (engine/tests/cluster_failover.rs) built in release and run
# on a quiet machine: three engine processes on 127.0.0.1 with the default liveness settings, an
# idempotent acks=all producer at 300 msg/s, PERF_FAILOVER_KILLS (default 20) kill -9s of the
# metadata leader or the leader of partition 0, each followed by a restart. Records the test's own
# report: per kill, the time from the kill to the first acknowledged message sent after it, to the
# first one on the killed node's partitions, and until the restarted node is back in every ISR; then
# min/median/max and the message counts. Then the no-false-fencing test: the same cluster driven by
# the release `bench` at full speed (4 producers, 8 partitions, 128-byte messages, acks=all) for 20 s; every fence
# event in the nodes' logs is counted (the test fails on any).
source "$(dirname "$0")/lib.sh"

perf_scenario failover
if perf_measuring; then
    if [[ "${PERF_SKIP_BUILD:-0}" != 1 ]]; then
        perf_log "building the failover test (release)"
        (cd "$PERF_ROOT" && cargo build --release --locked -p shardline-engine -p shardline-bench &&
            cargo test --release --locked -p shardline-engine --test cluster_failover --no-run)
    fi
    perf_batch_begin
    perf_log "running the failover test (${PERF_FAILOVER_KILLS:-20} kills)"
    (cd "$PERF_ROOT" && SHARDLINE_FAILOVER_KILLS="${PERF_FAILOVER_KILLS:-20}" cargo test --release --locked \
        -p shardline-engine --test cluster_failover -- --nocapture acknowledged_messages) \
        >"$OUT/output.txt" 2>&1 || perf_log "the failover test FAILED: see $OUT/output.txt"
    perf_log "running the no-false-fencing load test (about 40 s)"
    (cd "$PERF_ROOT" && cargo test --release --locked -p shardline-engine --test cluster_failover -- \
        --nocapture --ignored no_broker_is_fenced) \
        >"$OUT/load-output.txt" 2>&1 || perf_log "the no-false-fencing test FAILED: see $OUT/load-output.txt"
    perf_batch_end
fi

perf_summary_head "Cluster failover: kill -9 of leaders under acks=all load" "just perf-failover (perf/scripts/failover.sh)" none
{
    echo "Engine flags (every node): \`--shards 1 --replica-lag-time-max-ms 3000 --default-replication-factor 3 --fsync never\` (liveness at its defaults: heartbeat 250 ms, session timeout 1.5 s); topic of 3 partitions, replication factor 3, min.insync.replicas=2; librdkafka idempotent producer, acks=all, 300 msg/s."
    echo
    echo '```'
    grep -E '^(first acknowledgement|kill |producer:|failover|kill -> |high watermarks|messages:|nodes killed|test result)' "$OUT/output.txt" || echo "(no report: the test did not run to the end)"
    echo '```'
    echo
    echo "No false fencing: the same cluster, \`bench --partitions 8 --producers 4 --message-size 128 --batch-bytes 65536 --linger-ms 5 --acks all --rate 0 --duration 20s\`:"
    echo
    echo '```'
    grep -E '^(produce |publish |fence events|test result)' "$OUT/load-output.txt" 2>/dev/null || echo "(no report)"
    echo '```'
} >>"$OUT/summary.md"
perf_finish
