//! A cluster of real engine processes for integration tests: `NODES` nodes on
//! 127.0.0.1, each with its own Kafka port, Raft port, data directory and log
//! file under one temporary directory. Nodes can be killed with `kill -9` and
//! restarted on the same ports and data. Dropping the cluster kills every node;
//! if the test is failing, each node's log tail is printed and the directory
//! is kept.
//!
//! Questions about the cluster go over the Kafka protocol to one node at a
//! time (raw requests through kafka-protocol on a `std` `TcpStream`), so the
//! answer is that node's view of the metadata, not a client's cache.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test helpers: a panic is a test failure; not every test binary uses every helper"
)]

use super::{call, node_of};
use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        metadata_request::MetadataRequestTopic, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest,
        MetadataResponse, RequestHeader, ResponseHeader, TopicName,
    },
    protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes},
};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
};

/// Nodes in a test cluster: the smallest metadata group that survives losing one voter.
pub const NODES: i32 = 3;

/// Engine flags of the replicated-cluster tests (default liveness:
/// heartbeat 250 ms, session timeout 1.5 s; every partition on every node);
/// the harness adds node id, ports, peers and data dir.
pub const REPLICATED_FLAGS: &[&str] = &[
    "--shards",
    "1",
    "--replica-lag-time-max-ms",
    "3000",
    "--default-replication-factor",
    "3",
    "--fsync",
    "never",
];

/// How long a started node may take to accept Kafka connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed node's ports may keep accepting (see `wait_port_refused`).
const PORT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on connecting to a node that is up (127.0.0.1: a refusal is immediate).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on one raw request/response exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on one rdkafka metadata fetch.
const CLIENT_METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on any "until the cluster agrees" loop in this file.
const AGREE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Log lines printed per node when a test fails.
const LOG_TAIL_LINES: usize = 150;
/// Largest response the raw client accepts (metadata of a few test topics is far smaller).
const RESPONSE_BYTES_MAX: usize = 16 << 20;

/// Kafka error code NONE.
const ERROR_NONE: i16 = 0;

struct Node {
    /// Raft node id, which is also the Kafka broker id.
    node_id: i32,
    kafka_addr: SocketAddr,
    raft_addr: SocketAddr,
    /// `--http-listen` (unless the test passes its own).
    http_addr: SocketAddr,
    /// Named listeners besides `--listen`: name, protocol, shard 0's address.
    listeners: Vec<(String, String, SocketAddr)>,
    /// `--mqtt-listen`, with [`Cluster::start_with_mqtt`] (otherwise off).
    mqtt_addr: Option<SocketAddr>,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// How many times this node was started (marks each start in its log).
    starts: u32,
}

/// One partition as a node's Metadata answer describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: i32,
    pub error_code: i16,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

pub struct Cluster {
    nodes: Vec<Node>,
    /// Flags passed to every node after the cluster flags.
    extra: Vec<String>,
    /// `Some` until dropped; kept on disk when the test fails.
    tmp: Option<tempfile::TempDir>,
    /// With [`Cluster::start_on_network`]: the nodes' namespaces and links
    /// (dropped after the nodes are killed).
    network: Option<super::netns::Network>,
}

/// 127.0.0.1 ports picked for one cluster: each is held (bound) until the
/// picker is dropped, just before the nodes start, so no two picks collide
/// (a port released at once could be handed out again to the next pick).
#[derive(Default)]
struct Ports {
    held: Vec<TcpListener>,
}

impl Ports {
    /// Tries for a run of free ports at most this often.
    const TRIES_MAX: usize = 100;

    /// The first of `count` consecutive free ports, now held.
    fn run(&mut self, count: usize) -> u16 {
        for _ in 0..Ports::TRIES_MAX {
            let first = super::free_port_run(count);
            let run: Option<Vec<TcpListener>> = (0..count)
                .map(|k| TcpListener::bind(("127.0.0.1", first + u16::try_from(k).unwrap())).ok())
                .collect();
            if let Some(run) = run {
                self.held.extend(run);
                return first;
            }
        }
        panic!("no run of {count} free ports in {} tries", Ports::TRIES_MAX);
    }

    /// Per node: a run of `shards` Kafka ports, a Raft port, an HTTP port.
    fn nodes(&mut self, nodes: usize, shards: usize) -> Vec<(u16, u16, u16)> {
        (0..nodes)
            .map(|_| (self.run(shards), self.run(1), self.run(1)))
            .collect()
    }
}

impl Cluster {
    /// Starts `NODES` nodes with fresh data directories and `extra` flags for
    /// each, and waits until every one accepts Kafka connections (not until
    /// the cluster is formed: see `wait_ready`).
    pub fn start(extra: &[&str]) -> Cluster {
        Cluster::start_with_listeners(&[], extra)
    }

    /// [`Cluster::start`] with named listeners on every node besides the
    /// PLAINTEXT `--listen` one: `(NAME, PROTOCOL)`, each on 127.0.0.1 ports
    /// of its own (see [`Cluster::listener_addr`]).
    pub fn start_with_listeners(listeners: &[(&str, &str)], extra: &[&str]) -> Cluster {
        Cluster::start_local(listeners, extra, false)
    }

    /// [`Cluster::start`] with an MQTT listener on every node, each on a
    /// 127.0.0.1 port of its own (see [`Cluster::mqtt_addr`]).
    pub fn start_with_mqtt(extra: &[&str]) -> Cluster {
        Cluster::start_local(&[], extra, true)
    }

    fn start_local(listeners: &[(&str, &str)], extra: &[&str], mqtt: bool) -> Cluster {
        let tmp = tempfile::Builder::new().prefix("shardline-cluster-").tempdir().unwrap();
        let node_count = usize::try_from(NODES).unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let shards = super::shard_count(&extra);
        let mut picker = Ports::default();
        let ports = picker.nodes(node_count, shards);
        let nodes: Vec<Node> = (1..=NODES)
            .zip(ports)
            .map(|(node_id, (kafka, raft, http))| Node {
                node_id,
                kafka_addr: SocketAddr::from(([127, 0, 0, 1], kafka)),
                raft_addr: SocketAddr::from(([127, 0, 0, 1], raft)),
                http_addr: SocketAddr::from(([127, 0, 0, 1], http)),
                listeners: listeners
                    .iter()
                    .map(|(name, protocol)| {
                        let port = picker.run(shards);
                        (
                            name.to_string(),
                            protocol.to_string(),
                            SocketAddr::from(([127, 0, 0, 1], port)),
                        )
                    })
                    .collect(),
                mqtt_addr: mqtt.then(|| SocketAddr::from(([127, 0, 0, 1], picker.run(1)))),
                data_dir: tmp.path().join(format!("node-{node_id}")),
                log_path: tmp.path().join(format!("node-{node_id}.log")),
                child: None,
                starts: 0,
            })
            .collect();
        drop(picker);
        Cluster::launch(nodes, extra, tmp, None)
    }

    /// Starts `NODES` nodes as [`Cluster::start`] does, each in a network
    /// namespace of its own (`netns.rs`), reachable from the test at
    /// 10.78.K.N and from each other over a link per pair that the test can
    /// cut ([`Cluster::isolate_from_peers`]). Their raft peers prove a
    /// cluster secret; `--allow-insecure` lets them listen off loopback.
    pub fn start_on_network(extra: &[&str]) -> Cluster {
        let tmp = tempfile::Builder::new().prefix("shardline-cluster-").tempdir().unwrap();
        let network = super::netns::Network::create(&(1..=NODES).collect::<Vec<_>>());
        let secret = tmp.path().join("raft-secret");
        std::fs::write(
            &secret,
            "9c0d6e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d\n",
        )
        .unwrap();
        let mut flags: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        flags.extend(["--allow-insecure".to_string(), "--raft-secret-file".to_string()]);
        flags.push(secret.display().to_string());
        let nodes: Vec<Node> = (1..=NODES)
            .map(|node_id| {
                let ip = network.address(node_id);
                Node {
                    node_id,
                    kafka_addr: SocketAddr::new(ip, 9092),
                    raft_addr: SocketAddr::new(ip, 19092),
                    http_addr: SocketAddr::new(ip, 9644),
                    listeners: Vec::new(),
                    mqtt_addr: None,
                    data_dir: tmp.path().join(format!("node-{node_id}")),
                    log_path: tmp.path().join(format!("node-{node_id}.log")),
                    child: None,
                    starts: 0,
                }
            })
            .collect();
        Cluster::launch(nodes, flags, tmp, Some(network))
    }

    fn launch(
        nodes: Vec<Node>,
        extra: Vec<String>,
        tmp: tempfile::TempDir,
        network: Option<super::netns::Network>,
    ) -> Cluster {
        let mut cluster = Cluster {
            nodes,
            extra,
            tmp: Some(tmp),
            network,
        };
        // Every process first: a node may not open its Kafka port before the
        // metadata group has a leader, which needs a majority of voters up.
        for node_id in 1..=NODES {
            cluster.spawn(node_id);
        }
        for node_id in 1..=NODES {
            cluster.wait_accepting(node_id);
        }
        cluster
    }

    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.node_id).collect()
    }

    /// All Kafka addresses, comma-separated, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.kafka_addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn kafka_addr(&self, node_id: i32) -> SocketAddr {
        self.node(node_id).kafka_addr
    }

    /// Node `node_id`'s MQTT listener (started with [`Cluster::start_with_mqtt`]).
    pub fn mqtt_addr(&self, node_id: i32) -> SocketAddr {
        self.node(node_id)
            .mqtt_addr
            .expect("the cluster was started with MQTT listeners")
    }

    pub fn raft_addr(&self, node_id: i32) -> SocketAddr {
        self.node(node_id).raft_addr
    }

    /// Shard 0's address of the node's listener `name` (from
    /// [`Cluster::start_with_listeners`]).
    pub fn listener_addr(&self, node_id: i32, name: &str) -> SocketAddr {
        self.node(node_id)
            .listeners
            .iter()
            .find(|(listener, _, _)| listener == name)
            .map(|(_, _, addr)| *addr)
            .unwrap_or_else(|| panic!("node {node_id} has no listener {name}"))
    }

    /// Every node's listener `name`, comma-separated, for `bootstrap.servers`.
    pub fn listener_bootstrap(&self, name: &str) -> String {
        self.node_ids()
            .into_iter()
            .map(|node_id| self.listener_addr(node_id, name).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes' namespaces and links, for faults finer than
    /// [`Cluster::isolate_from_peers`]. Only for [`Cluster::start_on_network`].
    pub fn network(&self) -> &super::netns::Network {
        self.network.as_ref().expect("a cluster started on a network")
    }

    /// Cuts (`true`) or restores node `node_id`'s links to the other nodes;
    /// clients still reach it. Only for [`Cluster::start_on_network`].
    pub fn isolate_from_peers(&self, node_id: i32, isolated: bool) {
        self.network
            .as_ref()
            .expect("a cluster started on a network")
            .isolate_from_peers(node_id, isolated);
    }

    /// `GET path` on the node's HTTP endpoint (`/metrics`, `/health`,
    /// `/ready`).
    pub fn http_get(&self, node_id: i32, path: &str) -> super::HttpResponse {
        let addr = self.node(node_id).http_addr;
        super::http_request(addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
    }

    /// Creates `topic` with `partitions` partitions on every node
    /// (replication factor `NODES`) and `configs`, through librdkafka's
    /// admin client; panics if any node refuses.
    pub fn create_topic(&self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        self.create(
            NewTopic::new(topic, partitions, TopicReplication::Fixed(NODES)),
            configs,
        );
    }

    /// Creates `topic` with the replicas of partition i given by
    /// `assignment[i]` (its first replica is the preferred leader).
    pub fn create_topic_assigned(&self, topic: &str, assignment: &[Vec<i32>], configs: &[(&str, &str)]) {
        let partitions = i32::try_from(assignment.len()).unwrap();
        let replicas: Vec<&[i32]> = assignment.iter().map(Vec::as_slice).collect();
        self.create(
            NewTopic::new(topic, partitions, TopicReplication::Variable(&replicas)),
            configs,
        );
    }

    /// Creates `new` with `configs` through librdkafka's admin client;
    /// panics if any node refuses.
    fn create<'a>(&self, mut new: NewTopic<'a>, configs: &[(&'a str, &'a str)]) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        for (key, value) in configs {
            new = new.set(key, value);
        }
        let options = AdminOptions::new()
            .request_timeout(Some(AGREE_TIMEOUT))
            .operation_timeout(Some(AGREE_TIMEOUT));
        let results = futures_executor::block_on(admin.create_topics([&new], &options)).unwrap();
        for result in results {
            result.unwrap();
        }
    }

    /// `--peers`: every voter as `id@raft_addr`.
    fn peers(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}@{}", n.node_id, n.raft_addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node(&self, node_id: i32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.node_id == node_id)
            .unwrap_or_else(|| panic!("no node {node_id} in a cluster of {NODES}"))
    }

    fn node_mut(&mut self, node_id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.node_id == node_id)
            .unwrap_or_else(|| panic!("no node {node_id} in a cluster of {NODES}"))
    }

    fn spawn(&mut self, node_id: i32) {
        let peers = self.peers();
        let extra = self.extra.clone();
        let node = self.node_mut(node_id);
        assert!(node.child.is_none(), "node {node_id} is already running");
        std::fs::create_dir_all(node.data_dir.parent().unwrap()).unwrap();
        node.starts += 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .unwrap();
        writeln!(log, "==== test harness: start #{} of node {node_id} ====", node.starts).unwrap();
        let mut args = vec![
            "--node-id".to_string(),
            node_id.to_string(),
            "--listen".to_string(),
            node.kafka_addr.to_string(),
            "--raft-listen".to_string(),
            node.raft_addr.to_string(),
            "--peers".to_string(),
            peers,
            "--data-dir".to_string(),
            node.data_dir.display().to_string(),
        ];
        for (name, protocol, addr) in &node.listeners {
            args.extend(["--listener".to_string(), format!("{name}={protocol}://{addr}")]);
        }
        if !extra.iter().any(|arg| arg == "--http-listen") {
            // Three nodes on one machine: not the default port.
            args.extend(["--http-listen".to_string(), node.http_addr.to_string()]);
        }
        if !extra.iter().any(|arg| arg == "--mqtt-listen") {
            // Nor the default MQTT port.
            let mqtt = node
                .mqtt_addr
                .map_or_else(|| "off".to_string(), |addr| addr.to_string());
            args.extend(["--mqtt-listen".to_string(), mqtt]);
        }
        args.extend(extra);
        let namespace = self.network.as_ref().map(|network| network.namespace(node_id));
        let node = self.node_mut(node_id);
        let mut command = match namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &namespace, env!("CARGO_BIN_EXE_engine")]);
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_engine")),
        };
        let child = command
            .args(&args)
            .env(
                "RUST_LOG",
                "info,shardline_engine=debug,shardline_raft=debug,openraft=warn",
            )
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("engine binary");
        node.child = Some(child);
    }

    /// Waits (bounded) until the node accepts connections on its Kafka port.
    fn wait_accepting(&mut self, node_id: i32) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let addr = self.node(node_id).kafka_addr;
            if TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok() {
                return;
            }
            if let Some(status) = self.exit_status(node_id) {
                panic!(
                    "node {node_id} exited during start ({status}):\n{}",
                    self.log_tail(node_id)
                );
            }
            assert!(
                Instant::now() < deadline,
                "node {node_id} did not accept on {addr} within {START_TIMEOUT:?}:\n{}",
                self.log_tail(node_id)
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// `kill -9` of one node: no shutdown, no flush. Returns the instant the
    /// signal was delivered (before waiting for the ports to close).
    pub fn kill9(&mut self, node_id: i32) -> Instant {
        let node = self.node_mut(node_id);
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("kill9: node {node_id} is not running"));
        child.kill().unwrap();
        let killed_at = Instant::now();
        let _ = child.wait();
        let (kafka_addr, raft_addr, http_addr) = (node.kafka_addr, node.raft_addr, node.http_addr);
        for k in 0..super::shard_count(&self.extra) {
            wait_port_refused(SocketAddr::new(
                kafka_addr.ip(),
                kafka_addr.port() + u16::try_from(k).unwrap(),
            ));
        }
        wait_port_refused(raft_addr);
        wait_port_refused(http_addr);
        killed_at
    }

    /// Starts a stopped node again on the same ports and data directory and
    /// waits until it accepts Kafka connections (not until it rejoined: see
    /// `wait_ready`). A running node is killed first.
    pub fn restart(&mut self, node_id: i32) {
        if self.is_running(node_id) {
            self.kill9(node_id);
        }
        self.node_mut(node_id).child = None;
        self.spawn(node_id);
        self.wait_accepting(node_id);
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) a running node: a node that is
    /// alive but silent, as a long pause or a partition looks to the others.
    pub fn pause(&mut self, node_id: i32, paused: bool) {
        let pid = self
            .node_mut(node_id)
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("pause: node {node_id} is not running"))
            .id();
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// A node's data directory.
    pub fn data_dir(&self, node_id: i32) -> PathBuf {
        self.node(node_id).data_dir.clone()
    }

    pub fn is_running(&mut self, node_id: i32) -> bool {
        self.node_mut(node_id)
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Exit status if the node's process has exited on its own.
    pub fn exit_status(&mut self, node_id: i32) -> Option<std::process::ExitStatus> {
        self.node_mut(node_id)
            .child
            .as_mut()
            .and_then(|c| c.try_wait().unwrap())
    }

    /// Nodes whose process is running.
    pub fn running(&mut self) -> Vec<i32> {
        self.node_ids().into_iter().filter(|&id| self.is_running(id)).collect()
    }

    /// Waits (bounded by `timeout`) until every running node answers a
    /// Metadata request that lists every node of the cluster as a broker.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let all: BTreeSet<i32> = self.node_ids().into_iter().collect();
        loop {
            let mut views = Vec::new();
            let running = self.running();
            for &node_id in &running {
                views.push((node_id, self.brokers_seen_by(node_id)));
            }
            let ready = running.len() == all.len()
                && views
                    .iter()
                    .all(|(_, seen)| seen.as_ref().is_ok_and(|brokers| *brokers == all));
            if ready {
                return;
            }
            self.assert_none_exited();
            assert!(
                Instant::now() < deadline,
                "cluster not ready within {timeout:?}: running {running:?}, brokers seen (node, answer): {views:?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Fails the test if a node the harness did not kill has exited.
    pub fn assert_none_exited(&mut self) {
        for node_id in self.node_ids() {
            if let Some(status) = self.exit_status(node_id) {
                panic!(
                    "node {node_id} exited on its own ({status}):\n{}",
                    self.log_tail(node_id)
                );
            }
        }
    }

    /// Nodes in one node's Metadata answer (each node's shards are brokers
    /// of their own there; see `node_of`).
    pub fn brokers_seen_by(&self, node_id: i32) -> std::io::Result<BTreeSet<i32>> {
        let no_topics: &[&str] = &[];
        let response = self.metadata(node_id, Some(no_topics))?;
        Ok(response.brokers.iter().map(|b| node_of(b.node_id.0)).collect())
    }

    /// One node's Metadata answer (v7: partitions carry their leader epoch;
    /// never auto-creates): `topics` `None` asks for every topic.
    pub fn metadata(&self, node_id: i32, topics: Option<&[&str]>) -> std::io::Result<MetadataResponse> {
        const METADATA_VERSION: i16 = 7;
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|name| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
                    })
                    .collect()
            }));
        call(self.node(node_id).kafka_addr, METADATA_VERSION, &request)
    }

    /// The coordinator node one node names for consumer group `group`
    /// (FindCoordinator v3; -1 with its error code when it names none).
    pub fn group_coordinator_seen_by(&self, node_id: i32, group: &str) -> std::io::Result<(i32, i16)> {
        const FIND_COORDINATOR_VERSION: i16 = 3;
        let request = kafka_protocol::messages::FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        let response = call(self.node(node_id).kafka_addr, FIND_COORDINATOR_VERSION, &request)?;
        Ok((response.node_id.0, response.error_code))
    }

    /// One node's view of a topic's partitions, in partition order.
    pub fn partitions_seen_by(&self, node_id: i32, topic: &str) -> std::io::Result<Vec<PartitionView>> {
        let response = self.metadata(node_id, Some(&[topic]))?;
        let found = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            .ok_or_else(|| std::io::Error::other(format!("topic {topic} missing from node {node_id}'s metadata")))?;
        if found.error_code != ERROR_NONE {
            return Err(std::io::Error::other(format!(
                "topic {topic}: error {} from node {node_id}",
                found.error_code
            )));
        }
        let mut partitions: Vec<PartitionView> = found
            .partitions
            .iter()
            .map(|p| PartitionView {
                partition: p.partition_index,
                error_code: p.error_code,
                leader: node_of(p.leader_id.0),
                leader_epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|b| node_of(b.0)).collect(),
                isr: p.isr_nodes.iter().map(|b| node_of(b.0)).collect(),
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Ok(partitions)
    }

    /// Waits (bounded by `timeout`) until every running node reports, for each
    /// of `partitions` partitions of `topic`, a leader among the running nodes
    /// and an ISR holding every node of the cluster: every replica caught up.
    pub fn wait_full_isr(&mut self, topic: &str, partitions: i32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let all: BTreeSet<i32> = self.node_ids().into_iter().collect();
        loop {
            let running = self.running();
            let mut views = Vec::new();
            for &node_id in &running {
                views.push((node_id, self.partitions_seen_by(node_id, topic)));
            }
            let complete = running.len() == all.len()
                && views.iter().all(|(_, view)| {
                    view.as_ref().is_ok_and(|ps| {
                        ps.len() == usize::try_from(partitions).unwrap()
                            && ps.iter().all(|p| {
                                p.error_code == ERROR_NONE
                                    && running.contains(&p.leader)
                                    && p.isr.iter().copied().collect::<BTreeSet<i32>>() == all
                            })
                    })
                });
            if complete {
                return;
            }
            self.assert_none_exited();
            assert!(
                Instant::now() < deadline,
                "{topic}: ISR not complete on every node within {timeout:?}: running {running:?}, views {views:#?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The metadata (Raft) group's leader: the `controller_id` of DescribeCluster
    /// once every running node (at least a majority) gives the same running
    /// node. Bounded: panics after `AGREE_TIMEOUT`.
    pub fn metadata_leader(&mut self) -> i32 {
        let deadline = Instant::now() + AGREE_TIMEOUT;
        let majority = usize::try_from(NODES / 2 + 1).unwrap();
        loop {
            let running = self.running();
            let answers: Vec<(i32, std::io::Result<i32>)> = running
                .iter()
                .map(|&node_id| (node_id, self.controller_seen_by(node_id)))
                .collect();
            let ids: BTreeSet<i32> = answers.iter().filter_map(|(_, a)| a.as_ref().ok().copied()).collect();
            let all_answered = answers.iter().all(|(_, a)| a.is_ok());
            if all_answered && answers.len() >= majority && ids.len() == 1 {
                let leader = *ids.first().unwrap();
                if running.contains(&leader) {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed metadata leader within {AGREE_TIMEOUT:?}: running {running:?}, answers {answers:?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// `controller_id` in one node's DescribeCluster (v0) answer.
    pub fn controller_seen_by(&self, node_id: i32) -> std::io::Result<i32> {
        let response: DescribeClusterResponse =
            call(self.node(node_id).kafka_addr, 0, &DescribeClusterRequest::default())?;
        if response.error_code != ERROR_NONE {
            return Err(std::io::Error::other(format!(
                "DescribeCluster error {} from node {node_id}",
                response.error_code
            )));
        }
        Ok(response.controller_id.0)
    }

    /// Leader of every partition of `topic` as a client sees it (rdkafka
    /// metadata through any live node), once each is a running node.
    /// Bounded: panics after `AGREE_TIMEOUT`.
    pub fn partition_leaders(&mut self, topic: &str) -> Vec<i32> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let deadline = Instant::now() + AGREE_TIMEOUT;
        loop {
            let running = self.running();
            let leaders = consumer
                .fetch_metadata(Some(topic), CLIENT_METADATA_TIMEOUT)
                .map_err(|e| e.to_string())
                .and_then(|metadata| {
                    let found = metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == topic)
                        .ok_or_else(|| format!("{topic} missing"))?;
                    if let Some(error) = found.error() {
                        return Err(format!("{topic}: {error:?}"));
                    }
                    let mut partitions: Vec<(i32, i32)> = found
                        .partitions()
                        .iter()
                        .map(|p| (p.id(), node_of(p.leader())))
                        .collect();
                    partitions.sort_unstable();
                    Ok(partitions.into_iter().map(|(_, leader)| leader).collect::<Vec<i32>>())
                });
            match &leaders {
                Ok(leaders) if !leaders.is_empty() && leaders.iter().all(|l| running.contains(l)) => {
                    return leaders.clone();
                }
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "{topic}: no live leader for every partition within {AGREE_TIMEOUT:?}: running {running:?}, last {leaders:?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Leader of one partition (see `partition_leaders`).
    pub fn partition_leader(&mut self, topic: &str, partition: i32) -> i32 {
        let leaders = self.partition_leaders(topic);
        *leaders
            .get(usize::try_from(partition).unwrap())
            .unwrap_or_else(|| panic!("{topic} has {} partitions, not {partition}", leaders.len()))
    }

    /// A node's whole log (of its current and earlier runs).
    pub fn log(&self, node_id: i32) -> String {
        std::fs::read_to_string(&self.node(node_id).log_path).unwrap_or_default()
    }

    /// The last `LOG_TAIL_LINES` lines of a node's log.
    pub fn log_tail(&self, node_id: i32) -> String {
        let log = std::fs::read_to_string(&self.node(node_id).log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        for node_id in self.node_ids() {
            let status = self.exit_status(node_id);
            if let Some(mut child) = self.node_mut(node_id).child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if failing {
                eprintln!(
                    "---- node {node_id} log tail (exited on its own: {status:?}) ----\n{}",
                    self.log_tail(node_id)
                );
            }
        }
        if failing {
            if let Some(tmp) = self.tmp.take() {
                eprintln!("---- cluster data and full logs kept in {}", tmp.keep().display());
            }
        }
    }
}

/// The kernel tears down a killed process's io_uring asynchronously, and
/// until then its listeners still take (and then reset) connections. Wait
/// (bounded) until the port refuses, so a restart can bind it.
fn wait_port_refused(addr: SocketAddr) {
    let deadline = Instant::now() + PORT_CLOSE_TIMEOUT;
    while Instant::now() < deadline {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
