//! Writes seed corpora for the metadata group's fuzz targets from a real,
//! single-node metadata group: it registers brokers, creates, alters and
//! deletes topics (enough entries for a snapshot and a purge), shuts down,
//! and copies its `raft.log`, `vote` and `snapshot` files; the RPC seeds
//! are frames of every RPC kind built from the same directory.
//!
//! `raft-seeds OUT_DIR` writes `OUT_DIR/<target>/<name>` (byte 0 of each
//! seed is the targets' flag byte, 0). Run by `scripts/fuzz seeds`.

use std::{collections::BTreeMap, path::Path};

use futures_lite::future::block_on;
use shardline_fuzz_support::write_seed;
use shardline_raft::{fuzz_api, BrokerInfo, MetadataConfig, MetadataGroup, NewTopic};

/// Entries between snapshots: small, so the group snapshots and purges.
const SNAPSHOT_EVERY_ENTRIES: u64 = 8;

fn drive(group: &MetadataGroup) {
    block_on(async {
        for node_id in 1..=3 {
            let broker = BrokerInfo {
                node_id,
                host: "127.0.0.1".into(),
                port: 9091 + node_id as u16,
                shards: 2,
                fenced: false,
                shard_ports: Vec::new(),
                listeners: Vec::new(),
            };
            group.register_broker(broker).await.expect("register broker");
        }
        for index in 0..6 {
            let mut configs = BTreeMap::new();
            configs.insert("retention.ms".to_owned(), format!("{}", 60_000 * (index + 1)));
            let topic = NewTopic {
                name: format!("seed-topic-{index}"),
                partitions: 1 + index % 3,
                replication_factor: if index % 2 == 0 { 1 } else { 3 },
                configs,
            };
            group.create_topic(topic).await.expect("create topic");
        }
        group
            .create_partitions("seed-topic-0", 4)
            .await
            .expect("create partitions");
        let mut altered = BTreeMap::new();
        altered.insert("cleanup.policy".to_owned(), Some("delete".to_owned()));
        altered.insert("retention.ms".to_owned(), None);
        group
            .alter_topic_configs("seed-topic-1", altered)
            .await
            .expect("alter configs");
        group.delete_topic("seed-topic-5").await.expect("delete topic");
    });
}

fn main() {
    let out = std::env::args_os().nth(1).expect("usage: raft-seeds OUT_DIR");
    let out = Path::new(&out);
    let data = std::env::temp_dir().join(format!("shardline-raft-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut config = MetadataConfig::new(1, &data);
    config.snapshot_every_entries = SNAPSHOT_EVERY_ENTRIES;
    let group = MetadataGroup::start(config).expect("start a metadata group");
    drive(&group);
    block_on(group.shutdown()).expect("shut down");

    for (target, file) in [
        ("raft_log", "raft.log"),
        ("vote_file", "vote"),
        ("snapshot_file", "snapshot"),
    ] {
        let contents = std::fs::read(data.join(file)).unwrap_or_else(|error| panic!("{file}: {error}"));
        write_seed(out, target, &format!("group-{file}"), Some(0), &contents);
    }
    let stream = fuzz_api::sample_rpc_stream(&data).expect("sample RPC frames");
    write_seed(out, "rpc_frames", "every-kind", Some(0), &stream);
    let _ = std::fs::remove_dir_all(&data);
}
