//! The sparse segment index: `<base_offset>.index`, one 24-byte entry per
//! `index_interval_bytes` of log data, serving offset lookups and time lookups.
//!
//! ```text
//!  byte 0               4               8                               16              20              24
//!       +---------------+---------------+-------------------------------+---------------+---------------+
//!       | relative      | position      | max timestamp so far          | reserved      | crc32c of     |
//!       | offset (u32)  | (u32)         | (i64, ms)                     | (u32, = 0)    | bytes 0..20   |
//!       +---------------+---------------+-------------------------------+---------------+---------------+
//! ```
//! Little-endian. An entry says: the batch starting at `position` has base offset
//! `segment base + relative offset`, and no batch before it has a max timestamp
//! above `max timestamp so far` (the running maximum *before* this batch). So:
//! - offset lookup: the last entry with relative offset ≤ target gives where to start scanning;
//! - time lookup: the last entry whose running maximum is < T gives a position before which
//!   no batch can hold a timestamp ≥ T.
//!
//! The file is written once, when a segment is sealed, and fsynced with it. The
//! active segment keeps its entries in memory and rebuilds them on open by
//! scanning.
//!
//! The file is a hint, never trusted as it reads: a lookup that believed a
//! wrong entry would skip batches (a running maximum set too low) or fail on
//! intact data (a position inside a batch). Every entry carries its own CRC,
//! which finds a torn entry; an entry with a good CRC that no longer fits the
//! data (an index left over by a crash, or one damaged before its CRC was
//! computed) is found at open, where the walk over the sealed segment's batch
//! headers checks each entry against the batch it claims
//! ([`IndexEntry::for_batch`] must give it back). Any miss and the index is
//! rebuilt from the segment and written again.
//!
//! A segment sealed while it holds damaged ranges (`recovery.rs`) gets its
//! entries followed by the 8 bytes [`DAMAGED_MARKER`]. The file then never
//! decodes, so every open scans that segment in full — as a sealed segment,
//! all of it durable — and finds the same ranges again. Without the marker
//! the open's fast walk, which reads batch headers only, would take a
//! damaged batch whose header still chains for a good one and serve it.

use crate::offset::{Offset, Position};

/// Size of one entry, pinned.
pub(crate) const INDEX_ENTRY_BYTES: usize = 24;

/// Ends the index file of a segment sealed with damaged ranges (see the
/// module doc): not a multiple of an entry, so such a file never decodes.
pub(crate) const DAMAGED_MARKER: [u8; 8] = *b"DAMAGED\0";

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Base offset of the batch minus the segment's base offset.
    pub(crate) relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub(crate) position: u32,
    /// Largest batch max-timestamp among batches *before* this one (i64::MIN if none).
    pub(crate) max_timestamp_before_ms: i64,
}

impl IndexEntry {
    /// The entry standing for the batch with base offset `batch_base` that
    /// starts at `position` of the segment based at `segment_base`, after
    /// batches whose largest max timestamp is `max_before_ms`; `None` when
    /// the offset or the position does not fit an entry's 32 bits.
    pub(crate) fn for_batch(
        segment_base: Offset,
        batch_base: Offset,
        position: Position,
        max_before_ms: i64,
    ) -> Option<IndexEntry> {
        let relative = batch_base.0.checked_sub(segment_base.0)?;
        Some(IndexEntry {
            relative_offset: u32::try_from(relative).ok()?,
            position: u32::try_from(position.0).ok()?,
            max_timestamp_before_ms: max_before_ms,
        })
    }

    pub(crate) fn encode(&self) -> [u8; INDEX_ENTRY_BYTES] {
        let mut out = [0u8; INDEX_ENTRY_BYTES];
        let (body, crc_field) = out.split_at_mut(20);
        let (rel, rest) = body.split_at_mut(4);
        let (pos, rest) = rest.split_at_mut(4);
        let (ts, _reserved) = rest.split_at_mut(8);
        rel.copy_from_slice(&self.relative_offset.to_le_bytes());
        pos.copy_from_slice(&self.position.to_le_bytes());
        ts.copy_from_slice(&self.max_timestamp_before_ms.to_le_bytes());
        let crc = crc32c::crc32c(body);
        crc_field.copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes one entry; `None` when it is short or its CRC does not match.
    pub(crate) fn decode(bytes: &[u8]) -> Option<IndexEntry> {
        let body = bytes.get(0..20)?;
        let crc = u32::from_le_bytes(bytes.get(20..24)?.try_into().ok()?);
        if crc32c::crc32c(body) != crc {
            return None;
        }
        Some(IndexEntry {
            relative_offset: u32::from_le_bytes(body.get(0..4)?.try_into().ok()?),
            position: u32::from_le_bytes(body.get(4..8)?.try_into().ok()?),
            max_timestamp_before_ms: i64::from_le_bytes(body.get(8..16)?.try_into().ok()?),
        })
    }
}

/// The in-memory index of one segment.
#[derive(Debug, Default, Clone)]
pub(crate) struct SparseIndex {
    entries: Vec<IndexEntry>,
}

impl SparseIndex {
    pub(crate) fn push(&mut self, entry: IndexEntry) {
        if let Some(last) = self.entries.last() {
            assert!(entry.relative_offset > last.relative_offset, "index offsets must grow");
            assert!(entry.position > last.position, "index positions must grow");
            assert!(
                entry.max_timestamp_before_ms >= last.max_timestamp_before_ms,
                "running max must not fall"
            );
        }
        self.entries.push(entry);
    }

    /// The entries, in file order (ascending in offset and position).
    pub(crate) fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Position of the last entry, if any.
    pub(crate) fn last_position(&self) -> Option<Position> {
        self.entries.last().map(|e| Position(u64::from(e.position)))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Position to start scanning from to find `target` (an absolute offset).
    pub(crate) fn lookup_offset(&self, base: Offset, target: Offset) -> Position {
        let relative = target.0.saturating_sub(base.0);
        let idx = self
            .entries
            .partition_point(|e| i64::from(e.relative_offset) <= relative);
        match idx.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(entry) => Position(u64::from(entry.position)),
            None => Position(0),
        }
    }

    /// Position before which no batch holds a timestamp ≥ `timestamp_ms`.
    pub(crate) fn lookup_time(&self, timestamp_ms: i64) -> Position {
        let idx = self
            .entries
            .partition_point(|e| e.max_timestamp_before_ms < timestamp_ms);
        match idx.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(entry) => Position(u64::from(entry.position)),
            None => Position(0),
        }
    }

    /// Drops entries at or after `position`.
    pub(crate) fn truncate_at(&mut self, position: Position) {
        let keep = self.entries.partition_point(|e| u64::from(e.position) < position.0);
        self.entries.truncate(keep);
    }

    /// The index file of a sealed segment; `damaged` when the segment holds
    /// damaged ranges, which adds [`DAMAGED_MARKER`].
    pub(crate) fn encode(&self, damaged: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * INDEX_ENTRY_BYTES + DAMAGED_MARKER.len());
        for entry in &self.entries {
            out.extend_from_slice(&entry.encode());
        }
        if damaged {
            out.extend_from_slice(&DAMAGED_MARKER);
        }
        assert_eq!(
            out.len() % INDEX_ENTRY_BYTES == 0,
            !damaged,
            "only a damaged segment's index never decodes"
        );
        out
    }

    /// Decodes a whole index file. `None` if any entry is torn, out of order, or
    /// points at or past `segment_bytes` (the caller then rebuilds by scanning).
    /// What decodes is still only a claim about the data: see the module doc.
    pub(crate) fn decode(bytes: &[u8], segment_bytes: u64) -> Option<SparseIndex> {
        if !bytes.len().is_multiple_of(INDEX_ENTRY_BYTES) {
            return None;
        }
        let mut index = SparseIndex::default();
        for chunk in bytes.chunks_exact(INDEX_ENTRY_BYTES) {
            let entry = IndexEntry::decode(chunk)?;
            if u64::from(entry.position) >= segment_bytes {
                return None;
            }
            if let Some(last) = index.entries.last() {
                let ordered = entry.relative_offset > last.relative_offset
                    && entry.position > last.position
                    && entry.max_timestamp_before_ms >= last.max_timestamp_before_ms;
                if !ordered {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: u32, pos: u32, ts: i64) -> IndexEntry {
        IndexEntry {
            relative_offset: rel,
            position: pos,
            max_timestamp_before_ms: ts,
        }
    }

    #[test]
    fn entry_round_trips_and_detects_a_flipped_bit() {
        let e = entry(7, 4096, 1_700_000_000_123);
        let mut bytes = e.encode();
        assert_eq!(IndexEntry::decode(&bytes), Some(e));
        bytes[5] ^= 1;
        assert_eq!(IndexEntry::decode(&bytes), None);
    }

    #[test]
    fn lookups_pick_the_last_entry_not_past_the_target() {
        let mut index = SparseIndex::default();
        index.push(entry(10, 4100, 100));
        index.push(entry(20, 8300, 250));
        index.push(entry(35, 12500, 250));
        let base = Offset(1000);
        assert_eq!(index.lookup_offset(base, Offset(1005)), Position(0));
        assert_eq!(index.lookup_offset(base, Offset(1010)), Position(4100));
        assert_eq!(index.lookup_offset(base, Offset(1034)), Position(8300));
        assert_eq!(index.lookup_offset(base, Offset(5000)), Position(12500));
        assert_eq!(index.lookup_time(50), Position(0));
        assert_eq!(index.lookup_time(101), Position(4100));
        assert_eq!(index.lookup_time(250), Position(4100));
        assert_eq!(index.lookup_time(251), Position(12500));
    }

    #[test]
    fn a_damaged_segments_index_never_decodes() {
        let mut index = SparseIndex::default();
        assert_eq!(
            SparseIndex::decode(&index.encode(true), 1 << 20).map(|i| i.entries.len()),
            None
        );
        index.push(entry(10, 4100, 100));
        let clean = index.encode(false);
        assert_eq!(SparseIndex::decode(&clean, 1 << 20).map(|i| i.entries.len()), Some(1));
        let damaged = index.encode(true);
        assert_eq!(
            damaged[..clean.len()],
            clean[..],
            "the entries are kept, then the marker"
        );
        assert!(SparseIndex::decode(&damaged, 1 << 20).is_none());
    }

    #[test]
    fn decode_rejects_torn_unordered_or_out_of_bounds_files() {
        let mut index = SparseIndex::default();
        index.push(entry(1, 10, 0));
        index.push(entry(2, 20, 0));
        let bytes = index.encode(false);
        assert_eq!(SparseIndex::decode(&bytes, 100).map(|i| i.len()), Some(2));
        assert!(SparseIndex::decode(&bytes[..30], 100).is_none());
        assert!(SparseIndex::decode(&bytes, 20).is_none());
        let mut swapped = entry(2, 20, 0).encode().to_vec();
        swapped.extend_from_slice(&entry(1, 10, 0).encode());
        assert!(SparseIndex::decode(&swapped, 100).is_none());
    }

    #[test]
    fn the_entry_for_a_batch_holds_its_offset_position_and_running_maximum() {
        let base = Offset(1_000);
        assert_eq!(
            IndexEntry::for_batch(base, Offset(1_007), Position(4_096), 55),
            Some(entry(7, 4_096, 55))
        );
        assert_eq!(IndexEntry::for_batch(base, Offset(999), Position(0), 0), None);
        let far = Offset(base.0 + i64::from(u32::MAX) + 1);
        assert_eq!(IndexEntry::for_batch(base, far, Position(0), 0), None);
        let past = Position(u64::from(u32::MAX) + 1);
        assert_eq!(IndexEntry::for_batch(base, base, past, 0), None);
    }

    #[test]
    fn truncate_drops_entries_at_and_after_a_position() {
        let mut index = SparseIndex::default();
        index.push(entry(1, 10, 0));
        index.push(entry(2, 20, 0));
        index.truncate_at(Position(20));
        assert_eq!(index.len(), 1);
    }
}
