//! A producer: one thread that paces, batches and sends, plus one reader thread per broker
//! connection that matches acknowledgements to requests.
//!
//! ## The send loop (writer thread)
//! 1. Take every message the [`Pacer`] says is due (intended time ≤ now) and append it to its
//!    partition's open batch. A batch that reaches `--batch-bytes` triggers a send to its leader.
//! 2. Any open batch whose first message has waited `--linger-ms` triggers a send.
//! 3. Sleep until the next intended time or linger deadline, whichever is first.
//!
//! A send drains every non-empty open batch led by that broker into one Produce request, as the
//! Java client's sender drains a ready node. At most [`IN_FLIGHT_MAX`] requests are outstanding per
//! connection; a send waits for a free slot, and meanwhile the schedule keeps running: messages
//! that fall due while the producer waits keep their intended times, so the wait is in the
//! latency. Responses arrive in request order on a connection, so the reader thread pops the
//! oldest in-flight entry for each response and checks its correlation id.
//!
//! With `--acks 0` the broker sends no response: a message's publish latency ends when its request
//! has been written to the socket, and there is no reader thread.
//!
//! A batch is compressed (`--compression`) when it is sent, in this thread: the codec's time is part
//! of `send_delay` and of the publish latency, as it is in any client. With `--prefill` the same
//! loop fills the topic: rate 0, a message count instead of a time window.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        produce_request::{PartitionProduceData, TopicProduceData},
        ApiKey, ProduceRequest, TopicName,
    },
    protocol::StrBytes,
};

use crate::{
    batch::{BatchBuilder, ValueHeader},
    cli::{Acks, MessageSize},
    cluster::PartitionLeader,
    compression::{Compression, Compressor},
    error::BenchError,
    keys::{KeySpace, SpreadCounts},
    partitioner::SplitMix64,
    payload::{Filler, Payload},
    run::{lock, sleep_until, Shared, SharedStats},
    schedule::{Due, Pacer, RateSchedule},
    wire::{decode_response, encode_request, Connection, FrameReader, FrameWriter, REQUEST_TIMEOUT},
};

/// Produce requests outstanding per connection, as Kafka's default
/// `max.in.flight.requests.per.connection` (5): enough to keep a broker busy while earlier requests
/// are acknowledged, small enough that a stalled broker stops the producer within 5 requests.
pub const IN_FLIGHT_MAX: usize = 5;
/// Messages appended per pass of the send loop before linger deadlines are checked again; bounds
/// one pass when catching up after a stall or running with `--rate 0`.
const APPEND_PER_PASS_MAX: usize = 4096;
/// Longest sleep of the send loop, so stop requests are seen promptly.
const IDLE_SLEEP_MAX: Duration = Duration::from_millis(10);
/// How often a thread blocked on a queue or slot re-checks the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What one producer thread does.
#[derive(Debug, Clone)]
pub struct ProducerPlan {
    /// This producer's index (0-based).
    pub index: u64,
    /// Producers in the run.
    pub producers: u64,
    /// Topic.
    pub topic: String,
    /// Every partition of the topic and its leader.
    pub partitions: Vec<PartitionLeader>,
    /// `--acks`.
    pub acks: Acks,
    /// `--batch-bytes`.
    pub batch_bytes: usize,
    /// `--linger-ms`.
    pub linger: Duration,
    /// `--message-size`.
    pub message_size: MessageSize,
    /// `--compression`.
    pub compression: Compression,
    /// `--payload`.
    pub payload: Payload,
    /// The keys and how they are drawn (`--keys`, `--key-distribution`); `None`: no keys.
    pub keys: Option<Arc<KeySpace>>,
    /// `--rate` (0: unlimited).
    pub rate: u64,
    /// Messages this producer sends in all (`--prefill`); `None`: as many as the schedule holds.
    pub message_limit: Option<u64>,
    /// Seed for sizes, keys and payload.
    pub seed: u64,
}

/// Counts free in-flight slots of one connection.
#[derive(Debug)]
struct Slots {
    free: Mutex<usize>,
    changed: Condvar,
}

impl Slots {
    fn new(count: usize) -> Slots {
        Slots {
            free: Mutex::new(count),
            changed: Condvar::new(),
        }
    }

    /// Takes a slot; `false` if the run stopped or `deadline` passed first.
    fn acquire(&self, shared: &Shared, deadline: Instant) -> bool {
        let mut free = lock(&self.free);
        loop {
            if *free > 0 {
                *free -= 1;
                return true;
            }
            let now = Instant::now();
            if shared.is_stopped() || now >= deadline {
                return false;
            }
            free = match self.changed.wait_timeout(free, STOP_POLL.min(deadline - now)) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn release(&self) {
        let mut free = lock(&self.free);
        *free += 1;
        assert!(*free <= IN_FLIGHT_MAX, "released more in-flight slots than exist");
        self.changed.notify_one();
    }
}

/// A sent Produce request awaiting its response.
#[derive(Debug)]
struct InFlight {
    correlation_id: i32,
    version: i16,
    /// Partitions in the request and their record counts.
    partitions: Vec<(i32, usize)>,
    /// Intended send time of every message in it.
    intended: Vec<Instant>,
    /// Key + value bytes in it.
    payload_bytes: u64,
}

/// One broker connection of a producer.
struct Link {
    writer: FrameWriter,
    version: i16,
    slots: Arc<Slots>,
    /// To the reader thread; `None` with acks = 0.
    in_flight: Option<mpsc::Sender<InFlight>>,
    reader: Option<JoinHandle<()>>,
    /// Set when the drain deadline passes with responses outstanding: the reader then counts them
    /// as unacknowledged instead of failing the run.
    abandoned: Arc<AtomicBool>,
    /// Indexes (into the plan's partitions) this broker leads.
    partitions: Vec<usize>,
}

/// A partition's batch being filled.
struct OpenBatch {
    builder: BatchBuilder,
    opened_at: Instant,
    intended: Vec<Instant>,
    payload_bytes: u64,
}

/// Runs one producer to the end of the schedule; failures are reported through `shared`.
pub fn run_producer(plan: ProducerPlan, shared: Arc<Shared>) {
    let result = Producer::connect(plan, Arc::clone(&shared)).and_then(|mut producer| {
        let outcome = producer.run();
        producer.close();
        shared.add_spread(&producer.spread);
        outcome
    });
    if let Err(error) = result {
        shared.fail(error);
    }
    shared.producer_finished();
}

struct Producer {
    plan: ProducerPlan,
    shared: Arc<Shared>,
    stats: SharedStats,
    links: Vec<Link>,
    /// Index of the link leading each partition.
    link_of_partition: Vec<usize>,
    open: Vec<Option<OpenBatch>>,
    topic_name: TopicName,
    filler: Filler,
    compressor: Compressor,
    spread: SpreadCounts,
    random: SplitMix64,
    round_robin: usize,
    frame: BytesMut,
}

impl Producer {
    fn connect(plan: ProducerPlan, shared: Arc<Shared>) -> Result<Producer, BenchError> {
        let stats = shared.register_stats();
        let mut leaders: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (index, partition) in plan.partitions.iter().enumerate() {
            leaders.entry(partition.leader.clone()).or_default().push(index);
        }
        let mut links = Vec::with_capacity(leaders.len());
        let mut link_of_partition = vec![0; plan.partitions.len()];
        for (leader, partitions) in leaders {
            let connection = Connection::open(&leader)?;
            let version = connection.apis.version(ApiKey::Produce)?;
            let (writer, reader) = connection.split()?;
            for &partition in &partitions {
                if let Some(slot) = link_of_partition.get_mut(partition) {
                    *slot = links.len();
                }
            }
            let slots = Arc::new(Slots::new(IN_FLIGHT_MAX));
            let abandoned = Arc::new(AtomicBool::new(false));
            let (in_flight, reader) = if plan.acks == Acks::None {
                (None, None)
            } else {
                let (sender, receiver) = mpsc::channel();
                let ack_reader = AckReader {
                    reader,
                    receiver,
                    slots: Arc::clone(&slots),
                    stats: Arc::clone(&stats),
                    shared: Arc::clone(&shared),
                    abandoned: Arc::clone(&abandoned),
                    topic: plan.topic.clone(),
                };
                let handle = std::thread::Builder::new()
                    .name(format!("bench-acks-{}", plan.index))
                    .spawn(move || ack_reader.run())
                    .map_err(|e| BenchError::Internal(format!("spawning a reader thread: {e}")))?;
                (Some(sender), Some(handle))
            };
            links.push(Link {
                writer,
                version,
                slots,
                in_flight,
                reader,
                abandoned,
                partitions,
            });
        }
        let partition_count = plan.partitions.len();
        let compressor = Compressor::new(plan.compression)
            .map_err(|e| BenchError::Internal(format!("starting the {} compressor: {e}", plan.compression)))?;
        Ok(Producer {
            stats,
            links,
            link_of_partition,
            open: (0..partition_count).map(|_| None).collect(),
            topic_name: TopicName(StrBytes::from_string(plan.topic.clone())),
            filler: Filler::new(plan.payload, plan.message_size.max().saturating_sub(ValueHeader::BYTES)),
            compressor,
            spread: SpreadCounts::new(plan.keys.as_ref().map_or(0, |keys| keys.len()), partition_count),
            random: SplitMix64::new(plan.seed),
            round_robin: usize::try_from(plan.index).unwrap_or(0),
            frame: BytesMut::new(),
            plan,
            shared,
        })
    }

    /// The send loop, until the schedule ends (or the send deadline passes, or the run stops).
    fn run(&mut self) -> Result<(), BenchError> {
        let clock = self.shared.clock;
        let schedule = RateSchedule::new(clock.start, self.plan.rate, self.plan.producers, self.plan.index);
        let mut pacer = match self.plan.message_limit {
            Some(limit) => Pacer::with_limit(schedule, clock.window.end, limit),
            None => Pacer::new(schedule, clock.window.end),
        };
        sleep_until(clock.start);
        loop {
            if self.shared.is_stopped() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= clock.send_deadline {
                // Fell so far behind the schedule that the backlog could not be sent in time.
                let unsent_open: usize = self.open.iter().flatten().map(|batch| batch.intended.len()).sum();
                lock(&self.stats).not_sent += pacer.remaining() + u64::try_from(unsent_open).unwrap_or(0);
                self.open.iter_mut().for_each(|batch| *batch = None);
                return Ok(());
            }
            let mut appended = 0;
            while appended < APPEND_PER_PASS_MAX {
                // A fresh clock per message: a send that blocked on a full in-flight window lets
                // more messages fall due (and, at --rate 0, stamps each with its creation time).
                let Some(due) = pacer.poll_due(Instant::now()) else {
                    break;
                };
                self.append(due)?;
                appended += 1;
            }
            let now = Instant::now();
            if pacer.is_finished(now) {
                return self.send_all();
            }
            self.send_lingered(now)?;
            if appended < APPEND_PER_PASS_MAX {
                let mut wake = now + IDLE_SLEEP_MAX;
                if let Some(next) = pacer.next_intended() {
                    wake = wake.min(next);
                }
                if let Some(linger) = self.earliest_linger_deadline() {
                    wake = wake.min(linger);
                }
                sleep_until(wake);
            }
        }
    }

    /// Appends one message to its partition's batch, sending batches that are full.
    fn append(&mut self, due: Due) -> Result<(), BenchError> {
        let partition_count = self.open.len();
        let (key_index, partition) = match &self.plan.keys {
            None => {
                self.round_robin = (self.round_robin + 1) % partition_count.max(1);
                (None, self.round_robin)
            }
            Some(keys) => {
                let index = keys.pick(&mut self.random);
                (Some(index), keys.partition(index))
            }
        };
        self.spread.count(key_index, partition);
        let key_len = key_index
            .zip(self.plan.keys.as_ref())
            .map(|(index, keys)| keys.name(index).len());
        let value_len = self.plan.message_size.sample(self.random.next_u64());
        let intended_unix_ns = self.shared.clock.anchor.unix_ns(due.intended);
        let timestamp_ms = i64::try_from(intended_unix_ns / 1_000_000).unwrap_or(i64::MAX);
        let header = ValueHeader { intended_unix_ns }.encode();
        let batch_bytes = self.plan.batch_bytes;

        let fits = match self.open.get(partition) {
            Some(Some(batch)) => {
                batch.builder.encoded_bytes() + batch.builder.record_bytes(timestamp_ms, key_len, value_len)
                    <= batch_bytes
            }
            _ => true,
        };
        if !fits {
            self.send_link(self.link_of(partition))?;
        }
        let Some(slot) = self.open.get_mut(partition) else {
            return Err(BenchError::Internal(format!(
                "partition index {partition} out of range"
            )));
        };
        let key = key_index
            .zip(self.plan.keys.as_deref())
            .map(|(index, keys)| keys.name(index));
        let filler = self
            .filler
            .next(value_len.saturating_sub(ValueHeader::BYTES), &mut self.random);
        let batch = slot.get_or_insert_with(|| OpenBatch {
            builder: BatchBuilder::new(timestamp_ms, batch_bytes.min(1 << 20)),
            opened_at: Instant::now(),
            intended: Vec::new(),
            payload_bytes: 0,
        });
        batch.builder.append(timestamp_ms, key, &[&header, filler]);
        batch.intended.push(due.intended);
        batch.payload_bytes += u64::try_from(value_len + key_len.unwrap_or(0)).unwrap_or(0);
        if batch.builder.encoded_bytes() >= batch_bytes {
            self.send_link(self.link_of(partition))?;
        }
        Ok(())
    }

    fn link_of(&self, partition: usize) -> usize {
        self.link_of_partition.get(partition).copied().unwrap_or(0)
    }

    fn earliest_linger_deadline(&self) -> Option<Instant> {
        self.open
            .iter()
            .flatten()
            .map(|batch| batch.opened_at + self.plan.linger)
            .min()
    }

    fn send_lingered(&mut self, now: Instant) -> Result<(), BenchError> {
        for link in 0..self.links.len() {
            let Some(partitions) = self.links.get(link).map(|l| l.partitions.clone()) else {
                continue;
            };
            let lingered = partitions
                .iter()
                .any(|&p| matches!(self.open.get(p), Some(Some(batch)) if batch.opened_at + self.plan.linger <= now));
            if lingered {
                self.send_link(link)?;
            }
        }
        Ok(())
    }

    fn send_all(&mut self) -> Result<(), BenchError> {
        for link in 0..self.links.len() {
            self.send_link(link)?;
        }
        Ok(())
    }

    /// Sends every non-empty open batch led by `link_index` in one Produce request.
    fn send_link(&mut self, link_index: usize) -> Result<(), BenchError> {
        let Some(link) = self.links.get_mut(link_index) else {
            return Err(BenchError::Internal(format!("link {link_index} out of range")));
        };
        let mut partition_data = Vec::new();
        let mut batch_bytes_uncompressed = 0u64;
        let mut batch_bytes_sent = 0u64;
        let mut in_flight = InFlight {
            correlation_id: 0,
            version: link.version,
            partitions: Vec::new(),
            intended: Vec::new(),
            payload_bytes: 0,
        };
        for &partition in &link.partitions {
            let Some(batch) = self.open.get_mut(partition).and_then(Option::take) else {
                continue;
            };
            let Some(id) = self.plan.partitions.get(partition).map(|p| p.partition) else {
                continue;
            };
            in_flight.partitions.push((id, batch.intended.len()));
            in_flight.payload_bytes += batch.payload_bytes;
            in_flight.intended.extend_from_slice(&batch.intended);
            batch_bytes_uncompressed += u64::try_from(batch.builder.encoded_bytes()).unwrap_or(0);
            let codec = self.compressor.codec();
            let records = batch
                .builder
                .finish(&mut self.compressor)
                .map_err(|e| BenchError::Internal(format!("compressing a batch with {codec}: {e}")))?;
            batch_bytes_sent += u64::try_from(records.len()).unwrap_or(0);
            partition_data.push(
                PartitionProduceData::default()
                    .with_index(id)
                    .with_records(Some(Bytes::from(records))),
            );
        }
        if partition_data.is_empty() {
            return Ok(());
        }
        let request = ProduceRequest::default()
            .with_acks(self.plan.acks.wire())
            .with_timeout_ms(i32::try_from(REQUEST_TIMEOUT.as_millis()).unwrap_or(i32::MAX))
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(self.topic_name.clone())
                .with_partition_data(partition_data)]);

        let deadline = Instant::now() + REQUEST_TIMEOUT;
        if !link.slots.acquire(&self.shared, deadline) {
            if self.shared.is_stopped() {
                return Ok(());
            }
            return Err(BenchError::Timeout {
                address: link.writer.address().to_string(),
                context: format!("waiting for one of {IN_FLIGHT_MAX} outstanding Produce requests to be answered"),
                waited: REQUEST_TIMEOUT,
            });
        }
        in_flight.correlation_id = link.writer.take_correlation_id();
        self.frame.clear();
        encode_request(&mut self.frame, link.version, in_flight.correlation_id, &request)?;
        let message_count = in_flight.intended.len() as u64;
        let payload_bytes = in_flight.payload_bytes;
        // Hand the entry to the reader before writing, so the response can never arrive first.
        let intended = match &link.in_flight {
            Some(sender) => {
                let intended = in_flight.intended.clone();
                if sender.send(in_flight).is_err() {
                    // The reader has ended: it recorded why through `shared`.
                    return Ok(());
                }
                intended
            }
            None => in_flight.intended,
        };
        link.writer.write_frame(&self.frame, "sending a Produce request")?;
        let written = Instant::now();

        let window = self.shared.clock.window;
        let mut stats = lock(&self.stats);
        stats.produce_requests += 1;
        stats.sent.add(message_count, payload_bytes);
        stats.batch_bytes_uncompressed += batch_bytes_uncompressed;
        stats.batch_bytes_sent += batch_bytes_sent;
        for &time in intended.iter().filter(|&&time| window.contains(time)) {
            stats.send_delay.record_since(time, written);
        }
        if self.plan.acks == Acks::None {
            // No response will come: the request is "acknowledged" once written.
            link.slots.release();
            for &time in intended.iter().filter(|&&time| window.contains(time)) {
                stats.publish.record_since(time, written);
            }
            stats.acknowledged.add(message_count, payload_bytes);
            if window.contains(written) {
                stats.acknowledged_in_window.add(message_count, payload_bytes);
            }
            drop(stats);
            self.shared
                .acknowledged_messages
                .fetch_add(message_count, Ordering::Relaxed);
            self.shared
                .acknowledged_bytes
                .fetch_add(payload_bytes, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Ends the connections: waits (to the drain deadline) for outstanding responses.
    fn close(&mut self) {
        let deadline = self.shared.clock.drain_deadline;
        for link in &mut self.links {
            link.in_flight = None; // the reader ends once it has answered what is queued
            let Some(reader) = link.reader.take() else { continue };
            while !reader.is_finished() && Instant::now() < deadline && !self.shared.is_stopped() {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !reader.is_finished() {
                // Unblock a reader stuck on a silent broker; it counts what is left as unacknowledged.
                link.abandoned.store(true, Ordering::SeqCst);
                link.writer.shutdown_both();
            }
            let _ = reader.join();
        }
    }
}

/// The reader thread of one producer connection.
struct AckReader {
    reader: FrameReader,
    receiver: mpsc::Receiver<InFlight>,
    slots: Arc<Slots>,
    stats: SharedStats,
    shared: Arc<Shared>,
    abandoned: Arc<AtomicBool>,
    topic: String,
}

impl AckReader {
    fn run(mut self) {
        loop {
            let entry = match self.receiver.recv_timeout(STOP_POLL) {
                Ok(entry) => entry,
                Err(mpsc::RecvTimeoutError::Timeout) if self.shared.is_stopped() => return,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if let Err(error) = self.acknowledge(&entry) {
                if self.abandoned.load(Ordering::SeqCst) {
                    let left: usize = self.receiver.try_iter().map(|e| e.intended.len()).sum();
                    lock(&self.stats).unacknowledged += u64::try_from(entry.intended.len() + left).unwrap_or(0);
                } else {
                    self.shared.fail(error);
                }
                return;
            }
        }
    }

    fn acknowledge(&mut self, entry: &InFlight) -> Result<(), BenchError> {
        let frame = self.reader.read_frame("waiting for a Produce response")?;
        let acknowledged_at = Instant::now();
        let address = self.reader.address().to_string();
        let response = decode_response::<ProduceRequest>(frame, entry.version, entry.correlation_id, &address)?;
        let mut answered = 0;
        for topic in &response.responses {
            for partition in &topic.partition_responses {
                BenchError::check_code(
                    "Produce",
                    || format!("{}/{}", self.topic, partition.index),
                    partition.error_code,
                    partition.error_message.as_ref().map(|m| m.as_str()),
                )?;
                answered += 1;
            }
        }
        if answered != entry.partitions.len() {
            return Err(BenchError::Protocol {
                address,
                detail: format!(
                    "Produce response answers {answered} partitions, the request had {}",
                    entry.partitions.len()
                ),
            });
        }
        self.slots.release();

        let window = self.shared.clock.window;
        let count = entry.intended.len() as u64;
        let mut stats = lock(&self.stats);
        for &time in entry.intended.iter().filter(|&&time| window.contains(time)) {
            stats.publish.record_since(time, acknowledged_at);
        }
        stats.acknowledged.add(count, entry.payload_bytes);
        if window.contains(acknowledged_at) {
            stats.acknowledged_in_window.add(count, entry.payload_bytes);
        }
        drop(stats);
        self.shared.acknowledged_messages.fetch_add(count, Ordering::Relaxed);
        self.shared
            .acknowledged_bytes
            .fetch_add(entry.payload_bytes, Ordering::Relaxed);
        Ok(())
    }
}
