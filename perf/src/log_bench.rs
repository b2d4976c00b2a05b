//! # `log-bench`: the partition log against the disk it writes to
//!
//! A log is only as good as the fraction of the disk it delivers. This bench
//! appends Kafka record batches of 1 KiB records (16 KiB and 1 MiB batches by
//! default) to a [`shardline_log::Log`] in each durability mode and, in the
//! same run, on the same directory, writes the same bytes with the plainest
//! loop the log's own write path allows: glommio `BufferedFile::write_at` (an
//! io_uring buffered write) of one batch-sized buffer after another into a
//! fresh file, with fdatasync on the log's schedule. It prints both
//! throughputs, their ratio, and the latency distribution of each call.
//!
//! ## Like with like
//! - Same bytes: the raw loop writes the very batch the log is given (header
//!   included), so both move the same bytes per call.
//! - Same copy: the log copies each batch into a fresh `Vec` to hand it to
//!   io_uring; the raw loop builds its buffer with the same single copy,
//!   inside the timed call.
//! - Same file shape: the log sizes its segment with a sparse `ftruncate`; the
//!   raw file is sized the same way, so both write inside the file size.
//! - Same sync schedule: `always` syncs after every write; `interval` after
//!   4 MiB (inline) or 10 ms (before the next write, where the log's timer
//!   flush lands); `never` not at all.
//! - Same clock: latency runs from just before the call to its completion
//!   (fdatasync included when the call waits for it), in an HdrHistogram.
//! - Fair order: a case is split into rounds that alternate log→raw and
//!   raw→log, so drift in the disk or background load hits both; in
//!   `always` and `interval` each round ends with an untimed sync, so no sync
//!   of one side runs during the other's round.
//!
//! What the raw loop does not do is the log's own work: CRC-32C validation of
//! each batch, offset assignment, the sparse index, and segment rolls (every
//! 128 MiB the log fsyncs, shrinks and indexes the full segment and creates
//! the next one — in every mode, `never` included). Each side keeps one log /
//! one file for the whole case, so the log rolls every 128 MiB as in steady
//! state, whatever the number of rounds; the details list the rolls.
//!
//! With `--concurrency N` the log has N appends in flight and coalesces them;
//! the raw loop stays one write in flight and puts min(N, 1 MiB / batch)
//! batches in each write — the ideal group — recording that write's latency
//! once per batch. Its latency then excludes queueing, so compare latencies
//! only at `--concurrency 1`; the throughput ratio holds at any N.
//!
//! Everything is bounded: batches per side (`--bytes-per-case`,
//! `--always-bytes-per-case`), time per side (`--seconds-per-case`), rounds,
//! and appends in flight. The scratch directory is emptied before and removed
//! after the run; the bench refuses to empty one holding anything it did not
//! create.

// The binary's root is this file, so its parts live beside it in `log_bench/`.
#[path = "log_bench/args.rs"]
mod args;
#[path = "log_bench/error.rs"]
mod error;
#[path = "log_bench/machine.rs"]
mod machine;
#[path = "log_bench/report.rs"]
mod report;
#[path = "log_bench/sides.rs"]
mod sides;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};
use shardline_log::{build_batch, BatchSpec, LogConfig};

use crate::{
    args::{Args, CpuChoice, Mode, RECORD_BYTES},
    error::{io_error, BenchError},
    machine::Machine,
    report::{size_label, CaseResult},
    sides::{LogSide, RawSide, RoundPlan, SideResult},
};

/// Prefixes of what the bench creates in its scratch directory; nothing else
/// is ever deleted there.
const SCRATCH_PREFIXES: [&str; 3] = ["log-", "raw-", "direct-"];

fn main() -> Result<(), BenchError> {
    let mut args = Args::parse();
    args.validate()?;
    empty_scratch(&args.dir)?;
    std::fs::create_dir_all(&args.dir).map_err(io_error("creating the scratch directory", &args.dir))?;
    // glommio opens files and directories with openat(-1, path): a relative
    // path fails with EBADF, so everything below works on the absolute path.
    args.dir = std::fs::canonicalize(&args.dir).map_err(io_error("resolving the scratch directory", &args.dir))?;
    let machine = Machine::probe(&args.dir);
    println!("log-bench | {}", machine.header_line());
    if machine.profile != "release" {
        println!(
            "WARNING: {} build; figures are not representative. Run with --release.",
            machine.profile
        );
    }
    print_settings(&args);

    let started = Instant::now();
    let outcome = run_on_executor(&args);
    // Remove the scratch files whatever happened, then report the first failure.
    let cleaned = empty_scratch(&args.dir)
        .and_then(|()| std::fs::remove_dir(&args.dir).map_err(io_error("removing the scratch directory", &args.dir)));
    let cases = outcome?;
    cleaned?;

    println!();
    print!("{}", report::table(&cases));
    if let Some(direct) = report::direct_table(&cases) {
        println!();
        println!(
            "Context: raw O_DIRECT (glommio DmaFile), each write padded to the device alignment, fdatasync after each:"
        );
        print!("{direct}");
    }
    println!();
    println!("Details:");
    print!("{}", report::details(&cases));
    println!("Total run time {:.1} s.", started.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        std::fs::write(path, report::json(&machine, &args, &cases))
            .map_err(io_error("writing the JSON report", path))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

/// Runs the matrix on one glommio executor (one thread, as one shard).
fn run_on_executor(args: &Args) -> Result<Vec<CaseResult>, BenchError> {
    let placement = match args.cpu {
        CpuChoice::Fixed(cpu) => Placement::Fixed(cpu),
        CpuChoice::Unbound => Placement::Unbound,
    };
    let io_memory = usize::try_from(args.io_memory).map_err(|_| BenchError::Config("--io-memory too large".into()))?;
    let executor = LocalExecutorBuilder::new(placement)
        .name("log-bench")
        .io_memory(io_memory)
        .make()
        .map_err(|e| BenchError::Executor(e.to_string()))?;
    executor.run(run_matrix(args.clone()))
}

fn print_settings(args: &Args) {
    println!(
        "executor: glommio, {}, io_memory {} | appends in flight: {} | rounds per case: {} (alternating log→raw, raw→log)",
        args.cpu,
        size_label(args.io_memory),
        args.concurrency,
        args.rounds
    );
    println!(
        "per side per case: always {}, interval/never {}, at most {:.1} s | records 1 KiB, batch = records + 61 B header | log segment {}",
        size_label(args.always_bytes_per_case),
        size_label(args.bytes_per_case),
        args.seconds_per_case,
        size_label(args.segment_bytes.unwrap_or(LogConfig::default().segment_bytes_max))
    );
    for mode in &args.modes {
        println!("fsync mode {:<8}: {}", mode.name(), mode.fsync_policy());
    }
    println!("latency: per call (append or raw write), from just before the call to its completion, µs");
    println!("fsyncs: fdatasyncs of written data while writing (log: Log::sync_count, which leaves out segment rolls)");
}

/// Every case of the matrix, in order: batch sizes outer, modes inner.
async fn run_matrix(args: Args) -> Result<Vec<CaseResult>, BenchError> {
    let timestamp_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let case_count = args.batch_bytes.len() * args.modes.len();
    let mut cases = Vec::with_capacity(case_count);
    for &payload_bytes in &args.batch_bytes {
        let batch = make_batch(payload_bytes, timestamp_ms)?;
        let wire_bytes = batch.len() as u64;
        // The group the log's writer would form from N appends in flight.
        let write_bytes_max = LogConfig::default().write_bytes_max as u64;
        let batches_per_raw_write = (args.concurrency as u64).min((write_bytes_max / wire_bytes).max(1));
        for &mode in &args.modes {
            let case = run_case(&args, payload_bytes, &batch, mode, batches_per_raw_write).await?;
            eprintln!(
                "[{}/{case_count}] {} {}: log {:.1} MiB/s, raw {:.1} MiB/s, ratio {:.2}",
                cases.len() + 1,
                size_label(payload_bytes),
                mode.name(),
                case.log.mib_per_s(),
                case.raw.mib_per_s(),
                case.ratio()
            );
            cases.push(case);
        }
    }
    Ok(cases)
}

/// One (batch, mode) case: the log and the raw loop in alternating rounds,
/// then the O_DIRECT context figure for `always`.
async fn run_case(
    args: &Args,
    payload_bytes: u64,
    batch: &Bytes,
    mode: Mode,
    batches_per_raw_write: u64,
) -> Result<CaseResult, BenchError> {
    let records_per_batch = payload_bytes / RECORD_BYTES;
    let wire_bytes = batch.len() as u64;
    let batches_total = (args.bytes_for(mode) / wire_bytes).max(1);
    let tag = format!("{wire_bytes}-{}", mode.name());
    let log_dir = args.dir.join(format!("log-{tag}"));
    let raw_path = args.dir.join(format!("raw-{tag}.dat"));
    let mut log_side = LogSide::open(
        &log_dir,
        batch,
        records_per_batch,
        mode,
        args.concurrency,
        args.segment_bytes,
    )
    .await?;
    let raw_side = RawSide::create(&raw_path, batch, mode, batches_per_raw_write, batches_total).await;
    let mut raw_side = match raw_side {
        Ok(side) => side,
        Err(e) => {
            let _ = log_side.close().await;
            remove(&log_dir)?;
            return Err(e);
        }
    };
    let measured = run_rounds(args, &mut log_side, &mut raw_side, batches_total).await;
    // Close and delete whatever happened; the first failure is reported.
    let log_closed = log_side.close().await;
    let raw_closed = raw_side.close().await;
    remove(&log_dir)?;
    remove(&raw_path)?;
    let (log, raw) = measured?;
    log_closed?;
    raw_closed?;
    let direct = if mode == Mode::Always && !args.no_direct {
        let path = args.dir.join(format!("direct-{wire_bytes}.dat"));
        let plan = RoundPlan {
            batches: batches_total,
            time_cap: Duration::from_secs_f64(args.seconds_per_case),
        };
        let result = sides::run_direct(&path, batch, plan).await;
        remove(&path)?;
        Some(result?)
    } else {
        None
    };
    Ok(CaseResult {
        payload_bytes,
        wire_bytes,
        mode,
        log,
        raw,
        batches_per_raw_write,
        direct,
    })
}

/// The rounds of one case, alternating which side goes first (ABBA...).
async fn run_rounds(
    args: &Args,
    log_side: &mut LogSide,
    raw_side: &mut RawSide,
    batches_total: u64,
) -> Result<(SideResult, SideResult), BenchError> {
    let rounds = u64::from(args.rounds);
    let mut log = SideResult::empty()?;
    let mut raw = SideResult::empty()?;
    for round in 0..rounds {
        let plan = RoundPlan {
            // An even split; the first rounds take the remainder.
            batches: batches_total / rounds + u64::from(round < batches_total % rounds),
            time_cap: args.round_time_cap(),
        };
        if plan.batches == 0 {
            continue;
        }
        for log_turn in if round % 2 == 0 { [true, false] } else { [false, true] } {
            if log_turn {
                log.merge(&log_side.round(plan).await?)?;
            } else {
                raw.merge(&raw_side.round(plan).await?)?;
            }
        }
    }
    Ok((log, raw))
}

/// One batch of `payload_bytes / 1 KiB` records, built and checksummed once;
/// every append hands the log a cheap clone of it.
fn make_batch(payload_bytes: u64, timestamp_ms: i64) -> Result<Bytes, BenchError> {
    let records = payload_bytes / RECORD_BYTES;
    let record_count =
        i32::try_from(records).map_err(|_| BenchError::Config(format!("{records} records do not fit one batch")))?;
    let payload = payload(payload_bytes)?;
    Ok(Bytes::from(build_batch(&BatchSpec::plain(
        record_count,
        timestamp_ms,
        &payload,
    ))))
}

/// Record bytes: a fixed, non-repeating-looking pattern (the log never decodes
/// records, and nothing here compresses, so any bytes do).
fn payload(bytes: u64) -> Result<Vec<u8>, BenchError> {
    let len = usize::try_from(bytes).map_err(|_| BenchError::Config(format!("a {bytes}-byte batch")))?;
    Ok((0..len)
        .map(|i: usize| (i.wrapping_mul(31).wrapping_add(7) % 251) as u8)
        .collect())
}

/// Deletes a file or directory the bench made, if it exists, and makes the
/// deletion durable at once. The fsync of the parent directory forces the
/// journal commit that frees the blocks (and, on a file system mounted with
/// `discard`, trims them) here, untimed, instead of inside the next side's
/// first fdatasync.
fn remove(path: &Path) -> Result<(), BenchError> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("removing scratch data", path)(e)),
    }
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    std::fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error("syncing the scratch directory", parent))
}

/// Empties the scratch directory of what an earlier run left, refusing to
/// touch anything the bench does not create.
fn empty_scratch(dir: &Path) -> Result<(), BenchError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("listing the scratch directory", dir)(e)),
    };
    let mut ours: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("listing the scratch directory", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !SCRATCH_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
            return Err(BenchError::Config(format!(
                "refusing to empty {}: it holds `{name}`, which log-bench did not create; pass a new or empty --dir",
                dir.display()
            )));
        }
        ours.push(entry.path());
    }
    ours.iter().try_for_each(|path| remove(path))
}
