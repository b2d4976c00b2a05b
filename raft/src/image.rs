//! The metadata image: what the state machine holds and what shards read.
//!
//! An image is immutable once published. The raft thread builds the next one
//! (copy on write) and publishes it as an `Arc<MetadataImage>`; shards keep
//! that `Arc` (or copies of the parts they need) and compare `epoch`s to fence
//! stale requests.

use std::collections::{BTreeMap, BTreeSet};

pub use shardline_replication::PartitionEpoch;

use crate::{
    acl::AclBinding,
    credential::{ScramCredential, ScramMechanism},
};

/// A broker as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerInfo {
    /// Kafka broker id (equal to the metadata Raft node id on that broker).
    pub node_id: i32,
    /// Host clients should connect to.
    pub host: String,
    /// Kafka listener port (shard 0's when shards have their own ports).
    pub port: u16,
    /// Number of shards (cores) the broker runs; partitions are placed on
    /// shard indexes `0..shards`.
    pub shards: u32,
    /// Set by the metadata leader when the broker's heartbeats stopped for
    /// longer than the session timeout: a fenced broker leads nothing, is
    /// in no ISR it was not the last member of, and gets no new replicas.
    /// Cleared by a heartbeat or a registration. Ignored in a registration
    /// (a broker registers unfenced).
    pub fenced: bool,
    /// The Kafka port of each shard when every shard has its own listener
    /// (`shard_ports[k]` reaches shard k, with no cross-core hop), so
    /// clients can be sent to the shard that owns a partition; empty when
    /// all shards share `port` (the kernel then picks a shard per
    /// connection). Either empty or `shards` long.
    pub shard_ports: Vec<u16>,
    /// Every named Kafka listener of the broker (at most
    /// [`BROKER_LISTENERS_MAX`]), the one of `host`, `port` and
    /// `shard_ports` (the one other brokers use) first. Clients are told
    /// the addresses of the listener they connected through, as Kafka's
    /// `advertised.listeners`. Empty in registrations from before named
    /// listeners: every client is then told `host` and `port`.
    pub listeners: Vec<BrokerListener>,
}

/// Named listeners one broker may register.
pub const BROKER_LISTENERS_MAX: usize = 16;

/// One named Kafka listener of a broker, as its clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerListener {
    /// The listener's name (`CLIENT`, `PLAINTEXT`, ...).
    pub name: String,
    /// Host its clients connect to.
    pub host: String,
    /// Shard 0's port (the only one when shards share a port).
    pub port: u16,
    /// As [`BrokerInfo::shard_ports`], for this listener.
    pub shard_ports: Vec<u16>,
}

impl BrokerListener {
    /// The port reaching shard `shard` directly, if shards have their own.
    pub fn shard_port(&self, shard: u32) -> Option<u16> {
        self.shard_ports.get(usize::try_from(shard).ok()?).copied()
    }
}

impl BrokerInfo {
    /// The port reaching shard `shard` directly, if shards have their own.
    pub fn shard_port(&self, shard: u32) -> Option<u16> {
        self.shard_ports.get(usize::try_from(shard).ok()?).copied()
    }

    /// The broker's listener named `name`; for a registration without named
    /// listeners, the one listener it has, whatever the name.
    pub fn listener(&self, name: &str) -> Option<BrokerListener> {
        if self.listeners.is_empty() {
            return Some(BrokerListener {
                name: name.to_owned(),
                host: self.host.clone(),
                port: self.port,
                shard_ports: self.shard_ports.clone(),
            });
        }
        self.listeners.iter().find(|listener| listener.name == name).cloned()
    }
}

/// A topic creation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Topic name (Kafka rules: 1–249 characters of `[a-zA-Z0-9._-]`).
    pub name: String,
    /// Number of partitions, at least 1.
    pub partitions: i32,
    /// Replicas per partition: 1..=registered brokers, or -1 for the default (1).
    pub replication_factor: i16,
    /// Topic configs (Kafka names), validated when applied.
    pub configs: BTreeMap<String, String>,
    /// Replicas of each partition given by hand (CreateTopics'
    /// assignments), preferred leader first; empty: placed by the state
    /// machine. When given, there is one list per partition, all of one
    /// length (`partitions` and `replication_factor` must agree).
    pub assignments: Vec<Vec<i32>>,
}

/// Leader of a partition that has none: every in-sync replica is fenced.
pub const NO_LEADER: i32 = -1;

/// One partition's placement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionMeta {
    /// Partition index, `0..partition count`.
    pub index: i32,
    /// Broker that leads the partition, or [`NO_LEADER`] (-1) while every
    /// in-sync replica is fenced.
    pub leader: i32,
    /// Shard on the leader that owns the partition (`< leader's shards`),
    /// equal to `replica_shards` at the leader's position in `replicas`.
    /// Meaningless while `leader` is [`NO_LEADER`].
    pub shard: u32,
    /// Brokers holding a replica, distinct, in preference order: a new
    /// leader is the first of them that is in sync and unfenced. Placement
    /// puts the first leader first.
    pub replicas: Vec<i32>,
    /// Bumped every time leader or shard changes (fences stale requests).
    pub leader_epoch: i32,
    /// In-sync replicas: a non-empty subset of `replicas`, in `replicas`
    /// order, holding the leader when there is one. Changed by the leader
    /// (`alter_isr`) and by fencing.
    pub isr: Vec<i32>,
    /// Parallel to `replicas`: the shard that owns the partition on each
    /// replica's broker.
    pub replica_shards: Vec<u32>,
    /// A move of the partition's replicas in progress
    /// (AlterPartitionReassignments), `None` otherwise.
    pub reassignment: Option<Reassignment>,
    /// Bumped by every committed change to any field above but `index`
    /// (KIP-497's partition epoch): an ISR change names the partition epoch
    /// it was based on and is refused unless it is still this one. Strictly
    /// increases with every change; 0 for a new partition (and in images
    /// written before partition epochs).
    pub partition_epoch: PartitionEpoch,
}

/// A partition moving from one replica list to another. While it runs,
/// `replicas` is `from` followed by the brokers of `to` not in `from` (they
/// copy the log as followers, outside the ISR); once every broker of `to`
/// is in sync the partition's replicas become `to` (the metadata group
/// does it when it applies the ISR change that completes the set).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reassignment {
    /// The replicas before the move, in their order (what a cancellation
    /// restores).
    pub from: Vec<i32>,
    /// The replicas after it, in preference order.
    pub to: Vec<i32>,
}

impl Reassignment {
    /// Brokers being added: in `to`, not in `from`.
    pub fn adding(&self) -> Vec<i32> {
        self.to.iter().copied().filter(|b| !self.from.contains(b)).collect()
    }

    /// Brokers being removed: in `from`, not in `to`.
    pub fn removing(&self) -> Vec<i32> {
        self.from.iter().copied().filter(|b| !self.to.contains(b)).collect()
    }
}

impl PartitionMeta {
    /// The shard owning this partition on `broker`, if it holds a replica.
    pub fn shard_on(&self, broker: i32) -> Option<u32> {
        let position = self.replicas.iter().position(|replica| *replica == broker)?;
        self.replica_shards.get(position).copied()
    }

    /// Whether the partition has a leader.
    pub fn is_online(&self) -> bool {
        self.leader != NO_LEADER
    }
}

/// A topic with its placement and configs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicMeta {
    /// Topic name.
    pub name: String,
    /// Topic id (Kafka's 16-byte topic UUID), chosen at random by the proposer.
    pub id: [u8; 16],
    /// Partitions, `partitions[i].index == i`.
    pub partitions: Vec<PartitionMeta>,
    /// Topic configs that were set (defaults are not stored).
    pub configs: BTreeMap<String, String>,
}

/// The whole replicated metadata state at one log index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataImage {
    /// Index of the last Raft log entry applied to this image. Strictly
    /// increases from one published image to the next.
    pub epoch: u64,
    /// Cluster id (22 characters, Kafka's base64 form of 16 random bytes);
    /// set by the first command of a new group, empty before.
    pub cluster_id: String,
    /// Node id of the Raft leader that proposed the last applied entry (the
    /// active controller), or -1 before any.
    pub controller_id: i32,
    /// Registered brokers by node id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// ACL bindings (at most [`ACLS_MAX`](crate::ACLS_MAX)), each valid.
    pub acls: BTreeSet<AclBinding>,
    /// SCRAM credentials by (user, mechanism), at most
    /// [`SCRAM_CREDENTIALS_MAX`](crate::SCRAM_CREDENTIALS_MAX), each valid.
    pub scram_credentials: BTreeMap<(String, ScramMechanism), ScramCredential>,
}

impl MetadataImage {
    /// The image of a group that has applied nothing yet.
    pub fn empty() -> Self {
        MetadataImage {
            epoch: 0,
            cluster_id: String::new(),
            controller_id: -1,
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            acls: BTreeSet::new(),
            scram_credentials: BTreeMap::new(),
        }
    }

    /// The topic with this name.
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    /// The topic with this id.
    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&TopicMeta> {
        self.topics.values().find(|topic| &topic.id == id)
    }

    /// The placement of one partition.
    pub fn partition(&self, topic: &str, index: i32) -> Option<&PartitionMeta> {
        let topic = self.topics.get(topic)?;
        let position = usize::try_from(index).ok()?;
        topic.partitions.get(position)
    }

    /// Every partition that `node_id` leads, with the shard that owns it:
    /// the node's shard table. Ordered by topic name, then partition index.
    pub fn shard_table(&self, node_id: i32) -> Vec<(&str, &PartitionMeta)> {
        self.topics
            .values()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .filter(move |partition| partition.leader == node_id)
                    .map(move |partition| (topic.name.as_str(), partition))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(index: i32, leader: i32, shard: u32) -> PartitionMeta {
        PartitionMeta {
            index,
            leader,
            shard,
            replicas: vec![leader],
            leader_epoch: 0,
            isr: vec![leader],
            replica_shards: vec![shard],
            reassignment: None,
            partition_epoch: PartitionEpoch(0),
        }
    }

    #[test]
    fn lookups_find_what_is_there_and_only_that() {
        let mut image = MetadataImage::empty();
        image.topics.insert(
            "t".into(),
            TopicMeta {
                name: "t".into(),
                id: [7; 16],
                partitions: vec![partition(0, 1, 0), partition(1, 2, 1)],
                configs: BTreeMap::new(),
            },
        );
        assert_eq!(image.partition("t", 1).map(|p| p.shard), Some(1));
        assert!(image.partition("t", 2).is_none());
        assert!(image.partition("t", -1).is_none());
        assert!(image.topic_by_id(&[7; 16]).is_some());
        assert!(image.topic_by_id(&[8; 16]).is_none());
        let table = image.shard_table(2);
        assert_eq!(table.len(), 1);
        assert_eq!(table.first().map(|(name, p)| (*name, p.index)), Some(("t", 1)));
        let led = image.partition("t", 1).unwrap();
        assert_eq!(led.shard_on(2), Some(1));
        assert_eq!(led.shard_on(1), None);
        assert!(led.is_online());
    }
}
