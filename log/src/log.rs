//! `Log`: one partition's log, the front type the engine calls on the owning shard.
//!
//! All mutation — appends, rolls, flushes, truncation, retention — goes through
//! one writer task per log, fed by a bounded command queue. Consecutive appends
//! are coalesced into one write (group write) and, with `Durability::Always`,
//! share one `fdatasync` (group commit). Offsets are assigned by the writer at
//! write time, so a failed write leaves no hole to roll back. A replicated
//! append carries its offsets instead; the writer checks them against the log
//! end at that same moment (so appends queued before it count) and answers a
//! mismatch without writing. Every change of the log end or start updates the
//! leader epoch cache under the same borrow. Reads — and the epoch queries —
//! are synchronous: they borrow the state briefly and return zero-copy slices
//! of memory-mapped segments.

use std::{
    cell::RefCell,
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::sync::Semaphore;

use crate::{
    batch::{self, BatchHeader},
    cleaner::{self, CleanReport, CleanerConfig, KeyMap, PassFacts, SegmentRewriter, TransactionOutcomes, TxnJudge},
    epoch::{EpochCache, EpochStart},
    error::{io_error, BatchError, LogError},
    offset::{Offset, Position},
    recovery::BadRange,
    recovery_point::{self, RecoveryPoint},
    segment::{self, sync_dir, PreparedBatch, SealedOpen, Segment, SegmentView, Stored, SEGMENT_OFFSET_SPAN_MAX},
};

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fdatasync` before an append is acknowledged; concurrent appends share one.
    Always,
    /// Acknowledge after the write; `fdatasync` every `interval_ms` or every
    /// `bytes` written, whichever comes first.
    Interval {
        /// Longest time written data stays unsynced.
        interval_ms: u64,
        /// Most bytes written between two syncs.
        bytes: u64,
    },
    /// Acknowledge after the write; sync only on roll, `flush` and close.
    Never,
}

/// Source of wall-clock time for segment age, retention and timestamps; a
/// seam so tests can drive time.
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Settings of one log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment rolls before it would exceed this size. At most 4 GiB (index positions are u32).
    pub segment_bytes_max: u64,
    /// A segment rolls on the next append once it is this old.
    pub segment_ms_max: i64,
    /// One index entry per this many bytes of batches.
    pub index_interval_bytes: u64,
    /// When writes are made durable.
    pub durability: Durability,
    /// Delete sealed segments whose newest timestamp is older than this.
    pub retention_ms_max: Option<i64>,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes_max: Option<u64>,
    /// Most bytes coalesced into one write (a single larger append is written alone).
    pub write_bytes_max: usize,
    /// Most appends waiting for the writer; further appends wait for room (backpressure).
    pub pending_appends_max: usize,
    /// How batches reach the page cache (see [`WritePath`]).
    pub writes: WritePath,
    /// Stamp appended batches with the time of the append (Kafka's
    /// `message.timestamp.type=LogAppendTime`): timestamp type bit set, max
    /// timestamp = now, CRC recomputed. Replicated batches keep the
    /// leader's stamp.
    pub log_append_time: bool,
    /// Longest the recovery point (`recovery-point`: how far the data is
    /// known fsynced) lags a sync of the active segment while appends go on.
    /// Damage past it is read as a torn tail at recovery and cut; damage
    /// before it is kept apart and what follows it is kept. Each write of
    /// it costs one small fdatasync. 0 writes it after every sync.
    pub recovery_point_interval_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            // 128 MiB: large enough that rolls are rare, small enough that
            // retention frees space in useful steps and recovery scans are short.
            segment_bytes_max: 128 << 20,
            segment_ms_max: 7 * 24 * 3600 * 1000,
            // 4 KiB, as Kafka: a lookup scans at most a page of headers.
            index_interval_bytes: 4096,
            durability: Durability::Always,
            retention_ms_max: Some(7 * 24 * 3600 * 1000),
            retention_bytes_max: None,
            // 1 MiB: past this, a bigger write no longer raises disk throughput here.
            write_bytes_max: 1 << 20,
            // 1024 appends ≈ many produce requests in flight per partition.
            pending_appends_max: 1024,
            // Measured: inline saves ~15 µs of CPU per 1-message request
            // (docs/benchmarks.md, Write path).
            writes: WritePath::Inline,
            // Kafka's default, CreateTime: batches keep the producer's timestamps.
            log_append_time: false,
            // Kafka writes its recovery point every 60 s; half that bounds
            // the span read as a possible torn tail to 30 s of appends, at
            // one extra fdatasync per active partition per 30 s.
            recovery_point_interval_ms: 30_000,
        }
    }
}

/// How a segment's batches are written into the page cache. Either way the
/// data is made durable with an io_uring fdatasync, and reads come from the
/// mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    /// An io_uring write. ext4 cannot take a buffered write without blocking
    /// (no async buffered writes), so io_uring hands every one to a kernel
    /// worker thread: the shard never blocks, at the price of a worker
    /// wake-up and completion per write.
    IoUring,
    /// A `pwrite` on the shard's own thread: no worker hop (a page-cache copy
    /// of a few KiB costs microseconds), but the shard waits if the kernel
    /// throttles writers (dirty page limits; the log starts writeback every
    /// 4 MiB to stay far from them).
    Inline,
}

/// What an append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record.
    pub base_offset: Offset,
    /// Offset of the last record.
    pub last_offset: Offset,
    /// First offset still stored when the append was done.
    pub log_start: Offset,
    /// Whether the append is durable (fsynced) already.
    pub durable: bool,
    /// The time the log stamped on the batches (LogAppendTime topics,
    /// [`LogConfig::log_append_time`]); `None` when they keep their own.
    pub log_append_time_ms: Option<i64>,
}

/// Whole batches read from the log.
#[derive(Debug, Clone, Default)]
pub struct ReadBatches {
    /// Contiguous runs of whole batches, each a slice of a mapped segment.
    pub chunks: Vec<Bytes>,
    /// Offset after the last batch returned (the next offset to read).
    pub next_offset: Offset,
}

impl ReadBatches {
    /// Total bytes returned.
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

/// A ListOffsets answer for a timestamp: the first record at or after the
/// time (or, for a compressed batch, the batch that holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// The record's offset, or the base offset of the compressed batch
    /// holding it when not `exact`.
    pub offset: Offset,
    /// The record's timestamp, or the batch's max timestamp when not
    /// `exact`.
    pub timestamp_ms: i64,
    /// Whether the record itself was read. A compressed batch's records are
    /// not (the log never decompresses): the caller may decompress the
    /// batch at `offset` to find the record.
    pub exact: bool,
}

/// Where the offsets of an append's batches come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OffsetSource {
    /// The writer assigns them at write time (`append`, `append_with_epoch`).
    Assigned,
    /// The batches carry them and must continue the log (`append_replicated`).
    Carried,
}

/// One append waiting for the writer.
struct QueuedAppend {
    batches: Vec<PreparedBatch>,
    offsets: OffsetSource,
    reply: oneshot::Sender<Result<AppendInfo, LogError>>,
}

impl QueuedAppend {
    fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.bytes.len()).sum()
    }
}

enum Command {
    Append(QueuedAppend),
    Flush {
        reply: Option<oneshot::Sender<Result<Offset, LogError>>>,
        /// Also wait until rolled segments are sealed (so `durable_end` reaches
        /// what was synced); the interval timer does not.
        wait_seals: bool,
    },
    Truncate {
        offset: Offset,
        reply: oneshot::Sender<Result<Offset, LogError>>,
    },
    Retention {
        reply: oneshot::Sender<Result<usize, LogError>>,
    },
    Roll {
        reply: oneshot::Sender<Result<(), LogError>>,
    },
    DeleteBefore {
        offset: Offset,
        reply: oneshot::Sender<Result<Offset, LogError>>,
    },
    Reconfigure {
        config: LogConfig,
        reply: oneshot::Sender<Result<(), LogError>>,
    },
    /// Swap a cleaned copy of a segment in (`cleaner.rs`), if the segment
    /// is still the version `view` was taken of. Answers whether it did.
    InstallCleaned {
        view: SegmentView,
        reply: oneshot::Sender<Result<bool, LogError>>,
    },
}

struct Inner {
    dir: PathBuf,
    config: LogConfig,
    clock: Rc<dyn Clock>,
    /// Every segment by base offset; the last one is active.
    segments: BTreeMap<Offset, Segment>,
    /// Offset the next append gets; every offset below it is written.
    log_end: Offset,
    /// The low watermark DeleteRecords set (`start_offset.rs`): offsets
    /// below it are not served even while their segment is still stored.
    start_floor: Offset,
    /// Where each leader epoch starts among the stored batches; changes
    /// together with `log_end` and the log start.
    epochs: EpochCache,
    /// Every offset below it is fsynced.
    durable_end: Offset,
    queue: VecDeque<Command>,
    writer_running: bool,
    /// Bytes written since the last fdatasync.
    unsynced_bytes: u64,
    /// When the oldest write not yet covered by an fdatasync completed
    /// (interval mode syncs once it is `interval_ms` old).
    unsynced_since: Option<Instant>,
    sync_timer_armed: bool,
    /// Rolled segments waiting to be sealed (fsync, shrink, index) by the
    /// background seal task, oldest first. Only `interval` and `never` roll
    /// this way; `always` seals inline, where the data is already synced.
    seals: VecDeque<PendingSeal>,
    seal_task_running: bool,
    /// The seal task, kept (not detached) so dropping the `Log` cancels it:
    /// a dropped log does no more I/O, as after a crash.
    seal_task: Option<glommio::Task<()>>,
    /// Waiting for `seals` to drain (flush, explicit roll, truncation, close).
    seal_waiters: Vec<oneshot::Sender<Result<(), String>>>,
    /// Highest offset an fdatasync of the active segment covered while seals
    /// were pending: it becomes durable once they are done.
    active_synced: Offset,
    /// fdatasync calls on segment data so far (group commit shares them).
    syncs: u64,
    /// Set when an fdatasync failed: the page cache state is unknown, so the
    /// log refuses writes until reopened (reads go on).
    failed: Option<String>,
    closed: bool,
    /// The cleaner's checkpoint (`cleaner.rs`): offsets below it were in a
    /// key map already. Lowered by truncation.
    first_dirty: Offset,
    /// A cleaning pass is running (one at a time per log).
    cleaning: bool,
    /// Truncation lowered `first_dirty` since the running pass began.
    first_dirty_lowered: bool,
    /// When the recovery point was last written (`recovery_point.rs`).
    recovery_point_written_ms: i64,
    /// Bumped by every change that may lower the recovery point
    /// (truncation): a write captured under an older generation is dropped.
    recovery_point_generation: u64,
    /// One recovery point write at a time, in order.
    recovery_point_turn: Rc<Semaphore>,
    /// `always`: fdatasyncs in flight at once, each for the groups written
    /// before it started (`SYNCS_IN_FLIGHT_MAX` permits; see `sync_group`).
    sync_slots: Rc<Semaphore>,
    /// `always`: resolves when the latest sync in flight has published its
    /// result (`true`: it succeeded); the next one publishes after it.
    last_sync: Option<oneshot::Receiver<bool>>,
}

/// `always`: most fdatasyncs of one log in flight at once. While one runs,
/// the writer goes on writing the appends that arrived meanwhile and starts
/// their sync at once, instead of holding them until the first is done: an
/// append waits for one sync, not for the end of another and then its own.
/// Results are published in order (see `sync_group`).
const SYNCS_IN_FLIGHT_MAX: u64 = 4;

/// A rolled segment the seal task has yet to make durable.
struct PendingSeal {
    base: Offset,
    /// Offset after its last batch.
    end: Offset,
    file: Rc<glommio::io::BufferedFile>,
    path: PathBuf,
    size: u64,
    index: Vec<u8>,
}

/// Most rolled segments waiting for the seal task; past this a roll seals
/// inline (backpressure when segments fill faster than the disk syncs them).
const PENDING_SEALS_MAX: usize = 4;

/// One partition's log. `!Send`: it lives on the shard that owns the partition.
pub struct Log {
    inner: Rc<RefCell<Inner>>,
    pending: Rc<Semaphore>,
}

impl Inner {
    /// The first segment's base, or the DeleteRecords low watermark when it
    /// is higher; never past the log end.
    fn log_start(&self) -> Offset {
        let first = self.segments.values().next().map_or(self.log_end, |s| s.base);
        first.max(self.start_floor).min(self.log_end)
    }
}

impl Log {
    /// Opens (or creates) the log in `dir` with the system clock, recovering
    /// the active segment after a crash. Must run inside a glommio executor.
    pub async fn open(dir: &Path, config: LogConfig) -> Result<Log, LogError> {
        Self::open_with_clock(dir, config, Rc::new(SystemClock)).await
    }

    /// As [`Log::open`], with an injected clock.
    pub async fn open_with_clock(dir: &Path, config: LogConfig, clock: Rc<dyn Clock>) -> Result<Log, LogError> {
        assert!(
            config.segment_bytes_max > batch::BATCH_HEADER_BYTES as u64,
            "segment_bytes_max too small"
        );
        assert!(
            config.segment_bytes_max <= u64::from(u32::MAX),
            "segment_bytes_max above 4 GiB"
        );
        assert!(
            config.pending_appends_max > 0 && config.write_bytes_max > 0,
            "bounds must be positive"
        );
        // The directory's own entry (and any parent created with it) must be
        // durable before anything in it is acknowledged.
        crate::durable::create_dir_durably(dir)?;
        // glommio opens files relative to no directory (`openat(-1, ..)`),
        // which only works for absolute paths.
        let dir = &std::path::absolute(dir).map_err(io_error("resolving log directory", dir))?;
        let mut bases = Vec::new();
        let mut cleaner_files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error("listing log directory", dir))? {
            let entry = entry.map_err(io_error("listing log directory", dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Leftovers of a crash: a small file's temporary copy
            // (`durable.rs`), a truncation's copy not yet renamed.
            if name.ends_with(".tmp") || name.ends_with(segment::TRUNCATING_SUFFIX) {
                segment::remove_if_exists(&entry.path())?;
            } else if let Some(base) = segment::parse_log_name(&name) {
                bases.push(base);
            } else if name.ends_with(segment::CLEANED_SUFFIX) || name.ends_with(segment::SWAP_SUFFIX) {
                cleaner_files.push(name.into_owned());
            }
        }
        // A cleaner's swap cut short: finished or undone before any
        // segment is read (`cleaner.rs`).
        segment::finish_interrupted_swaps(dir, &cleaner_files)?;
        bases.sort();
        // How far the data was known fsynced when the log last recorded it:
        // past it, recovery reads damage as a torn tail.
        let recovery_point = recovery_point::read(dir);
        let now_ms = clock.now_ms();
        let mut segments = BTreeMap::new();
        let mut expected: Option<Offset> = None;
        let mut bases = bases.into_iter().peekable();
        while let Some(base) = bases.next() {
            if let Some(expected) = expected {
                if expected != base {
                    return Err(LogError::Corrupt {
                        path: segment::log_path(dir, base),
                        position: Position(0),
                        reason: BatchError::OffsetGap { expected, found: base },
                    });
                }
            }
            let is_last = match bases.peek().copied() {
                None => true,
                Some(next_base) => {
                    let synced_to = RecoveryPoint::synced_in(recovery_point, base);
                    match Segment::open_sealed(dir, base, next_base, config.index_interval_bytes, synced_to).await? {
                        SealedOpen::Ready(segment) => {
                            expected = Some(segment.next_offset);
                            segments.insert(base, segment);
                            continue;
                        }
                        SealedOpen::Torn => {
                            // Rolled but not sealed when the process died, and
                            // torn: the log ends here. Later segments hold only
                            // data that was never durable; newest go first.
                            let later: Vec<Offset> = bases.by_ref().collect();
                            for doomed in later.iter().rev() {
                                tracing::warn!(base = doomed.0, "recovery removed a segment after a torn one");
                                segment::remove_if_exists(&segment::log_path(dir, *doomed))?;
                                segment::remove_if_exists(&segment::index_path(dir, *doomed))?;
                            }
                            sync_dir(dir).await?;
                            true
                        }
                    }
                }
            };
            assert!(is_last, "only the last segment is opened for appends");
            let synced_to = RecoveryPoint::synced_in(recovery_point, base);
            let (segment, torn) = Segment::open_active(
                dir,
                base,
                config.segment_bytes_max,
                config.index_interval_bytes,
                now_ms,
                synced_to,
            )
            .await?;
            if let Some(torn) = torn {
                tracing::warn!(
                    path = %segment.path.display(),
                    position = torn.position.0,
                    first_nonzero = torn.first_nonzero.0,
                    reason = %torn.reason,
                    "recovery cut a torn tail (bytes never made durable)"
                );
            }
            segments.insert(base, segment);
            break;
        }
        for segment in segments.values() {
            report_bad_ranges(segment);
        }
        if segments.is_empty() {
            let segment = Segment::create(dir, Offset(0), config.segment_bytes_max, now_ms).await?;
            segments.insert(Offset(0), segment);
        }
        // Every segment's name is durable before an append is acknowledged
        // (one the last run created and crashed before syncing included).
        sync_dir(dir).await?;
        for segment in segments.values_mut() {
            segment.entry_durable = true;
        }
        let log_end = segments.values().next_back().map_or(Offset(0), |s| s.next_offset);
        let start_floor = crate::start_offset::read(dir);
        let mut epochs = rebuild_epochs(&segments)?;
        let first_base = segments.values().next().map_or(log_end, |s| s.base);
        epochs.truncate_from_start(first_base.max(start_floor).min(log_end));
        let pending = Rc::new(Semaphore::new(config.pending_appends_max as u64));
        let inner = Inner {
            dir: dir.to_path_buf(),
            config,
            clock,
            segments,
            log_end,
            start_floor,
            epochs,
            // Recovery fsynced the active segment; sealed ones were fsynced at roll.
            durable_end: log_end,
            queue: VecDeque::new(),
            writer_running: false,
            unsynced_bytes: 0,
            unsynced_since: None,
            sync_timer_armed: false,
            seals: VecDeque::new(),
            seal_task_running: false,
            seal_task: None,
            seal_waiters: Vec::new(),
            active_synced: log_end,
            syncs: 0,
            failed: None,
            closed: false,
            first_dirty: crate::start_offset::read_file(dir, cleaner::CHECKPOINT),
            cleaning: false,
            first_dirty_lowered: false,
            recovery_point_written_ms: now_ms,
            recovery_point_generation: 0,
            recovery_point_turn: Rc::new(Semaphore::new(1)),
            sync_slots: Rc::new(Semaphore::new(SYNCS_IN_FLIGHT_MAX)),
            last_sync: None,
        };
        let inner = Rc::new(RefCell::new(inner));
        // Recovery fsynced the active segment: all of it is durable now.
        record_recovery_point(&inner).await?;
        Ok(Log { inner, pending })
    }

    /// Appends one or more record batches, concatenated as a Kafka client sends
    /// them. Each is validated (magic, length, CRC-32C) without decoding
    /// records; if any is invalid nothing is stored. Resolves once the batches
    /// are written, and with `Durability::Always` once they are fsynced.
    ///
    /// The partition leader epoch field is stored as sent (clients send -1);
    /// a leader stamps its own with [`Log::append_with_epoch`].
    pub async fn append(&self, records: Bytes) -> Result<AppendInfo, LogError> {
        let batches = self.prepare(records)?;
        self.enqueue(batches, OffsetSource::Assigned).await
    }

    /// As [`Log::append`], and writes `leader_epoch` into every batch's
    /// partition leader epoch field (outside the CRC, as the base offset), as
    /// a Kafka leader does. The epoch cache then records where `leader_epoch`
    /// began if it is newer than the latest epoch.
    ///
    /// # Panics
    /// If `leader_epoch` is negative: leader epochs start at 0.
    pub async fn append_with_epoch(&self, records: Bytes, leader_epoch: i32) -> Result<AppendInfo, LogError> {
        assert!(leader_epoch >= 0, "leader epochs start at 0");
        let mut batches = self.prepare(records)?;
        for batch in &mut batches {
            batch.header.partition_leader_epoch = leader_epoch;
        }
        self.enqueue(batches, OffsetSource::Assigned).await
    }

    /// Appends whole batches copied from the leader's log (a follower's Fetch
    /// response), keeping their base offsets and leader epochs: stored byte
    /// for byte. Each batch is validated as [`Log::append`] does (CRC-32C
    /// included); the first must start at the log end when the writer gets
    /// to it and each next one right after the one before, or the append fails
    /// with [`LogError::OffsetMismatch`] and nothing is stored. Durability as
    /// for `append` (with `Always`, resolves after an fsync shared with other
    /// queued appends).
    ///
    /// A Fetch response may end in a partial batch: trailing bytes that are
    /// not a whole batch are ignored. Returns `None`, changing nothing, when
    /// there is no whole batch at all (the caller fetches again from
    /// [`Log::log_end`]; if that keeps returning the same bytes, the batch is
    /// larger than what the fetch asked for). The whole batches of one call
    /// must fit in a segment (`TooLarge` otherwise).
    pub async fn append_replicated(&self, records: Bytes) -> Result<Option<AppendInfo>, LogError> {
        let batches = self.prepare_replicated(&records)?;
        if batches.is_empty() {
            return Ok(None);
        }
        self.enqueue(batches, OffsetSource::Carried).await.map(Some)
    }

    async fn enqueue(&self, batches: Vec<PreparedBatch>, offsets: OffsetSource) -> Result<AppendInfo, LogError> {
        assert!(!batches.is_empty(), "an append has at least one batch");
        let _permit = self.pending.acquire_permit(1).await.map_err(|_| LogError::Closed)?;
        let (reply, answer) = oneshot::channel();
        self.submit(Command::Append(QueuedAppend {
            batches,
            offsets,
            reply,
        }))?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    fn prepare(&self, records: Bytes) -> Result<Vec<PreparedBatch>, LogError> {
        if records.is_empty() {
            return Err(BatchError::Empty.into());
        }
        self.check_fits(records.len())?;
        let mut batches = Vec::new();
        let mut at = 0usize;
        while at < records.len() {
            let rest = records.get(at..).unwrap_or_default();
            let header = batch::validate(rest)?;
            let total = header.total_bytes();
            batches.push(PreparedBatch {
                bytes: records.slice(at..at + total),
                header,
            });
            at += total;
        }
        let offsets: i64 = batches.iter().map(|b| b.header.offset_count()).sum();
        if offsets - 1 > SEGMENT_OFFSET_SPAN_MAX {
            return Err(BatchError::TooManyOffsets {
                offsets,
                offsets_max: SEGMENT_OFFSET_SPAN_MAX + 1,
            }
            .into());
        }
        Ok(batches)
    }

    /// The whole batches at the front of `records`, validated and checked to
    /// follow each other's offsets; a trailing partial batch is left out, and
    /// so are the batches past what one segment's offsets can span (the
    /// fetcher fetches them again from the new log end).
    fn prepare_replicated(&self, records: &Bytes) -> Result<Vec<PreparedBatch>, LogError> {
        let mut batches: Vec<PreparedBatch> = Vec::new();
        let mut at = 0usize;
        while at < records.len() {
            let rest = records.get(at..).unwrap_or_default();
            // A leader's log may be compacted: its batches are stored ones.
            let header = match batch::validate_stored(rest) {
                Ok(header) => header,
                // Only the last batch can be short of bytes: a partial tail.
                Err(BatchError::Truncated { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            if let Some(previous) = batches.last() {
                let expected = previous.header.next_offset();
                if header.base_offset != expected {
                    return Err(LogError::OffsetMismatch {
                        expected,
                        got: header.base_offset,
                    });
                }
            }
            if header.base_offset.0.checked_add(header.offset_count()).is_none() {
                // No log reaches this offset: it cannot continue this one.
                return Err(LogError::OffsetMismatch {
                    expected: self.log_end(),
                    got: header.base_offset,
                });
            }
            let first = batches.first().map_or(header.base_offset, |b| b.header.base_offset);
            if header.last_offset().0 - first.0 > SEGMENT_OFFSET_SPAN_MAX {
                break;
            }
            let total = header.total_bytes();
            batches.push(PreparedBatch {
                bytes: records.slice(at..at + total),
                header,
            });
            at += total;
        }
        self.check_fits(at)?;
        assert!(at <= records.len(), "whole batches lie within the bytes given");
        Ok(batches)
    }

    /// One append must fit in a fresh segment.
    fn check_fits(&self, append_bytes: usize) -> Result<(), LogError> {
        let segment_bytes_max = self.inner.borrow().config.segment_bytes_max;
        if append_bytes as u64 > segment_bytes_max {
            return Err(BatchError::TooLarge {
                batch_bytes: append_bytes,
                segment_bytes_max,
            }
            .into());
        }
        Ok(())
    }

    fn submit(&self, command: Command) -> Result<(), LogError> {
        submit(&self.inner, command)
    }

    /// Syncs everything written so far; returns the durable end offset.
    pub async fn flush(&self) -> Result<Offset, LogError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Command::Flush {
            reply: Some(reply),
            wait_seals: true,
        })?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Seals the active segment and starts a new one (no-op when it is empty).
    pub async fn roll(&self) -> Result<(), LogError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Command::Roll { reply })?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Removes every batch holding an offset ≥ `offset`. A batch that contains
    /// `offset` is removed whole, as Kafka does; returns the new log end.
    pub async fn truncate_to(&self, offset: Offset) -> Result<Offset, LogError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Command::Truncate { offset, reply })?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Deletes whole sealed segments past the retention bounds; returns how many.
    pub async fn apply_retention(&self) -> Result<usize, LogError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Command::Retention { reply })?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Kafka's DeleteRecords: makes `offset` the log start (records below it
    /// are no longer served), stored durably before the answer, and deletes
    /// the sealed segments wholly below it. An offset at or below the log
    /// start changes nothing; one past the log end is
    /// [`LogError::OffsetOutOfRange`]. Returns the log start after.
    pub async fn delete_records_before(&self, offset: Offset) -> Result<Offset, LogError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Command::DeleteBefore { offset, reply })?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Takes the bounds of `config` that may change while the log is open:
    /// segment size and age, retention, durability (a change of durability
    /// first syncs what was written, so nothing visible becomes invisible).
    /// The active segment keeps its size until it rolls; an empty one is
    /// made again at a larger size.
    ///
    /// # Panics
    /// If `segment_bytes_max` is outside the bounds [`Log::open`] asserts.
    pub async fn reconfigure(&self, config: LogConfig) -> Result<(), LogError> {
        assert!(
            config.segment_bytes_max > batch::BATCH_HEADER_BYTES as u64
                && config.segment_bytes_max <= u64::from(u32::MAX),
            "segment_bytes_max out of bounds"
        );
        let (reply, answer) = oneshot::channel();
        self.submit(Command::Reconfigure { config, reply })?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Flushes and refuses further commands.
    pub async fn close(&self) -> Result<Offset, LogError> {
        let end = self.flush().await?;
        record_recovery_point(&self.inner).await?;
        self.inner.borrow_mut().closed = true;
        self.pending.close();
        Ok(end)
    }

    /// One compaction pass (`cleaner.rs`): if the dirty share of the
    /// cleanable segments reaches `config.min_cleanable_dirty_ratio` (or a
    /// dirty segment is older than `max_compaction_lag_ms`), rewrites them
    /// keeping the latest record per key and swaps each cleaned copy in,
    /// crash-safely. Returns `None` when there was nothing to do (or a pass
    /// is running already). Reads and appends go on meanwhile; the work
    /// yields to the shard's other tasks every [`cleaner::CLEAN_SLICE_BYTES`].
    pub async fn clean(&self, config: &CleanerConfig) -> Result<Option<CleanReport>, LogError> {
        self.clean_pass_guarded(config, None).await
    }

    /// [`clean`](Self::clean) with what the log's owner knows of its
    /// transactions: the pass cleans only segments below
    /// `outcomes.stable_end`, removes the records of aborted transactions,
    /// and compacts committed transactional records like any other (see
    /// `cleaner.rs`, "What a pass keeps"). Without outcomes, transactional
    /// batches stay whole.
    pub async fn clean_transactions(
        &self,
        config: &CleanerConfig,
        outcomes: &TransactionOutcomes,
    ) -> Result<Option<CleanReport>, LogError> {
        self.clean_pass_guarded(config, Some(outcomes)).await
    }

    async fn clean_pass_guarded(
        &self,
        config: &CleanerConfig,
        outcomes: Option<&TransactionOutcomes>,
    ) -> Result<Option<CleanReport>, LogError> {
        {
            let mut state = self.inner.borrow_mut();
            // A failed log (its page cache state unknown) is left alone
            // until it is reopened, as its appends are.
            if state.cleaning || state.closed || state.failed.is_some() {
                return Ok(None);
            }
            state.cleaning = true;
            state.first_dirty_lowered = false;
        }
        let result = self.clean_pass(config, outcomes).await;
        self.inner.borrow_mut().cleaning = false;
        result
    }

    async fn clean_pass(
        &self,
        config: &CleanerConfig,
        outcomes: Option<&TransactionOutcomes>,
    ) -> Result<Option<CleanReport>, LogError> {
        let (views, first_dirty, now_ms, dir) = {
            let state = self.inner.borrow();
            let now_ms = state.clock.now_ms();
            let lag_floor_ms = now_ms.saturating_sub(config.min_compaction_lag_ms);
            let last = state.segments.keys().next_back().copied();
            let views: Vec<SegmentView> = state
                .segments
                .values()
                .take_while(|s| Some(s.base) != last)
                .map_while(|s| s.view().filter(|v| v.max_timestamp_ms <= lag_floor_ms))
                // Only ended transactions are judged: nothing past the LSO.
                .take_while(|v| outcomes.is_none_or(|o| v.next_offset <= o.stable_end))
                .collect();
            // Sealed means fsynced: a record is only ever removed for a
            // later one that is durable.
            assert!(
                views.iter().all(|v| v.next_offset <= state.durable_end),
                "only durable segments are cleaned"
            );
            let first_base = views.first().map_or(state.log_end, |v| v.base);
            let first_dirty = state.first_dirty.max(first_base);
            (views, first_dirty, now_ms, state.dir.clone())
        };
        let total_bytes: u64 = views.iter().map(SegmentView::size).sum();
        let dirty: Vec<&SegmentView> = views.iter().filter(|v| v.next_offset > first_dirty).collect();
        let dirty_bytes: u64 = dirty.iter().map(|v| v.size()).sum();
        if dirty_bytes == 0 {
            return Ok(None);
        }
        let overdue = dirty
            .first()
            .is_some_and(|v| v.max_timestamp_ms < now_ms.saturating_sub(config.max_compaction_lag_ms));
        #[expect(clippy::cast_precision_loss, reason = "a ratio of byte counts")]
        let ratio = dirty_bytes as f64 / total_bytes as f64;
        if ratio < config.min_cleanable_dirty_ratio && !overdue {
            return Ok(None);
        }
        // The key map, whole segments at a time, within its bound.
        let mut map = KeyMap::default();
        let judge = TxnJudge::new(outcomes);
        let mut map_end = first_dirty;
        for view in dirty {
            if map.bytes() >= cleaner::KEY_MAP_BYTES_MAX {
                break;
            }
            map.observe_segment(&view.data, first_dirty, &judge)
                .map_err(|reason| corrupt_view(view, reason))?;
            view.check()?;
            map_end = view.next_offset;
            glommio::yield_if_needed().await;
        }
        assert!(map_end > first_dirty, "a pass maps at least one dirty segment");
        let cleaned: Vec<&SegmentView> = views.iter().filter(|v| v.base < map_end).collect();
        let data: Vec<Bytes> = cleaned.iter().map(|v| v.data.clone()).collect();
        let facts = PassFacts::gather(&data, now_ms, config.delete_retention_ms, judge)
            .map_err(|reason| cleaned.first().map_or(LogError::Closed, |v| corrupt_view(v, reason)))?;
        let mut report = CleanReport {
            first_dirty: map_end,
            ..CleanReport::default()
        };
        for view in cleaned {
            let (bytes, changed, counts) = rewrite_segment(view, &map, &facts).await?;
            report.segments_read += 1;
            report.bytes_before += view.size();
            report.records_removed += counts.records_removed;
            report.tombstones_removed += counts.tombstones_removed;
            if !changed {
                report.bytes_after += view.size();
                continue;
            }
            let cleaned_bytes = bytes.len() as u64;
            segment::write_cleaned(&dir, view.base, bytes).await?;
            let (reply, answer) = oneshot::channel();
            self.submit(Command::InstallCleaned {
                view: view.clone(),
                reply,
            })?;
            if answer.await.map_err(|_| LogError::Closed)?? {
                report.segments_swapped += 1;
                report.bytes_after += cleaned_bytes;
            } else {
                // Truncated or deleted meanwhile: the pass stops here.
                report.bytes_after += view.size();
                return Ok(Some(report));
            }
        }
        let checkpoint = {
            let mut state = self.inner.borrow_mut();
            // A truncation meanwhile lowered it: keep the lower.
            state.first_dirty = if state.first_dirty_lowered {
                state.first_dirty.min(map_end)
            } else {
                map_end
            };
            state.first_dirty
        };
        crate::start_offset::write_file(&dir, cleaner::CHECKPOINT, checkpoint)?;
        Ok(Some(report))
    }

    /// The cleaner's checkpoint: offsets below it were in a key map.
    pub fn first_dirty_offset(&self) -> Offset {
        self.inner.borrow().first_dirty
    }

    /// First offset still stored.
    pub fn log_start(&self) -> Offset {
        self.inner.borrow().log_start()
    }

    /// Offset the next append will get (every offset below it is written).
    pub fn log_end(&self) -> Offset {
        self.inner.borrow().log_end
    }

    /// Every offset below this is fsynced.
    pub fn durable_end(&self) -> Offset {
        self.inner.borrow().durable_end
    }

    /// Offset below which batches may be shown to readers: with
    /// `Durability::Always`, what is fsynced (a reader never sees a batch
    /// that a crash could still take away, nor one whose fdatasync failed);
    /// otherwise everything written.
    pub fn visible_end(&self) -> Offset {
        let inner = self.inner.borrow();
        let end = match inner.config.durability {
            Durability::Always => inner.durable_end,
            Durability::Interval { .. } | Durability::Never => inner.log_end,
        };
        assert!(end <= inner.log_end, "nothing past the log end is visible");
        end
    }

    /// The newest leader epoch among the stored batches (-1 for batches
    /// written without one); `None` for a log without batches.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.inner.borrow().epochs.latest_epoch()
    }

    /// Kafka's OffsetsForLeaderEpoch answer: the largest cached epoch ≤
    /// `epoch`, and the offset it ended at — the start of the next cached
    /// epoch, or [`Log::log_end`] when it is the latest. `None` when `epoch`
    /// is below every cached epoch or the cache is empty (the caller answers
    /// UNDEFINED_EPOCH, -1 / -1).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, Offset)> {
        let inner = self.inner.borrow();
        let answer = inner.epochs.end_offset_for(epoch, inner.log_end);
        assert!(
            answer.is_none_or(|(_, end)| end <= inner.log_end),
            "an epoch ends past the log end"
        );
        answer
    }

    /// The leader epoch cache: where each epoch starts, ascending (for tools
    /// and tests; replication asks [`Log::end_offset_for_epoch`]).
    pub fn epoch_starts(&self) -> Vec<EpochStart> {
        self.inner.borrow().epochs.entries().to_vec()
    }

    /// Bytes of batches stored.
    pub fn size_bytes(&self) -> u64 {
        self.inner.borrow().segments.values().map(|s| s.size).sum()
    }

    /// Number of segments (sealed and active).
    pub fn segment_count(&self) -> usize {
        self.inner.borrow().segments.len()
    }

    /// How many times appended data was fdatasynced (a probe for group commit).
    pub fn sync_count(&self) -> u64 {
        self.inner.borrow().syncs
    }

    /// Directory of the log.
    pub fn dir(&self) -> PathBuf {
        self.inner.borrow().dir.clone()
    }

    /// Reads whole batches from the one containing `from`, up to `bytes_max`
    /// (at least one batch is returned when any is available, as Kafka does),
    /// stopping before `end` (use `log_end()` or `durable_end()`).
    pub fn read(&self, from: Offset, bytes_max: usize, end: Offset) -> Result<ReadBatches, LogError> {
        let inner = self.inner.borrow();
        let log_start = inner.log_start();
        if from < log_start || from > inner.log_end {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                log_start,
                log_end: inner.log_end,
            });
        }
        let end = end.min(inner.log_end);
        let mut result = ReadBatches {
            chunks: Vec::new(),
            next_offset: from,
        };
        let mut bytes_taken = 0usize;
        let bounds = ReadBounds { end, bytes_max };
        for segment in inner
            .segments
            .range(..=from)
            .next_back()
            .into_iter()
            .map(|(_, s)| s)
            .chain(
                inner
                    .segments
                    .range((std::ops::Bound::Excluded(from), std::ops::Bound::Unbounded))
                    .map(|(_, s)| s),
            )
        {
            if result.next_offset >= end {
                break;
            }
            let Some((start, _)) = segment.find_batch(result.next_offset)? else {
                continue;
            };
            if read_segment(segment, start, bounds, &mut result, &mut bytes_taken)? {
                break; // stopped by a bound or a bad range, not by the segment's end
            }
        }
        crate::stats::record_read(result.bytes() as u64);
        Ok(result)
    }

    /// Calls `f` with the header of every stored batch, oldest first (walks
    /// headers only; records are not touched). Used to rebuild per-producer
    /// state when a partition is opened.
    pub fn for_each_batch_header(&self, mut f: impl FnMut(&BatchHeader)) -> Result<(), LogError> {
        let inner = self.inner.borrow();
        for segment in inner.segments.values() {
            segment.for_each_header(|header, _| f(header))?;
        }
        Ok(())
    }

    /// The ranges recovery kept out of the log (damaged in the middle of a
    /// segment, or refused batches an older version stored), with the base
    /// offset of the segment holding each.
    pub fn bad_ranges(&self) -> Vec<(Offset, BadRange)> {
        let inner = self.inner.borrow();
        let mut ranges = Vec::new();
        for segment in inner.segments.values() {
            ranges.extend(segment.bad.iter().map(|range| (segment.base, range.clone())));
        }
        ranges
    }

    /// The first record with a timestamp ≥ `timestamp_ms` (ListOffsets by
    /// time); `None` when every stored timestamp is older.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<TimestampOffset>, LogError> {
        let inner = self.inner.borrow();
        for segment in inner.segments.values() {
            if let Some(found) = segment.find_time(timestamp_ms)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp (ListOffsets -3, KIP-734): the
    /// first of them if several share it; `None` for an empty log.
    pub fn offset_of_max_timestamp(&self) -> Result<Option<TimestampOffset>, LogError> {
        let inner = self.inner.borrow();
        let mut best: Option<TimestampOffset> = None;
        for segment in inner.segments.values() {
            if let Some(found) = segment.max_timestamp_record()? {
                if best.is_none_or(|b| found.timestamp_ms > b.timestamp_ms) {
                    best = Some(found);
                }
            }
        }
        Ok(best)
    }
}

/// Where a read must stop: before offset `end`, and once `bytes_max` bytes
/// are taken (after at least one batch).
#[derive(Debug, Clone, Copy)]
struct ReadBounds {
    end: Offset,
    bytes_max: usize,
}

/// Adds to `result` the whole batches of `segment` from the one at `start`
/// on, as slices of its mapping: one chunk per run between bad ranges. A bad
/// range holding no offset is skipped; one holding offsets stops the read
/// (a read from its first offset then fails). Returns whether the read
/// stopped before the segment's end.
fn read_segment(
    segment: &Segment,
    start: Position,
    bounds: ReadBounds,
    result: &mut ReadBatches,
    bytes_taken: &mut usize,
) -> Result<bool, LogError> {
    // An I/O error under the mapping fails the read, whatever it found.
    segment.with_data(|data| {
        let mut chunk_start = start.0;
        let mut position = start.0;
        let mut stopped = false;
        while position < segment.size {
            match segment.stored_at(data, position)? {
                Stored::Batch(header) => {
                    let total = header.total_bytes();
                    let full = *bytes_taken > 0 && *bytes_taken + total > bounds.bytes_max;
                    if header.base_offset >= bounds.end || full {
                        stopped = true;
                        break;
                    }
                    if header.next_offset() <= result.next_offset {
                        // Stored bytes changed on disk after recovery checked
                        // them (a page read back differently): an error, not an
                        // assertion on bytes from disk.
                        return Err(LogError::Corrupt {
                            path: segment.path.clone(),
                            position: Position(position),
                            reason: BatchError::OffsetGap {
                                expected: result.next_offset,
                                found: header.base_offset,
                            },
                        });
                    }
                    *bytes_taken += total;
                    position += total as u64;
                    result.next_offset = header.next_offset();
                }
                Stored::Bad(range) if range.first_offset == range.next_offset => {
                    push_chunk(segment, data, chunk_start..position, result);
                    position = range.end.0;
                    chunk_start = position;
                }
                Stored::Bad(_) => {
                    stopped = true;
                    break;
                }
            }
        }
        push_chunk(segment, data, chunk_start..position, result);
        Ok(stopped)
    })
}

/// Adds the bytes `range` of a segment's data to `result` (nothing if empty).
fn push_chunk(segment: &Segment, data: &Bytes, range: std::ops::Range<u64>, result: &mut ReadBatches) {
    if range.end <= range.start {
        return;
    }
    segment.prefetch(range.start, range.end - range.start);
    if let (Ok(from), Ok(to)) = (usize::try_from(range.start), usize::try_from(range.end)) {
        result.chunks.push(data.slice(from..to));
    }
}

/// Queues a command for the writer task, starting it if it is idle.
fn submit(inner: &Rc<RefCell<Inner>>, command: Command) -> Result<(), LogError> {
    let spawn_writer = {
        let mut state = inner.borrow_mut();
        if state.closed {
            return Err(LogError::Closed);
        }
        state.queue.push_back(command);
        !std::mem::replace(&mut state.writer_running, true)
    };
    if spawn_writer {
        glommio::spawn_local(writer_loop(Rc::clone(inner))).detach();
    }
    Ok(())
}

/// Why the writer stops taking a command into the current group.
fn group_fits(group_bytes: usize, next: &Command, write_bytes_max: usize) -> bool {
    match next {
        Command::Append(append) => group_bytes + append.bytes() <= write_bytes_max,
        _ => false,
    }
}

async fn writer_loop(inner: Rc<RefCell<Inner>>) {
    loop {
        let command = {
            let mut state = inner.borrow_mut();
            match state.queue.pop_front() {
                Some(command) => command,
                None => {
                    state.writer_running = false;
                    return;
                }
            }
        };
        match command {
            Command::Append(append) => {
                if inner.borrow().config.durability == Durability::Always {
                    // Let the appenders just acknowledged queue their next
                    // append first, so they share this group's fsync instead
                    // of splitting into alternating groups.
                    futures_lite::future::yield_now().await;
                }
                let mut group = vec![append];
                {
                    let mut state = inner.borrow_mut();
                    let write_bytes_max = state.config.write_bytes_max;
                    let mut group_bytes: usize = group.iter().map(QueuedAppend::bytes).sum();
                    while let Some(next) = state.queue.front() {
                        if !group_fits(group_bytes, next, write_bytes_max) {
                            break;
                        }
                        if let Some(Command::Append(next)) = state.queue.pop_front() {
                            group_bytes += next.bytes();
                            group.push(next);
                        }
                    }
                }
                write_group(&inner, group).await;
            }
            Command::Flush { reply, wait_seals } => {
                drain_syncs(&inner).await;
                let mut result = sync_active(&inner).await;
                if wait_seals && result.is_ok() {
                    result = drain_seals(&inner).await.map(|()| inner.borrow().durable_end);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Command::Roll { reply } => {
                drain_syncs(&inner).await;
                let result = roll(&inner, RollMode::Inline).await;
                let _ = reply.send(result);
            }
            Command::Truncate { offset, reply } => {
                drain_syncs(&inner).await;
                let result = truncate(&inner, offset).await;
                let _ = reply.send(result);
            }
            Command::Retention { reply } => {
                drain_syncs(&inner).await;
                let result = retention(&inner).await;
                let _ = reply.send(result);
            }
            Command::DeleteBefore { offset, reply } => {
                drain_syncs(&inner).await;
                let result = delete_before(&inner, offset).await;
                let _ = reply.send(result);
            }
            Command::Reconfigure { config, reply } => {
                drain_syncs(&inner).await;
                let result = reconfigure(&inner, config).await;
                let _ = reply.send(result);
            }
            Command::InstallCleaned { view, reply } => {
                let result = install_cleaned(&inner, view).await;
                let _ = reply.send(result);
            }
        }
    }
}

type Group = Vec<QueuedAppend>;

fn fail_all(group: Group, error: &LogError) {
    for append in group {
        let _ = append.reply.send(Err(error.duplicate()));
    }
}

/// Gives each append of a group its offsets from `log_end` on: assigns them,
/// or checks that carried ones continue the log. A replicated append that
/// does not is answered now and left out. Returns the appends kept and the
/// first and last offset of each.
///
/// With `append_time_ms` (a LogAppendTime log) each assigned batch is also
/// stamped: timestamp type LogAppendTime and that max timestamp, written
/// into its bytes (CRC included) when it is assembled.
fn place_offsets(group: Group, log_end: Offset, append_time_ms: Option<i64>) -> (Group, Vec<(Offset, Offset)>) {
    let mut next = log_end;
    let mut infos = Vec::with_capacity(group.len());
    let mut accepted = Vec::with_capacity(group.len());
    for mut append in group {
        let first = next;
        match append.offsets {
            OffsetSource::Assigned => {
                for batch in append.batches.iter_mut() {
                    batch.header.base_offset = next;
                    next = batch.header.next_offset();
                    if let Some(now_ms) = append_time_ms {
                        batch.header.attributes |= batch::ATTRIBUTE_LOG_APPEND_TIME;
                        batch.header.max_timestamp_ms = now_ms;
                    }
                }
            }
            OffsetSource::Carried => {
                let got = append.batches.first().map_or(next, |b| b.header.base_offset);
                if got != next {
                    let _ = append.reply.send(Err(LogError::OffsetMismatch { expected: next, got }));
                    continue;
                }
                for batch in &append.batches {
                    assert_eq!(
                        batch.header.base_offset, next,
                        "carried offsets were checked to be contiguous"
                    );
                    next = batch.header.next_offset();
                }
            }
        }
        assert!(next > first, "an append stores at least one offset");
        infos.push((first, Offset(next.0 - 1)));
        accepted.push(append);
    }
    assert_eq!(accepted.len(), infos.len(), "one offset range per kept append");
    (accepted, infos)
}

async fn write_group(inner: &Rc<RefCell<Inner>>, group: Group) {
    if let Some(reason) = inner.borrow().failed.clone() {
        return fail_all(group, &LogError::Failed { reason });
    }
    // Offsets first, so a rejected replicated append causes no roll.
    let (placed_from, append_time_ms) = {
        let state = inner.borrow();
        let stamp = state.config.log_append_time.then(|| state.clock.now_ms());
        (state.log_end, stamp)
    };
    let (group, infos) = place_offsets(group, placed_from, append_time_ms);
    if group.is_empty() {
        return;
    }
    let group_bytes: u64 = group.iter().map(|a| a.bytes() as u64).sum();
    let group_last = infos.last().map_or(placed_from, |(_, last)| *last);
    // Roll first if the group does not fit, in bytes or in the offsets the
    // index can address, or the active segment is too old.
    let must_roll = {
        let state = inner.borrow();
        let config = &state.config;
        let now_ms = state.clock.now_ms();
        state.segments.values().next_back().is_some_and(|active| {
            active.size > 0
                && (active.bytes_free(config.segment_bytes_max) < group_bytes
                    || !active.offsets_fit(group_last)
                    || now_ms.saturating_sub(active.created_ms) >= config.segment_ms_max)
        })
    };
    if must_roll {
        // The syncs in flight cover the segment being closed: they finish
        // (and acknowledge) before it is sealed.
        drain_syncs(inner).await;
        let mode = match inner.borrow().config.durability {
            Durability::Always => RollMode::Inline,
            _ => RollMode::Background,
        };
        if let Err(e) = roll(inner, mode).await {
            return fail_all(group, &e);
        }
    }
    // A group bigger than a fresh segment, in bytes or offsets: write its
    // appends one at a time (each is placed again, after the ones before it
    // were written). One append always fits (`prepare` checks both).
    let too_big =
        group_bytes > inner.borrow().config.segment_bytes_max || group_last.0 - placed_from.0 > SEGMENT_OFFSET_SPAN_MAX;
    if too_big && group.len() > 1 {
        for single in group {
            Box::pin(write_group(inner, vec![single])).await;
        }
        return;
    }
    let (file, path, start, base_offset, writes) = {
        let state = inner.borrow();
        let Some(active) = state.segments.values().next_back() else {
            drop(state);
            return fail_all(group, &LogError::Closed);
        };
        (
            active.file(),
            active.path.clone(),
            active.size,
            state.log_end,
            state.config.writes,
        )
    };
    assert_eq!(base_offset, placed_from, "a roll does not move log_end");
    let next = infos.last().map_or(base_offset, |(_, last)| Offset(last.0 + 1));
    let all: Vec<PreparedBatch> = group
        .iter()
        .flat_map(|a| a.batches.iter())
        .map(|b| PreparedBatch {
            bytes: b.bytes.clone(),
            header: b.header,
        })
        .collect();
    if let Err(e) = segment::write_batches(&file, &path, start, &all, writes).await {
        tracing::warn!(path = %path.display(), error = %e, "append failed; nothing stored");
        return fail_all(group, &e);
    }
    let durability = {
        let mut state = inner.borrow_mut();
        let interval = state.config.index_interval_bytes;
        if let Some(active) = state.segments.values_mut().next_back() {
            active.record_appended(&all, interval);
        }
        assert_eq!(state.log_end, base_offset, "only the writer moves log_end");
        state.log_end = next;
        for batch in &all {
            state
                .epochs
                .observe(batch.header.partition_leader_epoch, batch.header.base_offset);
        }
        state.unsynced_bytes += group_bytes;
        state.unsynced_since.get_or_insert_with(Instant::now);
        state.config.durability
    };
    let durable = match durability {
        // Acknowledged by its sync's task; the writer goes on meanwhile.
        Durability::Always => return sync_group(inner, group, infos).await,
        Durability::Interval { bytes, interval_ms } => {
            if inner.borrow().unsynced_bytes >= bytes {
                // A failed sync marks the log failed; the data itself was written.
                let _ = sync_active(inner).await;
            } else {
                arm_sync_timer(inner, interval_ms);
            }
            false
        }
        Durability::Never => false,
    };
    start_writeback(inner);
    let log_start = inner.borrow().log_start();
    acknowledge(group, infos, log_start, durable);
}

/// Answers each append of a written group with its offsets.
fn acknowledge(group: Group, infos: Vec<(Offset, Offset)>, log_start: Offset, durable: bool) {
    assert_eq!(group.len(), infos.len(), "one offset range per append");
    for (append, (first, last)) in group.into_iter().zip(infos) {
        let log_append_time_ms = append
            .batches
            .first()
            .filter(|b| append.offsets == OffsetSource::Assigned && b.header.log_append_time())
            .map(|b| b.header.max_timestamp_ms);
        let _ = append.reply.send(Ok(AppendInfo {
            base_offset: first,
            last_offset: last,
            log_start,
            durable,
            log_append_time_ms,
        }));
    }
}

/// Without a sync per append, start writing back every this many bytes of the
/// active segment (RocksDB's `bytes_per_sync`): otherwise dirty pages pile up
/// to the kernel's dirty limit (≈ 1 GiB here) and the kernel then stalls the
/// writer for 0.3–0.5 s while it drains them all.
pub(crate) const WRITEBACK_CHUNK_BYTES: u64 = 4 << 20;

/// Under `Interval`/`Never`: asks the kernel to start writing back the
/// active segment's newest `WRITEBACK_CHUNK_BYTES` or more
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: no wait for completion, no
/// durability promise). It runs on the executor's blocking-thread pool, as
/// the call can wait for a full device queue; the task holds the file open.
fn start_writeback(inner: &Rc<RefCell<Inner>>) {
    let due = inner
        .borrow_mut()
        .segments
        .values_mut()
        .next_back()
        .and_then(|active| active.writeback_due(WRITEBACK_CHUNK_BYTES));
    let Some((file, from, len)) = due else { return };
    let (Ok(offset), Ok(nbytes)) = (i64::try_from(from), i64::try_from(len)) else {
        return;
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&*file);
    glommio::spawn_local(async move {
        let started = glommio::executor()
            .spawn_blocking(move || {
                // SAFETY: `fd` stays open: `file` is held by this task until the call returns.
                let result = unsafe { libc::sync_file_range(fd, offset, nbytes, libc::SYNC_FILE_RANGE_WRITE) };
                if result == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
            .await;
        drop(file);
        if let Err(error) = started {
            tracing::debug!(%error, "sync_file_range failed (the kernel writes back later)");
        }
    })
    .detach();
}

/// Arms the interval timer: it syncs once the oldest unsynced write is
/// `interval_ms` old, and re-arms for the rest if a size-triggered sync came
/// in between.
fn arm_sync_timer(inner: &Rc<RefCell<Inner>>, interval_ms: u64) {
    let wait = {
        let mut state = inner.borrow_mut();
        if state.sync_timer_armed {
            return;
        }
        let Some(since) = state.unsynced_since else { return };
        state.sync_timer_armed = true;
        Duration::from_millis(interval_ms).saturating_sub(since.elapsed())
    };
    let weak = Rc::downgrade(inner);
    glommio::spawn_local(async move {
        glommio::timer::sleep(wait).await;
        if let Some(inner) = weak.upgrade() {
            let due = {
                let mut state = inner.borrow_mut();
                state.sync_timer_armed = false;
                state
                    .unsynced_since
                    .map(|since| since.elapsed() >= Duration::from_millis(interval_ms))
            };
            match due {
                Some(true) => {
                    let _ = submit(
                        &inner,
                        Command::Flush {
                            reply: None,
                            wait_seals: false,
                        },
                    );
                }
                Some(false) => arm_sync_timer(&inner, interval_ms),
                None => {}
            }
        }
    })
    .detach();
}

/// What one fdatasync of the active segment covers, taken before it starts.
struct SyncPlan {
    file: Rc<glommio::io::BufferedFile>,
    path: PathBuf,
    /// Everything below it was written before the sync started.
    upto: Offset,
    point: Option<RecoveryPoint>,
}

/// What `state` needs for everything written to be durable.
enum SyncNeed {
    /// Nothing: all of it is synced already, up to this end.
    Synced(Offset),
    /// One fdatasync.
    Sync(SyncPlan),
}

/// The sync `state` needs now.
fn plan_sync(state: &Inner) -> Result<SyncNeed, LogError> {
    if let Some(reason) = state.failed.clone() {
        return Err(LogError::Failed { reason });
    }
    let seals_pending = !state.seals.is_empty() || state.seal_task_running;
    if state.durable_end == state.log_end || (seals_pending && state.active_synced == state.log_end) {
        return Ok(SyncNeed::Synced(state.durable_end));
    }
    let Some(active) = state.segments.values().next_back() else {
        return Ok(SyncNeed::Synced(state.durable_end));
    };
    Ok(SyncNeed::Sync(SyncPlan {
        file: active.file(),
        path: active.path.clone(),
        upto: state.log_end,
        point: synced_extent(state),
    }))
}

/// fdatasync of the active segment; moves `durable_end` to what was written
/// before the sync started. A failed sync fails the log.
async fn sync_active(inner: &Rc<RefCell<Inner>>) -> Result<Offset, LogError> {
    let plan = match plan_sync(&inner.borrow())? {
        SyncNeed::Sync(plan) => plan,
        SyncNeed::Synced(durable_end) => return Ok(durable_end),
    };
    let result = segment::sync_file(&plan.file, &plan.path).await;
    publish_sync(inner, plan, result)
}

/// Applies a finished sync's result: `durable_end` (and the recovery point,
/// when due) on success; the log fails on error.
fn publish_sync(inner: &Rc<RefCell<Inner>>, plan: SyncPlan, result: Result<(), LogError>) -> Result<Offset, LogError> {
    let SyncPlan { path, upto, point, .. } = plan;
    match result {
        Ok(()) => {
            let mut state = inner.borrow_mut();
            if let Some(reason) = state.failed.clone() {
                // An earlier sync failed: what the page cache holds is
                // unknown, so this one proves nothing.
                return Err(LogError::Failed { reason });
            }
            assert!(upto <= state.log_end, "a sync covers only what was written");
            if state.seals.is_empty() && !state.seal_task_running {
                state.durable_end = state.durable_end.max(upto);
            } else {
                // Older segments are still being sealed: what this sync
                // covered becomes durable when they are.
                state.active_synced = state.active_synced.max(upto);
            }
            state.unsynced_bytes = 0;
            state.unsynced_since = None;
            state.syncs += 1;
            let now_ms = state.clock.now_ms();
            let interval_ms = state.config.recovery_point_interval_ms;
            let due = point.filter(|_| now_ms - state.recovery_point_written_ms >= interval_ms);
            if due.is_some() {
                state.recovery_point_written_ms = now_ms;
            }
            let (durable_end, generation) = (state.durable_end, state.recovery_point_generation);
            drop(state);
            // Not waited for: an append is acknowledged after its own sync.
            // (glommio may poll a spawned task at once: no borrow is held.)
            if let Some(point) = due {
                let inner = Rc::clone(inner);
                glommio::spawn_local(async move {
                    if let Err(e) = write_recovery_point(&inner, point, generation).await {
                        tracing::warn!(error = %e, "writing the recovery point failed (recovery then reads the active segment's damage as a torn tail)");
                    }
                })
                .detach();
            }
            Ok(durable_end)
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "fdatasync failed; log refuses writes until reopened");
            inner.borrow_mut().failed = Some(e.to_string());
            Err(e)
        }
    }
}

/// `always`: makes a written group durable and acknowledges it, without
/// holding the writer. Takes a sync slot (waits while `SYNCS_IN_FLIGHT_MAX`
/// are in flight), starts the fdatasync at once — so it overlaps the one
/// before it, and covers every group written so far — and publishes its
/// result only after the sync before it published: `durable_end` moves in
/// order, and once a sync failed no later one acknowledges anything (after a
/// failed fdatasync the page cache cannot be trusted, whatever a later one
/// returns).
async fn sync_group(inner: &Rc<RefCell<Inner>>, group: Group, infos: Vec<(Offset, Offset)>) {
    let slots = Rc::clone(&inner.borrow().sync_slots);
    let Ok(permit) = slots.acquire_static_permit(1).await else {
        return fail_all(group, &LogError::Closed);
    };
    let need = match plan_sync(&inner.borrow()) {
        Ok(need) => need,
        Err(e) => return fail_all(group, &e),
    };
    let (done, published) = oneshot::channel();
    let before = inner.borrow_mut().last_sync.replace(published);
    let inner = Rc::clone(inner);
    glommio::spawn_local(async move {
        let _permit = permit;
        let result = match &need {
            SyncNeed::Sync(plan) => segment::sync_file(&plan.file, &plan.path).await,
            SyncNeed::Synced(_) => Ok(()),
        };
        // A dropped sender means its task was dropped with the executor:
        // nothing was published, so nothing after it may be.
        let before_ok = match before {
            Some(before) => before.await.unwrap_or(false),
            None => true,
        };
        let outcome = match (before_ok, need) {
            (false, _) => Err(LogError::Failed {
                reason: "an earlier fdatasync failed".to_string(),
            }),
            (true, SyncNeed::Sync(plan)) => publish_sync(&inner, plan, result),
            // Nothing needed a sync: everything written was already durable.
            (true, SyncNeed::Synced(durable_end)) => Ok(durable_end),
        };
        let ok = outcome.is_ok();
        match outcome {
            Ok(_) => {
                let state = inner.borrow();
                let active = state.segments.values().next_back();
                assert!(
                    active.is_some_and(|segment| segment.entry_durable),
                    "an append is acknowledged durable only in a segment whose name is durable"
                );
                let log_start = state.log_start();
                drop(state);
                acknowledge(group, infos, log_start, true);
            }
            Err(e) => fail_all(group, &e),
        }
        let _ = done.send(ok);
    })
    .detach();
}

/// Waits until no `always` sync is in flight (every one published), before
/// anything that changes the segments: roll, truncation, retention, flush.
async fn drain_syncs(inner: &Rc<RefCell<Inner>>) {
    let slots = Rc::clone(&inner.borrow().sync_slots);
    // A sync task holds its permit until it has published and acknowledged:
    // holding every permit means none is left in flight.
    let all = slots.acquire_permit(SYNCS_IN_FLIGHT_MAX).await;
    drop(all);
}

/// How a roll seals the segment it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RollMode {
    /// Seal before returning (explicit rolls, and `always`, where the data
    /// is already synced and the seal costs little).
    Inline,
    /// Hand the seal to the background seal task, so appends go on into the
    /// new segment instead of waiting for a large fdatasync.
    Background,
}

/// Closes the active segment and creates the next one; the closed segment is
/// sealed (fsync, shrink, index) inline or in the background.
async fn roll(inner: &Rc<RefCell<Inner>>, mode: RollMode) -> Result<(), LogError> {
    let rolled = {
        let state = inner.borrow();
        if let Some(reason) = state.failed.clone() {
            return Err(LogError::Failed { reason });
        }
        let Some(active) = state.segments.values().next_back() else {
            return Ok(());
        };
        (active.size > 0).then(|| {
            let seal = PendingSeal {
                base: active.base,
                end: state.log_end,
                file: active.file(),
                path: active.path.clone(),
                size: active.size,
                index: active.index.encode(!active.bad.is_empty()),
            };
            (state.dir.clone(), seal, state.config.segment_bytes_max)
        })
    };
    let Some((dir, seal, segment_bytes_max)) = rolled else {
        // Nothing to roll; an inline roll still settles earlier seals, as
        // `Log::roll` promises (a background roll may have left the new
        // active segment empty when the write after it failed).
        return match mode {
            RollMode::Inline => drain_seals(inner).await,
            RollMode::Background => Ok(()),
        };
    };
    let now_ms = inner.borrow().clock.now_ms();
    let next_base = seal.end;
    let segment = match Segment::create(&dir, next_base, segment_bytes_max, now_ms).await {
        Ok(segment) => segment,
        Err(e) => {
            inner.borrow_mut().failed = Some(e.to_string());
            return Err(e);
        }
    };
    inner.borrow_mut().segments.insert(next_base, segment);
    tracing::info!(dir = %dir.display(), base_offset = next_base.0, "segment rolled");
    let background = mode == RollMode::Background && inner.borrow().seals.len() < PENDING_SEALS_MAX;
    inner.borrow_mut().seals.push_back(seal);
    if background {
        start_seal_task(inner);
        Ok(())
    } else {
        drain_seals(inner).await
    }
}

fn start_seal_task(inner: &Rc<RefCell<Inner>>) {
    if std::mem::replace(&mut inner.borrow_mut().seal_task_running, true) {
        return;
    }
    let task = glommio::spawn_local(seal_loop(Rc::clone(inner)));
    // The previous task, if any, has finished.
    let previous = inner.borrow_mut().seal_task.replace(task);
    drop(previous);
}

impl Drop for Log {
    fn drop(&mut self) {
        // Cancel background sealing (it holds the state alive otherwise). On
        // disk this is the same as a crash at that point, which recovery
        // handles; `close` seals everything first.
        let task = self.inner.borrow_mut().seal_task.take();
        drop(task);
    }
}

/// Waits until every rolled segment is sealed (running the seals if no task is).
async fn drain_seals(inner: &Rc<RefCell<Inner>>) -> Result<(), LogError> {
    let waiter = {
        let mut state = inner.borrow_mut();
        if state.seals.is_empty() && !state.seal_task_running {
            return match state.failed.clone() {
                Some(reason) => Err(LogError::Failed { reason }),
                None => Ok(()),
            };
        }
        let (sender, receiver) = oneshot::channel();
        state.seal_waiters.push(sender);
        receiver
    };
    start_seal_task(inner);
    match waiter.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(LogError::Failed { reason }),
        Err(_) => Err(LogError::Closed),
    }
}

/// Seals rolled segments oldest first. A segment's offsets become durable
/// when it and every older one are sealed; a failed seal fails the log.
async fn seal_loop(inner: Rc<RefCell<Inner>>) {
    let dir = inner.borrow().dir.clone();
    loop {
        let next = inner.borrow_mut().seals.pop_front();
        let Some(seal) = next else {
            // Done: what the active segment's syncs covered is durable now.
            let waiters = {
                let mut state = inner.borrow_mut();
                if state.failed.is_none() {
                    state.durable_end = state.durable_end.max(state.active_synced).min(state.log_end);
                }
                state.seal_task_running = false;
                std::mem::take(&mut state.seal_waiters)
            };
            let result = match inner.borrow().failed.clone() {
                Some(reason) => Err(reason),
                None => Ok(()),
            };
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
            return;
        };
        // Seal, then make the directory entry of the segment after it durable
        // (created without a directory sync), then count its offsets durable.
        let existing: Vec<Offset> = inner.borrow().segments.keys().copied().collect();
        let sealed = match segment::seal_files(&dir, &seal.file, &seal.path, seal.base, seal.size, seal.index).await {
            Ok(()) => sync_dir(&dir).await,
            Err(e) => Err(e),
        };
        let mut state = inner.borrow_mut();
        match sealed {
            Ok(()) => {
                mark_entries_durable(&mut state.segments, &existing);
                state.durable_end = state.durable_end.max(seal.end);
                if let Some(segment) = state.segments.get_mut(&seal.base) {
                    segment.mark_sealed();
                }
            }
            Err(e) => {
                tracing::error!(path = %seal.path.display(), error = %e, "sealing a segment failed; log refuses writes until reopened");
                state.failed = Some(e.to_string());
                state.seals.clear();
            }
        }
    }
}

async fn truncate(inner: &Rc<RefCell<Inner>>, offset: Offset) -> Result<Offset, LogError> {
    // Segments still being sealed must be settled before any is cut or deleted.
    drain_seals(inner).await?;
    let (dir, doomed, plan, segment_bytes_max) = {
        let mut state = inner.borrow_mut();
        if offset >= state.log_end {
            return Ok(state.log_end);
        }
        let dir = state.dir.clone();
        let segment_bytes_max = state.config.segment_bytes_max;
        // The segment holding the cut is cut; segments wholly past it go.
        let holder = state.segments.range(..offset).next_back().map(|(b, _)| *b);
        let cut = match holder.and_then(|b| state.segments.get(&b)) {
            Some(segment) => Some(segment.cut_point(offset)?),
            None => None,
        };
        let later: Vec<Offset> = state.segments.range(offset..).map(|(b, _)| *b).collect();
        let mut doomed = Vec::new();
        for base in later.iter().rev() {
            if let Some(segment) = state.segments.remove(base) {
                doomed.push(segment);
            }
        }
        let plan = match (holder.and_then(|b| state.segments.get_mut(&b)), cut) {
            (Some(segment), Some((position, new_end))) => Some(segment.truncate_in_memory(position, new_end)),
            _ => None,
        };
        let new_end = state.segments.values().next_back().map_or(offset, |s| s.next_offset);
        state.log_end = new_end;
        state.first_dirty = state.first_dirty.min(new_end);
        state.first_dirty_lowered = true;
        state.epochs.truncate_from_end(new_end);
        state.durable_end = state.durable_end.min(new_end);
        (dir, doomed, plan, segment_bytes_max)
    };
    // The log in memory is cut already: if the files cannot follow, appends
    // must not go on over them (a reopen recovers a prefix of the log).
    if let Err(e) = truncate_on_disk(inner, &dir, doomed, plan, offset, segment_bytes_max).await {
        tracing::error!(dir = %dir.display(), error = %e, "truncation failed on disk; log refuses writes until reopened");
        inner.borrow_mut().failed = Some(e.to_string());
        return Err(e);
    }
    {
        let mut state = inner.borrow_mut();
        state.durable_end = state.log_end;
        state.active_synced = state.log_end;
        // New appends will reuse cut positions: no earlier point may stand.
        state.recovery_point_generation += 1;
    }
    record_recovery_point(inner).await?;
    let end = inner.borrow().log_end;
    Ok(end)
}

/// The files' part of `truncate`: deletes the segments wholly past the cut,
/// cuts the one holding it (a new file when data is cut, see
/// `segment::truncate_files`) or starts afresh at `offset`, and syncs the
/// directory.
async fn truncate_on_disk(
    inner: &Rc<RefCell<Inner>>,
    dir: &Path,
    doomed: Vec<Segment>,
    plan: Option<segment::TruncatePlan>,
    offset: Offset,
    segment_bytes_max: u64,
) -> Result<(), LogError> {
    // Newest first, so a crash part-way leaves a prefix of the log.
    for segment in doomed {
        segment::remove_files(dir, segment.base, segment.file(), &segment.path).await?;
    }
    let now_ms = inner.borrow().clock.now_ms();
    match plan {
        Some(plan) => {
            if let Some(reopened) = segment::truncate_files(dir, &plan, segment_bytes_max).await? {
                let mut state = inner.borrow_mut();
                let active = state.segments.values_mut().next_back();
                let active = active.filter(|active| active.base == plan.base);
                let active = active.unwrap_or_else(|| panic!("the cut segment {} is the last one", plan.base));
                active.reactivate(reopened, now_ms);
            }
        }
        None => {
            // Everything went: start afresh at the cut.
            let segment = Segment::create(dir, offset, segment_bytes_max, now_ms).await?;
            let mut state = inner.borrow_mut();
            state.log_end = offset;
            state.epochs.truncate_from_end(offset);
            state.durable_end = offset;
            state.segments.insert(offset, segment);
        }
    }
    let existing: Vec<Offset> = inner.borrow().segments.keys().copied().collect();
    sync_dir(dir).await?;
    let mut state = inner.borrow_mut();
    mark_entries_durable(&mut state.segments, &existing);
    Ok(())
}

/// The active segment's base and the bytes its file holds: what a sync
/// started now covers.
fn synced_extent(state: &Inner) -> Option<RecoveryPoint> {
    let active = state.segments.values().next_back()?;
    Some(RecoveryPoint {
        segment_base: active.base,
        synced: Position(active.size),
    })
}

/// Records now, and waits for it, that everything in the log is fsynced, if
/// it is (after recovery, a truncation, a flush at close).
async fn record_recovery_point(inner: &Rc<RefCell<Inner>>) -> Result<(), LogError> {
    let (point, generation) = {
        let mut state = inner.borrow_mut();
        if state.durable_end != state.log_end {
            return Ok(());
        }
        state.recovery_point_written_ms = state.clock.now_ms();
        (synced_extent(&state), state.recovery_point_generation)
    };
    match point {
        Some(point) => write_recovery_point(inner, point, generation).await,
        None => Ok(()),
    }
}

/// Writes `point` as the partition's recovery point (overwriting the file in
/// place and fdatasyncing it; a torn write fails its CRC and reads as
/// "nothing known"), unless a truncation superseded it while it waited its
/// turn. Its directory entry is not synced: a lost name also reads as
/// "nothing known", the safe reading.
async fn write_recovery_point(
    inner: &Rc<RefCell<Inner>>,
    point: RecoveryPoint,
    generation: u64,
) -> Result<(), LogError> {
    let (turn, path) = {
        let state = inner.borrow();
        (Rc::clone(&state.recovery_point_turn), recovery_point::path(&state.dir))
    };
    let _turn = turn.acquire_permit(1).await.map_err(|_| LogError::Closed)?;
    if inner.borrow().recovery_point_generation != generation {
        return Ok(());
    }
    let file = glommio::io::OpenOptions::new()
        .write(true)
        .create(true)
        .buffered_open(&path)
        .await
        .map_err(crate::error::glommio_error("opening the recovery point", &path))?;
    let written = file
        .write_at(point.encode().to_vec(), 0)
        .await
        .map_err(crate::error::glommio_error("writing the recovery point", &path))?;
    if written != recovery_point::RECOVERY_POINT_BYTES {
        return Err(LogError::Io {
            context: "writing the recovery point",
            path,
            source: std::io::Error::other("short write"),
        });
    }
    file.fdatasync()
        .await
        .map_err(crate::error::glommio_error("syncing the recovery point", &path))?;
    let _ = file.close().await;
    Ok(())
}

/// After a sync of the log directory that started when `existing` were its
/// segments: their names are durable now (later ones may not be).
fn mark_entries_durable(segments: &mut BTreeMap<Offset, Segment>, existing: &[Offset]) {
    for base in existing {
        if let Some(segment) = segments.get_mut(base) {
            segment.entry_durable = true;
        }
    }
}

async fn retention(inner: &Rc<RefCell<Inner>>) -> Result<usize, LogError> {
    // Rolled segments count once sealed.
    drain_seals(inner).await?;
    let (dir, doomed) = {
        let mut state = inner.borrow_mut();
        let now_ms = state.clock.now_ms();
        let mut total: u64 = state.segments.values().map(|s| s.size).sum();
        let sealed: Vec<(Offset, u64, i64)> = state
            .segments
            .values()
            .filter(|s| s.sealed)
            .map(|s| (s.base, s.size, s.max_timestamp_ms))
            .collect();
        let mut doomed = Vec::new();
        for (base, size, max_timestamp_ms) in sealed {
            let too_old = state
                .config
                .retention_ms_max
                .is_some_and(|ms| max_timestamp_ms < now_ms.saturating_sub(ms));
            let too_big = state
                .config
                .retention_bytes_max
                .is_some_and(|max| total.saturating_sub(size) >= max);
            if !(too_old || too_big) {
                break;
            }
            if let Some(segment) = state.segments.remove(&base) {
                total -= size;
                doomed.push(segment);
            }
        }
        let log_start = state.log_start();
        state.epochs.truncate_from_start(log_start);
        (state.dir.clone(), doomed)
    };
    let count = doomed.len();
    // Oldest first, so a crash part-way leaves a suffix of the log.
    for segment in doomed {
        segment::remove_files(&dir, segment.base, segment.file(), &segment.path).await?;
    }
    if count > 0 {
        sync_dir(&dir).await?;
    }
    Ok(count)
}

/// Moves the log start to `offset` (DeleteRecords): stores it, then deletes
/// the sealed segments wholly below it, oldest first.
async fn delete_before(inner: &Rc<RefCell<Inner>>, offset: Offset) -> Result<Offset, LogError> {
    drain_seals(inner).await?;
    let (dir, log_start, log_end) = {
        let state = inner.borrow();
        (state.dir.clone(), state.log_start(), state.log_end)
    };
    if offset > log_end || offset.0 < 0 {
        return Err(LogError::OffsetOutOfRange {
            requested: offset,
            log_start,
            log_end,
        });
    }
    if offset <= log_start {
        return Ok(log_start);
    }
    // Durable before anything is deleted or answered: after a crash the
    // low watermark holds, or nothing changed.
    crate::start_offset::write(&dir, offset)?;
    let doomed: Vec<Segment> = {
        let mut state = inner.borrow_mut();
        state.start_floor = offset;
        let below: Vec<Offset> = state
            .segments
            .values()
            .filter(|s| s.sealed && s.next_offset <= offset)
            .map(|s| s.base)
            .collect();
        let doomed = below.iter().filter_map(|base| state.segments.remove(base)).collect();
        assert!(!state.segments.is_empty(), "the active segment is never deleted");
        let start = state.log_start();
        assert_eq!(start, offset, "the log start is the new low watermark");
        state.epochs.truncate_from_start(start);
        doomed
    };
    let count = doomed.len();
    for segment in doomed {
        segment::remove_files(&dir, segment.base, segment.file(), &segment.path).await?;
    }
    if count > 0 {
        sync_dir(&dir).await?;
    }
    Ok(offset)
}

/// Applies the live-changeable bounds of `config` (see [`Log::reconfigure`]).
async fn reconfigure(inner: &Rc<RefCell<Inner>>, config: LogConfig) -> Result<(), LogError> {
    if inner.borrow().config.durability != config.durability {
        // `visible_end` under `always` is the durable end: sync first, so it
        // does not fall back below what readers were already shown.
        sync_active(inner).await?;
        drain_seals(inner).await?;
    }
    let regrow = {
        let mut state = inner.borrow_mut();
        state.config.segment_bytes_max = config.segment_bytes_max;
        state.config.segment_ms_max = config.segment_ms_max;
        state.config.retention_ms_max = config.retention_ms_max;
        state.config.retention_bytes_max = config.retention_bytes_max;
        state.config.durability = config.durability;
        state.config.log_append_time = config.log_append_time;
        let max = state.config.segment_bytes_max;
        state
            .segments
            .values()
            .next_back()
            .filter(|active| active.size == 0 && active.capacity() < max)
            .map(|active| (active.base, active.entry_durable, state.dir.clone(), max))
    };
    // An empty active segment smaller than the new bound is made again at
    // the new size (nothing in it can be mapped by a reader), so an append
    // up to the new bound always fits the segment it goes to.
    if let Some((base, entry_durable, dir, max)) = regrow {
        let now_ms = inner.borrow().clock.now_ms();
        let mut segment = Segment::create(&dir, base, max, now_ms).await?;
        segment.entry_durable = entry_durable;
        inner.borrow_mut().segments.insert(base, segment);
    }
    Ok(())
}

/// The leader epoch cache of a just-opened log, from every stored batch
/// header, oldest first (headers only: records are not touched).
fn rebuild_epochs(segments: &BTreeMap<Offset, Segment>) -> Result<EpochCache, LogError> {
    let mut epochs = EpochCache::default();
    for segment in segments.values() {
        segment.for_each_header(|header, _| epochs.observe(header.partition_leader_epoch, header.base_offset))?;
    }
    Ok(epochs)
}

/// Says what recovery kept out of the log in `segment`, one line a range.
fn report_bad_ranges(segment: &Segment) {
    for range in &segment.bad {
        tracing::error!(
            path = %segment.path.display(),
            start = range.start.0,
            end = range.end.0,
            first_offset = range.first_offset.0,
            next_offset = range.next_offset.0,
            reason = %range.reason,
            "a segment holds a damaged or refused range; it stays on disk and is never served \
             (reads of its offsets fail; `shardctl log verify` names it)"
        );
    }
}

/// The error for a segment the cleaner cannot read as stored batches.
fn corrupt_view(view: &SegmentView, reason: BatchError) -> LogError {
    LogError::Corrupt {
        path: view.path().to_path_buf(),
        position: Position(0),
        reason,
    }
}

/// Rewrites one segment (`cleaner.rs`), yielding every
/// [`cleaner::CLEAN_SLICE_BYTES`]. Returns the cleaned bytes, whether they
/// differ from the segment's, and what went.
async fn rewrite_segment(
    view: &SegmentView,
    map: &KeyMap,
    facts: &PassFacts,
) -> Result<(Vec<u8>, bool, cleaner::RewriteCounts), LogError> {
    let mut rewriter = SegmentRewriter::new(map, facts);
    let data: &[u8] = &view.data;
    let mut at = 0usize;
    let mut since_yield = 0usize;
    while at < data.len() {
        let rest = data.get(at..).unwrap_or_default();
        let header = batch::validate_stored(rest).map_err(|reason| corrupt_view(view, reason))?;
        let total = header.total_bytes();
        rewriter
            .push(rest.get(..total).unwrap_or_default(), &header)
            .map_err(|reason| corrupt_view(view, reason))?;
        at += total;
        since_yield += total;
        if since_yield >= cleaner::CLEAN_SLICE_BYTES {
            since_yield = 0;
            glommio::yield_if_needed().await;
        }
    }
    // Zeros read for a page that faulted are not the segment's data.
    view.check()?;
    let counts = rewriter.counts;
    let (bytes, changed) = rewriter.finish(view.base);
    Ok((bytes, changed, counts))
}

/// The writer's part of the swap: if the segment is still the version the
/// cleaner read, runs steps 2–4 (`segment::swap_cleaned`) and reopens it
/// from the cleaned file (which rebuilds and writes its index: step 5).
/// Otherwise drops the cleaned copy. Returns whether it swapped.
async fn install_cleaned(inner: &Rc<RefCell<Inner>>, view: SegmentView) -> Result<bool, LogError> {
    let (dir, next_base, interval) = {
        let state = inner.borrow();
        let current = state.segments.get(&view.base).filter(|s| s.is_version_of(&view));
        let next_base = state
            .segments
            .range((std::ops::Bound::Excluded(view.base), std::ops::Bound::Unbounded))
            .next()
            .map(|(base, _)| *base);
        match (current, next_base) {
            (Some(_), Some(next_base)) => (state.dir.clone(), next_base, state.config.index_interval_bytes),
            _ => {
                let dir = state.dir.clone();
                drop(state);
                segment::discard_cleaned(&dir, view.base)?;
                return Ok(false);
            }
        }
    };
    assert_eq!(
        next_base, view.next_offset,
        "a sealed segment ends where the next begins"
    );
    segment::swap_cleaned(&dir, view.base).await?;
    let reopened = Segment::open_sealed(&dir, view.base, next_base, interval, Position(u64::MAX)).await?;
    let SealedOpen::Ready(mut segment) = reopened else {
        // Written whole and fsynced before the swap: read back, it is not.
        return Err(LogError::Failed {
            reason: format!("cleaned segment {} does not read back whole", view.base),
        });
    };
    segment.entry_durable = true;
    let mut state = inner.borrow_mut();
    assert_eq!(segment.next_offset, next_base, "a cleaned segment keeps its offsets");
    state.segments.insert(view.base, segment);
    Ok(true)
}
