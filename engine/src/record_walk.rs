//! The walk over a produce's records that the topic's per-record rules
//! share (`timestamps.rs`, `compaction.rs`): each record of an uncompressed
//! batch, and a compressed batch by its first and last record (the broker
//! never decompresses), each with its index in the partition's data, as
//! KIP-467's `record_errors` name them. A refusal names at most
//! [`RECORD_ERRORS_MAX`] records; the rest are refused all the same.

use bytes::Bytes;
use shardline_log::{uncompressed_records, BatchHeader, Record};

/// The whole batches of stored chunks (what a log read returns), each
/// with its parsed header, in order; a chunk's bytes past its last whole
/// batch are left out.
pub(crate) fn stored_batches(chunks: &[Bytes]) -> impl Iterator<Item = (BatchHeader, &[u8])> {
    chunks.iter().flat_map(|chunk| {
        let mut at = 0usize;
        std::iter::from_fn(move || {
            let header = chunk.get(at..).and_then(BatchHeader::parse)?;
            let batch = chunk.get(at..at + header.total_bytes())?;
            at += header.total_bytes();
            Some((header, batch))
        })
    })
}

/// Most records named in one refusal.
pub(crate) const RECORD_ERRORS_MAX: usize = 100;

/// What a rule is shown of one batch.
pub(crate) enum Seen<'a> {
    /// A record of an uncompressed batch.
    Record(Record<'a>),
    /// A compressed batch, standing for its first record.
    CompressedFirst,
    /// A compressed batch, standing for its last record.
    CompressedLast,
}

/// Walks `records` (a produce's batches), asking `why` of each record (or
/// compressed batch end) why it is refused, if it is; returns the refusals
/// by record index. Bytes that are not whole batches are left to the log,
/// which refuses them.
pub(crate) fn refusals(
    records: &Bytes,
    mut why: impl FnMut(&BatchHeader, Seen<'_>) -> Option<String>,
) -> Vec<(i32, String)> {
    let mut errors = Vec::new();
    let mut index = 0i32;
    let mut at = 0usize;
    while let Some(rest) = records.get(at..).filter(|rest| !rest.is_empty()) {
        let Some(header) = BatchHeader::parse(rest) else { break };
        let Some(batch) = rest.get(..header.total_bytes()) else {
            break;
        };
        let mut note = |record_index: i32, seen: Seen<'_>| {
            if errors.len() < RECORD_ERRORS_MAX {
                if let Some(reason) = why(&header, seen) {
                    errors.push((record_index, reason));
                }
            }
        };
        match uncompressed_records(batch, &header) {
            Some(walk) => {
                for (position, record) in walk.enumerate() {
                    let Ok(record) = record else { break };
                    note(
                        index.saturating_add(i32::try_from(position).unwrap_or(i32::MAX)),
                        Seen::Record(record),
                    );
                }
            }
            None => {
                note(index, Seen::CompressedFirst);
                note(index.saturating_add(header.last_offset_delta), Seen::CompressedLast);
            }
        }
        index = index.saturating_add(header.record_count.max(0));
        at += header.total_bytes();
    }
    assert!(errors.len() <= RECORD_ERRORS_MAX, "the refusal is bounded");
    errors
}
