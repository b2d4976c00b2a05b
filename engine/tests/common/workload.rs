//! The client load of the cluster fault tests: idempotent `acks=all`
//! producers sending numbered messages at a steady pace, consumers reading
//! every partition while the faults run, and the final read-back — each
//! recording what the history check (`history.rs`) needs.
//!
//! Every loop here is bounded in count (`MESSAGES_MAX`, `OBSERVED_MAX`) and
//! in time (the caller's deadline), and stops when told.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::Message,
    producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
    types::RDKafkaErrorCode,
    ClientContext, Offset, TopicPartitionList,
};

use super::history::{self, parse_payload, payload, Observation, Stored};

/// Bound on messages sent by all producers of one load.
const MESSAGES_MAX: usize = 100_000;
/// Bound on the messages one consumer records.
const OBSERVED_MAX: usize = 200_000;
/// librdkafka's bound on one message's delivery, retries included.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a producer's final flush: longer than `MESSAGE_TIMEOUT`, so
/// every message gets its report.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(40);
/// Bound on one client metadata or watermark request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a load sends: `producers` producers, each sending one message per
/// tick to each of `partitions` partitions of `topic` (message `seq` goes
/// to partition `seq % partitions`), and `consumers` consumers reading
/// every partition from the start.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub topic: &'static str,
    pub partitions: i32,
    pub producers: usize,
    pub consumers: usize,
    pub tick: Duration,
}

impl LoadSpec {
    /// The partition message `seq` is sent to.
    pub fn partition_of(&self, seq: usize) -> i32 {
        i32::try_from(seq % usize::try_from(self.partitions).unwrap()).unwrap()
    }
}

/// One delivery report.
#[derive(Clone, Debug)]
pub struct Report {
    pub seq: usize,
    /// When the report reached the test.
    pub at: Instant,
    /// (partition, offset) or the error.
    pub outcome: Result<(i32, i64), String>,
}

/// A producer's context: every delivery report, in arrival order (shared
/// by all producers of a load). The delivery opaque is the message's `seq`.
#[derive(Clone, Default)]
pub struct Reports(pub Arc<Mutex<Vec<Report>>>);

impl ClientContext for Reports {
    /// librdkafka's own log (with `SHARDLINE_RDKAFKA_DEBUG=metadata,...`
    /// its debug lines) on stderr, stamped, to read beside the nodes' logs;
    /// no logger is installed in the tests to take it otherwise.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        eprintln!(
            "librdkafka {}.{:03} {level:?} {fac} {log_message}",
            now.as_secs(),
            now.subsec_millis()
        );
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let at = Instant::now();
        let outcome = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().unwrap().push(Report { seq, at, outcome });
    }
}

/// When each message was handed to its producer, by `seq`.
pub type SentAt = Arc<Mutex<HashMap<usize, Instant>>>;

/// How one producer thread ended.
#[derive(Debug)]
pub struct ProducerEnd {
    /// Messages handed to librdkafka.
    pub sent: usize,
    /// `send` errors other than a full queue (the producer stops at the first).
    pub send_errors: Vec<String>,
    pub flush: Result<(), String>,
    pub in_flight_after_flush: i32,
    pub fatal_error: Option<String>,
}

/// Producer `index` of `spec.producers` sends `seq = index + k × producers`
/// for k = 0, 1, ..., one message per partition per tick, until `stop`, the
/// deadline or its share of `MESSAGES_MAX`; then flushes.
fn run_producer(
    producer: &ThreadedProducer<Reports>,
    spec: &LoadSpec,
    index: usize,
    sent_at: &Mutex<HashMap<usize, Instant>>,
    stop: &AtomicBool,
    deadline: Instant,
) -> ProducerEnd {
    let mut sent = 0;
    let mut send_errors = Vec::new();
    let mut next_tick = Instant::now();
    let messages_max = MESSAGES_MAX / spec.producers;
    'produce: while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && sent < messages_max {
        for _ in 0..spec.partitions {
            let seq = index + sent * spec.producers;
            let text = payload(seq);
            sent_at.lock().unwrap().insert(seq, Instant::now());
            let mut record = BaseRecord::<(), str, usize>::with_opaque_to(spec.topic, seq)
                .partition(spec.partition_of(seq))
                .payload(text.as_str());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            // Never handed over: not sent.
                            sent_at.lock().unwrap().remove(&seq);
                            break 'produce;
                        }
                        record = returned;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => {
                        sent_at.lock().unwrap().remove(&seq);
                        send_errors.push(format!("message {seq}: {e}"));
                        break 'produce;
                    }
                }
            }
            sent += 1;
        }
        next_tick += spec.tick;
        let now = Instant::now();
        if next_tick > now {
            std::thread::sleep(next_tick - now);
        } else if now - next_tick > Duration::from_secs(1) {
            // Far behind (the machine stalled): keep the pace, do not burst.
            next_tick = now;
        }
    }
    let flush_for = FLUSH_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()) + FLUSH_TIMEOUT / 2);
    let flush = producer.flush(flush_for).map_err(|e| e.to_string());
    ProducerEnd {
        sent,
        send_errors,
        flush,
        in_flight_after_flush: producer.in_flight_count(),
        fatal_error: producer
            .client()
            .fatal_error()
            .map(|(code, text)| format!("{code:?}: {text}")),
    }
}

/// Consumer `index` reads every partition from offset 0, recording each
/// message it is served, until `stop`, the deadline or `OBSERVED_MAX`.
fn run_consumer(
    consumer: &BaseConsumer,
    spec: &LoadSpec,
    index: usize,
    stop: &AtomicBool,
    deadline: Instant,
) -> Vec<Observation> {
    let mut assignment = TopicPartitionList::new();
    for p in 0..spec.partitions {
        assignment
            .add_partition_offset(spec.topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut observed = Vec::new();
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && observed.len() < OBSERVED_MAX {
        // Transient client errors during faults are expected; what was
        // served is what the history checks.
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            observed.push(Observation {
                consumer: index,
                partition: m.partition(),
                offset: m.offset(),
                seq: m.payload().and_then(parse_payload),
            });
        }
    }
    observed
}

/// A running load: producer and consumer threads.
pub struct Load {
    pub spec: LoadSpec,
    pub reports: Reports,
    pub sent_at: SentAt,
    stop: Arc<AtomicBool>,
    producers: Vec<std::thread::JoinHandle<ProducerEnd>>,
    consumers: Vec<std::thread::JoinHandle<Vec<Observation>>>,
}

/// Bound on a client thread ending once told to stop (past a producer's
/// flush): its loop polls every 100 ms, and closing a client takes a few
/// seconds at most.
const CLIENT_END_TIMEOUT: Duration = Duration::from_secs(60);

/// Joins `thread`, failing the test if it has not ended within `timeout`:
/// a client that never returns is a hung client, not a slow one (a
/// librdkafka 2.12.1 consumer once deadlocked between decommissioning a
/// broker and handling an OffsetForLeaderEpoch answer, docs/cluster.md).
/// The thread is left behind; the test's cluster is still torn down.
fn join_within<T>(thread: std::thread::JoinHandle<T>, timeout: Duration, what: &str) -> T {
    let deadline = Instant::now() + timeout;
    while !thread.is_finished() {
        assert!(
            Instant::now() < deadline,
            "a {what} thread did not end within {timeout:?} of being stopped: a hung librdkafka client"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    thread.join().unwrap()
}

/// What a finished load recorded.
pub struct Recorded {
    pub spec: LoadSpec,
    pub sent: BTreeSet<usize>,
    pub reports: Vec<Report>,
    pub observed: Vec<Observation>,
}

impl Load {
    /// Starts `spec`'s producers and consumers against `bootstrap`; none
    /// runs past `deadline`.
    pub fn start(bootstrap: &str, spec: LoadSpec, deadline: Instant) -> Load {
        let reports = Reports::default();
        let sent_at: SentAt = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let producers = (0..spec.producers)
            .map(|index| {
                let mut config = ClientConfig::new();
                if let Ok(debug) = std::env::var("SHARDLINE_RDKAFKA_DEBUG") {
                    config.set("debug", debug);
                    // rdkafka passes on only what the `log` crate's level
                    // allows, and the tests install no logger.
                    config.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
                }
                let producer: ThreadedProducer<Reports> = config
                    .set("bootstrap.servers", bootstrap)
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("linger.ms", "5")
                    .set("message.timeout.ms", MESSAGE_TIMEOUT.as_millis().to_string())
                    // Reconnect to a restarted node within a second, so a
                    // failover time measures the cluster rather than the
                    // client's reconnect backoff (librdkafka's default grows
                    // to 10 s).
                    .set("reconnect.backoff.max.ms", "1000")
                    .create_with_context(reports.clone())
                    .unwrap();
                let (spec, sent_at, stop) = (spec.clone(), Arc::clone(&sent_at), Arc::clone(&stop));
                std::thread::spawn(move || run_producer(&producer, &spec, index, &sent_at, &stop, deadline))
            })
            .collect();
        let consumers = (0..spec.consumers)
            .map(|index| {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", bootstrap)
                    // librdkafka wants a group id even for assign(); no group
                    // is joined (offsets are given, nothing is committed).
                    .set("group.id", format!("fault-test-reader-{index}"))
                    .set("enable.auto.commit", "false")
                    .set("reconnect.backoff.max.ms", "1000")
                    .create()
                    .unwrap();
                let (spec, stop) = (spec.clone(), Arc::clone(&stop));
                std::thread::spawn(move || run_consumer(&consumer, &spec, index, &stop, deadline))
            })
            .collect();
        Load {
            spec,
            reports,
            sent_at,
            stop,
            producers,
            consumers,
        }
    }

    /// Stops and flushes the producers and stops the consumers; fails the
    /// test if a producer did not end cleanly. Returns what was recorded.
    pub fn finish(self) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.producers {
            let end = join_within(thread, FLUSH_TIMEOUT + CLIENT_END_TIMEOUT, "producer");
            println!("producer: {end:?}");
            assert!(end.send_errors.is_empty(), "send errors: {:?}", end.send_errors);
            assert_eq!(end.fatal_error, None, "the idempotent producer hit a fatal error");
            assert_eq!(end.flush, Ok(()), "flush within {FLUSH_TIMEOUT:?}");
            // `in_flight_after_flush` may count a log or error event still
            // queued for the client's poller, not only messages; that every
            // message got its report is checked with the history.
        }
        let observed = self
            .consumers
            .into_iter()
            .flat_map(|thread| join_within(thread, CLIENT_END_TIMEOUT, "consumer"))
            .collect();
        let sent = self.sent_at.lock().unwrap().keys().copied().collect();
        let reports = self.reports.0.lock().unwrap().clone();
        Recorded {
            spec: self.spec,
            sent,
            reports,
            observed,
        }
    }
}

impl Recorded {
    /// Reads the whole topic back through `bootstrap` (bounded by
    /// `timeout`) and checks the history (`history::check`).
    pub fn check(&self, bootstrap: &str, timeout: Duration) -> history::Verdict {
        let log = read_back(bootstrap, self.spec.topic, self.spec.partitions, timeout);
        let reports: Vec<history::Delivery> = self.reports.iter().map(|r| (r.seq, r.outcome.clone())).collect();
        let partition_of = |seq: usize| self.spec.partition_of(seq);
        history::check(
            &history::History {
                sent: &self.sent,
                reports: &reports,
                observed: &self.observed,
                partition_of: &partition_of,
            },
            &log,
        )
    }
}

/// Every message of every partition from offset 0 to the high watermark
/// taken before reading: (partition, offset, payload), in read order.
pub fn read_back(bootstrap: &str, topic: &str, partitions: i32, timeout: Duration) -> Vec<Stored> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "fault-test-verify")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut high: BTreeMap<i32, i64> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, end) = consumer.fetch_watermarks(topic, p, CLIENT_TIMEOUT).unwrap();
        assert_eq!(low, 0, "partition {p}: nothing is deleted in this test");
        high.insert(p, end);
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    // Next offset to read per partition.
    let mut next: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while next.iter().any(|(p, n)| *n < high[p]) {
        assert!(
            Instant::now() < deadline,
            "read {} messages in {timeout:?}; next offsets {next:?}, high watermarks {high:?}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                // Beyond the high watermark taken first: not part of this read.
                if m.offset() < high[&m.partition()] {
                    out.push((m.partition(), m.offset(), m.payload().unwrap_or_default().to_vec()));
                }
            }
            // Transient client-side events (a connection retried) are not
            // failures; a real failure shows as missing messages at the deadline.
            Some(Err(e)) => eprintln!("consumer event: {e}"),
            None => {}
        }
    }
    println!("high watermarks after the test: {high:?}");
    out
}

/// What is left of a test's time budget.
#[derive(Clone, Copy)]
pub struct Budget {
    pub end: Instant,
    total: Duration,
}

impl Budget {
    /// A budget of `total` from now.
    pub fn new(total: Duration) -> Budget {
        Budget {
            end: Instant::now() + total,
            total,
        }
    }

    /// `step`, or less if the budget ends sooner.
    pub fn bound(&self, step: Duration) -> Duration {
        step.min(self.end.saturating_duration_since(Instant::now()))
    }

    pub fn assert_left(&self, what: &str) {
        assert!(
            Instant::now() < self.end,
            "test budget of {:?} used up before {what}",
            self.total
        );
    }
}

/// Time from a fault to the first acknowledgement, per partition.
pub type PerPartition = BTreeMap<i32, Duration>;

impl Load {
    /// Polls (bounded by `timeout`) for the first acknowledgement of a
    /// message sent after `since`, on any partition and on each of
    /// `partitions`: `Ok` with the time from `since` to each once all came,
    /// else `Err` with what came in time. Calls `check` (e.g. that no node
    /// exited) between polls.
    pub fn acks_after(
        &self,
        since: Instant,
        partitions: &[i32],
        timeout: Duration,
        check: &mut dyn FnMut(),
    ) -> Result<(Duration, PerPartition), (Option<Duration>, PerPartition)> {
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        let mut first: Option<Duration> = None;
        let mut per_partition = PerPartition::new();
        loop {
            {
                let sent_at = self.sent_at.lock().unwrap();
                let reports = self.reports.0.lock().unwrap();
                for report in &reports[scanned..] {
                    if let Ok((partition, _)) = report.outcome {
                        if sent_at.get(&report.seq).is_some_and(|&at| at > since) {
                            let after = report.at - since;
                            first.get_or_insert(after);
                            if partitions.contains(&partition) {
                                per_partition.entry(partition).or_insert(after);
                            }
                        }
                    }
                }
                scanned = reports.len();
            }
            if let Some(first) = first {
                if per_partition.len() == partitions.len() {
                    return Ok((first, per_partition));
                }
            }
            check();
            if Instant::now() >= deadline {
                return Err((first, per_partition));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`Load::acks_after`], failing the test if the acknowledgements do
    /// not all come within `timeout`.
    pub fn wait_acks_after(
        &self,
        since: Instant,
        partitions: &[i32],
        timeout: Duration,
        check: &mut dyn FnMut(),
    ) -> (Duration, PerPartition) {
        self.acks_after(since, partitions, timeout, check)
            .unwrap_or_else(|(first, per_partition)| {
                panic!(
                    "no acknowledgement within {timeout:?} of a message sent after the fault: \
                     first on any partition {first:?}, on the partitions {partitions:?}: {per_partition:?}"
                )
            })
    }
}
