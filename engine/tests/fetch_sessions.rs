//! Incremental fetch sessions (KIP-227) against a real engine: the session
//! protocol and its error codes over a raw connection, and real consumers
//! of many partitions (kafka-python with sessions, librdkafka without).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{call, run_python_script, Engine};
use kafka_protocol::{
    messages::{
        create_topics_request::CreatableTopic,
        fetch_request::{FetchPartition, FetchTopic, ForgottenTopic},
        produce_request::{PartitionProduceData, TopicProduceData},
        CreateTopicsRequest, FetchRequest, FetchResponse, ProduceRequest, TopicName,
    },
    protocol::StrBytes,
};
use shardline_log::{build_batch, BatchSpec};
use shardline_testkit::KafkaConnection;

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const FETCH_VERSION: i16 = 12;
const PARTITIONS: i32 = 6;
const WAIT_MAX: Duration = Duration::from_secs(30);

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn create_topic(engine: &Engine, topic: &str, partitions: i32) {
    let mut create = CreatableTopic::default();
    create.name = name(topic);
    create.num_partitions = partitions;
    create.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![create];
    request.timeout_ms = 10_000;
    let created = call(engine.addr, 7, &request).unwrap();
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
}

/// Appends one batch of `records` records to `partition`.
fn produce(engine: &Engine, topic: &str, partition: i32, records: i32) {
    assert_eq!(try_produce(engine, topic, partition, records), 0);
}

/// Appends one batch of `records` records to `partition`: its error code.
fn try_produce(engine: &Engine, topic: &str, partition: i32, records: i32) -> i16 {
    let batch = build_batch(&BatchSpec::plain(records, 1_700_000_000_000, b"fetch session records"));
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(Bytes::from(batch));
    let mut topic_data = TopicProduceData::default();
    topic_data.name = name(topic);
    topic_data.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    request.topic_data = vec![topic_data];
    let answer = call(engine.addr, 7, &request).unwrap();
    answer.responses[0].partition_responses[0].error_code
}

/// A fetch of `partitions` (index, offset) of `topic`, forgetting `forgotten`;
/// it waits for nothing.
fn fetch(session_id: i32, epoch: i32, topic: &str, partitions: &[(i32, i64)], forgotten: &[i32]) -> FetchRequest {
    let mut request = FetchRequest::default();
    request.replica_id = kafka_protocol::messages::BrokerId(-1);
    request.max_wait_ms = 0;
    request.min_bytes = 0;
    request.max_bytes = 1 << 20;
    request.session_id = session_id;
    request.session_epoch = epoch;
    if !partitions.is_empty() {
        let mut t = FetchTopic::default();
        t.topic = name(topic);
        t.partitions = partitions
            .iter()
            .map(|(index, offset)| {
                let mut p = FetchPartition::default();
                p.partition = *index;
                p.fetch_offset = *offset;
                p.partition_max_bytes = 1 << 20;
                p
            })
            .collect();
        request.topics = vec![t];
    }
    if !forgotten.is_empty() {
        let mut f = ForgottenTopic::default();
        f.topic = name(topic);
        f.partitions = forgotten.to_vec();
        request.forgotten_topics_data = vec![f];
    }
    request
}

/// (partition, error, high watermark, has records) of every partition answered.
fn answered(response: &FetchResponse) -> Vec<(i32, i16, i64, bool)> {
    let mut out: Vec<(i32, i16, i64, bool)> = response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            let has_records = p.records.as_ref().is_some_and(|r| !r.is_empty());
            (p.partition_index, p.error_code, p.high_watermark, has_records)
        })
        .collect();
    out.sort_unstable();
    out
}

#[test]
fn sessions_answer_what_changed_and_refuse_wrong_ids_and_epochs() {
    let engine = Engine::start(&["--shards", "1", "--fsync", "never"]);
    let topic = "sessions-raw";
    create_topic(&engine, topic, PARTITIONS);
    let all: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let mut conn = KafkaConnection::connect(engine.addr).unwrap();

    // A full fetch opening a session answers every partition, once each
    // partition is open (they open just after CreateTopics answers).
    let deadline = Instant::now() + WAIT_MAX;
    let (session_id, opened) = loop {
        let response: FetchResponse = conn.request(FETCH_VERSION, &fetch(0, 0, topic, &all, &[])).unwrap();
        let partitions = answered(&response);
        if partitions.iter().all(|(_, error, _, _)| *error == 0) || Instant::now() > deadline {
            break (response.session_id, partitions);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(session_id, 0, "a session was opened");
    assert_eq!(opened.len(), PARTITIONS as usize);
    assert!(
        opened.iter().all(|(_, error, hw, _)| *error == 0 && *hw == 0),
        "{opened:?}"
    );

    // Nothing moved: an incremental fetch naming nothing answers nothing.
    let response: FetchResponse = conn
        .request(FETCH_VERSION, &fetch(session_id, 1, topic, &[], &[]))
        .unwrap();
    assert_eq!((response.error_code, response.session_id), (0, session_id));
    assert_eq!(answered(&response), vec![]);

    // Records in partition 3: only it is answered, with its records.
    produce(&engine, topic, 3, 5);
    let response: FetchResponse = conn
        .request(FETCH_VERSION, &fetch(session_id, 2, topic, &[], &[]))
        .unwrap();
    assert_eq!(answered(&response), vec![(3, 0, 5, true)]);
    // The consumer moves its offset in partition 3: quiet again.
    let response: FetchResponse = conn
        .request(FETCH_VERSION, &fetch(session_id, 3, topic, &[(3, 5)], &[]))
        .unwrap();
    assert_eq!(answered(&response), vec![]);

    // Forgotten partition 4 is no longer read; partition 5 still is.
    let response: FetchResponse = conn
        .request(FETCH_VERSION, &fetch(session_id, 4, topic, &[], &[4]))
        .unwrap();
    assert_eq!(answered(&response), vec![]);
    produce(&engine, topic, 4, 2);
    produce(&engine, topic, 5, 2);
    let response: FetchResponse = conn
        .request(FETCH_VERSION, &fetch(session_id, 5, topic, &[], &[]))
        .unwrap();
    assert_eq!(answered(&response), vec![(5, 0, 2, true)]);

    // A wrong epoch, an unknown id, and this session's id on another
    // connection are refused at the top, with no partition.
    let response: FetchResponse = conn
        .request(FETCH_VERSION, &fetch(session_id, 9, topic, &[], &[]))
        .unwrap();
    assert_eq!(
        (response.error_code, response.session_id, response.responses.len()),
        (INVALID_FETCH_SESSION_EPOCH, 0, 0)
    );
    let unknown = if session_id == 1 { 2 } else { 1 };
    let response: FetchResponse = conn
        .request(FETCH_VERSION, &fetch(unknown, 1, topic, &[], &[]))
        .unwrap();
    assert_eq!(
        (response.error_code, response.responses.len()),
        (FETCH_SESSION_ID_NOT_FOUND, 0)
    );
    let mut other = KafkaConnection::connect(engine.addr).unwrap();
    let response: FetchResponse = other
        .request(FETCH_VERSION, &fetch(session_id, 6, topic, &[], &[]))
        .unwrap();
    assert_eq!(
        response.error_code, FETCH_SESSION_ID_NOT_FOUND,
        "a session is its connection's"
    );
    // The refusals did not spend the session's epoch.
    let response: FetchResponse = conn
        .request(FETCH_VERSION, &fetch(session_id, 6, topic, &[], &[]))
        .unwrap();
    assert_eq!((response.error_code, response.session_id), (0, session_id));

    // A sessionless fetch (epoch -1) closing the session answers in full.
    let response: FetchResponse = conn
        .request(FETCH_VERSION, &fetch(session_id, -1, topic, &all, &[]))
        .unwrap();
    assert_eq!(response.session_id, 0);
    assert_eq!(answered(&response).len(), PARTITIONS as usize);
    let response: FetchResponse = conn
        .request(FETCH_VERSION, &fetch(session_id, 7, topic, &[], &[]))
        .unwrap();
    assert_eq!(response.error_code, FETCH_SESSION_ID_NOT_FOUND, "closed");

    assert_eq!(engine.metric_total("shardline_fetch_sessions_incremental_total"), 6);
    assert_eq!(engine.metric_total("shardline_fetch_sessions_created_total"), 1);
    drop(conn);
    drop(other);
    // The connection's sessions close with it.
    let deadline = Instant::now() + WAIT_MAX;
    while engine.metric_total("shardline_fetch_sessions_open") != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(engine.metric_total("shardline_fetch_sessions_open"), 0);
}

#[test]
fn python_consumers_of_many_partitions_with_and_without_sessions() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    run_python_script("fetch_sessions.py", &engine.bootstrap());
    let incremental = engine.metric_total("shardline_fetch_sessions_incremental_total");
    assert!(incremental > 0, "kafka-python fetched incrementally ({incremental})");
}

#[test]
fn librdkafka_consumes_many_partitions_from_an_engine_with_sessions() {
    use rdkafka::{
        config::ClientConfig,
        consumer::{BaseConsumer, Consumer},
        message::Message,
        Offset, TopicPartitionList,
    };
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    let topic = "sessions-rdkafka";
    let partitions = 24;
    create_topic(&engine, topic, partitions);
    let deadline = Instant::now() + WAIT_MAX;
    for p in 0..partitions {
        // Partitions on the other shard open a moment later: retry.
        while try_produce(&engine, topic, p, 3) != 0 {
            assert!(Instant::now() < deadline, "partition {p} opens");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut got: Vec<(i32, i64)> = Vec::new();
    let total = usize::try_from(partitions * 3).unwrap();
    while got.len() < total && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            got.push((message.partition(), message.offset()));
        }
    }
    got.sort_unstable();
    let expected: Vec<(i32, i64)> = (0..partitions).flat_map(|p| (0..3).map(move |o| (p, o))).collect();
    assert_eq!(got, expected, "every record of every partition, once");
}
