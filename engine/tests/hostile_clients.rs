//! Hostile clients against a real engine: requests that name huge numbers of
//! partitions, floods of connections and partitions, and what each costs.
//! Every other client is served throughout and the engine stays up.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::time::{Duration, Instant};

use common::{call, Engine};
use kafka_protocol::{
    messages::{
        create_topics_request::CreatableTopic,
        fetch_request::{FetchPartition, FetchTopic},
        CreateTopicsRequest, FetchRequest, TopicName,
    },
    protocol::StrBytes,
};

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create_topic(engine: &Engine, name: &str, partitions: i32) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(30_000);
    let response = call(engine.addr, 4, &request).unwrap();
    assert_eq!(response.topics[0].error_code, 0, "{response:?}");
}

/// A long-polling Fetch naming `entries` partition entries (cycling over
/// `partitions` partitions of `topic`), each at the log end: nothing to read,
/// so the request parks on every partition it names.
fn parked_fetch(topic: &str, partitions: i32, entries: usize, wait_ms: i32) -> FetchRequest {
    let named = (0..entries)
        .map(|i| {
            FetchPartition::default()
                .with_partition(i32::try_from(i).unwrap() % partitions)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    FetchRequest::default()
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(named)])
}

#[test]
fn a_fetch_naming_one_partition_seventy_thousand_times_parks_and_answers() {
    // Past the default entry bound (10,000) such a request is refused unread;
    // with the bound raised it is read, deduplicated and parked on one watch.
    let engine = Engine::start(&["--shards", "1", "--fsync", "never", "--max-request-entries", "80000"]);
    create_topic(&engine, "fanout", 1);
    let started = Instant::now();
    let response = call(engine.addr, 11, &parked_fetch("fanout", 1, 70_000, 500)).unwrap();
    assert_eq!(response.error_code, 0);
    assert!(started.elapsed() < Duration::from_secs(20));
    // Still serving: a plain metadata-sized request works.
    let small = call(engine.addr, 11, &parked_fetch("fanout", 1, 1, 0)).unwrap();
    assert_eq!(small.responses[0].partitions[0].error_code, 0);
}

/// Produces one small record batch to `topic`/`partition`; returns the error code.
fn produce_one(engine_addr: std::net::SocketAddr, topic: &str, partition: i32) -> i16 {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::{
        messages::{
            produce_request::{PartitionProduceData, TopicProduceData},
            ProduceRequest,
        },
        records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType},
    };
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
        value: Some(Bytes::from_static(b"wake up")),
        headers: Default::default(),
    };
    let mut records = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut records, [&record], &options).unwrap();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records.freeze()))])]);
    let response = call(engine_addr, 7, &request).unwrap();
    response.responses[0].partition_responses[0].error_code
}

#[test]
fn a_fetch_parked_on_many_partitions_wakes_when_any_gets_data() {
    const PARTITIONS: i32 = 300;
    let engine = Engine::start(&["--shards", "1", "--fsync", "never"]);
    create_topic(&engine, "wide", PARTITIONS);
    let addr = engine.addr;
    let fetching = std::thread::spawn(move || {
        let started = Instant::now();
        let response = call(addr, 11, &parked_fetch("wide", PARTITIONS, PARTITIONS as usize, 2_500)).unwrap();
        (started.elapsed(), response)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(produce_one(engine.addr, "wide", PARTITIONS - 1), 0);
    let (waited, response) = fetching.join().unwrap();
    let with_data: Vec<i32> = response.responses[0]
        .partitions
        .iter()
        .filter(|p| p.records.as_ref().is_some_and(|r| !r.is_empty()))
        .map(|p| p.partition_index)
        .collect();
    assert_eq!(
        with_data,
        vec![PARTITIONS - 1],
        "the produced partition's record came back"
    );
    assert!(
        waited < Duration::from_millis(2_000),
        "woken by the append, not the timeout: {waited:?}"
    );
}

#[test]
fn a_request_naming_more_entries_than_allowed_closes_only_its_connection() {
    let engine = Engine::start(&["--shards", "1", "--fsync", "never", "--max-request-entries", "100"]);
    create_topic(&engine, "bounded", 1);
    // 101 entries: one topic and 100 partition entries.
    let refused = call(engine.addr, 11, &parked_fetch("bounded", 1, 100, 0));
    assert!(refused.is_err(), "the connection was closed instead of answered");
    wait_for_log(&engine, "--max-request-entries");
    // 100 entries are fine, and other clients are served.
    let served = call(engine.addr, 11, &parked_fetch("bounded", 1, 99, 0)).unwrap();
    assert_eq!(served.error_code, 0);
    assert_eq!(produce_one(engine.addr, "bounded", 0), 0);
}

#[test]
fn a_connection_flood_is_refused_and_idle_connections_make_room() {
    let engine = Engine::start(&[
        "--shards",
        "1",
        "--fsync",
        "never",
        "--max-connections",
        "20",
        "--connections-max-idle-ms",
        "700",
    ]);
    create_topic(&engine, "flooded", 1);
    // Let the engine see the set-up connections go before the flood.
    std::thread::sleep(Duration::from_millis(300));
    // 60 idle connections: 20 are taken, the rest closed at once by the engine.
    let mut flood: Vec<std::net::TcpStream> = (0..60)
        .map(|_| std::net::TcpStream::connect(engine.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let closed = flood.iter_mut().map(closed_by_peer).filter(|closed| *closed).count();
    assert_eq!(
        closed, 40,
        "connections past --max-connections are closed as they arrive"
    );
    // The 20 that were taken sit idle: they are closed after the idle bound,
    // and a real client is served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if produce_one_may_fail(engine.addr, "flooded") == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "no room after the idle connections closed");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(flood);
    wait_for_log(&engine, "refusing a connection");
}

/// Waits (bounded) until the engine's log holds `text`: it says why it
/// closed a connection just after closing it.
fn wait_for_log(engine: &Engine, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !engine.log().contains(text) {
        assert!(Instant::now() < deadline, "the engine's log never said {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the engine closed `stream` (end of stream or reset), as opposed to
/// keeping it open with nothing to say.
fn closed_by_peer(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    stream.set_nonblocking(true).unwrap();
    match stream.read(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// `produce_one`, or `None` when the connection is refused or closed.
fn produce_one_may_fail(addr: std::net::SocketAddr, topic: &str) -> Option<i16> {
    std::panic::catch_unwind(|| produce_one(addr, topic, 0)).ok()
}

#[test]
fn partitions_past_the_brokers_limit_are_refused_and_nothing_is_half_created() {
    let mut engine = Engine::start(&["--shards", "1", "--fsync", "never", "--max-partitions-per-shard", "40"]);
    // __consumer_offsets holds one replica per partition already; 40 more do not fit.
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name("too-wide"))
            .with_num_partitions(40)
            .with_replication_factor(1)])
        .with_timeout_ms(30_000);
    let response = call(engine.addr, 4, &request).unwrap();
    const POLICY_VIOLATION: i16 = 44;
    assert_eq!(response.topics[0].error_code, POLICY_VIOLATION, "{response:?}");
    let message = response.topics[0]
        .error_message
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    assert!(message.contains("--max-partitions-per-shard"), "{message}");
    create_topic(&engine, "fits", 2);
    engine.restart();
    let every_topic = kafka_protocol::messages::MetadataRequest::default().with_topics(None);
    let metadata = call(engine.addr, 9, &every_topic).unwrap();
    let names: Vec<String> = metadata
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect();
    assert!(names.contains(&"fits".to_string()), "{names:?}");
    assert!(
        !names.contains(&"too-wide".to_string()),
        "nothing of the refused topic survives: {names:?}"
    );
}
