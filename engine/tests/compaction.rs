//! Log compaction (`cleanup.policy=compact`) against a real engine process
//! with librdkafka: a changelog topic reads back exactly the last value per
//! key at its offset, keyless records are refused, the configs show and
//! change through the admin APIs, `__consumer_offsets` is compacted and
//! replays to the last commit after a restart, and a transactional topic
//! keeps the last committed value per key, its aborted records gone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use common::Engine;
use rdkafka::{
    admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, CommitMode, Consumer},
    message::Message,
    producer::{BaseRecord, Producer, ThreadedProducer},
    Offset, TopicPartitionList,
};

/// Bound on every wait for the cleaner or for messages.
const WAIT_MAX: Duration = Duration::from_secs(60);

fn admin(engine: &Engine) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .create()
        .unwrap()
}

/// Creates `topic` and waits for the answer.
fn create(engine: &Engine, topic: &NewTopic<'_>) {
    let results = futures_executor::block_on(admin(engine).create_topics([topic], &AdminOptions::new())).unwrap();
    for result in results {
        result.unwrap();
    }
}

/// A consumer of group `group` that commits only by hand.
fn consumer_in(engine: &Engine, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// Waits until the engine logged a cleaning pass of `topic` that swapped
/// a segment, `passes` of them in all.
fn wait_for_cleaning(engine: &Engine, topic: &str, passes: usize) {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let log = engine.log();
        let done = log
            .lines()
            .filter(|l| l.contains("log cleaned") && l.contains(&format!("topic={topic}")))
            .filter(|l| !l.contains("segments_swapped=0"))
            .count();
        if done >= passes {
            return;
        }
        assert!(Instant::now() < deadline, "no cleaning of {topic}:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every record of partition 0 of `topic` from the beginning to its high
/// watermark: (offset, key, value).
fn read_partition(engine: &Engine, topic: &str) -> Vec<(i64, Vec<u8>, Option<Vec<u8>>)> {
    let consumer = consumer_in(engine, "compaction-readers");
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)).unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT_MAX;
    while out.last().is_none_or(|(offset, _, _)| offset + 1 < high) {
        assert!(Instant::now() < deadline, "read {} records, not to {high}", out.len());
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().map(<[u8]>::to_vec),
            )),
            Some(Err(e)) => eprintln!("consumer event: {e}"),
            None => {}
        }
    }
    out
}

#[test]
fn a_compacted_changelog_reads_back_the_last_value_per_key_at_its_offset() {
    let engine = Engine::start(&["--shards", "1", "--fsync", "never", "--log-cleaner-backoff-ms", "200"]);
    // 1 MiB segments rolled at least every second: the data spreads over
    // several sealed segments the cleaner may take.
    let topic = NewTopic::new("changelog", 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "1048576")
        .set("segment.ms", "1000")
        .set("min.cleanable.dirty.ratio", "0.01")
        // The last segment may hold little more than the 20 tombstones,
        // below 1 % of what is cleanable once the rest is clean (how the
        // rolls fall depends on timing): its age gets it cleaned anyway.
        .set("max.compaction.lag.ms", "2000")
        .set("delete.retention.ms", "600000");
    create(&engine, &topic);
    let deliveries = Deliveries::default();
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("linger.ms", "5")
        .create_with_context(deliveries.clone())
        .unwrap();
    // 200 keys, 60 updates each, then a tombstone for every tenth key.
    let mut expected: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for round in 0..60 {
        for key in 0..200 {
            let key = format!("key-{key:03}");
            let value = format!("{key}-round-{round}-{}", "v".repeat(200));
            producer
                .send(BaseRecord::to("changelog").key(&key).payload(&value))
                .map_err(|(e, _)| e)
                .unwrap();
            expected.insert(key.into_bytes(), Some(value.into_bytes()));
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }
    for key in (0..200).step_by(10) {
        let key = format!("key-{key:03}");
        producer
            .send(BaseRecord::<String, str>::to("changelog").key(&key))
            .map_err(|(e, _)| e)
            .unwrap();
        expected.insert(key.into_bytes(), None);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    // Where each key's last record went (the cleaner may already be at
    // work: segments roll every second).
    let latest: BTreeMap<Vec<u8>, i64> = deliveries
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.clone().unwrap())
        .map(|(offset, key)| (key, offset))
        .collect();
    assert_eq!(deliveries.0.lock().unwrap().len(), 200 * 60 + 20);
    // Past segment.ms, a record of another key rolls the segment holding
    // the last update of every key: all of it becomes cleanable.
    std::thread::sleep(Duration::from_millis(1100));
    producer
        .send(BaseRecord::to("changelog").key("marker").payload("marker"))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    expected.insert(b"marker".to_vec(), Some(b"marker".to_vec()));
    wait_for_cleaning(&engine, "changelog", 1);
    // Passes run until everything sealed is clean.
    let deadline = Instant::now() + WAIT_MAX;
    let after = loop {
        let after = read_partition(&engine, "changelog");
        if after.len() == expected.len() || Instant::now() >= deadline {
            break after;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(after.len(), expected.len(), "exactly one record per key");
    for (offset, key, value) in &after {
        assert_eq!(expected.get(key), Some(value), "the last value of {key:?}");
        if key != b"marker" {
            assert_eq!(latest[key], *offset, "{key:?} keeps its offset");
        }
    }
    assert!(after.windows(2).all(|w| w[0].0 < w[1].0), "offsets ascend, with gaps");
    // The cleaner's work shows in /metrics.
    for name in [
        "shardline_log_cleaner_passes_total",
        "shardline_log_cleaner_segments_swapped_total",
        "shardline_log_cleaner_bytes_removed_total",
        "shardline_log_cleaner_records_removed_total",
    ] {
        assert!(engine.metric_total(name) > 0, "{name} counts the cleaning");
    }

    // A record without a key is refused with INVALID_RECORD.
    let deliveries = Deliveries::default();
    let refusing: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("message.timeout.ms", "10000")
        .create_with_context(deliveries.clone())
        .unwrap();
    refusing
        .send(BaseRecord::<str, str>::to("changelog").payload("no key"))
        .map_err(|(e, _)| e)
        .unwrap();
    refusing.flush(Duration::from_secs(30)).unwrap();
    let results = deliveries.0.lock().unwrap().clone();
    assert_eq!(results.len(), 1);
    assert!(
        results[0].as_ref().is_err_and(|e| e.contains("InvalidRecord")),
        "{results:?}"
    );
}

/// A delivery report: (offset, key), or the error as librdkafka names it.
type Delivery = Result<(i64, Vec<u8>), String>;

/// Every delivery report of a producer.
#[derive(Default, Clone)]
struct Deliveries(std::sync::Arc<std::sync::Mutex<Vec<Delivery>>>);

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        let entry = result
            .as_ref()
            .map(|m| (m.offset(), m.key().unwrap_or_default().to_vec()))
            .map_err(|(e, _)| format!("{e:?}"));
        self.0.lock().unwrap().push(entry);
    }
}

#[test]
fn compaction_configs_show_and_change_through_the_admin_apis() {
    let engine = Engine::start(&["--shards", "1", "--fsync", "never"]);
    let admin = admin(&engine);
    let topic = NewTopic::new("table", 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact,delete");
    create(&engine, &topic);
    let describe = |admin: &AdminClient<DefaultClientContext>| -> BTreeMap<String, Option<String>> {
        let results = futures_executor::block_on(
            admin.describe_configs(&[ResourceSpecifier::Topic("table")], &AdminOptions::new()),
        )
        .unwrap();
        let resource = results.into_iter().next().unwrap().unwrap();
        resource.entries.into_iter().map(|e| (e.name, e.value)).collect()
    };
    let configs = describe(&admin);
    assert_eq!(configs["cleanup.policy"].as_deref(), Some("compact,delete"));
    assert_eq!(configs["min.cleanable.dirty.ratio"].as_deref(), Some("0.5"));
    assert_eq!(configs["delete.retention.ms"].as_deref(), Some("86400000"));
    let change = AlterConfig::new(ResourceSpecifier::Topic("table"))
        .set("cleanup.policy", "compact")
        .set("min.cleanable.dirty.ratio", "0.1")
        .set("min.compaction.lag.ms", "1000")
        .set("max.compaction.lag.ms", "60000");
    for result in futures_executor::block_on(admin.alter_configs(&[change], &AdminOptions::new())).unwrap() {
        result.unwrap();
    }
    let configs = describe(&admin);
    assert_eq!(configs["cleanup.policy"].as_deref(), Some("compact"));
    assert_eq!(configs["min.cleanable.dirty.ratio"].as_deref(), Some("0.1"));
    assert_eq!(configs["min.compaction.lag.ms"].as_deref(), Some("1000"));
    assert_eq!(configs["max.compaction.lag.ms"].as_deref(), Some("60000"));
    // A ratio above 1 is INVALID_CONFIG (raw IncrementalAlterConfigs, to
    // read the code itself), and nothing changes.
    use kafka_protocol::messages::{
        incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
        IncrementalAlterConfigsRequest,
    };
    const INVALID_CONFIG: i16 = 40;
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name("table".to_string().into())
        .with_configs(vec![AlterableConfig::default()
            .with_name("min.cleanable.dirty.ratio".to_string().into())
            .with_config_operation(0)
            .with_value(Some("2".to_string().into()))])]);
    let answer = common::call(engine.addr, 1, &request).unwrap();
    assert_eq!(answer.responses[0].error_code, INVALID_CONFIG, "{answer:?}");
    assert_eq!(describe(&admin)["min.cleanable.dirty.ratio"].as_deref(), Some("0.1"));
}

#[test]
fn consumer_offsets_are_compacted_and_replay_to_the_last_commit() {
    let mut engine = Engine::start(&[
        "--shards",
        "1",
        "--fsync",
        "never",
        "--log-cleaner-backoff-ms",
        "200",
        "--offsets-topic-segment-bytes",
        "65536",
    ]);
    let topic = NewTopic::new("read", 1, TopicReplication::Fixed(1));
    create(&engine, &topic);
    let consumer = consumer_in(&engine, "committer");
    const COMMITS: i64 = 3000;
    for offset in 1..=COMMITS {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("read", 0, Offset::Offset(offset)).unwrap();
        consumer.commit(&list, CommitMode::Sync).unwrap();
    }
    drop(consumer);
    wait_for_cleaning(&engine, "__consumer_offsets", 1);
    engine.restart();
    let consumer = consumer_in(&engine, "committer");
    let mut list = TopicPartitionList::new();
    list.add_partition("read", 0);
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
    assert_eq!(
        committed.find_partition("read", 0).unwrap().offset(),
        Offset::Offset(COMMITS),
        "the last commit survives compaction and the restart"
    );
    // The replay read far fewer entries than were committed.
    let log = engine.log();
    let loaded: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("coordinator partition loaded"))
        .filter_map(|l| {
            let at = l.find(" entries=")? + " entries=".len();
            l.get(at..)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect();
    let replayed: u64 = loaded.iter().rev().take(2).sum();
    assert!(
        replayed < 1500,
        "replayed {replayed} entries of {COMMITS} commits: {loaded:?}"
    );
}

/// Every record of partition 0 of `topic` a consumer at `isolation` reads
/// from the beginning to the end of the partition: (key, value).
fn read_at(engine: &Engine, topic: &str, isolation: &str) -> Vec<(String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("group.id", "txn-compaction-readers")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        assert!(Instant::now() < deadline, "no end of {topic} at {isolation}: {out:?}");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => eprintln!("consumer event: {e}"),
            None => {}
        }
    }
}

#[test]
fn a_compacted_transactional_topic_keeps_the_last_committed_value_per_key() {
    const TOPIC: &str = "txn-changelog";
    const TXN_TIMEOUT: Duration = Duration::from_secs(30);
    let engine = Engine::start(&["--shards", "1", "--fsync", "never", "--log-cleaner-backoff-ms", "200"]);
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.ms", "1000")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", "600000");
    create(&engine, &topic);
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("transactional.id", "txn-compaction")
        .create()
        .unwrap();
    producer.init_transactions(TXN_TIMEOUT).unwrap();
    let transaction = |records: &[(&str, &str)], commit: bool| {
        producer.begin_transaction().unwrap();
        for (key, value) in records {
            producer
                .send(BaseRecord::to(TOPIC).partition(0).key(*key).payload(*value))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(TXN_TIMEOUT).unwrap();
        if commit {
            producer.commit_transaction(TXN_TIMEOUT).unwrap();
        } else {
            producer.abort_transaction(TXN_TIMEOUT).unwrap();
        }
    };
    transaction(&[("a", "a1"), ("b", "b1")], true);
    transaction(&[("a", "aborted"), ("c", "aborted")], false);
    transaction(&[("a", "a2")], true);
    transaction(&[("d", "aborted")], false);
    // Past segment.ms, the next transaction rolls the segment holding the
    // others: it becomes cleanable once that transaction commits.
    std::thread::sleep(Duration::from_millis(1100));
    transaction(&[("z", "z1")], true);
    wait_for_cleaning(&engine, TOPIC, 1);
    let expected: Vec<(String, String)> = [("b", "b1"), ("a", "a2"), ("z", "z1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // What Kafka's cleaner leaves: the last committed value per key,
    // aborted records gone, at either isolation level. (Passes run until
    // every sealed segment is clean.)
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let read = read_at(&engine, TOPIC, "read_uncommitted");
        if read == expected || Instant::now() >= deadline {
            assert_eq!(read, expected);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(read_at(&engine, TOPIC, "read_committed"), expected);
    // And after a restart, which rebuilds the transaction index from the
    // cleaned log.
    let mut engine = engine;
    engine.restart();
    assert_eq!(read_at(&engine, TOPIC, "read_committed"), expected);
    assert_eq!(read_at(&engine, TOPIC, "read_uncommitted"), expected);
}
