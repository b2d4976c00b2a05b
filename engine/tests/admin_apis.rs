//! The Kafka admin APIs operators' tools use (issue 14, section 2), with real
//! clients against real engine processes: kafka-python's KafkaAdminClient and
//! confluent-kafka's AdminClient on one node (`tests/python/admin_apis.py`),
//! ElectLeaders and reassignments on a three-node cluster, `shardctl` on that
//! cluster, and the engine's `--log-format json` and slow-request lines.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{call, cluster::Cluster, python_script_output, Engine};
use kafka_protocol::{
    messages::{
        alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic},
        create_topics_request::CreatableTopic,
        elect_leaders_request::TopicPartitions,
        AlterPartitionReassignmentsRequest, BrokerId, CreateTopicsRequest, ElectLeadersRequest,
        ListPartitionReassignmentsRequest, TopicName,
    },
    protocol::StrBytes,
};

/// Kafka error codes the answers are checked against.
const NONE: i16 = 0;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
const ELECTION_NOT_NEEDED: i16 = 84;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

/// Longest any wait below takes before the test fails.
const WAIT_MAX: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

fn run_script(args: &[&str]) {
    let (ok, output) = python_script_output("admin_apis.py", args);
    assert!(ok, "admin_apis.py {args:?} failed:\n{output}");
}

#[test]
fn python_admin_clients_alter_configs_delete_records_and_describe() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    // Small segments: the retention and DeleteRecords checks need several.
    let mut engine = Engine::start_in(
        &data_dir,
        &["--shards", "2", "--fsync", "never", "--segment-bytes", "65536"],
    );
    let data = data_dir.display().to_string();
    run_script(&[&engine.bootstrap(), &data, "before-restart"]);
    let log = engine.log();
    assert!(log.contains("topic configs applied"), "configs applied live:\n{log}");
    assert!(log.contains("records deleted below the new log start"), "{log}");
    engine.restart();
    run_script(&[&engine.bootstrap(), &data, "after-restart"]);
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn elect(addr: std::net::SocketAddr, name: &str, partitions: Vec<i32>) -> Vec<(i32, i16)> {
    let mut wanted = TopicPartitions::default();
    wanted.topic = topic(name);
    wanted.partitions = partitions;
    let mut request = ElectLeadersRequest::default();
    request.election_type = 0;
    request.timeout_ms = 10_000;
    request.topic_partitions = Some(vec![wanted]);
    let response = call(addr, 2, &request).unwrap();
    assert_eq!(response.error_code, NONE);
    response
        .replica_election_results
        .iter()
        .flat_map(|t| t.partition_result.iter().map(|p| (p.partition_id, p.error_code)))
        .collect()
}

fn reassign(addr: std::net::SocketAddr, name: &str, replicas: Option<Vec<i32>>) -> i16 {
    let mut partition = ReassignablePartition::default();
    partition.partition_index = 0;
    partition.replicas = replicas.map(|ids| ids.into_iter().map(BrokerId).collect());
    let mut wanted = ReassignableTopic::default();
    wanted.name = topic(name);
    wanted.partitions = vec![partition];
    let mut request = AlterPartitionReassignmentsRequest::default();
    request.timeout_ms = 10_000;
    request.topics = vec![wanted];
    let response = call(addr, 0, &request).unwrap();
    assert_eq!(response.error_code, NONE);
    response.responses[0].partitions[0].error_code
}

/// `target/debug/shardctl` (scripts/test-all builds the workspace first, as
/// lifecycle.rs relies on too).
fn shardctl(args: &[&str]) -> std::process::Output {
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/shardctl");
    Command::new(&binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (build the workspace first)", binary.display()))
}

fn json_of(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "shardctl failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn cluster_elections_reassignments_and_shardctl_status() {
    let mut cluster = Cluster::start(&["--shards", "1", "--fsync", "never"]);
    cluster.wait_ready(WAIT_MAX);
    let name = "elections";
    let mut create = CreatableTopic::default();
    create.name = topic(name);
    create.num_partitions = 3;
    create.replication_factor = 3;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![create];
    request.timeout_ms = 10_000;
    let created = call(cluster.kafka_addr(1), 7, &request).unwrap();
    assert_eq!(created.topics[0].error_code, NONE, "{created:?}");
    cluster.wait_full_isr(name, 3, WAIT_MAX);

    // Every preferred replica leads: nothing to elect.
    let answers = elect(cluster.kafka_addr(2), name, vec![0, 1, 2]);
    assert_eq!(
        answers,
        vec![
            (0, ELECTION_NOT_NEEDED),
            (1, ELECTION_NOT_NEEDED),
            (2, ELECTION_NOT_NEEDED)
        ]
    );

    // Reassignments: none runs; the current replicas are accepted, any
    // other target is refused saying why, a cancel has nothing to cancel.
    let list = call(cluster.kafka_addr(3), 0, &ListPartitionReassignmentsRequest::default()).unwrap();
    assert!(list.topics.is_empty());
    let current = cluster.partitions_seen_by(1, name).unwrap()[0].replicas.clone();
    assert_eq!(reassign(cluster.kafka_addr(1), name, Some(current.clone())), NONE);
    let mut reversed = current.clone();
    reversed.reverse();
    assert_eq!(
        reassign(cluster.kafka_addr(1), name, Some(reversed)),
        INVALID_REPLICA_ASSIGNMENT
    );
    assert_eq!(reassign(cluster.kafka_addr(1), name, None), NO_REASSIGNMENT_IN_PROGRESS);

    // The preferred replica of partition 0 goes down: its election cannot
    // happen, and shardctl shows the partitions it held as under-replicated.
    let preferred = current[0];
    let survivor = cluster.node_ids().into_iter().find(|n| *n != preferred).unwrap();
    cluster.kill9(preferred);
    let survivor_addr = cluster.kafka_addr(survivor).to_string();
    let deadline = Instant::now() + WAIT_MAX;
    let status = loop {
        let status = json_of(&shardctl(&[
            "cluster",
            "status",
            "--bootstrap",
            &survivor_addr,
            "--output",
            "json",
        ]));
        if status["under_replicated_partitions"].as_i64() >= Some(3) {
            break status;
        }
        assert!(Instant::now() < deadline, "never under-replicated: {status}");
        std::thread::sleep(POLL);
    };
    assert_eq!(status["offline_partitions"], 0, "{status}");
    let unhealthy = status["unhealthy_partitions"].as_array().unwrap();
    assert!(unhealthy.iter().all(|p| p["state"] == "under-replicated"), "{status}");
    let ours = unhealthy.iter().filter(|p| p["topic"] == name).count();
    assert_eq!(ours, 3, "every partition of {name} lost a replica: {status}");
    let answers = elect(cluster.kafka_addr(survivor), name, vec![0]);
    assert_eq!(answers, vec![(0, PREFERRED_LEADER_NOT_AVAILABLE)]);

    // Back and caught up, the preferred replica leads again: by the
    // metadata leader's own election or by ElectLeaders, whichever is first.
    cluster.restart(preferred);
    cluster.wait_full_isr(name, 3, WAIT_MAX);
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let answers = elect(cluster.kafka_addr(survivor), name, vec![0]);
        assert!(
            matches!(
                answers[..],
                [(0, NONE | ELECTION_NOT_NEEDED | PREFERRED_LEADER_NOT_AVAILABLE)]
            ),
            "{answers:?}"
        );
        if cluster.partition_leader(name, 0) == preferred {
            break;
        }
        assert!(Instant::now() < deadline, "the preferred replica never led again");
        std::thread::sleep(POLL);
    }
    let table = shardctl(&["cluster", "status", "--bootstrap", &survivor_addr]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success() && text.contains("0 under-replicated"), "{text}");
}

#[test]
fn json_log_lines_parse_and_slow_requests_are_logged() {
    let mut engine = Engine::start(&["--shards", "1", "--log-format", "json", "--slow-request-ms", "1"]);
    let mut create = CreatableTopic::default();
    create.name = topic("logged");
    create.num_partitions = 1;
    create.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![create];
    request.timeout_ms = 10_000;
    let addr: std::net::SocketAddr = engine.bootstrap().parse().unwrap();
    assert_eq!(call(addr, 7, &request).unwrap().topics[0].error_code, NONE);
    engine.terminate();
    let log = engine.log();
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string() && value["timestamp"].is_string(), "{line}");
        messages.push(value);
    }
    let find = |message: &str| {
        messages
            .iter()
            .find(|v| v["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no `{message}` line in:\n{log}"))
    };
    assert_eq!(find("topic created")["fields"]["topic"], "logged");
    assert!(find("Kafka listener listening")["fields"]["address"].is_string());
    // A CreateTopics commits through the metadata group (an fsync): over 1 ms.
    let slow = messages
        .iter()
        .find(|v| v["fields"]["message"] == "slow request" && v["fields"]["api"] == "CreateTopics")
        .unwrap_or_else(|| panic!("no slow CreateTopics line in:\n{log}"));
    assert!(slow["fields"]["elapsed_ms"].as_u64().unwrap() >= 1, "{slow}");
}
