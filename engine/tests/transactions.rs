//! Kafka transactions (KIP-98) with librdkafka (the `rdkafka` crate)
//! against a real engine process: a transactional producer, read_committed
//! and read_uncommitted consumers, a producer that stops mid-transaction, a
//! fenced zombie, consume-transform-produce with offsets in the
//! transaction, and an engine killed (-9) while transactions commit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use common::{Engine, KafkaConnection};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::Message,
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
    Offset, TopicPartitionList,
};

/// Bound on any wait for messages (a test failure past it, never a timing
/// assertion).
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on every transactional call.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

type TxnProducer = ThreadedProducer<DefaultProducerContext>;

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

/// A transactional producer, its transactions initialised.
fn txn_producer(engine: &Engine, transactional_id: &str, timeout_ms: u32) -> TxnProducer {
    let producer: TxnProducer = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    producer.init_transactions(TXN_TIMEOUT).unwrap();
    producer
}

fn send(producer: &TxnProducer, topic: &str, partition: i32, payload: &str) {
    let deadline = Instant::now() + TXN_TIMEOUT;
    loop {
        match producer.send(
            BaseRecord::<str, str>::to(topic)
                .partition(partition)
                .key(payload)
                .payload(payload),
        ) {
            Ok(()) => return,
            Err((e, _)) => {
                assert!(Instant::now() < deadline, "send kept failing: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// One transaction writing `payloads` round-robin over `partitions`, then
/// committed or aborted.
fn transaction(producer: &TxnProducer, topic: &str, partitions: i32, payloads: &[String], commit: bool) {
    producer.begin_transaction().unwrap();
    for (i, payload) in payloads.iter().enumerate() {
        send(producer, topic, i32::try_from(i).unwrap() % partitions, payload);
    }
    if commit {
        producer.commit_transaction(TXN_TIMEOUT).unwrap();
    } else {
        // Stored first: librdkafka's abort drops records not yet sent.
        producer.flush(TXN_TIMEOUT).unwrap();
        producer.abort_transaction(TXN_TIMEOUT).unwrap();
    }
}

fn payloads(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

fn consumer(engine: &Engine, group: &str, isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap()
}

/// Reads `topic` from the beginning with `isolation` until `until` says
/// the payloads read so far are enough (bounded by [`CONSUME_TIMEOUT`]),
/// then for a moment longer, so anything that should not be there has a
/// chance to show.
fn read_all(
    engine: &Engine,
    topic: &str,
    partitions: i32,
    isolation: &str,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let consumer = consumer(engine, "txn-readers", isolation);
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    let mut settled: Option<Instant> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "read {} records before the timeout: {out:?}",
            out.len()
        );
        if settled.is_none() && until(&out) {
            settled = Some(Instant::now() + Duration::from_millis(500));
        }
        if settled.is_some_and(|at| Instant::now() >= at) {
            return out;
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            out.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
        }
    }
}

/// Where each producer's open transaction starts on `topic`'s partition 0
/// (DescribeProducers' `current_txn_start_offset`, -1 for none).
fn open_transactions(engine: &Engine, topic: &str) -> Vec<i64> {
    use kafka_protocol::messages::{describe_producers_request::TopicRequest, DescribeProducersRequest, TopicName};
    let mut connection = KafkaConnection::connect(engine.bootstrap().parse().unwrap()).unwrap();
    let mut wanted = TopicRequest::default();
    wanted.name = TopicName(kafka_protocol::protocol::StrBytes::from_string(topic.to_string()));
    wanted.partition_indexes = vec![0];
    let mut request = DescribeProducersRequest::default();
    request.topics = vec![wanted];
    let answer = connection.request(0, &request).unwrap();
    let partition = &answer.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    partition
        .active_producers
        .iter()
        .map(|p| p.current_txn_start_offset)
        .collect()
}

fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort();
    values
}

#[test]
fn committed_transactions_are_read_and_aborted_ones_skipped() {
    let engine = Engine::start(&[]);
    create_topic(&engine, "txn-basic", 2);
    let producer = txn_producer(&engine, "basic", 60_000);
    let first = payloads("committed-a", 10);
    let aborted = payloads("aborted", 10);
    let second = payloads("committed-b", 6);
    transaction(&producer, "txn-basic", 2, &first, true);
    transaction(&producer, "txn-basic", 2, &aborted, false);
    transaction(&producer, "txn-basic", 2, &second, true);

    let mut expected: Vec<String> = first.iter().chain(&second).cloned().collect();
    expected.sort();
    let committed = read_all(&engine, "txn-basic", 2, "read_committed", |read| {
        read.len() >= expected.len()
    });
    assert_eq!(
        sorted(committed),
        expected,
        "read_committed: committed records only, once each"
    );

    let everything = read_all(&engine, "txn-basic", 2, "read_uncommitted", |read| read.len() >= 26);
    assert_eq!(everything.len(), 26, "read_uncommitted sees aborted records too");
}

#[test]
fn a_transaction_left_open_is_aborted_after_its_timeout() {
    let engine = Engine::start(&[]);
    create_topic(&engine, "txn-open", 1);
    // A producer that stops mid-transaction: its records are sent, then it
    // never commits, aborts or talks to the broker again.
    let stalled = txn_producer(&engine, "stalled", 2_000);
    stalled.begin_transaction().unwrap();
    for payload in payloads("never", 5) {
        send(&stalled, "txn-open", 0, &payload);
    }
    stalled.flush(TXN_TIMEOUT).unwrap();
    // Another producer commits after it: read_committed readers see its
    // records once the stalled transaction is aborted, and never the
    // stalled one's.
    let live = txn_producer(&engine, "live", 60_000);
    let committed = payloads("live", 5);
    transaction(&live, "txn-open", 1, &committed, true);
    let read = read_all(&engine, "txn-open", 1, "read_committed", |read| read.len() >= 5);
    assert_eq!(sorted(read), sorted(committed));
    assert!(
        engine.log().contains("transaction timed out: aborting"),
        "the coordinator aborted it"
    );
    // The stalled producer was fenced by the abort.
    let refused = stalled.commit_transaction(TXN_TIMEOUT);
    assert!(refused.is_err(), "a timed-out transaction cannot commit: {refused:?}");
    std::mem::forget(stalled);
}

#[test]
fn a_second_producer_with_the_same_id_fences_the_first() {
    let engine = Engine::start(&[]);
    create_topic(&engine, "txn-zombie", 2);
    let zombie = txn_producer(&engine, "shared-id", 60_000);
    zombie.begin_transaction().unwrap();
    for (i, payload) in payloads("zombie", 4).iter().enumerate() {
        send(&zombie, "txn-zombie", i32::try_from(i % 2).unwrap(), payload);
    }
    zombie.flush(TXN_TIMEOUT).unwrap();
    assert_eq!(open_transactions(&engine, "txn-zombie"), vec![0], "open at offset 0");

    // The new instance's InitProducerId aborts the zombie's transaction and
    // bumps the epoch.
    let successor = txn_producer(&engine, "shared-id", 60_000);
    assert_eq!(open_transactions(&engine, "txn-zombie"), vec![-1], "aborted");
    let fenced = zombie.commit_transaction(TXN_TIMEOUT);
    match &fenced {
        Err(KafkaError::Transaction(e)) => assert!(e.is_fatal(), "fencing is fatal: {e}"),
        other => panic!("the zombie's commit must be refused, got {other:?}"),
    }
    let committed = payloads("successor", 4);
    transaction(&successor, "txn-zombie", 2, &committed, true);
    let read = read_all(&engine, "txn-zombie", 2, "read_committed", |read| read.len() >= 4);
    assert_eq!(sorted(read), sorted(committed), "nothing of the zombie's is visible");
}

#[test]
fn operators_list_and_describe_transactions() {
    use kafka_protocol::{
        messages::{DescribeTransactionsRequest, ListTransactionsRequest, TransactionalId},
        protocol::StrBytes,
    };
    let engine = Engine::start(&[]);
    create_topic(&engine, "txn-ops", 2);
    let producer = txn_producer(&engine, "ops", 60_000);
    producer.begin_transaction().unwrap();
    send(&producer, "txn-ops", 1, "open");
    producer.flush(TXN_TIMEOUT).unwrap();

    let mut connection = KafkaConnection::connect(engine.bootstrap().parse().unwrap()).unwrap();
    let text = |s: &str| StrBytes::from_string(s.to_string());
    let mut list = ListTransactionsRequest::default();
    list.state_filters = vec![text("Ongoing"), text("Nonsense")];
    list.duration_filter = 0;
    let listed = connection.request(1, &list).unwrap();
    assert_eq!(listed.error_code, 0);
    assert_eq!(listed.unknown_state_filters, vec![text("Nonsense")]);
    let ids: Vec<String> = listed
        .transaction_states
        .iter()
        .map(|t| t.transactional_id.0.to_string())
        .collect();
    assert_eq!(ids, vec!["ops".to_string()]);

    let mut describe = DescribeTransactionsRequest::default();
    describe.transactional_ids = vec![TransactionalId(text("ops")), TransactionalId(text("nobody"))];
    let described = connection.request(0, &describe).unwrap();
    let ops = &described.transaction_states[0];
    assert_eq!((ops.error_code, ops.transaction_state.as_str()), (0, "Ongoing"));
    assert_eq!(ops.transaction_timeout_ms, 60_000);
    assert!(ops.transaction_start_time_ms > 0);
    assert_eq!(ops.topics.len(), 1);
    assert_eq!(ops.topics[0].partitions, vec![1]);
    assert_eq!(
        described.transaction_states[1].error_code, 105,
        "TRANSACTIONAL_ID_NOT_FOUND"
    );
    // /metrics: the open transaction holds its partition's LSO below the
    // high watermark.
    let stable = |engine: &Engine| {
        (
            engine.metric_total("shardline_partition_last_stable_offset"),
            engine.metric_total("shardline_partition_high_watermark"),
        )
    };
    let (lso, hw) = stable(&engine);
    assert!(lso < hw, "LSO {lso} below HW {hw} while open");

    producer.commit_transaction(TXN_TIMEOUT).unwrap();
    let described = connection.request(0, &describe).unwrap();
    let ops = &described.transaction_states[0];
    assert_eq!(ops.transaction_state.as_str(), "CompleteCommit");
    assert!(ops.topics.is_empty());
    let listed = connection.request(1, &list).unwrap();
    assert!(listed.transaction_states.is_empty(), "nothing open");
    let (lso, hw) = stable(&engine);
    assert_eq!(lso, hw, "nothing holds the LSO back once committed");
}

#[test]
fn consume_transform_produce_commits_offsets_with_the_output() {
    let engine = Engine::start(&[]);
    create_topic(&engine, "ctp-in", 1);
    create_topic(&engine, "ctp-out", 1);
    let feeder = txn_producer(&engine, "feeder", 60_000);
    transaction(&feeder, "ctp-in", 1, &payloads("in", 10), true);

    let group = "ctp-group";
    let input = consumer(&engine, group, "read_committed");
    input.subscribe(&["ctp-in"]).unwrap();
    let processor = txn_producer(&engine, "processor", 60_000);
    let mut seen = 0usize;
    let mut round = 0usize;
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    // Two rounds of five: the first aborted (its output and offsets must
    // vanish), then the same records again, committed.
    let mut batch: Vec<(i64, String)> = Vec::new();
    while round < 3 {
        assert!(Instant::now() < deadline, "round {round}, seen {seen}");
        let Some(message) = input.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap();
        let payload = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
        batch.push((message.offset(), payload));
        seen += 1;
        if batch.len() < 5 {
            continue;
        }
        let next_offset = batch.last().unwrap().0 + 1;
        processor.begin_transaction().unwrap();
        for (_, payload) in &batch {
            send(&processor, "ctp-out", 0, &format!("out-{payload}"));
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("ctp-in", 0, Offset::Offset(next_offset))
            .unwrap();
        processor
            .send_offsets_to_transaction(&offsets, &input.group_metadata().unwrap(), TXN_TIMEOUT)
            .unwrap();
        if round == 0 {
            processor.flush(TXN_TIMEOUT).unwrap();
            processor.abort_transaction(TXN_TIMEOUT).unwrap();
            // Rewind to the last committed position, as an application does.
            input
                .seek("ctp-in", 0, Offset::Offset(batch[0].0), Duration::from_secs(10))
                .unwrap();
        } else {
            processor.commit_transaction(TXN_TIMEOUT).unwrap();
        }
        batch.clear();
        round += 1;
    }
    let expected: Vec<String> = payloads("in", 10).iter().map(|p| format!("out-{p}")).collect();
    let output = read_all(&engine, "ctp-out", 1, "read_committed", |read| read.len() >= 10);
    assert_eq!(sorted(output), sorted(expected), "each input transformed exactly once");
    // The group's committed offset came with the last commit.
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("ctp-in", 0);
    let committed = input.committed_offsets(wanted, Duration::from_secs(10)).unwrap();
    assert_eq!(
        committed.find_partition("ctp-in", 0).unwrap().offset(),
        Offset::Offset(10)
    );
}

#[test]
fn transactions_survive_a_kill_9_whole_or_not_at_all() {
    let mut engine = Engine::start(&[]);
    create_topic(&engine, "txn-crash", 2);
    // Transactions of 4 records over 2 partitions, committed one after the
    // other from a thread, while the engine is killed mid-way.
    let bootstrap = engine.bootstrap();
    let (acknowledged_tx, acknowledged_rx) = std::sync::mpsc::channel::<usize>();
    let writer = std::thread::spawn(move || {
        let producer: TxnProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("transactional.id", "crash")
            .set("transaction.timeout.ms", "3000")
            .set("linger.ms", "0")
            .create()
            .unwrap();
        if producer.init_transactions(TXN_TIMEOUT).is_err() {
            return;
        }
        for t in 0..200usize {
            if producer.begin_transaction().is_err() {
                return;
            }
            for r in 0..4 {
                let payload = format!("t{t:03}-r{r}");
                if producer
                    .send(
                        BaseRecord::<str, str>::to("txn-crash")
                            .partition(r % 2)
                            .payload(&payload),
                    )
                    .is_err()
                {
                    return;
                }
            }
            if producer.commit_transaction(Duration::from_secs(5)).is_err() {
                return;
            }
            if acknowledged_tx.send(t).is_err() {
                return;
            }
        }
    });
    // Kill once a few transactions are acknowledged (one is then most
    // likely being committed).
    let mut acknowledged = BTreeSet::new();
    while acknowledged.len() < 5 {
        acknowledged.insert(
            acknowledged_rx
                .recv_timeout(CONSUME_TIMEOUT)
                .expect("transactions commit"),
        );
    }
    engine.kill9();
    writer.join().unwrap();
    acknowledged.extend(acknowledged_rx.try_iter());
    engine.restart();

    // Every acknowledged transaction is visible; any transaction is wholly
    // visible or wholly absent (the open one is aborted by its timeout).
    let read = read_all(&engine, "txn-crash", 2, "read_committed", |read| {
        let seen: BTreeSet<&str> = read.iter().map(|p| &p[..4]).collect();
        acknowledged.iter().all(|t| seen.contains(format!("t{t:03}").as_str()))
    });
    let mut by_transaction: BTreeMap<String, usize> = BTreeMap::new();
    for payload in &read {
        *by_transaction.entry(payload[..4].to_string()).or_default() += 1;
    }
    for (t, count) in &by_transaction {
        assert_eq!(*count, 4, "transaction {t}: {count} of its 4 records visible");
    }
    for t in &acknowledged {
        assert!(
            by_transaction.contains_key(&format!("t{t:03}")),
            "acknowledged {t} lost"
        );
    }
    // The partitions are not stuck behind an open transaction: a new
    // producer's commit becomes visible.
    let after = txn_producer(&engine, "after-crash", 60_000);
    transaction(&after, "txn-crash", 2, &payloads("after", 2), true);
    let read = read_all(&engine, "txn-crash", 2, "read_committed", |read| {
        read.iter().filter(|p| p.starts_with("after")).count() >= 2
    });
    assert_eq!(read.iter().filter(|p| p.starts_with("after")).count(), 2);
}
