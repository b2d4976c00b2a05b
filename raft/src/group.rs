//! [`MetadataGroup`]: the front type, and the raft thread behind it.
//!
//! ```text
//!  shard threads (glommio)            raft thread "shardline-meta" (tokio current_thread)
//!  ───────────────────────            ─────────────────────────────────────────────────
//!  group.create_topic(..) ──Request──► request loop ──spawn──► propose_anywhere(cmd)
//!        ▲  (bounded mpsc)                                        │ leader: raft.client_write(cmd)
//!        │                                                        │ follower: Forward over TCP
//!        └──────────── oneshot reply ◄────────────────────────────┤ state_machine: apply
//!  group.image() / subscribe() ◄──── watch<Arc<MetadataImage>> ◄──┘ (publish per applied batch)
//!
//!  also on the raft thread, with peers: the TCP listener (tcp.rs) and the
//!  liveness task (heartbeats; on the leader, fencing: liveness.rs)
//! ```
//! Everything openraft owns (its core task, the log store, the state
//! machine) lives on the raft thread; callers only hold channel ends, so the
//! async methods are plain futures over tokio channels and can be awaited on
//! any executor. Dropping every handle without `shutdown` closes the request
//! channel, which stops the group in the background.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{mpsc as std_mpsc, Arc, Mutex, PoisonError},
    thread::JoinHandle,
    time::Duration,
};

use openraft::error::{Fatal, InitializeError, RaftError};
use shardline_replication::LeaderEpoch;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    command::{Command, IsrChange},
    error::MetaError,
    files::{create_dir_durably, read_if_exists, write_atomically},
    forward::{propose_anywhere, propose_with_index, PeerSet},
    image::{BrokerInfo, MetadataImage, NewTopic, PartitionEpoch, TopicMeta},
    liveness::{Liveness, LivenessTask, QuorumContact},
    log_store::LogStore,
    network::{NetworkFactory, NoPeers, RaftTransport},
    peer_auth::{ClusterSecret, PeerAuth},
    snapshot::SnapshotStore,
    state_machine::StateMachine,
    tcp::{self, TcpTransport},
    types::{Node, NodeId, Raft},
};

/// Default for [`MetadataConfig::snapshot_every_entries`].
pub const DEFAULT_SNAPSHOT_EVERY_ENTRIES: u64 = 1000;

/// How long [`MetadataGroup::start`] of a single node waits for a leader and
/// for the state machine to catch up. A single voter elects itself at once
/// (or within one election timeout, 0.3–0.6 s); 10 s leaves room for a slow
/// disk replaying a log of `snapshot_every_entries` entries.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`MetadataGroup::start`] of a node with peers waits for a leader
/// and the cluster id. The voters are started by people and scripts, not
/// all at once: a quorum must be up before anyone has a leader, and a
/// restarted node must reach the running group.
pub const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Default for [`MetadataConfig::broker_session_timeout_ms`]: six missed
/// heartbeats. Kafka's `broker.session.timeout.ms` is 9 s; this is short so
/// a dead partition leader is replaced within about 2 s (docs/cluster.md,
/// Numbers, has the failover and the no-false-fencing runs behind it).
pub const DEFAULT_BROKER_SESSION_TIMEOUT_MS: u64 = 1500;

/// Default for [`MetadataConfig::broker_heartbeat_interval_ms`].
pub const DEFAULT_BROKER_HEARTBEAT_INTERVAL_MS: u64 = 250;

/// Requests queued to the raft thread. Metadata writes are rare admin
/// operations; the bound turns a runaway admin client into backpressure
/// instead of memory.
pub const REQUEST_QUEUE_CAPACITY: usize = 1024;

/// Raft heartbeat interval. Elections time out between 3 and 6 heartbeats.
const HEARTBEAT_INTERVAL_MS: u64 = 100;
const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
const ELECTION_TIMEOUT_MAX_MS: u64 = 600;

/// File holding the node id that created the directory.
const NODE_ID_FILE_NAME: &str = "node-id";

/// Where and as whom the metadata group runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataConfig {
    /// This node's Raft id (the broker id; 1 on a single node).
    pub node_id: u64,
    /// Directory of the Raft log, vote and snapshot (e.g. `data/meta`).
    pub data_dir: PathBuf,
    /// Build a snapshot every this many applied entries (≥ 1) and let
    /// openraft purge the log before it, keeping this many entries.
    pub snapshot_every_entries: u64,
    /// Where this node's raft TCP listener binds. `None`: a single node
    /// (no listener, no peers).
    pub raft_listen: Option<SocketAddr>,
    /// Every voter's node id → raft address `host:port`, this node
    /// included. Empty: a single node. All nodes of a group must be given
    /// the same map.
    pub peers: BTreeMap<u64, String>,
    /// A broker not heard from for this long is fenced by the metadata
    /// leader (with peers only).
    pub broker_session_timeout_ms: u64,
    /// How often a node tells the metadata leader it is alive (with peers
    /// only); must be below the session timeout.
    pub broker_heartbeat_interval_ms: u64,
    /// The secret every member holds; peers prove it on every raft
    /// connection and frame (`peer_auth.rs`). `None`: peers are checked
    /// against the member list only.
    pub cluster_secret: Option<ClusterSecret>,
}

impl MetadataConfig {
    /// A single-node config with the default snapshot interval.
    pub fn new(node_id: u64, data_dir: impl Into<PathBuf>) -> Self {
        MetadataConfig {
            node_id,
            data_dir: data_dir.into(),
            snapshot_every_entries: DEFAULT_SNAPSHOT_EVERY_ENTRIES,
            raft_listen: None,
            peers: BTreeMap::new(),
            broker_session_timeout_ms: DEFAULT_BROKER_SESSION_TIMEOUT_MS,
            broker_heartbeat_interval_ms: DEFAULT_BROKER_HEARTBEAT_INTERVAL_MS,
            cluster_secret: None,
        }
    }

    /// The same config as a member of the group `peers` (node id → raft
    /// address, this node included), listening on `raft_listen`.
    pub fn with_peers(mut self, raft_listen: SocketAddr, peers: BTreeMap<u64, String>) -> Self {
        self.raft_listen = Some(raft_listen);
        self.peers = peers;
        self
    }

    /// The same config with peers authenticated by `secret`.
    pub fn with_cluster_secret(mut self, secret: ClusterSecret) -> Self {
        self.cluster_secret = Some(secret);
        self
    }

    /// Whether this node is one of several voters.
    pub fn has_peers(&self) -> bool {
        !self.peers.is_empty()
    }

    fn start_timeout(&self) -> Duration {
        if self.has_peers() {
            CLUSTER_START_TIMEOUT
        } else {
            START_TIMEOUT
        }
    }

    /// Refuses configs that cannot work, naming the fix.
    fn validate(&self) -> Result<(), MetaError> {
        let invalid = |reason: String| Err(MetaError::Raft(format!("invalid metadata config: {reason}")));
        if self.snapshot_every_entries == 0 {
            return invalid("snapshot_every_entries must be at least 1".to_owned());
        }
        if !self.has_peers() {
            return Ok(());
        }
        if !self.peers.contains_key(&self.node_id) {
            return invalid(format!(
                "the peers must include this node ({}) with its own raft address",
                self.node_id
            ));
        }
        if self.raft_listen.is_none() {
            return invalid("a node with peers needs raft_listen (the address its raft listener binds)".to_owned());
        }
        if i32::try_from(self.node_id).is_err() {
            return invalid(format!(
                "node id {} is not a broker id (at most {})",
                self.node_id,
                i32::MAX
            ));
        }
        if self.broker_heartbeat_interval_ms == 0 || self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms
        {
            return invalid(format!(
                "broker_heartbeat_interval_ms ({}) must be at least 1 and below broker_session_timeout_ms ({})",
                self.broker_heartbeat_interval_ms, self.broker_session_timeout_ms
            ));
        }
        Ok(())
    }
}

/// A point-in-time view of the Raft side, for logs, the admin CLI and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataStatus {
    /// This node's Raft id.
    pub node_id: u64,
    /// Current Raft term (durable: never goes backwards across restarts).
    pub term: u64,
    /// Current leader, if known.
    pub leader: Option<u64>,
    /// Index of the last entry in the local log.
    pub last_log_index: Option<u64>,
    /// Index of the last entry applied to the state machine (= image epoch).
    pub last_applied_index: Option<u64>,
    /// Last index covered by the latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Last index purged from the log.
    pub purged_index: Option<u64>,
}

/// What callers send to the raft thread.
enum Request {
    Propose {
        command: Command,
        reply: oneshot::Sender<Result<Option<TopicMeta>, MetaError>>,
    },
    Shutdown {
        reply: oneshot::Sender<Result<(), MetaError>>,
    },
    /// Asks openraft for its commit index (its metrics do not carry it).
    CommitIndex {
        reply: oneshot::Sender<Result<Option<u64>, MetaError>>,
    },
}

type RaftMetricsReceiver = watch::Receiver<openraft::RaftMetrics<NodeId, Node>>;

struct Shared {
    node_id: NodeId,
    requests: mpsc::Sender<Request>,
    images: watch::Receiver<Arc<MetadataImage>>,
    metrics: RaftMetricsReceiver,
    stopped: watch::Receiver<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// When this node last knew a metadata quorum heard it (with peers).
    contact: Arc<QuorumContact>,
    has_peers: bool,
}

/// Handle on the metadata Raft group. Cheap to clone; `Send + Sync`; every
/// clone talks to the same raft thread.
#[derive(Clone)]
pub struct MetadataGroup {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MetadataGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataGroup")
            .field("node_id", &self.shared.node_id)
            .field("epoch", &self.shared.images.borrow().epoch)
            .finish()
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], MetaError> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|error| MetaError::Raft(format!("no randomness from the OS: {error}")))?;
    Ok(bytes)
}

/// A random topic id; never all zeros (Kafka's "no id").
fn new_topic_id() -> Result<[u8; 16], MetaError> {
    loop {
        let id = random_bytes::<16>()?;
        if id != [0; 16] {
            return Ok(id);
        }
    }
}

/// A cluster id in Kafka's form: 16 random bytes, URL-safe base64 without
/// padding (22 characters).
pub(crate) fn new_cluster_id() -> Result<String, MetaError> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = u128::from_be_bytes(random_bytes::<16>()?);
    // 128 bits = 21 six-bit digits (most significant first) plus 2 bits,
    // which base64 pads with four zero bits into a 22nd digit.
    let mut id = String::with_capacity(22);
    for position in 0..22u32 {
        let shift = 122 - 6 * i64::from(position);
        let digit = if shift >= 0 {
            (value >> shift) & 0x3f
        } else {
            (value << (-shift)) & 0x3f
        };
        let character = ALPHABET.get(digit as usize).copied().unwrap_or(b'A');
        id.push(char::from(character));
    }
    Ok(id)
}

fn raft_error<E: std::fmt::Display>(error: E) -> MetaError {
    MetaError::Raft(error.to_string())
}

pub(crate) fn fatal_error(error: Fatal<NodeId>) -> MetaError {
    match error {
        Fatal::Stopped => MetaError::ShuttingDown,
        other => MetaError::Raft(other.to_string()),
    }
}

/// Checks that `dir` belongs to `node_id`, claiming it if it is new.
fn claim_directory(dir: &Path, node_id: NodeId) -> Result<(), MetaError> {
    create_dir_durably(dir)?;
    let path = dir.join(NODE_ID_FILE_NAME);
    match read_if_exists(&path)? {
        None => write_atomically(&path, format!("{node_id}\n").as_bytes()),
        Some(contents) => {
            let stored = std::str::from_utf8(&contents)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| MetaError::corrupt(&path, 0, "node-id file does not hold a number"))?;
            if stored == node_id {
                Ok(())
            } else {
                Err(MetaError::NodeIdMismatch {
                    stored,
                    configured: node_id,
                })
            }
        }
    }
}

/// openraft's runtime config for the metadata group.
fn raft_config(snapshot_every_entries: u64) -> Result<Arc<openraft::Config>, MetaError> {
    let config = openraft::Config {
        cluster_name: "shardline-meta".to_owned(),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every_entries),
        // Keep one interval of log behind the snapshot so a follower that
        // lags a little catches up from the log, not a snapshot.
        max_in_snapshot_log_to_keep: snapshot_every_entries,
        purge_batch_size: 1,
        ..Default::default()
    };
    config.validate().map(Arc::new).map_err(raft_error)
}

/// Opens the stores of `dir` and starts a Raft node on the current tokio
/// runtime. Used by the raft thread, and by tests that run several nodes.
pub(crate) async fn open_raft(
    node_id: NodeId,
    dir: &Path,
    snapshot_every_entries: u64,
    transport: Arc<dyn RaftTransport>,
    publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
) -> Result<Raft, MetaError> {
    let (log_store, recovery) = LogStore::open(dir)?;
    let (snapshots, loaded) = SnapshotStore::open(dir)?;
    tracing::info!(
        dir = %dir.display(),
        log_entries = recovery.entries,
        torn_bytes_cut = recovery.bytes_cut,
        snapshot = ?loaded.as_ref().map(|(meta, _)| meta.snapshot_id.clone()),
        "metadata stores opened"
    );
    let state_machine = StateMachine::open(snapshots, loaded, publisher);
    let network = NetworkFactory::new(node_id, transport);
    Raft::new(
        node_id,
        raft_config(snapshot_every_entries)?,
        network,
        log_store,
        state_machine,
    )
    .await
    .map_err(raft_error)
}

/// Proposes one command on the local Raft and waits until it is applied.
pub(crate) async fn propose(raft: &Raft, command: Command) -> Result<Option<TopicMeta>, MetaError> {
    propose_with_index(raft, command).await.map(|(_, topic)| topic)
}

/// Initializes a fresh group (every voter with its address; each node of a
/// new group does this with the same membership, and all but the first are
/// refused as already initialized), waits for a leader and for the cluster
/// id: on a single node, the leader proposes it here; with peers, the
/// leader's liveness task does, and every node waits to see it.
async fn become_ready(
    raft: &Raft,
    config: &MetadataConfig,
    images: &watch::Receiver<Arc<MetadataImage>>,
) -> Result<(), MetaError> {
    let node_id = config.node_id;
    if !raft.is_initialized().await.map_err(fatal_error)? {
        let members: BTreeMap<NodeId, Node> = if config.has_peers() {
            config
                .peers
                .iter()
                .map(|(id, addr)| (*id, Node::new(addr.clone())))
                .collect()
        } else {
            [(node_id, Node::new(""))].into()
        };
        match raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(error) => return Err(raft_error(error)),
        }
    }
    let metrics = raft
        .wait(Some(config.start_timeout()))
        .metrics(|metrics| metrics.current_leader.is_some(), "metadata leader elected")
        .await
        .map_err(raft_error)?;
    if config.has_peers() {
        images
            .clone()
            .wait_for(|image| !image.cluster_id.is_empty())
            .await
            .map_err(|_| MetaError::ShuttingDown)?;
    } else if metrics.current_leader == Some(node_id) {
        raft.ensure_linearizable().await.map_err(raft_error)?;
        let needs_cluster_id = images.borrow().cluster_id.is_empty();
        if needs_cluster_id {
            propose(
                raft,
                Command::InitCluster {
                    cluster_id: new_cluster_id()?,
                },
            )
            .await?;
        }
    }
    Ok(())
}

type ReadySender = std_mpsc::SyncSender<Result<RaftMetricsReceiver, MetaError>>;

/// What the raft thread runs besides openraft: the listener and the
/// liveness task. Aborted before Raft shuts down.
struct Services {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    peers: Option<Arc<PeerSet>>,
}

/// Opens the stores, binds the listener and starts Raft and the services.
async fn open_node(
    config: &MetadataConfig,
    publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
    contact: Arc<QuorumContact>,
) -> Result<(Raft, Services), MetaError> {
    let listener = match config.raft_listen {
        Some(addr) => Some(
            tcp::bind(addr)
                .await
                .map_err(|error| MetaError::io(format!("bind the metadata raft listener on {addr}"), error))?,
        ),
        None => None,
    };
    let members: BTreeSet<NodeId> = config.peers.keys().copied().chain([config.node_id]).collect();
    let auth = Arc::new(PeerAuth::new(config.node_id, members, config.cluster_secret.as_ref()));
    let transport: Arc<dyn RaftTransport> = if config.has_peers() {
        Arc::new(TcpTransport::new(Arc::clone(&auth)))
    } else {
        Arc::new(NoPeers)
    };
    let images = publisher.subscribe();
    let raft = open_raft(
        config.node_id,
        &config.data_dir,
        config.snapshot_every_entries,
        transport,
        publisher,
    )
    .await?;
    let liveness = Arc::new(Liveness::default());
    let mut tasks = Vec::new();
    if let Some(listener) = listener {
        tracing::info!(
            node_id = config.node_id,
            addr = ?listener.local_addr().ok(),
            peers_authenticated = auth.authenticated(),
            "metadata raft listener bound"
        );
        tasks.push(tokio::spawn(tcp::serve(
            listener,
            raft.clone(),
            Arc::clone(&liveness),
            Arc::clone(&auth),
        )));
    }
    let peers = config.has_peers().then(|| {
        Arc::new(PeerSet {
            node_id: config.node_id,
            addresses: config.peers.clone(),
            transport: Arc::new(TcpTransport::new(Arc::clone(&auth))),
        })
    });
    if let Some(peers) = &peers {
        let task = LivenessTask {
            raft: raft.clone(),
            node_id: config.node_id,
            images,
            liveness,
            peers: Arc::clone(peers),
            heartbeat_interval: Duration::from_millis(config.broker_heartbeat_interval_ms),
            session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
            contact,
        };
        tasks.push(tokio::spawn(task.run()));
    }
    Ok((raft, Services { tasks, peers }))
}

/// The raft thread's async body. Returns the reply of the shutdown request
/// that stopped it, if one did.
async fn run(
    config: MetadataConfig,
    contact: Arc<QuorumContact>,
    mut requests: mpsc::Receiver<Request>,
    publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
    ready: ReadySender,
) -> Option<oneshot::Sender<Result<(), MetaError>>> {
    let images = publisher.subscribe();
    let (raft, services) = match open_node(&config, publisher, contact).await {
        Ok(opened) => opened,
        Err(error) => {
            let _ = ready.send(Err(error));
            return None;
        }
    };
    let start_timeout = config.start_timeout();
    let outcome = match tokio::time::timeout(start_timeout, become_ready(&raft, &config, &images)).await {
        Ok(result) => result,
        Err(_) => Err(MetaError::StartTimeout {
            waited_ms: u64::try_from(start_timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    };
    let started = match outcome {
        Ok(()) => ready.send(Ok(raft.metrics())).is_ok(),
        Err(error) => {
            let _ = ready.send(Err(error));
            false
        }
    };
    let reply = if started {
        tracing::info!(
            node_id = config.node_id,
            voters = config.peers.len().max(1),
            epoch = images.borrow().epoch,
            "metadata group started"
        );
        loop {
            match requests.recv().await {
                Some(Request::Propose { command, reply }) => {
                    let raft = raft.clone();
                    let peers = services.peers.clone();
                    let images = images.clone();
                    tokio::spawn(async move {
                        let result = propose_anywhere(&raft, peers.as_deref(), &images, command).await;
                        // The caller may have gone away; nothing to do then.
                        let _ = reply.send(result);
                    });
                }
                Some(Request::CommitIndex { reply }) => {
                    let raft = raft.clone();
                    tokio::spawn(async move {
                        let committed = raft
                            .with_raft_state(|state| state.committed.map(|log_id| log_id.index))
                            .await
                            .map_err(fatal_error);
                        let _ = reply.send(committed);
                    });
                }
                Some(Request::Shutdown { reply }) => break Some(reply),
                None => break None,
            }
        }
    } else {
        None
    };
    // Queued requests are dropped: their callers get `ShuttingDown`.
    drop(requests);
    for task in &services.tasks {
        task.abort();
    }
    if let Err(error) = raft.shutdown().await {
        tracing::warn!(%error, "metadata raft did not shut down cleanly");
    }
    reply
}

fn thread_main(
    config: MetadataConfig,
    contact: Arc<QuorumContact>,
    requests: mpsc::Receiver<Request>,
    publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
    ready: ReadySender,
    stopped: watch::Sender<bool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(MetaError::io("build the metadata tokio runtime", error)));
            stopped.send_replace(true);
            return;
        }
    };
    let reply = runtime.block_on(run(config, contact, requests, publisher, ready));
    // Dropping the runtime ends the tasks still spawned on it.
    drop(runtime);
    stopped.send_replace(true);
    if let Some(reply) = reply {
        let _ = reply.send(Ok(()));
    }
}

impl MetadataGroup {
    /// Starts the metadata group on its own thread (`shardline-meta`).
    ///
    /// Without peers, on a fresh `data_dir` it creates a one-voter group
    /// with this node and a new cluster id. With peers, it binds
    /// `raft_listen` and, on a fresh `data_dir`, initializes the group of
    /// all peers (every node does; only one initialization takes). On an
    /// existing directory it recovers the snapshot and the log (cutting a
    /// torn tail) and rejoins. Returns once the group has a leader and the
    /// cluster id is known here (a single node: and everything committed is
    /// applied), or fails after [`START_TIMEOUT`] ([`CLUSTER_START_TIMEOUT`]
    /// with peers). Blocks the calling thread meanwhile: call it before the
    /// shards start.
    pub fn start(config: MetadataConfig) -> Result<MetadataGroup, MetaError> {
        config.validate()?;
        claim_directory(&config.data_dir, config.node_id)?;
        let start_timeout = config.start_timeout();

        let node_id = config.node_id;
        let has_peers = config.has_peers();
        let contact = Arc::new(QuorumContact::new());
        let thread_contact = Arc::clone(&contact);
        let (request_sender, request_receiver) = mpsc::channel(REQUEST_QUEUE_CAPACITY);
        let (publisher, images) = watch::channel(Arc::new(MetadataImage::empty()));
        let (stopped_sender, stopped) = watch::channel(false);
        let (ready_sender, ready_receiver) = std_mpsc::sync_channel(1);
        let publisher = Arc::new(publisher);
        let thread = std::thread::Builder::new()
            .name("shardline-meta".to_owned())
            .spawn(move || {
                thread_main(
                    config,
                    thread_contact,
                    request_receiver,
                    publisher,
                    ready_sender,
                    stopped_sender,
                )
            })
            .map_err(|error| MetaError::io("spawn the metadata thread", error))?;

        // The thread bounds its own start by START_TIMEOUT; the margin covers
        // opening the files before that clock starts.
        let waited = start_timeout + Duration::from_secs(5);
        match ready_receiver.recv_timeout(waited) {
            Ok(Ok(metrics)) => Ok(MetadataGroup {
                shared: Arc::new(Shared {
                    node_id,
                    requests: request_sender,
                    images,
                    metrics,
                    stopped,
                    thread: Mutex::new(Some(thread)),
                    contact,
                    has_peers,
                }),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                // Dropping the request sender stops the thread once it gets
                // there; it is left to finish on its own.
                Err(MetaError::StartTimeout {
                    waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                })
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
                Err(MetaError::Raft("the metadata thread exited while starting".to_owned()))
            }
        }
    }

    async fn propose(&self, command: Command) -> Result<Option<TopicMeta>, MetaError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .requests
            .send(Request::Propose { command, reply })
            .await
            .map_err(|_| MetaError::ShuttingDown)?;
        answer.await.map_err(|_| MetaError::ShuttingDown)?
    }

    async fn propose_topic(&self, command: Command) -> Result<TopicMeta, MetaError> {
        self.propose(command)
            .await?
            .ok_or_else(|| MetaError::Raft("topic command applied without a topic in its answer".to_owned()))
    }

    /// Registers a broker or updates it, and unfences it (a broker registers
    /// when it starts: it is alive). With a different shard count, the
    /// replicas it holds on shards that no longer exist are re-placed
    /// round-robin over the new count (leader epochs bumped where it leads).
    ///
    /// Like every write here it works on any node: a follower forwards it to
    /// the leader and returns once its own image shows the change.
    pub async fn register_broker(&self, broker: BrokerInfo) -> Result<(), MetaError> {
        self.propose(Command::RegisterBroker(broker)).await.map(|_| ())
    }

    /// Creates a topic; placement puts `replication_factor` replicas on
    /// distinct unfenced brokers, balancing leaders over brokers and
    /// replicas over each broker's shards (least loaded first, ties to the
    /// lowest).
    pub async fn create_topic(&self, topic: NewTopic) -> Result<TopicMeta, MetaError> {
        let id = new_topic_id()?;
        self.propose_topic(Command::CreateTopic { topic, id }).await
    }

    /// Deletes a topic and returns what it was.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicMeta, MetaError> {
        self.propose_topic(Command::DeleteTopic { name: name.to_owned() }).await
    }

    /// Grows a topic to `total` partitions (it cannot shrink); the new
    /// partitions on `assignments` (one replica list each, preferred leader
    /// first) if given, else placed by the state machine.
    pub async fn create_partitions(
        &self,
        name: &str,
        total: i32,
        assignments: Vec<Vec<i32>>,
    ) -> Result<TopicMeta, MetaError> {
        self.propose_topic(Command::CreatePartitions {
            assignments,
            name: name.to_owned(),
            total,
        })
        .await
    }

    /// Sets (`Some`) or deletes (`None`) topic configs, all or none.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, Option<String>>,
    ) -> Result<TopicMeta, MetaError> {
        self.propose_topic(Command::AlterTopicConfigs {
            name: name.to_owned(),
            changes: configs,
        })
        .await
    }

    /// Sets the in-sync replicas of a partition this node leads, as a
    /// change based on the partition at `partition_epoch`. Refused with
    /// [`MetaError::StaleLeaderEpoch`] when this node no longer leads it at
    /// `leader_epoch`, with [`MetaError::StalePartitionEpoch`] when the
    /// partition has changed since `partition_epoch` (a retry of a change
    /// already taken included), and with [`MetaError::InvalidIsr`] when
    /// `isr` is not a subset of the replicas holding this node, or adds a
    /// fenced broker. Does not bump the leader epoch; bumps the partition
    /// epoch.
    pub async fn alter_isr(
        &self,
        topic: &str,
        partition: i32,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        isr: Vec<i32>,
    ) -> Result<(), MetaError> {
        let leader = i32::try_from(self.shared.node_id).map_err(|_| MetaError::InvalidBroker {
            node_id: -1,
            reason: format!("node id {} is not a broker id", self.shared.node_id),
        })?;
        self.propose(Command::AlterIsr(IsrChange {
            topic: topic.to_owned(),
            partition,
            leader,
            leader_epoch: leader_epoch.0,
            partition_epoch: Some(partition_epoch),
            isr,
        }))
        .await
        .map(|_| ())
    }

    /// Gives every partition whose preferred replica (its first) is
    /// unfenced and in sync, but not leading, that replica as leader (what
    /// the liveness task proposes after failovers; Kafka's preferred leader
    /// election). Returns once this node's image shows the result.
    pub async fn elect_preferred_leaders(&self) -> Result<(), MetaError> {
        self.propose(Command::ElectPreferredLeaders).await.map(|_| ())
    }

    /// Starts moving a partition to `target` (broker ids, preference order):
    /// the brokers not yet holding it join as followers and copy the log,
    /// and once all of `target` is in sync the replicas become `target`
    /// (leadership moves if the leader leaves). `None` cancels the move in
    /// progress, restoring the replicas before it. A target equal to the
    /// current replicas changes nothing.
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
    ) -> Result<(), MetaError> {
        self.propose(Command::ReassignPartition {
            topic: topic.to_owned(),
            partition,
            target,
        })
        .await
        .map(|_| ())
    }

    /// Adds ACL bindings, all or none; bindings already present change
    /// nothing. Refused with [`MetaError::InvalidAcl`] for an invalid
    /// binding or past [`ACLS_MAX`](crate::ACLS_MAX).
    pub async fn create_acls(&self, acls: Vec<crate::AclBinding>) -> Result<(), MetaError> {
        self.propose(Command::CreateAcls(acls)).await.map(|_| ())
    }

    /// Removes these exact ACL bindings; absent ones change nothing.
    pub async fn delete_acls(&self, acls: Vec<crate::AclBinding>) -> Result<(), MetaError> {
        self.propose(Command::DeleteAcls(acls)).await.map(|_| ())
    }

    /// Sets (replacing) and removes SCRAM credentials, all or none.
    /// Refused with [`MetaError::InvalidCredential`] for a credential out of
    /// bounds, a deletion of one that does not exist, or a (user, mechanism)
    /// named twice.
    pub async fn alter_scram_credentials(
        &self,
        upsertions: Vec<crate::ScramCredential>,
        deletions: Vec<(String, crate::ScramMechanism)>,
    ) -> Result<(), MetaError> {
        self.propose(Command::AlterScramCredentials { upsertions, deletions })
            .await
            .map(|_| ())
    }

    /// The latest applied image. Cheap: one `Arc` clone under a read lock.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.shared.images.borrow())
    }

    /// A receiver that sees every applied change (`changed().await`, then
    /// `borrow_and_update()`). The current image counts as seen.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        let mut receiver = self.shared.images.clone();
        receiver.mark_unchanged();
        receiver
    }

    /// Raft-side status (term, metadata leader, log, snapshot).
    pub fn status(&self) -> MetadataStatus {
        let metrics = self.shared.metrics.borrow();
        MetadataStatus {
            node_id: self.shared.node_id,
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index,
            last_applied_index: metrics.last_applied.map(|log_id| log_id.index),
            snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
            purged_index: metrics.purged.map(|log_id| log_id.index),
        }
    }

    /// How long since this node last knew a metadata quorum heard it: as a
    /// follower, since the metadata leader last took its heartbeat; as the
    /// leader, since a quorum last acknowledged it. Zero on a single node.
    /// A node silent past the broker session timeout has been fenced by the
    /// others (or soon will be) while its own image cannot change: the
    /// engine then stops acting as a leader. One relaxed atomic load.
    pub fn quorum_silence(&self) -> Duration {
        if self.shared.has_peers {
            self.shared.contact.silence(std::time::Instant::now())
        } else {
            Duration::ZERO
        }
    }

    /// Index of the last entry this node knows to be committed (`None`
    /// before the first commit). openraft 0.9 publishes the applied index in
    /// its metrics but not the commit index, so this asks the raft thread,
    /// which reads it from openraft's state; the difference to
    /// [`MetadataStatus::last_applied_index`] is how far the state machine
    /// (and so the image) lags behind what is committed. For monitoring:
    /// one message to the raft thread per call.
    pub async fn commit_index(&self) -> Result<Option<u64>, MetaError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .requests
            .send(Request::CommitIndex { reply })
            .await
            .map_err(|_| MetaError::ShuttingDown)?;
        answer.await.map_err(|_| MetaError::ShuttingDown)?
    }

    /// Stops Raft and joins the raft thread. Other clones then answer
    /// [`MetaError::ShuttingDown`]. Calling it again (on another clone) waits
    /// for the same stop and returns `Ok`.
    pub async fn shutdown(self) -> Result<(), MetaError> {
        let (reply, answer) = oneshot::channel();
        let result = match self.shared.requests.send(Request::Shutdown { reply }).await {
            Ok(()) => answer.await.unwrap_or(Ok(())),
            // Already stopping: wait below.
            Err(_) => Ok(()),
        };
        let mut stopped = self.shared.stopped.clone();
        // An error here means the thread is gone, which is what we wait for.
        let _ = stopped.wait_for(|stopped| *stopped).await;
        let thread = self.shared.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            // The thread has marked itself stopped; it returns right after.
            thread
                .join()
                .map_err(|_| MetaError::Raft("the metadata thread panicked".to_owned()))?;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = new_cluster_id().unwrap();
        assert_eq!(id.len(), 22);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(new_cluster_id().unwrap(), id);
    }

    #[test]
    fn topic_ids_are_random_and_not_zero() {
        let a = new_topic_id().unwrap();
        let b = new_topic_id().unwrap();
        assert_ne!(a, [0; 16]);
        assert_ne!(a, b);
    }

    #[test]
    fn a_directory_belongs_to_one_node() {
        let dir = tempfile::tempdir().unwrap();
        claim_directory(dir.path(), 1).unwrap();
        claim_directory(dir.path(), 1).unwrap();
        assert!(matches!(
            claim_directory(dir.path(), 2),
            Err(MetaError::NodeIdMismatch {
                stored: 1,
                configured: 2
            })
        ));
    }
}
