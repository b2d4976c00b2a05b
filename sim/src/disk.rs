//! A simulated partition log on a simulated disk.
//!
//! What it keeps is the part of `shardline_log::Log` replication depends
//! on: records at dense offsets, each stamped with the leader epoch it was
//! written under; a durable end (what an fsync covered); truncation; the
//! leader-epoch lookup OffsetForLeaderEpoch answers from. What it models of
//! the disk: writes sit unsynced until a sync; a sync may fail, and then the
//! log refuses writes until the node restarts (as `Log` does after a failed
//! fdatasync); at a crash every unsynced record may be lost, survive, or be
//! torn (half written), and recovery at restart cuts the log at the first
//! torn record (as the log's recovery stops at the first bad checksum).

use shardline_log::Offset;
use shardline_replication::LeaderEpoch;

use crate::rng::Pcg32;

/// One record a producer sent: who, which sequence number, and a value
/// unique in the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Record {
    pub(crate) producer: u32,
    pub(crate) sequence: u32,
    pub(crate) value: u64,
}

/// A record as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) epoch: LeaderEpoch,
    pub(crate) record: Record,
    /// Half written at a crash: recovery must cut it, and nothing may serve it.
    pub(crate) torn: bool,
}

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiskError {
    /// An earlier sync failed; the log refuses writes until reopened.
    Failed,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SimLog {
    entries: Vec<Entry>,
    /// Entries below this are on disk for sure.
    durable: usize,
    failed: bool,
}

fn offset_of(index: usize) -> Offset {
    Offset(i64::try_from(index).unwrap_or(i64::MAX))
}

fn index_of(offset: Offset) -> usize {
    usize::try_from(offset.0).unwrap_or(0)
}

impl SimLog {
    pub(crate) fn log_end(&self) -> Offset {
        offset_of(self.entries.len())
    }

    pub(crate) fn durable_end(&self) -> Offset {
        offset_of(self.durable)
    }

    pub(crate) fn entry(&self, offset: Offset) -> Option<&Entry> {
        self.entries.get(index_of(offset))
    }

    /// Entries from `from`, at most `count`, below `end`.
    pub(crate) fn read(&self, from: Offset, count: usize, end: Offset) -> Vec<Entry> {
        let end = index_of(end).min(self.entries.len());
        let from = index_of(from);
        if from >= end {
            return Vec::new();
        }
        let read: Vec<Entry> = self
            .entries
            .get(from..end.min(from + count))
            .unwrap_or_default()
            .to_vec();
        assert!(read.iter().all(|entry| !entry.torn), "a torn record is never served");
        read
    }

    pub(crate) fn append(&mut self, entry: Entry) -> Result<Offset, DiskError> {
        if self.failed {
            return Err(DiskError::Failed);
        }
        assert!(!entry.torn);
        assert!(
            self.entries.last().is_none_or(|last| last.epoch <= entry.epoch),
            "epochs in a log never go back"
        );
        self.entries.push(entry);
        Ok(offset_of(self.entries.len() - 1))
    }

    /// fdatasync: everything written becomes durable, or (`fails`) the log fails.
    pub(crate) fn sync(&mut self, fails: bool) -> Result<(), DiskError> {
        if self.failed {
            return Err(DiskError::Failed);
        }
        if fails {
            self.failed = true;
            return Err(DiskError::Failed);
        }
        self.durable = self.entries.len();
        Ok(())
    }

    /// Cuts everything from `offset` on, durably.
    pub(crate) fn truncate(&mut self, offset: Offset) -> Offset {
        let keep = index_of(offset).min(self.entries.len());
        self.entries.truncate(keep);
        self.durable = self.durable.min(keep);
        assert!(self.durable <= self.entries.len());
        self.log_end()
    }

    /// The newest epoch stored.
    pub(crate) fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|entry| entry.epoch)
    }

    /// Kafka's OffsetsForLeaderEpoch answer from this log: the largest epoch
    /// ≤ `epoch` stored here and where it ends (the start of the next epoch,
    /// or the log end); `None` if every stored epoch is newer.
    pub(crate) fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let found = self
            .entries
            .iter()
            .rev()
            .map(|entry| entry.epoch)
            .find(|e| *e <= epoch)?;
        let end = self
            .entries
            .iter()
            .position(|entry| entry.epoch > found)
            .unwrap_or(self.entries.len());
        assert!(end <= self.entries.len());
        Some((found, offset_of(end)))
    }

    /// A crash: each unsynced record is lost from some point on, and the
    /// first lost one may stay behind torn.
    pub(crate) fn crash(&mut self, rng: &mut Pcg32) {
        let unsynced = self.entries.len() - self.durable;
        let survive = self.durable + usize::try_from(rng.between(0, u64::try_from(unsynced).unwrap_or(0))).unwrap_or(0);
        let torn = survive < self.entries.len() && rng.chance(500);
        self.entries.truncate(survive + usize::from(torn));
        if torn {
            if let Some(last) = self.entries.last_mut() {
                last.torn = true;
            }
        }
        self.failed = false;
    }

    /// Recovery at open: cut at the first torn record; what is left counts
    /// as durable (it was read back from the disk).
    pub(crate) fn recover(&mut self) -> usize {
        let cut = self
            .entries
            .iter()
            .position(|entry| entry.torn)
            .unwrap_or(self.entries.len());
        let torn = self.entries.len() - cut;
        self.entries.truncate(cut);
        self.durable = self.entries.len();
        torn
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }
}
