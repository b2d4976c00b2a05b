//! # `shardline-raft`: the metadata Raft group
//!
//! This crate owns the cluster metadata and its replication: which brokers
//! exist (node id, host, port, shard count, fenced or not), which topics
//! exist (name, 16-byte id, partition count, configs), and where every
//! partition lives (replicas and the shard owning it on each, in-sync
//! replicas, leader broker or none, leader epoch, partition epoch).
//! Placement and leadership are metadata, decided here and stored, not
//! computed by each shard, so they can be shown, moved and rebalanced.
//!
//! ## Where its state lives
//! All Raft state lives on one dedicated OS thread, `shardline-meta`, which
//! runs a tokio current-thread runtime (openraft 0.9 needs tokio; the shards
//! run glommio). On it run openraft's core, the on-disk log and vote
//! (`log_store.rs`, `vote.rs`), the state machine (`state_machine.rs`),
//! which holds the [`MetadataImage`], and, with peers, the TCP listener
//! (`tcp.rs`) and the liveness task (`liveness.rs`). Nothing else touches
//! them.
//!
//! Shards reach the group only through channels, via the cloneable, `Send +
//! Sync` [`MetadataGroup`] handle: writes are a bounded tokio `mpsc` request
//! plus a `oneshot` reply, so the async methods are plain futures that can
//! be awaited from a glommio executor. Reads never cross threads: every
//! applied change publishes a new immutable `Arc<MetadataImage>` on a tokio
//! `watch` channel. Shards keep read-only copies ([`MetadataGroup::image`],
//! or a [`MetadataGroup::subscribe`] receiver) stamped with the `epoch` they
//! were built at (the last applied log index, strictly increasing), and
//! fence stale requests by comparing epochs.
//!
//! ## One node or several
//! Without peers ([`MetadataConfig::new`]) the group has one voter and no
//! network. With peers ([`MetadataConfig::with_peers`]: 3 or 5 voters, each
//! given the same id → address map) every node listens on its raft address;
//! Raft RPCs and the group's own two (forwarded writes and broker
//! heartbeats) travel as CRC-32C-framed FlatBuffers over one TCP connection
//! per peer and purpose (`tcp.rs`, `network.rs`). Every write method works
//! on every node: a follower forwards the command to the leader and returns
//! once its own image shows the result (`forward.rs`). Each node heartbeats
//! the metadata leader; the leader fences brokers that stay silent for the
//! session timeout, which moves leadership of their partitions down the ISR
//! (`liveness.rs`, `state_machine.rs`), and unfences them when they return.
//!
//! ## Guarantees
//! - A command is acknowledged only after its log entry was `fdatasync`ed
//!   (on a quorum) and applied; the vote is fsynced (temp file, rename,
//!   directory fsync) before openraft is told it is saved.
//! - Apply is deterministic: validation (topic names, partition counts,
//!   replication factor, configs, leader epochs of ISR changes), placement
//!   and leader election of partitions happen inside it, so every replica
//!   accepts and rejects the same commands the same way. Time enters only
//!   through the leader's liveness task, as `FenceBroker` / `UnfenceBroker`
//!   commands.
//! - On restart the group recovers the same image: snapshot plus log; a torn
//!   log tail is cut at the first bad frame.
//! - Bytes from disk or peers are FlatBuffers (schemas in `schema/*.fbs`,
//!   compiled by planus in `build.rs`) inside CRC-32C frames; decoding is a
//!   `Result`, never a panic.
//!
//! ACL bindings (`acl.rs`) are metadata too: a bounded set in the image,
//! changed by `CreateAcls` / `DeleteAcls` commands; the engine decides what
//! they allow. So are SCRAM credentials (`credential.rs`: salt, iterations,
//! StoredKey, ServerKey per user and mechanism, never a password).
//!
//! `docs/metadata.md` has the whole picture and the byte layouts.

mod acl;
#[cfg(test)]
mod cluster_tests;
mod codec;
mod command;
mod credential;
mod error;
mod files;
mod forward;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_api;
mod generated;
mod group;
mod image;
mod liveness;
mod log_store;
mod network;
mod peer_auth;
#[cfg(test)]
mod proptests;
mod snapshot;
mod state_machine;
mod tcp;
#[cfg(test)]
mod tcp_cluster_tests;
mod types;
mod validate;
mod vote;

pub use acl::{
    AclBinding, AclOperation, AclPatternType, AclPermission, AclResourceType, ACLS_MAX, ACL_HOST_LENGTH_MAX,
    ACL_PRINCIPAL_LENGTH_MAX, ACL_RESOURCE_NAME_LENGTH_MAX, CLUSTER_RESOURCE_NAME,
};
pub use codec::DecodeError;
pub use credential::{
    ScramCredential, ScramMechanism, SCRAM_CREDENTIALS_MAX, SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN,
    SCRAM_SALT_BYTES_MAX, SCRAM_USER_LENGTH_MAX,
};
pub use error::MetaError;
pub use forward::FORWARD_DEADLINE;
pub use group::{
    MetadataConfig, MetadataGroup, MetadataStatus, CLUSTER_START_TIMEOUT, DEFAULT_BROKER_HEARTBEAT_INTERVAL_MS,
    DEFAULT_BROKER_SESSION_TIMEOUT_MS, DEFAULT_SNAPSHOT_EVERY_ENTRIES, REQUEST_QUEUE_CAPACITY, START_TIMEOUT,
};
pub use image::{
    BrokerInfo, BrokerListener, MetadataImage, NewTopic, PartitionEpoch, PartitionMeta, Reassignment, TopicMeta,
    BROKER_LISTENERS_MAX, NO_LEADER,
};
pub use log_store::{inspect_log, LogInspection, LogRecordInfo, LogRecordKind};
pub use peer_auth::{ClusterSecret, CLUSTER_SECRET_BYTES_MIN};
pub use snapshot::{decode_image, encode_image};
pub use state_machine::{BROKER_HOST_LENGTH_MAX, SHARDS_PER_BROKER_MAX};
pub use tcp::RPC_CONNECTIONS_MAX;
pub use validate::{
    cleanup_policies, validate_topic_config, validate_topic_name, CONFIG_ENTRIES_MAX, CONFIG_VALUE_LENGTH_MAX,
    PARTITIONS_PER_TOPIC_MAX, TOPIC_CONFIG_KEYS, TOPIC_NAME_LENGTH_MAX,
};
