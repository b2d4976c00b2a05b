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
    process::Command,
    time::{Duration, Instant},
};

use common::{call, cluster::Cluster, python_script_output, shardctl, Engine};
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

fn reassign(addr: std::net::SocketAddr, name: &str, index: i32, replicas: Option<Vec<i32>>) -> i16 {
    let mut partition = ReassignablePartition::default();
    partition.partition_index = index;
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

    // Reassignments of partition 2: the current replicas change nothing; a
    // new order is in sync at once (done, nothing left to list or cancel);
    // an unknown broker is refused.
    let list = call(cluster.kafka_addr(3), 0, &ListPartitionReassignmentsRequest::default()).unwrap();
    assert!(list.topics.is_empty());
    let current = cluster.partitions_seen_by(1, name).unwrap()[2].replicas.clone();
    assert_eq!(reassign(cluster.kafka_addr(1), name, 2, Some(current.clone())), NONE);
    let mut reversed = current.clone();
    reversed.reverse();
    assert_eq!(reassign(cluster.kafka_addr(1), name, 2, Some(reversed.clone())), NONE);
    assert_eq!(cluster.partitions_seen_by(1, name).unwrap()[2].replicas, reversed);
    let list = call(cluster.kafka_addr(2), 0, &ListPartitionReassignmentsRequest::default()).unwrap();
    assert!(list.topics.is_empty(), "{list:?}");
    assert_eq!(
        reassign(cluster.kafka_addr(1), name, 2, None),
        NO_REASSIGNMENT_IN_PROGRESS
    );
    assert_eq!(
        reassign(cluster.kafka_addr(1), name, 2, Some(vec![1, 9])),
        INVALID_REPLICA_ASSIGNMENT
    );
    let current = cluster.partitions_seen_by(1, name).unwrap()[0].replicas.clone();

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

/// Lines a kcat consumer reads from the start of `topic` to its end.
fn consume_all(bootstrap: &str, topic: &str) -> Vec<String> {
    let output = Command::new("kcat")
        .args(["-b", bootstrap, "-t", topic, "-C", "-o", "beginning", "-e", "-q"])
        .output()
        .expect("kcat installed (scripts/test-all installs it)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_partition_moves_to_other_brokers_with_its_data() {
    let mut cluster = Cluster::start(&["--shards", "1", "--fsync", "never"]);
    cluster.wait_ready(WAIT_MAX);
    let name = "moving";
    let mut create = CreatableTopic::default();
    create.name = topic(name);
    create.num_partitions = 1;
    create.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![create];
    request.timeout_ms = 10_000;
    assert_eq!(
        call(cluster.kafka_addr(1), 7, &request).unwrap().topics[0].error_code,
        NONE
    );
    let from = cluster.partition_leader(name, 0);
    let lines: Vec<String> = (0..200).map(|i| format!("record-{i}")).collect();
    let mut kcat = Command::new("kcat")
        .args(["-b", &cluster.bootstrap(), "-t", name, "-P", "-X", "acks=all"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kcat installed (scripts/test-all installs it)");
    std::io::Write::write_all(&mut kcat.stdin.take().unwrap(), (lines.join("\n") + "\n").as_bytes()).unwrap();
    assert!(kcat.wait().unwrap().success());
    let old_dir = cluster.data_dir(from).join("partitions").join(format!("{name}-0"));
    assert!(old_dir.exists());

    // Move it off its broker, to the two others, with shardctl.
    let target: Vec<i32> = cluster.node_ids().into_iter().filter(|n| *n != from).collect();
    let replicas = format!("{},{}", target[0], target[1]);
    let bootstrap = cluster.kafka_addr(target[1]).to_string();
    let moved = shardctl(&[
        "partition",
        "move",
        name,
        "0",
        "--replicas",
        &replicas,
        "--bootstrap",
        &bootstrap,
    ]);
    assert!(moved.status.success(), "{}", String::from_utf8_lossy(&moved.stderr));
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let views: Vec<_> = cluster
            .node_ids()
            .into_iter()
            .map(|node| cluster.partitions_seen_by(node, name).map(|p| p[0].clone()))
            .collect();
        let done = views.iter().all(|view| {
            view.as_ref()
                .is_ok_and(|p| p.replicas == target && p.isr == target && p.leader == target[0])
        });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the move did not complete: {views:?}");
        std::thread::sleep(POLL);
    }
    let listed = json_of(&shardctl(&[
        "partition",
        "reassignments",
        "--bootstrap",
        &bootstrap,
        "--output",
        "json",
    ]));
    assert_eq!(
        listed["reassignments"],
        serde_json::json!([]),
        "done: nothing in progress"
    );
    assert_eq!(
        consume_all(&cluster.bootstrap(), name),
        lines,
        "every record moved with the partition"
    );
    // The broker left out deletes its copy.
    let deadline = Instant::now() + WAIT_MAX;
    while old_dir.exists() {
        assert!(Instant::now() < deadline, "{} is still there", old_dir.display());
        std::thread::sleep(POLL);
    }
    // Back to one replica on the first target broker (a replica dropped).
    let back = shardctl(&[
        "partition",
        "move",
        name,
        "0",
        "--replicas",
        &target[0].to_string(),
        "--bootstrap",
        &bootstrap,
    ]);
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    let deadline = Instant::now() + WAIT_MAX;
    while cluster.partitions_seen_by(target[1], name).unwrap()[0].replicas != [target[0]] {
        assert!(Instant::now() < deadline, "the shrink did not complete");
        std::thread::sleep(POLL);
    }
    assert_eq!(consume_all(&cluster.bootstrap(), name), lines);
}

/// Issue 17 section 3: CreateTopics and CreatePartitions with replicas given
/// by hand (librdkafka's admin client) place each partition on exactly
/// those brokers, the first leading; an assignment naming an unknown broker
/// is INVALID_REPLICA_ASSIGNMENT and creates nothing.
#[test]
fn replicas_given_by_hand_in_a_cluster() {
    use rdkafka::{
        admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication},
        client::DefaultClientContext,
        config::ClientConfig,
        types::RDKafkaErrorCode,
    };
    let mut cluster = Cluster::start(&["--shards", "1", "--fsync", "never"]);
    cluster.wait_ready(Duration::from_secs(30));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .create()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let lists: [&[i32]; 2] = [&[2, 3], &[3, 1]];
    let topic = NewTopic::new("by-hand", 2, TopicReplication::Variable(&lists));
    for result in futures_executor::block_on(admin.create_topics([&topic], &options)).unwrap() {
        result.unwrap();
    }
    let grow = NewPartitions::new("by-hand", 3).assign(&[&[1, 2]]);
    for result in futures_executor::block_on(admin.create_partitions([&grow], &options)).unwrap() {
        result.unwrap();
    }
    // Every replica catches up (each partition has two: not the cluster's
    // full ISR that `wait_full_isr` waits for).
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let seen = cluster.partitions_seen_by(1, "by-hand");
        if let Ok(seen) = &seen {
            if seen.len() == 3 && seen.iter().all(|p| p.isr.len() == p.replicas.len()) {
                break seen.clone();
            }
        }
        assert!(Instant::now() < deadline, "replicas not in sync: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let placed: Vec<(Vec<i32>, i32)> = seen.iter().map(|p| (p.replicas.clone(), p.leader)).collect();
    assert_eq!(placed, vec![(vec![2, 3], 2), (vec![3, 1], 3), (vec![1, 2], 1)]);

    let unknown: [&[i32]; 1] = [&[1, 7]];
    let refused = NewTopic::new("refused", 1, TopicReplication::Variable(&unknown));
    let results = futures_executor::block_on(admin.create_topics([&refused], &options)).unwrap();
    assert!(
        matches!(&results[0], Err((_, RDKafkaErrorCode::InvalidReplicaAssignment))),
        "{results:?}"
    );
    assert!(cluster.partitions_seen_by(1, "refused").is_err(), "nothing created");
    cluster.assert_none_exited();
}
