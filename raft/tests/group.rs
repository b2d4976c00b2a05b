#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code"
)]
//! The metadata group through its public API: commands, validation,
//! placement, restarts, snapshots, torn logs and the vote.

use std::{collections::BTreeMap, fs::OpenOptions, io::Write, path::Path, sync::Arc};

use futures_lite::future::block_on;
use shardline_raft::{
    inspect_log, BrokerInfo, LogRecordKind, MetaError, MetadataConfig, MetadataGroup, MetadataImage, NewTopic,
};

fn config(dir: &Path, snapshot_every_entries: u64) -> MetadataConfig {
    MetadataConfig {
        snapshot_every_entries,
        ..MetadataConfig::new(1, dir.join("meta"))
    }
}

fn start(dir: &Path) -> MetadataGroup {
    MetadataGroup::start(config(dir, 1000)).unwrap()
}

fn broker(node_id: i32, shards: u32) -> BrokerInfo {
    BrokerInfo {
        node_id,
        host: "localhost".into(),
        port: 9092,
        shards,
        fenced: false,
        shard_ports: Vec::new(),
        listeners: Vec::new(),
    }
}

fn topic(name: &str, partitions: i32) -> NewTopic {
    NewTopic {
        name: name.into(),
        partitions,
        replication_factor: -1,
        configs: BTreeMap::new(),
        assignments: Vec::new(),
    }
}

fn shards(image: &MetadataImage, name: &str) -> Vec<u32> {
    image.topics[name].partitions.iter().map(|p| p.shard).collect()
}

#[test]
fn a_fresh_group_leads_itself_and_has_a_cluster_id() {
    let dir = tempfile::tempdir().unwrap();
    let group = start(dir.path());
    let image = group.image();
    assert_eq!(image.cluster_id.len(), 22);
    assert_eq!(image.controller_id, 1);
    assert!(image.epoch > 0);
    let status = group.status();
    assert_eq!(status.leader, Some(1));
    assert_eq!(status.last_applied_index, Some(image.epoch));
    block_on(group.shutdown()).unwrap();
}

#[test]
fn the_commit_index_covers_what_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let group = start(dir.path());
    block_on(async {
        group.register_broker(broker(1, 1)).await.unwrap();
        group.create_topic(topic("orders", 1)).await.unwrap();
        let committed = group.commit_index().await.unwrap().unwrap();
        let applied = group.status().last_applied_index.unwrap();
        assert!(committed >= applied, "committed {committed} < applied {applied}");
        assert!(committed >= group.image().epoch);
    });
    block_on(group.clone().shutdown()).unwrap();
    assert!(
        matches!(block_on(group.commit_index()), Err(MetaError::ShuttingDown)),
        "a stopped group says so"
    );
}

#[test]
fn topics_are_created_altered_grown_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let group = start(dir.path());
    block_on(async {
        group.register_broker(broker(1, 2)).await.unwrap();
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_owned(), "60000".to_owned());
        configs.insert("shardline.fsync".to_owned(), "always".to_owned());
        let created = group
            .create_topic(NewTopic {
                configs,
                ..topic("orders", 3)
            })
            .await
            .unwrap();
        assert_eq!(created.name, "orders");
        assert_ne!(created.id, [0; 16]);
        assert_eq!(created.partitions.len(), 3);
        assert_eq!(group.image().topics["orders"], created);

        let mut changes = BTreeMap::new();
        changes.insert("retention.ms".to_owned(), None);
        changes.insert("segment.bytes".to_owned(), Some("1048576".to_owned()));
        let altered = group.alter_topic_configs("orders", changes).await.unwrap();
        let expected: BTreeMap<String, String> = [
            ("segment.bytes".to_owned(), "1048576".to_owned()),
            ("shardline.fsync".to_owned(), "always".to_owned()),
        ]
        .into();
        assert_eq!(altered.configs, expected);

        let grown = group.create_partitions("orders", 5, Vec::new()).await.unwrap();
        assert_eq!(grown.partitions.len(), 5);
        assert_eq!(grown.id, created.id);
        assert_eq!(&grown.partitions[..3], &created.partitions[..]);

        let deleted = group.delete_topic("orders").await.unwrap();
        assert_eq!(deleted.partitions.len(), 5);
        assert!(group.image().topics.is_empty());
    });
    block_on(group.shutdown()).unwrap();
}

#[test]
fn every_validation_error_comes_back_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let group = start(dir.path());
    block_on(async {
        // No broker yet: no replica can be placed.
        let error = group.create_topic(topic("t", 1)).await.unwrap_err();
        assert!(
            matches!(error, MetaError::InvalidReplicationFactor { brokers: 0, .. }),
            "{error}"
        );

        group.register_broker(broker(1, 2)).await.unwrap();
        group.create_topic(topic("t", 1)).await.unwrap();
        let before = group.image();

        let error = group.create_topic(topic("t", 1)).await.unwrap_err();
        assert!(
            matches!(error, MetaError::TopicExists(ref name) if name == "t"),
            "{error}"
        );
        for name in ["", ".", "..", "with space", "slash/y", &"x".repeat(250)] {
            let error = group.create_topic(topic(name, 1)).await.unwrap_err();
            assert!(matches!(error, MetaError::InvalidTopicName(_)), "{name}: {error}");
        }
        let error = group.create_topic(topic("u", 0)).await.unwrap_err();
        assert!(
            matches!(error, MetaError::InvalidPartitions { requested: 0, .. }),
            "{error}"
        );
        let error = group.create_topic(topic("u", -3)).await.unwrap_err();
        assert!(matches!(error, MetaError::InvalidPartitions { .. }), "{error}");
        for replication_factor in [0, -2, 2] {
            let error = group
                .create_topic(NewTopic {
                    replication_factor,
                    ..topic("u", 1)
                })
                .await
                .unwrap_err();
            assert!(
                matches!(error, MetaError::InvalidReplicationFactor { brokers: 1, .. }),
                "{replication_factor}: {error}"
            );
        }
        for (key, value) in [
            ("unknown.key", "1"),
            ("cleanup.policy", "compact,shred"),
            ("retention.ms", "-5"),
            ("message.timestamp.type", "Now"),
            ("shardline.fsync", "interval:0"),
        ] {
            let error = group
                .create_topic(NewTopic {
                    configs: [(key.to_owned(), value.to_owned())].into(),
                    ..topic("u", 1)
                })
                .await
                .unwrap_err();
            assert!(
                matches!(error, MetaError::InvalidConfig { .. }),
                "{key}={value}: {error}"
            );
        }
        let error = group.delete_topic("missing").await.unwrap_err();
        assert!(matches!(error, MetaError::UnknownTopic(_)), "{error}");
        let error = group.create_partitions("missing", 2, Vec::new()).await.unwrap_err();
        assert!(matches!(error, MetaError::UnknownTopic(_)), "{error}");
        let error = group.create_partitions("t", 1, Vec::new()).await.unwrap_err();
        assert!(matches!(error, MetaError::InvalidPartitions { .. }), "{error}");
        let error = group.alter_topic_configs("missing", BTreeMap::new()).await.unwrap_err();
        assert!(matches!(error, MetaError::UnknownTopic(_)), "{error}");
        let error = group
            .alter_topic_configs("t", [("segment.ms".to_owned(), Some("0".to_owned()))].into())
            .await
            .unwrap_err();
        assert!(matches!(error, MetaError::InvalidConfig { .. }), "{error}");
        let error = group.register_broker(broker(2, 0)).await.unwrap_err();
        assert!(matches!(error, MetaError::InvalidBroker { .. }), "{error}");

        // Rejections consume log entries (epoch moves) but change nothing else.
        let after = group.image();
        assert!(after.epoch > before.epoch);
        assert_eq!(after.topics, before.topics);
        assert_eq!(after.brokers, before.brokers);
    });
    block_on(group.shutdown()).unwrap();
}

#[test]
fn placement_balances_shards_and_fewer_shards_replace() {
    let dir = tempfile::tempdir().unwrap();
    let group = start(dir.path());
    block_on(async {
        group.register_broker(broker(1, 4)).await.unwrap();
        group.create_topic(topic("a", 6)).await.unwrap();
        group.create_topic(topic("b", 2)).await.unwrap();
        let image = group.image();
        assert_eq!(shards(&image, "a"), vec![0, 1, 2, 3, 0, 1]);
        // Shards 2 and 3 had one partition each: b goes there.
        assert_eq!(shards(&image, "b"), vec![2, 3]);
        let per_shard = image.shard_table(1).iter().fold([0; 4], |mut counts, (_, p)| {
            counts[p.shard as usize] += 1;
            counts
        });
        assert_eq!(per_shard, [2, 2, 2, 2]);

        // Down to 2 shards (a restart): partitions on shards 2 and 3 move
        // round-robin.
        group.register_broker(broker(1, 2)).await.unwrap();
        let image = group.image();
        assert_eq!(image.brokers[&1].shards, 2);
        assert_eq!(shards(&image, "a"), vec![0, 1, 0, 1, 0, 1]);
        assert_eq!(shards(&image, "b"), vec![0, 1]);
        // Registering again is a restart: the only broker stops leading and
        // takes every partition back under a new epoch (+2), so it never
        // leads on under an epoch whose unsynced writes it may have lost.
        let epochs: Vec<i32> = image.topics["a"].partitions.iter().map(|p| p.leader_epoch).collect();
        assert_eq!(epochs, vec![2; 6]);
        assert!(image
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .all(|p| p.shard < 2 && p.leader == 1 && p.replicas == vec![1]));
    });
    block_on(group.shutdown()).unwrap();
}

fn create_some_topics(group: &MetadataGroup, count: usize) {
    block_on(async {
        group.register_broker(broker(1, 3)).await.unwrap();
        for n in 0..count {
            let mut configs = BTreeMap::new();
            configs.insert("retention.bytes".to_owned(), format!("{}", 1000 + n));
            group
                .create_topic(NewTopic {
                    configs,
                    ..topic(&format!("topic-{n}"), 1 + (n % 4) as i32)
                })
                .await
                .unwrap();
        }
        group.delete_topic("topic-0").await.unwrap();
    });
}

#[test]
fn a_restart_recovers_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let group = start(dir.path());
    create_some_topics(&group, 6);
    let before = group.image();
    let status_before = group.status();
    block_on(group.shutdown()).unwrap();

    let group = start(dir.path());
    assert_eq!(*group.image(), *before);
    let status = group.status();
    assert_eq!(status.last_applied_index, status_before.last_applied_index);
    assert!(status.term >= status_before.term);
    // And it keeps working.
    block_on(group.create_topic(topic("after-restart", 2))).unwrap();
    block_on(group.shutdown()).unwrap();
}

#[test]
fn a_restart_after_a_snapshot_and_purge_recovers_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let group = MetadataGroup::start(config(dir.path(), 5)).unwrap();
    create_some_topics(&group, 20);
    let status = group.status();
    assert!(status.snapshot_index.is_some(), "{status:?}");
    assert!(status.purged_index.is_some(), "{status:?}");
    let before = group.image();
    block_on(group.shutdown()).unwrap();

    // The log really lost its head.
    let inspection = inspect_log(&dir.path().join("meta")).unwrap();
    assert_eq!(inspection.records.first().map(|r| r.kind), Some(LogRecordKind::Purged));
    let first_entry = inspection
        .records
        .iter()
        .find(|r| !matches!(r.kind, LogRecordKind::Purged | LogRecordKind::Committed))
        .unwrap();
    assert!(first_entry.index > 5, "{inspection:?}");
    assert!(dir.path().join("meta/snapshot").exists());

    let group = MetadataGroup::start(config(dir.path(), 5)).unwrap();
    assert_eq!(*group.image(), *before);
    block_on(group.create_topic(topic("after-restart", 2))).unwrap();
    let after = group.image();
    block_on(group.shutdown()).unwrap();

    // Once more, to recover from the snapshot plus the new entries.
    let group = MetadataGroup::start(config(dir.path(), 5)).unwrap();
    assert_eq!(*group.image(), *after);
    block_on(group.shutdown()).unwrap();
}

/// Starts, applies commands, and returns the image after each one.
fn history(dir: &Path) -> BTreeMap<u64, Arc<MetadataImage>> {
    let group = start(dir);
    let mut images = BTreeMap::new();
    block_on(async {
        group.register_broker(broker(1, 2)).await.unwrap();
        for n in 0..5 {
            group.create_topic(topic(&format!("t{n}"), 2)).await.unwrap();
            let image = group.image();
            images.insert(image.epoch, image);
        }
    });
    block_on(group.shutdown()).unwrap();
    images
}

#[test]
fn a_torn_log_tail_keeps_everything_before_the_tear() {
    let dir = tempfile::tempdir().unwrap();
    let images = history(dir.path());
    let meta = dir.path().join("meta");
    let log = meta.join("raft.log");
    let inspection = inspect_log(&meta).unwrap();
    assert!(inspection.torn.is_none());
    let commands: Vec<_> = inspection
        .records
        .iter()
        .filter(|r| r.kind == LogRecordKind::Command)
        .cloned()
        .collect();
    // Tear the last three commands' records in the middle, newest first.
    for torn in commands.iter().rev().take(3) {
        let contents = std::fs::read(&log).unwrap();
        let cut = torn.offset + torn.length_bytes / 2;
        std::fs::write(&log, &contents[..cut as usize]).unwrap();
        let expected = &images[&(torn.index - 1)];

        let group = start(dir.path());
        let image = group.image();
        assert_eq!(image.topics, expected.topics, "tear in entry {}", torn.index);
        assert_eq!(image.cluster_id, expected.cluster_id);
        assert_eq!(image.epoch, torn.index - 1);
        block_on(group.shutdown()).unwrap();
        assert!(inspect_log(&meta).unwrap().torn.is_none());
    }
}

#[test]
fn garbage_after_the_log_is_cut_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let group = start(dir.path());
    create_some_topics(&group, 3);
    let before = group.image();
    block_on(group.shutdown()).unwrap();

    let meta = dir.path().join("meta");
    let mut file = OpenOptions::new().append(true).open(meta.join("raft.log")).unwrap();
    file.write_all(&[0x5A; 777]).unwrap();
    drop(file);
    assert!(inspect_log(&meta).unwrap().torn.is_some());

    let group = start(dir.path());
    assert_eq!(*group.image(), *before);
    block_on(group.shutdown()).unwrap();
}

#[test]
fn the_vote_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut term = 0;
    for _ in 0..3 {
        let group = start(dir.path());
        let status = group.status();
        assert!(status.term >= 1);
        assert!(status.term >= term, "term went back from {term} to {}", status.term);
        term = status.term;
        block_on(group.shutdown()).unwrap();
        assert!(dir.path().join("meta/vote").exists());
    }
}

#[test]
fn subscribers_see_every_change_with_rising_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let group = start(dir.path());
    let mut receiver = group.subscribe();
    assert!(!receiver.has_changed().unwrap());
    let start_epoch = receiver.borrow().epoch;
    block_on(async {
        group.register_broker(broker(1, 1)).await.unwrap();
        receiver.changed().await.unwrap();
        let first = Arc::clone(&receiver.borrow_and_update());
        assert!(first.epoch > start_epoch);
        assert_eq!(first.brokers.len(), 1);
        group.create_topic(topic("t", 1)).await.unwrap();
        receiver.changed().await.unwrap();
        let second = Arc::clone(&receiver.borrow_and_update());
        assert!(second.epoch > first.epoch);
        assert!(second.topics.contains_key("t"));
        // The old image is untouched: readers hold immutable snapshots.
        assert!(first.topics.is_empty());
    });
    block_on(group.shutdown()).unwrap();
}

#[test]
fn shutdown_stops_every_handle() {
    let dir = tempfile::tempdir().unwrap();
    let group = start(dir.path());
    let other = group.clone();
    let third = group.clone();
    block_on(group.shutdown()).unwrap();
    let error = block_on(other.register_broker(broker(1, 1))).unwrap_err();
    assert!(matches!(error, MetaError::ShuttingDown), "{error}");
    // The image stays readable, and a second shutdown is a no-op.
    assert!(!other.image().cluster_id.is_empty());
    block_on(third.shutdown()).unwrap();
}

#[test]
fn a_directory_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let group = start(dir.path());
    block_on(group.shutdown()).unwrap();
    let error = MetadataGroup::start(MetadataConfig {
        node_id: 2,
        ..config(dir.path(), 1000)
    })
    .unwrap_err();
    assert!(
        matches!(
            error,
            MetaError::NodeIdMismatch {
                stored: 1,
                configured: 2
            }
        ),
        "{error}"
    );
}

#[test]
fn shard_ports_survive_registration_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let group = start(dir.path());
    let own_ports = BrokerInfo {
        shard_ports: vec![9092, 9093],
        ..broker(1, 2)
    };
    block_on(group.register_broker(own_ports.clone())).unwrap();
    assert_eq!(group.image().brokers[&1], own_ports);
    block_on(group.shutdown()).unwrap();
    let group = start(dir.path());
    assert_eq!(group.image().brokers[&1], own_ports, "replayed from the log");
}
