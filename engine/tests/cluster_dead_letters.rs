//! Dead-letter delivery on three engine processes: the group's coordinator
//! is on one node and the poison record's partition led by another, so the
//! coordinator reads the record from that leader and writes the copy
//! wherever `<topic>.dlq` is led (`engine/src/remote.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, REPLICATED_FLAGS};
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, CommitMode, Consumer},
    message::Headers,
    producer::{FutureProducer, FutureRecord},
    Message, Offset, TopicPartitionList,
};

/// Bound on the cluster forming and on each consumer's wait for a record.
const WAIT: Duration = Duration::from_secs(60);
/// The topic's `shardline.dlq.max.deliveries`.
const MAX_DELIVERIES: usize = 2;

/// A member of `group` reading `poison` from its committed offset.
fn member(cluster: &Cluster, group: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&["poison"]).unwrap();
    consumer
}

/// The next record `consumer` gets: (offset, value).
fn next_record(consumer: &BaseConsumer) -> (i64, String) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            return (message.offset(), value);
        }
    }
    panic!("no record within {WAIT:?}");
}

#[test]
fn a_poison_record_led_by_another_node_than_the_coordinator_is_dead_lettered() {
    let mut cluster = Cluster::start(REPLICATED_FLAGS);
    cluster.wait_ready(WAIT);
    let group = "dlq-across-nodes";
    let deadline = Instant::now() + WAIT;
    let coordinator = loop {
        match cluster.group_coordinator_seen_by(1, group) {
            Ok((node, 0)) if node > 0 => break node,
            _ => {
                assert!(Instant::now() < deadline, "no coordinator for {group}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    // The source partition led by a node that does not coordinate the group.
    let leader = (1..=3).find(|node| *node != coordinator).unwrap();
    let third = (1..=3).find(|node| *node != coordinator && *node != leader).unwrap();
    cluster.create_topic_assigned(
        "poison",
        &[vec![leader, coordinator, third]],
        &[("shardline.dlq.max.deliveries", "2")],
    );
    cluster.wait_full_isr("poison", 1, WAIT);
    assert_eq!(cluster.partition_leader("poison", 0), leader);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .create()
        .unwrap();
    for value in ["first", "poison", "after"] {
        futures_lite::future::block_on(producer.send(FutureRecord::<(), str>::to("poison").payload(value), WAIT))
            .unwrap();
    }

    // The first member processes "first" and commits, then dies on "poison".
    let consumer = member(&cluster, group);
    assert_eq!(next_record(&consumer), (0, "first".to_string()));
    let mut done = TopicPartitionList::new();
    done.add_partition_offset("poison", 0, Offset::Offset(1)).unwrap();
    consumer.commit(&done, CommitMode::Sync).unwrap();
    assert_eq!(next_record(&consumer), (1, "poison".to_string()));
    drop(consumer);
    // Members that start from the committed offset get "poison" again, and
    // die on it, until it has been handed out MAX_DELIVERIES times: then the
    // group is handed the offset past it.
    for _ in 1..MAX_DELIVERIES {
        let consumer = member(&cluster, group);
        assert_eq!(next_record(&consumer), (1, "poison".to_string()));
        drop(consumer);
    }
    let consumer = member(&cluster, group);
    assert_eq!(next_record(&consumer), (2, "after".to_string()));
    drop(consumer);

    // The copy is in `poison.dlq`, with where it came from.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "dlq-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("poison.dlq", 0, Offset::Beginning)
        .unwrap();
    reader.assign(&assignment).unwrap();
    let deadline = Instant::now() + WAIT;
    let message = loop {
        if let Some(Ok(message)) = reader.poll(Duration::from_millis(200)) {
            break message;
        }
        assert!(Instant::now() < deadline, "nothing in poison.dlq");
    };
    assert_eq!(message.payload(), Some(&b"poison"[..]));
    let headers = message.headers().expect("the copy carries headers");
    let source = headers
        .iter()
        .find(|h| h.key == "shardline.dlq.source")
        .and_then(|h| h.value)
        .expect("a source header");
    assert_eq!(source, b"poison/0/1");
    assert!(
        headers
            .iter()
            .any(|h| h.key == "shardline.dlq.group" && h.value == Some(group.as_bytes())),
        "a group header"
    );
}
