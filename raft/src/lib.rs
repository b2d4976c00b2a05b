//! # `shardline-raft`: the metadata Raft group
//!
//! This crate owns the cluster metadata and its replication: which brokers
//! exist (node id, host, port, shard count), which topics exist (name,
//! 16-byte id, partition count, configs), and where every partition lives
//! (leader broker, shard index on that broker, replica list, leader epoch).
//! Placement is metadata, decided here and stored, not a hash computed by
//! each shard, so it can be shown, moved and rebalanced.
//!
//! ## Where its state lives
//! All Raft state lives on one dedicated OS thread, `shardline-meta`, which
//! runs a tokio current-thread runtime (openraft 0.9 needs tokio; the shards
//! run glommio). On it run openraft's core, the on-disk log and vote
//! (`log_store.rs`, `vote.rs`) and the state machine (`state_machine.rs`),
//! which holds the [`MetadataImage`]. Nothing else touches them.
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
//! ## Guarantees
//! - A command is acknowledged only after its log entry was `fdatasync`ed
//!   and applied; the vote is fsynced (temp file, rename, directory fsync)
//!   before openraft is told it is saved.
//! - Apply is deterministic: validation (topic names, partition counts,
//!   replication factor, configs) and placement happen inside it, so every
//!   replica accepts and rejects the same commands the same way.
//! - On restart the group recovers the same image: snapshot plus log; a torn
//!   log tail is cut at the first bad frame.
//! - Bytes from disk or peers are FlatBuffers (schemas in `schema/*.fbs`,
//!   compiled by planus in `build.rs`) inside CRC-32C frames; decoding is a
//!   `Result`, never a panic.
//!
//! One voter today; the network layer (`network.rs`) encodes every Raft RPC
//! and takes a transport, so 3 or 5 voters need only a TCP transport.
//! `docs/metadata.md` has the whole picture and the byte layouts.

#[cfg(test)]
mod cluster_tests;
mod codec;
mod command;
mod error;
mod files;
mod generated;
mod group;
mod image;
mod log_store;
mod network;
#[cfg(test)]
mod proptests;
mod snapshot;
mod state_machine;
mod types;
mod validate;
mod vote;

pub use codec::DecodeError;
pub use error::MetaError;
pub use group::{
    MetadataConfig, MetadataGroup, MetadataStatus, DEFAULT_SNAPSHOT_EVERY_ENTRIES, REQUEST_QUEUE_CAPACITY,
    START_TIMEOUT,
};
pub use image::{BrokerInfo, MetadataImage, NewTopic, PartitionMeta, TopicMeta};
pub use log_store::{inspect_log, LogInspection, LogRecordInfo, LogRecordKind};
pub use snapshot::{decode_image, encode_image};
pub use state_machine::{BROKER_HOST_LENGTH_MAX, SHARDS_PER_BROKER_MAX};
pub use validate::{
    validate_topic_config, validate_topic_name, CONFIG_ENTRIES_MAX, CONFIG_VALUE_LENGTH_MAX, PARTITIONS_PER_TOPIC_MAX,
    TOPIC_CONFIG_KEYS, TOPIC_NAME_LENGTH_MAX,
};
