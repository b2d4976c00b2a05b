//! The invariants checked after every step of a run.
//!
//! The checker keeps its own record of what the cluster has committed: for
//! each partition, the records below any replica's high watermark, in offset
//! order. Whenever a replica's high watermark covers an offset, that
//! replica's record there must be the committed one (or becomes it, if the
//! offset is new). So a record served that a later leader does not have, an
//! acknowledged record that a later leader lost or replaced, two records at
//! one offset — all show up as a mismatch at the step that made them
//! visible.

use std::collections::{BTreeMap, BTreeSet};

use shardline_log::Offset;
use shardline_replication::{LeaderEpoch, Placement};

use crate::disk::{Entry, Record, SimLog};

/// A broken invariant: what, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

/// Where one replica's log has been checked up to (reset when the log is
/// cut or the node crashes).
pub(crate) type Verified = usize;

#[derive(Debug, Default)]
pub(crate) struct Checker {
    /// Per partition: the committed records, dense from offset 0.
    committed: Vec<Vec<Record>>,
    /// Per partition: (producer, sequence) of every committed record.
    sequences: Vec<BTreeSet<(u32, u32)>>,
    /// Per partition: records producers were told are stored, by offset.
    acked: Vec<BTreeMap<i64, Record>>,
    /// Who led each (partition, epoch).
    leaders: BTreeMap<(usize, LeaderEpoch), usize>,
    /// Per partition: the placement the metadata group last committed.
    placements: BTreeMap<usize, Placement>,
    pub(crate) consumed: usize,
}

fn at(offset: usize) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

impl Checker {
    pub(crate) fn new(partitions: usize) -> Checker {
        Checker {
            committed: vec![Vec::new(); partitions],
            sequences: vec![BTreeSet::new(); partitions],
            acked: vec![BTreeMap::new(); partitions],
            ..Checker::default()
        }
    }

    pub(crate) fn acked_count(&self) -> usize {
        self.acked.iter().map(BTreeMap::len).sum()
    }

    pub(crate) fn committed_count(&self) -> usize {
        self.committed.iter().map(Vec::len).sum()
    }

    /// Node `node` became leader of `partition` under `epoch`: nobody else
    /// may have led it under that epoch.
    pub(crate) fn became_leader(&mut self, partition: usize, epoch: LeaderEpoch, node: usize) -> Result<(), Violation> {
        match self.leaders.insert((partition, epoch), node) {
            Some(other) if other != node => Err(Violation(format!(
                "partition {partition}: n{} and n{} both led epoch {epoch}",
                other + 1,
                node + 1
            ))),
            _ => Ok(()),
        }
    }

    /// The metadata group committed `placement` for `partition`: its
    /// partition epoch is the last one's if nothing changed, and strictly
    /// greater if anything did (what lets a stale ISR change be refused).
    pub(crate) fn placement_committed(&mut self, partition: usize, placement: &Placement) -> Result<(), Violation> {
        if let Some(last) = self.placements.get(&partition) {
            let unchanged = placement.same_state(last);
            let moved_on = placement.partition_epoch > last.partition_epoch;
            if moved_on == unchanged || placement.partition_epoch < last.partition_epoch {
                return Err(Violation(format!(
                    "partition {partition}: partition epoch {} -> {} for {:?} -> {:?}",
                    last.partition_epoch, placement.partition_epoch, last, placement
                )));
            }
        }
        self.placements.insert(partition, placement.clone());
        Ok(())
    }

    /// Checks one replica's log below its high watermark against the
    /// committed records, extending them where it reaches further.
    pub(crate) fn replica(
        &mut self,
        partition: usize,
        node: usize,
        log: &SimLog,
        high_watermark: Offset,
        verified: &mut Verified,
    ) -> Result<(), Violation> {
        let high_watermark = usize::try_from(high_watermark.0).unwrap_or(0);
        let (Some(committed), Some(sequences)) = (self.committed.get_mut(partition), self.sequences.get_mut(partition))
        else {
            return Err(Violation(format!("no partition {partition}")));
        };
        assert!(*verified <= committed.len(), "checked no further than committed");
        for offset in *verified..high_watermark {
            let Some(entry) = log.entries().get(offset) else {
                return Err(Violation(format!(
                    "partition {partition}: n{}'s high watermark {high_watermark} passes its log end {}",
                    node + 1,
                    log.log_end()
                )));
            };
            if entry.torn {
                return Err(Violation(format!(
                    "partition {partition}: n{} has a torn record below its high watermark at {offset}",
                    node + 1
                )));
            }
            match committed.get(offset) {
                Some(record) if *record == entry.record => {}
                Some(record) => {
                    return Err(Violation(format!(
                        "partition {partition} offset {offset}: n{} holds {:?} (epoch {}) below its high watermark, \
                         but {:?} was committed there",
                        node + 1,
                        entry.record,
                        entry.epoch,
                        record
                    )))
                }
                None => {
                    if !sequences.insert((entry.record.producer, entry.record.sequence)) {
                        return Err(Violation(format!(
                            "partition {partition} offset {offset}: {:?} committed twice (idempotence)",
                            entry.record
                        )));
                    }
                    committed.push(entry.record);
                }
            }
        }
        *verified = (*verified).max(high_watermark);
        Ok(())
    }

    /// A producer was told `record` is stored at `offset`.
    pub(crate) fn acked(&mut self, partition: usize, offset: Offset, record: Record) -> Result<(), Violation> {
        let committed = self
            .committed
            .get(partition)
            .and_then(|c| c.get(usize::try_from(offset.0).ok()?));
        if committed != Some(&record) {
            return Err(Violation(format!(
                "partition {partition} offset {offset}: {record:?} acknowledged, but {committed:?} is committed there"
            )));
        }
        if let Some(acked) = self.acked.get_mut(partition) {
            acked.insert(offset.0, record);
        }
        Ok(())
    }

    /// A consumer read `entries` from `from` on.
    pub(crate) fn consumed(&mut self, partition: usize, from: Offset, entries: &[Entry]) -> Result<(), Violation> {
        let committed = self.committed.get(partition).map_or(&[][..], Vec::as_slice);
        for (index, entry) in entries.iter().enumerate() {
            let offset = from.0 + at(index);
            let expected = usize::try_from(offset).ok().and_then(|o| committed.get(o));
            if entry.torn || expected != Some(&entry.record) {
                return Err(Violation(format!(
                    "partition {partition} offset {offset}: a consumer read {:?} (torn: {}), committed is {expected:?}",
                    entry.record, entry.torn
                )));
            }
        }
        self.consumed += entries.len();
        Ok(())
    }

    /// Every acknowledged record is still held, at its offset, by one of
    /// `holders` (the partition's in-sync replicas, crashed or not).
    pub(crate) fn acked_still_held(&self, partition: usize, holders: &[&SimLog]) -> Result<(), Violation> {
        let Some(acked) = self.acked.get(partition) else {
            return Ok(());
        };
        for (offset, record) in acked {
            let held = holders.iter().any(|log| {
                log.entry(Offset(*offset))
                    .is_some_and(|e| e.record == *record && !e.torn)
            });
            if !held {
                return Err(Violation(format!(
                    "partition {partition} offset {offset}: acknowledged {record:?} is on no in-sync replica"
                )));
            }
        }
        Ok(())
    }
}
