//! Every shard is a broker of its own to clients (`--shard-listeners own`,
//! the default): unmodified clients send each partition's requests straight
//! to the core that owns it, and a request that lands on another shard is
//! still served (forwarded). Each shard logs at shutdown how many client
//! requests it had to forward.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use common::{call, Engine};
use kafka_protocol::{
    messages::{
        produce_request::{PartitionProduceData, TopicProduceData},
        CreateTopicsRequest, MetadataRequest, ProduceRequest, TopicName,
    },
    protocol::StrBytes,
    records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType},
};
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    message::Message,
    producer::{BaseProducer, BaseRecord, Producer},
};

/// Bound on producing or consuming the test's messages.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const MESSAGES: usize = 2_000;
const PARTITIONS: i32 = 4;

fn create_topic(addr: SocketAddr, name: &str, partitions: i32) {
    let mut topic = kafka_protocol::messages::create_topics_request::CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_string(name.to_string()));
    topic.num_partitions = partitions;
    topic.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = 10_000;
    let response = call(addr, 4, &request).unwrap();
    assert_eq!(response.topics[0].error_code, 0, "{response:?}");
}

/// (broker id, port) of every broker, and each partition's leader id.
fn brokers_and_leaders(addr: SocketAddr, topic: &str) -> (Vec<(i32, u16)>, Vec<i32>) {
    let mut request = MetadataRequest::default();
    let mut wanted = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    wanted.name = Some(TopicName(StrBytes::from_string(topic.to_string())));
    request.topics = Some(vec![wanted]);
    let response = call(addr, 9, &request).unwrap();
    let mut brokers: Vec<(i32, u16)> = response
        .brokers
        .iter()
        .map(|b| (b.node_id.0, u16::try_from(b.port).unwrap()))
        .collect();
    brokers.sort_unstable();
    let mut partitions: Vec<(i32, i32)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    partitions.sort_unstable();
    (brokers, partitions.into_iter().map(|(_, leader)| leader).collect())
}

#[test]
fn metadata_names_each_shard_as_a_broker_on_its_own_port() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    create_topic(engine.addr, "placed", PARTITIONS);
    let (brokers, leaders) = brokers_and_leaders(engine.addr, "placed");
    let port = engine.addr.port();
    assert_eq!(
        brokers,
        vec![(1, port), (1001, port + 1)],
        "node 1: shard 0 is broker 1, shard 1 broker 1001"
    );
    assert!(
        leaders.contains(&1) && leaders.contains(&1001),
        "partitions on both shards: {leaders:?}"
    );
    // Shared listeners: one broker per node, as before.
    let shared = Engine::start(&["--shards", "2", "--fsync", "never", "--shard-listeners", "shared"]);
    create_topic(shared.addr, "placed", PARTITIONS);
    let (brokers, leaders) = brokers_and_leaders(shared.addr, "placed");
    assert_eq!(brokers, vec![(1, shared.addr.port())]);
    assert!(leaders.iter().all(|leader| *leader == 1), "{leaders:?}");
}

#[test]
fn unmodified_clients_reach_the_owning_shard_with_no_forwarding() {
    let mut engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    create_topic(engine.addr, "direct", PARTITIONS);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("linger.ms", "2")
        .set("message.timeout.ms", "20000")
        .create()
        .unwrap();
    for i in 0..MESSAGES {
        let partition = i32::try_from(i).unwrap() % PARTITIONS;
        let payload = format!("message-{i}");
        producer
            .send(BaseRecord::<(), _>::to("direct").partition(partition).payload(&payload))
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(CLIENT_TIMEOUT).unwrap();
    drop(producer);

    // A group member: its coordinator requests go to the coordinator's shard.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("group.id", "direct-readers")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "100")
        .create()
        .unwrap();
    consumer.subscribe(&["direct"]).unwrap();
    let mut seen = 0;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    while seen < MESSAGES {
        assert!(Instant::now() < deadline, "consumed {seen} of {MESSAGES}");
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            assert!(message.payload().is_some());
            seen += 1;
        }
    }
    consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    drop(consumer);

    let forwarded = engine.forwarded_at_shutdown();
    assert_eq!(
        forwarded,
        vec![(0, 0), (0, 0)],
        "per shard (partition, group) requests forwarded"
    );
}

#[test]
fn a_request_on_another_shards_port_is_forwarded_and_served() {
    let mut engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    create_topic(engine.addr, "elsewhere", 2);
    let (brokers, leaders) = brokers_and_leaders(engine.addr, "elsewhere");
    let owner = leaders[0];
    let (other_id, other_port) = *brokers.iter().find(|(id, _)| *id != owner).unwrap();
    let other = SocketAddr::new(engine.addr.ip(), other_port);

    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::from_static(b"sent to the wrong shard")),
        headers: Default::default(),
    };
    let mut records = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut records, [&record], &options).unwrap();
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(records.freeze());
    let mut topic = TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str("elsewhere"));
    topic.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![topic];
    let response = call(other, 7, &request).unwrap();
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!((answer.error_code, answer.base_offset), (0, 0));

    let forwarded = engine.forwarded_at_shutdown();
    let other_shard = usize::try_from(other_id / 1000).unwrap();
    assert_eq!(
        forwarded[other_shard].0, 1,
        "the wrong shard forwarded the produce: {forwarded:?}"
    );
    assert_eq!(forwarded[1 - other_shard].0, 0, "{forwarded:?}");
}

/// Runs a second engine on `listen` with `flags` and a fresh data dir; it
/// must refuse to start (exit 1) naming the port, and write nothing.
fn assert_second_engine_refused(listen: &str, flags: &[&str]) {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let mut child = std::process::Command::new(common::engine_binary())
        .args(["--listen", listen, "--data-dir", data_dir.to_str().unwrap()])
        .args(flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("a second engine on {listen} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(listen), "the error names the address: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "the error is printed once: {stderr}");
    assert!(
        !data_dir.exists(),
        "nothing was written before the port was found taken"
    );
}

/// A port another engine holds stops the start, with own shard ports and
/// with one shared port alike (before, two shared-port engines both bound
/// it with SO_REUSEPORT and the kernel split clients between them).
#[test]
fn a_second_engine_on_a_port_in_use_refuses_to_start() {
    let shared = Engine::start(&["--shards", "2", "--shard-listeners", "shared"]);
    assert_second_engine_refused(&shared.bootstrap(), &["--shards", "2", "--shard-listeners", "shared"]);
    let own = Engine::start(&["--shards", "2"]);
    assert_second_engine_refused(&own.bootstrap(), &["--shards", "2"]);
}
