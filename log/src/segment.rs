//! One segment: `<base_offset>.log` (record batches back to back) and its sparse
//! `<base_offset>.index` (see `index.rs`).
//!
//! # Write path (one per segment, chosen here)
//! Batches are written with *buffered* writes at explicit positions — a
//! `pwrite` on the shard or an io_uring write, per [`WritePath`] — and made
//! durable with io_uring `fdatasync`. Buffered,
//! not O_DIRECT, because reads come from a shared memory mapping of the same
//! file: both go through the page cache, so a reader sees a batch as soon as its
//! write completes, and the freshest data — what consumers tailing the log read —
//! is served from memory without a disk read. Each batch is copied once, into
//! the write buffer, and its base offset and leader epoch are written into the
//! copy (`assemble`); the sender's buffer is never modified.
//!
//! # Mapping rules (a mapping never grows, and truncating a mapped file raises SIGBUS)
//! - The active segment's file is sized to `segment_bytes_max` when it is created
//!   (sparse: nothing is allocated until written) and mapped once at that size.
//! - Readers only ever touch `[0, size)`, the bytes written so far.
//! - Sealing fsyncs the file, then shrinks it to `size`. That is safe for every
//!   live mapping because no reader looks past `size`.
//! - Truncation never changes a byte a reader may still hold (a Fetch
//!   response being written to a slow socket holds slices of the mapping).
//!   A cut inside a segment copies the kept prefix into a new file
//!   (`<base>.log.truncating`, sized as an active segment, fdatasynced),
//!   renames it over `<base>.log` and fsyncs the directory; the segment then
//!   writes and maps the new file. The old inode, unchanged, lives on for
//!   old mappings, as after retention. A sealed segment cut at its end only
//!   grows back to full size, which no mapping notices.
//! - Retention unlinks files; a mapping keeps its inode alive until the last
//!   reader drops its `Bytes`.
//!
//! What these rules cannot rule out — a page the disk fails to read, a file
//! someone else shrank — is caught by the SIGBUS guard (`sigbus.rs`): every
//! mapping is registered with it, a fault in one reads a zero page instead
//! of killing the process, and every read of the log through a mapping
//! (`Segment::with_data`, recovery's scans) checks for a fault afterwards
//! and fails with EIO instead of returning what it read. The segment then
//! stays failed; other segments keep serving.

use std::{
    cell::Cell,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
};

use bytes::Bytes;
use glommio::io::{BufferedFile, OpenOptions};
use memmap2::{Advice, Mmap, MmapOptions};

use crate::{
    batch::{self, BatchHeader, BATCH_HEADER_BYTES},
    error::{glommio_error, io_error, LogError},
    index::{IndexEntry, SparseIndex},
    log::{TimestampOffset, WritePath},
    offset::{Offset, Position},
    recovery::{self, BadRange, SegmentBounds, SegmentScan, TornTail},
    sigbus,
};

/// The error a read of a segment gets once a page of its mapping could not
/// be read (EIO: the kernel reports the cause itself, in its own log).
fn fault_error(path: &Path) -> LogError {
    LogError::Io {
        context: "reading segment",
        path: path.to_path_buf(),
        source: std::io::Error::from_raw_os_error(libc::EIO),
    }
}

/// Most offsets one segment may span past its base, Kafka's bound: index
/// entries store `offset - base` as a u32, and a segment rolls before the
/// next batch's last offset would lie further than this from its base.
pub(crate) const SEGMENT_OFFSET_SPAN_MAX: i64 = i32::MAX as i64;

/// Width of the zero-padded base offset in file names (as Kafka names them).
const FILE_NAME_DIGITS: usize = 20;

pub(crate) fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:0width$}.log", base.0, width = FILE_NAME_DIGITS))
}

pub(crate) fn index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:0width$}.index", base.0, width = FILE_NAME_DIGITS))
}

/// Name ending of the copy a truncation writes before renaming it over a
/// segment; one left by a crash is removed at open.
pub(crate) const TRUNCATING_SUFFIX: &str = ".log.truncating";

fn truncating_path(dir: &Path, base: Offset) -> PathBuf {
    suffixed_path(dir, base, TRUNCATING_SUFFIX)
}

/// Name ending of the cleaner's output while it is written (`cleaner.rs`);
/// one left by a crash is removed at open.
pub(crate) const CLEANED_SUFFIX: &str = ".log.cleaned";

/// Name ending of the cleaner's output once complete and durable: open
/// finishes its swap over `<base>.log` (`cleaner.rs`).
pub(crate) const SWAP_SUFFIX: &str = ".log.swap";

fn suffixed_path(dir: &Path, base: Offset, suffix: &str) -> PathBuf {
    dir.join(format!("{:0width$}{suffix}", base.0, width = FILE_NAME_DIGITS))
}

/// The base offset of a file named `<digits><suffix>`.
pub(crate) fn parse_suffixed_name(name: &str, suffix: &str) -> Option<Offset> {
    let digits = name.strip_suffix(suffix)?;
    parse_log_name(&format!("{digits}.log"))
}

/// Parses a segment file name `<digits>.log` into its base offset.
pub fn parse_log_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok().map(Offset)
}

/// A segment's mmap, registered with the SIGBUS guard (`sigbus.rs`) for as
/// long as it is mapped.
struct GuardedMap {
    guard: sigbus::Guard,
    map: Mmap,
}

impl Drop for GuardedMap {
    fn drop(&mut self) {
        // Unregister before `map` is dropped (unmapped): once unmapped, the
        // kernel may hand the addresses to another mapping, whose faults
        // must not be taken for ours.
        self.guard.release();
    }
}

/// Owner of a mapping handed to `Bytes::from_owner`, so slices keep it
/// alive — and registered with the guard — until the last one is dropped.
struct MapOwner(Arc<GuardedMap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.map.as_ref()
    }
}

/// A read-only shared mapping of a segment file, cheap to slice.
#[derive(Clone)]
pub(crate) struct Mapping {
    map: Option<Arc<GuardedMap>>,
    bytes: Bytes,
}

impl Mapping {
    fn map(file: &impl AsRawFd, len: u64, path: &Path) -> Result<Mapping, LogError> {
        if len == 0 {
            return Ok(Mapping {
                map: None,
                bytes: Bytes::new(),
            });
        }
        let len_usize = usize::try_from(len).map_err(|_| LogError::Io {
            context: "mapping segment",
            path: path.to_path_buf(),
            source: std::io::Error::other("segment larger than the address space"),
        })?;
        // SAFETY: the mapping is read-only and shared. The log never shrinks a
        // file below any byte a reader can reach, nor changes such a byte
        // (see the module doc). A fault from anything else (an I/O error,
        // someone else shrinking the file) reads a zero page instead of
        // raising SIGBUS (`sigbus.rs`), and the log checks for it after every
        // read; bytes are read with bounds checks and validated like any
        // untrusted input.
        let map = unsafe { MmapOptions::new().len(len_usize).map(file.as_raw_fd()) }
            .map_err(io_error("mapping segment", path))?;
        let guard = sigbus::Guard::register(map.as_ptr(), map.len());
        let map = Arc::new(GuardedMap { guard, map });
        let bytes = Bytes::from_owner(MapOwner(Arc::clone(&map)));
        Ok(Mapping { map: Some(map), bytes })
    }

    /// Whether a read through this mapping faulted (and read zeros).
    pub(crate) fn faulted(&self) -> bool {
        self.map.as_ref().is_some_and(|map| map.guard.faulted())
    }

    /// Fails with EIO, naming `path`, once a read through this mapping
    /// faulted: whatever that read returned is not the file's data.
    fn check(&self, path: &Path) -> Result<(), LogError> {
        if self.faulted() {
            tracing::error!(
                path = %path.display(),
                "an I/O error under a mapped segment (a page could not be read); its reads fail"
            );
            return Err(fault_error(path));
        }
        Ok(())
    }

    pub(crate) fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Asks the kernel to read `[from, from+len)` ahead, so serving it does not
    /// block the shard on page faults.
    pub(crate) fn prefetch(&self, from: u64, len: u64) {
        if let Some(map) = &self.map {
            let (Ok(from), Ok(len)) = (usize::try_from(from), usize::try_from(len)) else {
                return;
            };
            // Advice is a hint; failure only means no readahead.
            let _ = map.map.advise_range(Advice::WillNeed, from, len);
        }
    }
}

pub(crate) fn push_index_entry(
    index: &mut SparseIndex,
    base: Offset,
    batch_base: Offset,
    position: Position,
    max_before_ms: i64,
) {
    let relative = batch_base.0 - base.0;
    assert!(
        (0..=i64::from(u32::MAX)).contains(&relative),
        "relative offset out of index range"
    );
    assert!(position.0 <= u64::from(u32::MAX), "segment position out of index range");
    if let Some(entry) = IndexEntry::for_batch(base, batch_base, position, max_before_ms) {
        index.push(entry);
    }
}

/// One segment of a partition log. Lives on the shard that owns the partition.
///
/// Only the log's writer task mutates a segment. It never holds a borrow of the
/// segment across an I/O wait: it takes the file handle (`Rc`), awaits the
/// I/O, then records the result with a short borrow. Readers borrow briefly and
/// never wait, so they always see a consistent `[0, size)`.
pub(crate) struct Segment {
    pub(crate) base: Offset,
    pub(crate) path: PathBuf,
    file: Rc<BufferedFile>,
    mapping: Mapping,
    /// Bytes of valid batches.
    pub(crate) size: u64,
    /// Offset after the last batch.
    pub(crate) next_offset: Offset,
    pub(crate) index: SparseIndex,
    bytes_since_index: u64,
    /// Largest batch max-timestamp (i64::MIN when empty).
    pub(crate) max_timestamp_ms: i64,
    /// Clock reading when the segment became active (for time-based roll).
    pub(crate) created_ms: i64,
    pub(crate) sealed: bool,
    /// File position up to which writeback has been started (see
    /// [`Segment::writeback_due`]).
    writeback_from: u64,
    /// Damaged or quarantined ranges recovery found, in file order: kept on
    /// disk, skipped by every walk, never served.
    pub(crate) bad: Vec<BadRange>,
    /// Whether a sync of the log directory has covered the file's name
    /// since it was created or opened (nothing in a segment is acknowledged
    /// as durable before).
    pub(crate) entry_durable: bool,
    /// Set when a read through the mapping faulted (an I/O error, see
    /// `sigbus.rs`): every later read of the segment fails with EIO. Readers
    /// hold a shared borrow, hence the `Cell`.
    io_failed: Cell<bool>,
}

impl Segment {
    async fn open_file(path: &Path, create: bool) -> Result<BufferedFile, LogError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .buffered_open(path)
            .await
            .map_err(glommio_error("opening segment", path))
    }

    /// Creates a new, empty active segment at `base`.
    pub(crate) async fn create(
        dir: &Path,
        base: Offset,
        segment_bytes_max: u64,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        let path = log_path(dir, base);
        // A stale index of an earlier segment at this base goes before
        // anything is written here (open would not trust it, but it must not
        // come back after a crash either).
        remove_durably(dir, &index_path(dir, base)).await?;
        let file = Self::open_file(&path, true).await?;
        file.truncate(segment_bytes_max)
            .await
            .map_err(glommio_error("sizing segment", &path))?;
        let mapping = Mapping::map(&file, segment_bytes_max, &path)?;
        Ok(Segment {
            base,
            path,
            file: Rc::new(file),
            mapping,
            size: 0,
            next_offset: base,
            index: SparseIndex::default(),
            bytes_since_index: 0,
            max_timestamp_ms: i64::MIN,
            created_ms: now_ms,
            sealed: false,
            writeback_from: 0,
            bad: Vec::new(),
            entry_durable: false,
            io_failed: Cell::new(false),
        })
    }

    /// Opens a segment that is not the last one.
    ///
    /// Fast path: its index file decodes, the batch headers chain from the
    /// base to exactly `next_base` (an index is written only after the
    /// segment's data was fsynced and the file shrunk), and every index entry
    /// is the entry of one of those batches (`walk_sealed`). Otherwise the
    /// segment is scanned with CRCs (`recovery::scan`), its index rebuilt and
    /// rewritten:
    /// - with an index file on disk it was sealed, so its data was durable:
    ///   whatever does not reach `next_base` is damage, kept as a bad range;
    /// - without one it may have been rolled but not sealed when the process
    ///   died: if it does not end cleanly where `next_base` begins it is
    ///   reported `Torn` (the caller cuts the log there) and nothing is
    ///   changed on disk.
    pub(crate) async fn open_sealed(
        dir: &Path,
        base: Offset,
        next_base: Offset,
        index_interval_bytes: u64,
        synced_to: Position,
    ) -> Result<SealedOpen, LogError> {
        let path = log_path(dir, base);
        let file = Self::open_file(&path, false).await?;
        let file_bytes = file.file_size().await.map_err(glommio_error("sizing segment", &path))?;
        let mut mapping = Mapping::map(&file, file_bytes, &path)?;
        let index_file = index_path(dir, base);
        let (index_found, loaded) = match std::fs::read(&index_file) {
            Ok(bytes) => (true, SparseIndex::decode(&bytes, file_bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (false, None),
            Err(e) => return Err(io_error("reading index", &index_file)(e)),
        };
        // Never touch a hole through the mapping (see `open_active`).
        let data_bytes = first_hole(&file, file_bytes);
        let data = mapping.bytes().slice(
            ..usize::try_from(data_bytes)
                .unwrap_or(usize::MAX)
                .min(mapping.bytes().len()),
        );
        let bounds = SegmentBounds {
            base,
            next_base: Some(next_base),
        };
        let clean_after = !has_data_after(&file, data_bytes);
        let fast = loaded
            .filter(|_| clean_after)
            .and_then(|index| walk_sealed(&data, bounds, &index).map(|scan| (index, scan)));
        // A page that could not be read reads as zeros: fail the open rather
        // than judge the segment (or the log's end) by them.
        mapping.check(&path)?;
        let (index, scan, rebuilt) = match fast {
            Some((index, scan)) => (index, scan, false),
            None => {
                let mut index = SparseIndex::default();
                // Sealed (an index was written after its fsync): all of it
                // was durable. Rolled but never sealed: as far as the
                // recovery point says.
                let synced_to = if index_found { Position(u64::MAX) } else { synced_to };
                let mut scan = recovery::scan(&data, bounds, Some((&mut index, index_interval_bytes)), synced_to);
                mapping.check(&path)?;
                let complete = scan.torn.is_none() && scan.next_offset == next_base && clean_after;
                if !complete {
                    if !index_found {
                        return Ok(SealedOpen::Torn);
                    }
                    scan.keep_torn_tail(&data, next_base);
                }
                (index, scan, true)
            }
        };
        assert_eq!(
            scan.next_offset, next_base,
            "an opened sealed segment reaches the next one"
        );
        drop(data);
        if scan.end.0 < file_bytes && clean_after {
            // Left at full size by a crash between fsync and shrink, or zeros
            // after a damaged tail: shrink now, before anyone else maps it.
            file.truncate(scan.end.0)
                .await
                .map_err(glommio_error("shrinking sealed segment", &path))?;
            mapping = Mapping::map(&file, scan.end.0, &path)?;
        }
        if rebuilt {
            file.fdatasync()
                .await
                .map_err(glommio_error("syncing sealed segment", &path))?;
            write_index(dir, base, index.encode(!scan.bad.is_empty())).await?;
        }
        Ok(SealedOpen::Ready(Segment {
            base,
            path,
            file: Rc::new(file),
            mapping,
            size: scan.end.0,
            next_offset: scan.next_offset,
            index,
            bytes_since_index: 0,
            max_timestamp_ms: scan.max_timestamp_ms,
            created_ms: 0,
            sealed: true,
            writeback_from: scan.end.0,
            bad: scan.bad,
            entry_durable: false,
            io_failed: Cell::new(false),
        }))
    }

    /// Opens the last segment for appending: scans every batch with its CRC
    /// (`recovery::scan`), keeps damaged ranges in the middle as bad ranges,
    /// cuts a torn tail and zeroes everything after the data durably, and
    /// rebuilds the index. Returns the segment and the torn tail it cut, if
    /// there was one.
    pub(crate) async fn open_active(
        dir: &Path,
        base: Offset,
        segment_bytes_max: u64,
        index_interval_bytes: u64,
        now_ms: i64,
        synced_to: Position,
    ) -> Result<(Segment, Option<TornTail>), LogError> {
        let path = log_path(dir, base);
        let file = Self::open_file(&path, false).await?;
        let file_bytes = file.file_size().await.map_err(glommio_error("sizing segment", &path))?;
        let mut index = SparseIndex::default();
        let scan = {
            let scan_map = Mapping::map(&file, file_bytes, &path)?;
            // Scan only up to the first hole: batches are contiguous from 0, so
            // none can lie past it, and touching a hole through a mapping can
            // fault (SIGBUS) on a full tmpfs, where even reads allocate.
            let data_bytes = first_hole(&file, file_bytes);
            let end = usize::try_from(data_bytes)
                .unwrap_or(usize::MAX)
                .min(scan_map.bytes().len());
            let bounds = SegmentBounds { base, next_base: None };
            let scan = recovery::scan(
                &scan_map.bytes().slice(..end),
                bounds,
                Some((&mut index, index_interval_bytes)),
                synced_to,
            );
            // Zeros read for a page that could not be read must not be
            // taken for a torn tail and cut.
            scan_map.check(&path)?;
            scan
        };
        let mapped_bytes = file_bytes.max(segment_bytes_max);
        if file_bytes < mapped_bytes {
            file.truncate(mapped_bytes)
                .await
                .map_err(glommio_error("sizing segment", &path))?;
        }
        // Zero what follows the data so nothing torn or stale can be read
        // back, even after another crash. Punching keeps the size: no SIGBUS.
        let tail_bytes = mapped_bytes - scan.end.0;
        if tail_bytes > 0 {
            file.deallocate(scan.end.0, tail_bytes)
                .await
                .map_err(glommio_error("zeroing segment tail", &path))?;
        }
        file.fdatasync()
            .await
            .map_err(glommio_error("syncing recovered segment", &path))?;
        remove_if_exists(&index_path(dir, base))?;
        let mapping = Mapping::map(&file, mapped_bytes, &path)?;
        let bytes_since_index = index.last_position().map_or(scan.end.0, |last| scan.end.0 - last.0);
        let SegmentScan {
            end,
            next_offset,
            max_timestamp_ms,
            bad,
            torn,
            ..
        } = scan;
        let segment = Segment {
            base,
            path,
            file: Rc::new(file),
            mapping,
            size: end.0,
            next_offset,
            index,
            bytes_since_index,
            max_timestamp_ms,
            created_ms: now_ms,
            sealed: false,
            writeback_from: end.0,
            bad,
            entry_durable: false,
            io_failed: Cell::new(false),
        };
        Ok((segment, torn))
    }

    /// The file handle, for I/O done without borrowing the segment.
    pub(crate) fn file(&self) -> Rc<BufferedFile> {
        Rc::clone(&self.file)
    }

    /// When at least `chunk_bytes` were written since writeback was last
    /// started, the range to start writing back now (and it is marked so).
    pub(crate) fn writeback_due(&mut self, chunk_bytes: u64) -> Option<(Rc<BufferedFile>, u64, u64)> {
        let pending = self.size.saturating_sub(self.writeback_from);
        if pending < chunk_bytes {
            return None;
        }
        let from = self.writeback_from;
        self.writeback_from = self.size;
        Some((Rc::clone(&self.file), from, pending))
    }

    /// Bytes the segment's file and mapping were sized to: batches never go
    /// past this, whatever the log's `segment_bytes_max` became since.
    pub(crate) fn capacity(&self) -> u64 {
        self.mapping.bytes().len() as u64
    }

    /// Room left for batches under `segment_bytes_max` and within the
    /// segment's own capacity (a segment created before `segment.bytes`
    /// grew keeps its smaller size).
    pub(crate) fn bytes_free(&self, segment_bytes_max: u64) -> u64 {
        segment_bytes_max.min(self.capacity()).saturating_sub(self.size)
    }

    /// Whether a batch ending at `last_offset` may join this segment: its
    /// offset relative to the base must stay within the index's range
    /// (Kafka's rule: roll when `last offset - base > i32::MAX`).
    pub(crate) fn offsets_fit(&self, last_offset: Offset) -> bool {
        last_offset
            .0
            .checked_sub(self.base.0)
            .is_some_and(|span| (0..=SEGMENT_OFFSET_SPAN_MAX).contains(&span))
    }

    /// Records batches that `write_batches` wrote at the end of the segment.
    pub(crate) fn record_appended(&mut self, batches: &[PreparedBatch], index_interval_bytes: u64) {
        assert!(!self.sealed, "append to a sealed segment");
        let mut position = self.size;
        for batch in batches {
            let header = &batch.header;
            assert_eq!(
                header.base_offset, self.next_offset,
                "batches must continue the segment's offsets"
            );
            assert!(
                self.offsets_fit(header.last_offset()),
                "the writer rolls before a segment's offsets leave the index range"
            );
            assert_eq!(
                header.total_bytes(),
                batch.bytes.len(),
                "a prepared batch is exactly one batch"
            );
            if self.bytes_since_index >= index_interval_bytes && position > 0 {
                push_index_entry(
                    &mut self.index,
                    self.base,
                    header.base_offset,
                    Position(position),
                    self.max_timestamp_ms,
                );
                self.bytes_since_index = 0;
            }
            let total = header.total_bytes() as u64;
            self.bytes_since_index += total;
            position += total;
            self.next_offset = header.next_offset();
            self.max_timestamp_ms = self.max_timestamp_ms.max(header.max_timestamp_ms);
        }
        self.size = position;
    }

    /// Marks the segment sealed once `seal_files` has succeeded.
    pub(crate) fn mark_sealed(&mut self) {
        assert!(!self.sealed, "segment sealed twice");
        self.sealed = true;
    }

    /// Cuts the in-memory view so the batch at `position` and all after it are
    /// gone. Returns what `truncate_files` must do on disk.
    pub(crate) fn truncate_in_memory(&mut self, position: Position, next_offset: Offset) -> TruncatePlan {
        assert!(position.0 <= self.size, "truncation past the end of a segment");
        let cuts_data = position.0 < self.size;
        self.size = position.0;
        self.next_offset = next_offset;
        self.index.truncate_at(position);
        self.bad.retain(|range| range.start < position);
        assert!(
            self.bad.iter().all(|range| range.end <= position),
            "cuts fall between batches and bad ranges"
        );
        self.bytes_since_index = self.index.last_position().map_or(self.size, |last| self.size - last.0);
        let mut max_timestamp_ms = i64::MIN;
        // Every batch left was walked before; a walk error cannot happen here.
        let _ = self.for_each_header(|header, _| max_timestamp_ms = max_timestamp_ms.max(header.max_timestamp_ms));
        self.max_timestamp_ms = max_timestamp_ms;
        TruncatePlan {
            file: self.file(),
            path: self.path.clone(),
            base: self.base,
            position,
            cuts_data,
            was_sealed: self.sealed,
            mapped_bytes: self.mapping.bytes().len() as u64,
        }
    }

    /// Installs what `truncate_files` made of the segment: a new file (the
    /// kept prefix) and its mapping, or a new full-size mapping of the same
    /// file; either way the segment is the active one now.
    pub(crate) fn reactivate(&mut self, reopened: Reopened, now_ms: i64) {
        assert!(
            reopened.mapping.bytes().len() as u64 >= self.size,
            "a reopened segment maps all its data"
        );
        if let Some(file) = reopened.file {
            self.file = file;
            // The new file's bytes were read without error to copy them.
            self.io_failed.set(false);
        }
        self.mapping = reopened.mapping;
        self.writeback_from = self.writeback_from.min(self.size);
        if self.sealed {
            self.sealed = false;
            self.created_ms = now_ms;
        }
    }

    /// Valid batch bytes (and bad ranges) as a zero-copy slice of the mapping.
    pub(crate) fn data(&self) -> Bytes {
        let end = usize::try_from(self.size).unwrap_or(usize::MAX);
        self.mapping.bytes().slice(..end.min(self.mapping.bytes().len()))
    }

    pub(crate) fn prefetch(&self, from: u64, len: u64) {
        if self.sealed {
            self.mapping.prefetch(from, len);
        }
    }

    /// Runs `f` over the segment's data (`data()`), then checks that no page
    /// of the mapping faulted meanwhile (`sigbus.rs`). Once one did, the
    /// segment is failed: this and every later call return EIO, naming the
    /// file, whatever `f` made of the zeros it read (logged once, at ERROR).
    pub(crate) fn with_data<T>(&self, f: impl FnOnce(&Bytes) -> Result<T, LogError>) -> Result<T, LogError> {
        if self.io_failed.get() {
            return Err(fault_error(&self.path));
        }
        let result = f(&self.data());
        if let Err(error) = self.mapping.check(&self.path) {
            self.io_failed.set(true);
            return Err(error);
        }
        result
    }

    /// The bad range whose offsets hold `offset`, as the error a read gets.
    fn damaged(&self, offset: Offset) -> Option<LogError> {
        let range = self.bad.iter().find(|range| range.holds(offset))?;
        Some(LogError::CorruptRange {
            path: self.path.clone(),
            range: range.clone(),
        })
    }

    /// Position of the batch containing `target`, scanning from the index hint.
    /// `None` if `target` is not in this segment; an error if it lies in a
    /// bad range.
    pub(crate) fn find_batch(&self, target: Offset) -> Result<Option<(Position, BatchHeader)>, LogError> {
        if target < self.base || target >= self.next_offset {
            return Ok(None);
        }
        if let Some(damaged) = self.damaged(target) {
            return Err(damaged);
        }
        self.with_data(|data| {
            let mut position = self.index.lookup_offset(self.base, target).0;
            loop {
                match self.stored_at(data, position)? {
                    Stored::Batch(header) if header.next_offset() > target => {
                        return Ok(Some((Position(position), header)));
                    }
                    Stored::Batch(header) => position += header.total_bytes() as u64,
                    Stored::Bad(range) => position = range.end.0,
                }
            }
        })
    }

    /// Where truncating to `target` cuts this segment: the start of the batch
    /// or bad range holding it, with the offset the log then ends at; the
    /// segment's end when `target` is past its offsets.
    pub(crate) fn cut_point(&self, target: Offset) -> Result<(Position, Offset), LogError> {
        if let Some(range) = self.bad.iter().find(|range| range.holds(target)) {
            return Ok((range.start, range.first_offset));
        }
        Ok(match self.find_batch(target)? {
            Some((position, header)) => (position, header.base_offset),
            None => (Position(self.size), self.next_offset),
        })
    }

    /// The first record whose timestamp is ≥ `timestamp_ms`: in the first
    /// batch whose max timestamp is ≥ it, the first such record (read when
    /// the batch is uncompressed; see [`TimestampOffset::exact`]).
    pub(crate) fn find_time(&self, timestamp_ms: i64) -> Result<Option<TimestampOffset>, LogError> {
        if self.max_timestamp_ms < timestamp_ms {
            return Ok(None);
        }
        self.with_data(|data| {
            let mut position = self.index.lookup_time(timestamp_ms).0;
            while position < self.size {
                match self.stored_at(data, position)? {
                    Stored::Batch(header) if header.max_timestamp_ms >= timestamp_ms => {
                        let batch = self.batch_bytes(data, position, &header);
                        if let Some(found) = first_record_at_or_after(batch, &header, timestamp_ms) {
                            return Ok(Some(found));
                        }
                        // Compacted: the records that made its max are gone.
                        position += header.total_bytes() as u64;
                    }
                    Stored::Batch(header) => position += header.total_bytes() as u64,
                    Stored::Bad(range) => position = range.end.0,
                }
            }
            Ok(None)
        })
    }

    /// The record with the largest timestamp (the first of them), found as
    /// [`Segment::find_time`] finds one: `None` for an empty segment.
    pub(crate) fn max_timestamp_record(&self) -> Result<Option<TimestampOffset>, LogError> {
        let mut best: Option<(u64, BatchHeader)> = None;
        self.for_each_header(|header, position| {
            if best
                .as_ref()
                .is_none_or(|(_, b)| header.max_timestamp_ms > b.max_timestamp_ms)
            {
                best = Some((position.0, *header));
            }
        })?;
        let Some((position, header)) = best else {
            return Ok(None);
        };
        self.with_data(|data| {
            let batch = self.batch_bytes(data, position, &header);
            // A compacted batch may have lost the record that made its
            // max: the batch then stands for it, inexact.
            Ok(
                first_record_at_or_after(batch, &header, header.max_timestamp_ms).or(Some(TimestampOffset {
                    offset: header.base_offset,
                    timestamp_ms: header.max_timestamp_ms,
                    exact: false,
                })),
            )
        })
    }

    /// The bytes of the batch whose header is at `position` (empty if they
    /// are not all there, which a checked header rules out).
    fn batch_bytes<'d>(&self, data: &'d [u8], position: u64, header: &BatchHeader) -> &'d [u8] {
        usize::try_from(position)
            .ok()
            .and_then(|start| data.get(start..start.checked_add(header.total_bytes())?))
            .unwrap_or_default()
    }

    /// What is stored at `position`: the bad range starting there, or the
    /// batch whose header is there (checked to lie within the data).
    pub(crate) fn stored_at(&self, data: &[u8], position: u64) -> Result<Stored<'_>, LogError> {
        let bad = self
            .bad
            .iter()
            .find(|range| range.start.0 == position && range.end > range.start);
        match bad {
            Some(range) => Ok(Stored::Bad(range)),
            None => self.header_at(data, position).map(Stored::Batch),
        }
    }

    /// Calls `f` with every stored batch header and its position, oldest
    /// first, skipping bad ranges (headers only: records are not touched).
    /// After a fault the walk fails with EIO, and `f` may have been called
    /// for headers read before the fault was seen.
    pub(crate) fn for_each_header(&self, mut f: impl FnMut(&BatchHeader, Position)) -> Result<(), LogError> {
        self.with_data(|data| {
            let mut position = 0u64;
            while position < self.size {
                match self.stored_at(data, position)? {
                    Stored::Batch(header) => {
                        f(&header, Position(position));
                        position += header.total_bytes() as u64;
                    }
                    Stored::Bad(range) => position = range.end.0,
                }
            }
            Ok(())
        })
    }

    /// Header of the stored batch at `position`, checked to lie within the data.
    pub(crate) fn header_at(&self, data: &[u8], position: u64) -> Result<BatchHeader, LogError> {
        let corrupt = |reason| LogError::Corrupt {
            path: self.path.clone(),
            position: Position(position),
            reason,
        };
        let rest = usize::try_from(position)
            .ok()
            .and_then(|p| data.get(p..))
            .unwrap_or_default();
        batch::validate_stored_header(rest).map_err(corrupt)
    }
}

/// In `batch` (whose header is `header`, with max timestamp ≥
/// `timestamp_ms`), the first record whose timestamp is ≥ `timestamp_ms`.
/// Under LogAppendTime every record has the batch's max timestamp: the
/// first record. A compressed batch's records are not read here: its base
/// offset and max timestamp, marked inexact. So is a batch whose records do
/// not walk (checked when appended, so only after a fault). `None` when
/// every record is older: a compacted batch whose newer records the
/// cleaner removed (its max timestamp is the original one).
pub(crate) fn first_record_at_or_after(
    batch: &[u8],
    header: &BatchHeader,
    timestamp_ms: i64,
) -> Option<TimestampOffset> {
    assert!(header.max_timestamp_ms >= timestamp_ms, "the batch holds such a record");
    let whole_batch = TimestampOffset {
        offset: header.base_offset,
        timestamp_ms: header.max_timestamp_ms,
        exact: false,
    };
    if header.log_append_time() {
        return Some(TimestampOffset {
            exact: true,
            ..whole_batch
        });
    }
    let Some(records) = batch::uncompressed_records(batch, header) else {
        return Some(whole_batch);
    };
    for record in records {
        let Ok(record) = record else {
            return Some(whole_batch);
        };
        let record_timestamp_ms = header.base_timestamp_ms.saturating_add(record.timestamp_delta_ms);
        if record_timestamp_ms >= timestamp_ms {
            let found = TimestampOffset {
                offset: Offset(header.base_offset.0 + i64::from(record.offset_delta)),
                timestamp_ms: record_timestamp_ms,
                exact: true,
            };
            assert!(found.offset <= header.last_offset(), "the record is in its batch");
            return Some(found);
        }
    }
    None
}

/// What a position of a segment's data holds.
pub(crate) enum Stored<'a> {
    /// A batch, valid when it was appended or recovered.
    Batch(BatchHeader),
    /// A bad range (with at least one byte), which walks skip.
    Bad(&'a BadRange),
}

/// The fast check of a sealed segment whose index file decoded: its batch
/// headers (no CRC) chain from its base to exactly its next segment's base,
/// with only zeros after them, and every entry of `index` is the entry of one
/// of those batches — at the position where the batch starts, with its base
/// offset and the largest max timestamp of the batches before it (exactly
/// what the writer and a rebuild put there). So no offset lookup can start
/// inside a batch and no time lookup can start past a batch holding the
/// time. An index may be sparser than `index_interval_bytes` asks (lookups
/// only scan further), never wrong. The walk reads every header anyway:
/// checking the entries costs no read of its own. `None` sends the caller to
/// a full scan.
fn walk_sealed(data: &[u8], bounds: SegmentBounds, index: &SparseIndex) -> Option<SegmentScan> {
    let mut scan = SegmentScan::empty(bounds.base);
    // Ascending in position (`SparseIndex::decode` checked it): at most one
    // entry falls at or before each batch start the walk reaches.
    let mut entries = index.entries().iter().peekable();
    loop {
        let position = usize::try_from(scan.end.0).ok()?;
        let rest = data.get(position..)?;
        let Ok(header) = batch::validate_stored_header(rest) else {
            let clean =
                rest.iter().all(|b| *b == 0) && Some(scan.next_offset) == bounds.next_base && entries.peek().is_none();
            return clean.then_some(scan);
        };
        if header.base_offset != scan.next_offset || bounds.check(&header, position).is_err() {
            return None;
        }
        // An entry at or before this batch's start that is not this batch's
        // entry points between batch starts or lies about the batch.
        if let Some(entry) = entries.next_if(|entry| u64::from(entry.position) <= scan.end.0) {
            let expected = IndexEntry::for_batch(bounds.base, header.base_offset, scan.end, scan.max_timestamp_ms);
            if expected != Some(*entry) {
                return None;
            }
        }
        scan.take_batch(&header);
    }
}

/// Outcome of opening a segment that is not the last one.
pub(crate) enum SealedOpen {
    /// Opened and sealed.
    Ready(Segment),
    /// Rolled but never sealed, and torn: the log ends inside it.
    Torn,
}

/// What truncating a segment leaves to do on disk.
pub(crate) struct TruncatePlan {
    file: Rc<BufferedFile>,
    path: PathBuf,
    pub(crate) base: Offset,
    position: Position,
    /// Whether batches (or bad ranges) lie past the cut.
    cuts_data: bool,
    was_sealed: bool,
    mapped_bytes: u64,
}

/// A segment's file and mapping after truncation changed them.
pub(crate) struct Reopened {
    /// The new file holding the kept prefix; `None` when the segment keeps
    /// its file.
    file: Option<Rc<BufferedFile>>,
    /// A full-size mapping, for appends.
    mapping: Mapping,
}

/// Carries out a `TruncatePlan`. A sealed segment first loses its index
/// (durably: an index outliving the truncation would describe batches that
/// are gone). Then:
/// - a cut inside the data writes the kept prefix into a new file that
///   replaces the segment's (`replace_with_prefix`): bytes past the cut may
///   still be in responses being written, and appends would overwrite them;
/// - a cut at the end of the data changes no byte a reader can hold: a
///   sealed segment grows back to full size (old mappings stay valid, the
///   file only grows), and what lies past the data is zeroed.
///
/// Returns what `Segment::reactivate` must install, if anything.
pub(crate) async fn truncate_files(
    dir: &Path,
    plan: &TruncatePlan,
    segment_bytes_max: u64,
) -> Result<Option<Reopened>, LogError> {
    // An active segment's size; never below the data kept (a segment written
    // under a larger `segment_bytes_max` than today's may hold more).
    let full_bytes = segment_bytes_max.max(plan.position.0);
    if plan.was_sealed {
        remove_durably(dir, &index_path(dir, plan.base)).await?;
    }
    if plan.cuts_data {
        let file = replace_with_prefix(dir, plan, full_bytes).await?;
        let mapping = Mapping::map(&file, full_bytes, &plan.path)?;
        return Ok(Some(Reopened {
            file: Some(Rc::new(file)),
            mapping,
        }));
    }
    let mut reopened = None;
    let mut mapped_bytes = plan.mapped_bytes;
    if plan.was_sealed {
        plan.file
            .truncate(full_bytes)
            .await
            .map_err(glommio_error("reopening segment", &plan.path))?;
        reopened = Some(Reopened {
            file: None,
            mapping: Mapping::map(&*plan.file, full_bytes, &plan.path)?,
        });
        mapped_bytes = full_bytes;
    }
    if mapped_bytes > plan.position.0 {
        plan.file
            .deallocate(plan.position.0, mapped_bytes - plan.position.0)
            .await
            .map_err(glommio_error("zeroing truncated tail", &plan.path))?;
    }
    sync_file(&plan.file, &plan.path).await?;
    Ok(reopened)
}

/// Replaces the segment's file with one holding only `[0, position)`:
/// copies it into `<base>.log.truncating` (`copy_file_range` where the file
/// system has it), sizes that to `full_bytes` as an active segment,
/// fdatasyncs it, renames it over `<base>.log` and fsyncs the directory — on
/// the executor's blocking pool, so the shard serves meanwhile. Returns the
/// new file, opened for appends.
///
/// At any crash point the directory holds the old file or the new one under
/// `<base>.log` (the rename is atomic, and the copy is durable before it),
/// each a prefix of the log as it was; a leftover copy is removed at open.
async fn replace_with_prefix(dir: &Path, plan: &TruncatePlan, full_bytes: u64) -> Result<BufferedFile, LogError> {
    let (dir_owned, path, copy) = (dir.to_path_buf(), plan.path.clone(), truncating_path(dir, plan.base));
    let kept = plan.position.0;
    glommio::executor()
        .spawn_blocking(move || {
            let written = write_prefix_copy(&path, &copy, kept, full_bytes);
            if written.is_err() {
                // Best effort: open removes it anyway.
                let _ = std::fs::remove_file(&copy);
            }
            written?;
            std::fs::rename(&copy, &path).map_err(io_error("renaming truncated copy into place", &path))?;
            crate::durable::sync_dir(&dir_owned)
        })
        .await?;
    Segment::open_file(&plan.path, false).await
}

/// Writes `[0, kept)` of the segment file at `path` into `copy`, sized to
/// `full_bytes` and fdatasynced.
fn write_prefix_copy(path: &Path, copy: &Path, kept: u64, full_bytes: u64) -> Result<(), LogError> {
    use std::io::Read;
    assert!(kept <= full_bytes, "the kept prefix fits the file");
    let source = std::fs::File::open(path).map_err(io_error("opening segment to truncate", path))?;
    let mut target = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(copy)
        .map_err(io_error("creating truncated copy", copy))?;
    let copied = std::io::copy(&mut (&source).take(kept), &mut target).map_err(io_error("copying segment", path))?;
    if copied != kept {
        // The file is shorter than the data it held: someone else shrank it.
        return Err(LogError::Io {
            context: "copying segment",
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        });
    }
    target
        .set_len(full_bytes)
        .map_err(io_error("sizing truncated copy", copy))?;
    target.sync_data().map_err(io_error("syncing truncated copy", copy))
}

/// Writes `batches` (offsets already assigned in their headers) at `start`.
/// On error the range is zeroed again (best effort), so a partial write does
/// not look like data after a crash.
pub(crate) async fn write_batches(
    file: &BufferedFile,
    path: &Path,
    start: u64,
    batches: &[PreparedBatch],
    writes: WritePath,
) -> Result<(), LogError> {
    let len: u64 = batches.iter().map(|b| b.bytes.len() as u64).sum();
    if let Err(e) = write_all_at(file, start, path, writes, |skip| assemble(batches, skip)).await {
        let _ = file.deallocate(start, len).await;
        return Err(e);
    }
    crate::stats::record_append(len);
    Ok(())
}

/// fdatasync of segment data while serving; counted, with its latency, in
/// the thread's `stats` (failed syncs too: they took the time).
pub(crate) async fn sync_file(file: &BufferedFile, path: &Path) -> Result<(), LogError> {
    let started = std::time::Instant::now();
    let result = file.fdatasync().await.map_err(glommio_error("syncing segment", path));
    crate::stats::record_sync(started.elapsed());
    result
}

/// Seals a segment's files: fsync, shrink to its data, write and fsync its index.
pub(crate) async fn seal_files(
    dir: &Path,
    file: &BufferedFile,
    path: &Path,
    base: Offset,
    size: u64,
    index: Vec<u8>,
) -> Result<(), LogError> {
    sync_file(file, path).await?;
    file.truncate(size)
        .await
        .map_err(glommio_error("shrinking sealed segment", path))?;
    write_index(dir, base, index).await
}

/// Writes a segment's index atomically (`durable::write_file_atomically`,
/// on the executor's blocking pool so the shard does not wait on the fsyncs).
async fn write_index(dir: &Path, base: Offset, bytes: Vec<u8>) -> Result<(), LogError> {
    let path = index_path(dir, base);
    glommio::executor()
        .spawn_blocking(move || crate::durable::write_file_atomically(&path, &bytes))
        .await
}

/// Deletes a segment's files. Readers holding slices keep the mapping alive.
pub(crate) async fn remove_files(
    dir: &Path,
    base: Offset,
    file: Rc<BufferedFile>,
    path: &Path,
) -> Result<(), LogError> {
    file.remove().await.map_err(glommio_error("removing segment", path))?;
    remove_if_exists(&index_path(dir, base))?;
    Ok(())
}

/// A validated batch whose header already carries its assigned base offset
/// and the leader epoch it is stored with; `bytes` is still the sender's
/// buffer (both fields are patched while copying, see `assemble`).
pub(crate) struct PreparedBatch {
    pub(crate) bytes: Bytes,
    pub(crate) header: BatchHeader,
}

/// Concatenates `batches` with the base offsets and leader epochs of their
/// headers written in, skipping the first `skip` bytes (only non-zero when
/// resuming a short write). Neither field is covered by the CRC. A batch whose
/// header fields already match its bytes (a replicated batch, or an epoch left
/// as sent) is copied unchanged. A batch stamped LogAppendTime by the writer
/// (`place_offsets`) gets the stamp written in and its CRC computed again.
fn assemble(batches: &[PreparedBatch], skip: usize) -> Vec<u8> {
    let total: usize = batches.iter().map(|b| b.bytes.len()).sum();
    let mut out = Vec::with_capacity(total);
    for batch in batches {
        let start = out.len();
        out.extend_from_slice(&batch.bytes);
        if let Some(copied) = out.get_mut(start..) {
            batch::set_base_offset(copied, batch.header.base_offset);
            batch::set_leader_epoch(copied, batch.header.partition_leader_epoch);
            if batch.header.log_append_time() && !batch::carries_stamp(copied, &batch.header) {
                batch::stamp_log_append_time(copied, batch.header.max_timestamp_ms);
            }
        }
    }
    assert_eq!(out.len(), total, "assembled bytes are the batches' bytes");
    if skip > 0 {
        out.drain(..skip.min(out.len()));
    }
    out
}

/// Writes the bytes `build(0)` makes at `position`, resuming short writes
/// (the buffer is rebuilt from `build(written)` only on that rare path, so the
/// common case copies the data once).
async fn write_all_at(
    file: &BufferedFile,
    position: u64,
    path: &Path,
    writes: WritePath,
    build: impl Fn(usize) -> Vec<u8>,
) -> Result<(), LogError> {
    let mut done = 0usize;
    loop {
        let buf = build(done);
        let want = buf.len();
        if want == 0 {
            return Ok(());
        }
        let at = position + done as u64;
        let written = match writes {
            WritePath::IoUring => file
                .write_at(buf, at)
                .await
                .map_err(glommio_error("writing segment", path))?,
            WritePath::Inline => pwrite(file, &buf, at).map_err(io_error("writing segment", path))?,
        };
        if written == 0 {
            return Err(LogError::Io {
                context: "writing segment",
                path: path.to_path_buf(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        if written >= want {
            return Ok(());
        }
        done += written;
    }
}

/// One `pwrite(2)` of `buf` at `position`, retried on EINTR.
fn pwrite(file: &impl AsRawFd, buf: &[u8], position: u64) -> std::io::Result<usize> {
    let offset = libc::off_t::try_from(position).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes for the call's length;
        // the descriptor is the segment file this process keeps open.
        let written = unsafe { libc::pwrite(file.as_raw_fd(), buf.as_ptr().cast(), buf.len(), offset) };
        match usize::try_from(written) {
            Ok(written) => return Ok(written),
            Err(_) => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

/// Offset of the first hole in the file (`SEEK_HOLE`), or `file_bytes` if the
/// file system cannot tell.
fn first_hole(file: &impl AsRawFd, file_bytes: u64) -> u64 {
    // SAFETY: lseek on a descriptor we own; it only moves the file offset,
    // which nothing else uses (all I/O here is positioned).
    let hole = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_HOLE) };
    u64::try_from(hole).map_or(file_bytes, |h| h.min(file_bytes))
}

/// Whether any data lies at or after `from` (`SEEK_DATA`); `false` when the
/// file system cannot tell, as then `first_hole` reported the file's size.
fn has_data_after(file: &impl AsRawFd, from: u64) -> bool {
    let Ok(from) = libc::off_t::try_from(from) else {
        return false;
    };
    // SAFETY: lseek on a descriptor we own (positioned I/O only elsewhere).
    unsafe { libc::lseek(file.as_raw_fd(), from, libc::SEEK_DATA) >= 0 }
}

/// Removes `path` if it exists; whether it did.
/// What the cleaner reads of a sealed segment: its data, and what tells
/// whether the segment is still this version when the cleaned copy is
/// swapped in (a truncation replaces the file or changes its size; the
/// cleaner only swaps over the version it read).
#[derive(Clone)]
pub(crate) struct SegmentView {
    pub(crate) base: Offset,
    pub(crate) data: Bytes,
    pub(crate) next_offset: Offset,
    pub(crate) max_timestamp_ms: i64,
    mapping: Mapping,
    file: Rc<BufferedFile>,
    path: PathBuf,
}

impl SegmentView {
    /// Fails with EIO if a read through the mapping faulted (what was read
    /// is then not the file's data).
    pub(crate) fn check(&self) -> Result<(), LogError> {
        self.mapping.check(&self.path)
    }

    pub(crate) fn size(&self) -> u64 {
        self.data.len() as u64
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Segment {
    /// The cleaner's view of this segment; `None` unless it is sealed,
    /// undamaged and readable.
    pub(crate) fn view(&self) -> Option<SegmentView> {
        if !self.sealed || !self.bad.is_empty() || self.io_failed.get() {
            return None;
        }
        Some(SegmentView {
            base: self.base,
            data: self.data(),
            next_offset: self.next_offset,
            max_timestamp_ms: self.max_timestamp_ms,
            mapping: self.mapping.clone(),
            file: Rc::clone(&self.file),
            path: self.path.clone(),
        })
    }

    /// Whether this segment is still the version `view` was taken of.
    pub(crate) fn is_version_of(&self, view: &SegmentView) -> bool {
        self.sealed
            && Rc::ptr_eq(&self.file, &view.file)
            && self.size == view.size()
            && self.next_offset == view.next_offset
            && self.bad.is_empty()
    }
}

/// A step of the cleaner's swap (`cleaner.rs`), after which a test may
/// stop it as a crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SwapStep {
    /// `<base>.log.cleaned` written and fdatasynced.
    CleanedWritten,
    /// Renamed to `<base>.log.swap`, directory synced: the commit point.
    SwapNamed,
    /// The old index removed.
    IndexRemoved,
    /// `<base>.log.swap` renamed over `<base>.log`, directory synced.
    Swapped,
}

#[cfg(test)]
thread_local! {
    /// The step after which `crash_point` fails the swap (tests only).
    pub(crate) static CRASH_AFTER: Cell<Option<SwapStep>> = const { Cell::new(None) };
}

/// In tests, fails the swap after `step` when asked to, leaving the files
/// as a crash there would (the caller then drops the log, as a crash does).
fn crash_point(step: SwapStep) -> Result<(), LogError> {
    #[cfg(test)]
    if CRASH_AFTER.with(Cell::get) == Some(step) {
        return Err(LogError::Failed {
            reason: format!("crash injected after {step:?}"),
        });
    }
    let _ = step;
    Ok(())
}

/// Step 1 of the swap: writes the cleaned `bytes` to `<base>.log.cleaned`
/// and fdatasyncs it, on the executor's blocking pool.
pub(crate) async fn write_cleaned(dir: &Path, base: Offset, bytes: Vec<u8>) -> Result<(), LogError> {
    let path = suffixed_path(dir, base, CLEANED_SUFFIX);
    glommio::executor()
        .spawn_blocking(move || {
            use std::io::Write;
            let written = std::fs::File::create(&path)
                .and_then(|mut file| file.write_all(&bytes).and_then(|()| file.sync_data()))
                .map_err(io_error("writing cleaned segment", &path));
            if written.is_err() {
                // Best effort: open removes it anyway.
                let _ = std::fs::remove_file(&path);
            }
            written
        })
        .await?;
    crash_point(SwapStep::CleanedWritten)
}

/// Steps 2 to 4 of the swap (see `cleaner.rs`): `.cleaned` → `.swap`
/// (durable), old index removed, `.swap` → `<base>.log` (durable). Runs
/// in the writer, after it checked the segment is the version cleaned.
pub(crate) async fn swap_cleaned(dir: &Path, base: Offset) -> Result<(), LogError> {
    let cleaned = suffixed_path(dir, base, CLEANED_SUFFIX);
    let swap = suffixed_path(dir, base, SWAP_SUFFIX);
    let log = log_path(dir, base);
    let (dir_owned, swap_named) = (dir.to_path_buf(), swap.clone());
    glommio::executor()
        .spawn_blocking(move || {
            std::fs::rename(&cleaned, &swap_named).map_err(io_error("naming cleaned segment for swap", &swap_named))?;
            crate::durable::sync_dir(&dir_owned)
        })
        .await?;
    crash_point(SwapStep::SwapNamed)?;
    remove_if_exists(&index_path(dir, base))?;
    crash_point(SwapStep::IndexRemoved)?;
    let dir_owned = dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || {
            std::fs::rename(&swap, &log).map_err(io_error("swapping cleaned segment in", &log))?;
            crate::durable::sync_dir(&dir_owned)
        })
        .await?;
    crash_point(SwapStep::Swapped)
}

/// Removes a cleaned copy that will not be swapped in.
pub(crate) fn discard_cleaned(dir: &Path, base: Offset) -> Result<bool, LogError> {
    remove_if_exists(&suffixed_path(dir, base, CLEANED_SUFFIX))
}

/// At open, before any segment is read: finishes every swap that reached
/// its commit point (`<base>.log.swap` renamed over `<base>.log`, whose
/// stale index goes; a `.swap` without its `<base>.log` is removed) and
/// removes every `.cleaned` copy. Returns how many swaps it finished.
pub(crate) fn finish_interrupted_swaps(dir: &Path, names: &[String]) -> Result<usize, LogError> {
    let mut finished = 0usize;
    let mut changed = false;
    for name in names {
        if let Some(base) = parse_suffixed_name(name, CLEANED_SUFFIX) {
            changed |= discard_cleaned(dir, base)?;
        } else if let Some(base) = parse_suffixed_name(name, SWAP_SUFFIX) {
            let swap = suffixed_path(dir, base, SWAP_SUFFIX);
            let log = log_path(dir, base);
            if log.exists() {
                remove_if_exists(&index_path(dir, base))?;
                std::fs::rename(&swap, &log).map_err(io_error("finishing an interrupted swap", &log))?;
                tracing::info!(base = base.0, "recovery finished a cleaned segment's swap");
                finished += 1;
            } else {
                remove_if_exists(&swap)?;
            }
            changed = true;
        }
    }
    if changed {
        crate::durable::sync_dir(dir)?;
    }
    Ok(finished)
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<bool, LogError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("removing file", path)(e)),
    }
}

/// Removes `path` (a file in `dir`) if it exists, and makes the removal
/// durable before returning: a sync of `dir`, only when something went.
async fn remove_durably(dir: &Path, path: &Path) -> Result<(), LogError> {
    if remove_if_exists(path)? {
        sync_dir(dir).await?;
    }
    Ok(())
}

/// Fsyncs the log directory through io_uring, making the segment and index
/// names created, renamed or removed in it durable.
pub(crate) async fn sync_dir(dir: &Path) -> Result<(), LogError> {
    let directory = glommio::io::Directory::open(dir)
        .await
        .map_err(glommio_error("opening log directory", dir))?;
    directory
        .sync()
        .await
        .map_err(glommio_error("syncing log directory", dir))?;
    let _ = directory.close().await;
    Ok(())
}

const _: () = assert!(BATCH_HEADER_BYTES == 61);
