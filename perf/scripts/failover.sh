#!/usr/bin/env bash
# perf-failover: the cluster failure test (engine/tests/cluster_failover.rs) built in release and run
# on a quiet machine: three engine processes on 127.0.0.1, an idempotent acks=all producer at
# 300 msg/s, ten kill -9s of the metadata leader or the leader of partition 0, each followed by a
# restart. Records the test's own report: per kill, the time from the kill to the first acknowledged
# message sent after it, to the first one on the killed node's partitions, and until the restarted
# node is back in every ISR; then min/median/max and the message counts.
source "$(dirname "$0")/lib.sh"

perf_scenario failover
if perf_measuring; then
    if [[ "${PERF_SKIP_BUILD:-0}" != 1 ]]; then
        perf_log "building the failover test (release)"
        (cd "$PERF_ROOT" && cargo test --release --locked -p shardline-engine --test cluster_failover --no-run)
    fi
    perf_batch_begin
    perf_log "running the failover test (about 70 s)"
    (cd "$PERF_ROOT" && cargo test --release --locked -p shardline-engine --test cluster_failover -- --nocapture) \
        >"$OUT/output.txt" 2>&1 || perf_log "the failover test FAILED: see $OUT/output.txt"
    perf_batch_end
fi

perf_summary_head "Cluster failover: kill -9 of leaders under acks=all load" "just perf-failover (perf/scripts/failover.sh)" none
{
    echo "Engine flags (every node): \`--shards 1 --broker-session-timeout-ms 1500 --replica-lag-time-max-ms 3000 --default-replication-factor 3 --fsync never\`; topic of 3 partitions, replication factor 3, min.insync.replicas=2; librdkafka idempotent producer, acks=all, 300 msg/s."
    echo
    echo '```'
    grep -E '^(first acknowledgement|kill |producer:|failover|kill -> |high watermarks|messages:|nodes killed|test result)' "$OUT/output.txt" || echo "(no report: the test did not run to the end)"
    echo '```'
} >>"$OUT/summary.md"
perf_finish
