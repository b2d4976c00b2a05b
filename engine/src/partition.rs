//! One partition replica on this shard: its log, idempotent-producer state,
//! its part in replication (leader or follower, the in-sync replicas, the high
//! watermark) and the fetches and acks=all produces waiting on it. Lives on
//! the shard that owns it on this broker (the replica's shard in metadata).
//!
//! ## Replication, Kafka's way
//! The leader appends client batches stamped with its leader epoch; followers
//! copy them byte for byte by fetching from the leader (`replica.rs`). Each
//! follower fetch tells the leader the follower's log end (the fetch offset);
//! the high watermark is the smallest log end over the in-sync replicas (the
//! leader's own included) and never moves back while this replica leads.
//! Consumers read below the high watermark only; an acks=all produce is
//! answered once the high watermark passes its batch.
//!
//! Those rules live in `shardline_replication::ReplicaState`, a plain state
//! machine that takes `now` and events and returns decisions; this file is
//! its I/O driver: it feeds it the log's ends and the clock, and wakes the
//! waiters it says to wake.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    path::{Path, PathBuf},
    rc::Rc,
    sync::OnceLock,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_channel::oneshot;
use shardline_log::{
    durable::{create_dir_durably, read_if_exists, rename_durably, write_file_atomically},
    validate_header_only, validate_stored_header, AbortedRange, AppendInfo, CleanReport, Clock, Log, LogConfig,
    LogError, Offset, ReadBatches, TransactionOutcomes,
};
use shardline_raft::PartitionMeta;
use shardline_replication::{
    EpochRefusal, IsrAnswer, IsrProposal, LeaderEpoch, Moment, NodeId, Placement, ReplicaState,
};

use crate::{
    control::{self, Marker},
    error::{EngineError, TxnError},
    producer::{MarkerRefusal, ProducerId, ProducerStates, SequenceCheck},
    txn_index::{AbortedTransaction, Opened, PartitionTransactions},
};

/// acks=all produces waiting on one partition for the high watermark; past
/// this bound new ones are refused with a timeout (backpressure).
pub(crate) const HW_WAITERS_MAX: usize = 8192;

/// Long-poll fetches waiting on one partition; past this the oldest are woken
/// early (they re-read and wait again), so a flood of idle consumers cannot
/// grow the list without bound.
pub(crate) const WAITERS_MAX: usize = 1024;

/// One parked fetch's wake-up on this shard, shared by every partition of
/// this shard it waits on: the first of them to get data fires it, once. So
/// a fetch naming any number of partitions holds one channel (and one waker)
/// per shard it reads from, never one per partition.
pub(crate) struct FetchWatch {
    fire: RefCell<Option<oneshot::Sender<()>>>,
}

impl FetchWatch {
    /// A watch and the receiver it fires.
    pub(crate) fn new() -> (Rc<FetchWatch>, oneshot::Receiver<()>) {
        let (sender, receiver) = oneshot::channel();
        let watch = FetchWatch {
            fire: RefCell::new(Some(sender)),
        };
        (Rc::new(watch), receiver)
    }

    /// Wakes the fetch (once; later calls do nothing).
    pub(crate) fn fire(&self) {
        if let Some(sender) = self.fire.borrow_mut().take() {
            let _ = sender.send(());
        }
        assert!(self.fire.borrow().is_none(), "a watch fires once");
    }

    /// Fired, or its fetch stopped waiting.
    fn is_done(&self) -> bool {
        self.fire.borrow().as_ref().is_none_or(oneshot::Sender::is_canceled)
    }
}

/// Name of the file in a partition directory holding its topic id, so a
/// deleted-and-recreated topic never picks up the old topic's data.
const TOPIC_ID_FILE: &str = "topic-id";

/// Most suffixes tried for a free quarantine name within one millisecond.
const QUARANTINE_NAMES_MAX: u32 = 1000;

/// Settings taken from topic configs when the partition is opened, and
/// again whenever the topic's configs change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PartitionSettings {
    /// `max.message.bytes`: largest batch accepted.
    pub(crate) max_message_bytes: usize,
    /// `min.insync.replicas`: acks=all needs at least this many in-sync replicas.
    pub(crate) min_insync_replicas: usize,
    /// `message.timestamp.before/after.max.ms`: how far a record's
    /// timestamp may be from the broker's time; `None`: unbounded.
    pub(crate) timestamp_bounds: Option<crate::timestamps::TimestampBounds>,
    /// `cleanup.policy` with `compact`: the cleaner's settings, and
    /// records need keys (`compaction.rs`).
    pub(crate) compaction: Option<crate::compaction::Compaction>,
    /// Delayed delivery (`delivery.rs`); `None`: consumers read to the
    /// high watermark.
    pub(crate) delivery: Option<crate::delivery::DeliveryRules>,
}

pub(crate) use shardline_replication::{Role, RoleChange};

/// Now, as replication's clock-free rules take it: time since the first
/// call in this process, on the monotonic clock.
pub(crate) fn moment_now() -> Moment {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    Moment(ORIGIN.get_or_init(Instant::now).elapsed())
}

/// A partition of the metadata image as replication's rules see it.
fn placement_of(meta: &PartitionMeta) -> Placement {
    Placement {
        leader: (meta.leader >= 0).then_some(NodeId(meta.leader)),
        leader_epoch: LeaderEpoch(meta.leader_epoch),
        partition_epoch: meta.partition_epoch,
        replicas: meta.replicas.iter().copied().map(NodeId).collect(),
        isr: meta.isr.iter().copied().map(NodeId).collect(),
    }
}

/// Result of a produce to one partition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Produced {
    pub(crate) base_offset: Offset,
    pub(crate) log_start: Offset,
    /// The time stamped on the batches of a LogAppendTime topic.
    pub(crate) log_append_time_ms: Option<i64>,
}

/// A partition open on this shard.
pub(crate) struct Partition {
    pub(crate) topic_id: [u8; 16],
    pub(crate) log: Log,
    settings: Cell<PartitionSettings>,
    /// The topic configs the log and settings were last given (`Shard`
    /// compares them with each new image's to apply changes live).
    pub(crate) topic_configs: RefCell<BTreeMap<String, String>>,
    pub(crate) dir: PathBuf,
    producers: RefCell<ProducerStates>,
    /// Open transactions (the last stable offset) and the aborted index
    /// (`txn_index.rs`).
    transactions: RefCell<PartitionTransactions>,
    waiters: RefCell<Vec<Rc<FetchWatch>>>,
    /// Where consumers stop on a topic with delayed delivery (`delivery.rs`).
    delivery: RefCell<crate::delivery::DeliveryBound>,
    /// The replication rules' state (`shardline_replication`): role, epoch,
    /// ISR, high watermark, follower progress.
    pub(crate) replica: RefCell<ReplicaState>,
    /// acks=all produces waiting for the high watermark to reach an offset.
    hw_waiters: RefCell<Vec<(Offset, oneshot::Sender<()>)>>,
    /// This broker is out of touch with the metadata quorum
    /// (`Shard::out_of_quorum`): waiting acks=all produces are answered
    /// NOT_LEADER_OR_FOLLOWER at once instead of at their timeout.
    quorum_lost: Cell<bool>,
}

/// Directory of a partition under the data directory.
pub(crate) fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join("partitions").join(format!("{topic}-{index}"))
}

/// Where partition directories that cannot be trusted are moved:
/// `<data_dir>/quarantine/`, beside the `partitions/` holding `dir`.
fn quarantine_root(dir: &Path) -> PathBuf {
    let data_dir = dir.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    data_dir.join("quarantine")
}

/// Whether the directory of a partition is this topic's, from its topic-id file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ownership {
    /// The file names this topic.
    Ours,
    /// No directory yet, or an empty one: the partition starts here.
    New,
    /// The data cannot be trusted to be this topic's: why.
    Unknown(String),
}

fn ownership(dir: &Path, hex: &str) -> Ownership {
    match read_if_exists(&dir.join(TOPIC_ID_FILE)) {
        Ok(Some(stored)) => match std::str::from_utf8(&stored).map(str::trim) {
            Ok(stored) if stored == hex => Ownership::Ours,
            Ok("") => Ownership::Unknown("its topic-id file is empty".into()),
            Ok(stored) => Ownership::Unknown(format!("its topic-id file names topic {stored}, not {hex}")),
            Err(_) => Ownership::Unknown("its topic-id file is not text".into()),
        },
        Ok(None) => match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ownership::New,
            Ok(true) => Ownership::New,
            Ok(false) => Ownership::Unknown("it holds files but no topic-id file".into()),
            Err(e) => Ownership::Unknown(format!("it cannot be listed: {e}")),
        },
        Err(e) => Ownership::Unknown(format!("its topic-id file cannot be read: {e}")),
    }
}

/// Makes `dir` this topic's partition directory, durably, before the log
/// opens in it: a directory whose data cannot be trusted to be this topic's
/// is moved aside to `<data_dir>/quarantine/` (never deleted); then the
/// directory and its topic-id file are created durably (`shardline_log::durable`).
/// Blocking: runs on the executor's blocking pool.
fn claim_partition_dir(dir: &Path, topic_id: [u8; 16]) -> Result<(), EngineError> {
    let hex: String = topic_id.iter().map(|b| format!("{b:02x}")).collect();
    match ownership(dir, &hex) {
        Ownership::Ours => return Ok(()),
        Ownership::New => {}
        Ownership::Unknown(why) => {
            quarantine(dir, &why)?;
        }
    }
    create_dir_durably(dir)?;
    write_file_atomically(&dir.join(TOPIC_ID_FILE), hex.as_bytes())?;
    assert_eq!(
        ownership(dir, &hex),
        Ownership::Ours,
        "a claimed directory is the topic's"
    );
    Ok(())
}

/// Moves `dir` to `<data_dir>/quarantine/<name>-<unix ms>` durably, with a
/// warning saying why; returns where it went.
fn quarantine(dir: &Path, why: &str) -> Result<PathBuf, EngineError> {
    let root = quarantine_root(dir);
    create_dir_durably(&root)?;
    let name = dir
        .file_name()
        .map_or_else(|| "partition".into(), |n| n.to_string_lossy());
    let stamp_ms = shardline_log::SystemClock.now_ms();
    let mut target = root.join(format!("{name}-{stamp_ms}"));
    for suffix in 1..QUARANTINE_NAMES_MAX {
        if !target.exists() {
            break;
        }
        target = root.join(format!("{name}-{stamp_ms}-{suffix}"));
    }
    rename_durably(dir, &target)?;
    tracing::warn!(
        dir = %dir.display(),
        moved_to = %target.display(),
        reason = why,
        "partition directory quarantined: its data is kept there, not deleted, and the partition starts empty"
    );
    Ok(target)
}

impl Partition {
    /// Opens (recovering) the partition's log and rebuilds producer state.
    pub(crate) async fn open(
        dir: PathBuf,
        topic_id: [u8; 16],
        config: LogConfig,
        settings: PartitionSettings,
        topic_configs: BTreeMap<String, String>,
        node_id: i32,
    ) -> Result<Partition, EngineError> {
        let claimed = dir.clone();
        glommio::executor()
            .spawn_blocking(move || claim_partition_dir(&claimed, topic_id))
            .await?;
        let log = Log::open(&dir, config).await?;
        let (producers, transactions) = replay_producers(&log)?;
        let partition = Partition {
            topic_id,
            log,
            settings: Cell::new(settings),
            topic_configs: RefCell::new(topic_configs),
            dir,
            producers: RefCell::new(producers),
            transactions: RefCell::new(transactions),
            waiters: RefCell::new(Vec::new()),
            delivery: RefCell::new(crate::delivery::DeliveryBound::unknown()),
            replica: RefCell::new(ReplicaState::new(NodeId(node_id), moment_now())),
            hw_waiters: RefCell::new(Vec::new()),
            quorum_lost: Cell::new(false),
        };
        partition.find_delivery_bound().await;
        Ok(partition)
    }

    /// Finds the delivery bound from the log start (at open, and when the
    /// topic's delivery rules change), yielding between looks.
    async fn find_delivery_bound(&self) {
        *self.delivery.borrow_mut() = crate::delivery::DeliveryBound::unknown();
        if self.settings.get().delivery.is_none() {
            return;
        }
        while self
            .consumer_view()
            .due_ms
            .is_some_and(|due_ms| due_ms <= crate::kafka::unix_now_ms())
        {
            glommio::yield_if_needed().await;
        }
    }

    /// What consumers may read now: the high watermark and last stable
    /// offset capped at the delivery bound (`delivery.rs`), moved past
    /// whatever has become due.
    pub(crate) fn consumer_view(&self) -> crate::delivery::ConsumerView {
        let high_watermark = self.high_watermark();
        let last_stable_offset = self.last_stable_offset();
        let Some(rules) = self.settings.get().delivery else {
            return crate::delivery::ConsumerView {
                high_watermark,
                last_stable_offset,
                due_ms: None,
            };
        };
        let now_ms = crate::kafka::unix_now_ms();
        let mut bound = self.delivery.borrow_mut();
        let look = bound.look(&rules, self.log.log_start(), self.log.log_end(), now_ms, |from| {
            crate::delivery::scan_read(&self.log, from)
        });
        crate::delivery::ConsumerView::capped(high_watermark, last_stable_offset, bound.bound(), look, now_ms)
    }

    /// Applies changed topic configs while open: the log's bounds (segment
    /// size and age, retention, durability) and the settings, then retention
    /// at once, so a lower bound frees space without waiting for the
    /// periodic pass. Returns the segments retention deleted.
    pub(crate) async fn reconfigure(
        &self,
        config: LogConfig,
        settings: PartitionSettings,
        topic_configs: BTreeMap<String, String>,
    ) -> Result<usize, EngineError> {
        self.log.reconfigure(config).await?;
        let delivery_changed = self.settings.get().delivery != settings.delivery;
        self.settings.set(settings);
        *self.topic_configs.borrow_mut() = topic_configs;
        if delivery_changed {
            self.find_delivery_bound().await;
            // Fetches parked on the old rules look again.
            self.wake_waiters();
        }
        Ok(self.log.apply_retention().await?)
    }

    /// One cleaning pass over the log if the topic is compacted
    /// (`compaction.rs`); `None` when it is not, or had nothing to do. The
    /// cleaner is told which transactions ended how (`txn_index.rs`): it
    /// cleans below the last stable offset only (and below the first
    /// transaction whose marker is not yet durable), drops the records of
    /// aborted transactions and compacts committed ones like any record.
    pub(crate) async fn clean(&self) -> Result<Option<CleanReport>, EngineError> {
        let Some(compaction) = self.settings.get().compaction else {
            return Ok(None);
        };
        if !self.transactions.borrow().is_complete() {
            // Aborted records could pass for committed ones: keep every
            // transactional batch whole, as without outcomes.
            return Ok(self.log.clean(&compaction.cleaner).await?);
        }
        let lso = self.last_stable_offset();
        let stable_end = self.transactions.borrow_mut().judged_end(lso, self.log.durable_end());
        let aborted = self
            .aborted_between(Offset(0), stable_end)
            .into_iter()
            .map(|a| AbortedRange {
                producer_id: a.producer_id.0,
                first_offset: a.first_offset,
                last_offset: a.last_offset,
            })
            .collect();
        let outcomes = TransactionOutcomes { stable_end, aborted };
        Ok(self.log.clean_transactions(&compaction.cleaner, &outcomes).await?)
    }

    /// The idempotent producers this partition remembers, with where their
    /// open transaction here starts.
    pub(crate) fn producers(&self) -> Vec<crate::producer::ProducerSummary> {
        let mut producers = self.producers.borrow().describe();
        let transactions = self.transactions.borrow();
        for producer in &mut producers {
            if let Some(start) = transactions.open_start(ProducerId(producer.producer_id)) {
                producer.current_txn_start_offset = start.0;
            }
        }
        producers
    }

    /// Applies the partition's placement from a new metadata image.
    pub(crate) fn apply_placement(&self, meta: &PartitionMeta) -> RoleChange {
        let change = self
            .replica
            .borrow_mut()
            .apply_placement(&placement_of(meta), self.log.log_end(), moment_now());
        if change != RoleChange::None && change != RoleChange::BecameLeader {
            // Waiting acks=all produces re-check the role and fail with NOT_LEADER.
            self.wake_hw_waiters(true);
        }
        // An ISR change alone can move the high watermark.
        self.recompute_high_watermark();
        change
    }

    /// The partition's role and leader epoch now.
    pub(crate) fn role(&self) -> (Role, i32) {
        let state = self.replica.borrow();
        (state.role(), state.leader_epoch().0)
    }

    /// (led by this node, under-replicated): a leader whose in-sync
    /// replicas are fewer than its replicas (Kafka's UnderReplicated).
    pub(crate) fn replication_health(&self) -> (bool, bool) {
        self.replica.borrow().replication_health()
    }

    pub(crate) fn high_watermark(&self) -> Offset {
        self.replica.borrow().high_watermark()
    }

    /// The largest batch a produce may append (the topic's max.message.bytes).
    pub(crate) fn max_message_bytes(&self) -> usize {
        self.settings.get().max_message_bytes
    }

    /// The leader epoch, if this broker leads the partition.
    fn leading_epoch(&self) -> Result<i32, EngineError> {
        match self.replica.borrow().leading_epoch() {
            Some(epoch) => Ok(epoch.0),
            None => Err(EngineError::NotLeader),
        }
    }

    /// In-sync replicas now.
    fn isr_len(&self) -> usize {
        self.replica.borrow().isr().len()
    }

    /// Checks a request's `current_leader_epoch` (-1 = not given).
    pub(crate) fn check_leader_epoch(&self, requested: i32) -> Result<(), EngineError> {
        let requested = (requested >= 0).then_some(LeaderEpoch(requested));
        match self.replica.borrow().check_leader_epoch(requested) {
            Ok(_) => Ok(()),
            Err(EpochRefusal::NotLeader) => Err(EngineError::NotLeader),
            Err(EpochRefusal::Fenced) => Err(EngineError::FencedLeaderEpoch),
            Err(EpochRefusal::Unknown) => Err(EngineError::UnknownLeaderEpoch),
        }
    }

    /// Leader: a follower fetched from `fetch_offset` (its log end).
    pub(crate) fn record_follower_fetch(&self, replica: i32, fetch_offset: Offset) {
        let log_end = self.log.log_end();
        let recorded =
            self.replica
                .borrow_mut()
                .record_follower_fetch(NodeId(replica), fetch_offset, log_end, moment_now());
        if recorded {
            self.recompute_high_watermark();
        }
    }

    /// Leader: moves the high watermark (`ReplicaState::advance_high_watermark`)
    /// with the leader's own copy counted up to what readers may see: under
    /// fsync always, only what is fsynced (a consumer never reads a batch a
    /// crash could take away). Wakes consumers and acks=all waiters when it
    /// advances. Follower: nothing to do here (`follow_high_watermark`).
    pub(crate) fn recompute_high_watermark(&self) {
        let advanced = self
            .replica
            .borrow_mut()
            .advance_high_watermark(self.log.visible_end(), self.log.log_end());
        if advanced {
            self.wake_hw_waiters(false);
            self.wake_waiters();
        }
    }

    /// Follower: where to fetch from (`ReplicaState::fetch_offset`): the
    /// log's visible end, so the leader counts only what this replica keeps
    /// through a crash.
    pub(crate) fn fetch_offset(&self) -> Offset {
        let state = self.replica.borrow();
        if matches!(state.role(), Role::Follower { .. }) {
            state.fetch_offset(self.log.visible_end(), self.log.log_end())
        } else {
            self.log.visible_end()
        }
    }

    /// Follower: takes the leader's high watermark, bounded by this log's end.
    pub(crate) fn follow_high_watermark(&self, leader_high_watermark: Offset) {
        let log_end = self.log.log_end();
        self.replica
            .borrow_mut()
            .follow_high_watermark(leader_high_watermark, log_end);
    }

    /// The ISR this leader wants now (`ReplicaState::desired_isr`): `None`
    /// when nothing should change or a change is already in flight.
    pub(crate) fn desired_isr(&self, lag_max: Duration, alive: impl Fn(i32) -> bool) -> Option<IsrProposal> {
        self.replica
            .borrow_mut()
            .desired_isr(moment_now(), lag_max, |node| alive(node.0))
    }

    /// `proposal` went to the metadata group (`ReplicaState::isr_change_proposed`).
    pub(crate) fn isr_change_proposed(&self, proposal: &IsrProposal) {
        self.replica.borrow_mut().isr_change_proposed(proposal);
    }

    /// The metadata group answered the change in flight (or did not).
    pub(crate) fn isr_change_answered(&self, answer: IsrAnswer) {
        self.replica.borrow_mut().isr_change_answered(answer);
    }

    /// acks=all: waits until the high watermark reaches `end`, this broker
    /// stops leading, or `timeout` passes.
    pub(crate) async fn wait_replicated(&self, end: Offset, timeout: Duration) -> Result<(), EngineError> {
        let deadline = Instant::now() + timeout;
        loop {
            let (role, _) = self.role();
            if role != Role::Leader || self.quorum_lost.get() {
                return Err(EngineError::NotLeader);
            }
            if self.high_watermark() >= end {
                // Kafka's rule: the batch is committed, but if the ISR shrank
                // below min.insync.replicas while it waited (the high
                // watermark may have moved *because* the ISR shrank), the
                // producer is told it has fewer copies than it asked for.
                let isr = self.isr_len();
                let min_isr = self.settings.get().min_insync_replicas;
                if isr < min_isr {
                    return Err(EngineError::NotEnoughReplicasAfterAppend { isr, min_isr });
                }
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(EngineError::ReplicationTimedOut);
            }
            let (sender, receiver) = oneshot::channel();
            {
                let mut waiters = self.hw_waiters.borrow_mut();
                waiters.retain(|(_, w)| !w.is_canceled());
                if waiters.len() >= HW_WAITERS_MAX {
                    return Err(EngineError::ReplicationTimedOut);
                }
                waiters.push((end, sender));
            }
            let _ = glommio::timer::timeout(deadline.saturating_duration_since(now), async move {
                let _ = receiver.await;
                Ok(())
            })
            .await;
        }
    }

    /// Marks this broker out of (or back in) touch with the metadata
    /// quorum; on losing it, answers every waiting acks=all produce.
    pub(crate) fn set_quorum_lost(&self, lost: bool) {
        if !self.quorum_lost.replace(lost) && lost {
            self.wake_hw_waiters(true);
        }
    }

    fn wake_hw_waiters(&self, all: bool) {
        let high_watermark = self.high_watermark();
        let mut waiters = self.hw_waiters.borrow_mut();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut *waiters)
            .into_iter()
            .partition(|(end, _)| all || *end <= high_watermark);
        *waiters = waiting;
        drop(waiters);
        for (_, waiter) in ready {
            let _ = waiter.send(());
        }
    }

    /// Leader: appends a batch the broker wrote itself (the group
    /// coordinator's records) and waits until the in-sync replicas have it.
    pub(crate) async fn append_internal(&self, records: Bytes, timeout: Duration) -> Result<Offset, EngineError> {
        let leader_epoch = self.leading_epoch()?;
        let info = self.append_as_leader(records, leader_epoch).await?;
        self.wait_replicated(Offset(info.last_offset.0 + 1), timeout).await?;
        Ok(info.base_offset)
    }

    /// Appends stamped with this leader's epoch, then wakes the fetches
    /// parked on the log end (followers) and moves the high watermark (which
    /// wakes consumers and acks=all waiters when it advances).
    async fn append_as_leader(&self, records: Bytes, leader_epoch: i32) -> Result<AppendInfo, LogError> {
        let info = self.log.append_with_epoch(records, leader_epoch).await?;
        self.wake_waiters();
        self.recompute_high_watermark();
        Ok(info)
    }

    /// Follower: appends batches copied from the leader (offsets and epochs
    /// as the leader stamped them) and replays their producer state.
    pub(crate) async fn append_replicated(&self, records: Bytes) -> Result<(), EngineError> {
        if records.is_empty() {
            return Ok(());
        }
        self.log.append_replicated(records.clone()).await?;
        let mut producers = self.producers.borrow_mut();
        let mut transactions = self.transactions.borrow_mut();
        let mut at = 0usize;
        while let Some(rest) = records.get(at..) {
            // A leader's log may be compacted: its batches are stored ones.
            let Ok(header) = validate_stored_header(rest) else {
                break;
            };
            if header.next_offset() > self.log.log_end() {
                break;
            }
            producers.replay(&header);
            if let Some(marker) = transactions.replay(&header, rest.get(..header.total_bytes()).unwrap_or_default()) {
                producers.marker(marker.producer_id, marker.producer_epoch, marker.coordinator_epoch);
            }
            at += header.total_bytes();
        }
        drop(producers);
        drop(transactions);
        self.wake_waiters();
        Ok(())
    }

    /// Follower: removes everything from `offset` on (what the new leader
    /// does not have) and rebuilds producer state from what is left.
    pub(crate) async fn truncate_to(&self, offset: Offset) -> Result<Offset, EngineError> {
        let end = self.log.truncate_to(offset).await?;
        let (producers, transactions) = replay_producers(&self.log)?;
        *self.producers.borrow_mut() = producers;
        *self.transactions.borrow_mut() = transactions;
        self.delivery.borrow_mut().truncated(end);
        self.replica.borrow_mut().truncated(end);
        Ok(end)
    }

    /// Appends one produce request's records for this partition: exactly one
    /// batch, checked against `max.message.bytes` and the producer's sequence.
    pub(crate) async fn produce(&self, records: Bytes, acks: i16, timeout: Duration) -> Result<Produced, EngineError> {
        let leader_epoch = self.leading_epoch()?;
        if acks == -1 {
            let isr = self.isr_len();
            let min_isr = self.settings.get().min_insync_replicas;
            if isr < min_isr {
                return Err(EngineError::NotEnoughReplicas { isr, min_isr });
            }
        }
        let header = validate_header_only(&records).map_err(|e| EngineError::Log(LogError::InvalidBatch(e)))?;
        if header.total_bytes() != records.len() {
            return Err(EngineError::InvalidRecord(
                "a produce request must carry exactly one record batch per partition".into(),
            ));
        }
        if records.len() > self.settings.get().max_message_bytes {
            return Err(EngineError::MessageTooLarge {
                batch_bytes: records.len(),
                max_message_bytes: self.settings.get().max_message_bytes,
            });
        }
        if let Some(bounds) = self.settings.get().timestamp_bounds {
            bounds.check(&records, crate::kafka::unix_now_ms())?;
        }
        if self.settings.get().compaction.is_some() {
            crate::compaction::check_keys(&records)?;
        }
        if let Some(rules) = self.settings.get().delivery {
            rules.check(&records, crate::kafka::unix_now_ms())?;
        }
        if header.is_control() {
            return Err(EngineError::InvalidRecord(
                "control batches are written by the broker, not produced".into(),
            ));
        }
        let transactional = control::is_transactional(&header);
        if transactional && header.base_sequence < 0 {
            return Err(EngineError::InvalidRecord(
                "a transactional batch needs a producer id and sequence".into(),
            ));
        }
        let check = self.producers.borrow_mut().check(&header);
        match check {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate {
                base_offset,
                last_offset,
            } => {
                if acks == -1 {
                    self.wait_replicated(Offset(last_offset.0 + 1), timeout).await?;
                }
                return Ok(Produced {
                    base_offset,
                    log_start: self.log.log_start(),
                    log_append_time_ms: None,
                });
            }
            SequenceCheck::DuplicateInFlight => return Err(EngineError::DuplicateSequence),
            SequenceCheck::OutOfOrder { expected, got } => {
                return Err(EngineError::OutOfOrderSequence { expected, got })
            }
            SequenceCheck::Fenced { .. } => return Err(EngineError::ProducerFenced),
        }
        // Opened before the append, at an offset no later than the batch's:
        // the LSO stays below the batch from the moment it can be read.
        let opened_at = self.log.log_end();
        let opened = if transactional {
            self.transactions
                .borrow_mut()
                .data(ProducerId(header.producer_id), opened_at)
        } else {
            Opened::Already
        };
        if opened == Opened::Full {
            self.producers.borrow_mut().abort(&header);
            return Err(EngineError::Txn(TxnError::ConcurrentTransactions));
        }
        match self.append_as_leader(records, leader_epoch).await {
            Ok(info) => {
                self.producers
                    .borrow_mut()
                    .complete(&header, info.base_offset, info.last_offset);
                if acks == -1 {
                    self.wait_replicated(Offset(info.last_offset.0 + 1), timeout).await?;
                }
                Ok(Produced {
                    base_offset: info.base_offset,
                    log_start: info.log_start,
                    log_append_time_ms: info.log_append_time_ms,
                })
            }
            Err(e) => {
                self.producers.borrow_mut().abort(&header);
                if opened == Opened::New {
                    self.transactions
                        .borrow_mut()
                        .undo_data(ProducerId(header.producer_id), opened_at);
                }
                Err(e.into())
            }
        }
    }

    /// Leader: appends a transaction marker (`control.rs`), waits until the
    /// in-sync replicas have it, and closes the producer's transaction here.
    /// Returns the marker's offset.
    pub(crate) async fn write_marker(&self, marker: Marker, timeout: Duration) -> Result<Offset, EngineError> {
        let leader_epoch = self.leading_epoch()?;
        let refusal =
            self.producers
                .borrow()
                .check_marker(marker.producer_id, marker.producer_epoch, marker.coordinator_epoch);
        match refusal {
            Ok(()) => {}
            Err(MarkerRefusal::StaleProducerEpoch) => return Err(EngineError::ProducerFenced),
            Err(MarkerRefusal::StaleCoordinator) => return Err(EngineError::Txn(TxnError::CoordinatorFenced)),
        }
        let batch = control::build(&marker, crate::kafka::unix_now_ms());
        let info = self.append_as_leader(batch, leader_epoch).await?;
        self.producers
            .borrow_mut()
            .marker(marker.producer_id, marker.producer_epoch, marker.coordinator_epoch);
        {
            let mut transactions = self.transactions.borrow_mut();
            transactions.marker(marker.producer_id, marker.outcome, info.base_offset);
            transactions.forget_before(self.log.log_start());
        }
        // The LSO may have moved: wake read_committed fetches.
        self.wake_waiters();
        self.wait_replicated(Offset(info.last_offset.0 + 1), timeout).await?;
        Ok(info.base_offset)
    }

    /// The last stable offset: read_committed consumers read below it.
    pub(crate) fn last_stable_offset(&self) -> Offset {
        self.transactions.borrow().last_stable_offset(self.high_watermark())
    }

    /// Aborted transactions a read_committed fetch of `[from, to)` must skip.
    pub(crate) fn aborted_between(&self, from: Offset, to: Offset) -> Vec<AbortedTransaction> {
        self.transactions.borrow().aborted_between(from, to)
    }

    /// Whole batches from `from` up to `end`, at most `bytes_max` (at least
    /// one batch). Consumers read up to the high watermark, followers to the
    /// log end.
    pub(crate) fn read(&self, from: Offset, bytes_max: usize, end: Offset) -> Result<ReadBatches, EngineError> {
        Ok(self.log.read(from, bytes_max, end)?)
    }

    /// Fires `watch` at the next append (or when the partition closes).
    pub(crate) fn watch(&self, watch: &Rc<FetchWatch>) {
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| !w.is_done());
        if waiters.len() >= WAITERS_MAX {
            // Wake the oldest early; it re-reads and waits again.
            let oldest = waiters.remove(0);
            oldest.fire();
        }
        waiters.push(Rc::clone(watch));
        assert!(waiters.len() <= WAITERS_MAX, "partition waiters bounded");
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waiter in waiters {
            waiter.fire();
        }
    }

    /// Flushes and closes the log; wakes every waiter.
    pub(crate) async fn close(&self) {
        self.replica.borrow_mut().close();
        self.wake_hw_waiters(true);
        if let Err(e) = self.log.close().await {
            tracing::warn!(dir = %self.dir.display(), error = %e, "closing partition log");
        }
        self.wake_waiters();
    }
}

/// Producer state and transactions rebuilt from the log: every batch
/// header, and the records of control batches (`txn_index.rs`).
fn replay_producers(log: &Log) -> Result<(ProducerStates, PartitionTransactions), EngineError> {
    let mut producers = ProducerStates::default();
    let mut any_transactional = false;
    log.for_each_batch_header(|header| {
        producers.replay(header);
        any_transactional |= control::is_transactional(header);
    })?;
    let mut transactions = PartitionTransactions::default();
    if !any_transactional {
        return Ok((producers, transactions));
    }
    let mut from = log.log_start();
    let end = log.log_end();
    // Each read returns at least one batch, so this ends within the log's
    // batch count; the bound is a backstop.
    for _ in 0..=usize::try_from(end.0 - from.0).unwrap_or(0) {
        if from >= end {
            break;
        }
        let read = match log.read(from, usize::MAX, end) {
            Ok(read) => read,
            // A damaged range is never served: go on after it.
            Err(LogError::CorruptRange { range, .. }) if range.next_offset > from => {
                tracing::warn!(
                    offset = from.0,
                    next = range.next_offset.0,
                    "transactions: skipping a damaged range"
                );
                from = range.next_offset;
                continue;
            }
            Err(e) => {
                tracing::warn!(offset = from.0, error = %e, "transactions: log unreadable from here");
                break;
            }
        };
        for chunk in &read.chunks {
            let mut at = 0usize;
            while let Some(header) = chunk.get(at..).and_then(shardline_log::BatchHeader::parse) {
                let total = header.total_bytes();
                let Some(bytes) = chunk.get(at..at + total) else { break };
                if let Some(marker) = transactions.replay(&header, bytes) {
                    producers.marker(marker.producer_id, marker.producer_epoch, marker.coordinator_epoch);
                }
                at += total;
            }
        }
        if read.next_offset <= from {
            break;
        }
        from = read.next_offset;
    }
    transactions.forget_before(log.log_start());
    Ok((producers, transactions))
}

pub(crate) fn remove_dir(dir: &Path) -> Result<(), EngineError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_err("removing partition directory", dir, source)),
    }
}

fn io_err(context: &'static str, path: &Path, source: std::io::Error) -> EngineError {
    EngineError::Log(LogError::Io {
        context,
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    const ID: [u8; 16] = [7; 16];
    const ID_HEX: &str = "07070707070707070707070707070707";

    /// A data directory with partition `orders-0` holding a segment and the
    /// given topic-id file contents (`None`: no topic-id file).
    fn data_dir_with(topic_id: Option<&[u8]>) -> (tempfile::TempDir, PathBuf) {
        let data = tempfile::tempdir().unwrap();
        let dir = partition_dir(data.path(), "orders", 0);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("00000000000000000000.log"), b"acknowledged data").unwrap();
        if let Some(contents) = topic_id {
            std::fs::write(dir.join(TOPIC_ID_FILE), contents).unwrap();
        }
        (data, dir)
    }

    /// The one directory under `<data_dir>/quarantine/`, if any.
    fn quarantined(data_dir: &Path) -> Option<PathBuf> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(data_dir.join("quarantine"))
            .ok()?
            .map(|e| e.unwrap().path())
            .collect();
        assert!(entries.len() <= 1, "{entries:?}");
        entries.pop()
    }

    fn assert_quarantined_and_claimed(data_dir: &Path, dir: &Path) {
        let aside = quarantined(data_dir).expect("the untrusted directory was moved aside");
        assert!(aside.file_name().unwrap().to_string_lossy().starts_with("orders-0-"));
        assert_eq!(
            std::fs::read(aside.join("00000000000000000000.log")).unwrap(),
            b"acknowledged data",
            "quarantined, never deleted"
        );
        assert_eq!(std::fs::read_to_string(dir.join(TOPIC_ID_FILE)).unwrap(), ID_HEX);
        assert!(
            !dir.join("00000000000000000000.log").exists(),
            "the partition starts empty"
        );
    }

    #[test]
    fn an_empty_topic_id_file_is_quarantined_not_deleted() {
        let (data, dir) = data_dir_with(Some(b""));
        claim_partition_dir(&dir, ID).unwrap();
        assert_quarantined_and_claimed(data.path(), &dir);
    }

    #[test]
    fn another_topics_id_is_quarantined_not_deleted() {
        let (data, dir) = data_dir_with(Some(b"0808080808080808080808080808080808"));
        claim_partition_dir(&dir, ID).unwrap();
        assert_quarantined_and_claimed(data.path(), &dir);
    }

    #[test]
    fn data_without_a_topic_id_file_is_quarantined() {
        let (data, dir) = data_dir_with(None);
        claim_partition_dir(&dir, ID).unwrap();
        assert_quarantined_and_claimed(data.path(), &dir);
    }

    #[test]
    fn the_topics_own_directory_is_kept_and_a_new_one_claimed() {
        let (data, dir) = data_dir_with(Some(format!("{ID_HEX}\n").as_bytes()));
        claim_partition_dir(&dir, ID).unwrap();
        assert!(quarantined(data.path()).is_none());
        assert!(dir.join("00000000000000000000.log").exists());

        let fresh = partition_dir(data.path(), "fresh", 3);
        claim_partition_dir(&fresh, ID).unwrap();
        assert_eq!(std::fs::read_to_string(fresh.join(TOPIC_ID_FILE)).unwrap(), ID_HEX);
        assert!(
            !fresh.join("topic-id.tmp").exists(),
            "written through a synced temporary"
        );
        assert!(quarantined(data.path()).is_none());
    }

    #[test]
    fn two_quarantines_in_one_millisecond_keep_both() {
        let (data, dir) = data_dir_with(Some(b""));
        let first = quarantine(&dir, "test").unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let second = quarantine(&dir, "test").unwrap();
        assert_ne!(first, second);
        assert!(first.exists() && second.exists());
        assert_eq!(first.parent(), Some(data.path().join("quarantine").as_path()));
    }
}
