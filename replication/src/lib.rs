//! # `shardline-replication`: the replication rules, without I/O
//!
//! Kafka-style leader/follower replication comes down to a few decisions,
//! and this crate makes them and nothing else:
//! - [`ReplicaState`]: one partition replica on one broker — its role,
//!   leader epoch, replicas and in-sync replicas (ISR), the high watermark,
//!   and (on a leader) what it knows of each follower. It decides when the
//!   high watermark moves (from follower fetch offsets and the leader's own
//!   durable end), which ISR the leader should propose (given `now` and
//!   `replica_lag_time_max`), and whether a request's leader epoch is current.
//! - [`truncation_point`]: where a follower cuts its log before following a
//!   new leader epoch (KIP-101, with the KIP-279 refinement), from the
//!   leader's OffsetForLeaderEpoch answer.
//! - [`election`]: what the metadata group decides for a partition when a
//!   broker is fenced or returns, and whether a leader's ISR change is
//!   accepted (fenced by leader epoch and by partition epoch, KIP-497).
//!
//! Every function takes the current time ([`Moment`]) and the events as
//! arguments and returns what should happen; none touches a socket, a file
//! or a clock. So the engine's I/O layer (`engine/src/partition.rs`,
//! `engine/src/replica.rs`), the metadata state machine (`raft`) and the
//! seeded simulator (`sim/`) drive exactly the same rules.
//!
//! ## Where its state lives
//! A [`ReplicaState`] is a plain value. In the engine it sits in a `RefCell`
//! inside the partition, on the shard that owns that partition on this
//! broker; in the simulator, one per simulated broker and partition. The
//! election rules are free functions over the metadata group's view of a
//! partition ([`Placement`]); the metadata state machine calls them on its
//! own thread.
//!
//! ## Invariants (asserted in release builds)
//! - The high watermark never passes the log end, and never moves back while
//!   this replica leads.
//! - The ISR is a subset of the replicas and holds the leader.
//! - Leader epochs never go back; partition epochs never go back, and the
//!   metadata group's rules bump the partition epoch on every change they
//!   make to a partition.

pub mod election;
mod replica;
mod truncation;
mod types;

#[cfg(test)]
mod tests;

pub use replica::{EpochRefusal, IsrAnswer, IsrProposal, ReplicaState, RoleChange};
pub use truncation::{truncation_point, EpochEnd, Truncation};
pub use types::{LeaderEpoch, Moment, NodeId, PartitionEpoch, Placement, Role};
