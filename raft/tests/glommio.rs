#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code"
)]
//! The metadata API awaited from inside a glommio executor, as the engine's
//! shards do: the futures only wait on tokio channels, which glommio polls
//! and the raft thread wakes.

use std::collections::BTreeMap;

use glommio::{LocalExecutorBuilder, Placement};
use shardline_raft::{BrokerInfo, MetadataConfig, MetadataGroup, NewTopic};

#[test]
fn the_api_works_from_a_glommio_shard() {
    let dir = tempfile::tempdir().unwrap();
    let group = MetadataGroup::start(MetadataConfig::new(1, dir.path().join("meta"))).unwrap();
    let shard_group = group.clone();
    let shard = std::thread::spawn(move || {
        // Small io_memory: memlock is 8 MiB here (design.md §4).
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(512 * 1024)
            .make()
            .unwrap();
        executor.run(async move {
            let mut images = shard_group.subscribe();
            shard_group
                .register_broker(BrokerInfo {
                    node_id: 1,
                    host: "localhost".into(),
                    port: 9092,
                    shards: 2,
                    fenced: false,
                    shard_ports: Vec::new(),
                    listeners: Vec::new(),
                })
                .await
                .unwrap();
            let created = shard_group
                .create_topic(NewTopic {
                    name: "from-glommio".into(),
                    partitions: 4,
                    replication_factor: 1,
                    configs: BTreeMap::new(),
                    assignments: Vec::new(),
                })
                .await
                .unwrap();
            // Wait for the watch to deliver the image with the topic.
            loop {
                images.changed().await.unwrap();
                if images.borrow_and_update().topics.contains_key("from-glommio") {
                    break;
                }
            }
            let grown = shard_group
                .create_partitions("from-glommio", 6, Vec::new())
                .await
                .unwrap();
            assert_eq!(grown.partitions.len(), 6);
            created
        })
    });
    let created = shard.join().unwrap();
    assert_eq!(created.partitions.len(), 4);
    let image = group.image();
    assert_eq!(image.topics["from-glommio"].partitions.len(), 6);
    futures_lite::future::block_on(group.shutdown()).unwrap();
}
