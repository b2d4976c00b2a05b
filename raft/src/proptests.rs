//! Property tests of every decoder: random bytes and damaged valid
//! encodings never panic (they are `Result`s), and encode → decode is the
//! identity for images, commands and log entries.

use std::{collections::BTreeMap, path::Path};

use proptest::prelude::*;

use crate::{
    codec::{decode_entry, encode_entry, read_frame, FrameRead},
    command::Command,
    image::{BrokerInfo, MetadataImage, NewTopic, PartitionMeta, TopicMeta},
    log_store::{scan, LOG_MAGIC},
    network::{decode_request, decode_response},
    snapshot::{decode_image, decode_snapshot_file, encode_image, SNAPSHOT_MAGIC},
    types::{Entry, LogId},
    vote::{decode_vote_file, VOTE_MAGIC},
};

fn broker_strategy() -> impl Strategy<Value = BrokerInfo> {
    (
        0..100i32,
        "[a-z0-9.-]{1,20}",
        any::<u16>(),
        1..64u32,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(node_id, host, port, shards, fenced, own_ports)| {
            // Each shard its own port, or all sharing `port`.
            let shard_ports: Vec<u16> = if own_ports {
                (0..shards)
                    .map(|k| port.wrapping_add(u16::try_from(k).unwrap_or(0)))
                    .collect()
            } else {
                Vec::new()
            };
            // Named listeners (the first mirrors the registration) on
            // every other node; none, as older registrations, on the rest.
            let listeners = if node_id % 2 == 0 {
                vec![
                    crate::image::BrokerListener {
                        name: "PLAINTEXT".into(),
                        host: host.clone(),
                        port,
                        shard_ports: shard_ports.clone(),
                    },
                    crate::image::BrokerListener {
                        name: "SECURE".into(),
                        host: format!("secure.{host}"),
                        port: port.wrapping_add(100),
                        shard_ports: shard_ports.iter().map(|p| p.wrapping_add(100)).collect(),
                    },
                ]
            } else {
                Vec::new()
            };
            BrokerInfo {
                node_id,
                host,
                port,
                shards,
                fenced,
                shard_ports,
                listeners,
            }
        })
}

/// Partitions that keep apply's invariants (decode_image refuses others):
/// distinct replicas with a shard each, a non-empty ISR within them, and a
/// leader that is an ISR member on its shard, or none.
fn partition_strategy() -> impl Strategy<Value = PartitionMeta> {
    (
        prop::collection::btree_set(0..100i32, 1..5),
        prop::collection::vec(any::<u32>(), 5),
        1..32u8,
        any::<prop::sample::Index>(),
        any::<bool>(),
        any::<i32>(),
        0..i32::MAX,
    )
        .prop_map(
            |(replicas, shards, isr_mask, leader_pick, offline, leader_epoch, partition_epoch)| {
                let replicas: Vec<i32> = replicas.into_iter().collect();
                let replica_shards: Vec<u32> = shards.into_iter().take(replicas.len()).collect();
                let mut isr: Vec<i32> = replicas
                    .iter()
                    .enumerate()
                    .filter(|(position, _)| isr_mask & (1 << position) != 0)
                    .map(|(_, replica)| *replica)
                    .collect();
                if isr.is_empty() {
                    isr.push(replicas[0]);
                }
                let leader = if offline {
                    crate::image::NO_LEADER
                } else {
                    *leader_pick.get(&isr)
                };
                let mut partition = PartitionMeta {
                    index: 0,
                    leader,
                    shard: 0,
                    replicas,
                    leader_epoch,
                    isr,
                    replica_shards,
                    reassignment: None,
                    partition_epoch: crate::image::PartitionEpoch(partition_epoch),
                };
                partition.shard = partition.shard_on(leader).unwrap_or(7);
                partition
            },
        )
}

fn topic_strategy() -> impl Strategy<Value = TopicMeta> {
    (
        "[a-zA-Z0-9._-]{1,30}",
        any::<[u8; 16]>(),
        prop::collection::vec(partition_strategy(), 0..8),
        prop::collection::btree_map("[a-z.]{1,20}", "[ -~]{0,20}", 0..4),
    )
        .prop_map(|(name, id, mut partitions, configs)| {
            for (position, partition) in partitions.iter_mut().enumerate() {
                partition.index = i32::try_from(position).unwrap();
            }
            TopicMeta {
                name,
                id,
                partitions,
                configs,
            }
        })
}

fn image_strategy() -> impl Strategy<Value = MetadataImage> {
    (
        any::<u64>(),
        "[A-Za-z0-9_-]{0,22}",
        any::<i32>(),
        prop::collection::vec(broker_strategy(), 0..5),
        prop::collection::vec(topic_strategy(), 0..6),
    )
        .prop_map(|(epoch, cluster_id, controller_id, brokers, topics)| MetadataImage {
            epoch,
            cluster_id,
            controller_id,
            brokers: brokers.into_iter().map(|broker| (broker.node_id, broker)).collect(),
            topics: topics.into_iter().map(|topic| (topic.name.clone(), topic)).collect(),
            acls: std::collections::BTreeSet::new(),
            scram_credentials: BTreeMap::new(),
        })
}

fn command_strategy() -> impl Strategy<Value = Command> {
    let name = "[a-zA-Z0-9._-]{0,30}";
    prop_oneof![
        "[A-Za-z0-9_-]{0,22}".prop_map(|cluster_id| Command::InitCluster { cluster_id }),
        broker_strategy().prop_map(Command::RegisterBroker),
        (
            name,
            any::<i32>(),
            any::<i16>(),
            prop::collection::btree_map("[a-z.]{1,20}", "[ -~]{0,10}", 0..4),
            any::<[u8; 16]>(),
            assignments_strategy()
        )
            .prop_map(|(name, partitions, replication_factor, configs, id, assignments)| {
                Command::CreateTopic {
                    topic: NewTopic {
                        name,
                        partitions,
                        replication_factor,
                        configs,
                        assignments,
                    },
                    id,
                }
            }),
        name.prop_map(|name| Command::DeleteTopic { name }),
        (name, any::<i32>(), assignments_strategy()).prop_map(|(name, total, assignments)| {
            Command::CreatePartitions {
                name,
                total,
                assignments,
            }
        }),
        any::<i32>().prop_map(|node_id| Command::FenceBroker { node_id }),
        any::<i32>().prop_map(|node_id| Command::UnfenceBroker { node_id }),
        (
            name,
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            prop::option::of(any::<i32>()),
            prop::collection::vec(any::<i32>(), 0..4)
        )
            .prop_map(
                |(topic, partition, leader, leader_epoch, partition_epoch, isr)| Command::AlterIsr(
                    crate::command::IsrChange {
                        topic,
                        partition,
                        leader,
                        leader_epoch,
                        partition_epoch: partition_epoch.map(crate::image::PartitionEpoch),
                        isr,
                    }
                )
            ),
        (
            name,
            prop::collection::btree_map("[a-z.]{1,20}", prop::option::of("[ -~]{0,10}"), 0..4)
        )
            .prop_map(|(name, changes)| Command::AlterTopicConfigs { name, changes }),
    ]
}

/// Hand-given replica lists: usually none, sometimes a few short ones.
fn assignments_strategy() -> impl Strategy<Value = Vec<Vec<i32>>> {
    prop::collection::vec(prop::collection::vec(any::<i32>(), 0..4), 0..3)
}

fn entry_strategy() -> impl Strategy<Value = Entry> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        prop::option::of(command_strategy()),
    )
        .prop_map(|(term, node_id, index, command)| Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(term, node_id), index),
            payload: match command {
                Some(command) => openraft::EntryPayload::Normal(command),
                None => openraft::EntryPayload::Blank,
            },
        })
}

/// Runs every decoder over `bytes`; none may panic.
fn decode_everything(bytes: &[u8]) {
    let path = Path::new("fuzz");
    let _ = decode_image(bytes);
    let _ = decode_entry(bytes);
    let _ = decode_request(bytes);
    let _ = decode_response(bytes);
    let _ = read_frame(bytes, 0);
    for magic in [&LOG_MAGIC, &VOTE_MAGIC, &SNAPSHOT_MAGIC] {
        let mut file = Vec::from(&magic[..]);
        file.extend_from_slice(bytes);
        let _ = decode_vote_file(path, &file);
        let _ = decode_snapshot_file(path, &file);
        let _ = scan(path, &file);
    }
    // Also as the payload of a valid frame, so the FlatBuffers layer is hit
    // behind a matching checksum.
    let mut framed = Vec::from(&LOG_MAGIC[..]);
    if !bytes.is_empty() {
        crate::codec::encode_frame(bytes, &mut framed);
    }
    let _ = scan(path, &framed);
    let mut framed_vote = Vec::from(&VOTE_MAGIC[..]);
    framed_vote.extend_from_slice(framed.get(LOG_MAGIC.len()..).unwrap_or_default());
    let _ = decode_vote_file(path, &framed_vote);
    let mut framed_snapshot = Vec::from(&SNAPSHOT_MAGIC[..]);
    framed_snapshot.extend_from_slice(framed.get(LOG_MAGIC.len()..).unwrap_or_default());
    let _ = decode_snapshot_file(path, &framed_snapshot);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    #[test]
    fn damaged_images_never_panic(
        image in image_strategy(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode_image(&image);
        for (position, value) in flips {
            let position = position.index(bytes.len());
            bytes[position] = value;
        }
        decode_everything(&bytes);
        let cut = cut.index(bytes.len());
        decode_everything(&bytes[..cut]);
    }

    #[test]
    fn damaged_entries_never_panic(
        entry in entry_strategy(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = encode_entry(&entry);
        for (position, value) in flips {
            let position = position.index(bytes.len());
            bytes[position] = value;
        }
        decode_everything(&bytes);
    }

    #[test]
    fn images_round_trip(image in image_strategy()) {
        let decoded = decode_image(&encode_image(&image)).unwrap();
        prop_assert_eq!(decoded, image);
    }

    #[test]
    fn entries_round_trip(entry in entry_strategy()) {
        let decoded = decode_entry(&encode_entry(&entry)).unwrap();
        prop_assert_eq!(decoded, entry);
    }

    #[test]
    fn frames_round_trip(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 0..8)) {
        let mut stream = Vec::new();
        for payload in &payloads {
            crate::codec::encode_frame(payload, &mut stream);
        }
        let mut offset = 0;
        let mut read = Vec::new();
        while let FrameRead::Frame { payload, next } = read_frame(&stream, offset) {
            read.push(payload.to_vec());
            offset = next;
        }
        prop_assert_eq!(read, payloads);
        prop_assert_eq!(offset, stream.len());
    }
}

#[test]
fn an_image_with_everything_round_trips() {
    let mut configs = BTreeMap::new();
    configs.insert("retention.ms".to_owned(), "1".to_owned());
    let image = MetadataImage {
        epoch: u64::MAX,
        cluster_id: "x".repeat(22),
        controller_id: i32::MIN,
        brokers: BTreeMap::new(),
        topics: [(
            "t".to_owned(),
            TopicMeta {
                name: "t".into(),
                id: [0xff; 16],
                partitions: Vec::new(),
                configs,
            },
        )]
        .into(),
        acls: std::collections::BTreeSet::new(),
        scram_credentials: BTreeMap::new(),
    };
    assert_eq!(decode_image(&encode_image(&image)).unwrap(), image);
}
