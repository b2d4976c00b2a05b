//! `Shard`: everything one core owns — its partitions, its read-only copy of
//! the metadata image, and its ends of the channels to every other shard.
//!
//! A shard is `!Send` and lives on one glommio executor. Other shards reach
//! its state only through [`Shard::invoke_on`], which ships a closure to the
//! owner over a bounded cross-core channel and brings the answer back.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    future::Future,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use futures_channel::oneshot;
use glommio::channels::shared_channel::ConnectedSender;
use shardline_log::{Durability, LogConfig};
use shardline_raft::{MetadataGroup, MetadataImage, PartitionMeta, TopicMeta};

pub(crate) use crate::metrics::ShardProbe;
use crate::{
    config::EngineConfig,
    coordinator::{
        transactions::{TxnCoordinator, TRANSACTIONS_TOPIC},
        Coordinator, OFFSETS_TOPIC,
    },
    error::EngineError,
    partition::{partition_dir, remove_dir, Partition, PartitionSettings, Role, RoleChange},
    replica::LeaderShard,
};

/// Work shipped to another shard: runs there with that shard's `Rc<Shard>`.
pub(crate) type ShardTask = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Messages queued between one pair of shards before senders wait
/// (backpressure on cross-core traffic).
pub(crate) const MESH_QUEUE_BOUND: usize = 1024;

/// How long a shard waits for its metadata copy to catch up with the epoch a
/// request was routed under before answering NOT_LEADER (clients then retry).
const EPOCH_WAIT_MAX: Duration = Duration::from_secs(5);

/// `max.message.bytes` default, as Kafka's (1 MiB + record batch overhead).
pub(crate) const MAX_MESSAGE_BYTES_DEFAULT: usize = 1_048_588;

/// A topic's `max.message.bytes`, from its configs (the default when unset).
pub(crate) fn max_message_bytes_of(configs: &std::collections::BTreeMap<String, String>) -> usize {
    configs
        .get("max.message.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(MAX_MESSAGE_BYTES_DEFAULT)
}

/// Topic and partition index.
pub(crate) type PartitionKey = (String, i32);

/// One core's share of the broker.
pub struct Shard {
    pub(crate) id: usize,
    pub(crate) shard_count: usize,
    pub(crate) config: Arc<EngineConfig>,
    pub(crate) meta: MetadataGroup,
    image: RefCell<Arc<MetadataImage>>,
    /// Epoch of the newest image whose partitions are open here.
    applied_epoch: Cell<u64>,
    epoch_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    partitions: RefCell<HashMap<PartitionKey, Rc<Partition>>>,
    /// `peers[i]` reaches shard i (`None` for this shard itself).
    peers: Vec<Option<ConnectedSender<ShardTask>>>,
    shutting_down: Cell<bool>,
    /// Consumer groups of the `__consumer_offsets` partitions open here.
    pub(crate) coordinator: Coordinator,
    /// Transactional ids of the `__transaction_state` partitions led here.
    pub(crate) transactions: TxnCoordinator,
    /// Follower fetchers, one per leader shard this shard copies from.
    pub(crate) fetchers: crate::replica::Fetchers,
    /// Incremental fetch sessions of the connections this shard serves
    /// (`kafka::fetch_session`).
    pub(crate) fetch_sessions: RefCell<crate::kafka::FetchSessions>,
    /// How those fetchers reach and log in to leaders (shared by every shard).
    pub(crate) inter_broker: Arc<crate::inter_broker::InterBroker>,
    /// What this shard counts about its own work (metrics, the shutdown line).
    pub(crate) probe: ShardProbe,
    /// MQTT connections, client ids homed here and the subscriber feed
    /// (`crate::mqtt`).
    pub(crate) mqtt: crate::mqtt::MqttShard,
    /// Idle connections to other nodes' leaders (`remote.rs`).
    pub(crate) remote: crate::remote::Pool,
    /// Whether the last [`Shard::out_of_quorum`] answer was yes (to log
    /// the changes only).
    out_of_quorum: Cell<bool>,
}

/// A seed for a shard's fetch session ids: differs by shard and by start,
/// so a restarted broker does not hand out the ids it handed out before.
fn session_id_seed(id: usize) -> u64 {
    let started_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the low bits vary the most; any bits do for a seed"
    )]
    let low = started_ns as u64;
    low ^ (u64::try_from(id).unwrap_or(0) << 48)
}

impl Shard {
    pub(crate) fn new(
        id: usize,
        config: Arc<EngineConfig>,
        meta: MetadataGroup,
        inter_broker: Arc<crate::inter_broker::InterBroker>,
        peers: Vec<Option<ConnectedSender<ShardTask>>>,
    ) -> Rc<Shard> {
        let shard_count = peers.len();
        assert!(id < shard_count, "shard id out of range");
        let mqtt_connections_max = config.connections_per_shard();
        let image = meta.image();
        Rc::new(Shard {
            id,
            shard_count,
            config,
            meta,
            image: RefCell::new(image),
            applied_epoch: Cell::new(0),
            epoch_waiters: RefCell::new(Vec::new()),
            partitions: RefCell::new(HashMap::new()),
            peers,
            shutting_down: Cell::new(false),
            coordinator: Coordinator::default(),
            transactions: TxnCoordinator::default(),
            fetchers: crate::replica::Fetchers::default(),
            fetch_sessions: RefCell::new(crate::kafka::FetchSessions::new(session_id_seed(id))),
            inter_broker,
            probe: ShardProbe::new(shard_count),
            mqtt: crate::mqtt::MqttShard::new(mqtt_connections_max),
            remote: crate::remote::Pool::default(),
            out_of_quorum: Cell::new(false),
        })
    }

    /// Whether this broker has been out of touch with a metadata quorum for
    /// longer than the broker session timeout. The others have then fenced
    /// it (or are about to) and moved its partitions, while its own image,
    /// which cannot change without a quorum, still names it leader. Such a
    /// broker leads nothing: client requests to its partitions get
    /// NOT_LEADER_OR_FOLLOWER and Metadata names no leader for them, so
    /// clients look for the new leaders elsewhere (docs/cluster.md, "A
    /// leader cut off from its peers").
    pub(crate) fn out_of_quorum(&self) -> bool {
        let silence = self.meta.quorum_silence();
        let out = silence > std::time::Duration::from_millis(self.config.broker_session_timeout_ms);
        if out != self.out_of_quorum.replace(out) {
            if out {
                tracing::warn!(
                    shard = self.id,
                    silence_ms = silence.as_millis(),
                    "no metadata quorum within the session timeout: leading nothing until one is back"
                );
            } else {
                tracing::info!(shard = self.id, "metadata quorum back: leading again");
            }
        }
        out
    }

    /// This shard's current metadata image.
    pub(crate) fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image.borrow())
    }

    pub(crate) fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Epoch of the newest image whose partitions are open here.
    pub(crate) fn applied_epoch(&self) -> u64 {
        self.applied_epoch.get()
    }

    /// The shard owning a partition, per the current image.
    pub(crate) fn owner_of(&self, topic: &str, index: i32) -> Result<usize, EngineError> {
        let image = self.image.borrow();
        let partition = image
            .topics
            .get(topic)
            .and_then(|t| usize::try_from(index).ok().and_then(|i| t.partitions.get(i)))
            .ok_or(EngineError::UnknownTopicOrPartition)?;
        if partition.leader < 0 {
            return Err(EngineError::LeaderNotAvailable);
        }
        if partition.leader != self.node_id() || self.out_of_quorum() {
            return Err(EngineError::NotLeader);
        }
        let shard = usize::try_from(partition.shard).map_err(|_| EngineError::NotLeader)?;
        if shard >= self.shard_count {
            return Err(EngineError::NotLeader);
        }
        Ok(shard)
    }

    /// A partition this shard leads (what client requests may touch).
    pub(crate) fn partition(&self, topic: &str, index: i32) -> Result<Rc<Partition>, EngineError> {
        let partition = self.replica(topic, index)?;
        match partition.role().0 {
            Role::Leader => Ok(partition),
            Role::Offline => Err(EngineError::LeaderNotAvailable),
            Role::Follower { .. } => Err(EngineError::NotLeader),
        }
    }

    /// A partition replica open on this shard, whatever its role.
    pub(crate) fn replica(&self, topic: &str, index: i32) -> Result<Rc<Partition>, EngineError> {
        self.partitions
            .borrow()
            .get(&(topic.to_string(), index))
            .cloned()
            .ok_or(EngineError::NotLeader)
    }

    /// Every partition open on this shard.
    pub(crate) fn open_partitions(&self) -> Vec<(PartitionKey, Rc<Partition>)> {
        self.partitions
            .borrow()
            .iter()
            .map(|(k, p)| (k.clone(), Rc::clone(p)))
            .collect()
    }

    /// Runs `work` on shard `owner` and returns its result. On this shard it
    /// runs inline; otherwise it is sent over the bounded channel to `owner`,
    /// under the API of the request being served here (so errors it
    /// produces are counted under that API), and the message and its round
    /// trip are counted in this shard's probe.
    pub(crate) async fn invoke_on<R, F, Fut>(self: &Rc<Self>, owner: usize, work: F) -> Result<R, EngineError>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if owner == self.id {
            return Ok(work(Rc::clone(self)).await);
        }
        let sender = self
            .peers
            .get(owner)
            .and_then(Option::as_ref)
            .ok_or(EngineError::ShardUnavailable)?;
        let (reply, answer) = oneshot::channel();
        let api = crate::metrics::probe::current_api();
        let task: ShardTask = Box::new(move |shard| {
            Box::pin(crate::metrics::with_api(api, async move {
                let result = work(shard).await;
                let _ = reply.send(result);
            }))
        });
        let sent_at = std::time::Instant::now();
        if sender.send(task).await.is_err() {
            return Err(EngineError::ShardUnavailable);
        }
        let answer = answer.await.map_err(|_| EngineError::ShardUnavailable);
        self.probe.record_cross_shard(owner, sent_at.elapsed());
        answer
    }

    /// Waits until this shard has opened the partitions of image `epoch`
    /// (the epoch the requesting shard routed under), bounded in time.
    pub(crate) async fn wait_for_epoch(&self, epoch: u64) {
        if self.applied_epoch.get() >= epoch {
            return;
        }
        let (sender, receiver) = oneshot::channel();
        self.epoch_waiters.borrow_mut().push(sender);
        let _ = glommio::timer::timeout(EPOCH_WAIT_MAX, async move {
            let _ = receiver.await;
            Ok(())
        })
        .await;
    }

    /// Follows the metadata group: installs each new image and opens/closes
    /// the partitions placed on this shard. Runs until shutdown.
    pub(crate) async fn follow_metadata(self: Rc<Self>) {
        glommio::spawn_local(crate::replica::maintain_isr(Rc::clone(&self))).detach();
        let mut changes = self.meta.subscribe();
        loop {
            let image = Arc::clone(&changes.borrow_and_update());
            self.apply_image(image).await;
            if self.shutting_down.get() || changes.changed().await.is_err() {
                return;
            }
        }
    }

    async fn apply_image(self: &Rc<Self>, image: Arc<MetadataImage>) {
        *self.image.borrow_mut() = Arc::clone(&image);
        let node_id = self.node_id();
        // Every replica of this broker placed on this shard, leader or follower.
        let mut wanted: HashMap<PartitionKey, (&TopicMeta, &PartitionMeta)> = HashMap::new();
        for topic in image.topics.values() {
            for partition in &topic.partitions {
                if local_shard(partition, node_id).and_then(|s| usize::try_from(s).ok()) == Some(self.id) {
                    wanted.insert((topic.name.clone(), partition.index), (topic, partition));
                }
            }
        }
        // Close what moved away or was deleted.
        let open: Vec<PartitionKey> = self.partitions.borrow().keys().cloned().collect();
        for key in open {
            let keep = wanted
                .get(&key)
                .is_some_and(|(t, _)| self.partitions.borrow().get(&key).is_some_and(|p| p.topic_id == t.id));
            if keep {
                continue;
            }
            let removed = self.partitions.borrow_mut().remove(&key);
            if key.0 == OFFSETS_TOPIC {
                self.coordinator.unload(key.1);
            }
            if key.0 == TRANSACTIONS_TOPIC {
                self.transactions.unload(key.1);
            }
            if let Some(partition) = removed {
                partition.close().await;
                let topic = image.topics.get(&key.0).filter(|t| t.id == partition.topic_id);
                // Still a replica of this node (moved to another shard of it): keep the data.
                let held_here = topic
                    .and_then(|t| usize::try_from(key.1).ok().and_then(|i| t.partitions.get(i)))
                    .is_some_and(|p| p.replicas.contains(&node_id));
                if !held_here {
                    let why = if topic.is_none() {
                        "topic deleted: removing partition data"
                    } else {
                        "replica moved to other brokers: removing partition data"
                    };
                    tracing::info!(topic = %key.0, partition = key.1, "{why}");
                    if let Err(e) = remove_dir(&partition.dir) {
                        tracing::warn!(error = %e, "removing deleted partition");
                    }
                }
            }
        }
        // Open what is new here, then give every replica its role.
        for (key, (topic, meta)) in wanted {
            let existing = self.partitions.borrow().get(&key).cloned();
            let partition = match existing {
                Some(partition) => {
                    if *partition.topic_configs.borrow() != topic.configs {
                        self.apply_topic_configs(&key, &partition, topic).await;
                    }
                    partition
                }
                None => {
                    let (log_config, settings) = self.log_settings(topic);
                    let dir = partition_dir(&self.config.data_dir, &key.0, key.1);
                    let configs = topic.configs.clone();
                    match Partition::open(dir, topic.id, log_config, settings, configs, node_id).await {
                        Ok(partition) => {
                            tracing::info!(shard = self.id, topic = %key.0, partition = key.1, "partition opened");
                            let partition = Rc::new(partition);
                            self.partitions.borrow_mut().insert(key.clone(), Rc::clone(&partition));
                            partition
                        }
                        Err(e) => {
                            tracing::error!(topic = %key.0, partition = key.1, error = %e, "cannot open partition");
                            continue;
                        }
                    }
                }
            };
            let change = partition.apply_placement(meta);
            if change != RoleChange::None {
                tracing::info!(
                    topic = %key.0,
                    partition = key.1,
                    leader = meta.leader,
                    leader_epoch = meta.leader_epoch,
                    isr = ?meta.isr,
                    change = ?change,
                    "partition role"
                );
            }
            let offsets = key.0 == OFFSETS_TOPIC;
            let transactions = key.0 == TRANSACTIONS_TOPIC;
            match change {
                RoleChange::BecameLeader if offsets => self.coordinator.load(key.1, &partition),
                RoleChange::BecameLeader if transactions => self.transactions.load(key.1, &partition),
                RoleChange::StartFollowing { generation } => {
                    if offsets {
                        self.coordinator.unload(key.1);
                    }
                    if transactions {
                        self.transactions.unload(key.1);
                    }
                    let source = LeaderShard {
                        leader: meta.leader,
                        shard: meta.shard,
                    };
                    self.fetchers.follow(self, source, key, partition, generation);
                }
                RoleChange::StoppedLeading if offsets => self.coordinator.unload(key.1),
                RoleChange::StoppedLeading if transactions => self.transactions.unload(key.1),
                _ => {}
            }
        }
        self.applied_epoch.set(image.epoch);
        for waiter in std::mem::take(&mut *self.epoch_waiters.borrow_mut()) {
            let _ = waiter.send(());
        }
    }

    /// Gives an open partition its topic's changed configs (AlterConfigs),
    /// without reopening it.
    async fn apply_topic_configs(&self, key: &PartitionKey, partition: &Partition, topic: &TopicMeta) {
        let (log_config, settings) = self.log_settings(topic);
        match partition.reconfigure(log_config, settings, topic.configs.clone()).await {
            Ok(deleted) => tracing::info!(
                topic = %key.0,
                partition = key.1,
                configs = ?topic.configs,
                retention_deleted_segments = deleted,
                "topic configs applied"
            ),
            Err(e) => tracing::warn!(topic = %key.0, partition = key.1, error = %e, "applying topic configs failed"),
        }
    }

    /// A topic as the broker creates it unasked (auto-creation, the MQTT
    /// topic): the default partitions and replication factor, no configs.
    pub(crate) fn default_topic(&self, name: &str) -> shardline_raft::NewTopic {
        shardline_raft::NewTopic {
            name: name.to_owned(),
            partitions: self.config.default_partitions.max(1),
            replication_factor: self.config.default_replication_factor,
            configs: std::collections::BTreeMap::new(),
            assignments: Vec::new(),
        }
    }

    /// Log settings from the topic's configs over the engine's defaults.
    fn log_settings(&self, topic: &TopicMeta) -> (LogConfig, PartitionSettings) {
        let get = |key: &str| topic.configs.get(key);
        let mut config = LogConfig {
            segment_bytes_max: self.config.segment_bytes,
            durability: self.config.fsync.0,
            writes: self.config.log_writes.0,
            ..LogConfig::default()
        };
        if let Some(v) = get("retention.ms").and_then(|v| v.parse::<i64>().ok()) {
            config.retention_ms_max = (v >= 0).then_some(v);
        }
        if let Some(v) = get("retention.bytes").and_then(|v| v.parse::<i64>().ok()) {
            config.retention_bytes_max = u64::try_from(v).ok();
        }
        if let Some(v) = get("segment.bytes").and_then(|v| v.parse::<u64>().ok()) {
            config.segment_bytes_max = v.clamp(1 << 20, u64::from(u32::MAX));
        }
        if let Some(v) = get("segment.ms").and_then(|v| v.parse::<i64>().ok()) {
            config.segment_ms_max = v.max(1);
        }
        if let Some(v) = get("shardline.fsync").and_then(|v| v.parse::<crate::config::FsyncPolicy>().ok()) {
            config.durability = v.0;
        }
        config.log_append_time = get("message.timestamp.type").is_some_and(|v| v == "LogAppendTime");
        let compaction = if crate::coordinator::is_internal_topic(&topic.name) {
            // Always compacted, in small segments: the replay at start-up
            // reads the live keys plus at most one segment of commits.
            if get("segment.bytes").is_none() {
                config.segment_bytes_max = self.config.offsets_topic_segment_bytes;
            }
            Some(crate::compaction::Compaction::internal(&topic.configs))
        } else {
            crate::compaction::Compaction::of(&topic.configs)
        };
        if compaction.is_some_and(|c| !c.delete) {
            // `compact` alone: the cleaner, never retention, removes records.
            config.retention_ms_max = None;
            config.retention_bytes_max = None;
        }
        let max_message_bytes = max_message_bytes_of(&topic.configs);
        let min_insync_replicas = get("min.insync.replicas")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        (
            config,
            PartitionSettings {
                max_message_bytes,
                min_insync_replicas,
                timestamp_bounds: crate::timestamps::TimestampBounds::of(&topic.configs),
                compaction,
                delivery: crate::delivery::DeliveryRules::of(&topic.configs),
            },
        )
    }

    /// Deletes expired segments of every partition on this shard.
    pub(crate) async fn apply_retention(&self) {
        for ((topic, index), partition) in self.open_partitions() {
            match partition.log.apply_retention().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(%topic, partition = index, segments = n, "retention deleted segments"),
                Err(e) => tracing::warn!(%topic, partition = index, error = %e, "retention failed"),
            }
        }
    }

    /// One cleaning pass over every compacted partition on this shard
    /// (`compaction.rs`); runs from the shard's low-priority cleaner queue.
    pub(crate) async fn clean_logs(&self) {
        for ((topic, index), partition) in self.open_partitions() {
            if self.is_shutting_down() {
                return;
            }
            match partition.clean().await {
                Ok(None) => {}
                Ok(Some(report)) => {
                    self.probe.count_cleaned(&report);
                    tracing::info!(
                    %topic,
                    partition = index,
                    segments_read = report.segments_read,
                    segments_swapped = report.segments_swapped,
                    bytes_before = report.bytes_before,
                    bytes_after = report.bytes_after,
                    records_removed = report.records_removed,
                    tombstones_removed = report.tombstones_removed,
                    "log cleaned"
                    );
                }
                Err(e) => tracing::warn!(%topic, partition = index, error = %e, "cleaning failed"),
            }
        }
    }

    /// Stops following metadata and closes (flushes) every partition.
    pub(crate) async fn shutdown(&self) {
        self.shutting_down.set(true);
        for (_, partition) in self.open_partitions() {
            partition.close().await;
        }
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }
}

/// The shard holding `node_id`'s replica of a partition, if it has one.
pub(crate) fn local_shard(partition: &PartitionMeta, node_id: i32) -> Option<u32> {
    let position = partition.replicas.iter().position(|r| *r == node_id)?;
    partition
        .replica_shards
        .get(position)
        .copied()
        .or((partition.leader == node_id).then_some(partition.shard))
}

/// Describes a durability for the start-up line.
pub(crate) fn describe_durability(d: Durability) -> String {
    crate::config::FsyncPolicy(d).to_string()
}
