//! The log's error enum. Each variant keeps what caused it; mapping to Kafka
//! error codes happens once, in the engine.

use std::{fmt, io, path::PathBuf};

use crate::{
    offset::{Offset, Position},
    recovery::BadRange,
};

/// Why a record batch was rejected. Nothing is stored when this is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than the header or the length field asks for.
    Truncated {
        /// Bytes the batch needs.
        needed_bytes: usize,
        /// Bytes that were there.
        available_bytes: usize,
    },
    /// Length field negative or smaller than a header.
    BadLength {
        /// The length field as read.
        batch_length: i32,
    },
    /// Magic byte other than 2.
    BadMagic {
        /// The magic byte as read.
        magic: i8,
    },
    /// CRC-32C over attributes..end does not match the header.
    BadCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// record count ≠ last offset delta + 1, or either is out of range.
    BadRecordCount {
        /// Record count field.
        record_count: i32,
        /// Last offset delta field.
        last_offset_delta: i32,
    },
    /// Attributes name a codec id Kafka does not define.
    UnknownCodec {
        /// The attributes field.
        attributes: i16,
    },
    /// A batch larger than a whole segment can hold.
    TooLarge {
        /// Size of the batch.
        batch_bytes: usize,
        /// The segment bound.
        segment_bytes_max: u64,
    },
    /// An append with no batch at all.
    Empty,
    /// A stored batch does not continue the offsets of the one before it.
    OffsetGap {
        /// Offset the batch should have started at.
        expected: Offset,
        /// Offset it has.
        found: Offset,
    },
    /// An uncompressed batch's records do not match its header: fewer or
    /// more records than it claims, a record that does not fill exactly its
    /// length, or an offset delta other than the record's index.
    BadRecords {
        /// Index of the record where the walk failed.
        record: i32,
        /// What was wrong there.
        reason: &'static str,
    },
    /// A timestamp above the batch's max timestamp (the base timestamp, or a
    /// record's, for CreateTime).
    BadTimestamp {
        /// The timestamp found (ms).
        timestamp_ms: i64,
        /// The header's max timestamp (ms).
        max_timestamp_ms: i64,
    },
    /// A batch claims more records than its section could hold: 7 bytes a
    /// record at least, after decompression at the codec's largest
    /// expansion (see `Codec::expansion_max`).
    TooManyRecords {
        /// Record count field.
        record_count: i32,
        /// Bytes of the (compressed) records section.
        section_bytes: usize,
    },
    /// One append spans more offsets than one segment may hold.
    TooManyOffsets {
        /// Offsets the append spans.
        offsets: i64,
        /// The most one segment may span.
        offsets_max: i64,
    },
    /// A stored batch's offsets or position lie outside what its segment can
    /// hold: below its base, more than `i32::MAX` past it, past the next
    /// segment's base, or beyond the index's 4 GiB of positions.
    OutsideSegment {
        /// The batch's base offset.
        base_offset: Offset,
        /// The segment's base offset.
        segment_base: Offset,
    },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated {
                needed_bytes,
                available_bytes,
            } => {
                write!(
                    f,
                    "truncated batch: needs {needed_bytes} bytes, {available_bytes} given"
                )
            }
            BatchError::BadLength { batch_length } => write!(f, "bad batch length {batch_length}"),
            BatchError::BadMagic { magic } => {
                write!(f, "unsupported magic {magic} (only 2 is accepted)")
            }
            BatchError::BadCrc { stored, computed } => {
                write!(f, "CRC-32C mismatch: header {stored:#010x}, computed {computed:#010x}")
            }
            BatchError::BadRecordCount {
                record_count,
                last_offset_delta,
            } => write!(
                f,
                "record count {record_count} does not match last offset delta {last_offset_delta}"
            ),
            BatchError::UnknownCodec { attributes } => {
                write!(f, "unknown compression codec in attributes {attributes:#x}")
            }
            BatchError::TooLarge {
                batch_bytes,
                segment_bytes_max,
            } => {
                write!(
                    f,
                    "batch of {batch_bytes} bytes exceeds segment_bytes_max {segment_bytes_max}"
                )
            }
            BatchError::Empty => write!(f, "no record batch given"),
            BatchError::OffsetGap { expected, found } => {
                write!(f, "batch starts at offset {found}, expected {expected}")
            }
            BatchError::BadRecords { record, reason } => {
                write!(f, "records do not match the header: record {record}: {reason}")
            }
            BatchError::BadTimestamp {
                timestamp_ms,
                max_timestamp_ms,
            } => write!(
                f,
                "timestamp {timestamp_ms} above the batch's max timestamp {max_timestamp_ms}"
            ),
            BatchError::TooManyRecords {
                record_count,
                section_bytes,
            } => write!(
                f,
                "{record_count} records cannot fit in a records section of {section_bytes} bytes"
            ),
            BatchError::TooManyOffsets { offsets, offsets_max } => {
                write!(
                    f,
                    "an append of {offsets} offsets; one segment holds at most {offsets_max}"
                )
            }
            BatchError::OutsideSegment {
                base_offset,
                segment_base,
            } => write!(
                f,
                "batch at offset {base_offset} lies outside what the segment at {segment_base} can hold"
            ),
        }
    }
}

impl std::error::Error for BatchError {}

/// Errors of the partition log.
#[derive(Debug)]
#[non_exhaustive]
pub enum LogError {
    /// The batch was rejected; the log is unchanged.
    InvalidBatch(BatchError),
    /// An I/O call failed; `context` says which, `path` which file.
    Io {
        /// What the log was doing.
        context: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A read asked for an offset outside `[log_start, log_end]`.
    OffsetOutOfRange {
        /// The requested offset.
        requested: Offset,
        /// First offset still stored.
        log_start: Offset,
        /// Offset the next append will get.
        log_end: Offset,
    },
    /// Stored bytes are not a valid batch where one was expected.
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where in it.
        position: Position,
        /// What was wrong.
        reason: BatchError,
    },
    /// A read asked for offsets in a damaged range of a segment: they are
    /// never served (`shardctl log verify` names the range).
    CorruptRange {
        /// The segment file.
        path: PathBuf,
        /// The range.
        range: BadRange,
    },
    /// A replicated append does not continue the log: its first batch does
    /// not start at the log end, or a batch does not start right after the
    /// one before it. Nothing was stored.
    OffsetMismatch {
        /// Offset the batch had to start at.
        expected: Offset,
        /// Base offset it carries.
        got: Offset,
    },
    /// A previous write failed; the log refuses appends until reopened.
    Failed {
        /// The failure that stopped it.
        reason: String,
    },
    /// The log was closed.
    Closed,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::InvalidBatch(e) => write!(f, "invalid record batch: {e}"),
            LogError::Io { context, path, source } => write!(f, "{context} {}: {source}", path.display()),
            LogError::OffsetOutOfRange {
                requested,
                log_start,
                log_end,
            } => {
                write!(f, "offset {requested} out of range [{log_start}, {log_end}]")
            }
            LogError::Corrupt { path, position, reason } => {
                write!(
                    f,
                    "corrupt batch in {} at position {position}: {reason}",
                    path.display()
                )
            }
            LogError::CorruptRange { path, range } => write!(
                f,
                "offsets {}..{} of {} lie in a damaged range (positions {}..{}: {}) and are not served",
                range.first_offset,
                range.next_offset.0 - 1,
                path.display(),
                range.start,
                range.end,
                range.reason
            ),
            LogError::OffsetMismatch { expected, got } => {
                write!(f, "replicated batch starts at offset {got}, the log expects {expected}")
            }
            LogError::Failed { reason } => {
                write!(f, "log failed earlier and refuses writes: {reason}")
            }
            LogError::Closed => write!(f, "log is closed"),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::InvalidBatch(e) => Some(e),
            LogError::Io { source, .. } => Some(source),
            LogError::Corrupt { reason, .. } => Some(reason),
            LogError::CorruptRange { range, .. } => Some(&range.reason),
            _ => None,
        }
    }
}

impl From<BatchError> for LogError {
    fn from(e: BatchError) -> Self {
        LogError::InvalidBatch(e)
    }
}

impl LogError {
    /// A copy for each of several waiters on one failed operation (an
    /// `io::Error` is not `Clone`; the OS error code and message are kept).
    pub(crate) fn duplicate(&self) -> LogError {
        match self {
            LogError::InvalidBatch(e) => LogError::InvalidBatch(e.clone()),
            LogError::Io { context, path, source } => LogError::Io {
                context,
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            LogError::OffsetOutOfRange {
                requested,
                log_start,
                log_end,
            } => LogError::OffsetOutOfRange {
                requested: *requested,
                log_start: *log_start,
                log_end: *log_end,
            },
            LogError::Corrupt { path, position, reason } => LogError::Corrupt {
                path: path.clone(),
                position: *position,
                reason: reason.clone(),
            },
            LogError::CorruptRange { path, range } => LogError::CorruptRange {
                path: path.clone(),
                range: range.clone(),
            },
            LogError::OffsetMismatch { expected, got } => LogError::OffsetMismatch {
                expected: *expected,
                got: *got,
            },
            LogError::Failed { reason } => LogError::Failed { reason: reason.clone() },
            LogError::Closed => LogError::Closed,
        }
    }

    /// Whether the error means the disk is full (ENOSPC / EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            LogError::Io { source, .. } => matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)),
            _ => false,
        }
    }
}

pub(crate) fn io_error<'a>(
    context: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        context,
        path: path.to_path_buf(),
        source,
    }
}

/// Converts a glommio error, keeping the underlying `io::Error`.
pub(crate) fn glommio_error<'a>(
    context: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(glommio::GlommioError<()>) -> LogError + 'a {
    move |source| LogError::Io {
        context,
        path: path.to_path_buf(),
        source: io::Error::from(source),
    }
}
