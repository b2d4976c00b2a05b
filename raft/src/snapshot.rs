//! FlatBuffers encoding of the metadata image, and the snapshot file.
//!
//! The image is the table `Image` (`schema/image.fbs`); its bytes are the
//! snapshot data openraft holds and sends to peers. On disk the snapshot is
//! one file, `<data_dir>/snapshot`, replaced atomically (temp file, fsync,
//! rename, directory fsync):
//!
//! ```text
//!  0            8       12       16                            16 + len
//!  ┌────────────┬───────┬────────┬─────────────────────────────┐
//!  │ "SLSNAP01" │ len   │ crc32c │ SnapshotFile (FlatBuffers)  │
//!  │ magic, 8 B │ u32LE │ u32 LE │  meta:  SnapshotMeta        │
//!  │            │       │        │  image: [ubyte] = Image buf │
//!  └────────────┴───────┴────────┴─────────────────────────────┘
//! ```
//! The frame is the one drawn in `codec.rs`. A damaged snapshot file is an
//! error on open (the log before it may already be purged), never skipped.

use std::{
    collections::BTreeMap,
    io::Cursor,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use planus::ReadAsRoot;

use crate::{
    codec::{
        encode_frame, read_frame, snapshot_meta_from_fb, snapshot_meta_to_fb, uuid_from_fb, uuid_to_fb, DecodeError,
        FrameRead, FRAME_HEADER_BYTES,
    },
    command::{broker_from_fb, broker_to_fb},
    error::MetaError,
    files::{read_if_exists, write_atomically},
    generated::shardline::meta as fb,
    image::{MetadataImage, PartitionEpoch, PartitionMeta, Reassignment, TopicMeta, NO_LEADER},
    types::{Snapshot, SnapshotMeta},
};

/// Version stored in `Image.format_version`. Version 2 added
/// `Broker.fenced`, `Partition.isr` and `Partition.replica_shards`;
/// version 3 added `Image.acls` and `Image.scram_credentials` (an older
/// build must refuse such an image rather than drop them); version 4 added
/// `Partition.partition_epoch` (an older build must refuse it rather than
/// drop it: partition epochs never go back). This build writes 4 and reads
/// 1 to 4 (a version-1 partition reads as all replicas in sync, each
/// follower on shard 0; an image before 3 has no ACLs; before 4, every
/// partition epoch is 0), refusing others.
pub(crate) const IMAGE_FORMAT_VERSION: u16 = 4;

/// The oldest `Image.format_version` this build reads.
const IMAGE_FORMAT_VERSION_MIN: u16 = 1;

/// Magic at the start of the snapshot file; the last two characters are the
/// format version.
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"SLSNAP01";

/// File name of the snapshot inside the metadata directory.
pub(crate) const SNAPSHOT_FILE_NAME: &str = "snapshot";

fn partition_to_fb(partition: &PartitionMeta) -> fb::Partition {
    fb::Partition {
        index: partition.index,
        leader: partition.leader,
        shard: partition.shard,
        replicas: Some(partition.replicas.clone()),
        leader_epoch: partition.leader_epoch,
        isr: Some(partition.isr.clone()),
        replica_shards: Some(partition.replica_shards.clone()),
        reassign_from: partition.reassignment.as_ref().map(|r| r.from.clone()),
        reassign_to: partition.reassignment.as_ref().map(|r| r.to.clone()),
        partition_epoch: partition.partition_epoch.0,
    }
}

pub(crate) fn topic_to_fb(topic: &TopicMeta) -> fb::Topic {
    fb::Topic {
        name: Some(topic.name.clone()),
        id: Some(uuid_to_fb(&topic.id)),
        partitions: Some(topic.partitions.iter().map(partition_to_fb).collect()),
        configs: Some(
            topic
                .configs
                .iter()
                .map(|(key, value)| fb::ConfigEntry {
                    key: Some(key.clone()),
                    value: Some(value.clone()),
                })
                .collect(),
        ),
    }
}

/// Encodes the image as an `Image` buffer.
pub fn encode_image(image: &MetadataImage) -> Vec<u8> {
    let image_fb = fb::Image {
        format_version: IMAGE_FORMAT_VERSION,
        epoch: image.epoch,
        cluster_id: Some(image.cluster_id.clone()),
        controller_id: image.controller_id,
        brokers: Some(image.brokers.values().map(broker_to_fb).collect()),
        topics: Some(image.topics.values().map(topic_to_fb).collect()),
        acls: Some(image.acls.iter().map(crate::acl::acl_to_fb).collect()),
        scram_credentials: Some(
            image
                .scram_credentials
                .values()
                .map(crate::credential::credential_to_fb)
                .collect(),
        ),
    };
    let mut builder = planus::Builder::new();
    builder.finish(image_fb, None).to_vec()
}

/// Decodes one partition of an image of `format_version`, checking the
/// invariants apply keeps (so the state machine may assert them).
fn partition_from_fb(partition: fb::Partition, format_version: u16) -> Result<PartitionMeta, DecodeError> {
    let replicas = partition.replicas.unwrap_or_default();
    let (isr, replica_shards) = if format_version == 1 {
        let shards = replicas
            .iter()
            .map(|replica| {
                if *replica == partition.leader {
                    partition.shard
                } else {
                    0
                }
            })
            .collect();
        (replicas.clone(), shards)
    } else {
        (
            partition.isr.unwrap_or_default(),
            partition.replica_shards.unwrap_or_default(),
        )
    };
    let reassignment = match (partition.reassign_from, partition.reassign_to) {
        (Some(from), Some(to)) => Some(Reassignment { from, to }),
        (None, None) => None,
        _ => {
            return Err(DecodeError::new(format!(
                "partition {}: a reassignment without both its ends",
                partition.index
            )))
        }
    };
    let decoded = PartitionMeta {
        index: partition.index,
        leader: partition.leader,
        shard: partition.shard,
        replicas,
        leader_epoch: partition.leader_epoch,
        isr,
        replica_shards,
        reassignment,
        // Absent before format 4: read as 0, the epoch of a partition no
        // change has touched (the next change moves it on).
        partition_epoch: PartitionEpoch(partition.partition_epoch),
    };
    let invalid = |what: &str| {
        DecodeError::new(format!(
            "partition {}: {what} (replicas {:?}, isr {:?}, replica shards {:?}, leader {} on shard {})",
            decoded.index, decoded.replicas, decoded.isr, decoded.replica_shards, decoded.leader, decoded.shard
        ))
    };
    if decoded.replicas.len() != decoded.replica_shards.len() {
        return Err(invalid("replicas and replica shards differ in length"));
    }
    // Negative, or with no successor: the next change would have no epoch
    // to move to (apply asserts it moves), so such an image is refused here.
    if !(PartitionEpoch(0)..PartitionEpoch::MAX).contains(&decoded.partition_epoch) {
        return Err(invalid("a partition epoch out of range"));
    }
    if decoded.isr.is_empty() || !decoded.isr.iter().all(|member| decoded.replicas.contains(member)) {
        return Err(invalid("ISR empty or not within the replicas"));
    }
    if let Some(reassignment) = &decoded.reassignment {
        let spans = reassignment
            .from
            .iter()
            .chain(&reassignment.to)
            .all(|b| decoded.replicas.contains(b))
            && decoded
                .replicas
                .iter()
                .all(|b| reassignment.from.contains(b) || reassignment.to.contains(b));
        if !spans || reassignment.to.is_empty() {
            return Err(invalid("a reassignment whose ends are not the replicas"));
        }
    }
    if decoded.leader != NO_LEADER
        && (!decoded.isr.contains(&decoded.leader) || decoded.shard_on(decoded.leader) != Some(decoded.shard))
    {
        return Err(invalid("the leader is not an ISR member on its shard"));
    }
    Ok(decoded)
}

pub(crate) fn topic_from_fb(topic: fb::Topic, format_version: u16) -> Result<TopicMeta, DecodeError> {
    let name = topic.name.ok_or_else(|| DecodeError::missing("Topic.name"))?;
    let id = uuid_from_fb(topic.id.ok_or_else(|| DecodeError::missing("Topic.id"))?);
    let mut partitions = Vec::new();
    for (position, partition) in topic.partitions.unwrap_or_default().into_iter().enumerate() {
        if usize::try_from(partition.index).ok() != Some(position) {
            return Err(DecodeError::new(format!(
                "topic {name}: partition at position {position} has index {}",
                partition.index
            )));
        }
        partitions.push(partition_from_fb(partition, format_version)?);
    }
    let mut configs = BTreeMap::new();
    for entry in topic.configs.unwrap_or_default() {
        let key = entry.key.ok_or_else(|| DecodeError::missing("ConfigEntry.key"))?;
        let value = entry.value.ok_or_else(|| DecodeError::missing("ConfigEntry.value"))?;
        if configs.insert(key, value).is_some() {
            return Err(DecodeError::new(format!("topic {name}: a config key twice")));
        }
    }
    Ok(TopicMeta {
        name,
        id,
        partitions,
        configs,
    })
}

/// Decodes an `Image` buffer (untrusted: from disk or a peer). Never panics.
pub fn decode_image(bytes: &[u8]) -> Result<MetadataImage, DecodeError> {
    let image = fb::Image::try_from(fb::ImageRef::read_as_root(bytes)?)?;
    if !(IMAGE_FORMAT_VERSION_MIN..=IMAGE_FORMAT_VERSION).contains(&image.format_version) {
        return Err(DecodeError::new(format!(
            "image format version {} (this build reads {IMAGE_FORMAT_VERSION_MIN} to {IMAGE_FORMAT_VERSION})",
            image.format_version
        )));
    }
    let mut brokers = BTreeMap::new();
    for broker in image.brokers.unwrap_or_default() {
        let broker = broker_from_fb(broker)?;
        let node_id = broker.node_id;
        if broker.shards == 0 {
            // Apply never registers one; placement would have nowhere to go.
            return Err(DecodeError::new(format!("broker {node_id} with zero shards")));
        }
        if !broker.shard_ports.is_empty() && broker.shard_ports.len() != usize::try_from(broker.shards).unwrap_or(0) {
            return Err(DecodeError::new(format!(
                "broker {node_id} with {} shard ports for {} shards",
                broker.shard_ports.len(),
                broker.shards
            )));
        }
        if broker.listeners.len() > crate::image::BROKER_LISTENERS_MAX
            || broker.listeners.iter().any(|listener| {
                !listener.shard_ports.is_empty()
                    && listener.shard_ports.len() != usize::try_from(broker.shards).unwrap_or(0)
            })
        {
            return Err(DecodeError::new(format!(
                "broker {node_id} with more than {} listeners or a listener without a port per shard",
                crate::image::BROKER_LISTENERS_MAX
            )));
        }
        if brokers.insert(node_id, broker).is_some() {
            return Err(DecodeError::new(format!("broker {node_id} twice in the image")));
        }
    }
    let mut topics = BTreeMap::new();
    for topic in image.topics.unwrap_or_default() {
        let topic = topic_from_fb(topic, image.format_version)?;
        let name = topic.name.clone();
        if topics.insert(topic.name.clone(), topic).is_some() {
            return Err(DecodeError::new(format!("topic {name} twice in the image")));
        }
    }
    let mut acls = std::collections::BTreeSet::new();
    let stored = image.acls.unwrap_or_default();
    if stored.len() > crate::acl::ACLS_MAX {
        return Err(DecodeError::new(format!("{} ACLs in the image", stored.len())));
    }
    for acl in stored {
        if !acls.insert(crate::acl::acl_from_fb(acl)?) {
            return Err(DecodeError::new("an ACL twice in the image"));
        }
    }
    let mut scram_credentials = BTreeMap::new();
    let stored = image.scram_credentials.unwrap_or_default();
    if stored.len() > crate::credential::SCRAM_CREDENTIALS_MAX {
        return Err(DecodeError::new(format!(
            "{} SCRAM credentials in the image",
            stored.len()
        )));
    }
    for credential in stored {
        let credential = crate::credential::credential_from_fb(credential)?;
        let key = (credential.user.clone(), credential.mechanism);
        if scram_credentials.insert(key, credential).is_some() {
            return Err(DecodeError::new("a SCRAM credential twice in the image"));
        }
    }
    Ok(MetadataImage {
        epoch: image.epoch,
        cluster_id: image.cluster_id.unwrap_or_default(),
        controller_id: image.controller_id,
        brokers,
        topics,
        acls,
        scram_credentials,
    })
}

/// The snapshot openraft knows about: its meta and the image bytes.
#[derive(Debug, Clone)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: SnapshotMeta,
    pub(crate) image_bytes: Vec<u8>,
}

impl StoredSnapshot {
    pub(crate) fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.image_bytes.clone())),
        }
    }
}

/// A snapshot read back from disk: its meta and the decoded image.
pub(crate) type LoadedSnapshot = (SnapshotMeta, MetadataImage);

/// The snapshot file of one metadata directory plus the current snapshot in
/// memory. Shared by the state machine and its snapshot builders.
#[derive(Debug)]
pub(crate) struct SnapshotStore {
    path: PathBuf,
    current: Mutex<Option<StoredSnapshot>>,
}

impl SnapshotStore {
    /// Opens the store and decodes the snapshot file, if there is one.
    pub(crate) fn open(dir: &Path) -> Result<(Arc<SnapshotStore>, Option<LoadedSnapshot>), MetaError> {
        let path = dir.join(SNAPSHOT_FILE_NAME);
        let (current, loaded) = match read_if_exists(&path)? {
            None => (None, None),
            Some(contents) => {
                let (meta, image_bytes) = decode_snapshot_file(&path, &contents)?;
                let image = decode_image(&image_bytes)
                    .map_err(|error| MetaError::corrupt(&path, 0, format!("snapshot image: {error}")))?;
                let expected_epoch = meta.last_log_id.map(|log_id| log_id.index).unwrap_or(0);
                if image.epoch != expected_epoch {
                    return Err(MetaError::corrupt(
                        &path,
                        0,
                        format!(
                            "image epoch {} but snapshot ends at index {expected_epoch}",
                            image.epoch
                        ),
                    ));
                }
                (
                    Some(StoredSnapshot {
                        meta: meta.clone(),
                        image_bytes,
                    }),
                    Some((meta, image)),
                )
            }
        };
        let store = SnapshotStore {
            path,
            current: Mutex::new(current),
        };
        Ok((Arc::new(store), loaded))
    }

    /// The current snapshot, if any.
    pub(crate) fn current(&self) -> Option<Snapshot> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().map(StoredSnapshot::to_snapshot)
    }

    /// Makes `snapshot` durable and current, unless the current one is newer
    /// (a builder that raced with an installed snapshot). Returns whether it
    /// was written.
    pub(crate) fn save(&self, snapshot: StoredSnapshot) -> Result<bool, MetaError> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = current.as_ref() {
            if existing.meta.last_log_id > snapshot.meta.last_log_id {
                return Ok(false);
            }
        }
        let mut contents =
            Vec::with_capacity(SNAPSHOT_MAGIC.len() + FRAME_HEADER_BYTES + snapshot.image_bytes.len() + 256);
        contents.extend_from_slice(&SNAPSHOT_MAGIC);
        let file = fb::SnapshotFile {
            meta: Some(Box::new(snapshot_meta_to_fb(&snapshot.meta))),
            image: Some(snapshot.image_bytes.clone()),
        };
        let mut builder = planus::Builder::new();
        encode_frame(builder.finish(file, None), &mut contents);
        write_atomically(&self.path, &contents)?;
        *current = Some(snapshot);
        Ok(true)
    }
}

pub(crate) fn decode_snapshot_file(path: &Path, contents: &[u8]) -> Result<(SnapshotMeta, Vec<u8>), MetaError> {
    if contents.get(..SNAPSHOT_MAGIC.len()) != Some(&SNAPSHOT_MAGIC[..]) {
        return Err(MetaError::corrupt(path, 0, "not a Shardline snapshot file (bad magic)"));
    }
    let offset = SNAPSHOT_MAGIC.len() as u64;
    let payload = match read_frame(contents, SNAPSHOT_MAGIC.len()) {
        FrameRead::Frame { payload, next } if next == contents.len() => payload,
        FrameRead::Frame { .. } => return Err(MetaError::corrupt(path, offset, "bytes after the snapshot")),
        FrameRead::End => return Err(MetaError::corrupt(path, offset, "empty snapshot file")),
        FrameRead::Torn { reason } => return Err(MetaError::corrupt(path, offset, reason)),
    };
    let decode = || -> Result<(SnapshotMeta, Vec<u8>), DecodeError> {
        let file = fb::SnapshotFile::try_from(fb::SnapshotFileRef::read_as_root(payload)?)?;
        let meta = snapshot_meta_from_fb(*file.meta.ok_or_else(|| DecodeError::missing("SnapshotFile.meta"))?)?;
        let image = file.image.ok_or_else(|| DecodeError::missing("SnapshotFile.image"))?;
        Ok((meta, image))
    };
    decode().map_err(|error| MetaError::corrupt(path, offset, error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::BrokerInfo;
    use crate::types::{LogId, StoredMembership};

    pub(crate) fn sample_image() -> MetadataImage {
        let mut image = MetadataImage::empty();
        image.epoch = 17;
        image.cluster_id = "abcdefghijklmnopqrstuv".into();
        image.controller_id = 1;
        image.brokers.insert(
            1,
            BrokerInfo {
                node_id: 1,
                host: "localhost".into(),
                port: 9092,
                shards: 2,
                fenced: false,
                shard_ports: Vec::new(),
                listeners: Vec::new(),
            },
        );
        image.brokers.insert(
            2,
            BrokerInfo {
                node_id: 2,
                host: "other".into(),
                port: 9093,
                shards: 3,
                fenced: true,
                shard_ports: Vec::new(),
                listeners: Vec::new(),
            },
        );
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".into(), "1000".into());
        image.topics.insert(
            "orders".into(),
            TopicMeta {
                name: "orders".into(),
                id: [3; 16],
                partitions: vec![
                    PartitionMeta {
                        index: 0,
                        leader: 1,
                        shard: 0,
                        replicas: vec![1, 2],
                        leader_epoch: 0,
                        isr: vec![1],
                        replica_shards: vec![0, 2],
                        reassignment: Some(Reassignment {
                            from: vec![1],
                            to: vec![2],
                        }),
                        partition_epoch: PartitionEpoch(5),
                    },
                    PartitionMeta {
                        index: 1,
                        leader: NO_LEADER,
                        shard: 1,
                        replicas: vec![2, 1],
                        leader_epoch: 2,
                        isr: vec![2],
                        replica_shards: vec![1, 1],
                        reassignment: None,
                        partition_epoch: PartitionEpoch(0),
                    },
                ],
                configs,
            },
        );
        image.acls.insert(crate::acl::tests::sample_acl("User:alice", "app-"));
        image.acls.insert(crate::acl::tests::sample_acl("User:*", "*"));
        let credential = crate::credential::tests::sample_credential("carol", crate::ScramMechanism::Sha512);
        image
            .scram_credentials
            .insert((credential.user.clone(), credential.mechanism), credential);
        image
    }

    #[test]
    fn image_round_trips() {
        let image = sample_image();
        assert_eq!(decode_image(&encode_image(&image)).unwrap(), image);
        let empty = MetadataImage::empty();
        assert_eq!(decode_image(&encode_image(&empty)).unwrap(), empty);
    }

    #[test]
    fn snapshot_file_survives_reopen_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (store, loaded) = SnapshotStore::open(dir.path()).unwrap();
        assert!(loaded.is_none());
        assert!(store.current().is_none());
        let image = sample_image();
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 17)),
            last_membership: StoredMembership::default(),
            snapshot_id: "1-17-1".into(),
        };
        let written = store
            .save(StoredSnapshot {
                meta: meta.clone(),
                image_bytes: encode_image(&image),
            })
            .unwrap();
        assert!(written);
        let (_, loaded) = SnapshotStore::open(dir.path()).unwrap();
        let (loaded_meta, loaded_image) = loaded.unwrap();
        assert_eq!(loaded_meta, meta);
        assert_eq!(loaded_image, image);

        // An older snapshot does not replace a newer one.
        let older = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 3)),
            ..meta.clone()
        };
        let written = store
            .save(StoredSnapshot {
                meta: older,
                image_bytes: encode_image(&MetadataImage::empty()),
            })
            .unwrap();
        assert!(!written);

        let path = dir.path().join(SNAPSHOT_FILE_NAME);
        let mut contents = std::fs::read(&path).unwrap();
        let middle = contents.len() / 2;
        contents[middle] ^= 0x55;
        std::fs::write(&path, &contents).unwrap();
        assert!(matches!(
            SnapshotStore::open(dir.path()),
            Err(MetaError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_format_1_image_reads_as_all_replicas_in_sync() {
        let partition = fb::Partition {
            index: 0,
            leader: 2,
            shard: 3,
            replicas: Some(vec![2, 1]),
            leader_epoch: 4,
            isr: None,
            replica_shards: None,
            reassign_from: None,
            reassign_to: None,
            partition_epoch: 0,
        };
        let topic = fb::Topic {
            name: Some("old".into()),
            id: Some(uuid_to_fb(&[1; 16])),
            partitions: Some(vec![partition]),
            configs: None,
        };
        let image = fb::Image {
            format_version: 1,
            epoch: 3,
            cluster_id: Some("c".into()),
            controller_id: 1,
            brokers: None,
            topics: Some(vec![topic]),
            acls: None,
            scram_credentials: None,
        };
        let mut builder = planus::Builder::new();
        let decoded = decode_image(builder.finish(image, None)).unwrap();
        let partition = decoded.partition("old", 0).unwrap();
        assert_eq!(partition.isr, vec![2, 1]);
        assert_eq!(partition.replica_shards, vec![3, 0]);
        assert_eq!(partition.shard_on(2), Some(3));
        assert_eq!(partition.partition_epoch, PartitionEpoch(0));
    }

    #[test]
    fn inconsistent_partitions_are_rejected() {
        let damages: [fn(&mut PartitionMeta); 6] = [
            |p| p.partition_epoch = PartitionEpoch(-1),
            |p| p.partition_epoch = PartitionEpoch::MAX,
            |p| p.replica_shards.clear(),
            |p| p.isr.clear(),
            |p| p.isr = vec![9],
            |p| p.shard = 1,
        ];
        for damage in damages {
            let mut image = sample_image();
            let topic = image.topics.get_mut("orders").unwrap();
            damage(&mut topic.partitions[0]);
            assert!(decode_image(&encode_image(&image)).is_err());
        }
    }

    #[test]
    fn bad_partition_order_is_rejected() {
        let mut image = sample_image();
        if let Some(topic) = image.topics.get_mut("orders") {
            topic.partitions.swap(0, 1);
        }
        assert!(decode_image(&encode_image(&image)).is_err());
    }
}
