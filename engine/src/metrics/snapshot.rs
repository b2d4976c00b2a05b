//! A shard's counters and state at one moment, copied out on the shard
//! itself and sent (it is `Send`) to shard 0, which renders the scrape.
//!
//! Built by [`ShardSnapshot::take`] inside a `Shard::invoke_on` closure:
//! the probe, the thread's `net`, `log` and error counters, and a walk over
//! the shard's partitions and coordinator groups — each walk bounded
//! ([`PARTITION_SERIES_PER_SHARD_MAX`], [`GROUP_OFFSET_SERIES_PER_SHARD_MAX`]),
//! what is left out counted and reported.

use std::rc::Rc;

use shardline_log::LogStats;
use shardline_net::NetStats;

use super::{
    histogram::HistogramSnapshot,
    probe::{self, CleanerSnapshot},
};
use crate::shard::Shard;

/// Partitions one shard exports per scrape (five series each). The default
/// `--max-partitions-per-shard` is 2,000 client partitions, plus the
/// shard's `__consumer_offsets` partitions; past this, partitions are
/// exported in name order and the rest counted as left out, so a broker
/// with very many partitions cannot make a scrape unbounded.
pub(crate) const PARTITION_SERIES_PER_SHARD_MAX: usize = 2_100;

/// Committed offsets (group, topic, partition) one shard exports per scrape,
/// each a committed-offset and a lag series; past this, in name order, the
/// rest is counted as left out.
pub(crate) const GROUP_OFFSET_SERIES_PER_SHARD_MAX: usize = 5_000;

/// One partition replica open on a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionSnapshot {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) log_start: i64,
    pub(crate) log_end: i64,
    pub(crate) high_watermark: i64,
    /// Below the high watermark while a transaction is open on it.
    pub(crate) last_stable_offset: i64,
    /// Bytes of segment data.
    pub(crate) size_bytes: u64,
    /// This node leads it.
    pub(crate) leader: bool,
    /// Led here with fewer in-sync replicas than replicas.
    pub(crate) under_replicated: bool,
}

/// One committed offset of a group whose coordinator is on a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommittedSnapshot {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// Client connections of a shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ConnectionSnapshot {
    pub(crate) open: u64,
    pub(crate) accepted: u64,
    pub(crate) refused: u64,
    pub(crate) closed_idle: u64,
}

/// One shard's MQTT counters (`MqttCounts`) and open connections.
#[derive(Debug, Clone, Default)]
pub(crate) struct MqttSnapshot {
    pub(crate) open: u64,
    pub(crate) accepted: u64,
    pub(crate) refused: u64,
    pub(crate) published: u64,
    pub(crate) append_rounds: u64,
    pub(crate) delivered: u64,
    pub(crate) subscribers_dropped: u64,
    pub(crate) sessions_resumed: u64,
    pub(crate) sessions_saved: u64,
    pub(crate) offline_dropped: u64,
}

/// Everything one shard reports to a scrape.
#[derive(Debug, Clone)]
pub(crate) struct ShardSnapshot {
    pub(crate) shard: usize,
    /// (API key, version, count).
    pub(crate) requests: Vec<(i16, i16, u64)>,
    /// (API key or `None` outside a request, Kafka code, count).
    pub(crate) errors: Vec<(Option<i16>, i16, u64)>,
    pub(crate) errors_left_out: u64,
    /// (API key, latency histogram).
    pub(crate) latencies: Vec<(i16, HistogramSnapshot)>,
    pub(crate) requests_in_flight: u64,
    pub(crate) forwarded_partition_requests: u64,
    pub(crate) forwarded_group_requests: u64,
    pub(crate) produced_records: u64,
    pub(crate) produced_bytes: u64,
    /// Messages sent to each shard, by shard.
    pub(crate) cross_shard_messages: Vec<u64>,
    pub(crate) cross_shard_round_trip: HistogramSnapshot,
    pub(crate) connections: ConnectionSnapshot,
    pub(crate) mqtt: MqttSnapshot,
    pub(crate) cleaned: CleanerSnapshot,
    /// The shard's fetch session table (KIP-227).
    pub(crate) fetch_sessions: crate::kafka::FetchSessionCounts,
    pub(crate) net: NetStats,
    pub(crate) log: LogStats,
    /// The metadata image epoch whose partitions are open here.
    pub(crate) applied_epoch: u64,
    pub(crate) partitions: Vec<PartitionSnapshot>,
    pub(crate) partitions_left_out: u64,
    pub(crate) committed: Vec<CommittedSnapshot>,
    pub(crate) committed_left_out: u64,
}

impl ShardSnapshot {
    /// Copies `shard`'s counters and walks its partitions and groups. Runs
    /// on the shard's own thread (the thread-local counters are its own).
    pub(crate) fn take(shard: &Rc<Shard>) -> ShardSnapshot {
        let probe = &shard.probe;
        let (errors, errors_left_out) = probe::errors();
        let (produced_records, produced_bytes) = probe.produced();
        let counts = &probe.connections;
        let (partitions, partitions_left_out) = partitions(shard);
        let (committed, committed_left_out) = shard.coordinator.committed_offsets(GROUP_OFFSET_SERIES_PER_SHARD_MAX);
        ShardSnapshot {
            shard: shard.id,
            requests: probe.requests(),
            errors,
            errors_left_out,
            latencies: probe.latencies(),
            requests_in_flight: u64::try_from(probe.requests_in_flight.get()).unwrap_or(u64::MAX),
            forwarded_partition_requests: probe.forwarded_partition_requests.get(),
            forwarded_group_requests: probe.forwarded_group_requests.get(),
            produced_records,
            produced_bytes,
            cross_shard_messages: probe.cross_shard_messages(),
            cross_shard_round_trip: probe.cross_shard_round_trip(),
            connections: ConnectionSnapshot {
                open: counts.open.get(),
                accepted: counts.accepted.get(),
                refused: counts.refused.get(),
                closed_idle: counts.closed_idle.get(),
            },
            mqtt: {
                let mqtt = &shard.mqtt.counts;
                MqttSnapshot {
                    open: shard.mqtt.open_connections(),
                    accepted: mqtt.accepted.get(),
                    refused: mqtt.refused.get(),
                    published: mqtt.published.get(),
                    append_rounds: mqtt.append_rounds.get(),
                    delivered: mqtt.delivered.get(),
                    subscribers_dropped: mqtt.subscribers_dropped.get(),
                    sessions_resumed: mqtt.sessions_resumed.get(),
                    sessions_saved: mqtt.sessions_saved.get(),
                    offline_dropped: mqtt.offline_dropped.get(),
                }
            },
            cleaned: probe.cleaned(),
            fetch_sessions: shard.fetch_sessions.borrow().counts(),
            net: shardline_net::thread_stats(),
            log: shardline_log::thread_stats(),
            applied_epoch: shard.applied_epoch(),
            partitions,
            partitions_left_out,
            committed: committed
                .into_iter()
                .map(|(group, topic, partition, offset)| CommittedSnapshot {
                    group,
                    topic,
                    partition,
                    offset,
                })
                .collect(),
            committed_left_out,
        }
    }
}

/// The shard's partitions in name order, at most
/// [`PARTITION_SERIES_PER_SHARD_MAX`], and how many were left out.
fn partitions(shard: &Shard) -> (Vec<PartitionSnapshot>, u64) {
    let mut open = shard.open_partitions();
    open.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    let left_out = open.len().saturating_sub(PARTITION_SERIES_PER_SHARD_MAX);
    let exported = open
        .into_iter()
        .take(PARTITION_SERIES_PER_SHARD_MAX)
        .map(|((topic, partition), replica)| {
            let (leader, under_replicated) = replica.replication_health();
            PartitionSnapshot {
                topic,
                partition,
                log_start: replica.log.log_start().0,
                log_end: replica.log.log_end().0,
                high_watermark: replica.high_watermark().0,
                last_stable_offset: replica.last_stable_offset().0,
                size_bytes: replica.log.size_bytes(),
                leader,
                under_replicated,
            }
        })
        .collect::<Vec<_>>();
    assert!(exported.len() <= PARTITION_SERIES_PER_SHARD_MAX, "bounded");
    (exported, u64::try_from(left_out).unwrap_or(u64::MAX))
}
