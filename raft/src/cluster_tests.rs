//! A three-voter group (plus a late learner) over an in-memory transport:
//! proves that the storage, the state machine and the RPC codec work with
//! more than one node, including log replication, leader forwarding errors
//! and snapshot installation on a node that joins after the log was purged.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::watch;

use crate::{
    command::Command,
    error::MetaError,
    group::{open_raft, propose},
    image::{BrokerInfo, MetadataImage, NewTopic},
    network::{serve_rpc, BoxFuture, RaftTransport, TransportError},
    types::{Node, NodeId, Raft},
};

/// Delivers request bytes straight to the target's `serve_rpc`.
#[derive(Default)]
struct Loopback {
    nodes: Mutex<BTreeMap<NodeId, Raft>>,
}

impl Loopback {
    fn add(&self, node_id: NodeId, raft: Raft) {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node_id, raft);
    }
}

impl RaftTransport for Loopback {
    fn call<'a>(
        &'a self,
        target: NodeId,
        _node: &'a Node,
        request: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, TransportError>> {
        let raft = self
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&target)
            .cloned();
        Box::pin(async move {
            match raft {
                Some(raft) => Ok(serve_rpc(&raft, None, None, &request).await),
                None => Err(TransportError::Unreachable(format!("node {target} is not running"))),
            }
        })
    }
}

struct TestNode {
    raft: Raft,
    images: watch::Receiver<Arc<MetadataImage>>,
}

async fn start_node(node_id: NodeId, dir: &Path, transport: &Arc<Loopback>) -> TestNode {
    let (publisher, images) = watch::channel(Arc::new(MetadataImage::empty()));
    let shared: Arc<dyn RaftTransport> = Arc::clone(transport) as Arc<dyn RaftTransport>;
    let raft = open_raft(node_id, dir, 3, shared, Arc::new(publisher)).await.unwrap();
    transport.add(node_id, raft.clone());
    TestNode { raft, images }
}

async fn wait_applied(node: &TestNode, index: u64) {
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(index), "caught up")
        .await
        .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn three_voters_replicate_and_a_late_learner_installs_a_snapshot() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let transport = Arc::new(Loopback::default());
    let mut nodes = BTreeMap::new();
    for node_id in 1..=3u64 {
        let dir = dirs[usize::try_from(node_id - 1).unwrap()].path();
        nodes.insert(node_id, start_node(node_id, dir, &transport).await);
    }
    let members: BTreeMap<NodeId, Node> = (1..=3).map(|id| (id, Node::new(format!("node-{id}")))).collect();
    nodes[&1].raft.initialize(members).await.unwrap();
    let metrics = nodes[&1]
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader.is_some(), "leader")
        .await
        .unwrap();
    let leader_id = metrics.current_leader.unwrap();
    let leader = &nodes[&leader_id].raft;

    for node_id in 1..=3 {
        let broker = BrokerInfo {
            node_id,
            host: format!("broker-{node_id}"),
            port: 9092,
            shards: 2,
            fenced: false,
            shard_ports: Vec::new(),
            listeners: Vec::new(),
        };
        propose(leader, Command::RegisterBroker(broker)).await.unwrap();
    }
    for n in 0..6u8 {
        let topic = NewTopic {
            name: format!("t{n}"),
            partitions: 3,
            replication_factor: 3,
            configs: BTreeMap::new(),
            assignments: Vec::new(),
        };
        propose(leader, Command::CreateTopic { topic, id: [n + 1; 16] })
            .await
            .unwrap();
    }

    // A follower refuses writes and names the leader.
    let follower_id = (1..=3).find(|id| *id != leader_id).unwrap();
    let error = propose(&nodes[&follower_id].raft, Command::DeleteTopic { name: "t0".into() })
        .await
        .unwrap_err();
    assert!(
        matches!(error, MetaError::NotLeader { leader: Some(id) } if id == leader_id),
        "{error}"
    );

    let applied = leader.metrics().borrow().last_applied.unwrap().index;
    for node in nodes.values() {
        wait_applied(node, applied).await;
    }
    let expected = nodes[&leader_id].images.borrow().clone();
    assert_eq!(expected.topics.len(), 6);
    let leaders: Vec<i32> = expected.topics["t0"].partitions.iter().map(|p| p.leader).collect();
    assert_eq!(leaders, vec![1, 2, 3]);
    for node in nodes.values() {
        assert_eq!(*node.images.borrow().clone(), *expected);
    }
    // Snapshots were taken and the log purged (every 3 entries).
    assert!(leader.metrics().borrow().purged.is_some());

    // A learner that joins now cannot replay the log from 0: it gets a
    // snapshot through InstallSnapshot, encoded and decoded like any RPC.
    let learner = start_node(4, dirs[3].path(), &transport).await;
    leader.add_learner(4, Node::new("node-4"), true).await.unwrap();
    wait_applied(&learner, applied).await;
    assert!(learner.raft.metrics().borrow().snapshot.is_some());
    let learned = learner.images.borrow().clone();
    assert_eq!(learned.topics, expected.topics);
    assert_eq!(learned.brokers, expected.brokers);

    learner.raft.shutdown().await.unwrap();
    for node in nodes.values() {
        node.raft.shutdown().await.unwrap();
    }
}
