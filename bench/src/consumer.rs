//! A consumer: one thread fetching its share of partitions with explicit offsets.
//!
//! No consumer groups (the broker has none yet): partition `i` belongs to consumer `i mod C`, and
//! each consumer starts at the offsets the main thread listed before the producers started
//! (`--consume-from latest`: ListOffsets -1, so exactly what this run produces; `earliest`: -2).
//! It sends one Fetch at a time per leader (`max_wait_ms` [`FETCH_MAX_WAIT_MS`], `min_bytes` 1),
//! walks the returned batches (checking each CRC-32C over the bytes as fetched, then decompressing
//! compressed ones), counts records, reads the intended send time from each bench value to record
//! the end-to-end latency, and times each Fetch that returned records.
//!
//! It stops when the producers are done and it has read up to the high watermark of every
//! partition it owns, or (`--prefill`) when it has read every partition up to the offset the fill
//! ended at, or (consume-only runs) when the window ends, or at the drain deadline.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use kafka_protocol::{
    messages::{
        fetch_request::{FetchPartition, FetchTopic},
        ApiKey, BrokerId, FetchRequest, TopicName,
    },
    protocol::StrBytes,
};

use crate::{
    batch::{batches, ValueHeader},
    cluster::PartitionLeader,
    compression::{Compression, Decompressor},
    error::BenchError,
    run::{lock, sleep_until, Shared, SharedStats, Volume},
    wire::Connection,
};

/// Longest a Fetch waits at the broker for data (Kafka's `fetch.max.wait.ms` is 500; shorter keeps
/// the end of a run prompt and costs nothing while data flows).
pub const FETCH_MAX_WAIT_MS: i32 = 100;
/// Bytes a Fetch may return in all (Kafka's `fetch.max.bytes`, 50 MiB).
pub const FETCH_BYTES_MAX: i32 = 50 << 20;
/// Bytes a Fetch may return per partition (Kafka's `max.partition.fetch.bytes`, 1 MiB).
pub const FETCH_PARTITION_BYTES_MAX: i32 = 1 << 20;

/// What one consumer thread does.
#[derive(Debug, Clone)]
pub struct ConsumerPlan {
    /// Topic.
    pub topic: String,
    /// The partitions it owns, their leaders, and the offset to start at.
    pub partitions: Vec<(PartitionLeader, i64)>,
    /// Whether producers run in this process (else: consume only, stop at the window's end).
    pub with_producers: bool,
    /// How long after the producers finish the high watermark is trusted to cover all they sent.
    /// 0 when they waited for acknowledgements; [`ACKS_NONE_SETTLE`] with `--acks 0`, where the
    /// last requests may still be on their way into the log when the producers finish.
    pub settle: Duration,
    /// `--prefill`: the offset each owned partition's fill ended at; the consumer stops once it has
    /// read every partition up to it.
    pub end_offsets: Option<BTreeMap<i32, i64>>,
}

/// See [`ConsumerPlan::settle`].
pub const ACKS_NONE_SETTLE: Duration = Duration::from_millis(500);

/// One leader's connection and the partitions fetched from it.
struct FetchLink {
    connection: Connection,
    version: i16,
    /// (partition id, next offset to read, high watermark from the latest response)
    positions: Vec<Position>,
}

/// What a consumer keeps between fetches to read compressed batches.
#[derive(Debug, Default)]
struct Inflater {
    decompressor: Decompressor,
    /// The records section of the batch being read, decompressed; reused.
    scratch: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Position {
    partition: i32,
    next_offset: i64,
    high_watermark: i64,
}

/// Runs one consumer; failures are reported through `shared`.
pub fn run_consumer(plan: ConsumerPlan, shared: Arc<Shared>) {
    if let Err(error) = consume(&plan, &shared) {
        shared.fail(error);
    }
}

fn consume(plan: &ConsumerPlan, shared: &Arc<Shared>) -> Result<(), BenchError> {
    let stats = shared.register_stats();
    let mut by_leader: BTreeMap<String, Vec<Position>> = BTreeMap::new();
    for (partition, offset) in &plan.partitions {
        by_leader.entry(partition.leader.clone()).or_default().push(Position {
            partition: partition.partition,
            next_offset: *offset,
            high_watermark: *offset,
        });
    }
    let mut links = Vec::with_capacity(by_leader.len());
    for (leader, positions) in by_leader {
        let connection = Connection::open(&leader)?;
        let version = connection.apis.version(ApiKey::Fetch)?;
        links.push(FetchLink {
            connection,
            version,
            positions,
        });
    }
    let clock = shared.clock;
    let topic_name = TopicName(StrBytes::from_string(plan.topic.clone()));
    let mut inflater = Inflater::default();
    let reached_end_offsets = |links: &[FetchLink]| {
        plan.end_offsets.as_ref().is_some_and(|ends| {
            links.iter().all(|link| {
                link.positions
                    .iter()
                    .all(|p| ends.get(&p.partition).is_none_or(|&end| p.next_offset >= end))
            })
        })
    };
    sleep_until(clock.start);
    loop {
        if reached_end_offsets(&links) {
            let mut stats = lock(&stats);
            stats.consumers_caught_up += 1;
            stats.caught_up_at = Some(Instant::now());
            return Ok(());
        }
        let now = Instant::now();
        if shared.is_stopped() || now >= clock.drain_deadline {
            return Ok(());
        }
        if !plan.with_producers && now >= clock.window.end {
            return Ok(());
        }
        // Read before fetching: if producers were done (and settled) before this fetch was sent,
        // its high watermarks cover everything they wrote.
        let producers_done = plan.with_producers
            && shared
                .producers_finished_at()
                .is_some_and(|finished| finished + plan.settle <= Instant::now());
        for link in &mut links {
            fetch_once(link, &topic_name, &plan.topic, shared, &stats, &mut inflater)?;
        }
        let caught_up = links
            .iter()
            .all(|link| link.positions.iter().all(|p| p.next_offset >= p.high_watermark));
        if producers_done && caught_up {
            return Ok(());
        }
    }
}

fn fetch_once(
    link: &mut FetchLink,
    topic_name: &TopicName,
    topic: &str,
    shared: &Shared,
    stats: &SharedStats,
    inflater: &mut Inflater,
) -> Result<(), BenchError> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(FETCH_MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES_MAX)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name.clone())
            .with_partitions(
                link.positions
                    .iter()
                    .map(|position| {
                        FetchPartition::default()
                            .with_partition(position.partition)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(position.next_offset)
                            .with_last_fetched_epoch(-1)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(FETCH_PARTITION_BYTES_MAX)
                    })
                    .collect(),
            )]);
    let sent_at = Instant::now();
    let (response, received_at) = link
        .connection
        .call_timed(&request, link.version, "waiting for a Fetch response")?;
    let address = link.connection.address().to_string();
    BenchError::check_code("Fetch", || format!("topic {topic}"), response.error_code, None)?;

    let clock = shared.clock;
    let received_unix_ns = clock.anchor.unix_ns(received_at);
    let window_unix_ns = clock.anchor.unix_ns(clock.window.start)..clock.anchor.unix_ns(clock.window.end);
    // Gathered without the lock, recorded under it once per response.
    let mut consumed = Volume::default();
    let mut latencies_ns: Vec<u64> = Vec::new();
    let mut foreign_records = 0u64;
    let mut compressed_batches = 0u64;
    let mut batch_bytes = 0u64;
    for topic_response in &response.responses {
        for data in &topic_response.partitions {
            BenchError::check_code(
                "Fetch",
                || format!("{topic}/{}", data.partition_index),
                data.error_code,
                None,
            )?;
            let Some(position) = link.positions.iter_mut().find(|p| p.partition == data.partition_index) else {
                continue;
            };
            position.high_watermark = data.high_watermark;
            let Some(records) = data.records.as_ref() else { continue };
            for batch in batches(records) {
                let batch = batch.map_err(|error| BenchError::Protocol {
                    address: address.clone(),
                    detail: format!("{topic}/{}: {error}", data.partition_index),
                })?;
                if batch.next_offset() <= position.next_offset {
                    continue; // wholly before the fetch offset
                }
                batch.verify_crc().map_err(|error| BenchError::Protocol {
                    address: address.clone(),
                    detail: format!(
                        "{topic}/{} batch at offset {}: {error}",
                        data.partition_index, batch.base_offset
                    ),
                })?;
                if batch.is_control() {
                    position.next_offset = batch.next_offset();
                    continue;
                }
                let batch_error = |error| BenchError::Protocol {
                    address: address.clone(),
                    detail: format!(
                        "{topic}/{} batch at offset {}: {error}",
                        data.partition_index, batch.base_offset
                    ),
                };
                if batch.compression().map_err(batch_error)? != Compression::None {
                    compressed_batches += 1;
                }
                batch_bytes += u64::try_from(batch.bytes.len()).unwrap_or(0);
                let records = batch
                    .records(&mut inflater.decompressor, &mut inflater.scratch)
                    .map_err(batch_error)?;
                for record in records {
                    let record = record.map_err(batch_error)?;
                    if batch.base_offset.saturating_add(record.offset_delta) < position.next_offset {
                        continue;
                    }
                    let value = record.value.unwrap_or_default();
                    let bytes = (value.len() + record.key.map_or(0, <[u8]>::len)) as u64;
                    consumed.add(1, bytes);
                    match ValueHeader::decode(value) {
                        Some(header) if window_unix_ns.contains(&header.intended_unix_ns) => {
                            latencies_ns.push(received_unix_ns.saturating_sub(header.intended_unix_ns));
                        }
                        Some(_) => {}
                        None => foreign_records += 1,
                    }
                }
                position.next_offset = batch.next_offset();
            }
        }
    }
    let mut stats = lock(stats);
    for latency_ns in latencies_ns {
        stats.end_to_end.record(Duration::from_nanos(latency_ns));
    }
    stats.consumed.add(consumed.messages, consumed.bytes);
    if clock.window.contains(received_at) {
        stats.consumed_in_window.add(consumed.messages, consumed.bytes);
        if consumed.messages > 0 {
            stats.fetch.record_since(sent_at, received_at);
        }
    }
    if consumed.messages == 0 {
        stats.empty_fetches += 1;
    }
    stats.foreign_records += foreign_records;
    stats.compressed_batches += compressed_batches;
    stats.batch_bytes_fetched += batch_bytes;
    stats.fetch_requests += 1;
    drop(stats);
    shared.consumed_messages.fetch_add(consumed.messages, Ordering::Relaxed);
    shared.consumed_bytes.fetch_add(consumed.bytes, Ordering::Relaxed);
    Ok(())
}
