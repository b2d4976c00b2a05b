//! The metadata state machine: the image, applying committed commands to it,
//! and building / installing snapshots.
//!
//! Apply is a pure function of (image, entry): no clock, no randomness, no
//! I/O, so every replica computes the same image and the same rejections.
//! Each command is checked completely before anything is changed, so a
//! rejected command leaves the image as it was (only `epoch` and
//! `controller_id` move, as for every entry).
//!
//! ## Placement
//! - Leader of a new partition: the registered broker leading the fewest
//!   partitions, ties to the lowest node id. Replicas: the leader, then the
//!   next brokers in node-id order (wrapping), `replication_factor` in all.
//! - Shard of a new partition: the shard of the leader with the fewest
//!   partitions, ties to the lowest index.
//! - A broker that re-registers with fewer shards: every partition it leads
//!   on a shard that no longer exists moves, in (topic name, partition index)
//!   order, the k-th to shard `k % shards`; its leader epoch is bumped.
//!
//! The state itself is persisted through snapshots (`snapshot.rs`) plus the
//! log: on open the state machine starts from the snapshot file and openraft
//! re-applies the committed entries after it.

use std::{collections::BTreeMap, io::Cursor, sync::Arc};

use tokio::sync::watch;

use crate::{
    command::{Command, CommandResponse},
    error::MetaError,
    image::{BrokerInfo, MetadataImage, NewTopic, PartitionMeta, TopicMeta},
    snapshot::{decode_image, encode_image, LoadedSnapshot, SnapshotStore, StoredSnapshot},
    types::{storage_error, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig},
    validate::{
        collision_key, validate_topic_config, validate_topic_name, CONFIG_ENTRIES_MAX, PARTITIONS_PER_TOPIC_MAX,
    },
};

/// Most shards one broker may register. Shard indexes are `u32`, but a
/// machine with more cores than this is not one broker's worth of shards.
pub const SHARDS_PER_BROKER_MAX: u32 = 4096;

/// Longest broker host name (DNS names are at most 253 characters).
pub const BROKER_HOST_LENGTH_MAX: usize = 253;

/// Partition counts used to balance placement.
#[derive(Debug, Default)]
struct Load {
    /// Partitions led, by broker.
    led_by_broker: BTreeMap<i32, usize>,
    /// Partitions owned, by (broker, shard).
    owned_by_shard: BTreeMap<(i32, u32), usize>,
}

impl Load {
    fn of(image: &MetadataImage) -> Load {
        let mut load = Load::default();
        for partition in image.topics.values().flat_map(|topic| topic.partitions.iter()) {
            load.count(partition.leader, partition.shard);
        }
        load
    }

    fn count(&mut self, leader: i32, shard: u32) {
        *self.led_by_broker.entry(leader).or_default() += 1;
        *self.owned_by_shard.entry((leader, shard)).or_default() += 1;
    }

    /// Places one new partition on the registered brokers.
    ///
    /// # Panics
    /// If `brokers` is empty or `replication_factor` exceeds it: callers
    /// validate both first.
    fn place(&mut self, brokers: &BTreeMap<i32, BrokerInfo>, index: i32, replication_factor: usize) -> PartitionMeta {
        assert!(!brokers.is_empty() && replication_factor >= 1 && replication_factor <= brokers.len());
        let broker_ids: Vec<i32> = brokers.keys().copied().collect();
        // min_by_key keeps the first minimum: ties go to the lowest node id.
        let (leader_position, leader) = broker_ids
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|(_, node_id)| self.led_by_broker.get(node_id).copied().unwrap_or(0))
            .unwrap_or((0, 0));
        let shards = brokers.get(&leader).map(|broker| broker.shards).unwrap_or(1);
        assert!(shards >= 1, "broker {leader} registered with zero shards");
        let shard = (0..shards)
            .min_by_key(|shard| self.owned_by_shard.get(&(leader, *shard)).copied().unwrap_or(0))
            .unwrap_or(0);
        let replicas: Vec<i32> = broker_ids
            .iter()
            .cycle()
            .skip(leader_position)
            .take(replication_factor)
            .copied()
            .collect();
        self.count(leader, shard);
        let partition = PartitionMeta {
            index,
            leader,
            shard,
            replicas,
            leader_epoch: 0,
        };
        assert!(partition.shard < shards && partition.replicas.first() == Some(&leader));
        partition
    }
}

fn check_configs<'a>(
    entries: impl ExactSizeIterator<Item = (&'a String, Option<&'a String>)>,
) -> Result<(), MetaError> {
    if entries.len() > CONFIG_ENTRIES_MAX {
        return Err(MetaError::InvalidConfig {
            key: String::new(),
            value: None,
            reason: format!("more than {CONFIG_ENTRIES_MAX} configs in one request"),
        });
    }
    for (key, value) in entries {
        validate_topic_config(key, value.map(String::as_str))?;
    }
    Ok(())
}

fn topic_mut<'a>(image: &'a mut MetadataImage, name: &str) -> Result<&'a mut TopicMeta, MetaError> {
    image
        .topics
        .get_mut(name)
        .ok_or_else(|| MetaError::UnknownTopic(name.to_owned()))
}

fn check_partition_count(requested: i32, current: usize) -> Result<(), MetaError> {
    let current = i32::try_from(current).unwrap_or(i32::MAX);
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&requested) || requested <= current {
        return Err(MetaError::InvalidPartitions { requested, current });
    }
    Ok(())
}

fn register_broker(image: &mut MetadataImage, broker: &BrokerInfo) -> Result<Option<TopicMeta>, MetaError> {
    let invalid = |reason: String| MetaError::InvalidBroker {
        node_id: broker.node_id,
        reason,
    };
    if broker.node_id < 0 {
        return Err(invalid("node ids are not negative".to_owned()));
    }
    if broker.shards < 1 || broker.shards > SHARDS_PER_BROKER_MAX {
        return Err(invalid(format!("shards must be between 1 and {SHARDS_PER_BROKER_MAX}")));
    }
    if broker.host.is_empty() || broker.host.len() > BROKER_HOST_LENGTH_MAX {
        return Err(invalid(format!("host must be 1 to {BROKER_HOST_LENGTH_MAX} bytes")));
    }
    image.brokers.insert(broker.node_id, broker.clone());

    // Re-place what sat on shards that no longer exist, round-robin.
    let mut moved: u32 = 0;
    for topic in image.topics.values_mut() {
        for partition in topic.partitions.iter_mut() {
            if partition.leader == broker.node_id && partition.shard >= broker.shards {
                partition.shard = moved % broker.shards;
                partition.leader_epoch = partition.leader_epoch.wrapping_add(1);
                moved = moved.wrapping_add(1);
            }
        }
    }
    assert!(image
        .topics
        .values()
        .flat_map(|topic| topic.partitions.iter())
        .filter(|partition| partition.leader == broker.node_id)
        .all(|partition| partition.shard < broker.shards));
    Ok(None)
}

fn create_topic(image: &mut MetadataImage, topic: &NewTopic, id: &[u8; 16]) -> Result<Option<TopicMeta>, MetaError> {
    validate_topic_name(&topic.name)?;
    if image.topics.contains_key(&topic.name) {
        return Err(MetaError::TopicExists(topic.name.clone()));
    }
    let key = collision_key(&topic.name);
    if let Some(existing) = image.topics.keys().find(|existing| collision_key(existing) == key) {
        return Err(MetaError::TopicNameCollision {
            topic: topic.name.clone(),
            existing: existing.clone(),
        });
    }
    check_partition_count(topic.partitions, 0)?;
    let replication_factor = match topic.replication_factor {
        -1 => 1,
        requested => requested,
    };
    let replicas = usize::try_from(replication_factor).unwrap_or(0);
    if replicas < 1 || replicas > image.brokers.len() {
        return Err(MetaError::InvalidReplicationFactor {
            requested: topic.replication_factor,
            brokers: image.brokers.len(),
        });
    }
    check_configs(topic.configs.iter().map(|(key, value)| (key, Some(value))))?;
    if id == &[0; 16] || image.topic_by_id(id).is_some() {
        // The proposer draws 128 random bits; either case is a proposer bug.
        return Err(MetaError::Raft(format!("topic id {id:02x?} is zero or already in use")));
    }

    let mut load = Load::of(image);
    let partitions = (0..topic.partitions)
        .map(|index| load.place(&image.brokers, index, replicas))
        .collect();
    let created = TopicMeta {
        name: topic.name.clone(),
        id: *id,
        partitions,
        configs: topic.configs.clone(),
    };
    image.topics.insert(created.name.clone(), created.clone());
    Ok(Some(created))
}

fn create_partitions(image: &mut MetadataImage, name: &str, total: i32) -> Result<Option<TopicMeta>, MetaError> {
    let topic = image
        .topics
        .get(name)
        .ok_or_else(|| MetaError::UnknownTopic(name.to_owned()))?;
    let current = topic.partitions.len();
    check_partition_count(total, current)?;
    let replicas = topic
        .partitions
        .first()
        .map_or(1, |partition| partition.replicas.len())
        .clamp(1, image.brokers.len().max(1));
    if image.brokers.is_empty() {
        return Err(MetaError::InvalidReplicationFactor {
            requested: i16::try_from(replicas).unwrap_or(i16::MAX),
            brokers: 0,
        });
    }
    let first_new = i32::try_from(current).unwrap_or(i32::MAX);
    let mut load = Load::of(image);
    let added: Vec<PartitionMeta> = (first_new..total)
        .map(|index| load.place(&image.brokers, index, replicas))
        .collect();
    let topic = topic_mut(image, name)?;
    topic.partitions.extend(added);
    assert_eq!(topic.partitions.len(), usize::try_from(total).unwrap_or(0));
    Ok(Some(topic.clone()))
}

fn alter_topic_configs(
    image: &mut MetadataImage,
    name: &str,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<Option<TopicMeta>, MetaError> {
    if !image.topics.contains_key(name) {
        return Err(MetaError::UnknownTopic(name.to_owned()));
    }
    check_configs(changes.iter().map(|(key, value)| (key, value.as_ref())))?;
    let topic = topic_mut(image, name)?;
    for (key, value) in changes {
        match value {
            Some(value) => topic.configs.insert(key.clone(), value.clone()),
            None => topic.configs.remove(key),
        };
    }
    Ok(Some(topic.clone()))
}

/// Applies one command to the image. On `Err` the image is unchanged.
pub(crate) fn apply_command(image: &mut MetadataImage, command: &Command) -> Result<Option<TopicMeta>, MetaError> {
    match command {
        Command::InitCluster { cluster_id } => {
            if image.cluster_id.is_empty() && !cluster_id.is_empty() {
                image.cluster_id = cluster_id.clone();
            }
            Ok(None)
        }
        Command::RegisterBroker(broker) => register_broker(image, broker),
        Command::CreateTopic { topic, id } => create_topic(image, topic, id),
        Command::DeleteTopic { name } => image
            .topics
            .remove(name)
            .map(Some)
            .ok_or_else(|| MetaError::UnknownTopic(name.clone())),
        Command::CreatePartitions { name, total } => create_partitions(image, name, *total),
        Command::AlterTopicConfigs { name, changes } => alter_topic_configs(image, name, changes),
    }
}

/// The state machine openraft drives. Lives on the raft thread.
pub(crate) struct StateMachine {
    /// The current image; copied on write when readers still hold it.
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
    /// Every applied change goes out here.
    publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
    /// Distinguishes snapshots built at the same log id.
    snapshot_sequence: u64,
}

impl StateMachine {
    /// Opens the state machine from the snapshot in `snapshots` (if any) and
    /// publishes its image.
    pub(crate) fn open(
        snapshots: Arc<SnapshotStore>,
        loaded: Option<LoadedSnapshot>,
        publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
    ) -> StateMachine {
        let (image, last_applied, last_membership) = match loaded {
            Some((meta, image)) => (image, meta.last_log_id, meta.last_membership),
            None => (MetadataImage::empty(), None, StoredMembership::default()),
        };
        let state_machine = StateMachine {
            image: Arc::new(image),
            last_applied,
            last_membership,
            snapshots,
            publisher,
            snapshot_sequence: 0,
        };
        state_machine.publish();
        state_machine
    }

    fn publish(&self) {
        self.publisher.send_replace(Arc::clone(&self.image));
    }

    fn apply_entry(&mut self, entry: Entry) -> CommandResponse {
        let image = Arc::make_mut(&mut self.image);
        assert!(
            self.last_applied
                .is_none_or(|applied| applied.index < entry.log_id.index),
            "entry {} applied after {:?}",
            entry.log_id,
            self.last_applied
        );
        self.last_applied = Some(entry.log_id);
        image.epoch = entry.log_id.index;
        if entry.log_id.leader_id.term > 0 {
            image.controller_id = i32::try_from(entry.log_id.leader_id.node_id).unwrap_or(-1);
        }
        match entry.payload {
            openraft::EntryPayload::Blank => CommandResponse::none(),
            openraft::EntryPayload::Normal(command) => CommandResponse(apply_command(image, &command)),
            openraft::EntryPayload::Membership(membership) => {
                self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                CommandResponse::none()
            }
        }
    }
}

/// Builds a snapshot of the image as it was when the builder was made.
pub(crate) struct SnapshotBuilder {
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
    sequence: u64,
}

impl openraft::RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let image_bytes = encode_image(&self.image);
        let snapshot_id = match self.last_applied {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id.term, log_id.index, self.sequence),
            None => format!("0-0-{}", self.sequence),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, image_bytes };
        let snapshot = stored.to_snapshot();
        self.snapshots.save(stored).map_err(|error| {
            storage_error(
                openraft::ErrorSubject::Snapshot(Some(snapshot.meta.signature())),
                openraft::ErrorVerb::Write,
                &error,
            )
        })?;
        tracing::info!(snapshot = %snapshot.meta, "metadata snapshot written");
        Ok(snapshot)
    }
}

impl openraft::storage::RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let epoch_before = self.image.epoch;
        let responses: Vec<CommandResponse> = entries.into_iter().map(|entry| self.apply_entry(entry)).collect();
        if self.image.epoch > epoch_before {
            self.publish();
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.snapshot_sequence += 1;
        SnapshotBuilder {
            image: Arc::clone(&self.image),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshots: Arc::clone(&self.snapshots),
            sequence: self.snapshot_sequence,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let subject = || openraft::ErrorSubject::Snapshot(Some(meta.signature()));
        let image_bytes = snapshot.into_inner();
        let image =
            decode_image(&image_bytes).map_err(|error| storage_error(subject(), openraft::ErrorVerb::Read, &error))?;
        let expected_epoch = meta.last_log_id.map_or(0, |log_id| log_id.index);
        if image.epoch != expected_epoch {
            let error = MetaError::Raft(format!(
                "snapshot image has epoch {} but ends at index {expected_epoch}",
                image.epoch
            ));
            return Err(storage_error(subject(), openraft::ErrorVerb::Read, &error));
        }
        self.snapshots
            .save(StoredSnapshot {
                meta: meta.clone(),
                image_bytes,
            })
            .map_err(|error| storage_error(subject(), openraft::ErrorVerb::Write, &error))?;
        self.image = Arc::new(image);
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.publish();
        tracing::info!(snapshot = %meta, "metadata snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.snapshots.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(node_id: i32, shards: u32) -> BrokerInfo {
        BrokerInfo {
            node_id,
            host: "localhost".into(),
            port: 9092,
            shards,
        }
    }

    fn new_topic(name: &str, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: -1,
            configs: BTreeMap::new(),
        }
    }

    fn id(seed: u8) -> [u8; 16] {
        [seed; 16]
    }

    fn image_with_broker(shards: u32) -> MetadataImage {
        let mut image = MetadataImage::empty();
        apply_command(&mut image, &Command::RegisterBroker(broker(1, shards))).unwrap();
        image
    }

    fn shards_of(topic: &TopicMeta) -> Vec<u32> {
        topic.partitions.iter().map(|partition| partition.shard).collect()
    }

    #[test]
    fn partitions_spread_over_shards_least_loaded_first() {
        let mut image = image_with_broker(4);
        let command = Command::CreateTopic {
            topic: new_topic("a", 6),
            id: id(1),
        };
        let a = apply_command(&mut image, &command).unwrap().unwrap();
        assert_eq!(shards_of(&a), vec![0, 1, 2, 3, 0, 1]);
        // Shards 2 and 3 hold one partition, 0 and 1 hold two.
        let command = Command::CreateTopic {
            topic: new_topic("b", 3),
            id: id(2),
        };
        let b = apply_command(&mut image, &command).unwrap().unwrap();
        assert_eq!(shards_of(&b), vec![2, 3, 0]);
        for partition in &b.partitions {
            assert_eq!(partition.leader, 1);
            assert_eq!(partition.replicas, vec![1]);
            assert_eq!(partition.leader_epoch, 0);
        }
    }

    #[test]
    fn leaders_spread_over_brokers() {
        let mut image = MetadataImage::empty();
        for node_id in [3, 1, 2] {
            apply_command(&mut image, &Command::RegisterBroker(broker(node_id, 2))).unwrap();
        }
        let mut topic = new_topic("t", 6);
        topic.replication_factor = 2;
        let created = apply_command(&mut image, &Command::CreateTopic { topic, id: id(1) })
            .unwrap()
            .unwrap();
        let leaders: Vec<i32> = created.partitions.iter().map(|p| p.leader).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
        let replicas: Vec<Vec<i32>> = created.partitions.iter().map(|p| p.replicas.clone()).collect();
        assert_eq!(replicas[2], vec![3, 1]);
        assert_eq!(shards_of(&created), vec![0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn fewer_shards_replace_round_robin_and_bump_epochs() {
        let mut image = image_with_broker(4);
        apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: new_topic("a", 8),
                id: id(1),
            },
        )
        .unwrap();
        apply_command(&mut image, &Command::RegisterBroker(broker(1, 2))).unwrap();
        let a = image.topic("a").unwrap();
        // Partitions on shards 2,3 (indexes 2,3,6,7) move to 0,1,0,1.
        assert_eq!(shards_of(a), vec![0, 1, 0, 1, 0, 1, 0, 1]);
        let epochs: Vec<i32> = a.partitions.iter().map(|p| p.leader_epoch).collect();
        assert_eq!(epochs, vec![0, 0, 1, 1, 0, 0, 1, 1]);
        // More shards later: nothing moves.
        apply_command(&mut image, &Command::RegisterBroker(broker(1, 8))).unwrap();
        assert_eq!(shards_of(image.topic("a").unwrap()), vec![0, 1, 0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn every_validation_error() {
        let mut image = image_with_broker(2);
        let created = Command::CreateTopic {
            topic: new_topic("t", 1),
            id: id(1),
        };
        apply_command(&mut image, &created).unwrap();
        let before = image.clone();

        type IsExpected = fn(&MetaError) -> bool;
        let cases: Vec<(Command, IsExpected)> = vec![
            (
                Command::CreateTopic {
                    topic: new_topic("t", 1),
                    id: id(2),
                },
                |e| matches!(e, MetaError::TopicExists(_)),
            ),
            (
                Command::CreateTopic {
                    topic: new_topic("bad name", 1),
                    id: id(2),
                },
                |e| matches!(e, MetaError::InvalidTopicName(_)),
            ),
            (
                Command::CreateTopic {
                    topic: new_topic("u", 0),
                    id: id(2),
                },
                |e| matches!(e, MetaError::InvalidPartitions { .. }),
            ),
            (
                Command::CreateTopic {
                    topic: new_topic("u", PARTITIONS_PER_TOPIC_MAX + 1),
                    id: id(2),
                },
                |e| matches!(e, MetaError::InvalidPartitions { .. }),
            ),
            (
                Command::CreateTopic {
                    topic: NewTopic {
                        replication_factor: 2,
                        ..new_topic("u", 1)
                    },
                    id: id(2),
                },
                |e| matches!(e, MetaError::InvalidReplicationFactor { brokers: 1, .. }),
            ),
            (
                Command::CreateTopic {
                    topic: NewTopic {
                        replication_factor: 0,
                        ..new_topic("u", 1)
                    },
                    id: id(2),
                },
                |e| matches!(e, MetaError::InvalidReplicationFactor { .. }),
            ),
            (
                Command::CreateTopic {
                    topic: NewTopic {
                        configs: [("cleanup.policy".to_owned(), "compact".to_owned())].into(),
                        ..new_topic("u", 1)
                    },
                    id: id(2),
                },
                |e| matches!(e, MetaError::InvalidConfig { .. }),
            ),
            (
                Command::CreateTopic {
                    topic: new_topic("u", 1),
                    id: id(1),
                },
                |e| matches!(e, MetaError::Raft(_)),
            ),
            (
                Command::CreateTopic {
                    topic: new_topic("u", 1),
                    id: [0; 16],
                },
                |e| matches!(e, MetaError::Raft(_)),
            ),
            (Command::DeleteTopic { name: "nope".into() }, |e| {
                matches!(e, MetaError::UnknownTopic(_))
            }),
            (
                Command::CreatePartitions {
                    name: "nope".into(),
                    total: 3,
                },
                |e| matches!(e, MetaError::UnknownTopic(_)),
            ),
            (
                Command::CreatePartitions {
                    name: "t".into(),
                    total: 1,
                },
                |e| matches!(e, MetaError::InvalidPartitions { .. }),
            ),
            (
                Command::CreatePartitions {
                    name: "t".into(),
                    total: -5,
                },
                |e| matches!(e, MetaError::InvalidPartitions { .. }),
            ),
            (
                Command::AlterTopicConfigs {
                    name: "nope".into(),
                    changes: BTreeMap::new(),
                },
                |e| matches!(e, MetaError::UnknownTopic(_)),
            ),
            (
                Command::AlterTopicConfigs {
                    name: "t".into(),
                    changes: [
                        ("retention.ms".to_owned(), Some("5".to_owned())),
                        ("bogus".to_owned(), None),
                    ]
                    .into(),
                },
                |e| matches!(e, MetaError::InvalidConfig { .. }),
            ),
            (Command::RegisterBroker(broker(2, 0)), |e| {
                matches!(e, MetaError::InvalidBroker { .. })
            }),
            (Command::RegisterBroker(broker(-1, 1)), |e| {
                matches!(e, MetaError::InvalidBroker { .. })
            }),
        ];
        for (command, expected) in cases {
            let error = apply_command(&mut image, &command).unwrap_err();
            assert!(expected(&error), "{command:?} gave {error:?}");
            assert_eq!(image, before, "a rejected {command:?} changed the image");
        }

        // '.' vs '_' collision.
        apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: new_topic("a.b", 1),
                id: id(3),
            },
        )
        .unwrap();
        let error = apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: new_topic("a_b", 1),
                id: id(4),
            },
        )
        .unwrap_err();
        assert!(matches!(error, MetaError::TopicNameCollision { .. }));
    }

    #[test]
    fn no_brokers_means_no_topics() {
        let mut image = MetadataImage::empty();
        let error = apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: new_topic("t", 1),
                id: id(1),
            },
        )
        .unwrap_err();
        assert!(matches!(error, MetaError::InvalidReplicationFactor { brokers: 0, .. }));
    }

    #[test]
    fn alter_sets_and_deletes() {
        let mut image = image_with_broker(1);
        let mut topic = new_topic("t", 1);
        topic.configs.insert("retention.ms".into(), "100".into());
        apply_command(&mut image, &Command::CreateTopic { topic, id: id(1) }).unwrap();
        let changes = [
            ("retention.ms".to_owned(), None),
            ("shardline.fsync".to_owned(), Some("interval:10".to_owned())),
        ]
        .into();
        let altered = apply_command(
            &mut image,
            &Command::AlterTopicConfigs {
                name: "t".into(),
                changes,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            altered.configs,
            [("shardline.fsync".to_owned(), "interval:10".to_owned())].into()
        );
    }

    #[test]
    fn create_partitions_grows_and_balances() {
        let mut image = image_with_broker(3);
        apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: new_topic("t", 2),
                id: id(1),
            },
        )
        .unwrap();
        let grown = apply_command(
            &mut image,
            &Command::CreatePartitions {
                name: "t".into(),
                total: 5,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(shards_of(&grown), vec![0, 1, 2, 0, 1]);
        let indexes: Vec<i32> = grown.partitions.iter().map(|p| p.index).collect();
        assert_eq!(indexes, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn cluster_id_is_set_once() {
        let mut image = MetadataImage::empty();
        apply_command(
            &mut image,
            &Command::InitCluster {
                cluster_id: "one".into(),
            },
        )
        .unwrap();
        apply_command(
            &mut image,
            &Command::InitCluster {
                cluster_id: "two".into(),
            },
        )
        .unwrap();
        assert_eq!(image.cluster_id, "one");
    }
}
