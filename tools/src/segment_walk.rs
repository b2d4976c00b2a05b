//! Reading a partition directory offline: which segment files it holds, and
//! the record batches inside each one, in file order.
//!
//! A segment is `<base_offset>.log`: RecordBatch v2 batches back to back (the
//! layout is drawn at the top of `log/src/batch.rs`), then, in the active
//! segment, zero fill up to the file's fixed size:
//!
//! ```text
//!  position 0                                        data end              file end
//!  | batch | batch | batch | ... | batch |  0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 |
//!  base offsets run on: next base = base + last_offset_delta + 1
//! ```
//!
//! Where the data ends is found the way recovery finds it: at the first
//! position that does not hold a valid batch header. If everything from there
//! to the end of the file is zero, that is the normal end; otherwise the bytes
//! there are a torn or damaged batch.
//!
//! Files are read with positioned `read`s into one reused buffer, never
//! memory-mapped: the directory may belong to a running broker, which shrinks
//! a segment when it seals it, and an access to a mapping past a file's new end
//! raises SIGBUS where a read only comes up short (an I/O error here).
//! At most one batch is held in memory — or, to resume after damaged bytes,
//! the rest of the file; a batch is never larger than what is left of its
//! file, which bounds the buffer by the segment size.

use std::{
    fs::{self, File},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use shardline_log::{
    find_next_batch, parse_log_name, validate_stored, validate_stored_header, BatchError, BatchHeader, Offset,
    Position, SegmentBounds, BATCH_HEADER_BYTES,
};

use crate::error::{io_error, ToolError};

/// Bytes read at a time while checking that a file's tail is zero fill.
/// 1 MiB: a default 128 MiB active segment takes 128 reads, and the buffer
/// stays small next to the page cache it reads from.
const TAIL_CHUNK_BYTES: usize = 1 << 20;

/// One `<base_offset>.log` file of a partition directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    /// Base offset parsed from the file name.
    pub(crate) base: Offset,
    /// The file name, e.g. `00000000000000000000.log`.
    pub(crate) file_name: String,
    /// Full path of the file.
    pub(crate) path: PathBuf,
    /// Size of the sibling `<base_offset>.index` file, if there is one. The
    /// index is derived data (its format is private to the log), so it is only
    /// reported, never checked.
    pub(crate) index_bytes: Option<u64>,
}

/// Lists the segment files of `dir` in base-offset order (then by name, so two
/// spellings of one base, e.g. `7.log` and `00000000000000000007.log`, come out
/// in a fixed order and the second fails offset continuity). Other files are
/// ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, ToolError> {
    match fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(ToolError::NotADirectory {
                path: dir.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ToolError::MissingDirectory {
                path: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(io_error("reading partition directory", dir)(e)),
    }
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("listing partition directory", dir))? {
        let entry = entry.map_err(io_error("listing partition directory", dir))?;
        let Ok(file_name) = entry.file_name().into_string() else {
            continue; // Not UTF-8, so not a name the log writes.
        };
        let Some(base) = parse_log_name(&file_name) else {
            continue;
        };
        let path = entry.path();
        let index_path = path.with_extension("index");
        let index_bytes = match fs::metadata(&index_path) {
            Ok(metadata) => Some(metadata.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error("reading index metadata", &index_path)(e)),
        };
        segments.push(SegmentFile {
            base,
            file_name,
            path,
            index_bytes,
        });
    }
    if segments.is_empty() {
        return Err(ToolError::NoSegments {
            path: dir.to_path_buf(),
        });
    }
    segments.sort_by(|a, b| (a.base, &a.file_name).cmp(&(b.base, &b.file_name)));
    assert!(segments.is_sorted_by_key(|segment| segment.base));
    Ok(segments)
}

/// Whether a batch's stored CRC-32C matches its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrcCheck {
    /// The CRC matches.
    Ok,
    /// The CRC does not match: the batch's bytes changed after it was written.
    Bad {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes as read.
        computed: u32,
    },
}

/// A batch whose header is valid (its CRC may still be bad).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalkedBatch {
    /// Where the batch starts in its file.
    pub(crate) position: Position,
    /// The decoded header.
    pub(crate) header: BatchHeader,
    /// Offset of its last record. Saturates: a damaged base offset near
    /// `i64::MAX` must not overflow (it fails continuity instead).
    pub(crate) last_offset: Offset,
    /// The offset the batch should start at: where the one before it ended
    /// (the segment's base offset for its first batch).
    pub(crate) expected_offset: Offset,
    /// Result of the CRC-32C check.
    pub(crate) crc: CrcCheck,
}

impl WalkedBatch {
    /// Whole size of the batch in bytes.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.header.total_bytes() as u64
    }

    /// Whether the batch starts where the previous one ended.
    pub(crate) fn offset_continues(&self) -> bool {
        self.header.base_offset == self.expected_offset
    }
}

/// Bytes that are neither a valid batch nor zero fill. Walking stops there
/// (`SegmentWalker::resume` goes on at the next valid batch, if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broken {
    /// Where the bad bytes start (where a batch header was expected).
    pub(crate) position: Position,
    /// The offset a batch at `position` should have started at.
    pub(crate) expected_offset: Offset,
    /// Why the bytes at `position` are not a valid batch header.
    pub(crate) reason: BatchError,
    /// First non-zero byte at or after `position`: proof the file does not
    /// simply end in zero fill there.
    pub(crate) first_nonzero: Position,
}

/// One step of walking a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The next batch.
    Batch(WalkedBatch),
    /// No more batches: everything from `data_end` to the end of the file is
    /// zero (possibly nothing). The last step of a healthy file.
    End {
        /// Position after the last batch.
        data_end: Position,
    },
    /// The last step of a damaged file.
    Broken(Broken),
}

/// Walks the batches of one segment file from position 0. An iterator of
/// steps; it ends after [`Step::End`], [`Step::Broken`] or an error.
pub(crate) struct SegmentWalker {
    file: File,
    path: PathBuf,
    file_bytes: u64,
    /// The segment's base offset.
    base: Offset,
    /// Where the next batch header is expected.
    position: u64,
    /// The offset the next batch should start at.
    expected_offset: Offset,
    /// Holds the batch being checked; reused so memory stays at one batch.
    buffer: Vec<u8>,
    finished: bool,
}

impl SegmentWalker {
    /// Opens `segment`; its first batch should start at the segment's base offset.
    pub(crate) fn open(segment: &SegmentFile) -> Result<SegmentWalker, ToolError> {
        let file = File::open(&segment.path).map_err(io_error("opening segment", &segment.path))?;
        let file_bytes = file
            .metadata()
            .map_err(io_error("reading segment metadata", &segment.path))?
            .len();
        Ok(SegmentWalker {
            file,
            path: segment.path.clone(),
            file_bytes,
            base: segment.base,
            position: 0,
            expected_offset: segment.base,
            buffer: Vec::with_capacity(BATCH_HEADER_BYTES),
            finished: false,
        })
    }

    /// Size of the file when it was opened.
    pub(crate) fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The offset the next batch should start at: after a finished walk, where
    /// this segment's data ends (and so where the next segment should begin).
    pub(crate) fn expected_offset(&self) -> Offset {
        self.expected_offset
    }

    /// Reads `bytes` bytes at `position` into the reused buffer.
    fn read_into_buffer(&mut self, position: u64, bytes: u64) -> Result<(), ToolError> {
        assert!(position + bytes <= self.file_bytes, "read past the end of the file");
        let length = usize::try_from(bytes).map_err(|_| ToolError::Io {
            context: "reading segment",
            path: self.path.clone(),
            source: io::Error::other("batch larger than the address space"),
        })?;
        self.buffer.clear();
        self.buffer.resize(length, 0);
        self.file
            .read_exact_at(&mut self.buffer, position)
            .map_err(io_error("reading segment", &self.path))?;
        assert_eq!(self.buffer.len(), length);
        Ok(())
    }

    /// Checks the bytes at `position` as a batch and leaves it whole in the
    /// buffer. `Ok(Err(reason))` when they are not a valid batch header.
    fn read_batch(&mut self, position: u64) -> Result<Result<(BatchHeader, CrcCheck), BatchError>, ToolError> {
        let remaining_bytes = self.file_bytes - position;
        let head_bytes = remaining_bytes.min(BATCH_HEADER_BYTES as u64);
        self.read_into_buffer(position, head_bytes)?;
        let Some(header) = BatchHeader::parse(&self.buffer) else {
            return Ok(Err(BatchError::Truncated {
                needed_bytes: BATCH_HEADER_BYTES,
                available_bytes: self.buffer.len(),
            }));
        };
        // Read the whole batch only when its length fits in the file, so a
        // damaged length field cannot make the tool allocate gigabytes.
        let total_bytes = header.total_bytes() as u64;
        if total_bytes > remaining_bytes {
            return Ok(Err(BatchError::Truncated {
                needed_bytes: header.total_bytes(),
                available_bytes: usize::try_from(remaining_bytes).unwrap_or(usize::MAX),
            }));
        }
        if total_bytes > head_bytes {
            self.read_into_buffer(position, total_bytes)?;
        }
        // Exactly the checks the log applies on recovery (a stored batch may
        // be compacted: fewer records than offsets).
        let header = match validate_stored_header(&self.buffer) {
            Ok(header) => header,
            Err(reason) => return Ok(Err(reason)),
        };
        let crc = match validate_stored(&self.buffer) {
            Ok(_) => CrcCheck::Ok,
            Err(BatchError::BadCrc { stored, computed }) => CrcCheck::Bad { stored, computed },
            Err(reason) => return Ok(Err(reason)),
        };
        assert_eq!(header.total_bytes() as u64, total_bytes);
        Ok(Ok((header, crc)))
    }

    /// First non-zero byte at or after `from`, if any.
    fn first_nonzero_from(&mut self, from: u64) -> Result<Option<u64>, ToolError> {
        let mut position = from;
        while position < self.file_bytes {
            let chunk_bytes = (self.file_bytes - position).min(TAIL_CHUNK_BYTES as u64);
            self.read_into_buffer(position, chunk_bytes)?;
            if let Some(index) = self.buffer.iter().position(|byte| *byte != 0) {
                return Ok(Some(position + index as u64));
            }
            position += chunk_bytes;
        }
        Ok(None)
    }

    fn step(&mut self) -> Result<Step, ToolError> {
        let position = self.position;
        assert!(position <= self.file_bytes, "walked past the end of the file");
        if position == self.file_bytes {
            return Ok(Step::End {
                data_end: Position(position),
            });
        }
        let reason = match self.read_batch(position)? {
            Ok((header, crc)) => {
                let last_offset = Offset(header.base_offset.0.saturating_add(i64::from(header.last_offset_delta)));
                let batch = WalkedBatch {
                    position: Position(position),
                    header,
                    last_offset,
                    expected_offset: self.expected_offset,
                    crc,
                };
                // Follow the batch's own offsets, so one gap is reported once.
                self.expected_offset = Offset(last_offset.0.saturating_add(1));
                self.position = position + batch.size_bytes();
                assert!(self.position > position, "a batch is at least a header long");
                return Ok(Step::Batch(batch));
            }
            Err(reason) => reason,
        };
        Ok(match self.first_nonzero_from(position)? {
            None => Step::End {
                data_end: Position(position),
            },
            Some(first_nonzero) => Step::Broken(Broken {
                position: Position(position),
                expected_offset: self.expected_offset,
                reason,
                first_nonzero: Position(first_nonzero),
            }),
        })
    }
}

impl SegmentWalker {
    /// After `broken`: finds the next valid batch in the rest of the file the
    /// way recovery does (`shardline_log::find_next_batch`), and walks on from
    /// there. Reads the rest of the file into memory (at most the segment's
    /// size). Returns where it resumed, or `None` when nothing valid follows.
    pub(crate) fn resume(&mut self, broken: &Broken) -> Result<Option<(Position, Offset)>, ToolError> {
        let position = broken.position.0;
        self.read_into_buffer(position, self.file_bytes - position)?;
        let bounds = SegmentBounds {
            base: self.base,
            next_base: None,
        };
        let Some((skip, header)) = find_next_batch(&self.buffer, 0, broken.expected_offset, bounds) else {
            return Ok(None);
        };
        assert!(skip > 0, "the broken bytes are not a valid batch");
        self.position = position + skip as u64;
        self.expected_offset = header.base_offset;
        self.finished = false;
        Ok(Some((Position(self.position), header.base_offset)))
    }
}

impl Iterator for SegmentWalker {
    type Item = Result<Step, ToolError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let step = self.step();
        self.finished = !matches!(step, Ok(Step::Batch(_)));
        Some(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_log::{build_batch, set_base_offset, BatchSpec};

    /// A valid batch of `records` records at `base`, with `payload_bytes` of payload.
    fn batch_at(base: i64, records: i32, payload_bytes: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_bytes).map(|i| (i % 251) as u8 + 1).collect();
        let mut batch = build_batch(&BatchSpec::plain(records, 1_700_000_000_000, &payload));
        set_base_offset(&mut batch, Offset(base));
        batch
    }

    fn segment_with(dir: &Path, base: i64, bytes: &[u8]) -> SegmentFile {
        let file_name = format!("{base:020}.log");
        let path = dir.join(&file_name);
        fs::write(&path, bytes).unwrap();
        SegmentFile {
            base: Offset(base),
            file_name,
            path,
            index_bytes: None,
        }
    }

    fn walk(segment: &SegmentFile) -> Vec<Step> {
        SegmentWalker::open(segment).unwrap().map(Result::unwrap).collect()
    }

    fn positions_of_batches(steps: &[Step]) -> Vec<u64> {
        steps
            .iter()
            .filter_map(|step| match step {
                Step::Batch(batch) => Some(batch.position.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn healthy_file_with_zero_fill_ends_after_the_last_batch() {
        let dir = tempfile::tempdir().unwrap();
        let first = batch_at(10, 3, 100);
        let second = batch_at(13, 2, 50);
        let mut bytes = [first.clone(), second.clone()].concat();
        let data_bytes = bytes.len() as u64;
        bytes.resize(4096, 0);
        let steps = walk(&segment_with(dir.path(), 10, &bytes));
        assert_eq!(steps.len(), 3);
        assert_eq!(positions_of_batches(&steps), vec![0, first.len() as u64]);
        let Step::Batch(last) = &steps[1] else {
            panic!("{steps:?}")
        };
        assert_eq!((last.header.base_offset, last.last_offset), (Offset(13), Offset(14)));
        assert_eq!(last.expected_offset, Offset(13));
        assert_eq!(last.crc, CrcCheck::Ok);
        assert_eq!(
            steps[2],
            Step::End {
                data_end: Position(data_bytes)
            }
        );
    }

    #[test]
    fn file_that_ends_exactly_after_its_data_and_empty_file_are_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = batch_at(0, 1, 10);
        let steps = walk(&segment_with(dir.path(), 0, &bytes));
        assert_eq!(
            steps.last(),
            Some(&Step::End {
                data_end: Position(bytes.len() as u64)
            })
        );
        let steps = walk(&segment_with(dir.path(), 5, &[]));
        assert_eq!(steps, vec![Step::End { data_end: Position(0) }]);
        let steps = walk(&segment_with(dir.path(), 6, &[0; 10]));
        assert_eq!(steps, vec![Step::End { data_end: Position(0) }]);
    }

    #[test]
    fn flipped_payload_byte_is_a_bad_crc_and_the_walk_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = [batch_at(0, 1, 100), batch_at(1, 1, 100), batch_at(2, 1, 100)].concat();
        let second_position = bytes.len() / 3;
        bytes[second_position + BATCH_HEADER_BYTES + 7] ^= 0x10;
        let steps = walk(&segment_with(dir.path(), 0, &bytes));
        assert_eq!(steps.len(), 4);
        let Step::Batch(bad) = &steps[1] else {
            panic!("{steps:?}")
        };
        assert!(matches!(bad.crc, CrcCheck::Bad { stored, computed } if stored != computed));
        assert_eq!(bad.position, Position(second_position as u64));
        assert!(matches!(&steps[2], Step::Batch(b) if b.crc == CrcCheck::Ok));
    }

    #[test]
    fn offset_gap_is_reported_once_and_the_walk_follows_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = [batch_at(0, 2, 10), batch_at(5, 1, 10), batch_at(6, 1, 10)].concat();
        let steps = walk(&segment_with(dir.path(), 0, &bytes));
        let continues: Vec<bool> = steps
            .iter()
            .filter_map(|step| match step {
                Step::Batch(batch) => Some(batch.offset_continues()),
                _ => None,
            })
            .collect();
        assert_eq!(continues, vec![true, false, true]);
        let Step::Batch(gap) = &steps[1] else {
            panic!("{steps:?}")
        };
        assert_eq!(gap.expected_offset, Offset(2));
    }

    #[test]
    fn first_batch_must_start_at_the_segment_base() {
        let dir = tempfile::tempdir().unwrap();
        let steps = walk(&segment_with(dir.path(), 100, &batch_at(99, 1, 10)));
        let Step::Batch(first) = &steps[0] else {
            panic!("{steps:?}")
        };
        assert!(!first.offset_continues());
        assert_eq!(first.expected_offset, Offset(100));
    }

    #[test]
    fn torn_batch_before_zero_fill_is_a_bad_crc_not_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let good = batch_at(0, 1, 100);
        let torn = batch_at(1, 1, 100);
        let mut bytes = [good.clone(), torn[..80].to_vec()].concat();
        bytes.resize(1000, 0);
        let steps = walk(&segment_with(dir.path(), 0, &bytes));
        assert_eq!(steps.len(), 3);
        // The torn header is whole and its length fits, so it reads as a batch
        // whose CRC fails: the rest of its body is zeros now.
        let Step::Batch(torn) = &steps[1] else {
            panic!("{steps:?}")
        };
        assert_eq!(torn.position, Position(good.len() as u64));
        assert_eq!(torn.expected_offset, Offset(1));
        assert!(matches!(torn.crc, CrcCheck::Bad { .. }), "{torn:?}");
        assert_eq!(
            steps[2],
            Step::End {
                data_end: Position((good.len() * 2) as u64)
            }
        );
    }

    #[test]
    fn torn_header_before_zero_fill_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let good = batch_at(0, 1, 100);
        let torn = batch_at(1, 1, 100);
        let mut bytes = [good.clone(), torn[..30].to_vec()].concat();
        bytes.resize(1000, 0);
        let steps = walk(&segment_with(dir.path(), 0, &bytes));
        assert_eq!(steps.len(), 2);
        let Step::Broken(broken) = &steps[1] else {
            panic!("{steps:?}")
        };
        assert_eq!(broken.position, Position(good.len() as u64));
        assert_eq!(broken.expected_offset, Offset(1));
        assert_eq!(broken.first_nonzero, Position(good.len() as u64 + 7));
        // A stored batch may hold fewer records than offsets (compaction),
        // so the zeroed count passes; the torn timestamps do not.
        assert!(matches!(broken.reason, BatchError::BadTimestamp { .. }), "{broken:?}");
    }

    #[test]
    fn garbage_after_the_data_is_broken_with_the_first_nonzero_byte() {
        let dir = tempfile::tempdir().unwrap();
        let good = batch_at(0, 1, 100);
        let mut bytes = good.clone();
        bytes.resize(good.len() + 200, 0);
        bytes[good.len() + 150] = 0xff;
        let steps = walk(&segment_with(dir.path(), 0, &bytes));
        let Step::Broken(broken) = &steps[1] else {
            panic!("{steps:?}")
        };
        assert_eq!(broken.position, Position(good.len() as u64));
        assert_eq!(broken.first_nonzero, Position(good.len() as u64 + 150));
        assert_eq!(broken.reason, BatchError::BadLength { batch_length: 0 });
    }

    #[test]
    fn short_or_oversized_headers_are_broken_without_reading_past_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = batch_at(0, 1, 10);
        let short = [good.clone(), vec![7; 20]].concat();
        let steps = walk(&segment_with(dir.path(), 0, &short));
        let Step::Broken(broken) = &steps[1] else {
            panic!("{steps:?}")
        };
        assert_eq!(
            broken.reason,
            BatchError::Truncated {
                needed_bytes: BATCH_HEADER_BYTES,
                available_bytes: 20
            }
        );

        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        let steps = walk(&segment_with(dir.path(), 1, &huge));
        let Step::Broken(broken) = &steps[0] else {
            panic!("{steps:?}")
        };
        assert!(matches!(broken.reason, BatchError::Truncated { .. }), "{broken:?}");

        let mut negative = good;
        negative[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        let steps = walk(&segment_with(dir.path(), 2, &negative));
        let Step::Broken(broken) = &steps[0] else {
            panic!("{steps:?}")
        };
        assert_eq!(broken.reason, BatchError::BadLength { batch_length: -1 });
    }

    #[test]
    fn damaged_base_offset_near_the_maximum_saturates_instead_of_overflowing() {
        let dir = tempfile::tempdir().unwrap();
        let steps = walk(&segment_with(dir.path(), 0, &batch_at(i64::MAX, 5, 10)));
        let Step::Batch(batch) = &steps[0] else {
            panic!("{steps:?}")
        };
        assert_eq!(batch.last_offset, Offset(i64::MAX));
        assert!(!batch.offset_continues());
    }

    #[test]
    fn listing_sorts_by_base_offset_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "00000000000000000200.log",
            "00000000000000000010.log",
            "00000000000000000010.index",
            "00000000000000000200.log.tmp",
            "notes.log",
            "-5.log",
            "leader-epoch-checkpoint",
        ] {
            fs::write(dir.path().join(name), b"xyz").unwrap();
        }
        let segments = list_segments(dir.path()).unwrap();
        let names: Vec<&str> = segments.iter().map(|s| s.file_name.as_str()).collect();
        assert_eq!(names, vec!["00000000000000000010.log", "00000000000000000200.log"]);
        assert_eq!(segments[0].base, Offset(10));
        assert_eq!(segments[0].index_bytes, Some(3));
        assert_eq!(segments[1].index_bytes, None);
    }

    #[test]
    fn listing_says_what_is_wrong_with_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(list_segments(dir.path()), Err(ToolError::NoSegments { .. })));
        let missing = dir.path().join("missing");
        assert!(matches!(
            list_segments(&missing),
            Err(ToolError::MissingDirectory { .. })
        ));
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(matches!(list_segments(&file), Err(ToolError::NotADirectory { .. })));
    }
}
