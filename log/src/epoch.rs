//! The leader epoch cache: where each leader epoch begins in the log, kept in
//! memory and derived only from the stored batches' `partition leader epoch`
//! header field (bytes 12..16, see `batch.rs`).
//!
//! ```text
//!  offsets   0        40         95        130            log_end = 180
//!  batches   | e=-1 … | e=3 …    | e=3 … e=5 …            |
//!  entries   (-1, 0)   (3, 40)              (5, 130)
//! ```
//! An entry `(epoch, start_offset)` is recorded when a batch's epoch is
//! greater than the latest entry's epoch; a batch with a lower or equal epoch
//! changes nothing (as Kafka's `LeaderEpochFileCache.assign`). So entries
//! strictly increase in both epoch and start offset — asserted on every
//! change. Batches written before stamping existed carry -1 and count as epoch
//! -1 (Kafka skips them; here they make an entry, so an old log still answers
//! for "no epoch").
//!
//! The cache follows the log: appends add entries, `truncate_to` drops the
//! entries starting at or past the new end, retention drops the entries wholly
//! below the new log start and clamps the one covering it to start there. On
//! open it is rebuilt by walking every stored batch header, so it never needs
//! a file of its own (Kafka's `leader-epoch-checkpoint`). The one thing a
//! rebuild cannot recover is an epoch whose batches are all gone: a log that
//! retention emptied answers `None` after a reopen where it answered the
//! clamped entry before.
//!
//! The epoch field is not covered by the batch's CRC-32C (Kafka's format): a
//! byte flipped there on disk reads back as another epoch, which nothing can
//! tell from a real one. The cache takes whatever the batches hold; any
//! values, in any order, keep its invariants (no assertion here depends on an
//! epoch's value, only on offsets, which the log checks), and a lower one is
//! ignored like any lower epoch. See docs/storage.md, Leader epochs.
//!
//! Size: one 16-byte entry per leader epoch that still has a batch in the
//! log; leader elections bound it, not the data, so it has no bound of its own.

use crate::offset::Offset;

/// One entry of the leader epoch cache: the first stored offset written in
/// `epoch` (or, after retention, the log start when the epoch began earlier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    /// The partition leader epoch.
    pub epoch: i32,
    /// First offset of that epoch still in the log.
    pub start_offset: Offset,
}

/// The in-memory leader epoch cache of one log.
#[derive(Debug, Default, Clone)]
pub(crate) struct EpochCache {
    /// Ascending in epoch and in start offset.
    entries: Vec<EpochStart>,
}

impl EpochCache {
    /// Accounts for a stored batch: records `(epoch, base_offset)` if `epoch`
    /// is greater than the latest epoch.
    pub(crate) fn observe(&mut self, epoch: i32, base_offset: Offset) {
        let Some(last) = self.entries.last() else {
            self.entries.push(EpochStart {
                epoch,
                start_offset: base_offset,
            });
            return;
        };
        if epoch <= last.epoch {
            return;
        }
        assert!(
            base_offset >= last.start_offset,
            "a batch was stored below the latest epoch's start"
        );
        if base_offset == last.start_offset {
            // Only an entry retention clamped to the start of a log it emptied
            // can start where the next batch goes: that batch supersedes it.
            self.entries.pop();
        }
        self.entries.push(EpochStart {
            epoch,
            start_offset: base_offset,
        });
    }

    /// After `truncate_to`: drops entries starting at or after `log_end`.
    pub(crate) fn truncate_from_end(&mut self, log_end: Offset) {
        let keep = self.entries.partition_point(|e| e.start_offset < log_end);
        self.entries.truncate(keep);
        assert!(
            self.entries.last().is_none_or(|e| e.start_offset < log_end),
            "an entry survived past the log end"
        );
    }

    /// After retention: drops entries wholly below `log_start` and clamps the
    /// one covering it to start at `log_start`.
    pub(crate) fn truncate_from_start(&mut self, log_start: Offset) {
        // Entries starting at or before `log_start`; the last of them covers it.
        let covered = self.entries.partition_point(|e| e.start_offset <= log_start);
        if let Some(drop_count) = covered.checked_sub(1) {
            self.entries.drain(..drop_count);
            if let Some(first) = self.entries.first_mut() {
                first.start_offset = log_start;
            }
        }
        assert!(
            self.entries.first().is_none_or(|e| e.start_offset >= log_start),
            "an entry starts below the log start"
        );
    }

    /// Epoch of the latest entry.
    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Kafka's OffsetsForLeaderEpoch answer for `epoch`: the largest cached
    /// epoch ≤ `epoch`, and the offset where it ended (the start of the next
    /// cached epoch, or `log_end` when it is the latest). `None` when `epoch`
    /// is below every cached epoch, or the cache is empty.
    pub(crate) fn end_offset_for(&self, epoch: i32, log_end: Offset) -> Option<(i32, Offset)> {
        let after = self.entries.partition_point(|e| e.epoch <= epoch);
        let floor = self.entries.get(after.checked_sub(1)?)?;
        let end = self.entries.get(after).map_or(log_end, |next| next.start_offset);
        assert!(end >= floor.start_offset, "an epoch ends before it starts");
        Some((floor.epoch, end))
    }

    pub(crate) fn entries(&self) -> &[EpochStart] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        let mut cache = EpochCache::default();
        for (epoch, start) in entries {
            cache.observe(*epoch, Offset(*start));
        }
        assert_eq!(
            cache.entries().len(),
            entries.len(),
            "test entries must all be recorded"
        );
        cache
    }

    #[test]
    fn only_greater_epochs_make_entries() {
        let mut cache = EpochCache::default();
        for (epoch, base) in [(-1, 0), (-1, 5), (2, 10), (2, 12), (1, 15), (4, 20), (4, 25), (3, 30)] {
            cache.observe(epoch, Offset(base));
        }
        let got: Vec<(i32, i64)> = cache.entries().iter().map(|e| (e.epoch, e.start_offset.0)).collect();
        assert_eq!(got, vec![(-1, 0), (2, 10), (4, 20)]);
        assert_eq!(cache.latest_epoch(), Some(4));
    }

    /// OffsetsForLeaderEpoch cases, as Kafka's `LeaderEpochFileCache.endOffsetFor`
    /// answers them when the requested epoch is at or above the first cached
    /// one; below it this cache answers `None` (the caller says UNDEFINED_EPOCH).
    #[test]
    fn end_offset_for_epoch_follows_offsets_for_leader_epoch() {
        let log_end = Offset(100);
        // (cached entries, requested epoch, expected answer)
        type Case = (&'static [(i32, i64)], i32, Option<(i32, i64)>);
        let table: &[Case] = &[
            // Empty cache: nothing is known.
            (&[], 0, None),
            (&[], -1, None),
            // The latest epoch ends at the log end.
            (&[(0, 0)], 0, Some((0, 100))),
            // A later epoch than any cached: the latest one, ending at the log end.
            (&[(0, 0)], 7, Some((0, 100))),
            // An earlier epoch ends where the next cached one starts.
            (&[(0, 0), (2, 40), (5, 70)], 0, Some((0, 40))),
            (&[(0, 0), (2, 40), (5, 70)], 2, Some((2, 70))),
            (&[(0, 0), (2, 40), (5, 70)], 5, Some((5, 100))),
            // An epoch with no batches of its own: the largest cached below it.
            (&[(0, 0), (2, 40), (5, 70)], 1, Some((0, 40))),
            (&[(0, 0), (2, 40), (5, 70)], 3, Some((2, 70))),
            (&[(0, 0), (2, 40), (5, 70)], 4, Some((2, 70))),
            // Below every cached epoch (e.g. retention removed the older ones).
            (&[(3, 10), (5, 70)], 2, None),
            (&[(3, 10), (5, 70)], -1, None),
            // Unstamped batches count as epoch -1.
            (&[(-1, 0), (3, 10)], -1, Some((-1, 10))),
            (&[(-1, 0), (3, 10)], 1, Some((-1, 10))),
            (&[(-1, 0), (3, 10)], 3, Some((3, 100))),
            (&[(-1, 0)], 4, Some((-1, 100))),
        ];
        for (entries, requested, expected) in table {
            let got = cache(entries).end_offset_for(*requested, log_end);
            let expected = expected.map(|(epoch, end)| (epoch, Offset(end)));
            assert_eq!(got, expected, "entries {entries:?}, epoch {requested}");
        }
    }

    #[test]
    fn truncation_from_the_end_drops_entries_starting_at_or_past_it() {
        let mut c = cache(&[(0, 0), (2, 40), (5, 70)]);
        c.truncate_from_end(Offset(71));
        assert_eq!(c.entries().len(), 3);
        c.truncate_from_end(Offset(70));
        assert_eq!(c.latest_epoch(), Some(2));
        assert_eq!(c.end_offset_for(5, Offset(70)), Some((2, Offset(70))));
        c.truncate_from_end(Offset(0));
        assert_eq!(c.latest_epoch(), None);
    }

    proptest::proptest! {
        /// Epochs read from disk may hold anything (the field is outside the
        /// CRC): whatever they are, entries stay ascending in epoch and start,
        /// and every answer lies within the log.
        #[test]
        fn any_epochs_from_disk_keep_the_cache_ascending(
            epochs in proptest::collection::vec(proptest::prelude::any::<i32>(), 0..40),
            asked in proptest::collection::vec(proptest::prelude::any::<i32>(), 0..8),
        ) {
            let mut cache = EpochCache::default();
            for (base, epoch) in epochs.iter().enumerate() {
                cache.observe(*epoch, Offset(base as i64 * 3));
                let entries = cache.entries();
                proptest::prop_assert!(entries
                    .windows(2)
                    .all(|pair| matches!(pair, [a, b] if a.epoch < b.epoch && a.start_offset < b.start_offset)));
                proptest::prop_assert_eq!(cache.latest_epoch(), entries.last().map(|entry| entry.epoch));
            }
            let log_end = Offset(epochs.len() as i64 * 3);
            for epoch in asked.into_iter().chain(epochs) {
                if let Some((found, end)) = cache.end_offset_for(epoch, log_end) {
                    proptest::prop_assert!(found <= epoch && end <= log_end);
                }
            }
        }
    }

    #[test]
    fn retention_keeps_the_entry_covering_the_start_and_clamps_it() {
        let mut c = cache(&[(0, 0), (2, 40), (5, 70)]);
        c.truncate_from_start(Offset(0));
        assert_eq!(c.entries().len(), 3);
        c.truncate_from_start(Offset(55));
        let got: Vec<(i32, i64)> = c.entries().iter().map(|e| (e.epoch, e.start_offset.0)).collect();
        assert_eq!(got, vec![(2, 55), (5, 70)]);
        c.truncate_from_start(Offset(70));
        let got: Vec<(i32, i64)> = c.entries().iter().map(|e| (e.epoch, e.start_offset.0)).collect();
        assert_eq!(got, vec![(5, 70)]);
        // A start past the last entry keeps it, clamped (the epoch still covers it).
        c.truncate_from_start(Offset(90));
        assert_eq!(c.end_offset_for(5, Offset(90)), Some((5, Offset(90))));
        assert_eq!(c.end_offset_for(4, Offset(90)), None);
        // The first batch of a newer epoch written there supersedes it.
        c.observe(6, Offset(90));
        let got: Vec<(i32, i64)> = c.entries().iter().map(|e| (e.epoch, e.start_offset.0)).collect();
        assert_eq!(got, vec![(6, 90)]);
    }
}
