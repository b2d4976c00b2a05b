//! Log compaction: the cleaner that keeps only the latest record per key
//! (Kafka's `cleanup.policy=compact`), and the swap that puts a cleaned
//! segment in place of the old one without a crash ever losing a kept
//! record or serving half a file.
//!
//! ## Files
//! ```text
//!  <base>.log            the segment (batches back to back, `batch.rs`)
//!  <base>.index          its sparse index (`index.rs`), rebuilt after a swap
//!  <base>.log.cleaned    the cleaner's output being written: incomplete until
//!                        fdatasynced and renamed; removed by open
//!  <base>.log.swap       the output, complete and fdatasynced, its name made
//!                        durable: the commit point. Open renames it over
//!                        <base>.log (or removes it when <base>.log is gone)
//!  cleaner-checkpoint    16 bytes: "SLCC" | first dirty offset (i64 BE) |
//!                        CRC-32C of bytes 0..12 (`start_offset.rs` layout)
//! ```
//! A cleaned segment is made of ordinary RecordBatch v2 batches, each with
//! its own CRC-32C over attributes..end; nothing else is written into it.
//!
//! ## The swap (one segment at a time, oldest first)
//! ```text
//!  step  on disk after the step                       crash here → open finds      open does
//!  1     <base>.log.cleaned written, fdatasynced      .cleaned (any state)         removes it: old segment stays
//!  2     renamed to <base>.log.swap, dir fsynced      .swap + .log (+ old .index)  step 3 onwards
//!  3     <base>.index removed                         .swap + .log                 step 4 onwards
//!  4     .swap renamed over <base>.log, dir fsynced   .log (cleaned), no .index    scans it, writes its index
//!  5     the segment reopened: index rebuilt, written durably
//! ```
//! Every rename is atomic, so `<base>.log` names the old bytes or the
//! cleaned ones, never a mix; and both hold the same latest value per key
//! (a cleaned segment only lacks records a later one supersedes). Steps 2–5
//! run in the log's writer task, serialised with truncation and retention,
//! after checking that the segment is still the version that was cleaned:
//! a `.swap` therefore never outlives a truncation or deletion of its
//! segment, and one found without its `<base>.log` (a crash of retention
//! right after step 2 cannot happen, but a hand-deleted file can) is removed.
//!
//! Readers are safe as with truncation and retention: a rename leaves the
//! old inode, unchanged, to every mapping that still holds it; nothing is
//! truncated in place (`segment.rs`, mapping rules).
//!
//! ## What a pass keeps
//! A pass takes the *cleanable* segments: the sealed ones from the first on,
//! stopping at the active segment, at one with damaged ranges, and at the
//! first whose newest record is younger than `min.compaction.lag.ms`. Of
//! these, the part from the checkpoint on is *dirty*; the pass runs when
//! dirty bytes / cleanable bytes reach `min.cleanable.dirty.ratio`, or when
//! the oldest dirty segment is older than `max.compaction.lag.ms`. It builds
//! a key map (key → latest offset) over the dirty segments, at most
//! [`KEY_MAP_BYTES_MAX`] (it stops at a segment boundary), then rewrites
//! every cleanable segment up to where the map ends:
//! - a record whose key has a later offset in the map goes;
//! - a tombstone (null value) that is the latest stays until its batch's
//!   delete horizon (KIP-534: set to now + `delete.retention.ms` the first
//!   time the cleaner keeps it, stored in the batch's base timestamp with
//!   attribute bit 6) has passed, then goes — unless a compressed batch lies
//!   before it, whose records the cleaner cannot see;
//! - a record without a key stays (Kafka's cleaner drops it; produce
//!   refuses such records on a compacted topic, so only data written before
//!   the topic became compacted has them, and it is not ours to lose);
//! - compressed batches stay whole and do not enter the key map: the log
//!   never decompresses (it has no codecs; see docs/storage.md);
//! - control batches (transaction markers) stay whole;
//! - transactional batches (attribute bit 4) are judged by what the log's
//!   owner knows of its transactions ([`TransactionOutcomes`], given to
//!   `Log::clean_transactions`; the log itself knows no aborted set): the
//!   pass then cleans only segments below the last stable offset, a batch
//!   of an aborted transaction loses every record (compressed or not) and
//!   stays out of the key map, a batch of a committed one is cleaned like
//!   any data batch. Without outcomes (`Log::clean`) every transactional
//!   batch stays whole and out of the key map: an aborted record must
//!   neither remove the value it would have replaced nor be kept in its
//!   place.
//!
//! Offsets never move: a rewritten batch keeps its base offset, last offset
//! Δ, leader epoch and producer fields, so the log's offsets, the leader
//! epoch cache and the producer state read from headers are unchanged. A
//! batch left with no record becomes an empty batch when it is its
//! producer's last in the pass (producer state needs it); otherwise its
//! offsets are folded into the batch before it in the segment (when that is
//! a non-idempotent, uncompressed data batch of the same leader epoch) or
//! into a 61-byte empty filler batch. A long run of superseded batches thus
//! shrinks to one header.

use std::collections::HashMap;

use bytes::Bytes;

use crate::{
    batch::{self, BatchHeader, ATTRIBUTE_DELETE_HORIZON},
    error::BatchError,
    offset::Offset,
    record,
    start_offset::OffsetFile,
};

/// The cleaner's checkpoint: the first offset no key map has covered yet.
pub(crate) const CHECKPOINT: OffsetFile = OffsetFile {
    name: "cleaner-checkpoint",
    magic: *b"SLCC",
    damaged: "cleaner checkpoint is damaged; the whole log counts as dirty",
};

/// Most bytes of keys (plus [`KEY_ENTRY_OVERHEAD_BYTES`] each) one pass's
/// key map holds. 64 MiB is ≈ 1 M keys of 16 bytes: enough for a
/// changelog or an offsets partition, small beside a shard's memory; a
/// larger dirty range is cleaned over several passes.
pub(crate) const KEY_MAP_BYTES_MAX: usize = 64 << 20;

/// What a key map entry costs beyond its key: the offset, the hash table
/// slot and the allocation header, rounded up.
const KEY_ENTRY_OVERHEAD_BYTES: usize = 48;

/// Bytes of batches the cleaner reads between two yields to the shard's
/// other tasks: 1 MiB is well under a millisecond of CRC and copying.
pub(crate) const CLEAN_SLICE_BYTES: usize = 1 << 20;

/// The compaction settings of one log (Kafka's topic configs of the same
/// names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanerConfig {
    /// `delete.retention.ms`: how long a tombstone stays after the cleaner
    /// first kept it.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: dirty bytes / cleanable bytes that start
    /// a pass.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a segment whose newest record is younger is
    /// not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty segment older than this is cleaned
    /// whatever the ratio.
    pub max_compaction_lag_ms: i64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        // Kafka's defaults.
        CleanerConfig {
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}

/// What one cleaning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Segments read.
    pub segments_read: usize,
    /// Segments replaced by a cleaned copy.
    pub segments_swapped: usize,
    /// Bytes of the segments read.
    pub bytes_before: u64,
    /// Bytes of the same segments after the pass.
    pub bytes_after: u64,
    /// Records removed because a later one has their key.
    pub records_removed: u64,
    /// Tombstones removed after their delete horizon.
    pub tombstones_removed: u64,
    /// The checkpoint after the pass: the first offset not in its key map.
    pub first_dirty: Offset,
}

/// One aborted transaction of a log: its producer and the offsets from its
/// first batch to its abort marker (what the engine's aborted index holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedRange {
    /// The transaction's producer.
    pub producer_id: i64,
    /// Offset of its first batch in this log.
    pub first_offset: Offset,
    /// Offset of its abort marker.
    pub last_offset: Offset,
}

/// What the owner of a log knows of its transactions, handed to one
/// cleaning pass ([`crate::Log::clean_transactions`]): the log itself keeps
/// no record of which transactions aborted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactionOutcomes {
    /// The last stable offset: every transactional batch below it belongs
    /// to a transaction that has ended. The pass cleans no segment
    /// reaching past it.
    pub stable_end: Offset,
    /// The aborted transactions with batches below `stable_end`; every
    /// other ended transaction committed.
    pub aborted: Vec<AbortedRange>,
}

/// What the cleaner may do with a transactional data batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnVerdict {
    /// Its outcome is unknown here: kept whole, out of the key map.
    Whole,
    /// Its transaction aborted: every record goes, none enters the key map.
    Aborted,
    /// Its transaction committed: cleaned like any record.
    Committed,
}

/// The verdicts of one pass, by producer.
#[derive(Debug, Default)]
pub(crate) struct TxnJudge {
    /// `None`: no outcomes given; every transactional batch stays whole.
    stable_end: Option<Offset>,
    /// Producer → its aborted (first, last) ranges.
    aborted: HashMap<i64, Vec<(Offset, Offset)>>,
}

impl TxnJudge {
    pub(crate) fn new(outcomes: Option<&TransactionOutcomes>) -> TxnJudge {
        let Some(outcomes) = outcomes else {
            return TxnJudge::default();
        };
        let mut aborted: HashMap<i64, Vec<(Offset, Offset)>> = HashMap::new();
        for range in &outcomes.aborted {
            aborted
                .entry(range.producer_id)
                .or_default()
                .push((range.first_offset, range.last_offset));
        }
        TxnJudge {
            stable_end: Some(outcomes.stable_end),
            aborted,
        }
    }

    /// The verdict on a transactional data batch.
    pub(crate) fn verdict(&self, header: &BatchHeader) -> TxnVerdict {
        assert!(
            header.is_transactional() && !header.is_control(),
            "a transactional data batch"
        );
        let Some(stable_end) = self.stable_end else {
            return TxnVerdict::Whole;
        };
        if header.last_offset() >= stable_end {
            return TxnVerdict::Whole;
        }
        let aborted = self.aborted.get(&header.producer_id).is_some_and(|ranges| {
            ranges
                .iter()
                .any(|(first, last)| *first <= header.base_offset && header.base_offset <= *last)
        });
        if aborted {
            TxnVerdict::Aborted
        } else {
            TxnVerdict::Committed
        }
    }
}

/// Key → offset of its latest record in the dirty range.
#[derive(Debug, Default)]
pub(crate) struct KeyMap {
    latest: HashMap<Vec<u8>, Offset>,
    bytes: usize,
}

impl KeyMap {
    /// Bytes the map takes (keys and per-entry overhead).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes the keys of every uncompressed data batch of `data` (a
    /// segment's batches, validated as stored), at or above `from`; of
    /// transactional batches, only the committed ones (`judge`).
    pub(crate) fn observe_segment(&mut self, data: &[u8], from: Offset, judge: &TxnJudge) -> Result<(), BatchError> {
        for_each_batch(data, |bytes, header| {
            if header.is_control() || header.next_offset() <= from {
                return Ok(());
            }
            if header.is_transactional() && judge.verdict(header) != TxnVerdict::Committed {
                return Ok(());
            }
            let Some(records) = batch::uncompressed_records(bytes, header) else {
                return Ok(());
            };
            for record in records {
                let record = record?;
                let offset = Offset(header.base_offset.0 + i64::from(record.offset_delta));
                let Some(key) = record.key else { continue };
                if offset < from {
                    continue;
                }
                match self.latest.get_mut(key) {
                    Some(latest) => {
                        assert!(*latest < offset, "offsets grow through a log");
                        *latest = offset;
                    }
                    None => {
                        self.bytes += key.len() + KEY_ENTRY_OVERHEAD_BYTES;
                        self.latest.insert(key.to_vec(), offset);
                    }
                }
            }
            Ok(())
        })
    }

    fn latest(&self, key: &[u8]) -> Option<Offset> {
        self.latest.get(key).copied()
    }
}

/// Calls `f` with every batch of `data` (a segment's bytes, batches back to
/// back to its end), each validated as a stored batch (CRC-32C included).
pub(crate) fn for_each_batch<'d>(
    data: &'d [u8],
    mut f: impl FnMut(&'d [u8], &BatchHeader) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let mut at = 0usize;
    while at < data.len() {
        let rest = data.get(at..).unwrap_or_default();
        let header = batch::validate_stored(rest)?;
        let total = header.total_bytes();
        f(rest.get(..total).unwrap_or_default(), &header)?;
        at += total;
    }
    Ok(())
}

/// What the rewrite of every segment of one pass shares.
#[derive(Debug)]
pub(crate) struct PassFacts {
    /// The pass's clock reading.
    pub(crate) now_ms: i64,
    pub(crate) delete_retention_ms: i64,
    /// First offset of a compressed batch in the log, if any: a tombstone
    /// after it may hide a record in it and stays.
    pub(crate) first_compressed: Option<Offset>,
    /// Producer id → base offset of its last batch in the pass's segments.
    pub(crate) last_batch_of_producer: HashMap<i64, Offset>,
    /// What becomes of transactional batches.
    pub(crate) judge: TxnJudge,
}

impl PassFacts {
    /// Facts gathered from the headers of `segments` (every cleanable
    /// segment's data, oldest first).
    pub(crate) fn gather(
        segments: &[Bytes],
        now_ms: i64,
        delete_retention_ms: i64,
        judge: TxnJudge,
    ) -> Result<PassFacts, BatchError> {
        let mut facts = PassFacts {
            now_ms,
            delete_retention_ms,
            first_compressed: None,
            last_batch_of_producer: HashMap::new(),
            judge,
        };
        for data in segments {
            for_each_batch(data, |_, header| {
                if header.is_compressed() && facts.first_compressed.is_none() {
                    facts.first_compressed = Some(header.base_offset);
                }
                if header.producer_id >= 0 {
                    facts
                        .last_batch_of_producer
                        .insert(header.producer_id, header.base_offset);
                }
                Ok(())
            })?;
        }
        Ok(facts)
    }
}

/// Counts of one rewrite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RewriteCounts {
    pub(crate) records_removed: u64,
    pub(crate) tombstones_removed: u64,
}

/// One batch of the output, open to change until the segment is done (a
/// later emptied batch may fold its offsets into it).
enum OutBatch<'a> {
    /// Kept byte for byte.
    Verbatim(&'a [u8], BatchHeader),
    /// Rewritten: `header`'s fields (length, CRC computed when framed) and
    /// the records section.
    Built(BatchHeader, Vec<u8>),
}

impl OutBatch<'_> {
    fn header(&self) -> &BatchHeader {
        match self {
            OutBatch::Verbatim(_, header) | OutBatch::Built(header, _) => header,
        }
    }
}

/// Rewrites one segment batch by batch (see the module doc); fed in slices
/// by the log so the shard serves between them.
pub(crate) struct SegmentRewriter<'a> {
    map: &'a KeyMap,
    facts: &'a PassFacts,
    out: Vec<OutBatch<'a>>,
    pub(crate) counts: RewriteCounts,
    /// Offset after the last batch taken (the offsets must run on).
    next_offset: Option<Offset>,
}

impl<'a> SegmentRewriter<'a> {
    pub(crate) fn new(map: &'a KeyMap, facts: &'a PassFacts) -> SegmentRewriter<'a> {
        SegmentRewriter {
            map,
            facts,
            out: Vec::new(),
            counts: RewriteCounts::default(),
            next_offset: None,
        }
    }

    /// Takes the next batch of the segment (`bytes`, validated as stored,
    /// with `header`).
    pub(crate) fn push(&mut self, bytes: &'a [u8], header: &BatchHeader) -> Result<(), BatchError> {
        if let Some(expected) = self.next_offset {
            if header.base_offset != expected {
                return Err(BatchError::OffsetGap {
                    expected,
                    found: header.base_offset,
                });
            }
        }
        self.next_offset = Some(header.next_offset());
        let verdict = (header.is_transactional() && !header.is_control()).then(|| self.facts.judge.verdict(header));
        if verdict == Some(TxnVerdict::Aborted) {
            // Nothing of an aborted transaction is ever read by a
            // read_committed consumer; a read_uncommitted one loses what
            // Kafka's cleaner removes too. Compressed or not, it all goes.
            let records = u64::try_from(header.record_count).unwrap_or(0);
            self.counts.records_removed += records;
            self.push_emptied(header);
            return Ok(());
        }
        let whole = header.is_control() || verdict == Some(TxnVerdict::Whole);
        let Some(records) = batch::uncompressed_records(bytes, header).filter(|_| !whole) else {
            self.out.push(OutBatch::Verbatim(bytes, *header));
            return Ok(());
        };
        let horizon_passed = header.delete_horizon_ms().is_some_and(|h| h <= self.facts.now_ms);
        let mut kept: Vec<(record::Record<'a>, i64)> = Vec::new();
        let mut tombstones_kept = false;
        let mut removed = 0u64;
        for record in records {
            let record = record?;
            let offset = Offset(header.base_offset.0 + i64::from(record.offset_delta));
            let timestamp_ms = header.base_timestamp_ms.saturating_add(record.timestamp_delta_ms);
            if let Some(key) = record.key {
                if self.map.latest(key).is_some_and(|latest| latest > offset) {
                    self.counts.records_removed += 1;
                    removed += 1;
                    continue;
                }
                if record.value.is_none() {
                    let hidden_before = self.facts.first_compressed.is_some_and(|c| c < offset);
                    if horizon_passed && !hidden_before {
                        self.counts.tombstones_removed += 1;
                        removed += 1;
                        continue;
                    }
                    tombstones_kept = true;
                }
            }
            kept.push((record, timestamp_ms));
        }
        let set_horizon = tombstones_kept && header.delete_horizon_ms().is_none();
        if removed == 0 && !set_horizon {
            self.out.push(OutBatch::Verbatim(bytes, *header));
            return Ok(());
        }
        if kept.is_empty() {
            self.push_emptied(header);
            return Ok(());
        }
        let mut rewritten = *header;
        if set_horizon {
            rewritten.attributes |= ATTRIBUTE_DELETE_HORIZON;
            rewritten.base_timestamp_ms = self.facts.now_ms.saturating_add(self.facts.delete_retention_ms);
        }
        rewritten.record_count = i32::try_from(kept.len()).unwrap_or(i32::MAX);
        let mut section = Vec::new();
        for (record, timestamp_ms) in &kept {
            record::put_record_copy(
                &mut section,
                record,
                timestamp_ms.saturating_sub(rewritten.base_timestamp_ms),
            );
        }
        self.out.push(OutBatch::Built(rewritten, section));
        Ok(())
    }

    /// A data batch all of whose records went.
    fn push_emptied(&mut self, header: &BatchHeader) {
        let producers_last = header.producer_id >= 0
            && self.facts.last_batch_of_producer.get(&header.producer_id) == Some(&header.base_offset);
        if producers_last {
            // Producer state is read from headers: this one stays, empty.
            let empty = BatchHeader {
                record_count: 0,
                ..*header
            };
            self.out.push(OutBatch::Built(empty, Vec::new()));
            return;
        }
        if let Some(previous) = self.out.last_mut() {
            let foldable = {
                let p = previous.header();
                p.producer_id < 0
                    && !p.is_control()
                    && !p.is_compressed()
                    && p.partition_leader_epoch == header.partition_leader_epoch
                    && i32::try_from(header.last_offset().0 - p.base_offset.0).is_ok()
            };
            if foldable {
                let (mut folded, section) = match std::mem::replace(previous, OutBatch::Built(*header, Vec::new())) {
                    OutBatch::Verbatim(bytes, h) => {
                        (h, bytes.get(batch::BATCH_HEADER_BYTES..).unwrap_or_default().to_vec())
                    }
                    OutBatch::Built(h, section) => (h, section),
                };
                folded.last_offset_delta =
                    i32::try_from(header.last_offset().0 - folded.base_offset.0).unwrap_or(i32::MAX);
                folded.max_timestamp_ms = folded.max_timestamp_ms.max(header.max_timestamp_ms);
                *previous = OutBatch::Built(folded, section);
                return;
            }
        }
        let filler = BatchHeader {
            attributes: header.attributes & batch::ATTRIBUTE_LOG_APPEND_TIME,
            base_timestamp_ms: header.max_timestamp_ms,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: 0,
            ..*header
        };
        self.out.push(OutBatch::Built(filler, Vec::new()));
    }

    /// The cleaned segment's bytes, and whether they differ from the input.
    ///
    /// # Panics
    /// If a batch it built does not validate as a stored batch, or the
    /// offsets it covers are not those it was given: both its own doing.
    pub(crate) fn finish(self, first: Offset) -> (Vec<u8>, bool) {
        let changed = self.out.iter().any(|b| matches!(b, OutBatch::Built(..)));
        let mut bytes = Vec::new();
        for out in &self.out {
            match out {
                OutBatch::Verbatim(verbatim, _) => bytes.extend_from_slice(verbatim),
                OutBatch::Built(header, section) => {
                    let framed = batch::frame(header, section);
                    let check = batch::validate_stored(&framed);
                    assert!(check.is_ok(), "a cleaned batch validates: {check:?}");
                    bytes.extend_from_slice(&framed);
                }
            }
        }
        // The offsets run on from the segment's base to where they ended.
        let mut expected = first;
        let walked = for_each_batch(&bytes, |_, header| {
            assert_eq!(header.base_offset, expected, "cleaned batches keep the offsets running");
            expected = header.next_offset();
            Ok(())
        });
        assert!(walked.is_ok(), "the cleaned segment walks back");
        assert_eq!(
            Some(expected).filter(|_| !self.out.is_empty()),
            self.next_offset,
            "the cleaned segment ends where the old one did"
        );
        (bytes, changed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;
    use crate::batch::{frame, BATCH_HEADER_BYTES};

    /// One batch of `records` (key, value; `None` value = tombstone) at
    /// `base`, record timestamps 1000 + index.
    pub(crate) fn keyed_batch(base: i64, records: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
        let mut section = Vec::new();
        for (index, (key, value)) in records.iter().enumerate() {
            let delta = i32::try_from(index).unwrap();
            record::put_record_at(&mut section, delta, i64::from(delta), Some(key), *value);
        }
        let count = i32::try_from(records.len()).unwrap();
        let header = BatchHeader {
            base_offset: Offset(base),
            batch_length: 0,
            partition_leader_epoch: 0,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp_ms: 1000,
            max_timestamp_ms: 1000 + i64::from(count - 1),
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: count,
        };
        frame(&header, &section)
    }

    fn clean(data: &[u8], now_ms: i64) -> (Vec<u8>, RewriteCounts) {
        clean_judged(data, now_ms, None)
    }

    fn clean_judged(data: &[u8], now_ms: i64, outcomes: Option<&TransactionOutcomes>) -> (Vec<u8>, RewriteCounts) {
        let mut map = KeyMap::default();
        map.observe_segment(data, Offset(0), &TxnJudge::new(outcomes)).unwrap();
        let facts = PassFacts::gather(&[Bytes::copy_from_slice(data)], now_ms, 100, TxnJudge::new(outcomes)).unwrap();
        let mut rewriter = SegmentRewriter::new(&map, &facts);
        for_each_batch(data, |bytes, header| rewriter.push(bytes, header)).unwrap();
        let counts = rewriter.counts;
        let (bytes, _) = rewriter.finish(Offset(0));
        (bytes, counts)
    }

    /// (offset, key, value) of every record of `data`.
    fn records(data: &[u8]) -> Vec<(i64, Vec<u8>, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        for_each_batch(data, |bytes, header| {
            for record in batch::uncompressed_records(bytes, header).unwrap() {
                let record = record.unwrap();
                out.push((
                    header.base_offset.0 + i64::from(record.offset_delta),
                    record.key.unwrap().to_vec(),
                    record.value.map(<[u8]>::to_vec),
                ));
            }
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn keeps_the_latest_record_per_key_at_its_offset() {
        let mut data = keyed_batch(0, &[(b"a", Some(b"1")), (b"b", Some(b"1"))]);
        data.extend(keyed_batch(2, &[(b"a", Some(b"2")), (b"c", Some(b"1"))]));
        data.extend(keyed_batch(4, &[(b"a", Some(b"3"))]));
        let (cleaned, counts) = clean(&data, 0);
        assert_eq!(counts.records_removed, 2);
        assert_eq!(
            records(&cleaned),
            vec![
                (1, b"b".to_vec(), Some(b"1".to_vec())),
                (3, b"c".to_vec(), Some(b"1".to_vec())),
                (4, b"a".to_vec(), Some(b"3".to_vec())),
            ]
        );
        // Offsets run on: the last batch still ends at 5.
        let mut next = Offset(0);
        for_each_batch(&cleaned, |_, h| {
            assert_eq!(h.base_offset, next);
            next = h.next_offset();
            Ok(())
        })
        .unwrap();
        assert_eq!(next, Offset(5));
    }

    /// `keyed_batch` as a transactional batch of `producer_id`.
    fn transactional_batch(base: i64, producer_id: i64, records: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
        let mut bytes = keyed_batch(base, records);
        let mut header = BatchHeader::parse(&bytes).unwrap();
        header.attributes = 0x10;
        header.producer_id = producer_id;
        header.producer_epoch = 0;
        header.base_sequence = i32::try_from(base).unwrap();
        let section = bytes.split_off(BATCH_HEADER_BYTES);
        frame(&header, &section)
    }

    #[test]
    fn aborted_records_go_and_committed_ones_are_compacted_like_any() {
        // 0: a=1 plain; 1: a=2, b=1 committed (producer 7); 3: a=9, c=9
        // aborted (producer 8); 5: b=2 plain; 6: a=5 open (producer 9).
        let mut data = keyed_batch(0, &[(b"a", Some(b"1"))]);
        data.extend(transactional_batch(1, 7, &[(b"a", Some(b"2")), (b"b", Some(b"1"))]));
        data.extend(transactional_batch(3, 8, &[(b"a", Some(b"9")), (b"c", Some(b"9"))]));
        data.extend(keyed_batch(5, &[(b"b", Some(b"2"))]));
        data.extend(transactional_batch(6, 9, &[(b"a", Some(b"5"))]));
        let outcomes = TransactionOutcomes {
            stable_end: Offset(6),
            aborted: vec![AbortedRange {
                producer_id: 8,
                first_offset: Offset(3),
                last_offset: Offset(4),
            }],
        };
        let (cleaned, counts) = clean_judged(&data, 0, Some(&outcomes));
        // a=1 goes for the committed a=2, b=1 for the plain b=2, the
        // aborted pair goes whole; the open a=5 neither goes nor removes.
        assert_eq!(counts.records_removed, 4);
        assert_eq!(
            records(&cleaned),
            vec![
                (1, b"a".to_vec(), Some(b"2".to_vec())),
                (5, b"b".to_vec(), Some(b"2".to_vec())),
                (6, b"a".to_vec(), Some(b"5".to_vec())),
            ]
        );
        // The producers' last batches keep their headers (producer state
        // is read from them); the offsets still run 0..7.
        let mut producers = Vec::new();
        let mut next = Offset(0);
        for_each_batch(&cleaned, |_, h| {
            assert_eq!(h.base_offset, next);
            next = h.next_offset();
            producers.push((h.producer_id, h.record_count, h.is_transactional()));
            Ok(())
        })
        .unwrap();
        assert_eq!(next, Offset(7));
        assert!(
            producers.contains(&(8, 0, true)),
            "the aborted batch stays as an empty header: {producers:?}"
        );
        // Without outcomes nothing transactional is touched, nor does it
        // supersede the plain a=1.
        let (cleaned, counts) = clean_judged(&data, 0, None);
        assert_eq!(counts.records_removed, 0);
        assert_eq!(records(&cleaned), records(&data));
    }

    #[test]
    fn transactional_records_neither_supersede_nor_are_removed() {
        let mut data = keyed_batch(0, &[(b"a", Some(b"1"))]);
        // A transactional batch (attribute bit 4, producer 7) that may be
        // aborted: it must not remove "a"=1, nor be removed by "a"=3.
        data.extend(transactional_batch(1, 7, &[(b"a", Some(b"2"))]));
        data.extend(keyed_batch(2, &[(b"b", Some(b"1"))]));
        let (cleaned, counts) = clean(&data, 0);
        assert_eq!(counts.records_removed, 0);
        assert_eq!(records(&cleaned), records(&data));
        data.extend(keyed_batch(3, &[(b"a", Some(b"3"))]));
        let (cleaned, _) = clean(&data, 0);
        let kept: Vec<i64> = records(&cleaned).into_iter().map(|(offset, _, _)| offset).collect();
        assert_eq!(kept, vec![1, 2, 3], "the plain a=1 goes, the transactional a=2 stays");
    }

    #[test]
    fn a_run_of_superseded_batches_folds_into_one_header() {
        let mut data = Vec::new();
        for base in 0..10 {
            data.extend(keyed_batch(base, &[(b"k", Some(b"v"))]));
        }
        let (cleaned, counts) = clean(&data, 0);
        assert_eq!(counts.records_removed, 9);
        // An empty filler for 0..=8, then the last batch as it was.
        assert_eq!(
            cleaned.len(),
            BATCH_HEADER_BYTES + keyed_batch(9, &[(b"k", Some(b"v"))]).len()
        );
        let first = BatchHeader::parse(&cleaned).unwrap();
        assert_eq!(
            (first.base_offset, first.last_offset_delta, first.record_count),
            (Offset(0), 8, 0)
        );
    }

    #[test]
    fn tombstones_stay_until_their_horizon_then_go() {
        let mut data = keyed_batch(0, &[(b"a", Some(b"1"))]);
        data.extend(keyed_batch(1, &[(b"a", None), (b"b", Some(b"1"))]));
        let (once, _) = clean(&data, 5_000);
        assert_eq!(
            records(&once),
            vec![(1, b"a".to_vec(), None), (2, b"b".to_vec(), Some(b"1".to_vec()))]
        );
        let mut horizon = None;
        for_each_batch(&once, |_, h| {
            if h.record_count > 0 {
                horizon = h.delete_horizon_ms();
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(horizon, Some(5_100), "now + delete.retention.ms");
        // Record timestamps survive the new base timestamp.
        for_each_batch(&once, |bytes, h| {
            if h.record_count == 2 {
                let ts: Vec<i64> = batch::uncompressed_records(bytes, h)
                    .unwrap()
                    .map(|r| h.base_timestamp_ms + r.unwrap().timestamp_delta_ms)
                    .collect();
                assert_eq!(ts, vec![1000, 1001]);
            }
            Ok(())
        })
        .unwrap();
        let (before, counts) = clean(&once, 5_099);
        assert_eq!(counts.tombstones_removed, 0);
        assert_eq!(before, once, "nothing to do before the horizon");
        let (after, counts) = clean(&once, 5_100);
        assert_eq!(counts.tombstones_removed, 1);
        assert_eq!(records(&after), vec![(2, b"b".to_vec(), Some(b"1".to_vec()))]);
    }

    /// A crash after each step of the swap (and a clean pass with no
    /// crash, for the reference): the reopened log holds the same latest
    /// value per key at the same offsets, leaves no cleaner file behind,
    /// and holds the cleaned segment exactly when the commit point was
    /// reached.
    #[test]
    fn a_crash_at_any_step_of_the_swap_keeps_every_kept_record() {
        use crate::segment::{SwapStep, CRASH_AFTER};
        use crate::{Log, LogConfig};
        type Latest = std::collections::BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)>;

        fn latest(log: &Log) -> (Latest, usize) {
            let mut model = Latest::new();
            let mut records = 0;
            let read = log.read(log.log_start(), 1 << 30, log.log_end()).unwrap();
            for chunk in &read.chunks {
                for_each_batch(chunk, |bytes, header| {
                    for record in batch::uncompressed_records(bytes, header).unwrap() {
                        let record = record.unwrap();
                        let offset = header.base_offset.0 + i64::from(record.offset_delta);
                        records += 1;
                        model.insert(record.key.unwrap().to_vec(), (offset, record.value.map(<[u8]>::to_vec)));
                    }
                    Ok(())
                })
                .unwrap();
            }
            (model, records)
        }

        let steps = [
            None,
            Some(SwapStep::CleanedWritten),
            Some(SwapStep::SwapNamed),
            Some(SwapStep::IndexRemoved),
            Some(SwapStep::Swapped),
        ];
        for crash_after in steps {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_path_buf();
            shardline_testkit::run_on_shard(move || async move {
                let config = LogConfig {
                    segment_bytes_max: 16 << 10,
                    index_interval_bytes: 512,
                    durability: crate::Durability::Always,
                    ..LogConfig::default()
                };
                let log = Log::open(&path, config.clone()).await.unwrap();
                for i in 0..400u32 {
                    let key = format!("k{}", i % 7);
                    let value = format!("v{i}");
                    let batch = batch::build_keyed_batch(5, &[(Some(key.as_bytes()), Some(value.as_bytes()))]);
                    log.append(Bytes::from(batch)).await.unwrap();
                }
                log.roll().await.unwrap();
                let (before, records_before) = latest(&log);
                let end = log.log_end();
                CRASH_AFTER.with(|c| c.set(crash_after));
                let cleaner = CleanerConfig {
                    min_cleanable_dirty_ratio: 0.0,
                    ..CleanerConfig::default()
                };
                let result = log.clean(&cleaner).await;
                CRASH_AFTER.with(|c| c.set(None));
                assert_eq!(result.is_err(), crash_after.is_some(), "{crash_after:?}: {result:?}");
                // A crash: the log does no more I/O; open recovers.
                drop(log);
                let log = Log::open(&path, config).await.unwrap();
                let (after, records_after) = latest(&log);
                assert_eq!(
                    after, before,
                    "{crash_after:?}: the latest record per key, at its offset"
                );
                assert_eq!(log.log_end(), end);
                let committed = !matches!(crash_after, Some(SwapStep::CleanedWritten));
                assert_eq!(
                    records_after < records_before,
                    committed,
                    "{crash_after:?}: the first segment is cleaned exactly past the commit point"
                );
                for entry in std::fs::read_dir(&path).unwrap() {
                    let name = entry.unwrap().file_name().into_string().unwrap();
                    assert!(!name.contains(".log."), "{crash_after:?}: {name} left behind");
                }
                // And the cleaner goes on from there.
                log.clean(&cleaner).await.unwrap();
                assert_eq!(latest(&log).0, before);
            });
        }
    }
}
