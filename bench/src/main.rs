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
//! using `schedule`, `batch`, `partitioner`, `wire`) → `run` (shared state) → `latency`, `report`,
//! `probe`. Every failure is a [`error::BenchError`]: a message and exit code 1, never a panic.

mod batch;
mod cli;
mod cluster;
mod consumer;
mod error;
mod latency;
mod partitioner;
mod probe;
mod producer;
mod report;
mod run;
mod schedule;
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
    producer::ProducerPlan,
    report::{HostInfo, Progress, RunReport},
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

/// The whole run: probe, setup, load, report.
fn run(args: &Args) -> Result<(), BenchError> {
    let started_unix_ms = report::unix_ms_now();
    let host = HostInfo::collect();

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
    let start_offsets = start_offsets(args, &mut control, &partitions)?;
    let apis = control.apis.clone();
    drop(control);

    let clock = RunClock::new(Instant::now() + START_DELAY, args.warmup, args.duration);
    let shared = Arc::new(Shared::new(clock, u64::from(args.producers)));
    let workers = spawn_workers(args, &partitions, &start_offsets, &shared)?;

    let mut progress = Progress::new(!args.quiet, clock.start);
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
            progress.update(&shared, args.producers > 0, args.consumers > 0);
            next_progress += PROGRESS_INTERVAL;
        }
        std::thread::sleep(JOIN_POLL);
    }
    progress.finish();
    for worker in workers {
        if worker.join().is_err() {
            shared.fail(BenchError::Internal("a worker thread panicked".to_string()));
        }
    }
    if let Some(error) = shared.take_error() {
        return Err(error);
    }

    let stats = shared.merged_stats();
    let report = RunReport {
        args,
        host,
        apis,
        bootstrap,
        partitions: partitions.len(),
        topic_created,
        window: clock.window.length(),
        elapsed: Instant::now().saturating_duration_since(clock.start),
        stats,
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

/// The offset each partition's consumer starts at (empty without consumers).
fn start_offsets(
    args: &Args,
    control: &mut Connection,
    partitions: &[PartitionLeader],
) -> Result<BTreeMap<i32, i64>, BenchError> {
    let mut offsets = BTreeMap::new();
    if args.consumers == 0 {
        return Ok(offsets);
    }
    let timestamp = match args.consume_from {
        ConsumeFrom::Latest => LATEST_TIMESTAMP,
        ConsumeFrom::Earliest => EARLIEST_TIMESTAMP,
    };
    let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for partition in partitions {
        by_leader
            .entry(partition.leader.as_str())
            .or_default()
            .push(partition.partition);
    }
    for (leader, ids) in by_leader {
        let listed = if leader == control.address() {
            cluster::list_offsets(control, &args.topic, &ids, timestamp)?
        } else {
            cluster::list_offsets(&mut Connection::open(leader)?, &args.topic, &ids, timestamp)?
        };
        offsets.extend(listed);
    }
    Ok(offsets)
}

/// Starts consumers first (they only read from the offsets listed above), then producers.
fn spawn_workers(
    args: &Args,
    partitions: &[PartitionLeader],
    start_offsets: &BTreeMap<i32, i64>,
    shared: &Arc<Shared>,
) -> Result<Vec<JoinHandle<()>>, BenchError> {
    let spawn_error = |e: std::io::Error| BenchError::Internal(format!("spawning a worker thread: {e}"));
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
        let owned = partitions
            .iter()
            .enumerate()
            .filter(|(position, _)| position % consumers == index)
            .map(|(_, partition)| {
                let offset = start_offsets.get(&partition.partition).copied().unwrap_or(0);
                (partition.clone(), offset)
            })
            .collect();
        let plan = ConsumerPlan {
            topic: args.topic.clone(),
            partitions: owned,
            with_producers: args.producers > 0,
            settle: if args.acks == Acks::None {
                consumer::ACKS_NONE_SETTLE
            } else {
                Duration::ZERO
            },
        };
        let shared = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name(format!("bench-consumer-{index}"))
            .spawn(move || consumer::run_consumer(plan, shared))
            .map_err(spawn_error)?;
        workers.push(handle);
    }
    let seed_base = report::unix_ms_now();
    for index in 0..u64::from(args.producers) {
        let plan = ProducerPlan {
            index,
            producers: u64::from(args.producers),
            topic: args.topic.clone(),
            partitions: partitions.to_vec(),
            acks: args.acks,
            batch_bytes: args.batch_bytes,
            linger: Duration::from_millis(args.linger_ms),
            message_size: args.message_size,
            keys: args.keys,
            rate: args.rate,
            seed: seed_base.wrapping_mul(31).wrapping_add(index),
        };
        let shared = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name(format!("bench-producer-{index}"))
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
    if report.args.producers > 0 && report.args.consumers > 0 && stats.consumed.messages < stats.acknowledged.messages {
        eprintln!(
            "bench: warning: consumed {} of {} acknowledged messages before the drain deadline",
            stats.consumed.messages, stats.acknowledged.messages
        );
    }
    if report.args.rate == 0 {
        eprintln!("bench: note: --rate 0 runs closed loop; latencies are service times, not open-loop figures");
    }
}
