//! librdkafka (through the `rdkafka` crate) against a real engine process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::Engine;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    message::Message,
    producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext},
    ClientContext, Offset, TopicPartitionList,
};

/// Bound on any wait for messages in these tests.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);

/// A delivery report: (partition, offset, key) or the error.
type Delivery = Result<(i32, i64, Vec<u8>), String>;

#[derive(Default, Clone)]
struct Deliveries(Arc<Mutex<Vec<Delivery>>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let entry = match result {
            Ok(m) => Ok((m.partition(), m.offset(), m.key().unwrap_or_default().to_vec())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().unwrap().push(entry);
    }
}

fn create_topic(engine: &Engine, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .create()
        .unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = futures_executor::block_on(admin.create_topics(&[topic], &AdminOptions::new())).unwrap();
    for result in results {
        result.unwrap();
    }
}

fn producer(engine: &Engine, extra: &[(&str, &str)]) -> (BaseProducer<Deliveries>, Deliveries) {
    let deliveries = Deliveries::default();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", engine.bootstrap())
        .set("linger.ms", "5")
        .set("message.timeout.ms", "20000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    (config.create_with_context(deliveries.clone()).unwrap(), deliveries)
}

/// Produces `count` keyed messages and waits for every delivery report.
fn produce(engine: &Engine, topic: &str, count: usize, extra: &[(&str, &str)]) -> Vec<(i32, i64, Vec<u8>)> {
    let (producer, deliveries) = producer(engine, extra);
    for i in 0..count {
        let key = format!("key-{}", i % 17);
        let payload = format!("message-{i}-{}", "x".repeat(i % 300));
        loop {
            match producer.send(BaseRecord::to(topic).key(&key).payload(&payload)) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(e.to_string().contains("Queue full"), "send failed: {e}");
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let results = deliveries.0.lock().unwrap().clone();
    assert_eq!(results.len(), count);
    results.into_iter().map(|r| r.unwrap()).collect()
}

/// Reads every partition from the beginning until `expected` messages arrived.
fn consume_all(engine: &Engine, topic: &str, partitions: i32, expected: usize) -> Vec<(i32, i64, Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        // librdkafka wants a group id even for assign(); no group is joined
        // (offsets are given, nothing is committed).
        .set("group.id", "rdkafka-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    while out.len() < expected {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {expected} before the timeout",
            out.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            // Transient client-side events (a connection retried) are not failures;
            // a real failure shows as missing messages at the deadline.
            let m = match message {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("consumer event: {e}");
                    continue;
                }
            };
            out.push((
                m.partition(),
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    // Nothing more than what was produced.
    if let Some(Ok(extra)) = consumer.poll(Duration::from_millis(500)) {
        panic!("unexpected extra message at {}:{}", extra.partition(), extra.offset());
    }
    out
}

#[test]
fn produce_and_consume_with_every_compression_codec() {
    let engine = Engine::start(&["--shards", "1", "--fsync", "never"]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&engine, &topic, 2);
        let delivered = produce(&engine, &topic, 300, &[("compression.codec", codec)]);
        let consumed = consume_all(&engine, &topic, 2, 300);
        let mut by_offset: BTreeMap<(i32, i64), Vec<u8>> = BTreeMap::new();
        for (p, o, _, payload) in &consumed {
            assert!(
                by_offset.insert((*p, *o), payload.clone()).is_none(),
                "{codec}: duplicate {p}:{o}"
            );
        }
        for (p, o, _) in &delivered {
            assert!(
                by_offset.contains_key(&(*p, *o)),
                "{codec}: delivered {p}:{o} not consumed"
            );
        }
        // Per partition, messages come back in produce order.
        for p in 0..2 {
            let offsets: Vec<i64> = consumed.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "{codec}: partition {p} out of order"
            );
        }
    }
}

#[test]
fn keyed_messages_land_on_the_partition_the_client_chose() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    create_topic(&engine, "keyed", 6);
    let delivered = produce(&engine, "keyed", 600, &[]);
    let consumed = consume_all(&engine, "keyed", 6, 600);
    let mut partition_of_key: HashMap<Vec<u8>, i32> = HashMap::new();
    for (p, _, key) in &delivered {
        let first = *partition_of_key.entry(key.clone()).or_insert(*p);
        assert_eq!(first, *p, "one key, one partition");
    }
    for (p, o, key, _) in &consumed {
        assert_eq!(
            partition_of_key.get(key),
            Some(p),
            "message {p}:{o} is on its key's partition"
        );
    }
    let used: std::collections::BTreeSet<i32> = delivered.iter().map(|d| d.0).collect();
    assert!(used.len() > 1, "17 keys should spread over several partitions");
}

#[test]
fn idempotent_producer_delivers_each_message_exactly_once() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "always"]);
    create_topic(&engine, "idem", 3);
    let delivered = produce(
        &engine,
        "idem",
        500,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("max.in.flight.requests.per.connection", "5"),
        ],
    );
    let consumed = consume_all(&engine, "idem", 3, 500);
    let mut seen = std::collections::HashSet::new();
    for (_, _, _, payload) in &consumed {
        assert!(seen.insert(payload.clone()), "duplicate payload");
    }
    assert_eq!(delivered.len(), consumed.len());
}

#[test]
fn two_shards_serve_every_partition_to_a_client_on_either_shard() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    create_topic(&engine, "spread", 8);
    produce(&engine, "spread", 400, &[]);
    // Partitions are placed on both shards.
    let log = engine.log();
    for shard in 0..2 {
        assert!(
            log.contains(&format!("partition opened shard={shard}")),
            "no partition on shard {shard}:\n{log}"
        );
    }
    // Connections land on shards by the kernel's SO_REUSEPORT hash; open
    // consumers until both shards have served one, each reading everything.
    let mut served_by = std::collections::BTreeSet::new();
    for attempt in 0..16 {
        let consumed = consume_all(&engine, "spread", 8, 400);
        assert_eq!(consumed.len(), 400, "attempt {attempt}");
        let log = engine.log();
        for shard in 0..2 {
            if log.contains(&format!("connection accepted shard={shard}")) {
                served_by.insert(shard);
            }
        }
        if served_by.len() == 2 {
            break;
        }
    }
    assert_eq!(served_by.len(), 2, "connections never reached both shards");
}

#[test]
fn acknowledged_messages_survive_kill_minus_nine() {
    let mut engine = Engine::start(&["--shards", "2", "--fsync", "always"]);
    create_topic(&engine, "durable", 4);
    let delivered = produce(&engine, "durable", 1000, &[("acks", "all")]);
    engine.kill9();
    engine.restart();
    let consumed = consume_all(&engine, "durable", 4, delivered.len());
    let mut delivered_at: BTreeMap<(i32, i64), Vec<u8>> = BTreeMap::new();
    for (p, o, key) in delivered {
        delivered_at.insert((p, o), key);
    }
    for (p, o, key, _) in &consumed {
        assert_eq!(delivered_at.get(&(*p, *o)), Some(key), "message {p}:{o} after restart");
    }
    // In order per partition, exactly the acknowledged ones.
    assert_eq!(consumed.len(), delivered_at.len());
}

#[test]
fn watermarks_and_offsets_for_times() {
    let engine = Engine::start(&["--shards", "1", "--fsync", "never"]);
    create_topic(&engine, "offsets", 1);
    produce(&engine, "offsets", 50, &[]);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks("offsets", 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!((low, high), (0, 50));
    let mut query = TopicPartitionList::new();
    query.add_partition_offset("offsets", 0, Offset::Offset(0)).unwrap();
    let found = consumer.offsets_for_times(query, Duration::from_secs(10)).unwrap();
    assert_eq!(found.find_partition("offsets", 0).unwrap().offset(), Offset::Offset(0));
    let mut future = TopicPartitionList::new();
    let far = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
        + 3_600_000;
    future.add_partition_offset("offsets", 0, Offset::Offset(far)).unwrap();
    let found = consumer.offsets_for_times(future, Duration::from_secs(10)).unwrap();
    assert_eq!(found.find_partition("offsets", 0).unwrap().offset(), Offset::End);
}

#[test]
fn metadata_lists_the_broker_and_topics() {
    let engine = Engine::start(&["--shards", "2"]);
    create_topic(&engine, "listed", 3);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    // One broker per shard, each on its own port (shard k: --listen port + k).
    let mut brokers: Vec<(i32, u16)> = metadata.brokers().iter().map(|b| (b.id(), b.port() as u16)).collect();
    brokers.sort_unstable();
    let port = engine.addr.port();
    assert_eq!(brokers, vec![(1, port), (1001, port + 1)]);
    let topic = metadata.topics().iter().find(|t| t.name() == "listed").unwrap();
    assert_eq!(topic.partitions().len(), 3);
    assert!(topic.partitions().iter().all(|p| p.leader() == 1 || p.leader() == 1001));
    // Unknown topics are an error, not an auto-creation (off by default).
    let unknown = consumer
        .fetch_metadata(Some("missing"), Duration::from_secs(10))
        .unwrap();
    assert!(unknown.topics()[0].error().is_some());
}

/// A topic name no topic can have fails at once with INVALID_TOPIC_EXCEPTION
/// (issue 17 §3), on Metadata and on Produce, instead of an unknown topic the
/// client retries until its delivery timeout (20 s here).
#[test]
fn an_invalid_topic_name_fails_at_once() {
    let engine = Engine::start(&["--shards", "1", "--fsync", "never", "--auto-create-topics"]);
    let answer = common::call(
        engine.addr,
        7,
        &kafka_protocol::messages::MetadataRequest::default()
            .with_allow_auto_topic_creation(true)
            .with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default().with_name(Some(
                    kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_static_str(
                        "no spaces/or slashes!",
                    )),
                )),
            ])),
    )
    .unwrap();
    assert_eq!(answer.topics[0].error_code, 17, "INVALID_TOPIC_EXCEPTION");

    let (producer, deliveries) = producer(&engine, &[]);
    let started = std::time::Instant::now();
    producer
        .send(BaseRecord::<(), str>::to("no spaces/or slashes!").payload("x"))
        .unwrap();
    while deliveries.0.lock().unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(15), "no delivery report");
        producer.poll(Duration::from_millis(50));
    }
    let report = deliveries.0.lock().unwrap()[0].clone();
    assert!(report.as_ref().is_err_and(|e| e.contains("nvalid topic")), "{report:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // Nothing was created, and a good name still works.
    assert!(
        !engine.log().contains("auto-created topic topic=no spaces"),
        "{}",
        engine.log()
    );
    assert_eq!(produce(&engine, "fine-name", 3, &[]).len(), 3);
}

/// Issue 17 section 3: a topic with `message.timestamp.type=LogAppendTime`
/// gives every record the broker's append time, whatever the producer set;
/// and a timestamp lookup names the first record at or after the time even
/// inside a batch whose records are out of time order.
#[test]
fn log_append_time_and_timestamp_lookups_by_record() {
    let engine = Engine::start(&["--shards", "1", "--fsync", "never"]);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .create()
        .unwrap();
    let topics = [
        NewTopic::new("stamped", 1, TopicReplication::Fixed(1)).set("message.timestamp.type", "LogAppendTime"),
        NewTopic::new("timed", 1, TopicReplication::Fixed(1)),
    ];
    for result in futures_executor::block_on(admin.create_topics(&topics, &AdminOptions::new())).unwrap() {
        result.unwrap();
    }
    let now_ms = || {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    };
    let before_ms = now_ms();
    let (producer, _) = producer(&engine, &[("linger.ms", "50")]);
    for (topic, timestamp_ms) in [("stamped", 1000), ("stamped", 2000), ("timed", 1000), ("timed", 3000)] {
        producer
            .send(BaseRecord::<str, str>::to(topic).payload("v").timestamp(timestamp_ms))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let after_ms = now_ms();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("group.id", "timestamps")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["stamped"]).unwrap();
    let mut stamps = Vec::new();
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    while stamps.len() < 2 && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            stamps.push(message.unwrap().timestamp());
        }
    }
    assert_eq!(stamps.len(), 2);
    for stamp in stamps {
        match stamp {
            rdkafka::Timestamp::LogAppendTime(ms) => {
                assert!((before_ms..=after_ms).contains(&ms), "{ms} in {before_ms}..={after_ms}")
            }
            other => panic!("a LogAppendTime record, not {other:?}"),
        }
    }

    let lookup = |timestamp_ms: i64| {
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset("timed", 0, Offset::Offset(timestamp_ms))
            .unwrap();
        let found = consumer.offsets_for_times(query, Duration::from_secs(10)).unwrap();
        found.find_partition("timed", 0).unwrap().offset()
    };
    assert_eq!(lookup(500), Offset::Offset(0));
    assert_eq!(lookup(2000), Offset::Offset(1), "the record at 3000, not its batch");
    assert_eq!(lookup(3001), Offset::End);
}

/// Issue 17 section 3, KIP-937 and KIP-467: a topic that bounds how far
/// record timestamps may be from the broker's time refuses a batch with a
/// record out of bounds as INVALID_TIMESTAMP, naming each such record and
/// why, and stores nothing of it; librdkafka reports the error per message.
#[test]
fn records_out_of_the_timestamp_bounds_are_refused_by_record() {
    use kafka_protocol::messages::{
        produce_request::{PartitionProduceData, TopicProduceData},
        ProduceRequest, TopicName,
    };
    const INVALID_TIMESTAMP: i16 = 32;
    let engine = Engine::start(&["--shards", "1", "--fsync", "never"]);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .create()
        .unwrap();
    let topic = NewTopic::new("bounded", 1, TopicReplication::Fixed(1))
        .set("message.timestamp.before.max.ms", "3600000")
        .set("message.timestamp.after.max.ms", "60000");
    for result in futures_executor::block_on(admin.create_topics(&[topic], &AdminOptions::new())).unwrap() {
        result.unwrap();
    }
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();

    // Raw Produce v8: records 0 and 2 are fine, 1 is two hours old, 3 is an
    // hour ahead.
    let batch =
        shardline_log::build_batch_with_timestamps(now_ms - 7_200_000, &[7_200_000, 0, 7_200_000, 10_800_000], 0);
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName("bounded".to_string().into()))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from(batch)))])]);
    let answer = common::call(engine.addr, 8, &request).unwrap();
    let partition = &answer.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, INVALID_TIMESTAMP, "{partition:?}");
    let named: Vec<i32> = partition.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(named, vec![1, 3], "{partition:?}");
    assert!(partition
        .error_message
        .as_ref()
        .is_some_and(|m| m.contains("out of the topic's bounds")));

    // librdkafka: the old message fails with INVALID_TIMESTAMP, the current
    // one is stored (sent after, in a batch of its own: a refused batch is
    // refused whole, as in Kafka).
    let (producer, deliveries) = producer(&engine, &[]);
    producer
        .send(BaseRecord::<str, str>::to("bounded").payload("old").timestamp(1000))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    producer
        .send(BaseRecord::<str, str>::to("bounded").payload("now").timestamp(now_ms))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    let results = deliveries.0.lock().unwrap().clone();
    assert_eq!(results.len(), 2);
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(failed.len(), 1, "{results:?}");
    assert!(failed[0].contains("InvalidTimestamp"), "{failed:?}");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks("bounded", 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!((low, high), (0, 1), "only the current message is stored");
}
