//! Replication rules, each on three engine processes with librdkafka:
//!
//! - a leader that took `acks=1` writes its followers never copied, then
//!   died, comes back as a follower of the new leader and truncates those
//!   writes: afterwards the three replicas' segment files are byte for byte
//!   the same;
//! - `acks=all` is refused with NOT_ENOUGH_REPLICAS while the ISR is smaller
//!   than `min.insync.replicas`, and accepted again once the missing replica
//!   has caught up;
//! - kafka-python and confluent-kafka produce to and consume from a topic
//!   replicated on all three nodes, with a consumer group whose coordinator
//!   may be any node (`tests/python/cluster_clients.py`);
//! - a follower's fetch past the leader's log end is refused and does not
//!   move the high watermark.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::time::{Duration, Instant};

use common::{cluster::Cluster, run_python_script};
use kafka_protocol::{
    messages::{
        fetch_request::{FetchPartition, FetchTopic},
        BrokerId, FetchRequest, FetchResponse, TopicName,
    },
    protocol::StrBytes,
    ResponseError,
};
use rdkafka::{
    config::ClientConfig,
    producer::{FutureProducer, FutureRecord},
    types::RDKafkaErrorCode,
};

/// Bound on every wait for the cluster to agree or catch up.
const WAIT: Duration = Duration::from_secs(30);
/// Bound on one message's delivery.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

fn flags(session_timeout_ms: &'static str) -> Vec<&'static str> {
    vec![
        "--shards",
        "1",
        "--broker-session-timeout-ms",
        session_timeout_ms,
        // Long: only fencing, never lag, changes the ISR in these tests.
        "--replica-lag-time-max-ms",
        "60000",
        "--fsync",
        "never",
        // Small segments: the replicas' files are compared whole.
        "--segment-bytes",
        "1048576",
    ]
}

/// Three nodes (`flags(session_timeout_ms)`), ready, with `topic` (one
/// partition on all three, `min.insync.replicas` = `min_insync`) in sync.
fn cluster_in_sync(session_timeout_ms: &'static str, topic: &str, min_insync: &str) -> Cluster {
    let mut cluster = Cluster::start(&flags(session_timeout_ms));
    cluster.wait_ready(WAIT);
    cluster.create_topic(topic, 1, &[("min.insync.replicas", min_insync)]);
    cluster.wait_full_isr(topic, 1, WAIT);
    cluster
}

/// The leader of `topic`'s partition 0, and one of its followers.
fn leader_and_a_follower(cluster: &mut Cluster, topic: &str) -> (i32, i32) {
    let leader = cluster.partition_leader(topic, 0);
    let follower = cluster.node_ids().into_iter().find(|n| *n != leader).unwrap();
    (leader, follower)
}

fn producer(bootstrap: &str, acks: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("retries", "0")
        .set("enable.idempotence", "false")
        .set("linger.ms", "0")
        .set("compression.type", "none")
        .set("message.timeout.ms", "15000")
        .set("reconnect.backoff.max.ms", "500")
        .create()
        .unwrap()
}

/// Sends one message to partition 0 and waits for its delivery outcome.
fn send(producer: &FutureProducer, topic: &str, payload: &str) -> Result<(), RDKafkaErrorCode> {
    let record: FutureRecord<'_, (), str> = FutureRecord::to(topic).payload(payload).partition(0);
    futures_executor::block_on(producer.send(record, SEND_TIMEOUT))
        .map(|_| ())
        .map_err(|(e, _)| e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail))
}

/// Sends every payload in order; each must be acknowledged.
fn send_all(producer: &FutureProducer, topic: &str, payloads: &[String]) {
    for payload in payloads {
        assert_eq!(send(producer, topic, payload), Ok(()), "sending {payload}");
    }
}

/// The bytes of a partition's first segment file on one node.
fn segment_bytes(cluster: &Cluster, node_id: i32, topic: &str) -> Vec<u8> {
    let path = cluster
        .data_dir(node_id)
        .join("partitions")
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_returning_leader_truncates_writes_the_new_leader_never_had() {
    const TOPIC: &str = "diverge";
    let mut cluster = cluster_in_sync("3000", TOPIC, "1");
    let bootstrap = cluster.bootstrap();

    // 1. Replicated on all three.
    let committed: Vec<String> = (0..100).map(|i| format!("committed-{i:04}")).collect();
    send_all(&producer(&bootstrap, "all"), TOPIC, &committed);
    cluster.wait_full_isr(TOPIC, 1, WAIT);

    // 2. The followers pause; the leader takes acks=1 writes alone.
    let old_leader = cluster.partition_leader(TOPIC, 0);
    let followers: Vec<i32> = cluster.node_ids().into_iter().filter(|n| *n != old_leader).collect();
    let leader_only = cluster.kafka_addr(old_leader).to_string();
    for &f in &followers {
        cluster.pause(f, true);
    }
    let doomed: Vec<String> = (0..50).map(|i| format!("doomed-{i:04}")).collect();
    let leader_producer = producer(&leader_only, "1");
    send_all(&leader_producer, TOPIC, &doomed);
    drop(leader_producer);
    assert!(
        contains(&segment_bytes(&cluster, old_leader, TOPIC), "doomed-0049"),
        "the leader stored its acks=1 writes"
    );

    // 3. The leader dies; the followers resume and elect a new leader.
    cluster.kill9(old_leader);
    for &f in &followers {
        cluster.pause(f, false);
    }
    let survivors = followers
        .iter()
        .map(|f| cluster.kafka_addr(*f).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let deadline = Instant::now() + WAIT;
    let new_leader = loop {
        let view = cluster.partitions_seen_by(followers[0], TOPIC);
        if let Ok(view) = view {
            if let Some(p) = view.first() {
                if p.leader >= 0 && p.leader != old_leader {
                    break p.leader;
                }
            }
        }
        assert!(Instant::now() < deadline, "no new leader within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(followers.contains(&new_leader));
    let after: Vec<String> = (0..30).map(|i| format!("after-{i:04}")).collect();
    send_all(&producer(&survivors, "all"), TOPIC, &after);

    // 4. The old leader returns as a follower, truncates and catches up.
    cluster.restart(old_leader);
    cluster.wait_ready(WAIT);
    cluster.wait_full_isr(TOPIC, 1, WAIT);
    let log = cluster.log_tail(old_leader);
    assert!(log.contains("follower truncated"), "old leader's log: {log}");

    // 5. Stop everything and compare the replicas byte for byte.
    for node in cluster.node_ids() {
        cluster.kill9(node);
    }
    let reference = segment_bytes(&cluster, new_leader, TOPIC);
    for node in cluster.node_ids() {
        let bytes = segment_bytes(&cluster, node, TOPIC);
        assert!(bytes == reference, "node {node}'s segment differs from the leader's");
        // A fetch parked on the old leader when the followers paused may have
        // carried its first acks=1 write to them; the last one it never sent.
        assert!(
            !contains(&bytes, "doomed-0049"),
            "node {node} still holds a truncated write"
        );
        assert!(contains(&bytes, "committed-0099") && contains(&bytes, "after-0029"));
    }
}

#[test]
fn acks_all_needs_min_insync_replicas() {
    const TOPIC: &str = "strict";
    let mut cluster = cluster_in_sync("1500", TOPIC, "3");
    let bootstrap = cluster.bootstrap();
    assert_eq!(send(&producer(&bootstrap, "all"), TOPIC, "three-in-sync"), Ok(()));

    // A follower dies: once it is fenced the ISR has two members, fewer than 3.
    let (leader, follower) = leader_and_a_follower(&mut cluster, TOPIC);
    cluster.kill9(follower);
    let deadline = Instant::now() + WAIT;
    loop {
        let isr = cluster
            .partitions_seen_by(leader, TOPIC)
            .ok()
            .and_then(|v| v.first().map(|p| p.isr.len()));
        if isr == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "ISR did not shrink within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        send(&producer(&bootstrap, "all"), TOPIC, "two-in-sync"),
        Err(RDKafkaErrorCode::NotEnoughReplicas)
    );
    // acks=1 does not ask for the ISR.
    assert_eq!(send(&producer(&bootstrap, "1"), TOPIC, "leader-only"), Ok(()));

    // Back in sync: acks=all works again.
    cluster.restart(follower);
    cluster.wait_ready(WAIT);
    cluster.wait_full_isr(TOPIC, 1, WAIT);
    assert_eq!(send(&producer(&bootstrap, "all"), TOPIC, "three-again"), Ok(()));
}

/// Followers copy many partitions per Fetch through an incremental fetch
/// session: after the first fetch they name only what moved, and every
/// acks=all write (which waits for both followers) still completes, on every
/// partition.
#[test]
fn followers_copy_many_partitions_through_fetch_sessions() {
    const TOPIC: &str = "sessions";
    const PARTITIONS: i32 = 8;
    let mut cluster = Cluster::start(&flags("3000"));
    cluster.wait_ready(WAIT);
    cluster.create_topic(TOPIC, PARTITIONS, &[("min.insync.replicas", "3")]);
    cluster.wait_full_isr(TOPIC, PARTITIONS, WAIT);
    let producer = producer(&cluster.bootstrap(), "all");
    for round in 0..3 {
        for partition in 0..PARTITIONS {
            let payload = format!("round {round} partition {partition}");
            let record: FutureRecord<'_, (), str> =
                FutureRecord::to(TOPIC).payload(payload.as_str()).partition(partition);
            let sent = futures_executor::block_on(producer.send(record, SEND_TIMEOUT));
            assert!(sent.is_ok(), "{payload}: {:?}", sent.err());
        }
    }
    let metric = |node: i32, name: &str| -> u64 {
        let metrics = String::from_utf8_lossy(&cluster.http_get(node, "/metrics").body).into_owned();
        metrics
            .lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let incremental: u64 = cluster
        .node_ids()
        .into_iter()
        .map(|node| metric(node, "shardline_fetch_sessions_incremental_total"))
        .sum();
    assert!(incremental > 0, "followers fetched incrementally");
    for node in cluster.node_ids() {
        assert!(
            metric(node, "shardline_fetch_sessions_not_made_total") == 0,
            "node {node} refused a follower a session"
        );
    }
}

/// Two shards per node: every node advertises every node's shards as brokers
/// of their own, clients and followers reach each partition's shard on its
/// node directly.
#[test]
fn python_clients_use_a_replicated_topic_and_a_group() {
    let mut two_shards = flags("3000");
    let shards = two_shards.iter().position(|f| *f == "--shards").unwrap();
    two_shards[shards + 1] = "2";
    let mut cluster = Cluster::start(&two_shards);
    cluster.wait_ready(WAIT);
    run_python_script("cluster_clients.py", &cluster.bootstrap());
}

/// Kafka's rule for an acks=all batch the ISR shrank under: the batch is
/// stored and committed, but the producer learns it has fewer copies than
/// `min.insync.replicas` (NOT_ENOUGH_REPLICAS_AFTER_APPEND), never success.
#[test]
fn acks_all_answers_not_enough_replicas_after_append_when_the_isr_shrinks_while_waiting() {
    const TOPIC: &str = "shrinking";
    let mut cluster = cluster_in_sync("1500", TOPIC, "3");
    let bootstrap = cluster.bootstrap();
    let producer = producer(&bootstrap, "all");
    assert_eq!(send(&producer, TOPIC, "three-copies"), Ok(()));

    // A follower stops (SIGSTOP): the next batch waits for it until it is
    // fenced and leaves the ISR, which lets the high watermark pass with
    // only two copies.
    let (_, follower) = leader_and_a_follower(&mut cluster, TOPIC);
    cluster.pause(follower, true);
    let answer = send(&producer, TOPIC, "two-copies");
    cluster.pause(follower, false);
    assert_eq!(answer, Err(RDKafkaErrorCode::NotEnoughReplicasAfterAppend));
}

/// The high watermark as a consumer's Fetch (replica_id -1) at offset 0 of
/// `topic`'s partition 0 on `node` reports it.
fn high_watermark_on(cluster: &Cluster, node: i32, topic: &str) -> i64 {
    let response = fetch_as(cluster, node, topic, -1, 0);
    response.responses[0].partitions[0].high_watermark
}

/// One Fetch of `topic`'s partition 0 on `node`, as `replica_id`, from `offset`.
fn fetch_as(cluster: &Cluster, node: i32, topic: &str, replica_id: i32, offset: i64) -> FetchResponse {
    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.fetch_offset = offset;
    partition.partition_max_bytes = 1 << 20;
    let mut fetch_topic = FetchTopic::default();
    fetch_topic.topic = TopicName(StrBytes::from_string(topic.to_string()));
    fetch_topic.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(replica_id);
    request.max_wait_ms = 0;
    request.max_bytes = 1 << 20;
    request.topics = vec![fetch_topic];
    common::call(cluster.kafka_addr(node), 12, &request).unwrap()
}

/// A follower's fetch offset is its log end, and it moves the leader's high
/// watermark. One past the leader's own log end names data the leader never
/// had: it is refused with OFFSET_OUT_OF_RANGE and moves nothing (before, it
/// counted as that follower having everything, and the high watermark
/// passed a write the follower never copied).
#[test]
fn a_follower_fetch_past_the_leaders_log_end_is_refused_and_moves_nothing() {
    const TOPIC: &str = "lying-follower";
    let mut cluster = cluster_in_sync("60000", TOPIC, "1");
    let bootstrap = cluster.bootstrap();
    assert_eq!(send(&producer(&bootstrap, "all"), TOPIC, "three-copies"), Ok(()));

    // One follower stops: an acks=1 write stays above the high watermark.
    let (leader, follower) = leader_and_a_follower(&mut cluster, TOPIC);
    cluster.pause(follower, true);
    assert_eq!(send(&producer(&bootstrap, "1"), TOPIC, "one-copy"), Ok(()));
    let deadline = Instant::now() + WAIT;
    while high_watermark_on(&cluster, leader, TOPIC) != 1 {
        assert!(Instant::now() < deadline, "the high watermark settles at 1");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A fetch in the stopped follower's name, far past the leader's end.
    let lying = fetch_as(&cluster, leader, TOPIC, follower, 1_000);
    let answer = &lying.responses[0].partitions[0];
    let high_watermark = high_watermark_on(&cluster, leader, TOPIC);
    cluster.pause(follower, false);
    assert_eq!(answer.error_code, ResponseError::OffsetOutOfRange.code());
    assert_eq!(
        high_watermark, 1,
        "the write the follower never copied stays above the high watermark"
    );
}

/// `/ready` is what an orchestrator waits on: a node that has lost its
/// metadata quorum answers 503 and says why, while `/health` (the process
/// and its shards answer) stays 200; with a quorum back it answers 200.
#[test]
fn ready_answers_503_without_a_metadata_quorum_and_200_with_one() {
    let mut cluster = Cluster::start(&flags("3000"));
    cluster.wait_ready(WAIT);
    for node in cluster.node_ids() {
        let ready = cluster.http_get(node, "/ready");
        assert_eq!(ready.status, 200, "node {node}: {}", ready.body_text());
    }
    let leader = cluster.metadata_leader();
    let survivor = cluster.node_ids().into_iter().find(|&n| n != leader).unwrap();
    let other = cluster
        .node_ids()
        .into_iter()
        .find(|&n| n != leader && n != survivor)
        .unwrap();
    cluster.kill9(leader);
    cluster.kill9(other);
    let deadline = Instant::now() + WAIT;
    let not_ready = loop {
        let ready = cluster.http_get(survivor, "/ready");
        if ready.status == 503 {
            break ready.body_text();
        }
        assert!(
            Instant::now() < deadline,
            "/ready still {} without a quorum",
            ready.status
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(not_ready.contains("no metadata leader"), "{not_ready}");
    let health = cluster.http_get(survivor, "/health");
    assert_eq!(health.status, 200, "{}", health.body_text());

    cluster.restart(other);
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = cluster.http_get(survivor, "/ready");
        if ready.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready still {} with a quorum back: {}",
            ready.status,
            ready.body_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
