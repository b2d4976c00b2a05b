//! The three writers measured: the partition log, the raw buffered io_uring
//! loop it is compared with, and (for context) a raw O_DIRECT loop.
//!
//! The log and raw sides each keep one log / one file for a whole case and
//! write it in *rounds*: at most `RoundPlan::batches` writes of the same
//! batch, stopped early at `RoundPlan::time_cap`. Latency is taken the same way
//! on every side: from just before the call (append or write) to its
//! completion, including any fdatasync the call waits for, recorded in
//! nanoseconds in an HdrHistogram. Throughput is bytes acknowledged over the
//! time of the write loop. After each round a side syncs what it left
//! unsynced (untimed), so no sync of one side runs during the other's round.
//! In `never` mode nothing is synced between rounds: the log's roll then
//! fsyncs its whole segment, as in steady state, and both sides' dirty data
//! stays below the kernel's background writeback threshold at the defaults.

use std::{
    cell::Cell,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use glommio::io::{BufferedFile, OpenOptions};
use hdrhistogram::Histogram;
use shardline_log::{Log, LogConfig};

use crate::{
    args::{Mode, INTERVAL_BYTES, INTERVAL_MS},
    error::{io_error, log_error, BenchError},
};

/// Highest latency tracked exactly: 120 s; anything slower is clamped to it.
const LATENCY_NS_MAX: u64 = 120_000_000_000;
/// Three significant figures: 0.1 % resolution at every scale.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Size of the file glommio probes when a thread opens its first DmaFile: an
/// empty file makes it wrongly enable polled I/O (design §4, glommio #605/#670).
const DMA_PROBE_BYTES: usize = 4096;

/// What one side does in one round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundPlan {
    /// Most batches to write.
    pub(crate) batches: u64,
    /// Stop issuing writes after this long.
    pub(crate) time_cap: Duration,
}

/// Figures of one side, summed over rounds.
pub(crate) struct SideResult {
    /// Bytes acknowledged (batch wire bytes; for O_DIRECT the aligned bytes written).
    pub(crate) bytes: u64,
    /// Appends (or raw writes of one batch) acknowledged.
    pub(crate) appends: u64,
    /// Time of the write loops, without open/close and the final sync.
    pub(crate) elapsed: Duration,
    /// Per-append latency in nanoseconds.
    pub(crate) latency_ns: Histogram<u64>,
    /// fdatasync calls on written data while writing (the log's
    /// `sync_count`, which leaves out the syncs a segment roll makes).
    pub(crate) fsyncs: u64,
    /// Rounds stopped by the time cap rather than the byte budget.
    pub(crate) capped_rounds: u32,
    /// Segment rolls the log made while writing (0 for the raw loops).
    pub(crate) rolls: u64,
}

impl SideResult {
    pub(crate) fn empty() -> Result<SideResult, BenchError> {
        Ok(SideResult {
            bytes: 0,
            appends: 0,
            elapsed: Duration::ZERO,
            latency_ns: new_histogram()?,
            fsyncs: 0,
            capped_rounds: 0,
            rolls: 0,
        })
    }

    pub(crate) fn merge(&mut self, round: &SideResult) -> Result<(), BenchError> {
        self.bytes += round.bytes;
        self.appends += round.appends;
        self.elapsed += round.elapsed;
        self.fsyncs += round.fsyncs;
        self.capped_rounds += round.capped_rounds;
        self.rolls += round.rolls;
        self.latency_ns
            .add(&round.latency_ns)
            .map_err(|e| BenchError::Invariant(format!("merging latency histograms: {e}")))
    }

    /// MiB/s over the write loops; 0 when nothing ran.
    pub(crate) fn mib_per_s(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.bytes as f64 / f64::from(1u32 << 20) / seconds
        } else {
            0.0
        }
    }

    /// Latency at `quantile` in microseconds.
    pub(crate) fn quantile_us(&self, quantile: f64) -> f64 {
        self.latency_ns.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub(crate) fn max_us(&self) -> f64 {
        self.latency_ns.max() as f64 / 1000.0
    }
}

fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .map_err(|e| BenchError::Invariant(format!("creating a latency histogram: {e}")))
}

fn nanos(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// The log side of one case: one log, appended to over all rounds, so it rolls
/// its segments at the steady-state rate whatever the number of rounds.
pub(crate) struct LogSide {
    log: Rc<Log>,
    batch: Bytes,
    records_per_batch: u64,
    mode: Mode,
    concurrency: usize,
    appends: u64,
}

impl LogSide {
    /// Opens a fresh log in `dir` with `mode`'s durability and otherwise the
    /// log's defaults (the segment size may be overridden).
    pub(crate) async fn open(
        dir: &Path,
        batch: &Bytes,
        records_per_batch: u64,
        mode: Mode,
        concurrency: usize,
        segment_bytes: Option<u64>,
    ) -> Result<LogSide, BenchError> {
        let defaults = LogConfig::default();
        let config = LogConfig {
            durability: mode.durability(),
            segment_bytes_max: segment_bytes.unwrap_or(defaults.segment_bytes_max),
            ..defaults
        };
        let log = Log::open(dir, config).await.map_err(log_error("opening the log"))?;
        Ok(LogSide {
            log: Rc::new(log),
            batch: batch.clone(),
            records_per_batch,
            mode,
            concurrency,
            appends: 0,
        })
    }

    /// One round: `concurrency` tasks append until the plan's batches are
    /// claimed or its time is up; then an untimed flush (not in `never`).
    pub(crate) async fn round(&mut self, plan: RoundPlan) -> Result<SideResult, BenchError> {
        let log = &self.log;
        let fsyncs_before = log.sync_count();
        let segments_before = log.segment_count();
        // Appends claimed so far, shared by the tasks so the total stays bounded.
        let claimed = Rc::new(Cell::new(0u64));
        let started = Instant::now();
        let deadline = started + plan.time_cap;
        let mut tasks = Vec::with_capacity(self.concurrency);
        for _ in 0..self.concurrency {
            let (log, claimed, batch) = (Rc::clone(log), Rc::clone(&claimed), self.batch.clone());
            tasks.push(glommio::spawn_local(async move {
                let mut latency_ns = new_histogram()?;
                while claimed.get() < plan.batches && Instant::now() < deadline {
                    claimed.set(claimed.get() + 1);
                    let records = batch.clone();
                    let call_started = Instant::now();
                    log.append(records).await.map_err(log_error("appending to the log"))?;
                    latency_ns.saturating_record(nanos(call_started.elapsed()));
                }
                Ok::<_, BenchError>(latency_ns)
            }));
        }
        let mut latency_ns = new_histogram()?;
        let mut first_error = None;
        for task in tasks {
            match task.await {
                Ok(histogram) => latency_ns
                    .add(&histogram)
                    .map_err(|e| BenchError::Invariant(format!("merging latency histograms: {e}")))?,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let elapsed = started.elapsed();
        let fsyncs = log.sync_count() - fsyncs_before;
        let rolls = log.segment_count().saturating_sub(segments_before) as u64;
        if let Some(e) = first_error {
            return Err(e);
        }
        if self.mode != Mode::Never {
            // Untimed: syncs the tail now rather than from the log's timer
            // while the raw side runs.
            log.flush().await.map_err(log_error("flushing the log"))?;
        }
        let appends = latency_ns.len();
        self.appends += appends;
        Ok(SideResult {
            bytes: appends * self.batch.len() as u64,
            appends,
            elapsed,
            latency_ns,
            fsyncs,
            capped_rounds: u32::from(appends < plan.batches),
            rolls,
        })
    }

    /// Closes the log and checks it holds exactly the records appended.
    pub(crate) async fn close(self) -> Result<(), BenchError> {
        let log_end = self.log.log_end();
        self.log.close().await.map_err(log_error("closing the log"))?;
        let records_expected = self.appends * self.records_per_batch;
        if u64::try_from(log_end.0).ok() != Some(records_expected) {
            return Err(BenchError::Invariant(format!(
                "the log ends at offset {} after {} appends of {} records",
                log_end.0, self.appends, self.records_per_batch
            )));
        }
        Ok(())
    }
}

/// When the raw loop calls fdatasync: the log's policy, replayed.
struct SyncPolicy {
    mode: Mode,
    unsynced_bytes: u64,
    /// When the oldest unsynced write completed (the log arms its timer then).
    unsynced_since: Option<Instant>,
}

impl SyncPolicy {
    fn new(mode: Mode) -> SyncPolicy {
        SyncPolicy {
            mode,
            unsynced_bytes: 0,
            unsynced_since: None,
        }
    }

    /// `interval`: the log's 10 ms timer queues a flush that the *next* append
    /// waits behind; replayed as a sync before the next write.
    fn due_before_write(&self, now: Instant) -> bool {
        self.mode == Mode::Interval
            && self
                .unsynced_since
                .is_some_and(|since| now.duration_since(since) >= Duration::from_millis(INTERVAL_MS))
    }

    fn wrote(&mut self, bytes: u64, now: Instant) {
        self.unsynced_bytes += bytes;
        self.unsynced_since.get_or_insert(now);
    }

    /// `always`: every write; `interval`: once 4 MiB are unsynced (the log syncs
    /// inline before answering that append).
    fn due_after_write(&self) -> bool {
        match self.mode {
            Mode::Always => true,
            Mode::Interval => self.unsynced_bytes >= INTERVAL_BYTES,
            Mode::Never => false,
        }
    }

    fn synced(&mut self) {
        self.unsynced_bytes = 0;
        self.unsynced_since = None;
    }
}

/// The raw side of one case: `batch` written back to back into one fresh file
/// with glommio `BufferedFile::write_at` (an io_uring buffered write, the
/// log's write path), `batches_per_write` copies per write, fdatasync as
/// `mode` says, continued over all rounds.
pub(crate) struct RawSide {
    file: BufferedFile,
    path: PathBuf,
    batch: Bytes,
    batches_per_write: u64,
    mode: Mode,
    policy: SyncPolicy,
    /// Batches written so far; the next write goes at `written * batch.len()`.
    written: u64,
}

impl RawSide {
    /// Creates the file, sized to `batches_total` batches without allocating,
    /// as the log sizes its segment (sparse ftruncate), so both write inside
    /// the file size.
    pub(crate) async fn create(
        path: &Path,
        batch: &Bytes,
        mode: Mode,
        batches_per_write: u64,
        batches_total: u64,
    ) -> Result<RawSide, BenchError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .buffered_open(path)
            .await
            .map_err(io_error("creating the raw file", path))?;
        file.truncate(batches_total * batch.len() as u64)
            .await
            .map_err(io_error("sizing the raw file", path))?;
        Ok(RawSide {
            file,
            path: path.to_path_buf(),
            batch: batch.clone(),
            batches_per_write,
            mode,
            policy: SyncPolicy::new(mode),
            written: 0,
        })
    }

    /// One round of writes; then an untimed fdatasync (not in `never`).
    pub(crate) async fn round(&mut self, plan: RoundPlan) -> Result<SideResult, BenchError> {
        let batch_bytes = self.batch.len() as u64;
        let mut latency_ns = new_histogram()?;
        let (mut written, mut fsyncs) = (0u64, 0u64);
        let started = Instant::now();
        let deadline = started + plan.time_cap;
        while written < plan.batches && Instant::now() < deadline {
            let copies = self.batches_per_write.min(plan.batches - written);
            let call_started = Instant::now();
            if self.policy.due_before_write(call_started) {
                sync(&self.file, &self.path).await?;
                self.policy.synced();
                fsyncs += 1;
            }
            let position = (self.written + written) * batch_bytes;
            let batch = &self.batch;
            write_all_at(&self.file, &self.path, position, |skip| repeat(batch, copies, skip)).await?;
            self.policy.wrote(copies * batch_bytes, Instant::now());
            if self.policy.due_after_write() {
                sync(&self.file, &self.path).await?;
                self.policy.synced();
                fsyncs += 1;
            }
            latency_ns.saturating_record_n(nanos(call_started.elapsed()), copies);
            written += copies;
        }
        let elapsed = started.elapsed();
        self.written += written;
        if self.mode != Mode::Never {
            // Untimed, as the log's flush after its rounds.
            sync(&self.file, &self.path).await?;
            self.policy.synced();
        }
        Ok(SideResult {
            bytes: written * batch_bytes,
            appends: written,
            elapsed,
            latency_ns,
            fsyncs,
            capped_rounds: u32::from(written < plan.batches),
            rolls: 0,
        })
    }

    pub(crate) async fn close(self) -> Result<(), BenchError> {
        self.file
            .close()
            .await
            .map_err(io_error("closing the raw file", &self.path))
    }
}

async fn sync(file: &BufferedFile, path: &Path) -> Result<(), BenchError> {
    file.fdatasync()
        .await
        .map_err(io_error("fdatasync of the raw file", path))
}

/// `copies` copies of `batch` in one new buffer, minus the first `skip` bytes:
/// the one copy the log also makes when it hands a group to io_uring.
fn repeat(batch: &[u8], copies: u64, skip: usize) -> Vec<u8> {
    let total = batch.len() * usize::try_from(copies).unwrap_or(usize::MAX);
    let mut buffer = Vec::with_capacity(total.saturating_sub(skip));
    let mut at = 0usize;
    for _ in 0..copies {
        let end = at + batch.len();
        if end > skip {
            buffer.extend_from_slice(batch.get(skip.saturating_sub(at)..).unwrap_or_default());
        }
        at = end;
    }
    buffer
}

/// Writes `build(0)` at `position`, resuming a short write with `build(done)`.
async fn write_all_at(
    file: &BufferedFile,
    path: &Path,
    position: u64,
    build: impl Fn(usize) -> Vec<u8>,
) -> Result<(), BenchError> {
    let mut done = 0usize;
    loop {
        let buffer = build(done);
        let want = buffer.len();
        if want == 0 {
            return Ok(());
        }
        let written = file
            .write_at(buffer, position + done as u64)
            .await
            .map_err(io_error("writing the raw file", path))?;
        if written == 0 {
            return Err(BenchError::Io {
                context: "writing the raw file (no progress; disk full?)",
                path: path.to_path_buf(),
                source: std::io::ErrorKind::StorageFull.into(),
            });
        }
        if written >= want {
            return Ok(());
        }
        done += written;
    }
}

/// Context only: the same batches through O_DIRECT (glommio `DmaFile`), each
/// write padded to the device alignment and fdatasynced.
pub(crate) async fn run_direct(path: &Path, batch: &[u8], plan: RoundPlan) -> Result<SideResult, BenchError> {
    // Not empty before glommio opens it (see DMA_PROBE_BYTES).
    std::fs::write(path, [0u8; DMA_PROBE_BYTES]).map_err(io_error("creating the O_DIRECT file", path))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(path)
        .await
        .map_err(io_error("opening the O_DIRECT file", path))?;
    let write_bytes = file.align_up(batch.len() as u64);
    let write_len = usize::try_from(write_bytes)
        .map_err(|_| BenchError::Invariant(format!("an O_DIRECT write of {write_bytes} bytes")))?;
    file.truncate(plan.batches * write_bytes)
        .await
        .map_err(io_error("sizing the O_DIRECT file", path))?;
    let mut latency_ns = new_histogram()?;
    let mut written_batches = 0u64;
    let started = Instant::now();
    let deadline = started + plan.time_cap;
    while written_batches < plan.batches && Instant::now() < deadline {
        let call_started = Instant::now();
        let mut buffer = file.alloc_dma_buffer(write_len);
        let (data, padding) = buffer.as_bytes_mut().split_at_mut(batch.len().min(write_len));
        data.copy_from_slice(batch.get(..data.len()).unwrap_or_default());
        padding.fill(0);
        let position = written_batches * write_bytes;
        let written = file
            .write_at(buffer, position)
            .await
            .map_err(io_error("writing the O_DIRECT file", path))?;
        if written != write_len {
            return Err(BenchError::Invariant(format!(
                "short O_DIRECT write: {written} of {write_len} bytes at {position}"
            )));
        }
        file.fdatasync()
            .await
            .map_err(io_error("fdatasync of the O_DIRECT file", path))?;
        latency_ns.saturating_record(nanos(call_started.elapsed()));
        written_batches += 1;
    }
    let elapsed = started.elapsed();
    file.close()
        .await
        .map_err(io_error("closing the O_DIRECT file", path))?;
    Ok(SideResult {
        bytes: written_batches * write_bytes,
        appends: written_batches,
        elapsed,
        latency_ns,
        fsyncs: written_batches,
        capped_rounds: u32::from(written_batches < plan.batches),
        rolls: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_copies_and_skips() {
        let batch = [1u8, 2, 3];
        assert_eq!(repeat(&batch, 2, 0), vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(repeat(&batch, 2, 2), vec![3, 1, 2, 3]);
        assert_eq!(repeat(&batch, 2, 4), vec![2, 3]);
        assert_eq!(repeat(&batch, 2, 6), Vec::<u8>::new());
    }

    #[test]
    fn interval_policy_syncs_on_bytes_and_age() {
        let start = Instant::now();
        let mut policy = SyncPolicy::new(Mode::Interval);
        assert!(!policy.due_before_write(start));
        policy.wrote(INTERVAL_BYTES - 1, start);
        assert!(!policy.due_after_write());
        assert!(policy.due_before_write(start + Duration::from_millis(INTERVAL_MS)));
        policy.wrote(1, start);
        assert!(policy.due_after_write());
        policy.synced();
        assert!(!policy.due_after_write());
        assert!(SyncPolicy::new(Mode::Always).due_after_write());
        assert!(!SyncPolicy::new(Mode::Never).due_after_write());
    }
}
