//! The openraft type configuration of the metadata group and short aliases
//! for the openraft types this crate uses.
//!
//! Node ids are `u64` (the Kafka broker id of the node, widened); a node's
//! address is an opaque string for the peer transport (empty while the group
//! has a single voter). Snapshot data is the FlatBuffers-encoded image held in
//! memory (`Cursor<Vec<u8>>`): a metadata image is small (about 100 bytes per
//! partition), and the file copy is written by `snapshot.rs`.

use std::io::Cursor;

use crate::command::{Command, CommandResponse};

openraft::declare_raft_types!(
    /// The metadata group's openraft types.
    pub(crate) TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft node id.
pub(crate) type NodeId = u64;
/// A Raft node's address record.
pub(crate) type Node = openraft::BasicNode;
/// A Raft log id.
pub(crate) type LogId = openraft::LogId<NodeId>;
/// A Raft vote.
pub(crate) type Vote = openraft::Vote<NodeId>;
/// A Raft log entry.
pub(crate) type Entry = openraft::Entry<TypeConfig>;
/// A Raft membership.
pub(crate) type Membership = openraft::Membership<NodeId, Node>;
/// A membership with the log id that carried it.
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// What openraft keeps about a snapshot.
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot: meta plus data.
pub(crate) type Snapshot = openraft::Snapshot<TypeConfig>;
/// openraft's storage error.
pub(crate) type StorageError = openraft::StorageError<NodeId>;
/// The Raft handle.
pub(crate) type Raft = openraft::Raft<TypeConfig>;

/// Turns any error into an openraft storage error about `subject`.
pub(crate) fn storage_error<E: std::error::Error + 'static>(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    error: &E,
) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(error)).into()
}
