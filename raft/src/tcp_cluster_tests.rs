//! Three `MetadataGroup`s in one process, each with its own directory,
//! talking over real TCP on 127.0.0.1: election, writes on a follower
//! (forwarded), fencing of a stopped broker and unfencing on its return,
//! and a new leader after the leader stops.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use futures_lite::future::block_on;

use crate::{
    error::MetaError,
    group::{MetadataConfig, MetadataGroup},
    image::{BrokerInfo, NewTopic},
    peer_auth::ClusterSecret,
};

/// Session timeout of the test: short, so fencing shows within a second.
const SESSION_TIMEOUT_MS: u64 = 600;
const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Bound on every wait of the test.
const WAIT_MAX: Duration = Duration::from_secs(10);

/// Ports nobody listens on right now (bound to port 0, then released).
fn free_addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap())
        .collect()
}

fn config(node_id: u64, dir: &Path, addresses: &BTreeMap<u64, SocketAddr>) -> MetadataConfig {
    let peers = addresses.iter().map(|(id, addr)| (*id, addr.to_string())).collect();
    // As a real cluster runs: peers prove the cluster secret.
    let secret = ClusterSecret::new(vec![0x5a; 32]).unwrap();
    let mut config = MetadataConfig::new(node_id, dir.join("meta"))
        .with_peers(addresses[&node_id], peers)
        .with_cluster_secret(secret);
    config.broker_session_timeout_ms = SESSION_TIMEOUT_MS;
    config.broker_heartbeat_interval_ms = HEARTBEAT_INTERVAL_MS;
    config
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT_MAX, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The leader every group in `groups` agrees on.
fn agreed_leader(groups: &BTreeMap<u64, MetadataGroup>) -> u64 {
    let mut leader = None;
    wait_until("an agreed metadata leader", || {
        let leaders: Vec<Option<u64>> = groups.values().map(|group| group.status().leader).collect();
        leader = leaders.first().copied().flatten();
        leader.is_some_and(|id| groups.contains_key(&id)) && leaders.iter().all(|each| *each == leader)
    });
    leader.unwrap()
}

fn broker(node_id: u64) -> BrokerInfo {
    BrokerInfo {
        node_id: i32::try_from(node_id).unwrap(),
        host: "127.0.0.1".into(),
        port: 9000 + u16::try_from(node_id).unwrap(),
        shards: 2,
        fenced: false,
        shard_ports: Vec::new(),
        listeners: Vec::new(),
    }
}

fn topic(name: &str) -> NewTopic {
    NewTopic {
        name: name.into(),
        partitions: 3,
        replication_factor: 3,
        configs: BTreeMap::new(),
        assignments: Vec::new(),
    }
}

fn is_fenced(group: &MetadataGroup, node_id: u64) -> bool {
    let broker = i32::try_from(node_id).unwrap();
    group.image().brokers.get(&broker).is_some_and(|info| info.fenced)
}

#[test]
fn three_nodes_over_tcp_forward_fence_and_fail_over() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let addresses: BTreeMap<u64, SocketAddr> = (1..=3u64).zip(free_addresses(3)).collect();
    let configs: BTreeMap<u64, MetadataConfig> = (1..=3u64)
        .map(|id| {
            (
                id,
                config(id, dirs[usize::try_from(id - 1).unwrap()].path(), &addresses),
            )
        })
        .collect();

    // The three start at the same time, as a script would start them.
    let starting: Vec<_> = configs
        .values()
        .cloned()
        .map(|config| std::thread::spawn(move || (config.node_id, MetadataGroup::start(config))))
        .collect();
    let mut groups: BTreeMap<u64, MetadataGroup> = starting
        .into_iter()
        .map(|thread| {
            let (id, group) = thread.join().unwrap();
            (id, group.unwrap())
        })
        .collect();
    let leader = agreed_leader(&groups);
    let cluster_id = groups[&leader].image().cluster_id.clone();
    assert_eq!(cluster_id.len(), 22);
    for group in groups.values() {
        assert_eq!(group.image().cluster_id, cluster_id);
    }

    // Every broker registers through its own node: two of them forward.
    for (id, group) in &groups {
        block_on(group.register_broker(broker(*id))).unwrap();
        assert!(group.image().brokers.contains_key(&i32::try_from(*id).unwrap()));
    }

    // A follower creates a topic; it sees it as soon as the call returns,
    // the others shortly after.
    let follower = *groups.keys().find(|id| **id != leader).unwrap();
    let created = block_on(groups[&follower].create_topic(topic("orders"))).unwrap();
    assert_eq!(groups[&follower].image().topic("orders"), Some(&created));
    for group in groups.values() {
        wait_until("the topic everywhere", || group.image().topic("orders").is_some());
        assert_eq!(group.image().topic("orders"), Some(&created));
    }
    // Refusals come back as the same variant through the forward.
    let error = block_on(groups[&follower].create_topic(topic("orders"))).unwrap_err();
    assert!(matches!(error, MetaError::TopicExists(_)), "{error}");
    let partition = &created.partitions[0];
    let epochs = (
        shardline_replication::LeaderEpoch(partition.leader_epoch + 7),
        partition.partition_epoch,
    );
    let error = block_on(groups[&follower].alter_isr("orders", 0, epochs.0, epochs.1, vec![])).unwrap_err();
    assert!(matches!(error, MetaError::StaleLeaderEpoch { .. }), "{error}");
    let epochs = (
        shardline_replication::LeaderEpoch(partition.leader_epoch),
        partition.partition_epoch.next(),
    );
    let partition_leader = u64::try_from(partition.leader).unwrap();
    let error = block_on(groups[&partition_leader].alter_isr("orders", 0, epochs.0, epochs.1, vec![])).unwrap_err();
    assert!(matches!(error, MetaError::StalePartitionEpoch { .. }), "{error}");

    // A follower stops: the leader fences it within the session timeout
    // (plus a few heartbeat intervals), and its partitions move.
    let stopped = follower;
    let stopped_broker = i32::try_from(stopped).unwrap();
    block_on(groups.remove(&stopped).unwrap().shutdown()).unwrap();
    let waited = wait_until("the stopped broker fenced", || is_fenced(&groups[&leader], stopped));
    assert!(
        waited < Duration::from_millis(SESSION_TIMEOUT_MS + 2000),
        "fenced only after {waited:?}"
    );
    let image = groups[&leader].image();
    for (before, after) in created
        .partitions
        .iter()
        .zip(&image.topic("orders").unwrap().partitions)
    {
        assert_ne!(after.leader, stopped_broker);
        assert!(after.is_online());
        assert!(!after.isr.contains(&stopped_broker));
        if before.leader == stopped_broker {
            assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        } else {
            assert_eq!(after.leader_epoch, before.leader_epoch);
        }
    }

    // It restarts on the same directory and is unfenced by its heartbeats.
    let restarted = MetadataGroup::start(configs[&stopped].clone()).unwrap();
    assert_eq!(restarted.image().cluster_id, cluster_id);
    groups.insert(stopped, restarted);
    wait_until("the restarted broker unfenced", || {
        !is_fenced(&groups[&leader], stopped)
    });
    wait_until("the restart seen by the restarted node", || {
        !is_fenced(&groups[&stopped], stopped)
    });

    // The leader stops: the others elect a new one and take writes on
    // either survivor; the old leader gets fenced.
    block_on(groups.remove(&leader).unwrap().shutdown()).unwrap();
    let new_leader = agreed_leader(&groups);
    assert_ne!(new_leader, leader);
    // Two replicas: the survivors. The old leader may be fenced (600 ms
    // without heartbeats) before these land on a loaded machine, and a
    // fenced broker gets no new replicas.
    for (name, group) in ["after-a", "after-b"].into_iter().zip(groups.values()) {
        let mut two = topic(name);
        two.replication_factor = 2;
        let created = block_on(group.create_topic(two)).unwrap();
        assert_eq!(group.image().topic(name), Some(&created));
        assert!(created.partitions.iter().all(|p| p.replicas.len() == 2));
    }
    wait_until("the old leader fenced", || is_fenced(&groups[&new_leader], leader));
    for group in groups.values() {
        wait_until("both new topics everywhere", || {
            let image = group.image();
            image.topic("after-a").is_some() && image.topic("after-b").is_some()
        });
    }

    for group in groups.into_values() {
        block_on(group.shutdown()).unwrap();
    }
}

#[test]
fn configs_that_cannot_work_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = MetadataConfig::new(1, dir.path());
    config.peers = [(2, "127.0.0.1:1".to_owned())].into();
    config.raft_listen = Some("127.0.0.1:0".parse().unwrap());
    let error = MetadataGroup::start(config.clone()).unwrap_err();
    assert!(error.to_string().contains("include this node"), "{error}");
    config.peers.insert(1, "127.0.0.1:2".to_owned());
    config.raft_listen = None;
    let error = MetadataGroup::start(config.clone()).unwrap_err();
    assert!(error.to_string().contains("raft_listen"), "{error}");
    config.raft_listen = Some("127.0.0.1:0".parse().unwrap());
    config.broker_heartbeat_interval_ms = config.broker_session_timeout_ms;
    let error = MetadataGroup::start(config).unwrap_err();
    assert!(error.to_string().contains("broker_heartbeat_interval_ms"), "{error}");
}
