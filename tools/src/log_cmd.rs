//! `shardctl log ...`: offline inspection of one partition directory.
//!
//! - `dump DIR` prints every segment and every batch header in it, like Kafka's
//!   `kafka-dump-log`, marking what is wrong without stopping at it (except
//!   where a file's bytes stop being batches at all: that file ends there).
//! - `verify DIR` checks everything the way recovery does (the log crate's
//!   `scan_segment`, on each whole segment file read into memory) and names
//!   every problem: each damaged or refused range with its file positions and
//!   offsets (recovery keeps it on disk and never serves it), a torn tail,
//!   and a segment file that does not continue the one before it.
//!
//! `dump` uses the walk in `segment_walk.rs`; both use the log crate's own
//! batch validation, so "valid" here means exactly what it means to the
//! broker.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use clap::{Args, Subcommand};
use shardline_log::{scan_segment, BadRange, Offset, Position, RecoveryPoint, SegmentBounds, SegmentScan, TornTail};

use crate::{
    error::{io_error, ToolError},
    report::{Report, Verdict},
    segment_walk::{list_segments, Broken, CrcCheck, SegmentWalker, Step, WalkedBatch},
};

/// The `shardctl log` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum LogCommand {
    /// Print every segment file and record batch of a partition, like kafka-dump-log.
    ///
    /// One line per batch: offsets, file position, size, record count,
    /// timestamps, codec, producer fields and CRC status; then where each
    /// file's data ends. Problems are marked (`crc=BAD`, lines starting with
    /// `!`) and the dump goes on; exits 1 if it marked any.
    Dump(DirArgs),
    /// Check every batch of a partition as recovery would; exit 1 on corruption.
    ///
    /// Checks each batch's header, records and CRC-32C, offset continuity
    /// within and across segment files, and that only zeros follow the data.
    /// Prints a one-line summary and exits 0 when healthy; otherwise prints
    /// every problem — a damaged range as `positions=FROM..TO offsets=A..B`,
    /// a torn tail or a segment gap as `first_bad_offset= position=` — then
    /// what is valid, and exits 1.
    Verify(DirArgs),
}

/// The partition directory argument.
#[derive(Debug, Args)]
pub(crate) struct DirArgs {
    /// Partition directory: the one holding the `<base_offset>.log` segment files.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// Runs a `shardctl log` subcommand, writing its output to `report`.
pub(crate) fn run(command: &LogCommand, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    match command {
        LogCommand::Dump(args) => dump(&args.dir, report),
        LogCommand::Verify(args) => verify(&args.dir, report),
    }
}

/// Counts of what a command read: for `verify`, the valid part of the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    segments: u64,
    batches: u64,
    records: u64,
    batch_bytes: u64,
}

impl Totals {
    fn add_scan(&mut self, scan: &SegmentScan) {
        self.segments += 1;
        self.batches += scan.batches;
        self.records += scan.records;
        self.batch_bytes += scan.batch_bytes;
    }

    fn add_batch(&mut self, batch: &WalkedBatch) {
        self.batches += 1;
        // Validated batches have a positive record count.
        self.records += u64::try_from(batch.header.record_count).unwrap_or(0);
        self.batch_bytes += batch.size_bytes();
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segments={} batches={} records={} bytes={}",
            self.segments, self.batches, self.records, self.batch_bytes
        )
    }
}

/// The offsets `[first, next)` as `first..last`, or `none` for an empty range.
struct OffsetRange {
    first: Offset,
    next: Offset,
}

impl fmt::Display for OffsetRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.next > self.first {
            write!(f, "{}..{}", self.first, self.next.0 - 1)
        } else {
            write!(f, "none (next offset {})", self.next)
        }
    }
}

/// One `dump` line for a batch.
struct BatchLine<'a>(&'a WalkedBatch);

impl fmt::Display for BatchLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let batch = self.0;
        let header = &batch.header;
        write!(
            f,
            "offsets={}..{} position={} size={} records={} base_timestamp_ms={} max_timestamp_ms={} codec={} \
             producer_id={} producer_epoch={} base_sequence={} leader_epoch={} control={} ",
            header.base_offset,
            batch.last_offset,
            batch.position,
            batch.size_bytes(),
            header.record_count,
            header.base_timestamp_ms,
            header.max_timestamp_ms,
            // Validated batches always name a known codec.
            header.codec().map_or("unknown", |codec| codec.name()),
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            header.partition_leader_epoch,
            header.is_control(),
        )?;
        match batch.crc {
            CrcCheck::Ok => write!(f, "crc=ok"),
            CrcCheck::Bad { stored, computed } => write!(f, "crc=BAD stored={stored:#010x} computed={computed:#010x}"),
        }
    }
}

/// Where a healthy file's data ends, and what follows it.
fn describe_end(data_end: Position, file_bytes: u64) -> String {
    assert!(data_end.0 <= file_bytes, "data cannot end past the file");
    let zero_fill_bytes = file_bytes - data_end.0;
    if zero_fill_bytes == 0 {
        format!("end of data at position {data_end}: the end of the file")
    } else {
        format!(
            "end of data at position {data_end}: the remaining {zero_fill_bytes} bytes (to {file_bytes}) are zero fill"
        )
    }
}

/// Why the bytes a walk stopped at are damaged.
fn describe_broken(broken: &Broken) -> String {
    assert!(
        broken.first_nonzero >= broken.position,
        "non-zero byte found before the stop"
    );
    format!(
        "not a batch and not zero fill: {} (first non-zero byte at position {})",
        broken.reason, broken.first_nonzero
    )
}

/// Why a segment file's name does not continue the data before it.
fn segment_gap(base: Offset, expected: Offset) -> String {
    format!(
        "segment file starts at offset {base}, but the data before it ends at offset {expected} \
         (a segment file is missing, extra or misnamed)"
    )
}

/// One `verify` line for a range recovery keeps out of the log.
struct RangeLine<'a> {
    path: &'a Path,
    range: &'a BadRange,
}

impl fmt::Display for RangeLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt: file={} positions={}..{} offsets={} reason={} (kept on disk, never served)",
            self.path.display(),
            self.range.start,
            self.range.end,
            OffsetRange {
                first: self.range.first_offset,
                next: self.range.next_offset,
            },
            self.range.reason
        )
    }
}

/// One `verify` line for a torn tail (or garbage after the data).
fn torn_line(path: &Path, expected: Offset, torn: &TornTail) -> String {
    let broken = Broken {
        position: torn.position,
        expected_offset: expected,
        reason: torn.reason.clone(),
        first_nonzero: torn.first_nonzero,
    };
    format!(
        "corrupt: file={} first_bad_offset={expected} position={} reason={}",
        path.display(),
        torn.position,
        describe_broken(&broken)
    )
}

fn verify(dir: &Path, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let segments = list_segments(dir)?;
    let Some(log_start) = segments.first().map(|segment| segment.base) else {
        return Err(ToolError::NoSegments {
            path: dir.to_path_buf(),
        });
    };
    let recovery_point = shardline_log::recovery_point::read(dir);
    let mut totals = Totals::default();
    let mut expected = log_start;
    let mut problems = 0u64;
    for (index, segment) in segments.iter().enumerate() {
        if segment.base != expected {
            problems += 1;
            report.line(format_args!(
                "corrupt: file={} first_bad_offset={expected} position=0 reason={}",
                segment.path.display(),
                segment_gap(segment.base, expected)
            ))?;
        }
        let bytes = std::fs::read(&segment.path).map_err(io_error("reading segment", &segment.path))?;
        let bounds = SegmentBounds {
            base: segment.base,
            next_base: segments.get(index + 1).map(|next| next.base),
        };
        // As recovery reads it: a sealed segment (its index written after
        // its fsync) was durable whole; otherwise as far as the partition's
        // recovery point says, and damage past it is a torn tail.
        let sealed = segment.path.with_extension("index").exists();
        let synced_to = if sealed {
            Position(u64::MAX)
        } else {
            RecoveryPoint::synced_in(recovery_point, segment.base)
        };
        let scan = scan_segment(&bytes, bounds, synced_to);
        for range in &scan.bad {
            problems += 1;
            let line = RangeLine {
                path: &segment.path,
                range,
            };
            report.line(format_args!("{line}"))?;
        }
        if let Some(torn) = &scan.torn {
            problems += 1;
            report.line(format_args!("{}", torn_line(&segment.path, scan.next_offset, torn)))?;
        }
        totals.add_scan(&scan);
        expected = scan.next_offset;
    }
    assert_eq!(totals.segments, segments.len() as u64);
    let offsets = OffsetRange {
        first: log_start,
        next: expected,
    };
    if problems == 0 {
        report.line(format_args!("ok: {totals} offsets={offsets}"))?;
        return Ok(Verdict::Healthy);
    }
    report.line(format_args!("valid: {totals} offsets={offsets} problems={problems}"))?;
    Ok(Verdict::Corrupt)
}

fn dump(dir: &Path, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let segments = list_segments(dir)?;
    report.line(format_args!(
        "partition directory {}: {} segment file{}",
        dir.display(),
        segments.len(),
        if segments.len() == 1 { "" } else { "s" }
    ))?;
    let mut totals = Totals::default();
    let mut problems = 0u64;
    // Where the previous segment's data ended; `None` after a damaged file,
    // whose end is unknown, so the next file is not blamed for it.
    let mut previous_end: Option<Offset> = None;
    for segment in &segments {
        let mut walker = SegmentWalker::open(segment)?;
        let file_bytes = walker.file_bytes();
        let index = match segment.index_bytes {
            Some(index_bytes) => format!("index file {index_bytes} bytes"),
            None => "no index file".to_owned(),
        };
        report.line(format_args!(
            "segment {}: base offset {}, {file_bytes} bytes, {index}",
            segment.file_name, segment.base
        ))?;
        if let Some(expected) = previous_end.filter(|expected| *expected != segment.base) {
            problems += 1;
            report.line(format_args!("  ! {}", segment_gap(segment.base, expected)))?;
        }
        previous_end = None;
        while let Some(step) = walker.next() {
            match step? {
                Step::Batch(batch) => {
                    report.line(format_args!("  {}", BatchLine(&batch)))?;
                    if batch.crc != CrcCheck::Ok {
                        problems += 1;
                    }
                    if !batch.offset_continues() {
                        problems += 1;
                        report.line(format_args!(
                            "  ! offset gap: batch starts at offset {}, expected {}",
                            batch.header.base_offset, batch.expected_offset
                        ))?;
                    }
                    totals.add_batch(&batch);
                }
                Step::End { data_end } => {
                    report.line(format_args!("  {}", describe_end(data_end, file_bytes)))?;
                    previous_end = Some(walker.expected_offset());
                }
                Step::Broken(broken) => {
                    problems += 1;
                    let resumed = match walker.resume(&broken)? {
                        Some((position, offset)) => {
                            format!("resumed at position {position}, the next valid batch (offset {offset})")
                        }
                        None => "no valid batch follows; stopped reading this file".to_owned(),
                    };
                    report.line(format_args!(
                        "  ! position {} (a batch starting at offset {} was expected): {}; {resumed}",
                        broken.position,
                        broken.expected_offset,
                        describe_broken(&broken)
                    ))?;
                }
            }
        }
        totals.segments += 1;
    }
    report.line(format_args!("dumped {totals} problems={problems}"))?;
    Ok(if problems == 0 {
        Verdict::Healthy
    } else {
        Verdict::Corrupt
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_log::{build_batch, set_base_offset, BatchError, BatchHeader, BatchSpec};

    fn walked(base: i64, records: i32, crc: CrcCheck, expected: i64) -> WalkedBatch {
        let mut spec = BatchSpec::plain(records, 1_700_000_000_000, b"payload");
        spec.attributes = 4; // zstd
        spec.producer_id = 42;
        spec.producer_epoch = 3;
        spec.base_sequence = 7;
        let mut bytes = build_batch(&spec);
        set_base_offset(&mut bytes, Offset(base));
        let header = BatchHeader::parse(&bytes).unwrap();
        WalkedBatch {
            position: Position(4096),
            header,
            last_offset: Offset(base + i64::from(records) - 1),
            expected_offset: Offset(expected),
            crc,
        }
    }

    #[test]
    fn batch_line_names_every_field() {
        let line = BatchLine(&walked(10, 3, CrcCheck::Ok, 10)).to_string();
        assert_eq!(
            line,
            "offsets=10..12 position=4096 size=68 records=3 base_timestamp_ms=1700000000000 \
             max_timestamp_ms=1700000000000 codec=zstd producer_id=42 producer_epoch=3 base_sequence=7 \
             leader_epoch=-1 control=false crc=ok"
        );
        let bad = CrcCheck::Bad {
            stored: 0xdead_beef,
            computed: 0x1,
        };
        let line = BatchLine(&walked(10, 3, bad, 10)).to_string();
        assert!(
            line.ends_with("crc=BAD stored=0xdeadbeef computed=0x00000001"),
            "{line}"
        );
    }

    #[test]
    fn range_line_names_positions_and_offsets() {
        let range = BadRange {
            start: Position(100),
            end: Position(300),
            first_offset: Offset(7),
            next_offset: Offset(9),
            reason: BatchError::BadCrc { stored: 1, computed: 2 },
        };
        let path = Path::new("/d/00000000000000000000.log");
        assert_eq!(
            RangeLine { path, range: &range }.to_string(),
            format!(
                "corrupt: file=/d/00000000000000000000.log positions=100..300 offsets=7..8 reason={} \
                 (kept on disk, never served)",
                range.reason
            )
        );
    }

    #[test]
    fn offset_range_is_inclusive_or_none() {
        let range = |first, next| {
            OffsetRange {
                first: Offset(first),
                next: Offset(next),
            }
            .to_string()
        };
        assert_eq!(range(0, 300), "0..299");
        assert_eq!(range(5, 6), "5..5");
        assert_eq!(range(7, 7), "none (next offset 7)");
    }

    #[test]
    fn end_and_broken_descriptions_give_positions() {
        assert_eq!(
            describe_end(Position(100), 100),
            "end of data at position 100: the end of the file"
        );
        assert_eq!(
            describe_end(Position(100), 4096),
            "end of data at position 100: the remaining 3996 bytes (to 4096) are zero fill"
        );
        let broken = Broken {
            position: Position(100),
            expected_offset: Offset(9),
            reason: BatchError::BadLength { batch_length: 0 },
            first_nonzero: Position(150),
        };
        let reason = BatchError::BadLength { batch_length: 0 }.to_string();
        assert_eq!(
            describe_broken(&broken),
            format!("not a batch and not zero fill: {reason} (first non-zero byte at position 150)")
        );
    }
}
