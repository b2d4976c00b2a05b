//! One partition's transactions: the ones still open (which hold back the
//! last stable offset) and the aborted-transactions index (what a
//! read_committed consumer must skip). Lives in the partition, on its shard.
//!
//! ## Rules (KIP-98)
//! - A transactional data batch (attribute bit 4, a producer id) opens a
//!   transaction of its producer on this partition at its base offset, unless
//!   one is open already.
//! - A marker (`control.rs`) closes the producer's open transaction here; an
//!   abort marker adds `(producer id, first offset, marker offset)` to the
//!   aborted index. A marker with no open transaction (a retry, or a
//!   partition the producer added but never wrote to) changes nothing.
//! - The last stable offset (LSO) is the smallest first offset of the open
//!   transactions, or the high watermark when that is smaller or none is
//!   open. read_committed consumers read below it.
//!
//! ## Rebuilt, not stored
//! The index is rebuilt by one scan of the log when the partition opens (or
//! a follower truncates): batch headers say which batches are transactional,
//! and only control batches are read for their record (commit or abort).
//! That scan already runs for idempotent-producer state, so no index file of
//! its own is kept — nothing to go stale, tear or checksum. Entries whose
//! marker lies below the log start (retention) are forgotten.

use std::collections::{BTreeMap, VecDeque};

use shardline_log::{BatchHeader, Offset};

use crate::{
    control::{self, Marker, Outcome},
    producer::ProducerId,
};

/// Aborted transactions one partition remembers. Each costs 24 bytes; a
/// million is 24 MiB, far more than retention keeps in practice. Past it
/// the oldest is forgotten with a warning (a read_committed consumer that
/// far behind could then see that transaction's records).
pub(crate) const ABORTED_TRANSACTIONS_MAX: usize = 1 << 20;

/// Transactions open on one partition at once (a transactional producer
/// has at most one): as many as the producers a partition remembers. Past
/// it a produce that would open one more is refused, to be retried
/// (coordinators end or time out the open ones).
pub(crate) const OPEN_TRANSACTIONS_MAX: usize = crate::producer::PRODUCERS_MAX;

/// Ended transactions whose marker may not be durable yet, remembered so
/// the cleaner judges none of them before its marker is (a power cut could
/// still take the marker, and the outcome with it). Under `fsync always`
/// a marker is durable within milliseconds; otherwise at the next segment
/// roll, so a partition can end many transactions meanwhile. Past the bound
/// the oldest are summed into one range (see `judged_end`).
pub(crate) const UNSYNCED_ENDS_MAX: usize = 1 << 16;

/// What [`PartitionTransactions::data`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opened {
    /// The producer's transaction here begins with this batch.
    New,
    /// It was open already.
    Already,
    /// [`OPEN_TRANSACTIONS_MAX`] are open: refuse the batch.
    Full,
}

/// One aborted transaction on this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AbortedTransaction {
    pub(crate) producer_id: ProducerId,
    /// Offset of its first batch here.
    pub(crate) first_offset: Offset,
    /// Offset of its abort marker.
    pub(crate) last_offset: Offset,
}

/// Open transactions and aborted index of one partition.
#[derive(Debug, Default)]
pub(crate) struct PartitionTransactions {
    /// Producer → first offset of its open transaction here.
    open: BTreeMap<ProducerId, Offset>,
    /// In marker order (so in `last_offset` order).
    aborted: VecDeque<AbortedTransaction>,
    /// The longest `last_offset - first_offset` in `aborted`: a lookup
    /// stops once markers are so far past its range that no transaction
    /// ending there can start inside it.
    aborted_span_max: i64,
    /// (first offset, marker offset) of ended transactions, in marker
    /// order, whose marker was not known durable at the last look.
    unsynced_ends: VecDeque<(Offset, Offset)>,
    /// Ends dropped from `unsynced_ends` by its bound: their smallest first
    /// offset and largest marker offset.
    unsynced_overflow: Option<(Offset, Offset)>,
    /// Whether the bound made the index forget an aborted transaction that
    /// retention had not removed: the cleaner then may not tell committed
    /// from aborted records below the LSO.
    forgot_by_bound: bool,
}

impl PartitionTransactions {
    /// A transactional data batch of `producer_id` is about to be appended
    /// (at `first_offset` or later): opens its transaction if none is and
    /// the bound allows (a failed append undoes a new one).
    pub(crate) fn data(&mut self, producer_id: ProducerId, first_offset: Offset) -> Opened {
        if self.open.contains_key(&producer_id) {
            return Opened::Already;
        }
        if self.open.len() >= OPEN_TRANSACTIONS_MAX {
            return Opened::Full;
        }
        self.open.insert(producer_id, first_offset);
        assert!(self.open.len() <= OPEN_TRANSACTIONS_MAX, "open transactions bounded");
        Opened::New
    }

    /// Undoes [`data`](Self::data) (which opened at `first_offset`) after
    /// the append failed, unless a marker closed that transaction meanwhile
    /// (a coordinator's abort can land while the append is in flight).
    pub(crate) fn undo_data(&mut self, producer_id: ProducerId, first_offset: Offset) {
        if self.open.get(&producer_id) == Some(&first_offset) {
            self.open.remove(&producer_id);
        }
        assert!(self.open.get(&producer_id) != Some(&first_offset), "undone");
    }

    /// A marker of `producer_id` was stored at `marker_offset`.
    pub(crate) fn marker(&mut self, producer_id: ProducerId, outcome: Outcome, marker_offset: Offset) {
        let Some(first_offset) = self.open.remove(&producer_id) else {
            return;
        };
        // Opened at a lower bound whose batch never landed (its append
        // failed while the marker was written): nothing to skip.
        if first_offset >= marker_offset {
            return;
        }
        if self.unsynced_ends.len() >= UNSYNCED_ENDS_MAX {
            if let Some((first, marker)) = self.unsynced_ends.pop_front() {
                let (low, high) = self.unsynced_overflow.unwrap_or((first, marker));
                self.unsynced_overflow = Some((low.min(first), high.max(marker)));
            }
        }
        self.unsynced_ends.push_back((first_offset, marker_offset));
        assert!(self.unsynced_ends.len() <= UNSYNCED_ENDS_MAX, "unsynced ends bounded");
        if outcome == Outcome::Abort {
            if self.aborted.len() >= ABORTED_TRANSACTIONS_MAX {
                if let Some(oldest) = self.aborted.pop_front() {
                    self.forgot_by_bound = true;
                    tracing::warn!(
                        producer_id = oldest.producer_id.0,
                        first_offset = oldest.first_offset.0,
                        "aborted-transactions index full: forgetting the oldest"
                    );
                }
            }
            self.aborted.push_back(AbortedTransaction {
                producer_id,
                first_offset,
                last_offset: marker_offset,
            });
            self.aborted_span_max = self.aborted_span_max.max(marker_offset.0 - first_offset.0);
        }
        assert!(self.aborted.len() <= ABORTED_TRANSACTIONS_MAX, "aborted index bounded");
    }

    /// Feeds one stored batch (log order): `batch` is its bytes when it is a
    /// control batch (to read the marker), otherwise anything. Returns the
    /// marker read, if it was one.
    pub(crate) fn replay(&mut self, header: &BatchHeader, batch: &[u8]) -> Option<Marker> {
        if !control::is_transactional(header) {
            return None;
        }
        let producer_id = ProducerId(header.producer_id);
        if header.is_control() {
            match control::parse(batch) {
                Ok(marker) => {
                    self.marker(producer_id, marker.outcome, header.base_offset);
                    return Some(marker);
                }
                Err(e) => tracing::warn!(offset = header.base_offset.0, error = %e, "unreadable marker skipped"),
            }
        } else {
            // Stored data is replayed whatever the bound: it was accepted.
            self.open.entry(producer_id).or_insert(header.base_offset);
        }
        None
    }

    /// Where `producer_id`'s transaction open here starts, if one is.
    pub(crate) fn open_start(&self, producer_id: ProducerId) -> Option<Offset> {
        self.open.get(&producer_id).copied()
    }

    /// The last stable offset under `high_watermark`.
    pub(crate) fn last_stable_offset(&self, high_watermark: Offset) -> Offset {
        let first_open = self.open.values().min().copied().unwrap_or(high_watermark);
        let stable = first_open.min(high_watermark);
        assert!(stable <= high_watermark, "the LSO never passes the high watermark");
        stable
    }

    /// Aborted transactions a read of `[from, to)` must know about: those
    /// whose abort marker is at or after `from` and whose data starts before `to`.
    /// Bounded by the index's order: a binary search finds the first marker
    /// at or after `from`, and the walk stops past `to` + the longest span.
    pub(crate) fn aborted_between(&self, from: Offset, to: Offset) -> Vec<AbortedTransaction> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        let stop = to.0.saturating_add(self.aborted_span_max);
        let found: Vec<AbortedTransaction> = self
            .aborted
            .range(start..)
            .take_while(|a| a.last_offset.0 <= stop)
            .filter(|a| a.first_offset < to)
            .copied()
            .collect();
        assert!(
            found.iter().all(|a| a.last_offset >= from),
            "only markers at or after the read"
        );
        found
    }

    /// Below this offset every transaction has ended with a durable marker
    /// (given the last stable offset `lso` and the log's `durable_end`):
    /// what the cleaner may judge.
    pub(crate) fn judged_end(&mut self, lso: Offset, durable_end: Offset) -> Offset {
        self.unsynced_ends.retain(|(_, marker)| *marker >= durable_end);
        if self.unsynced_overflow.is_some_and(|(_, marker)| marker < durable_end) {
            self.unsynced_overflow = None;
        }
        let pending = self
            .unsynced_ends
            .iter()
            .map(|(first, _)| *first)
            .chain(self.unsynced_overflow.map(|(first, _)| first))
            .min();
        let end = pending.map_or(lso, |first| first.min(lso));
        assert!(end <= lso, "never past the last stable offset");
        end
    }

    /// Whether every aborted transaction still in the log is in the index
    /// (none was forgotten by [`ABORTED_TRANSACTIONS_MAX`]).
    pub(crate) fn is_complete(&self) -> bool {
        !self.forgot_by_bound
    }

    /// Forgets aborted transactions wholly below `log_start` (retention).
    pub(crate) fn forget_before(&mut self, log_start: Offset) {
        while self.aborted.front().is_some_and(|a| a.last_offset < log_start) {
            self.aborted.pop_front();
        }
    }

    /// Producers with a transaction open here (tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn open_count(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const A: ProducerId = ProducerId(1);
    const B: ProducerId = ProducerId(2);

    #[test]
    fn the_cleaner_judges_only_transactions_whose_marker_is_durable() {
        let mut txns = PartitionTransactions::default();
        txns.data(A, Offset(3));
        txns.data(B, Offset(5));
        txns.marker(A, Outcome::Commit, Offset(8));
        txns.marker(B, Outcome::Abort, Offset(9));
        let lso = txns.last_stable_offset(Offset(12));
        assert_eq!(lso, Offset(12));
        // Neither marker is durable: nothing from A's first batch on.
        assert_eq!(txns.judged_end(lso, Offset(8)), Offset(3));
        // A's marker is: B's still holds the line.
        assert_eq!(txns.judged_end(lso, Offset(9)), Offset(5));
        assert_eq!(txns.judged_end(lso, Offset(10)), Offset(12));
        // Past the bound the oldest ends are summed, never forgotten.
        for i in 0..=i64::try_from(UNSYNCED_ENDS_MAX).unwrap() {
            let producer = ProducerId(100 + i);
            txns.data(producer, Offset(100 + 2 * i));
            txns.marker(producer, Outcome::Commit, Offset(101 + 2 * i));
        }
        let end = Offset(200 + 2 * i64::try_from(UNSYNCED_ENDS_MAX).unwrap());
        assert_eq!(
            txns.judged_end(end, Offset(101)),
            Offset(100),
            "the first end is summed, not lost"
        );
        assert_eq!(txns.judged_end(end, Offset(102)), Offset(102));
        assert_eq!(txns.judged_end(end, end), end);
    }

    #[test]
    fn open_transactions_hold_the_lso_and_markers_release_it() {
        let mut txns = PartitionTransactions::default();
        assert_eq!(txns.last_stable_offset(Offset(10)), Offset(10));
        assert_eq!(txns.data(A, Offset(3)), Opened::New);
        assert_eq!(
            txns.data(A, Offset(5)),
            Opened::Already,
            "one open transaction per producer"
        );
        txns.data(B, Offset(7));
        assert_eq!(txns.last_stable_offset(Offset(10)), Offset(3));
        txns.marker(A, Outcome::Commit, Offset(8));
        assert_eq!(txns.last_stable_offset(Offset(10)), Offset(7));
        txns.marker(B, Outcome::Abort, Offset(9));
        assert_eq!(txns.last_stable_offset(Offset(10)), Offset(10));
        let aborted = txns.aborted_between(Offset(0), Offset(10));
        assert_eq!(
            aborted,
            vec![AbortedTransaction {
                producer_id: B,
                first_offset: Offset(7),
                last_offset: Offset(9)
            }]
        );
        assert!(txns.aborted_between(Offset(10), Offset(20)).is_empty());
        assert!(txns.aborted_between(Offset(0), Offset(7)).is_empty());
        txns.forget_before(Offset(10));
        assert!(txns.aborted_between(Offset(0), Offset(10)).is_empty());
    }

    #[test]
    fn a_marker_without_an_open_transaction_changes_nothing() {
        let mut txns = PartitionTransactions::default();
        txns.marker(A, Outcome::Abort, Offset(4));
        assert!(txns.aborted_between(Offset(0), Offset(100)).is_empty());
        assert_eq!(txns.open_count(), 0);
    }

    proptest! {
        /// Against a model that remembers every batch: the LSO is the first
        /// offset of the oldest open transaction (or the high watermark),
        /// and every data offset of an aborted transaction is covered by an
        /// index entry of its producer.
        #[test]
        fn the_index_matches_a_model(steps in prop::collection::vec((0u8..3, 0i64..3), 1..200)) {
            let mut txns = PartitionTransactions::default();
            let mut open: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            let mut aborted_offsets: Vec<(i64, i64)> = Vec::new();
            let mut next = 0i64;
            for (kind, producer) in steps {
                match kind {
                    0 => {
                        txns.data(ProducerId(producer), Offset(next));
                        open.entry(producer).or_default().push(next);
                    }
                    _ => {
                        let outcome = if kind == 1 { Outcome::Commit } else { Outcome::Abort };
                        txns.marker(ProducerId(producer), outcome, Offset(next));
                        if let Some(offsets) = open.remove(&producer) {
                            if outcome == Outcome::Abort {
                                aborted_offsets.extend(offsets.into_iter().map(|o| (producer, o)));
                            }
                        }
                    }
                }
                next += 1;
                let first_open = open.values().filter_map(|o| o.first()).min().copied().unwrap_or(next);
                prop_assert_eq!(txns.last_stable_offset(Offset(next)), Offset(first_open));
            }
            // The bounded lookup finds exactly what a full scan finds.
            for from in (0..next).step_by(7) {
                for to in (from..=next).step_by(5) {
                    let naive: Vec<AbortedTransaction> = txns
                        .aborted
                        .iter()
                        .filter(|a| a.last_offset.0 >= from && a.first_offset.0 < to)
                        .copied()
                        .collect();
                    prop_assert_eq!(txns.aborted_between(Offset(from), Offset(to)), naive);
                }
            }
            let index = txns.aborted_between(Offset(0), Offset(next));
            for (producer, offset) in aborted_offsets {
                prop_assert!(index.iter().any(|a| a.producer_id == ProducerId(producer)
                    && a.first_offset.0 <= offset && offset < a.last_offset.0));
            }
        }
    }
}
