//! The newtypes of replication: which broker, which leader epoch, when.

use std::{fmt, time::Duration};

/// A broker (node) id, as the metadata group numbers brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub i32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A partition's leader epoch: bumped by the metadata group each time the
/// partition's leader changes, stamped into every batch the leader writes.
/// Not a producer epoch (i16, per producer id) nor the metadata image's
/// epoch (u64, per committed change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderEpoch(pub i32);

impl LeaderEpoch {
    /// No epoch yet (a replica that has seen no placement; Kafka's -1).
    pub const NONE: LeaderEpoch = LeaderEpoch(-1);

    /// The epoch after this one.
    pub fn next(self) -> LeaderEpoch {
        LeaderEpoch(self.0.wrapping_add(1))
    }
}

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A partition's epoch in the metadata image (Kafka's `partition_epoch`,
/// KIP-497): bumped by every change the metadata group commits to the
/// partition's leader, leader epoch, ISR or replicas. An ISR change carries
/// the partition epoch its proposer based it on and is refused unless that
/// is still the partition's, so a change proposed against one state of the
/// partition is never applied to a later one (a duplicated or retried
/// proposal included). Not a leader epoch: an ISR change moves it and
/// leaves the leader epoch alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PartitionEpoch(pub i32);

impl PartitionEpoch {
    /// Partition epochs are `0..MAX` (`MAX` itself is never reached, so
    /// every stored epoch has a successor).
    pub const MAX: PartitionEpoch = PartitionEpoch(i32::MAX);

    /// The epoch after this one.
    ///
    /// # Panics
    /// If it would reach [`PartitionEpoch::MAX`] (2^31 committed changes to
    /// one partition): an epoch that wrapped would let a stale change
    /// through.
    pub fn next(self) -> PartitionEpoch {
        assert!(
            (0..i32::MAX - 1).contains(&self.0),
            "partition epoch {} has no successor",
            self.0
        );
        PartitionEpoch(self.0 + 1)
    }
}

impl fmt::Display for PartitionEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A point in time, as time elapsed since an origin the driver picks (the
/// engine: process start on a monotonic clock; the simulator: virtual time
/// zero). Only differences between moments mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Moment(pub Duration);

impl Moment {
    /// How long after `earlier` this is (zero if it is not after it).
    pub fn since(self, earlier: Moment) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

/// This broker's part in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves clients and followers.
    Leader,
    /// Copies the log of broker `leader`.
    Follower { leader: NodeId },
    /// No broker leads the partition now.
    Offline,
}

/// The metadata group's view of one partition: who leads under which
/// epoch, who holds replicas, who is in sync, and the partition epoch of
/// that state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `None`: no broker leads (every in-sync replica is fenced).
    pub leader: Option<NodeId>,
    pub leader_epoch: LeaderEpoch,
    /// Bumped by every change of the fields here.
    pub partition_epoch: PartitionEpoch,
    /// In preference order (the first is the preferred leader).
    pub replicas: Vec<NodeId>,
    /// Kept in replicas order.
    pub isr: Vec<NodeId>,
}

impl Placement {
    /// Asserts what every placement the metadata group publishes keeps: the
    /// ISR is a non-empty subset of the replicas and holds the leader.
    ///
    /// # Panics
    /// If one of them is broken (a bug in whoever built the placement).
    pub fn assert_consistent(&self) {
        assert!(
            !self.isr.is_empty() && self.isr.iter().all(|member| self.replicas.contains(member)),
            "ISR {:?} is empty or not within replicas {:?}",
            self.isr,
            self.replicas
        );
        assert!(
            self.leader.is_none_or(|leader| self.isr.contains(&leader)),
            "leader {:?} is not in the ISR {:?}",
            self.leader,
            self.isr
        );
        assert!(
            self.partition_epoch.0 >= 0,
            "partition epoch {} is negative",
            self.partition_epoch
        );
    }

    /// Whether `other` is the same state of the partition, whatever its
    /// partition epoch says.
    pub fn same_state(&self, other: &Placement) -> bool {
        self.leader == other.leader
            && self.leader_epoch == other.leader_epoch
            && self.replicas == other.replicas
            && self.isr == other.isr
    }
}
