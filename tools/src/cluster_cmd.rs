//! `shardctl cluster status`: the cluster at a glance, from one Metadata
//! request to any broker (all topics), as `rpk cluster info` and
//! `kafka-topics --describe --under-replicated-partitions` show it.
//!
//! - brokers: id, node and shard (a Shardline shard with its own port is a
//!   Kafka broker of its own, id = node + 1000 × shard), address, whether it
//!   is the controller, partitions it leads and replicas it holds;
//! - partitions per shard are the leaders column: which core serves what;
//! - under-replicated partitions (fewer in-sync replicas than replicas) and
//!   offline ones (no leader), listed by name.
//!
//! Against another Kafka-compatible broker the node/shard columns read as
//! broker id / 0.

use clap::Subcommand;

use crate::{
    error::ToolError,
    kafka_client::{metadata, BrokerArgs},
    report::{Report, Table, Value, Verdict},
};

/// Broker ids of one node's shards are this far apart (Shardline's scheme).
const SHARD_ID_STRIDE: i32 = 1000;

/// The `shardctl cluster` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Brokers, controller, partitions per shard, under-replicated and offline partitions.
    Status(BrokerArgs),
}

pub(crate) fn run(command: &ClusterCommand, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    match command {
        ClusterCommand::Status(args) => status(&args.bootstrap, report),
    }
}

/// What one broker holds.
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    leaders: usize,
    replicas: usize,
}

fn status(bootstrap: &str, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let metadata = metadata(bootstrap, None)?;

    let mut load: std::collections::BTreeMap<i32, Load> = metadata
        .brokers
        .iter()
        .map(|b| (b.node_id.0, Load::default()))
        .collect();
    let mut troubled = Table::new(
        "unhealthy_partitions",
        &["topic", "partition", "leader", "replicas", "isr", "state"],
    );
    let (mut partitions, mut under_replicated, mut offline) = (0usize, 0usize, 0usize);
    let mut topics: Vec<_> = metadata.topics.iter().filter(|t| t.error_code == 0).collect();
    topics.sort_by(|a, b| {
        a.name
            .as_ref()
            .map(|n| n.0.as_str())
            .cmp(&b.name.as_ref().map(|n| n.0.as_str()))
    });
    let ids = |nodes: &[kafka_protocol::messages::BrokerId]| {
        nodes.iter().map(|n| n.0.to_string()).collect::<Vec<_>>().join(",")
    };
    for topic in topics {
        let name = topic.name.as_ref().map_or("", |n| n.0.as_str());
        let mut sorted: Vec<_> = topic.partitions.iter().collect();
        sorted.sort_by_key(|p| p.partition_index);
        for partition in sorted {
            partitions += 1;
            if let Some(entry) = load.get_mut(&partition.leader_id.0) {
                entry.leaders += 1;
            }
            for replica in &partition.replica_nodes {
                if let Some(entry) = load.get_mut(&replica.0) {
                    entry.replicas += 1;
                }
            }
            let state = if partition.leader_id.0 < 0 {
                offline += 1;
                Some("offline")
            } else if partition.isr_nodes.len() < partition.replica_nodes.len() {
                under_replicated += 1;
                Some("under-replicated")
            } else {
                None
            };
            if let Some(state) = state {
                troubled.row(vec![
                    Value::text(name),
                    Value::from(partition.partition_index),
                    Value::from(partition.leader_id.0),
                    Value::text(ids(&partition.replica_nodes)),
                    Value::text(ids(&partition.isr_nodes)),
                    Value::text(state),
                ]);
            }
        }
    }

    let controller = metadata.controller_id.0;
    let mut brokers = Table::new(
        "brokers",
        &[
            "broker",
            "node",
            "shard",
            "host",
            "port",
            "controller",
            "leaders",
            "replicas",
        ],
    );
    let mut sorted: Vec<_> = metadata.brokers.iter().collect();
    sorted.sort_by_key(|b| (b.node_id.0 % SHARD_ID_STRIDE, b.node_id.0 / SHARD_ID_STRIDE));
    for broker in sorted {
        let id = broker.node_id.0;
        let held = load.get(&id).copied().unwrap_or_default();
        brokers.row(vec![
            Value::from(id),
            Value::from(id % SHARD_ID_STRIDE),
            Value::from(id / SHARD_ID_STRIDE),
            Value::text(broker.host.as_str()),
            Value::from(broker.port),
            Value::text(if id == controller { "yes" } else { "" }),
            Value::from(held.leaders),
            Value::from(held.replicas),
        ]);
    }
    let nodes: std::collections::BTreeSet<i32> =
        metadata.brokers.iter().map(|b| b.node_id.0 % SHARD_ID_STRIDE).collect();
    let cluster_id = metadata.cluster_id.as_ref().map_or("-", |c| c.as_str());
    report.line(format_args!(
        "cluster {cluster_id}: {} nodes, {} brokers (shards), controller {controller}, {} topics, \
         {partitions} partitions, {under_replicated} under-replicated, {offline} offline",
        nodes.len(),
        metadata.brokers.len(),
        metadata.topics.len(),
    ))?;
    report.line(format_args!(""))?;
    report.field("cluster_id", Value::text(cluster_id));
    report.field("controller", Value::from(controller));
    report.field("nodes", Value::from(nodes.len()));
    report.field("topics", Value::from(metadata.topics.len()));
    report.field("partitions", Value::from(partitions));
    report.field("under_replicated_partitions", Value::from(under_replicated));
    report.field("offline_partitions", Value::from(offline));
    report.table(&brokers)?;
    if !troubled.is_empty() || report.format() == crate::report::OutputFormat::Json {
        report.table(&troubled)?;
    }
    Ok(Verdict::Healthy)
}
