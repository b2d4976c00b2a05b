//! Power cuts under a real engine process (not just `kill -9`).
//!
//! The data directory lives on `shardline-powercut`'s FUSE file system, which
//! keeps every change that no completed `fsync`/`fdatasync` covers — file
//! bytes, file sizes, directory entries — volatile. Each cycle: librdkafka
//! producers (acks=all) write to several partitions and record every
//! acknowledged offset; a consumer in a group reads and commits offsets; a
//! topic is created at a random moment; segments roll often (64 KiB). At a
//! random moment the power is cut (every later request to the disk fails),
//! the engine is killed with SIGKILL, and the disk comes back holding only
//! what was synced, with unsynced writes torn (a seeded choice of lost /
//! prefix-and-torn / scattered sectors). The engine is started again on it,
//! and:
//! - it starts;
//! - every topic whose creation was acknowledged exists with its partitions;
//! - every acknowledged record is served at its acknowledged offset with the
//!   same bytes (`check.crcs` on: a torn batch would be an error);
//! - every record served is one a producer sent (nothing torn, nothing
//!   invented);
//! - every record the consumer was served before the cut is still there
//!   (`fsync always` serves only durable data);
//! - the group's committed offsets are at least what was acknowledged.
//!
//! `POWERCUT_SEED` replays a run's decisions (cut moments, tears; thread
//! timing still varies), `POWERCUT_CYCLES` sets the number of cuts (default
//! 6), e.g. `just powercut 50`. Needs root and FUSE (as CI has); fails, never
//! skips, without them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
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
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext},
    error::{KafkaError, KafkaResult, RDKafkaErrorCode},
    message::Message,
    producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig},
    ClientContext, Offset, TopicPartitionList,
};
use shardline_powercut::{seed_from_env, LossyMount, Names, SplitMix64, Tear};

/// Cuts per run unless `POWERCUT_CYCLES` says otherwise (about 8 s each).
const CYCLES_DEFAULT: u64 = 6;
/// The cut comes this long after the load starts: early enough to land in
/// topic creation and the first rolls, late enough for several rolls.
const CUT_AFTER_MS_MIN: u64 = 200;
const CUT_AFTER_MS_MAX: u64 = 2500;
/// The topic every cycle produces to and the group consumes.
const EVENTS: &str = "events";
const EVENTS_PARTITIONS: i32 = 4;
/// Partitions of the topic each cycle creates under load.
const BORN_PARTITIONS: i32 = 2;
const GROUP: &str = "powercut-group";
/// Small segments, so cuts land in rolls (new files in the partition
/// directory) often.
const SEGMENT_BYTES: &str = "65536";
/// Messages a producer sends per millisecond of sleep (≈ 4000/s), bounded so
/// the in-memory disk stays small.
const MESSAGES_PER_PAUSE: u64 = 4;
/// Bound on reading back one partition, and on any client call.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on a load thread stopping after the cut.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a client winding down after the engine was killed. A client
/// still busy then is leaked rather than waited for: its retries can only
/// reach the dead engine's ports, because each restart listens on new ones
/// (a late retried commit reaching the new engine would move the group's
/// offsets back behind the test's back).
const CLIENT_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// The group consumer commits after this many messages.
const COMMIT_EVERY_MESSAGES: u64 = 100;

/// What the clients were told, over every cycle.
#[derive(Default)]
struct Ledger {
    /// Every payload sent (payloads are unique) → its topic.
    sent: HashMap<Vec<u8>, String>,
    /// (topic, partition, offset) → payload of every acknowledged record.
    acked: BTreeMap<(String, i32, i64), Vec<u8>>,
    /// Topic → partitions, for every acknowledged creation.
    topics: BTreeMap<String, i32>,
    /// Topic → partitions, for every creation asked for.
    asked_topics: BTreeMap<String, i32>,
    /// Partition of EVENTS → highest acknowledged committed offset of GROUP.
    commits: BTreeMap<i32, i64>,
    /// (partition, offset) of EVENTS → payload served to the group consumer.
    consumed: BTreeMap<(i32, i64), Vec<u8>>,
    /// Topics a producer may write to now.
    live_topics: Vec<String>,
}

type SharedLedger = Arc<Mutex<Ledger>>;

#[derive(Clone)]
struct Deliveries(SharedLedger);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = result {
            let key = (m.topic().to_string(), m.partition(), m.offset());
            let payload = m.payload().unwrap_or_default().to_vec();
            self.0.lock().unwrap().acked.insert(key, payload);
        }
    }
}

#[derive(Clone)]
struct Commits(SharedLedger);

impl ClientContext for Commits {}

impl ConsumerContext for Commits {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if result.is_err() {
            return;
        }
        let mut ledger = self.0.lock().unwrap();
        for element in offsets.elements() {
            if let (Offset::Offset(offset), None) = (element.offset(), element.error().err()) {
                let entry = ledger.commits.entry(element.partition()).or_insert(offset);
                *entry = (*entry).max(offset);
            }
        }
    }
}

fn client_config(engine: &Engine) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", engine.bootstrap())
        .set("socket.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "200");
    config
}

/// Sends unique payloads to the live topics until `stop`; every delivery
/// report lands in the ledger.
fn producer_thread(engine: &Engine, ledger: SharedLedger, stop: Arc<AtomicBool>, tag: String) -> JoinHandle<()> {
    let producer: BaseProducer<Deliveries> = client_config(engine)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "15000")
        .create_with_context(Deliveries(Arc::clone(&ledger)))
        .unwrap();
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let topics = ledger.lock().unwrap().live_topics.clone();
            let topic = &topics[(n as usize) % topics.len()];
            let payload = format!("{tag}-{n}-{}", "p".repeat((n % 97) as usize)).into_bytes();
            let key = format!("k{}", n % 13);
            ledger.lock().unwrap().sent.insert(payload.clone(), topic.clone());
            if producer
                .send(BaseRecord::to(topic).key(&key).payload(&payload))
                .is_err()
            {
                // Queue full: let deliveries drain.
                producer.poll(Duration::from_millis(10));
            }
            n += 1;
            producer.poll(Duration::ZERO);
            if n.is_multiple_of(MESSAGES_PER_PAUSE) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // The engine is dead: fail what is still queued or in flight, and
        // take the delivery reports that arrived before it died.
        producer.purge(PurgeConfig::default().queue().inflight());
        let deadline = Instant::now() + CLIENT_CLOSE_TIMEOUT;
        while producer.in_flight_count() > 0 && Instant::now() < deadline {
            producer.poll(Duration::from_millis(50));
        }
        if producer.in_flight_count() > 0 {
            // Cannot wind down against a dead broker: leave it (see CLIENT_CLOSE_TIMEOUT).
            std::mem::forget(producer);
        }
    })
}

/// Reads EVENTS in GROUP from its committed offsets and commits as it goes.
fn consumer_thread(engine: &Engine, ledger: SharedLedger, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let consumer: BaseConsumer<Commits> = client_config(engine)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("check.crcs", "true")
        .create_with_context(Commits(Arc::clone(&ledger)))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..EVENTS_PARTITIONS {
        assignment.add_partition_offset(EVENTS, p, Offset::Stored).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    std::thread::spawn(move || {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut since_commit = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                let payload = m.payload().unwrap_or_default().to_vec();
                ledger
                    .lock()
                    .unwrap()
                    .consumed
                    .insert((m.partition(), m.offset()), payload);
                next.insert(m.partition(), m.offset() + 1);
                since_commit += 1;
            }
            if since_commit >= COMMIT_EVERY_MESSAGES {
                let mut offsets = TopicPartitionList::new();
                for (p, o) in &next {
                    offsets.add_partition_offset(EVENTS, *p, Offset::Offset(*o)).unwrap();
                }
                let _ = consumer.commit(&offsets, CommitMode::Async);
                since_commit = 0;
            }
        }
        // librdkafka's close waits for commits in flight, which against a
        // dead broker can take longer than the test should (see
        // CLIENT_CLOSE_TIMEOUT).
        let deadline = Instant::now() + CLIENT_CLOSE_TIMEOUT;
        if consumer.close_queue().is_ok() {
            while !consumer.closed() && Instant::now() < deadline {
                consumer.poll(Duration::from_millis(50));
            }
        }
        if !consumer.closed() {
            std::mem::forget(consumer);
        }
    })
}

/// Creates `topic` after `delay`; the ledger learns whether it was acknowledged.
fn creator_thread(engine: &Engine, ledger: SharedLedger, topic: String, delay: Duration) -> JoinHandle<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(engine).create().unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        ledger
            .lock()
            .unwrap()
            .asked_topics
            .insert(topic.clone(), BORN_PARTITIONS);
        let new = NewTopic::new(&topic, BORN_PARTITIONS, TopicReplication::Fixed(1));
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
        let result = futures_executor::block_on(admin.create_topics(&[new], &options));
        if let Ok(results) = result {
            if results.iter().all(Result::is_ok) {
                let mut ledger = ledger.lock().unwrap();
                ledger.topics.insert(topic.clone(), BORN_PARTITIONS);
                ledger.live_topics.push(topic);
            }
        }
    })
}

fn join_bounded(handle: JoinHandle<()>, what: &str) {
    let deadline = Instant::now() + STOP_TIMEOUT;
    while !handle.is_finished() {
        assert!(Instant::now() < deadline, "{what} did not stop within {STOP_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    handle.join().unwrap();
}

/// Every record of `topic`'s partition that can be read, from the start
/// towards the high watermark, as (offset → payload), and what stopped the
/// read before the high watermark, if anything did.
fn read_partition(engine: &Engine, topic: &str, partition: i32) -> (BTreeMap<i64, Vec<u8>>, Option<String>) {
    let mut out = BTreeMap::new();
    let consumer: BaseConsumer = client_config(engine)
        .set("group.id", "powercut-verify")
        .set("enable.auto.commit", "false")
        .set("check.crcs", "true")
        .create()
        .unwrap();
    let (low, high) = match consumer.fetch_watermarks(topic, partition, CLIENT_TIMEOUT) {
        Ok(marks) => marks,
        Err(e) => return (out, Some(format!("{topic}-{partition}: watermarks: {e}"))),
    };
    if high <= low {
        return (out, None);
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut last = low - 1;
    while last < high - 1 {
        if Instant::now() > deadline {
            let problem =
                format!("{topic}-{partition}: read up to offset {last} of [{low}, {high}) within {CLIENT_TIMEOUT:?}");
            return (out, Some(problem));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.insert(m.offset(), m.payload().unwrap_or_default().to_vec());
                last = m.offset();
            }
            // librdkafka's CRC check (check.crcs) failed: torn bytes were served.
            Some(Err(e @ KafkaError::MessageConsumption(RDKafkaErrorCode::BadMessage))) => {
                let problem = format!("{topic}-{partition}: a damaged batch was served after offset {last}: {e}");
                return (out, Some(problem));
            }
            // The broker refuses the range (CORRUPT_MESSAGE): the partition
            // cannot be read past it, though it is below the high watermark.
            Some(Err(e @ KafkaError::MessageConsumption(RDKafkaErrorCode::InvalidMessage))) => {
                let problem = format!(
                    "{topic}-{partition}: the broker answers {e} after offset {last}, below its high watermark {high}: \
                     the partition cannot be read past it"
                );
                return (out, Some(problem));
            }
            // A connection retried: transient; missing records show at the deadline.
            Some(Err(_)) | None => {}
        }
    }
    (out, None)
}

/// Checks the restarted engine against the ledger; one line per problem.
fn verify(engine: &Engine, ledger: &Ledger) -> Vec<String> {
    let mut problems = Vec::new();
    let consumer: BaseConsumer = client_config(engine).create().unwrap();
    let metadata = match consumer.fetch_metadata(None, CLIENT_TIMEOUT) {
        Ok(m) => m,
        Err(e) => return vec![format!("metadata request failed: {e}")],
    };
    let present: BTreeMap<String, i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.name().starts_with("__"))
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect();
    for (topic, partitions) in &ledger.topics {
        match present.get(topic) {
            None => problems.push(format!("topic {topic}: creation was acknowledged, topic is gone")),
            Some(n) if n != partitions => {
                problems.push(format!("topic {topic}: {n} partitions, created with {partitions}"))
            }
            Some(_) => {}
        }
    }
    for (topic, n) in &present {
        match ledger.asked_topics.get(topic).or(ledger.topics.get(topic)) {
            None => problems.push(format!("topic {topic}: never asked for")),
            Some(asked) if asked != n => problems.push(format!("topic {topic}: {n} partitions, asked for {asked}")),
            Some(_) => {}
        }
    }
    let mut stored: BTreeMap<(String, i32), BTreeMap<i64, Vec<u8>>> = BTreeMap::new();
    for (topic, partitions) in &present {
        for p in 0..*partitions {
            let (records, problem) = read_partition(engine, topic, p);
            stored.insert((topic.clone(), p), records);
            problems.extend(problem);
        }
    }
    let mut lost_acked: BTreeMap<(String, i32), Vec<i64>> = BTreeMap::new();
    for ((topic, p, offset), payload) in &ledger.acked {
        let Some(records) = stored.get(&(topic.clone(), *p)) else {
            lost_acked.entry((topic.clone(), *p)).or_default().push(*offset);
            continue;
        };
        match records.get(offset) {
            Some(got) if got == payload => {}
            Some(got) => problems.push(format!(
                "{topic}-{p}@{offset}: acknowledged {:?}, served {:?}",
                String::from_utf8_lossy(payload),
                String::from_utf8_lossy(got)
            )),
            None => lost_acked.entry((topic.clone(), *p)).or_default().push(*offset),
        }
    }
    for ((topic, p), offsets) in &lost_acked {
        let acked = ledger.acked.keys().filter(|(t, q, _)| t == topic && q == p).count();
        problems.push(format!(
            "{topic}-{p}: {} of {acked} acknowledged records lost (offsets {}..={})",
            offsets.len(),
            offsets.first().unwrap(),
            offsets.last().unwrap()
        ));
    }
    for ((topic, p), records) in &stored {
        for (offset, payload) in records {
            if ledger.sent.get(payload) != Some(topic) {
                problems.push(format!(
                    "{topic}-{p}@{offset}: served {:?}, which was never sent to {topic}",
                    String::from_utf8_lossy(payload)
                ));
            }
        }
    }
    let events: BTreeMap<i32, &BTreeMap<i64, Vec<u8>>> = stored
        .iter()
        .filter(|((t, _), _)| t == EVENTS)
        .map(|((_, p), r)| (*p, r))
        .collect();
    let mut lost_served: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for ((p, offset), payload) in &ledger.consumed {
        // An acknowledged record that is gone was reported above.
        let acked = ledger.acked.contains_key(&(EVENTS.to_string(), *p, *offset));
        if !acked && events.get(p).and_then(|r| r.get(offset)) != Some(payload) {
            lost_served.entry(*p).or_default().push(*offset);
        }
    }
    for (p, offsets) in &lost_served {
        problems.push(format!(
            "{EVENTS}-{p}: {} unacknowledged records served to the consumer before the cut are gone (offsets {}..={}): served before they were durable",
            offsets.len(),
            offsets.first().unwrap(),
            offsets.last().unwrap()
        ));
    }
    if !ledger.commits.is_empty() {
        let group: BaseConsumer = client_config(engine).set("group.id", GROUP).create().unwrap();
        let mut query = TopicPartitionList::new();
        for p in 0..EVENTS_PARTITIONS {
            query.add_partition(EVENTS, p);
        }
        match group.committed_offsets(query, CLIENT_TIMEOUT) {
            Ok(committed) => {
                for (p, acked) in &ledger.commits {
                    let now = committed.find_partition(EVENTS, *p).and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
                    if now.is_none_or(|o| o < *acked) {
                        problems.push(format!(
                            "group {GROUP}: committed offset of {EVENTS}-{p} is {now:?}, a commit of {acked} was acknowledged"
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("group {GROUP}: OffsetFetch failed: {e}")),
        }
    }
    problems
}

fn sync_dir(path: &Path) {
    std::fs::File::open(path).unwrap().sync_all().unwrap();
}

#[test]
fn acknowledged_records_topics_and_commits_survive_power_cuts() {
    let cycles: u64 = std::env::var("POWERCUT_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CYCLES_DEFAULT);
    // POWERCUT_NAMES=journaled: names durable with any sync, as on ext4 (to
    // look past a missing directory sync); by default only a sync of their
    // directory makes them durable, as POSIX says.
    let names = match std::env::var("POWERCUT_NAMES").as_deref() {
        Ok("journaled") => Names::Journaled,
        _ => Names::DirectorySync,
    };
    // POWERCUT_TEAR=lose|prefix|scatter: only that kind of cut.
    let tears: Vec<Tear> = match std::env::var("POWERCUT_TEAR").as_deref() {
        Ok("lose") => vec![Tear::Lose],
        Ok("prefix") => vec![Tear::Prefix],
        Ok("scatter") => vec![Tear::Scatter],
        _ => Tear::ALL.to_vec(),
    };
    power_cuts(names, &tears, cycles);
}

/// The same cycle with nothing lost (a `kill -9` on the FUSE disk): the
/// engine runs on the disk (io_uring writes, mmap reads, fsyncs reach it),
/// restarts on it, and the checks pass.
#[test]
fn the_engine_runs_on_the_lossy_disk_and_keeps_everything_across_kill_9() {
    power_cuts(Names::DirectorySync, &[Tear::KeepAll], 2);
}

/// `cycles` cuts, each with a tear drawn from `tears`, checked after each.
fn power_cuts(names: Names, tears: &[Tear], cycles: u64) {
    let seed = seed_from_env();
    eprintln!(
        "power-cut seed {seed}, {cycles} cuts, names {names:?} (POWERCUT_SEED={seed} POWERCUT_CYCLES={cycles} replays the choices)"
    );
    let mut rng = SplitMix64::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let mountpoint = tmp.path().join("disk");
    std::fs::create_dir(&mountpoint).unwrap();
    let mut disk = LossyMount::mount_with(&mountpoint, names)
        .unwrap_or_else(|e| panic!("cannot mount the power-cut file system (CI must be able to): {e}"));
    // The operator's part: the data directory exists, durably, before the
    // engine first starts.
    let data_dir = mountpoint.join("data");
    std::fs::create_dir(&data_dir).unwrap();
    sync_dir(&mountpoint);
    let flags = ["--shards", "2", "--fsync", "always", "--segment-bytes", SEGMENT_BYTES];
    let mut engine = Engine::start_in(&data_dir, &flags);
    let ledger: SharedLedger = Arc::default();
    {
        let admin: AdminClient<DefaultClientContext> = client_config(&engine).create().unwrap();
        let new = NewTopic::new(EVENTS, EVENTS_PARTITIONS, TopicReplication::Fixed(1));
        for result in futures_executor::block_on(admin.create_topics(&[new], &AdminOptions::new())).unwrap() {
            result.unwrap();
        }
        let mut ledger = ledger.lock().unwrap();
        ledger.topics.insert(EVENTS.to_string(), EVENTS_PARTITIONS);
        ledger.asked_topics.insert(EVENTS.to_string(), EVENTS_PARTITIONS);
        ledger.live_topics.push(EVENTS.to_string());
    }
    let started = Instant::now();
    for cycle in 0..cycles {
        let cut_after = Duration::from_millis(CUT_AFTER_MS_MIN + rng.up_to(CUT_AFTER_MS_MAX - CUT_AFTER_MS_MIN));
        let create_after = Duration::from_millis(rng.up_to(cut_after.as_millis() as u64 + 200));
        let tear = tears[rng.up_to(tears.len() as u64 - 1) as usize];
        let cut_seed = rng.next_u64();

        let stop = Arc::new(AtomicBool::new(false));
        let load = vec![
            (
                "producer",
                producer_thread(&engine, Arc::clone(&ledger), Arc::clone(&stop), format!("c{cycle}a")),
            ),
            (
                "producer",
                producer_thread(&engine, Arc::clone(&ledger), Arc::clone(&stop), format!("c{cycle}b")),
            ),
            (
                "consumer",
                consumer_thread(&engine, Arc::clone(&ledger), Arc::clone(&stop)),
            ),
            (
                "topic creator",
                creator_thread(&engine, Arc::clone(&ledger), format!("born-{cycle}"), create_after),
            ),
        ];
        std::thread::sleep(cut_after);
        disk.cut();
        engine.kill9();
        stop.store(true, Ordering::Relaxed);
        for (what, handle) in load {
            join_bounded(handle, what);
        }
        let report = disk.power_on(tear, cut_seed).unwrap();
        // On new ports: see CLIENT_CLOSE_TIMEOUT.
        match std::panic::catch_unwind(|| Engine::start_in(&data_dir, &flags)) {
            Ok(started) => engine = started,
            Err(panic) => {
                eprintln!("the engine did not start after cut {cycle} (seed {seed}):\n{report}");
                std::panic::resume_unwind(panic);
            }
        }
        let problems = {
            let ledger = ledger.lock().unwrap();
            eprintln!(
                "cut {cycle} after {cut_after:?} ({tear:?}, topic creation at {create_after:?}): {} records acknowledged, {} served to the group, {} topics so far",
                ledger.acked.len(),
                ledger.consumed.len(),
                ledger.topics.len()
            );
            verify(&engine, &ledger)
        };
        assert!(
            problems.is_empty(),
            "after cut {cycle} (seed {seed}; replay with POWERCUT_SEED={seed} POWERCUT_CYCLES={}):\n  {}\n{report}",
            cycle + 1,
            problems.join("\n  ")
        );
    }
    let counters = disk.counters();
    eprintln!("{cycles} cuts in {:?}; the disk saw {counters:?}", started.elapsed());
    assert!(
        counters.file_syncs > 0 && counters.dir_syncs > 0,
        "the engine's syncs never reached the disk: {counters:?}"
    );
    drop(engine);
}
