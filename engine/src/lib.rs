//! # `shardline-engine`: the broker
//!
//! The engine starts one glommio executor per shard, each pinned to a CPU,
//! and serves the Kafka protocol on every shard (each binds the listen address
//! with SO_REUSEPORT, so the kernel spreads connections over shards).
//!
//! ## Who owns what
//! - A [`Shard`] owns the partitions placed on it by the metadata group, and
//!   nothing else. Its state is `!Send` (`Rc`, `RefCell`) and never locked.
//! - A request that touches partitions of other shards is split by owner; each
//!   part runs on its owner ([`Shard::invoke_on`] ships a closure over a bounded
//!   cross-core channel) and the answers are joined on the shard that holds the
//!   connection. Responses on one connection leave in request order (`net`).
//! - Topics, partition counts, configs and partition → shard placement live in
//!   the metadata Raft group (`raft`); every shard follows it and keeps an
//!   epoch-stamped read-only image. A shard receiving work routed under a newer
//!   epoch than it has applied waits (bounded) for its image to catch up.
//!
//! ## Replication (cluster mode)
//! Each partition has replicas on several brokers; on each broker its replica
//! lives on the shard the metadata image names for that broker. The leader's
//! shard serves clients; a follower's shard runs a fetcher (`replica`) that
//! copies the leader's log with Kafka Fetch requests and truncates after a
//! leader change (OffsetForLeaderEpoch). The leader keeps the high watermark
//! (what every in-sync replica has: consumers read below it, acks=all waits
//! for it) and proposes ISR changes to the metadata group. Nothing about
//! replication is shared between shards either: it is per partition, on its
//! shard.
//!
//! ## Layers
//! `runtime` is the only module that creates executors, channels between
//! cores and the accept loop; `shard` and `partition` hold state; `replica`
//! runs follower fetchers and the leader's ISR upkeep;
//! `coordinator` holds consumer groups and committed offsets (one
//! coordinator per `__consumer_offsets` partition, on its owner shard) and
//! transactional ids (one per `__transaction_state` partition); `control`
//! is the transaction marker format and `txn_index` each partition's open
//! transactions and aborted index (the last stable offset); `kafka`
//! implements each API on top; `error` maps every failure to a Kafka error
//! code in one function; `acl` holds each connection's principal and the
//! one authorization decision every API asks for. `metrics` holds each shard's counters (its
//! `ShardProbe`) and gathers them by message for a scrape; `http` serves
//! `/metrics`, `/health` and `/ready` on shard 0 (`--http-listen`).
//! `mqtt` serves MQTT 3.1.1 and 5.0 clients (`--mqtt-listen`) on the same
//! shards, storing their messages in the same log (docs/mqtt.md).

mod acl;
mod compaction;
mod config;
mod connections;
mod control;
mod coordinator;
mod delivery;
mod error;
mod follower_session;
mod http;
mod inter_broker;
mod kafka;
mod listeners;
mod metrics;
mod mqtt;
mod partition;
mod producer;
mod record_walk;
mod remote;
mod replica;
mod runtime;
mod sasl;
mod shard;
mod timestamps;
mod txn_index;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_api;

pub use config::{
    AdvertisedListener, AuthorizerKind, CpuList, EngineConfig, FsyncPolicy, HttpListen, Listener, ListenerSpec,
    LogFormat, PeerList, SaslMechanisms, SecurityProtocol, ShardListeners, TlsClientAuth, LISTENERS_MAX,
};
pub use error::{kafka_code, AdminError, CredentialError, EngineError, GroupError, SaslError, TxnError};
pub use runtime::{run, StartError};
pub use sasl::Mechanism;
pub use shard::Shard;
