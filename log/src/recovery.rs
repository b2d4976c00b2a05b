//! Reading a segment's bytes back: where its valid batches are, which ranges
//! in it are damaged, and whether it ends in a torn tail. Recovery and
//! `shardctl log verify` both use [`scan_segment`], so "valid" means the same
//! to the broker and to the tool.
//!
//! ```text
//!  position 0                                                             end of data
//!  | batch | batch | ##### damaged ##### | batch | batch | torn ~~ | 0 0 0 0 0 0 0 0 |
//!  offsets run on ──────────────────────► one bad range          ► cut here (active segment)
//!                  [first, next) = [end of the batch before, base of the batch after)
//! ```
//!
//! At each position the scan expects a batch that is valid (`batch::validate_stored`:
//! header, CRC-32C, records) and continues the offsets. When the bytes there
//! are not one, it looks for the next valid batch after them, first at the
//! end the damaged batch's own length field gives (a flipped payload byte
//! leaves it intact), then at every later position holding magic 2:
//!
//! - **Found** (its base offset is at least the expected one, and its offsets
//!   fit the segment), **and the damage lies before the recovery point**
//!   (`recovery_point.rs`: bytes known fsynced) **or is one whole batch at
//!   the expected offset that the rules refuse** (written whole, so not
//!   torn; deciding this the same way on either side of the recovery point
//!   keeps a reopen's answer equal to the first one's): the bytes in between are
//!   **damaged in the middle** — bit rot, a bad sector — not a torn write.
//!   Past the recovery point a whole batch after a bad one proves nothing (a
//!   power cut writes unsynced pages back in any order): that is a torn tail. They become a [`BadRange`]: kept on disk, never served,
//!   reported; the scan goes on at the batch found.
//! - **Not found, and the bytes are one whole batch with a matching CRC at the
//!   expected offset** that the rules refuse (a lying header an older broker
//!   accepted): not torn either. It is **quarantined in place** as a bad range
//!   to the end of the data (the run of whole batches there, or the last
//!   non-zero byte), holding no offset in the last segment.
//! - **Not found, only zeros follow**: the clean end of the data.
//! - **Otherwise**: a **torn tail** ([`TornTail`]). The caller decides: the
//!   active segment is cut there; a rolled segment that was never sealed ends
//!   the log there; a sealed one (its index was written after an fsync) keeps
//!   it as a bad range up to the next segment's base.
//!
//! A stored batch whose offsets leave what its segment can hold (more than
//! `i32::MAX` past its base, as Kafka bounds a segment, or past the next
//! segment's base) is refused like any other invalid batch, so no byte read
//! from disk can break the index's invariants.

use crate::{
    batch::{self, BatchHeader, MAGIC_V2},
    error::BatchError,
    index::SparseIndex,
    offset::{Offset, Position},
    segment::{push_index_entry, SEGMENT_OFFSET_SPAN_MAX},
};

/// Bytes of a segment that are not served: damaged, or refused batches kept
/// on disk. Its offsets `[first_offset, next_offset)` may be empty (a
/// quarantined batch at the end of the active segment holds none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRange {
    /// First byte of the range in its segment file.
    pub start: Position,
    /// Byte after the range (where the next valid batch starts).
    pub end: Position,
    /// First offset the range stands for.
    pub first_offset: Offset,
    /// Offset after the range (the base offset of the batch after it).
    pub next_offset: Offset,
    /// Why the bytes at `start` are not a valid batch.
    pub reason: BatchError,
}

impl BadRange {
    /// Whether `offset` lies in the range.
    pub fn holds(&self, offset: Offset) -> bool {
        self.first_offset <= offset && offset < self.next_offset
    }
}

/// Where the data of a segment stops being batches, with something other
/// than zeros after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Where the torn bytes begin (the end of the valid data).
    pub position: Position,
    /// Why they are not a batch.
    pub reason: BatchError,
    /// The first non-zero byte at or after `position`.
    pub first_nonzero: Position,
}

/// What a segment's offsets must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentBounds {
    /// The segment's base offset (from its file name).
    pub base: Offset,
    /// The next segment's base offset; `None` for the last segment.
    pub next_base: Option<Offset>,
}

impl SegmentBounds {
    /// Whether a batch at `position` with `header` fits the segment.
    pub(crate) fn check(&self, header: &BatchHeader, position: usize) -> Result<(), BatchError> {
        let outside = || BatchError::OutsideSegment {
            base_offset: header.base_offset,
            segment_base: self.base,
        };
        let span = header
            .base_offset
            .0
            .checked_add(i64::from(header.last_offset_delta))
            .and_then(|last| last.checked_sub(self.base.0))
            .ok_or_else(outside)?;
        let fits_index =
            header.base_offset >= self.base && span <= SEGMENT_OFFSET_SPAN_MAX && u32::try_from(position).is_ok();
        let before_next = self.next_base.is_none_or(|next| header.next_offset() <= next);
        if fits_index && before_next {
            Ok(())
        } else {
            Err(outside())
        }
    }
}

/// What scanning a segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// After the last valid batch or kept bad range: where the next batch goes.
    pub end: Position,
    /// Offset after the last valid batch or bad range.
    pub next_offset: Offset,
    /// Largest max-timestamp of the valid batches (`i64::MIN` if none).
    pub max_timestamp_ms: i64,
    /// Damaged or quarantined ranges, in file order.
    pub bad: Vec<BadRange>,
    /// A torn tail after `end`, if the data ends in one.
    pub torn: Option<TornTail>,
    /// Valid batches.
    pub batches: u64,
    /// Records in the valid batches.
    pub records: u64,
    /// Bytes of the valid batches.
    pub batch_bytes: u64,
}

impl SegmentScan {
    pub(crate) fn empty(base: Offset) -> SegmentScan {
        SegmentScan {
            end: Position(0),
            next_offset: base,
            max_timestamp_ms: i64::MIN,
            bad: Vec::new(),
            torn: None,
            batches: 0,
            records: 0,
            batch_bytes: 0,
        }
    }

    pub(crate) fn take_batch(&mut self, header: &BatchHeader) {
        assert_eq!(
            header.base_offset, self.next_offset,
            "a valid batch continues the offsets"
        );
        let total = header.total_bytes() as u64;
        self.end = Position(self.end.0 + total);
        self.next_offset = header.next_offset();
        self.max_timestamp_ms = self.max_timestamp_ms.max(header.max_timestamp_ms);
        self.batches += 1;
        self.records += u64::try_from(header.record_count).unwrap_or(0);
        self.batch_bytes += total;
    }

    fn take_bad(&mut self, end: usize, next_offset: Offset, reason: BatchError) {
        assert!(end as u64 >= self.end.0, "a bad range does not go back");
        assert!(
            next_offset >= self.next_offset,
            "a bad range does not move offsets back"
        );
        self.bad.push(BadRange {
            start: self.end,
            end: Position(end as u64),
            first_offset: self.next_offset,
            next_offset,
            reason,
        });
        self.end = Position(end as u64);
        self.next_offset = next_offset;
    }

    /// Keeps a torn tail as a bad range to the end of the data of `bytes`
    /// (see `quarantined_bytes`), standing for the offsets up to `next_base`
    /// (a sealed segment: its data was fsynced before its index was written,
    /// so this is damage).
    pub(crate) fn keep_torn_tail(&mut self, bytes: &[u8], next_base: Offset) {
        let start = usize::try_from(self.end.0).unwrap_or(usize::MAX);
        let end = start + bytes.get(start..).map_or(0, quarantined_bytes);
        let reason = match self.torn.take() {
            Some(torn) => torn.reason,
            None => BatchError::Truncated {
                needed_bytes: batch::BATCH_HEADER_BYTES,
                available_bytes: 0,
            },
        };
        if next_base > self.next_offset || end as u64 > self.end.0 {
            self.take_bad(end, next_base.max(self.next_offset), reason);
        }
    }
}

/// The checks of a stored batch at `position` of a segment, expected to start
/// at `expected`: valid, continuing the offsets, within the segment.
fn check_stored(
    bytes: &[u8],
    position: usize,
    expected: Offset,
    bounds: SegmentBounds,
) -> Result<BatchHeader, BatchError> {
    let rest = bytes.get(position..).unwrap_or_default();
    let header = batch::validate_stored(rest)?;
    if header.base_offset != expected {
        return Err(BatchError::OffsetGap {
            expected,
            found: header.base_offset,
        });
    }
    bounds.check(&header, position)?;
    Ok(header)
}

/// Whether `position` holds a valid batch that may follow damage: a base
/// offset of at least `expected` and offsets within the segment.
fn resumes_at(bytes: &[u8], position: usize, expected: Offset, bounds: SegmentBounds) -> Option<BatchHeader> {
    let header = batch::validate_stored(bytes.get(position..)?).ok()?;
    (header.base_offset >= expected && bounds.check(&header, position).is_ok()).then_some(header)
}

/// The first position after `damaged` where a valid batch resumes the
/// segment (see the module doc): where the damaged batch's own length says
/// the next one starts, else the first later position that holds one.
pub fn find_next_batch(
    bytes: &[u8],
    damaged: usize,
    expected: Offset,
    bounds: SegmentBounds,
) -> Option<(usize, BatchHeader)> {
    let claimed_end = BatchHeader::parse(bytes.get(damaged..)?)
        .filter(|header| header.batch_length > 0)
        .and_then(|header| damaged.checked_add(header.total_bytes()));
    if let Some(end) = claimed_end {
        if let Some(header) = resumes_at(bytes, end, expected, bounds) {
            return Some((end, header));
        }
    }
    let magic_offset = batch::OFFSET_MAGIC;
    let mut candidate = damaged + 1;
    loop {
        let window = bytes.get(candidate.checked_add(magic_offset)?..)?;
        candidate += window.iter().position(|byte| *byte == MAGIC_V2 as u8)?;
        if let Some(header) = resumes_at(bytes, candidate, expected, bounds) {
            return Some((candidate, header));
        }
        candidate += 1;
    }
}

/// The header of the batch at the front of `rest` if it was written whole:
/// all its bytes there and its CRC-32C matching (so not torn), whatever the
/// rules say of it otherwise.
fn written_whole(rest: &[u8]) -> Option<BatchHeader> {
    let header = BatchHeader::parse(rest)?;
    let plausible = header.batch_length >= 0 && rest.get(batch::OFFSET_MAGIC).copied() == Some(MAGIC_V2 as u8);
    let batch = rest.get(..header.total_bytes()).filter(|_| plausible)?;
    (batch::compute_crc(batch) == Some(header.crc)).then_some(header)
}

/// Bytes from the front of `rest` to the end of the run of whole batches
/// there, or to its last non-zero byte, whichever is further.
fn quarantined_bytes(rest: &[u8]) -> usize {
    let mut run = 0usize;
    while let Some(header) = rest.get(run..).and_then(written_whole) {
        run += header.total_bytes();
    }
    let data = rest.iter().rposition(|b| *b != 0).map_or(0, |last| last + 1);
    run.max(data)
}

/// Scans a segment's data (its bytes up to the first hole) from the start,
/// CRCs included, pushing index entries every `index_interval_bytes` when an
/// index is given. See the module doc for what it decides. Bytes from
/// `synced_to` on may never have been made durable (`recovery_point`):
/// there, a bad batch is a torn tail even if whole batches follow it (a
/// power cut writes unsynced pages back in any order).
pub(crate) fn scan(
    bytes: &[u8],
    bounds: SegmentBounds,
    mut index: Option<(&mut SparseIndex, u64)>,
    synced_to: Position,
) -> SegmentScan {
    let mut scan = SegmentScan::empty(bounds.base);
    let mut bytes_since_index = 0u64;
    while let Ok(position) = usize::try_from(scan.end.0) {
        let rest = bytes.get(position..).unwrap_or_default();
        let Some(first_nonzero) = rest.iter().position(|b| *b != 0) else {
            break; // zero fill, or nothing: the clean end of the data
        };
        let reason = match check_stored(bytes, position, scan.next_offset, bounds) {
            Ok(header) => {
                if let Some((index, interval)) = index.as_mut() {
                    if bytes_since_index >= *interval && position > 0 {
                        push_index_entry(index, bounds.base, header.base_offset, scan.end, scan.max_timestamp_ms);
                        bytes_since_index = 0;
                    }
                }
                bytes_since_index += header.total_bytes() as u64;
                scan.take_batch(&header);
                continue;
            }
            Err(reason) => reason,
        };
        // A batch written whole (its CRC matches) at the expected offset
        // that the rules refuse was not torn, wherever it lies: like damage
        // before the recovery point, the scan resumes at a valid batch after
        // it. Deciding so before the recovery point covers it, not only
        // after, keeps a reopen's answer the same as this one's.
        let refused_whole = written_whole(rest).is_some_and(|header| header.base_offset == scan.next_offset);
        let durable_here = (position as u64) < synced_to.0;
        if let Some((next, header)) = (durable_here || refused_whole)
            .then(|| find_next_batch(bytes, position, scan.next_offset, bounds))
            .flatten()
        {
            scan.take_bad(next, header.base_offset, reason);
            continue;
        }
        if refused_whole {
            let next_offset = bounds.next_base.unwrap_or(scan.next_offset);
            scan.take_bad(position + quarantined_bytes(rest), next_offset, reason);
            break;
        }
        scan.torn = Some(TornTail {
            position: scan.end,
            reason,
            first_nonzero: Position((position + first_nonzero) as u64),
        });
        break;
    }
    scan
}

/// Scans one segment file's bytes as recovery does, without building an
/// index: for tools (`shardctl log verify`) that must judge a segment exactly
/// as the broker would. `synced_to` as for recovery: the partition's
/// recovery point in this segment (`RecoveryPoint::synced_in`).
pub fn scan_segment(bytes: &[u8], bounds: SegmentBounds, synced_to: Position) -> SegmentScan {
    scan(bytes, bounds, None, synced_to)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    use crate::batch::{build_batch, set_base_offset, BatchSpec};

    /// Every byte counts as fsynced (a sealed segment, or one wholly below
    /// the recovery point).
    const ALL_SYNCED: Position = Position(u64::MAX);

    const LAST: SegmentBounds = SegmentBounds {
        base: Offset(100),
        next_base: None,
    };

    /// `counts.len()` batches from offset 100 on, each `(count, payload)`.
    fn segment(counts: &[(i32, usize)]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        let mut next = 100i64;
        for (seed, (count, payload_bytes)) in counts.iter().enumerate() {
            let payload = vec![seed as u8 + 1; *payload_bytes];
            let mut batch = build_batch(&BatchSpec::plain(*count, 5, &payload));
            set_base_offset(&mut batch, Offset(next));
            starts.push(bytes.len());
            bytes.extend_from_slice(&batch);
            next += i64::from(*count);
        }
        starts.push(bytes.len());
        (bytes, starts)
    }

    #[test]
    fn valid_data_then_zero_fill_is_a_clean_end() {
        let (mut bytes, starts) = segment(&[(2, 30), (1, 40), (3, 10)]);
        bytes.resize(bytes.len() + 500, 0);
        let scan = scan_segment(&bytes, LAST, ALL_SYNCED);
        assert_eq!((scan.end.0, scan.next_offset), (starts[3] as u64, Offset(106)));
        assert_eq!((scan.batches, scan.records), (3, 6));
        assert!(scan.bad.is_empty() && scan.torn.is_none());
    }

    #[test]
    fn a_flipped_payload_byte_in_the_middle_is_one_bad_range() {
        let (mut bytes, starts) = segment(&[(2, 30), (1, 40), (3, 10)]);
        bytes[starts[1] + 70] ^= 0x01;
        let scan = scan_segment(&bytes, LAST, ALL_SYNCED);
        assert_eq!(scan.next_offset, Offset(106));
        assert_eq!(scan.bad.len(), 1);
        let range = &scan.bad[0];
        assert_eq!((range.start.0, range.end.0), (starts[1] as u64, starts[2] as u64));
        assert_eq!((range.first_offset, range.next_offset), (Offset(102), Offset(103)));
        assert!(matches!(range.reason, BatchError::BadCrc { .. }));
        assert!(scan.torn.is_none());
    }

    #[test]
    fn past_the_recovery_point_a_bad_batch_is_a_torn_tail_whatever_follows() {
        // A power cut wrote back the third batch but tore the second: both
        // lie past the last recorded fsync.
        let (mut bytes, starts) = segment(&[(2, 30), (1, 40), (3, 10)]);
        bytes[starts[1] + 70] ^= 0x01;
        let synced_to = Position(starts[1] as u64);
        let scan = scan_segment(&bytes, LAST, synced_to);
        assert!(scan.bad.is_empty(), "nothing past the recovery point is kept as damage");
        let torn = scan.torn.expect("a torn tail");
        assert_eq!(torn.position.0, starts[1] as u64);
        assert_eq!((scan.end.0, scan.next_offset), (starts[1] as u64, Offset(102)));
        // The same bytes below the recovery point: damage in the middle.
        let below = scan_segment(&bytes, LAST, Position(starts[2] as u64));
        assert_eq!(below.bad.len(), 1);
        assert_eq!(below.next_offset, Offset(106));
    }

    #[test]
    fn a_damaged_length_is_skipped_by_searching_for_the_next_batch() {
        let (mut bytes, starts) = segment(&[(1, 30), (4, 500), (1, 10), (2, 10)]);
        bytes[starts[1] + 9] ^= 0x7f; // the length field of the second batch
        let scan = scan_segment(&bytes, LAST, ALL_SYNCED);
        let range = &scan.bad[0];
        assert_eq!((range.start.0, range.end.0), (starts[1] as u64, starts[2] as u64));
        assert_eq!((range.first_offset, range.next_offset), (Offset(101), Offset(105)));
        assert_eq!((scan.next_offset, scan.batches), (Offset(108), 3));
    }

    #[test]
    fn damage_with_nothing_valid_after_it_is_a_torn_tail() {
        let (mut bytes, starts) = segment(&[(1, 30), (1, 30)]);
        bytes.truncate(starts[1] + 40);
        bytes.resize(bytes.len() + 100, 0);
        let scan = scan_segment(&bytes, LAST, ALL_SYNCED);
        assert!(scan.bad.is_empty());
        assert_eq!((scan.end.0, scan.next_offset), (starts[1] as u64, Offset(101)));
        let torn = scan.torn.unwrap();
        assert_eq!(torn.position.0, starts[1] as u64);
        assert_eq!(
            torn.first_nonzero.0,
            starts[1] as u64 + 7,
            "the base offset 101 is mostly zeros"
        );
    }

    /// `batch` with its count claiming `count` records, CRC fixed up.
    fn lying(mut batch: Vec<u8>, count: i32) -> Vec<u8> {
        batch[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        batch[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = batch::compute_crc(&batch).unwrap();
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    #[test]
    fn a_whole_refused_batch_at_the_end_is_quarantined_in_place() {
        let (mut bytes, starts) = segment(&[(1, 30), (2, 30)]);
        let second = lying(bytes[starts[1]..].to_vec(), 3);
        bytes.truncate(starts[1]);
        bytes.extend_from_slice(&second);
        let data_end = bytes.len() as u64;
        bytes.resize(bytes.len() + 64, 0);
        let scan = scan_segment(&bytes, LAST, ALL_SYNCED);
        assert!(scan.torn.is_none(), "a batch written whole is not torn");
        let range = &scan.bad[0];
        assert_eq!((range.start.0, range.end.0), (starts[1] as u64, data_end));
        assert_eq!((range.first_offset, range.next_offset), (Offset(101), Offset(101)));
        assert_eq!((scan.end.0, scan.next_offset), (data_end, Offset(101)));
        // Before the next segment, it stands for the offsets up to it.
        let bounds = SegmentBounds {
            base: Offset(100),
            next_base: Some(Offset(103)),
        };
        assert_eq!(
            scan_segment(&bytes[..data_end as usize], bounds, ALL_SYNCED).next_offset,
            Offset(103)
        );
    }

    /// Found by the `segment_recovery` fuzz target: a refused whole batch,
    /// then a valid batch at the expected offset, with no recovery point.
    /// The first open quarantined everything to the end of the data and
    /// appended after it; the reopen, the recovery point now covering the
    /// damage, resumed at the valid batch inside the quarantine and served
    /// it in place of what was appended. Both opens must resume there.
    #[test]
    fn a_valid_batch_after_a_refused_whole_one_is_resumed_at_before_the_recovery_point_too() {
        let (mut bytes, starts) = segment(&[(1, 30), (2, 30), (1, 20)]);
        let second = lying(bytes[starts[1]..starts[2]].to_vec(), 3);
        let mut third = bytes[starts[2]..starts[3]].to_vec();
        set_base_offset(&mut third, Offset(101));
        bytes.truncate(starts[1]);
        bytes.extend_from_slice(&second);
        let third_at = bytes.len() as u64;
        bytes.extend_from_slice(&third);
        let data_end = bytes.len() as u64;
        bytes.resize(bytes.len() + 64, 0);
        for synced_to in [Position(0), ALL_SYNCED] {
            let scan = scan_segment(&bytes, LAST, synced_to);
            assert!(scan.torn.is_none(), "a batch written whole is not torn");
            assert_eq!(scan.bad.len(), 1);
            assert_eq!((scan.bad[0].start.0, scan.bad[0].end.0), (starts[1] as u64, third_at));
            assert_eq!((scan.end.0, scan.next_offset), (data_end, Offset(102)));
        }
    }

    #[test]
    fn offsets_a_segment_cannot_hold_are_refused_and_never_resumed_at() {
        let (mut bytes, starts) = segment(&[(1, 30), (1, 30), (1, 30)]);
        // The third batch claims an offset 2^31 past the segment's base.
        let far = 100 + SEGMENT_OFFSET_SPAN_MAX + 1;
        bytes[starts[1] + 70] ^= 0x01;
        bytes[starts[2]..starts[2] + 8].copy_from_slice(&far.to_be_bytes());
        let scan = scan_segment(&bytes, LAST, ALL_SYNCED);
        assert!(scan.bad.is_empty());
        assert_eq!(scan.next_offset, Offset(101));
        assert!(scan.torn.is_some(), "nothing valid follows: the tail is torn");
        let header = BatchHeader::parse(&bytes[starts[2]..]).unwrap();
        assert!(matches!(
            LAST.check(&header, starts[2]),
            Err(BatchError::OutsideSegment { .. })
        ));
    }
}
