//! The facts a coordinator stores about groups, as plain values, and the
//! replay that rebuilds groups from them in log order (last entry per key
//! wins; a tombstone removes its key). The byte layout of these facts is the
//! engine's (`engine/src/coordinator/record.rs`); the simulator keeps them
//! in memory.

use std::{collections::HashMap, time::Instant};

use bytes::Bytes;

use crate::group::Group;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub commit_timestamp_ms: i64,
    pub metadata: Option<String>,
}

impl CommittedOffset {
    /// An offset alone: no leader epoch, timestamp or metadata.
    pub fn bare(offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            commit_timestamp_ms: 0,
            metadata: None,
        }
    }
}

/// A member as stored in a group metadata entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// The member's metadata for the group's chosen protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group as stored after each completed rebalance or when it empties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub group: String,
    pub protocol_type: String,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: Vec<MemberSnapshot>,
}

/// One stored fact about a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
        committed: CommittedOffset,
    },
    OffsetTombstone {
        group: String,
        topic: String,
        partition: i32,
    },
    Group(GroupSnapshot),
    GroupTombstone {
        group: String,
    },
    /// An offset committed inside producer `producer_id`'s transaction.
    TxnOffsetCommit {
        group: String,
        producer_id: i64,
        topic: String,
        partition: i32,
        committed: CommittedOffset,
    },
    TxnOffsetTombstone {
        group: String,
        producer_id: i64,
        topic: String,
        partition: i32,
    },
}

/// Applies one stored fact, found at `log_offset`, to the groups being
/// rebuilt (a coordinator partition's load; a simulated failover).
pub fn replay_entry(groups: &mut HashMap<String, Group>, entry: Stored, log_offset: i64, now: Instant) {
    match entry {
        Stored::OffsetCommit {
            group,
            topic,
            partition,
            committed,
        } => {
            groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, now))
                .apply_commit(&topic, partition, committed, log_offset);
        }
        Stored::OffsetTombstone {
            group,
            topic,
            partition,
        } => {
            if let Some(g) = groups.get_mut(&group) {
                g.apply_offset_tombstone(&topic, partition, log_offset);
            }
        }
        Stored::Group(snapshot) => {
            let group = groups
                .entry(snapshot.group.clone())
                .or_insert_with(|| Group::new(&snapshot.group, now));
            if group.metadata_log_offset < log_offset {
                // A group being rebuilt has nothing parked: nothing to answer.
                let answers = group.restore(&snapshot, log_offset, now);
                assert!(answers.is_empty(), "nothing parks on a group being replayed");
            }
        }
        Stored::GroupTombstone { group } => {
            groups.remove(&group);
        }
        Stored::TxnOffsetCommit {
            group,
            producer_id,
            topic,
            partition,
            committed,
        } => {
            groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, now))
                .apply_txn_commit(producer_id, &topic, partition, committed);
        }
        Stored::TxnOffsetTombstone {
            group,
            producer_id,
            topic,
            partition,
        } => {
            if let Some(g) = groups.get_mut(&group) {
                g.remove_txn_commit(producer_id, &topic, partition);
            }
        }
    }
}
