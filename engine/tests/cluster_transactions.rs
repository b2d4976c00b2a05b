//! A transaction whose coordinator's node is killed, on three engine
//! processes, with librdkafka.
//!
//! A topic of three partitions is replicated on all three nodes. A
//! transactional producer commits one transaction, then writes a second and
//! the node coordinating its transactional id (the leader of the id's
//! `__transaction_state` partition) is killed (-9) before the commit. The
//! commit is retried against the new coordinator, which loads the id from
//! its replica of that partition; the markers reach partitions led by other
//! nodes through WriteTxnMarkers. Afterwards a read_committed consumer sees
//! the first transaction, the second wholly or not at all, and a third
//! transaction committed after the node came back.
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

use common::cluster::Cluster;
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    message::Message,
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
    Offset, TopicPartitionList,
};

const TOPIC: &str = "cluster-txn";
const PARTITIONS: i32 = 3;
const TRANSACTIONAL_ID: &str = "cluster-txn-producer";
/// Bound on the cluster forming or a node rejoining, and on catching up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on every transactional call (a coordinator failover included).
const TXN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on reading the topic back.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);

type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// Kafka's partition of a key: `abs(String.hashCode(key)) % partitions`.
fn partition_for(key: &str, partitions: usize) -> usize {
    let mut hash: i32 = 0;
    for unit in key.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    usize::try_from(positive).unwrap() % partitions
}

fn send_all(producer: &TxnProducer, prefix: &str) {
    for r in 0..PARTITIONS {
        let payload = format!("{prefix}-r{r}");
        let deadline = Instant::now() + TXN_TIMEOUT;
        while let Err((e, _)) = producer.send(BaseRecord::<str, str>::to(TOPIC).partition(r).payload(&payload)) {
            assert!(Instant::now() < deadline, "send kept failing: {e}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Payloads read with read_committed until `until` holds (then half a
/// second more, for anything that should not be there).
fn read_committed(cluster: &Cluster, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "cluster-txn-readers")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    let mut settled: Option<Instant> = None;
    loop {
        assert!(Instant::now() < deadline, "read {out:?} before the timeout");
        if settled.is_none() && until(&out) {
            settled = Some(Instant::now() + Duration::from_millis(500));
        }
        if settled.is_some_and(|at| Instant::now() >= at) {
            return out;
        }
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            out.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
        }
    }
}

#[test]
fn a_transaction_survives_the_loss_of_its_coordinator() {
    let mut cluster = Cluster::start(common::cluster::REPLICATED_FLAGS);
    cluster.wait_ready(READY_TIMEOUT);
    cluster.create_topic(TOPIC, PARTITIONS, &[("min.insync.replicas", "2")]);
    cluster.wait_full_isr(TOPIC, PARTITIONS, READY_TIMEOUT);
    let state_leaders = cluster.partition_leaders("__transaction_state");
    let coordinator = state_leaders[partition_for(TRANSACTIONAL_ID, state_leaders.len())];

    let producer: TxnProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("transactional.id", TRANSACTIONAL_ID)
        .set("transaction.timeout.ms", "20000")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    producer.init_transactions(TXN_TIMEOUT).unwrap();
    producer.begin_transaction().unwrap();
    send_all(&producer, "first");
    producer.commit_transaction(TXN_TIMEOUT).unwrap();

    // The second transaction's records are stored, then its coordinator dies.
    producer.begin_transaction().unwrap();
    send_all(&producer, "second");
    producer.flush(TXN_TIMEOUT).unwrap();
    cluster.kill9(coordinator);
    let second_committed = producer.commit_transaction(TXN_TIMEOUT).is_ok();
    println!("coordinator node {coordinator} killed; the second commit answered ok: {second_committed}");
    cluster.restart(coordinator);
    cluster.wait_ready(READY_TIMEOUT);

    // A third transaction, with whichever producer can still write.
    let third: TxnProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("transactional.id", "cluster-txn-after")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    third.init_transactions(TXN_TIMEOUT).unwrap();
    third.begin_transaction().unwrap();
    send_all(&third, "third");
    third.commit_transaction(TXN_TIMEOUT).unwrap();

    let read = read_committed(&cluster, |read| {
        let count = |prefix: &str| read.iter().filter(|p| p.starts_with(prefix)).count();
        let second_done = !second_committed || count("second") == 3;
        count("first") == 3 && count("third") == 3 && second_done
    });
    let mut by_transaction: BTreeMap<&str, usize> = BTreeMap::new();
    for payload in &read {
        *by_transaction.entry(payload.split('-').next().unwrap()).or_default() += 1;
    }
    for (transaction, count) in &by_transaction {
        assert_eq!(*count, 3, "{transaction}: {count} of its 3 records visible");
    }
    assert!(by_transaction.contains_key("first") && by_transaction.contains_key("third"));
    if second_committed {
        assert!(by_transaction.contains_key("second"), "an acknowledged commit was lost");
    }
    // Markers crossed nodes: every node leads one partition of the topic.
    let markers_served: u64 = cluster
        .running()
        .into_iter()
        .map(|node| {
            let metrics = String::from_utf8_lossy(&cluster.http_get(node, "/metrics").body).into_owned();
            metrics
                .lines()
                .filter(|line| {
                    line.starts_with("shardline_requests_total{") && line.contains("api=\"WriteTxnMarkers\"")
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    assert!(markers_served > 0, "no WriteTxnMarkers between nodes");
    std::mem::forget(producer);
}
