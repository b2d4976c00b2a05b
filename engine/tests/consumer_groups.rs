//! Consumer groups with real clients (librdkafka through the `rdkafka` crate,
//! and Debian's kcat with librdkafka 2.0.2) against a real engine process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::Engine;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, CommitMode, Consumer},
    message::Message,
    producer::{BaseProducer, BaseRecord, Producer},
    Offset, TopicPartitionList,
};

/// Session timeout the group members use: short, so expiry is tested quickly.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// Bound on the first, full rebalance of a group (clients start, join, sync).
const FIRST_ASSIGNMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on any wait for messages.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Produces `count` messages round-robin over `partitions` and waits for them.
fn produce(engine: &Engine, topic: &str, partitions: i32, count: usize, tag: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("linger.ms", "5")
        .set("message.timeout.ms", "20000")
        .create()
        .unwrap();
    for i in 0..count {
        let payload = format!("{tag}-{i}");
        let partition = i32::try_from(i).unwrap() % partitions;
        producer
            .send(BaseRecord::<(), _>::to(topic).partition(partition).payload(&payload))
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn group_consumer(engine: &Engine, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", engine.bootstrap())
        .set("group.id", group)
        .set("session.timeout.ms", SESSION_TIMEOUT.as_millis().to_string())
        .set("heartbeat.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// A group member polling on its own thread, publishing its assignment.
struct Member {
    assignment: Arc<Mutex<BTreeSet<i32>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Member {
    fn start(engine: &Engine, group: &str, topic: &str) -> Member {
        let consumer = group_consumer(engine, group);
        consumer.subscribe(&[topic]).unwrap();
        let assignment = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (assignment, stop) = (Arc::clone(&assignment), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                        eprintln!("consumer event: {e}");
                    }
                    let now: BTreeSet<i32> = consumer
                        .assignment()
                        .map(|list| list.elements().iter().map(|e| e.partition()).collect())
                        .unwrap_or_default();
                    *assignment.lock().unwrap() = now;
                }
                // Dropping the consumer closes it: it leaves the group.
                drop(consumer);
            })
        };
        Member {
            assignment,
            stop,
            thread: Some(thread),
        }
    }

    fn assignment(&self) -> BTreeSet<i32> {
        self.assignment.lock().unwrap().clone()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when the assignments are disjoint, non-empty, and cover `0..partitions`.
fn split_exactly(assignments: &[BTreeSet<i32>], partitions: i32) -> bool {
    let total: usize = assignments.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = assignments.iter().flatten().copied().collect();
    let all: BTreeSet<i32> = (0..partitions).collect();
    assignments.iter().all(|a| !a.is_empty()) && total == union.len() && union == all
}

/// Waits (bounded) until `members` split the partitions exactly; returns how long it took.
fn wait_for_split(members: &[&Member], partitions: i32, bound: Duration, engine: &Engine) -> Duration {
    let start = Instant::now();
    loop {
        let assignments: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment()).collect();
        if split_exactly(&assignments, partitions) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "no exact split within {bound:?}: {assignments:?}\n{}",
            engine.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_consumers_split_six_partitions_and_two_take_over_when_one_leaves() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    create_topic(&engine, "grouped", 6);
    let first = Member::start(&engine, "splitters", "grouped");
    let second = Member::start(&engine, "splitters", "grouped");
    let mut third = Member::start(&engine, "splitters", "grouped");
    wait_for_split(&[&first, &second, &third], 6, FIRST_ASSIGNMENT_TIMEOUT, &engine);
    third.stop();
    let took = wait_for_split(&[&first, &second], 6, SESSION_TIMEOUT, &engine);
    eprintln!("two consumers took over all 6 partitions {took:?} after the third left");
}

#[test]
fn a_killed_member_is_expired_after_its_session_and_the_rest_take_over() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    create_topic(&engine, "expiring", 6);
    let first = Member::start(&engine, "expirers", "expiring");
    let second = Member::start(&engine, "expirers", "expiring");
    wait_for_split(&[&first, &second], 6, FIRST_ASSIGNMENT_TIMEOUT, &engine);
    // A third member in another process, Debian's kcat (librdkafka 2.0.2): an old client.
    let mut kcat = Command::new("kcat")
        .args(["-b", &engine.bootstrap(), "-G", "expirers", "expiring"])
        .args(["-X", &format!("session.timeout.ms={}", SESSION_TIMEOUT.as_millis())])
        .args(["-X", "heartbeat.interval.ms=1000", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kcat installed (scripts/test-all installs it)");
    // The two in-process members shrink to make room for it.
    let start = Instant::now();
    loop {
        let taken: usize = first.assignment().len() + second.assignment().len();
        let both = !first.assignment().is_empty() && !second.assignment().is_empty();
        if taken < 6 && both {
            break;
        }
        assert!(
            start.elapsed() < FIRST_ASSIGNMENT_TIMEOUT,
            "kcat never got partitions\n{}",
            engine.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // kill -9: no LeaveGroup, heartbeats just stop.
    kcat.kill().unwrap();
    kcat.wait().unwrap();
    let killed = Instant::now();
    // Expiry after the session timeout, then one rebalance (members learn of
    // it at their next heartbeat, each second).
    let bound = SESSION_TIMEOUT + Duration::from_secs(5);
    wait_for_split(&[&first, &second], 6, bound, &engine);
    let took = killed.elapsed();
    eprintln!("the killed member's partitions were taken over after {took:?}");
    assert!(
        took >= SESSION_TIMEOUT - Duration::from_secs(2),
        "expired too early: {took:?}"
    );
    assert!(engine.log().contains("member session expired"));
}

/// Consumes from a group until `count` messages arrived: (partition, offset, payload).
fn consume_in_group(consumer: &BaseConsumer, count: usize, engine: &Engine) -> Vec<(i32, i64, String)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {count}\n{}",
            out.len(),
            engine.log()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                m.partition(),
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(e)) => eprintln!("consumer event: {e}"),
            None => {}
        }
    }
    out
}

#[test]
fn committed_offsets_survive_a_restart_and_a_new_member_resumes_from_them() {
    let mut engine = Engine::start(&["--shards", "2", "--fsync", "always"]);
    create_topic(&engine, "resume", 2);
    produce(&engine, "resume", 2, 100, "before");
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    {
        let consumer = group_consumer(&engine, "resumers");
        consumer.subscribe(&["resume"]).unwrap();
        let got = consume_in_group(&consumer, 40, &engine);
        for (partition, offset, _) in &got {
            let next = committed.entry(*partition).or_insert(0);
            *next = (*next).max(offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in &committed {
            list.add_partition_offset("resume", *partition, Offset::Offset(*offset))
                .unwrap();
        }
        consumer.commit(&list, CommitMode::Sync).unwrap();
        // OffsetFetch reads the commit back.
        let stored = consumer.committed(Duration::from_secs(10)).unwrap();
        for (partition, offset) in &committed {
            let element = stored.find_partition("resume", *partition).unwrap();
            assert_eq!(element.offset(), Offset::Offset(*offset));
        }
    }
    // kill -9 and start again on the same data: the commit was acknowledged, so it is durable.
    engine.restart();
    produce(&engine, "resume", 2, 20, "after");
    let consumer = group_consumer(&engine, "resumers");
    consumer.subscribe(&["resume"]).unwrap();
    let skipped_before: usize = committed.values().map(|o| usize::try_from(*o).unwrap()).sum();
    let expected = 120 - skipped_before;
    let got = consume_in_group(&consumer, expected, &engine);
    let mut first_seen: BTreeMap<i32, i64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (partition, offset, payload) in &got {
        first_seen.entry(*partition).or_insert(*offset);
        assert!(seen.insert((*partition, *offset)), "{payload} delivered twice");
        let from = committed.get(partition).copied().unwrap_or(0);
        assert!(
            *offset >= from,
            "{payload} at {partition}:{offset} is before the committed {from}"
        );
    }
    for (partition, offset) in &committed {
        assert_eq!(
            first_seen.get(partition),
            Some(offset),
            "partition {partition} resumes at its commit"
        );
    }
    // Every partition continues without a gap up to its end (60 messages each).
    for partition in 0..2 {
        let offsets: Vec<i64> = got.iter().filter(|m| m.0 == partition).map(|m| m.1).collect();
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "gap in partition {partition}"
        );
        assert_eq!(offsets.last(), Some(&59), "partition {partition} read to its end");
    }
    if let Some(Ok(extra)) = consumer.poll(Duration::from_millis(500)) {
        panic!("unexpected extra message at {}:{}", extra.partition(), extra.offset());
    }
}
