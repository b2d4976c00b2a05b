//! Idempotent-producer state of one partition (lives with the partition, on its shard).
//!
//! For each producer id the partition remembers its epoch, the last sequence
//! number it accepted (including appends still in flight) and its last
//! `CACHED_BATCHES_MAX` batches with their offsets. A batch is then:
//! - a **duplicate** if it matches a cached batch: acknowledged again with the
//!   original offsets, not appended;
//! - **in order** if its base sequence follows the last accepted one: appended;
//! - **out of order** otherwise (a gap, or an unknown producer not starting at 0):
//!   refused with OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - **fenced** if its epoch is older than the producer's: INVALID_PRODUCER_EPOCH.
//!
//! State is rebuilt from batch headers when the partition's log is opened.

use std::collections::{HashMap, VecDeque};

use shardline_log::{BatchHeader, Offset};

/// A producer id (Kafka's `producerId`, i64), as InitProducerId hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ProducerId(pub(crate) i64);

/// A producer epoch (Kafka's `producerEpoch`, i16): bumped to fence an older
/// instance of the same producer. Not a leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ProducerEpoch(pub(crate) i16);

/// Batches remembered per producer for duplicate detection (Kafka keeps 5, the
/// most a client may have in flight per partition).
pub(crate) const CACHED_BATCHES_MAX: usize = 5;

/// Producers remembered per partition; the least recently used is forgotten
/// past this (bounded memory with many short-lived producers).
pub(crate) const PRODUCERS_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CachedBatch {
    base_sequence: i32,
    last_sequence: i32,
    /// `None` while the append is in flight.
    offsets: Option<(Offset, Offset)>,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    last_sequence: i32,
    /// Max timestamp of the producer's last batch accepted (DescribeProducers).
    last_timestamp_ms: i64,
    batches: VecDeque<CachedBatch>,
    last_used: u64,
    /// Coordinator epoch of the last marker (-1: none seen): a marker from
    /// an older coordinator (one that lost its partition) is refused.
    coordinator_epoch: i32,
}

/// Why a marker is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkerRefusal {
    /// The producer has a newer epoch than the marker's.
    StaleProducerEpoch,
    /// A newer coordinator already wrote a marker for the producer.
    StaleCoordinator,
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Not an idempotent batch, or the next in sequence: append it.
    Append,
    /// Already stored at these offsets: acknowledge without appending.
    Duplicate { base_offset: Offset, last_offset: Offset },
    /// Same batch is being appended right now.
    DuplicateInFlight,
    /// A gap or a sequence that does not start at 0 for a new producer/epoch.
    OutOfOrder { expected: i32, got: i32 },
    /// The epoch is older than the producer's current one.
    Fenced { current: i16, got: i16 },
}

/// Whether a batch carries a producer id and sequence (only those are tracked).
fn is_idempotent(header: &BatchHeader) -> bool {
    header.producer_id >= 0 && header.base_sequence >= 0
}

impl ProducerEntry {
    /// Caches a batch, forgetting the oldest past `CACHED_BATCHES_MAX`.
    fn remember(&mut self, batch: CachedBatch) {
        if self.batches.len() == CACHED_BATCHES_MAX {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
    }
}

fn last_sequence(header: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX back to 0, as Kafka's do.
    let last = i64::from(header.base_sequence) + i64::from(header.last_offset_delta);
    (last % (i64::from(i32::MAX) + 1)) as i32
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

/// What DescribeProducers shows of one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerSummary {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
    pub(crate) last_sequence: i32,
    pub(crate) last_timestamp_ms: i64,
    /// First offset of its transaction open on the partition, or -1.
    pub(crate) current_txn_start_offset: i64,
    /// Coordinator epoch of its last marker here, or -1.
    pub(crate) coordinator_epoch: i32,
}

/// Producer state of one partition.
#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    clock: u64,
}

impl ProducerStates {
    /// Checks `header` and, when it is to be appended, records it as in flight.
    pub(crate) fn check(&mut self, header: &BatchHeader) -> SequenceCheck {
        if !is_idempotent(header) {
            return SequenceCheck::Append;
        }
        self.clock += 1;
        let clock = self.clock;
        let last = last_sequence(header);
        let batch = CachedBatch {
            base_sequence: header.base_sequence,
            last_sequence: last,
            offsets: None,
        };
        let Some(entry) = self.producers.get_mut(&header.producer_id) else {
            if header.base_sequence != 0 {
                return SequenceCheck::OutOfOrder {
                    expected: 0,
                    got: header.base_sequence,
                };
            }
            self.evict_if_full();
            let entry = ProducerEntry {
                epoch: header.producer_epoch,
                last_sequence: last,
                last_timestamp_ms: header.max_timestamp_ms,
                batches: VecDeque::from([batch]),
                last_used: clock,
                coordinator_epoch: -1,
            };
            self.producers.insert(header.producer_id, entry);
            return SequenceCheck::Append;
        };
        entry.last_used = clock;
        if header.producer_epoch < entry.epoch {
            return SequenceCheck::Fenced {
                current: entry.epoch,
                got: header.producer_epoch,
            };
        }
        if header.producer_epoch > entry.epoch {
            if header.base_sequence != 0 {
                return SequenceCheck::OutOfOrder {
                    expected: 0,
                    got: header.base_sequence,
                };
            }
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        } else {
            let cached = entry
                .batches
                .iter()
                .find(|b| b.base_sequence == header.base_sequence && b.last_sequence == last);
            if let Some(cached) = cached {
                return match cached.offsets {
                    Some((base_offset, last_offset)) => SequenceCheck::Duplicate {
                        base_offset,
                        last_offset,
                    },
                    None => SequenceCheck::DuplicateInFlight,
                };
            }
            let expected = next_sequence(entry.last_sequence);
            if header.base_sequence != expected {
                return SequenceCheck::OutOfOrder {
                    expected,
                    got: header.base_sequence,
                };
            }
        }
        entry.last_sequence = last;
        entry.last_timestamp_ms = header.max_timestamp_ms;
        entry.remember(batch);
        SequenceCheck::Append
    }

    /// The append of `header` (checked with `check`) succeeded at these offsets.
    pub(crate) fn complete(&mut self, header: &BatchHeader, base_offset: Offset, last_offset: Offset) {
        if !is_idempotent(header) {
            return;
        }
        if let Some(entry) = self.producers.get_mut(&header.producer_id) {
            let last = last_sequence(header);
            if let Some(cached) = entry
                .batches
                .iter_mut()
                .find(|b| b.base_sequence == header.base_sequence && b.last_sequence == last)
            {
                cached.offsets = Some((base_offset, last_offset));
            }
        }
    }

    /// The append of `header` failed: forget it, so the client's retry is in order.
    pub(crate) fn abort(&mut self, header: &BatchHeader) {
        if !is_idempotent(header) {
            return;
        }
        if let Some(entry) = self.producers.get_mut(&header.producer_id) {
            let last = last_sequence(header);
            entry
                .batches
                .retain(|b| !(b.base_sequence == header.base_sequence && b.offsets.is_none()));
            if entry.last_sequence == last {
                entry.last_sequence = if header.base_sequence == 0 {
                    -1
                } else {
                    header.base_sequence - 1
                };
            }
        }
    }

    /// Whether a marker of `producer_id` at `epoch` from a coordinator at
    /// `coordinator_epoch` may be written: not from an older instance of
    /// the producer, nor from an older coordinator (Kafka's fencing of a
    /// coordinator that lost its partition but still writes).
    pub(crate) fn check_marker(
        &self,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        coordinator_epoch: i32,
    ) -> Result<(), MarkerRefusal> {
        let Some(entry) = self.producers.get(&producer_id.0) else {
            return Ok(());
        };
        if epoch.0 < entry.epoch {
            return Err(MarkerRefusal::StaleProducerEpoch);
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(MarkerRefusal::StaleCoordinator);
        }
        Ok(())
    }

    /// A transaction marker of `producer_id` at `epoch` was stored: a newer
    /// epoch than the producer's fences the older one (its batches are
    /// refused from now on) and the producer's next batch starts at
    /// sequence 0, as after InitProducerId. `coordinator_epoch` is the
    /// marker's (-1 when replaying a header alone).
    pub(crate) fn marker(&mut self, producer_id: ProducerId, epoch: ProducerEpoch, coordinator_epoch: i32) {
        self.clock += 1;
        let clock = self.clock;
        if !self.producers.contains_key(&producer_id.0) {
            self.evict_if_full();
        }
        let entry = self.producers.entry(producer_id.0).or_insert_with(|| ProducerEntry {
            epoch: epoch.0,
            last_sequence: -1,
            last_timestamp_ms: -1,
            batches: VecDeque::new(),
            last_used: clock,
            coordinator_epoch: -1,
        });
        if epoch.0 > entry.epoch {
            entry.epoch = epoch.0;
            entry.last_sequence = -1;
            entry.batches.clear();
        }
        entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
        entry.last_used = clock;
        assert!(entry.epoch >= epoch.0, "a marker never lowers a producer's epoch");
        assert!(
            entry.coordinator_epoch >= coordinator_epoch,
            "nor its coordinator epoch"
        );
    }

    /// Replays a stored batch (when rebuilding from the log).
    pub(crate) fn replay(&mut self, header: &BatchHeader) {
        if header.is_control() && header.producer_id >= 0 {
            self.marker(ProducerId(header.producer_id), ProducerEpoch(header.producer_epoch), -1);
            return;
        }
        if !is_idempotent(header) {
            return;
        }
        self.clock += 1;
        let clock = self.clock;
        let last = last_sequence(header);
        let batch = CachedBatch {
            base_sequence: header.base_sequence,
            last_sequence: last,
            offsets: Some((header.base_offset, header.last_offset())),
        };
        if !self.producers.contains_key(&header.producer_id) {
            self.evict_if_full();
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                last_sequence: last,
                last_timestamp_ms: header.max_timestamp_ms,
                batches: VecDeque::new(),
                last_used: clock,
                coordinator_epoch: -1,
            });
        if header.producer_epoch > entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.last_sequence = last;
        entry.last_timestamp_ms = header.max_timestamp_ms;
        entry.last_used = clock;
        entry.remember(batch);
    }

    /// Every producer remembered, by id (at most [`PRODUCERS_MAX`]).
    pub(crate) fn describe(&self) -> Vec<ProducerSummary> {
        let mut out: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(id, entry)| ProducerSummary {
                producer_id: *id,
                epoch: entry.epoch,
                last_sequence: entry.last_sequence,
                last_timestamp_ms: entry.last_timestamp_ms,
                current_txn_start_offset: -1,
                coordinator_epoch: entry.coordinator_epoch,
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        assert!(out.len() <= PRODUCERS_MAX, "producer table over its bound");
        out
    }

    fn evict_if_full(&mut self) {
        if self.producers.len() < PRODUCERS_MAX {
            return;
        }
        if let Some(oldest) = self
            .producers
            .iter()
            .min_by_key(|(_, e)| e.last_used)
            .map(|(id, _)| *id)
        {
            self.producers.remove(&oldest);
        }
        assert!(self.producers.len() < PRODUCERS_MAX, "producer table over its bound");
    }

    /// Producers remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_log::{validate, BatchSpec};

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> BatchHeader {
        let mut spec = BatchSpec::plain(records, 0, b"x");
        spec.producer_id = producer_id;
        spec.producer_epoch = epoch;
        spec.base_sequence = base_sequence;
        validate(&shardline_log::build_batch(&spec)).unwrap()
    }

    #[test]
    fn in_order_batches_append_and_duplicates_return_the_first_offsets() {
        let mut states = ProducerStates::default();
        let first = header(7, 0, 0, 3);
        assert_eq!(states.check(&first), SequenceCheck::Append);
        assert_eq!(states.check(&first), SequenceCheck::DuplicateInFlight);
        states.complete(&first, Offset(10), Offset(12));
        assert_eq!(
            states.check(&first),
            SequenceCheck::Duplicate {
                base_offset: Offset(10),
                last_offset: Offset(12)
            }
        );
        assert_eq!(states.check(&header(7, 0, 3, 2)), SequenceCheck::Append);
    }

    #[test]
    fn gaps_and_new_producers_not_at_zero_are_out_of_order() {
        let mut states = ProducerStates::default();
        assert_eq!(
            states.check(&header(1, 0, 5, 1)),
            SequenceCheck::OutOfOrder { expected: 0, got: 5 }
        );
        assert_eq!(states.check(&header(1, 0, 0, 2)), SequenceCheck::Append);
        assert_eq!(
            states.check(&header(1, 0, 4, 1)),
            SequenceCheck::OutOfOrder { expected: 2, got: 4 }
        );
    }

    #[test]
    fn old_epochs_are_fenced_and_new_epochs_restart_at_zero() {
        let mut states = ProducerStates::default();
        assert_eq!(states.check(&header(1, 3, 0, 1)), SequenceCheck::Append);
        assert_eq!(
            states.check(&header(1, 2, 1, 1)),
            SequenceCheck::Fenced { current: 3, got: 2 }
        );
        assert_eq!(
            states.check(&header(1, 4, 1, 1)),
            SequenceCheck::OutOfOrder { expected: 0, got: 1 }
        );
        assert_eq!(states.check(&header(1, 4, 0, 1)), SequenceCheck::Append);
    }

    #[test]
    fn an_aborted_append_lets_the_retry_through() {
        let mut states = ProducerStates::default();
        let first = header(1, 0, 0, 2);
        assert_eq!(states.check(&first), SequenceCheck::Append);
        states.abort(&first);
        assert_eq!(states.check(&first), SequenceCheck::Append);
        let second = header(1, 0, 2, 1);
        assert_eq!(states.check(&second), SequenceCheck::Append);
        states.abort(&second);
        assert_eq!(states.check(&second), SequenceCheck::Append);
    }

    #[test]
    fn replay_rebuilds_the_same_state() {
        let mut states = ProducerStates::default();
        let mut stored = header(9, 1, 0, 4);
        stored.base_offset = Offset(100);
        states.replay(&stored);
        assert_eq!(
            states.check(&stored),
            SequenceCheck::Duplicate {
                base_offset: Offset(100),
                last_offset: Offset(103)
            }
        );
        assert_eq!(states.check(&header(9, 1, 4, 1)), SequenceCheck::Append);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut states = ProducerStates::default();
        assert_eq!(states.check(&header(1, 0, 0, 1)), SequenceCheck::Append);
        // Force the last sequence to just below the wrap.
        if let Some(entry) = states.producers.get_mut(&1) {
            entry.last_sequence = i32::MAX - 1;
        }
        assert_eq!(states.check(&header(1, 0, i32::MAX, 2)), SequenceCheck::Append);
        assert_eq!(states.check(&header(1, 0, 1, 1)), SequenceCheck::Append);
    }

    #[test]
    fn the_producer_table_is_bounded() {
        let mut states = ProducerStates::default();
        for id in 0..(PRODUCERS_MAX as i64 + 10) {
            assert_eq!(states.check(&header(id, 0, 0, 1)), SequenceCheck::Append);
        }
        assert_eq!(states.len(), PRODUCERS_MAX);
    }

    #[test]
    fn markers_fence_older_producers_and_older_coordinators() {
        let mut states = ProducerStates::default();
        let (id, epoch) = (ProducerId(5), ProducerEpoch(2));
        assert_eq!(states.check_marker(id, epoch, 0), Ok(()), "an unknown producer");
        assert_eq!(states.check(&header(5, 2, 0, 1)), SequenceCheck::Append);
        states.marker(id, epoch, 3);
        assert_eq!(states.check_marker(id, epoch, 3), Ok(()), "a retried marker");
        assert_eq!(states.check_marker(id, epoch, 2), Err(MarkerRefusal::StaleCoordinator));
        assert_eq!(
            states.check_marker(id, ProducerEpoch(1), 3),
            Err(MarkerRefusal::StaleProducerEpoch)
        );
        // A bumped epoch (an abort that fences): the next batch starts at 0.
        states.marker(id, ProducerEpoch(3), 3);
        assert_eq!(
            states.check(&header(5, 2, 1, 1)),
            SequenceCheck::Fenced { current: 3, got: 2 }
        );
        assert_eq!(states.check(&header(5, 3, 0, 1)), SequenceCheck::Append);
        // Replaying a header alone never lowers what was learnt.
        states.marker(id, ProducerEpoch(3), -1);
        assert_eq!(
            states.check_marker(id, ProducerEpoch(3), 2),
            Err(MarkerRefusal::StaleCoordinator)
        );
    }

    #[test]
    fn plain_batches_are_always_appended() {
        let mut states = ProducerStates::default();
        let plain = header(-1, -1, -1, 1);
        assert_eq!(states.check(&plain), SequenceCheck::Append);
        assert_eq!(states.check(&plain), SequenceCheck::Append);
        assert_eq!(states.len(), 0);
    }
}
