//! [`MetadataGroup`]: the front type, and the raft thread behind it.
//!
//! ```text
//!  shard threads (glommio)            raft thread "shardline-meta" (tokio current_thread)
//!  ───────────────────────            ─────────────────────────────────────────────────
//!  group.create_topic(..) ──Request──► request loop ──spawn──► raft.client_write(cmd)
//!        ▲  (bounded mpsc)                                        │ log_store: append + fdatasync
//!        └──────────── oneshot reply ◄────────────────────────────┤ state_machine: apply
//!  group.image() / subscribe() ◄──── watch<Arc<MetadataImage>> ◄──┘ (publish per applied batch)
//! ```
//! Everything openraft owns (its core task, the log store, the state
//! machine) lives on the raft thread; callers only hold channel ends, so the
//! async methods are plain futures over tokio channels and can be awaited on
//! any executor. Dropping every handle without `shutdown` closes the request
//! channel, which stops the group in the background.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{mpsc as std_mpsc, Arc, Mutex, PoisonError},
    thread::JoinHandle,
    time::Duration,
};

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    command::Command,
    error::MetaError,
    files::{read_if_exists, write_atomically},
    image::{BrokerInfo, MetadataImage, NewTopic, TopicMeta},
    log_store::LogStore,
    network::{NetworkFactory, NoPeers, RaftTransport},
    snapshot::SnapshotStore,
    state_machine::StateMachine,
    types::{Node, NodeId, Raft},
};

/// Default for [`MetadataConfig::snapshot_every_entries`].
pub const DEFAULT_SNAPSHOT_EVERY_ENTRIES: u64 = 1000;

/// How long [`MetadataGroup::start`] waits for a leader and for the state
/// machine to catch up. A single voter elects itself at once (or within one
/// election timeout, 0.3–0.6 s); 10 s leaves room for a slow disk replaying
/// a log of `snapshot_every_entries` entries.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl MetadataConfig {
    /// A config with the default snapshot interval.
    pub fn new(node_id: u64, data_dir: impl Into<PathBuf>) -> Self {
        MetadataConfig {
            node_id,
            data_dir: data_dir.into(),
            snapshot_every_entries: DEFAULT_SNAPSHOT_EVERY_ENTRIES,
        }
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
}

type RaftMetricsReceiver = watch::Receiver<openraft::RaftMetrics<NodeId, Node>>;

struct Shared {
    node_id: NodeId,
    requests: mpsc::Sender<Request>,
    images: watch::Receiver<Arc<MetadataImage>>,
    metrics: RaftMetricsReceiver,
    stopped: watch::Receiver<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
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
fn new_cluster_id() -> Result<String, MetaError> {
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

fn fatal_error(error: Fatal<NodeId>) -> MetaError {
    match error {
        Fatal::Stopped => MetaError::ShuttingDown,
        other => MetaError::Raft(other.to_string()),
    }
}

/// Checks that `dir` belongs to `node_id`, claiming it if it is new.
fn claim_directory(dir: &Path, node_id: NodeId) -> Result<(), MetaError> {
    std::fs::create_dir_all(dir).map_err(|error| MetaError::io(format!("create {}", dir.display()), error))?;
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

/// Proposes one command and waits until it is applied.
pub(crate) async fn propose(raft: &Raft, command: Command) -> Result<Option<TopicMeta>, MetaError> {
    match raft.client_write(command).await {
        Ok(response) => response.data.0,
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => Err(MetaError::NotLeader {
            leader: forward.leader_id,
        }),
        Err(RaftError::APIError(other)) => Err(raft_error(other)),
        Err(RaftError::Fatal(fatal)) => Err(fatal_error(fatal)),
    }
}

/// Initializes a fresh group, waits for a leader and, on the leader, for
/// everything committed to be applied; a new group gets its cluster id.
async fn become_ready(
    raft: &Raft,
    node_id: NodeId,
    images: &watch::Receiver<Arc<MetadataImage>>,
) -> Result<(), MetaError> {
    if !raft.is_initialized().await.map_err(fatal_error)? {
        let mut members = BTreeMap::new();
        members.insert(node_id, Node::new(""));
        match raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(error) => return Err(raft_error(error)),
        }
    }
    let metrics = raft
        .wait(Some(START_TIMEOUT))
        .metrics(|metrics| metrics.current_leader.is_some(), "metadata leader elected")
        .await
        .map_err(raft_error)?;
    if metrics.current_leader == Some(node_id) {
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

/// The raft thread's async body. Returns the reply of the shutdown request
/// that stopped it, if one did.
async fn run(
    config: MetadataConfig,
    mut requests: mpsc::Receiver<Request>,
    publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
    ready: ReadySender,
) -> Option<oneshot::Sender<Result<(), MetaError>>> {
    let images = publisher.subscribe();
    let opened = open_raft(
        config.node_id,
        &config.data_dir,
        config.snapshot_every_entries,
        Arc::new(NoPeers),
        publisher,
    )
    .await;
    let raft = match opened {
        Ok(raft) => raft,
        Err(error) => {
            let _ = ready.send(Err(error));
            return None;
        }
    };
    let outcome = match tokio::time::timeout(START_TIMEOUT, become_ready(&raft, config.node_id, &images)).await {
        Ok(result) => result,
        Err(_) => Err(MetaError::StartTimeout {
            waited_ms: u64::try_from(START_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
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
            epoch = images.borrow().epoch,
            "metadata group started"
        );
        loop {
            match requests.recv().await {
                Some(Request::Propose { command, reply }) => {
                    let raft = raft.clone();
                    tokio::spawn(async move {
                        let result = propose(&raft, command).await;
                        // The caller may have gone away; nothing to do then.
                        let _ = reply.send(result);
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
    if let Err(error) = raft.shutdown().await {
        tracing::warn!(%error, "metadata raft did not shut down cleanly");
    }
    reply
}

fn thread_main(
    config: MetadataConfig,
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
    let reply = runtime.block_on(run(config, requests, publisher, ready));
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
    /// On a fresh `data_dir` it creates a one-voter group with this node and
    /// a new cluster id; on an existing one it recovers the snapshot and the
    /// log (cutting a torn tail). Returns once the group has a leader and,
    /// on the leader, the state machine has applied everything committed, or
    /// fails after [`START_TIMEOUT`]. Blocks the calling thread meanwhile:
    /// call it before the shards start.
    pub fn start(config: MetadataConfig) -> Result<MetadataGroup, MetaError> {
        if config.snapshot_every_entries == 0 {
            return Err(MetaError::Raft("snapshot_every_entries must be at least 1".to_owned()));
        }
        claim_directory(&config.data_dir, config.node_id)?;

        let node_id = config.node_id;
        let (request_sender, request_receiver) = mpsc::channel(REQUEST_QUEUE_CAPACITY);
        let (publisher, images) = watch::channel(Arc::new(MetadataImage::empty()));
        let (stopped_sender, stopped) = watch::channel(false);
        let (ready_sender, ready_receiver) = std_mpsc::sync_channel(1);
        let publisher = Arc::new(publisher);
        let thread = std::thread::Builder::new()
            .name("shardline-meta".to_owned())
            .spawn(move || thread_main(config, request_receiver, publisher, ready_sender, stopped_sender))
            .map_err(|error| MetaError::io("spawn the metadata thread", error))?;

        // The thread bounds its own start by START_TIMEOUT; the margin covers
        // opening the files before that clock starts.
        let waited = START_TIMEOUT + Duration::from_secs(5);
        match ready_receiver.recv_timeout(waited) {
            Ok(Ok(metrics)) => Ok(MetadataGroup {
                shared: Arc::new(Shared {
                    node_id,
                    requests: request_sender,
                    images,
                    metrics,
                    stopped,
                    thread: Mutex::new(Some(thread)),
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

    /// Registers a broker or updates it. With a different shard count, the
    /// partitions it leads on shards that no longer exist are re-placed
    /// round-robin over the new count (their leader epochs bumped).
    pub async fn register_broker(&self, broker: BrokerInfo) -> Result<(), MetaError> {
        self.propose(Command::RegisterBroker(broker)).await.map(|_| ())
    }

    /// Creates a topic; placement balances partitions over brokers and over
    /// the leader's shards (least loaded first, ties to the lowest).
    pub async fn create_topic(&self, topic: NewTopic) -> Result<TopicMeta, MetaError> {
        let id = new_topic_id()?;
        self.propose_topic(Command::CreateTopic { topic, id }).await
    }

    /// Deletes a topic and returns what it was.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicMeta, MetaError> {
        self.propose_topic(Command::DeleteTopic { name: name.to_owned() }).await
    }

    /// Grows a topic to `total` partitions (it cannot shrink).
    pub async fn create_partitions(&self, name: &str, total: i32) -> Result<TopicMeta, MetaError> {
        self.propose_topic(Command::CreatePartitions {
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

    /// Raft-side status (term, leader, log, snapshot).
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
