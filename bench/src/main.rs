//! # `bench`: open-loop Kafka load and latency
//!
//! A load generator that speaks the Kafka protocol with a lean client of its own, so it drives any
//! Kafka-compatible broker (Shardline's engine first) with the same workload, and tells the truth
//! about latency:
//!
//! - **Open loop.** Every message has an intended send time from the rate schedule
//!   (`schedule.rs`); its latency counts from that time, not from when the client got around to
//!   sending it, so a stalled broker cannot hide behind a waiting client (coordinated omission).
//! - **Per message.** Publish latency (intended send → acknowledgement of the Produce request
//!   carrying the message) and end-to-end latency (intended send → consumed; the intended time
//!   travels in the first 16 bytes of each value), in HdrHistograms, warm-up excluded.
//! - **Stamped.** The JSON result carries the host, kernel, cores, CPU model, the broker's version,
//!   shard count and fsync mode as given, every flag, and optionally a disk fsync probe.
//! - **Real workloads.** Compressed batches as Kafka specifies them (`--compression`, `compression`),
//!   keys drawn uniformly or with a Zipf skew and placed by Kafka's partitioner (`keys`), value
//!   contents that compress like data or not at all (`payload`), and a consume-throughput run from a
//!   topic filled beforehand (`--prefill`).
//!
//! ## Runtime
//! Plain OS threads and blocking sockets: per producer one sending thread plus one reader thread
//! per broker connection, one thread per consumer, and the main thread for the progress line.
//! No async runtime sits between a socket becoming readable and the timestamp being taken, and
//! a thread that sleeps until an intended send time wakes on the kernel's timer alone.
//! `docs/bench.md` has the reasoning and the flags.
//!
//! ## Layout
//! `cli` (flags) → `cluster` (setup: topic, leaders, offsets) → `producer` / `consumer` (workers,
//! using `schedule`, `batch`, `compression`, `keys`, `packed`, `partitioner`, `payload`, `wire`) → `run`
//! (shared state) → `latency`, `report`, `probe`. Every failure is a [`error::BenchError`]: a
//! message and exit code 1, never a panic.

mod batch;
mod cli;
mod cluster;
mod compression;
mod consumer;
mod error;
mod keys;
mod latency;
mod mqtt;
mod mqtt_load;
mod packed;
mod partitioner;
mod payload;
mod probe;
mod producer;
mod report;
mod run;
mod schedule;
mod tls;
mod wire;

use std::{
    collections::BTreeMap,
    process::ExitCode,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use clap::Parser;

use crate::{
    cli::{Acks, Args, ConsumeFrom},
    cluster::{CreateOutcome, PartitionLeader, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP},
    consumer::ConsumerPlan,
    error::{BenchError, EXIT_FAILURE},
    keys::KeySpace,
    producer::ProducerPlan,
    report::{FillReport, HostInfo, Progress, ProgressShows, RunReport},
    run::{RunClock, Shared, JOIN_SLACK},
    wire::Connection,
};

/// Time between setup and the first intended send, for workers to open their connections.
const START_DELAY: Duration = Duration::from_millis(300);
/// How often the progress line is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How often the main thread checks whether the workers are done.
const JOIN_POLL: Duration = Duration::from_millis(20);
/// Exit code for flag values that cannot work (clap uses 2 for its own usage errors too).
const EXIT_USAGE: u8 = 2;
/// Longest a `--prefill` may take: what is not written by then is left out (with a warning), so a
/// broker slower than expected cannot keep the bench filling for hours.
const PREFILL_TIME_MAX: Duration = Duration::from_secs(600);

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = args.validate() {
        eprintln!("bench: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: error: {error}");
            ExitCode::from(u8::try_from(EXIT_FAILURE).unwrap_or(1))
        }
    }
}

/// The whole run: probe, setup, fill (with `--prefill`), load, report.
fn run(args: &Args) -> Result<(), BenchError> {
    if args.protocol == cli::Protocol::Mqtt {
        return mqtt_load::run(args);
    }
    let started_unix_ms = report::unix_ms_now();
    let host = HostInfo::collect();

    if let Some(ca) = &args.tls_ca {
        tls::trust(ca)?;
    }
    let probe = match &args.fsync_probe {
        Some(dir) => {
            eprintln!("bench: fsync probe in {} ...", dir.display());
            Some(probe::run(dir)?)
        }
        None => None,
    };

    let brokers: Vec<String> = args
        .brokers
        .iter()
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
        .collect();
    let mut control = cluster::bootstrap(&brokers)?;
    let bootstrap = control.address().to_string();
    let topic_created = match args.partitions {
        Some(partitions) => cluster::create_topic(&mut control, &args.topic, partitions)? == CreateOutcome::Created,
        None => false,
    };
    let partitions = cluster::describe_topic(&mut control, &args.topic, topic_created)?;
    if let Some(asked) = args
        .partitions
        .filter(|&asked| usize::try_from(asked).ok() != Some(partitions.len()))
    {
        eprintln!(
            "bench: topic {} already exists with {} partitions (asked for {asked}); using {}",
            args.topic,
            partitions.len(),
            partitions.len()
        );
    }
    let key_space = usize::try_from(args.keys)
        .ok()
        .filter(|&count| count > 0)
        .map(|count| Arc::new(KeySpace::new(count, args.key_distribution, partitions.len())));
    let start_offsets = if args.consumers == 0 {
        BTreeMap::new()
    } else {
        let timestamp = match args.consume_from {
            ConsumeFrom::Latest => LATEST_TIMESTAMP,
            ConsumeFrom::Earliest => EARLIEST_TIMESTAMP,
        };
        list_offsets(&args.topic, &mut control, &partitions, timestamp)?
    };
    let apis = control.apis.clone();
    drop(control);

    let fill = if args.prefill > 0 {
        Some(fill_topic(args, &brokers, &partitions, &key_space, &start_offsets)?)
    } else {
        None
    };

    let clock = RunClock::new(Instant::now() + START_DELAY, args.warmup, args.duration);
    let producers = if args.measures_producers() { args.producers } else { 0 };
    let shared = Arc::new(Shared::new(clock, u64::from(producers)));
    let mut workers = spawn_consumers(args, &partitions, &start_offsets, fill.as_ref(), &shared)?;
    let consumer_threads = workers.len();
    let plans = producer_plans(args, producers, &partitions, &key_space, args.rate, None);
    workers.extend(spawn_producers(plans, &shared)?);
    let shows = ProgressShows {
        produce: producers > 0,
        consume: args.consumers > 0,
        end_to_end: args.consumers > 0 && fill.is_none(),
    };
    let progress = Progress::new(!args.quiet, clock.start, None, shows);
    watch(&workers, &shared, progress)?;
    join(workers, &shared)?;

    let stats = shared.merged_stats();
    // With --prefill the measurement ends when the consumers have read the fill, if that comes first.
    let measured_end = match stats.caught_up_at {
        Some(at) if fill.is_some() && stats.consumers_caught_up == consumer_threads as u64 => at.min(clock.window.end),
        _ => clock.window.end,
    };
    let spread = match &fill {
        Some(fill) => fill.spread.clone(),
        None => shared.spread(),
    };
    let report = RunReport {
        args,
        host,
        apis,
        bootstrap,
        partition_ids: partitions.iter().map(|p| p.partition).collect(),
        topic_created,
        window: measured_end.saturating_duration_since(clock.window.start),
        elapsed: Instant::now().saturating_duration_since(clock.start),
        stats,
        consumer_threads,
        key_space,
        spread,
        fill,
        probe,
        started_unix_ms,
    };
    warn_about(&report);
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json())
            .map_err(|e| BenchError::Internal(format!("serializing the result: {e}")))?;
        std::fs::write(path, text + "\n").map_err(|source| BenchError::Report {
            path: path.clone(),
            source,
        })?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// Waits for the workers, printing progress, until they finish or the run's hard deadline passes.
fn watch(workers: &[JoinHandle<()>], shared: &Shared, mut progress: Progress) -> Result<(), BenchError> {
    let clock = shared.clock;
    let hard_deadline = clock.drain_deadline + JOIN_SLACK;
    let mut next_progress = clock.start + PROGRESS_INTERVAL;
    while !workers.iter().all(JoinHandle::is_finished) {
        let now = Instant::now();
        if now >= hard_deadline {
            shared.request_stop();
            progress.finish();
            return Err(shared.take_error().unwrap_or_else(|| {
                BenchError::Internal(format!("workers still running {JOIN_SLACK:?} after the drain deadline"))
            }));
        }
        if now >= next_progress {
            progress.update(shared);
            next_progress += PROGRESS_INTERVAL;
        }
        std::thread::sleep(JOIN_POLL);
    }
    progress.finish();
    Ok(())
}

/// Joins finished workers; the first error any of them reported ends the run.
fn join(workers: Vec<JoinHandle<()>>, shared: &Shared) -> Result<(), BenchError> {
    for worker in workers {
        if worker.join().is_err() {
            shared.fail(BenchError::Internal("a worker thread panicked".to_string()));
        }
    }
    match shared.take_error() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// `--prefill`: writes the messages at full speed, untimed, and lists where each partition ends.
fn fill_topic(
    args: &Args,
    brokers: &[String],
    partitions: &[PartitionLeader],
    key_space: &Option<Arc<KeySpace>>,
    start_offsets: &BTreeMap<i32, i64>,
) -> Result<FillReport, BenchError> {
    eprintln!(
        "bench: filling {} with {} messages ({} producer(s), not timed) ...",
        args.topic, args.prefill, args.producers
    );
    let clock = RunClock::new(Instant::now() + START_DELAY, Duration::ZERO, PREFILL_TIME_MAX);
    let shared = Arc::new(Shared::new(clock, u64::from(args.producers)));
    let plans = producer_plans(args, args.producers, partitions, key_space, 0, Some(args.prefill));
    let workers = spawn_producers(plans, &shared)?;
    watch(
        &workers,
        &shared,
        Progress::new(
            !args.quiet,
            clock.start,
            Some("filling"),
            ProgressShows {
                produce: true,
                consume: false,
                end_to_end: false,
            },
        ),
    )?;
    join(workers, &shared)?;
    let elapsed = Instant::now().saturating_duration_since(clock.start);
    let stats = shared.merged_stats();
    if stats.acknowledged.messages < args.prefill {
        eprintln!(
            "bench: warning: the fill wrote {} of {} messages within {PREFILL_TIME_MAX:?}; measuring what is there",
            stats.acknowledged.messages, args.prefill
        );
    }
    let mut control = cluster::bootstrap(brokers)?;
    let end_offsets = list_offsets(&args.topic, &mut control, partitions, LATEST_TIMESTAMP)?;
    let target_messages = end_offsets
        .iter()
        .map(|(partition, end)| end.saturating_sub(start_offsets.get(partition).copied().unwrap_or(0)))
        .map(|span| u64::try_from(span).unwrap_or(0))
        .sum();
    Ok(FillReport {
        stats,
        spread: shared.spread(),
        elapsed,
        end_offsets,
        target_messages,
    })
}

/// Each partition's offset at `timestamp` ([`LATEST_TIMESTAMP`] or [`EARLIEST_TIMESTAMP`]), asking
/// each leader for its own partitions.
fn list_offsets(
    topic: &str,
    control: &mut Connection,
    partitions: &[PartitionLeader],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, BenchError> {
    let mut offsets = BTreeMap::new();
    let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for partition in partitions {
        by_leader
            .entry(partition.leader.as_str())
            .or_default()
            .push(partition.partition);
    }
    for (leader, ids) in by_leader {
        let listed = if leader == control.address() {
            cluster::list_offsets(control, topic, &ids, timestamp)?
        } else {
            cluster::list_offsets(&mut Connection::open(leader)?, topic, &ids, timestamp)?
        };
        offsets.extend(listed);
    }
    Ok(offsets)
}

fn spawn_error(error: std::io::Error) -> BenchError {
    BenchError::Internal(format!("spawning a worker thread: {error}"))
}

/// Starts the consumers (before any producer: they only read from the offsets listed at setup).
fn spawn_consumers(
    args: &Args,
    partitions: &[PartitionLeader],
    start_offsets: &BTreeMap<i32, i64>,
    fill: Option<&FillReport>,
    shared: &Arc<Shared>,
) -> Result<Vec<JoinHandle<()>>, BenchError> {
    let mut workers = Vec::new();
    let consumers = usize::try_from(args.consumers).unwrap_or(0);
    if consumers > partitions.len() {
        eprintln!(
            "bench: {consumers} consumers for {} partitions: {} will be idle",
            partitions.len(),
            consumers - partitions.len()
        );
    }
    for index in 0..consumers.min(partitions.len()) {
        let owned: Vec<(PartitionLeader, i64)> = partitions
            .iter()
            .enumerate()
            .filter(|(position, _)| position % consumers == index)
            .map(|(_, partition)| {
                let offset = start_offsets.get(&partition.partition).copied().unwrap_or(0);
                (partition.clone(), offset)
            })
            .collect();
        let end_offsets = fill.map(|fill| {
            owned
                .iter()
                .filter_map(|(partition, _)| {
                    let end = fill.end_offsets.get(&partition.partition)?;
                    Some((partition.partition, *end))
                })
                .collect()
        });
        let plan = ConsumerPlan {
            topic: args.topic.clone(),
            partitions: owned,
            with_producers: args.measures_producers(),
            settle: if args.acks == Acks::None {
                consumer::ACKS_NONE_SETTLE
            } else {
                Duration::ZERO
            },
            end_offsets,
        };
        let shared = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name(format!("bench-consumer-{index}"))
            .spawn(move || consumer::run_consumer(plan, shared))
            .map_err(spawn_error)?;
        workers.push(handle);
    }
    Ok(workers)
}

/// One plan per producer thread; `fill_messages` splits a `--prefill` count among them.
fn producer_plans(
    args: &Args,
    producers: u32,
    partitions: &[PartitionLeader],
    key_space: &Option<Arc<KeySpace>>,
    rate: u64,
    fill_messages: Option<u64>,
) -> Vec<ProducerPlan> {
    let seed_base = report::unix_ms_now();
    let producers = u64::from(producers);
    (0..producers)
        .map(|index| ProducerPlan {
            index,
            producers,
            topic: args.topic.clone(),
            partitions: partitions.to_vec(),
            acks: args.acks,
            batch_bytes: args.batch_bytes,
            linger: Duration::from_millis(args.linger_ms),
            message_size: args.message_size,
            compression: args.compression,
            payload: args.payload,
            keys: key_space.clone(),
            rate,
            message_limit: fill_messages.map(|total| total / producers + u64::from(index < total % producers)),
            seed: seed_base.wrapping_mul(31).wrapping_add(index),
        })
        .collect()
}

fn spawn_producers(plans: Vec<ProducerPlan>, shared: &Arc<Shared>) -> Result<Vec<JoinHandle<()>>, BenchError> {
    let mut workers = Vec::with_capacity(plans.len());
    for plan in plans {
        let shared = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name(format!("bench-producer-{}", plan.index))
            .spawn(move || producer::run_producer(plan, shared))
            .map_err(spawn_error)?;
        workers.push(handle);
    }
    Ok(workers)
}

/// Says on stderr what makes a result suspect.
fn warn_about(report: &RunReport<'_>) {
    let stats = &report.stats;
    if stats.not_sent > 0 {
        eprintln!(
            "bench: warning: {} messages of the schedule were never sent: the broker (or this client) could not keep \
             up with --rate {}; latencies above cover only what was sent",
            stats.not_sent, report.args.rate
        );
    }
    if stats.unacknowledged > 0 {
        eprintln!(
            "bench: warning: {} messages were sent but never acknowledged",
            stats.unacknowledged
        );
    }
    let args = report.args;
    if args.measures_producers() && args.consumers > 0 && stats.consumed.messages < stats.acknowledged.messages {
        eprintln!(
            "bench: warning: consumed {} of {} acknowledged messages before the drain deadline",
            stats.consumed.messages, stats.acknowledged.messages
        );
    }
    if args.measures_producers() && args.rate == 0 {
        eprintln!("bench: note: --rate 0 runs closed loop; latencies are service times, not open-loop figures");
    }
    if let Some(fill) = &report.fill {
        if stats.consumed.messages < fill.target_messages {
            eprintln!(
                "bench: warning: the consumers read {} of the {} prefilled messages within --duration {:?}",
                stats.consumed.messages, fill.target_messages, args.duration
            );
        }
        if report.window.is_zero() {
            eprintln!(
                "bench: warning: the consumers read the whole fill during the warm-up: nothing was measured; \
                 raise --prefill or lower --warmup"
            );
        }
    }
    if args.compression != compression::Compression::None && args.payload == payload::Payload::Constant {
        eprintln!(
            "bench: note: --payload constant compresses far better than real data (see the ratio); \
             --payload text or random gives a compression figure that means something"
        );
    }
}
