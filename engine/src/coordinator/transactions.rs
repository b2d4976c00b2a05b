//! The transaction coordinator: transactional ids and their transactions,
//! driven through `transaction.rs`'s rules.
//!
//! ## Placement and durability
//! Transactional ids live in the partitions of the internal topic
//! `__transaction_state` (created at engine start, like
//! `__consumer_offsets`: [`TRANSACTIONS_PARTITIONS_PER_SHARD`] × shard
//! count partitions, `shardline.fsync=always`, compacted). Id T belongs to
//! partition `java_hash(T) mod N` (Kafka's rule), and the shard that leads
//! that partition is T's coordinator: it holds T's state in a
//! [`TransactionTable`] (`!Send`, never locked). Every transition is
//! appended to that partition (`record.rs`, kind 7, keyed by the id, so
//! compaction keeps the latest per id) and is durable and on every in-sync
//! replica before it is installed and the client answered. Loading a
//! partition replays its log, the last state per id winning.
//!
//! ## Ending a transaction
//! EndTxn stores PrepareCommit (or PrepareAbort): the commit point. Then
//! the coordinator writes a marker (`control.rs`) into every partition the
//! transaction wrote to — on the shard that leads it (`Shard::invoke_on`) —
//! and tells the coordinator of every group it committed offsets for
//! (`coordinator::end_transaction`), then stores CompleteCommit. The client
//! is answered once the prepare is stored and the markers were attempted.
//! A partition led by another node gets its marker through WriteTxnMarkers
//! to that node (`kafka/transactions.rs` serves it there); a group's
//! coordinator gets the outcome as a "marker" for its `__consumer_offsets`
//! partition, the same way. Markers that could not be written (a partition
//! without a leader) are retried by the tick, as are the prepared transactions found when a
//! partition loads (a crash between prepare and complete): a marker written
//! twice is harmless (`txn_index.rs`).
//!
//! ## Timeouts and expiry
//! A tick every [`super::TICK_INTERVAL`] aborts the transactions open longer
//! than their `transaction.timeout.ms`, bumping the epoch (the producer that
//! left it open is fenced), as Kafka does. Once a minute, ids idle for
//! [`TRANSACTIONAL_ID_EXPIRATION_MS`] are deleted (a tombstone stored, then
//! forgotten).

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
    time::Duration,
};

use super::{
    partition_for,
    record::Entry,
    replay, store_in,
    transaction::{
        EndStep, InitStep, Producer, TransactionTable, TxnMetadata, TxnState, TRANSACTIONAL_ID_EXPIRATION_MS,
    },
    OFFSETS_TOPIC, TICK_INTERVAL,
};
use crate::{
    control::{Marker, Outcome},
    error::{EngineError, TxnError},
    partition::Partition,
    producer::ProducerId,
    shard::Shard,
};

/// The internal topic holding transaction state.
pub(crate) const TRANSACTIONS_TOPIC: &str = "__transaction_state";
/// Partitions of the internal topic per shard at creation (as for
/// `__consumer_offsets`: spreads ids over every shard).
pub(crate) const TRANSACTIONS_PARTITIONS_PER_SHARD: i32 = 2;
/// Ticks between two looks for expired transactional ids (a minute: the
/// expiration is days).
const EXPIRY_SCAN_TICKS: u32 = 300;
/// How long a marker write waits for its partition's in-sync replicas.
const MARKER_TIMEOUT: Duration = Duration::from_secs(5);

/// The transactional ids of every `__transaction_state` partition led by
/// one shard.
#[derive(Default)]
pub(crate) struct TxnCoordinator {
    /// By partition: the load it came from, and its table.
    partitions: RefCell<HashMap<i32, (u64, TransactionTable)>>,
    /// Loads so far (numbers each one).
    loads: Cell<u64>,
}

/// One load of one partition's table. A transition decided on it is
/// installed only into that same load: a partition unloaded and loaded
/// again while a write was in flight replayed its own state from the log,
/// and the request is answered NOT_COORDINATOR (the client retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loaded {
    index: i32,
    incarnation: u64,
}

impl TxnCoordinator {
    /// Rebuilds partition `index`'s ids from its log. Prepared
    /// transactions among them are finished by the next tick.
    pub(crate) fn load(&self, index: i32, partition: &Partition) {
        let mut table = TransactionTable::default();
        let replayed = replay(index, partition, |entry, log_offset| match entry {
            Entry::Transaction(meta) => table.restore(meta),
            Entry::TransactionTombstone { transactional_id } => table.forget(&transactional_id),
            _ => tracing::warn!(log_offset, "group entry in a {TRANSACTIONS_TOPIC} partition: skipped"),
        });
        tracing::info!(
            partition = index,
            batches = replayed.batches,
            entries = replayed.entries,
            skipped = replayed.skipped,
            transactional_ids = table.len(),
            "transaction coordinator partition loaded"
        );
        let incarnation = self.loads.get() + 1;
        self.loads.set(incarnation);
        self.partitions.borrow_mut().insert(index, (incarnation, table));
        assert!(self.partitions.borrow().contains_key(&index), "the partition is loaded");
    }

    /// Drops partition `index`'s ids (another broker or shard leads it now).
    pub(crate) fn unload(&self, index: i32) {
        self.partitions.borrow_mut().remove(&index);
    }

    /// Runs `f` (a decision) on partition `index`'s table; returns the
    /// load it ran on.
    fn decide<R>(&self, index: i32, f: impl FnOnce(&mut TransactionTable) -> R) -> Result<(Loaded, R), TxnError> {
        let mut partitions = self.partitions.borrow_mut();
        let (incarnation, table) = partitions.get_mut(&index).ok_or(TxnError::NotCoordinator)?;
        let at = Loaded {
            index,
            incarnation: *incarnation,
        };
        Ok((at, f(table)))
    }

    /// Runs `f` on the table of load `at`, if it is still the loaded one.
    fn in_load<R>(&self, at: Loaded, f: impl FnOnce(&mut TransactionTable) -> R) -> Result<R, TxnError> {
        let mut partitions = self.partitions.borrow_mut();
        match partitions.get_mut(&at.index) {
            Some((incarnation, table)) if *incarnation == at.incarnation => Ok(f(table)),
            _ => Err(TxnError::NotCoordinator),
        }
    }

    /// Every loaded table, with its load (for the tick).
    fn each_load<R>(&self, mut f: impl FnMut(&mut TransactionTable) -> R) -> Vec<(Loaded, R)> {
        self.partitions
            .borrow_mut()
            .iter_mut()
            .map(|(index, (incarnation, table))| {
                let at = Loaded {
                    index: *index,
                    incarnation: *incarnation,
                };
                (at, f(table))
            })
            .collect()
    }
}

fn ready(shard: &Shard, index: i32) -> Result<(), TxnError> {
    if shard.transactions.partitions.borrow().contains_key(&index) {
        Ok(())
    } else if shard.partition(TRANSACTIONS_TOPIC, index).is_ok() {
        Err(TxnError::LoadInProgress)
    } else {
        Err(TxnError::NotCoordinator)
    }
}

/// Stores `meta` in partition `index` (durable, replicated).
async fn store(shard: &Shard, index: i32, meta: &TxnMetadata) -> Result<(), EngineError> {
    store_in(shard, TRANSACTIONS_TOPIC, index, &[Entry::Transaction(meta.clone())])
        .await
        .map(|_| ())
}

/// Stores a decided transition and installs it; on failure the id keeps
/// its state and the client is told to retry.
async fn store_decided(
    shard: &Shard,
    at: Loaded,
    next: &TxnMetadata,
    keep_pending: bool,
    never_stored: bool,
) -> Result<(), TxnError> {
    let mut next = next.clone();
    next.updated_ms = crate::kafka::unix_now_ms();
    match store(shard, at.index, &next).await {
        Ok(()) => shard.transactions.in_load(at, |t| t.stored(next, keep_pending)),
        Err(e) => {
            tracing::warn!(id = %next.transactional_id, error = %e, "storing transaction state");
            let _ = shard
                .transactions
                .in_load(at, |t| t.store_failed(&next.transactional_id, never_stored));
            Err(TxnError::CoordinatorNotAvailable)
        }
    }
}

/// InitProducerId with a transactional id, on its coordinator shard.
/// `fresh` is a new producer id for a new id (or an exhausted epoch).
pub(crate) async fn init_producer_id(
    shard: &Rc<Shard>,
    index: i32,
    transactional_id: &str,
    timeout_ms: i32,
    expected: Option<Producer>,
    fresh: ProducerId,
) -> Result<Producer, TxnError> {
    ready(shard, index)?;
    let now_ms = crate::kafka::unix_now_ms();
    let (at, (existed, step)) = shard.transactions.decide(index, |t| {
        let existed = t.get(transactional_id).is_some();
        (
            existed,
            t.init_producer_id(transactional_id, timeout_ms, expected, now_ms, fresh),
        )
    })?;
    match step? {
        InitStep::Store(next) => {
            store_decided(shard, at, &next, false, !existed).await?;
            Ok(Producer {
                id: next.producer_id,
                epoch: next.producer_epoch,
            })
        }
        InitStep::AbortFirst(prepared) => {
            store_decided(shard, at, &prepared, true, false).await?;
            let answer = Producer {
                id: prepared.producer_id,
                epoch: prepared.producer_epoch,
            };
            if finish(shard, at, prepared).await {
                Ok(answer)
            } else {
                Err(TxnError::ConcurrentTransactions)
            }
        }
    }
}

/// DescribeTransactions of one id, on its coordinator shard.
pub(crate) fn describe(shard: &Shard, index: i32, transactional_id: &str) -> Result<TxnMetadata, TxnError> {
    ready(shard, index)?;
    let (_, found) = shard.transactions.decide(index, |t| t.get(transactional_id).cloned())?;
    found.ok_or(TxnError::TransactionalIdNotFound)
}

/// Every id of every partition this shard coordinates (ListTransactions).
pub(crate) fn list(shard: &Shard) -> Vec<TxnMetadata> {
    shard
        .transactions
        .each_load(|table| table.all().cloned().collect::<Vec<_>>())
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect()
}

/// AddPartitionsToTxn, on the coordinator shard.
pub(crate) async fn add_partitions(
    shard: &Rc<Shard>,
    index: i32,
    transactional_id: &str,
    producer: Producer,
    partitions: Vec<(String, i32)>,
) -> Result<(), TxnError> {
    ready(shard, index)?;
    let now_ms = crate::kafka::unix_now_ms();
    let (at, next) = shard.transactions.decide(index, |t| {
        t.add_partitions(transactional_id, producer, &partitions, now_ms)
    })?;
    match next? {
        Some(next) => store_decided(shard, at, &next, false, false).await,
        None => Ok(()),
    }
}

/// AddOffsetsToTxn, on the coordinator shard.
pub(crate) async fn add_group(
    shard: &Rc<Shard>,
    index: i32,
    transactional_id: &str,
    producer: Producer,
    group: String,
) -> Result<(), TxnError> {
    ready(shard, index)?;
    let now_ms = crate::kafka::unix_now_ms();
    let (at, next) = shard
        .transactions
        .decide(index, |t| t.add_group(transactional_id, producer, &group, now_ms))?;
    match next? {
        Some(next) => store_decided(shard, at, &next, false, false).await,
        None => Ok(()),
    }
}

/// EndTxn, on the coordinator shard: answered once the outcome is stored
/// (the markers are written before the answer too, but a failed marker only
/// delays them: the tick writes them).
pub(crate) async fn end(
    shard: &Rc<Shard>,
    index: i32,
    transactional_id: &str,
    producer: Producer,
    commit: bool,
) -> Result<(), TxnError> {
    ready(shard, index)?;
    let (at, step) = shard
        .transactions
        .decide(index, |t| t.end(transactional_id, producer, commit))?;
    match step? {
        EndStep::AlreadyDone => Ok(()),
        EndStep::Prepare(prepared) => {
            store_decided(shard, at, &prepared, true, false).await?;
            finish(shard, at, prepared).await;
            Ok(())
        }
    }
}

/// Writes the markers of a stored Prepare* state and tells its groups'
/// coordinators, then stores and installs Complete*. Returns whether it
/// completed; if not, the id is left prepared (not pending) for the tick.
async fn finish(shard: &Rc<Shard>, at: Loaded, prepared: TxnMetadata) -> bool {
    assert!(prepared.state.is_prepared(), "only a prepared transaction is finished");
    let outcome = if prepared.state == TxnState::PrepareCommit {
        Outcome::Commit
    } else {
        Outcome::Abort
    };
    let coordinator_epoch = shard.partition(TRANSACTIONS_TOPIC, at.index).map_or(0, |p| p.role().1);
    let marker = Marker {
        producer_id: prepared.producer_id,
        producer_epoch: prepared.producer_epoch,
        outcome,
        coordinator_epoch,
    };
    let done = match write_markers(shard, &prepared, marker).await {
        Ok(()) => {
            let completed = prepared.completed();
            store_decided(shard, at, &completed, false, false).await.is_ok()
        }
        Err(e) => {
            tracing::warn!(id = %prepared.transactional_id, error = %e, "transaction markers not all written yet");
            let _ = shard
                .transactions
                .in_load(at, |t| t.store_failed(&prepared.transactional_id, false));
            false
        }
    };
    if done {
        tracing::debug!(id = %prepared.transactional_id, ?outcome, "transaction ended");
    }
    done
}

/// Where a marker goes: every partition of `prepared`, and the
/// `__consumer_offsets` partition of each of its groups (whose coordinator
/// then commits or drops the offsets held for the transaction).
fn marker_targets(shard: &Shard, prepared: &TxnMetadata) -> Vec<(String, i32)> {
    let offsets_partitions = shard
        .image()
        .topics
        .get(OFFSETS_TOPIC)
        .map_or(0, |t| t.partitions.len());
    let mut targets: Vec<(String, i32)> = prepared.partitions.iter().cloned().collect();
    for group in &prepared.groups {
        let target = (OFFSETS_TOPIC.to_string(), partition_for(group, offsets_partitions));
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    targets
}

/// Applies `marker` to partition `(topic, index)`, led by this shard: a
/// control batch into a data partition, the end of the transaction's held
/// offsets in a `__consumer_offsets` partition. What WriteTxnMarkers does
/// for each partition it names, too.
pub(crate) async fn apply_marker(
    shard: &Rc<Shard>,
    topic: &str,
    index: i32,
    marker: Marker,
) -> Result<(), EngineError> {
    if topic == OFFSETS_TOPIC {
        let commit = marker.outcome == Outcome::Commit;
        return super::end_transaction_in_partition(shard, index, marker.producer_id.0, commit).await;
    }
    match shard.partition(topic, index) {
        Ok(partition) => partition.write_marker(marker, MARKER_TIMEOUT).await.map(|_| ()),
        // A deleted topic needs no marker.
        Err(EngineError::UnknownTopicOrPartition) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `marker` wherever `prepared` needs it: partitions led by this
/// node on their shards, the others through WriteTxnMarkers to their
/// leaders. The first failure is returned (the tick tries again later).
async fn write_markers(shard: &Rc<Shard>, prepared: &TxnMetadata, marker: Marker) -> Result<(), EngineError> {
    let epoch = crate::kafka::epoch_of(shard);
    // By owner shard, or leader node (not `kafka::split_by_owner`: this is
    // the broker's own work, not a client request forwarded between shards).
    let mut local: HashMap<usize, Vec<(String, i32)>> = HashMap::new();
    let mut remote: HashMap<i32, Vec<(String, i32)>> = HashMap::new();
    let image = shard.image();
    for (topic, index) in marker_targets(shard, prepared) {
        match shard.owner_of(&topic, index) {
            Ok(owner) => local.entry(owner).or_default().push((topic, index)),
            Err(EngineError::UnknownTopicOrPartition) => {}
            Err(EngineError::NotLeader) => {
                let leader = image
                    .topics
                    .get(&topic)
                    .and_then(|t| usize::try_from(index).ok().and_then(|i| t.partitions.get(i)))
                    .map_or(-1, |p| p.leader);
                if leader < 0 || leader == shard.node_id() {
                    return Err(EngineError::LeaderNotAvailable);
                }
                remote.entry(leader).or_default().push((topic, index));
            }
            Err(e) => return Err(e),
        }
    }
    drop(image);
    let parts = local.into_iter().map(|(owner, items)| {
        shard.invoke_on(owner, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            for (topic, index) in items {
                apply_marker(&s, &topic, index, marker).await?;
            }
            Ok::<(), EngineError>(())
        })
    });
    for answer in futures_util::future::join_all(parts).await {
        answer??;
    }
    for (leader, items) in remote {
        send_markers(shard, leader, marker, items).await?;
    }
    Ok(())
}

/// WriteTxnMarkers v1 to node `leader` for `items`, over the inter-broker
/// listener; any partition's error fails the whole (it is retried).
async fn send_markers(
    shard: &Shard,
    leader: i32,
    marker: Marker,
    items: Vec<(String, i32)>,
) -> Result<(), EngineError> {
    use kafka_protocol::messages::{
        write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic},
        ProducerId as WireProducerId, TopicName, WriteTxnMarkersRequest,
    };
    let address = crate::kafka::brokers::kafka_broker(&shard.image(), leader, 0, shard.inter_broker.listener())
        .ok_or(EngineError::LeaderNotAvailable)?;
    let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = std::collections::BTreeMap::new();
    for (topic, index) in items {
        by_topic.entry(topic).or_default().push(index);
    }
    let mut request = WriteTxnMarkersRequest::default();
    let mut written = WritableTxnMarker::default();
    written.producer_id = WireProducerId(marker.producer_id.0);
    written.producer_epoch = marker.producer_epoch.0;
    written.transaction_result = marker.outcome == Outcome::Commit;
    written.coordinator_epoch = marker.coordinator_epoch;
    written.topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            let mut topic = WritableTxnMarkerTopic::default();
            topic.name = TopicName(crate::kafka::str_bytes(&name));
            topic.partition_indexes = partitions;
            topic
        })
        .collect();
    request.markers = vec![written];
    let unreachable = |why: String| {
        tracing::warn!(leader, %why, "WriteTxnMarkers");
        EngineError::LeaderNotAvailable
    };
    let mut connection = shard
        .inter_broker
        .connect(&address.host, address.port, shard.node_id())
        .await
        .map_err(unreachable)?;
    let response = connection
        .call(WRITE_TXN_MARKERS_VERSION, &request)
        .await
        .map_err(unreachable)?;
    let failed = response
        .markers
        .iter()
        .flat_map(|m| &m.topics)
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index, p.error_code))
        })
        .find(|(_, _, code)| *code != 0);
    match failed {
        None => Ok(()),
        Some((topic, index, code)) => {
            tracing::debug!(leader, %topic, index, code, "a marker was refused; retried later");
            Err(EngineError::NotLeader)
        }
    }
}

/// The WriteTxnMarkers version spoken between brokers.
const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// Deletes the transactional ids idle past their expiration: a tombstone
/// each (compaction then removes the id from the log), then forgotten.
fn expire_ids(shard: &Rc<Shard>, now_ms: i64) {
    let expired = shard
        .transactions
        .each_load(|table| table.expirable(now_ms, TRANSACTIONAL_ID_EXPIRATION_MS));
    for (at, ids) in expired {
        for transactional_id in ids {
            let shard = Rc::clone(shard);
            glommio::spawn_local(async move {
                let tombstone = Entry::TransactionTombstone {
                    transactional_id: transactional_id.clone(),
                };
                let stored = store_in(&shard, TRANSACTIONS_TOPIC, at.index, &[tombstone]).await;
                let _ = shard.transactions.in_load(at, |t| match stored {
                    Ok(_) => {
                        t.forget(&transactional_id);
                        tracing::info!(id = %transactional_id, "transactional id expired");
                    }
                    Err(_) => t.store_failed(&transactional_id, false),
                });
            })
            .detach();
        }
    }
}

/// Runs on every shard until shutdown: aborts expired transactions and
/// finishes prepared ones.
pub(crate) async fn run_ticks(shard: Rc<Shard>) {
    let mut ticks = 0u32;
    while !shard.is_shutting_down() {
        glommio::timer::sleep(TICK_INTERVAL).await;
        let now_ms = crate::kafka::unix_now_ms();
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(EXPIRY_SCAN_TICKS) {
            expire_ids(&shard, now_ms);
        }
        let work = shard
            .transactions
            .each_load(|table| (table.expired(now_ms), table.unfinished()));
        for (at, (expired, unfinished)) in work {
            for prepared in expired {
                tracing::info!(id = %prepared.transactional_id, "transaction timed out: aborting");
                let shard = Rc::clone(&shard);
                glommio::spawn_local(async move {
                    if store_decided(&shard, at, &prepared, true, false).await.is_ok() {
                        finish(&shard, at, prepared).await;
                    }
                })
                .detach();
            }
            for prepared in unfinished {
                let shard = Rc::clone(&shard);
                glommio::spawn_local(async move {
                    finish(&shard, at, prepared).await;
                })
                .detach();
            }
        }
    }
}
