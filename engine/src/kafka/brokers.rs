//! The brokers Kafka clients see: one per shard.
//!
//! A Kafka client connects to *brokers*, never to cores, and sends each
//! partition's requests to the broker Metadata names as its leader. When
//! every shard has a listener of its own (`--shard-listeners own`, the
//! default), each shard is named as a broker of its own, with its own port,
//! so an unmodified client sends a partition's requests straight to the core
//! that owns it — no cross-core hop, and a client's requests to partitions on
//! several shards are split by the client itself, one connection per shard.
//! This is the only module that turns (node, shard) into a Kafka broker id.
//!
//! ## Listeners
//! Every answer naming brokers (Metadata, FindCoordinator, DescribeCluster)
//! gives the addresses of the listener the client is connected through, as
//! Kafka's `advertised.listeners` does: a client on the SASL_SSL listener is
//! sent to every broker's SASL_SSL ports, never to a plaintext one. A broker
//! without a listener of that name is left out. Followers (`replica`) use
//! the leader's ports on the inter-broker listener (`inter_broker`).
//!
//! ## Broker ids
//! ```text
//! kafka broker id = node id + SHARD_ID_STRIDE × shard      (node id < SHARD_ID_STRIDE)
//!   node 1, shard 0 → 1      node 1, shard 1 → 1001      node 3, shard 2 → 2003
//! ```
//! Shard 0 keeps the node's own id, so a one-shard broker (and the
//! controller id) look as they always did. A node whose shards share one
//! port (`--shard-listeners shared`, or an image from before shard ports)
//! is one broker with its node id.

use shardline_raft::{BrokerInfo, MetadataImage, PartitionMeta};

/// Node ids are below this, so a Kafka broker id names its node and shard
/// without ambiguity (`--node-id` is checked against it at start).
pub(crate) const SHARD_ID_STRIDE: i32 = 1000;

/// Shards whose ids fit in an i32 under the stride (far more than the
/// metadata group lets one broker register).
const SHARDS_WITH_IDS_MAX: u32 = (i32::MAX / SHARD_ID_STRIDE) as u32;

/// The node a Kafka broker id names (its shard is dropped): the inverse of
/// the id scheme above, for requests naming brokers (reassignments).
pub(crate) fn node_of_broker(broker_id: i32) -> i32 {
    if broker_id < 0 {
        return broker_id;
    }
    broker_id % SHARD_ID_STRIDE
}

/// A broker as clients see it: an id and where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KafkaBroker {
    pub(crate) id: i32,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// The Kafka broker id of `shard` on `broker`: the node id when the shard
/// has no port of its own (or the registration is out of this scheme's
/// range, which a node of this build never registers).
fn shard_broker_id(broker: &BrokerInfo, shard: u32) -> i32 {
    let in_range = (0..SHARD_ID_STRIDE).contains(&broker.node_id) && shard < SHARDS_WITH_IDS_MAX;
    // Ids follow the first listener's ports: the same broker ids on every
    // listener (a node's listeners are all per shard or all shared).
    if !in_range || broker.shard_port(shard).is_none() {
        return broker.node_id;
    }
    let shard = i32::try_from(shard).unwrap_or(0);
    let id = shard * SHARD_ID_STRIDE + broker.node_id;
    assert!(
        id >= 0 && id % SHARD_ID_STRIDE == broker.node_id,
        "a broker id keeps its node id"
    );
    id
}

/// The brokers a registered node shows to clients of listener `listener`:
/// one per shard, or one if its shards share a port; none if the node has
/// no such listener.
pub(crate) fn kafka_brokers(broker: &BrokerInfo, listener: &str) -> Vec<KafkaBroker> {
    let Some(endpoint) = broker.listener(listener) else {
        return Vec::new();
    };
    if broker.shard_ports.is_empty() || endpoint.shard_ports.is_empty() {
        return vec![KafkaBroker {
            id: broker.node_id,
            host: endpoint.host.clone(),
            port: endpoint.port,
        }];
    }
    (0..broker.shards)
        .zip(&endpoint.shard_ports)
        .map(|(shard, port)| KafkaBroker {
            id: shard_broker_id(broker, shard),
            host: endpoint.host.clone(),
            port: *port,
        })
        .collect()
}

/// The broker a client of listener `listener` should talk to for `shard` on
/// node `node_id`, if that node is registered with that listener. Falls back
/// to the listener's shared port.
pub(crate) fn kafka_broker(image: &MetadataImage, node_id: i32, shard: u32, listener: &str) -> Option<KafkaBroker> {
    let broker = image.brokers.get(&node_id)?;
    let endpoint = broker.listener(listener)?;
    Some(KafkaBroker {
        id: shard_broker_id(broker, shard),
        host: endpoint.host.clone(),
        port: endpoint.shard_port(shard).unwrap_or(endpoint.port),
    })
}

/// The Kafka broker id of node `node_id`'s replica of `partition` (its shard
/// there), or the node id if the node is unknown or has no replica.
pub(crate) fn replica_broker_id(image: &MetadataImage, partition: &PartitionMeta, node_id: i32) -> i32 {
    let Some(broker) = image.brokers.get(&node_id) else {
        return node_id;
    };
    match partition.shard_on(node_id) {
        Some(shard) => shard_broker_id(broker, shard),
        None => node_id,
    }
}

/// The Kafka broker id of the partition's leader, or -1 when it has none.
pub(crate) fn leader_broker_id(image: &MetadataImage, partition: &PartitionMeta) -> i32 {
    if !partition.is_online() {
        return partition.leader;
    }
    replica_broker_id(image, partition, partition.leader)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    fn broker(node_id: i32, shards: u32, own_ports: bool) -> BrokerInfo {
        BrokerInfo {
            node_id,
            host: "h".into(),
            port: 9092,
            shards,
            fenced: false,
            shard_ports: if own_ports {
                (0..shards).map(|k| 9092 + u16::try_from(k).unwrap()).collect()
            } else {
                Vec::new()
            },
            listeners: Vec::new(),
        }
    }

    #[test]
    fn clients_are_told_the_ports_of_their_own_listener() {
        let mut node = broker(1, 2, true);
        node.listeners = vec![
            shardline_raft::BrokerListener {
                name: "PLAINTEXT".into(),
                host: "h".into(),
                port: 9092,
                shard_ports: vec![9092, 9093],
            },
            shardline_raft::BrokerListener {
                name: "SECURE".into(),
                host: "public".into(),
                port: 9300,
                shard_ports: vec![9300, 9301],
            },
        ];
        let seen = |listener: &str| -> Vec<(i32, String, u16)> {
            kafka_brokers(&node, listener)
                .into_iter()
                .map(|b| (b.id, b.host, b.port))
                .collect()
        };
        assert_eq!(
            seen("SECURE"),
            vec![(1, "public".into(), 9300), (1001, "public".into(), 9301)]
        );
        assert_eq!(seen("PLAINTEXT"), vec![(1, "h".into(), 9092), (1001, "h".into(), 9093)]);
        assert!(seen("OTHER").is_empty(), "a broker without the listener is left out");
        let mut image = MetadataImage::empty();
        image.brokers.insert(1, node);
        let coordinator = kafka_broker(&image, 1, 1, "SECURE").unwrap();
        assert_eq!((coordinator.id, coordinator.port), (1001, 9301));
        let follower = kafka_broker(&image, 1, 1, "PLAINTEXT").unwrap();
        assert_eq!((follower.host.as_str(), follower.port), ("h", 9093));
    }

    #[test]
    fn each_shard_is_a_broker_with_its_own_port() {
        let brokers = kafka_brokers(&broker(3, 3, true), "PLAINTEXT");
        let seen: Vec<(i32, u16)> = brokers.iter().map(|b| (b.id, b.port)).collect();
        assert_eq!(seen, vec![(3, 9092), (1003, 9093), (2003, 9094)]);
    }

    #[test]
    fn shared_ports_make_one_broker_per_node() {
        let brokers = kafka_brokers(&broker(2, 4, false), "PLAINTEXT");
        assert_eq!(brokers.len(), 1);
        assert_eq!((brokers[0].id, brokers[0].port), (2, 9092));
    }

    #[test]
    fn partitions_name_the_shard_of_each_replica() {
        let mut image = MetadataImage::empty();
        image.brokers.insert(1, broker(1, 2, true));
        image.brokers.insert(2, broker(2, 2, false));
        let partition = PartitionMeta {
            index: 0,
            leader: 1,
            shard: 1,
            replicas: vec![1, 2],
            leader_epoch: 0,
            isr: vec![1, 2],
            replica_shards: vec![1, 1],
            reassignment: None,
            partition_epoch: shardline_raft::PartitionEpoch(0),
        };
        assert_eq!(leader_broker_id(&image, &partition), 1001);
        assert_eq!(replica_broker_id(&image, &partition, 2), 2, "node 2 shares one port");
        let leader = kafka_broker(&image, 1, 1, "PLAINTEXT").unwrap();
        assert_eq!((leader.id, leader.port), (1001, 9093));
        let offline = PartitionMeta {
            leader: -1,
            ..partition
        };
        assert_eq!(leader_broker_id(&image, &offline), -1);
    }
}
