//! The group coordinator: consumer groups and their committed offsets.
//!
//! ## Placement
//! Groups live in the partitions of the internal topic `__consumer_offsets`
//! (created at engine start, [`OFFSETS_PARTITIONS_PER_SHARD`] × shard count
//! partitions, fixed once created, placed on shards like any topic). Group G
//! belongs to partition `java_hash(G) mod N` (Kafka's rule), and the shard that
//! owns that partition is G's coordinator: it holds all of G's state in a
//! [`Coordinator`] (`!Send`, never locked). Requests for G that arrive on
//! another shard are shipped to it with `Shard::invoke_on` (see
//! `kafka/groups.rs`).
//!
//! ## Durability
//! Every committed offset and every completed rebalance is appended to the
//! coordinator partition's log as a record batch of `record.rs` entries and is
//! durable (the internal topic is created with `shardline.fsync=always`)
//! before the client is answered. When the partition is opened the log is
//! replayed, last entry per key winning, to rebuild offsets and groups.
//! The internal topic is always compacted (`cleanup.policy=compact`, its
//! records keyed as `record.rs` says, small segments: `Shard::log_settings`),
//! so the replay reads about one entry per live key plus the active
//! segment, however many commits a group has made.
//!
//! ## The rules and the waiting
//! The group rules are `shardline_groups` (a plain state machine, also
//! driven by the simulator): they return answers instead of waiting. This
//! module keeps what waits — each parked JoinGroup or SyncGroup's one-shot
//! sender, by the group's [`Ticket`] for it, in the group's [`Slot`] — and
//! delivers the answers the rules return; it stores what they ask to be
//! stored, and hands them member ids from the shard's [`MemberIds`].
//!
//! ## Lifecycle
//! `Shard::apply_image` calls [`Coordinator::load`] right after it opens a
//! `__consumer_offsets` partition and [`Coordinator::unload`] before closing
//! one; a periodic [`tick`] expires sessions and ends join phases.

pub(crate) mod dlq;
pub(crate) mod record;
pub(crate) mod transaction;
pub(crate) mod transactions;

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_channel::oneshot;
use shardline_groups::{
    replay_entry, Answer, Group, GroupState, JoinAnswer, JoinRequest, JoinStep, MemberIds, Refusal, Stored, SyncAnswer,
    SyncStep, Ticket, GROUP_MEMBERS_MAX,
};
use shardline_log::{BatchHeader, Offset};

use self::record::{decode_batch, encode_batch, CommittedOffset, Entry};
use crate::{
    error::{EngineError, GroupError},
    partition::Partition,
    shard::Shard,
};

/// The internal topic holding groups and offsets.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Whether `topic` is one of the broker's internal topics (groups and
/// offsets, transaction state): clients may not write to them.
pub(crate) fn is_internal_topic(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == transactions::TRANSACTIONS_TOPIC
}
/// Partitions of the internal topic per shard at creation: two per shard
/// spreads groups over every shard even when placement is uneven, and keeps
/// the replay of one partition short.
pub(crate) const OFFSETS_PARTITIONS_PER_SHARD: i32 = 2;
/// Groups one coordinator partition holds; a new group past it is refused
/// with COORDINATOR_NOT_AVAILABLE.
pub(crate) const GROUPS_PER_PARTITION_MAX: usize = 10_000;
/// Longest commit metadata string (Kafka's `offset.metadata.max.bytes`).
pub(crate) const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// How often each shard expires sessions and checks join deadlines: the
/// precision of every group timeout.
pub(crate) const TICK_INTERVAL: Duration = Duration::from_millis(200);
/// Longest a parked JoinGroup or SyncGroup waits, beyond the group's own
/// timeouts, before it is answered REBALANCE_IN_PROGRESS (a safety net: the
/// group answers within its rebalance or session timeout).
const PARKED_WAIT_MAX: Duration = Duration::from_secs(6 * 60);

/// One partition an OffsetFetch asked about: (topic, partition, its
/// committed offset or none, or why it is not answered).
pub(crate) type FetchedOffset = (String, i32, Result<Option<CommittedOffset>, GroupError>);

/// Kafka's partition for a group: `abs(String.hashCode(group)) % partitions`.
pub(crate) fn partition_for(group: &str, partitions: usize) -> i32 {
    let mut hash: i32 = 0;
    for unit in group.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs: i32::MIN maps to 0 rather than overflowing.
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    let count = i32::try_from(partitions.max(1)).unwrap_or(i32::MAX);
    positive % count
}

/// A group as DescribeGroups and ListGroups show it.
#[derive(Debug, Clone)]
pub(crate) struct GroupDescription {
    pub(crate) state: &'static str,
    pub(crate) protocol_type: String,
    pub(crate) protocol: String,
    pub(crate) members: Vec<MemberDescription>,
}

#[derive(Debug, Clone)]
pub(crate) struct MemberDescription {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) metadata: Bytes,
    pub(crate) assignment: Bytes,
}

/// One offset to commit.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) committed: CommittedOffset,
}

/// Who commits: member id, static instance id, generation.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) generation: i32,
}

type JoinWaiter = oneshot::Sender<JoinAnswer>;
type SyncWaiter = oneshot::Sender<Result<SyncAnswer, Refusal>>;

/// One group and the requests parked on it, by the group's ticket for
/// each. At most one JoinGroup and one SyncGroup per member waits (the
/// rules answer the one a member's newer request replaces), so each table
/// is bounded by `GROUP_MEMBERS_MAX`.
pub(crate) struct Slot {
    group: Group,
    joins: HashMap<Ticket, JoinWaiter>,
    syncs: HashMap<Ticket, SyncWaiter>,
}

impl Slot {
    fn new(group: Group) -> Slot {
        Slot {
            group,
            joins: HashMap::new(),
            syncs: HashMap::new(),
        }
    }

    /// Sends each answer the rules returned to the request parked under
    /// its ticket (one that gave up waiting is gone: nothing to send).
    fn deliver(&mut self, answers: Vec<Answer>) {
        for answer in answers {
            match answer {
                Answer::Join(ticket, answer) => {
                    if let Some(waiter) = self.joins.remove(&ticket) {
                        let _ = waiter.send(answer);
                    }
                }
                Answer::Sync(ticket, answer) => {
                    if let Some(waiter) = self.syncs.remove(&ticket) {
                        let _ = waiter.send(answer);
                    }
                }
            }
        }
        assert!(
            self.joins.len() <= GROUP_MEMBERS_MAX && self.syncs.len() <= GROUP_MEMBERS_MAX,
            "parked requests are bounded by the members"
        );
    }

    /// Fails every parked request (the coordinator partition is closing, or the group is deleted).
    fn fail_parked(&mut self, refusal: Refusal) {
        let answers = self.group.fail_parked(refusal);
        self.deliver(answers);
    }
}

/// The groups of every coordinator partition open on one shard.
pub(crate) struct Coordinator {
    partitions: RefCell<HashMap<i32, HashMap<String, Slot>>>,
    /// Member ids for this shard's groups: prefixed with the wall clock at
    /// the shard's start, so ids differ across shards, brokers and restarts.
    member_ids: RefCell<MemberIds>,
    /// Handouts of committed offsets, for dead-letter delivery (`dlq.rs`).
    dlq: RefCell<dlq::DeliveryCounts>,
}

impl Default for Coordinator {
    fn default() -> Coordinator {
        let started_nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Coordinator {
            partitions: RefCell::new(HashMap::new()),
            member_ids: RefCell::new(MemberIds::new(started_nanos)),
            dlq: RefCell::new(dlq::DeliveryCounts::default()),
        }
    }
}

impl Coordinator {
    /// Rebuilds the groups of coordinator partition `index` from its log.
    pub(crate) fn load(&self, index: i32, partition: &Partition) {
        let now = Instant::now();
        let mut groups: HashMap<String, Group> = HashMap::new();
        let replayed = replay(index, partition, |entry, log_offset| {
            apply_entry(&mut groups, entry, log_offset, now);
        });
        let groups: HashMap<String, Slot> = groups.into_iter().map(|(id, g)| (id, Slot::new(g))).collect();
        tracing::info!(
            partition = index,
            batches = replayed.batches,
            entries = replayed.entries,
            skipped = replayed.skipped,
            groups = groups.len(),
            "coordinator partition loaded"
        );
        let old = self.partitions.borrow_mut().insert(index, groups);
        for slot in old.into_iter().flat_map(HashMap::into_values) {
            Slot::fail_parked(&mut { slot }, Refusal::NotCoordinator);
        }
    }

    /// Drops partition `index`'s groups; parked requests get NOT_COORDINATOR.
    pub(crate) fn unload(&self, index: i32) {
        let removed = self.partitions.borrow_mut().remove(&index);
        for slot in removed.into_iter().flat_map(HashMap::into_values) {
            Slot::fail_parked(&mut { slot }, Refusal::NotCoordinator);
        }
    }

    /// Runs `f` on group `id` of partition `index`, creating the group if
    /// `create` (bounded by [`GROUPS_PER_PARTITION_MAX`]).
    fn with_group<R>(
        &self,
        index: i32,
        id: &str,
        create: bool,
        f: impl FnOnce(&mut Group) -> R,
    ) -> Result<R, GroupError> {
        self.with_slot(index, id, create, |slot| f(&mut slot.group))
    }

    /// [`Coordinator::with_group`] with the group's parked requests: what
    /// a call that returns answers needs.
    fn with_slot<R>(
        &self,
        index: i32,
        id: &str,
        create: bool,
        f: impl FnOnce(&mut Slot) -> R,
    ) -> Result<R, GroupError> {
        let mut partitions = self.partitions.borrow_mut();
        let groups = partitions.get_mut(&index).ok_or(GroupError::NotCoordinator)?;
        if !groups.contains_key(id) {
            if !create {
                return Err(GroupError::GroupIdNotFound);
            }
            if groups.len() >= GROUPS_PER_PARTITION_MAX {
                return Err(GroupError::CoordinatorNotAvailable);
            }
            groups.insert(id.to_string(), Slot::new(Group::new(id, Instant::now())));
        }
        let slot = groups.get_mut(id).ok_or(GroupError::GroupIdNotFound)?;
        Ok(f(slot))
    }

    fn is_loaded(&self, index: i32) -> bool {
        self.partitions.borrow().contains_key(&index)
    }

    /// Every group on this shard: (group, protocol type, state).
    pub(crate) fn list(&self) -> Vec<(String, String, &'static str)> {
        let partitions = self.partitions.borrow();
        partitions
            .values()
            .flat_map(|groups| groups.values())
            .map(|slot| {
                let g = &slot.group;
                (
                    g.id().to_string(),
                    g.protocol_type().unwrap_or_default().to_string(),
                    g.state().name(),
                )
            })
            .collect()
    }

    /// Committed offsets of every group on this shard as (group, topic,
    /// partition, offset), in name order, at most `limit`; and how many more
    /// there were (for the metrics endpoint).
    pub(crate) fn committed_offsets(&self, limit: usize) -> (Vec<(String, String, i32, i64)>, u64) {
        let partitions = self.partitions.borrow();
        let mut all: Vec<(&str, &str, i32, i64)> = partitions
            .values()
            .flat_map(|groups| groups.values())
            .flat_map(|slot| {
                let g = &slot.group;
                g.offsets()
                    .iter()
                    .map(|((topic, partition), stored)| (g.id(), topic.as_str(), *partition, stored.committed.offset))
            })
            .collect();
        all.sort_unstable();
        let left_out = all.len().saturating_sub(limit);
        let kept = all
            .into_iter()
            .take(limit)
            .map(|(group, topic, partition, offset)| (group.to_string(), topic.to_string(), partition, offset))
            .collect();
        (kept, u64::try_from(left_out).unwrap_or(u64::MAX))
    }

    /// DescribeGroups of one group; an unknown group is described as Dead, as Kafka does.
    pub(crate) fn describe(&self, index: i32, id: &str) -> Result<GroupDescription, GroupError> {
        let described = self.with_group(index, id, false, |g| {
            let stable = g.state() == GroupState::Stable;
            GroupDescription {
                state: g.state().name(),
                protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                protocol: g.protocol().unwrap_or_default().to_string(),
                members: g
                    .members()
                    .map(|m| MemberDescription {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: if stable {
                            m.metadata_for(g.protocol())
                        } else {
                            Bytes::new()
                        },
                        assignment: if stable { m.assignment.clone() } else { Bytes::new() },
                    })
                    .collect(),
            }
        });
        match described {
            Err(GroupError::GroupIdNotFound) => Ok(GroupDescription {
                state: GroupState::Dead.name(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            }),
            other => other,
        }
    }

    /// Committed offsets of a group: the requested partitions (`None`: all
    /// it has), each with its offset or `None` when nothing is committed.
    /// With `require_stable` (OffsetFetch v7, KIP-447), a partition with a
    /// commit still being stored answers `UnstableOffsetCommit` (the client
    /// retries): read now, it would give a new owner of the partition an
    /// offset that commit then overtakes.
    pub(crate) fn fetch_offsets(
        &self,
        index: i32,
        id: &str,
        wanted: Option<Vec<(String, i32)>>,
        require_stable: bool,
    ) -> Result<Vec<FetchedOffset>, GroupError> {
        let found = self.with_group(index, id, false, |g| {
            let fetched = |t: &String, p: i32| {
                let offset = g.fetch_offset(t, p, require_stable).map_err(GroupError::from);
                (t.clone(), p, offset)
            };
            match &wanted {
                None => g.offsets().keys().map(|(t, p)| fetched(t, *p)).collect(),
                Some(wanted) => wanted.iter().map(|(t, p)| fetched(t, *p)).collect(),
            }
        });
        match found {
            Ok(found) => Ok(found),
            Err(GroupError::GroupIdNotFound) => Ok(wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, p)| (t, p, Ok(None)))
                .collect()),
            Err(e) => Err(e),
        }
    }

    /// Expires sessions and ends join phases; returns the groups that emptied
    /// (their metadata is to be stored).
    fn tick(&self, now: Instant) -> Vec<(i32, Entry)> {
        let mut to_store = Vec::new();
        let mut partitions = self.partitions.borrow_mut();
        for (index, groups) in partitions.iter_mut() {
            for slot in groups.values_mut() {
                let (expired, answers) = slot.group.tick(now);
                slot.deliver(answers);
                for member in expired {
                    tracing::info!(group = %slot.group.id(), %member, "member session expired");
                }
                if slot.group.take_dirty() {
                    to_store.push((*index, Entry::Group(slot.group.snapshot())));
                }
            }
            groups.retain(|_, slot| !slot.group.is_forgettable());
        }
        to_store
    }
}

/// What a replay read.
pub(crate) struct Replayed {
    pub(crate) batches: usize,
    pub(crate) entries: usize,
    pub(crate) skipped: usize,
}

/// Reads a coordinator partition's log from its start, handing each entry
/// (`record.rs`) and its log offset to `apply`, in log order. A batch that
/// does not decode is logged and skipped whole.
pub(crate) fn replay(index: i32, partition: &Partition, mut apply: impl FnMut(Entry, i64)) -> Replayed {
    let log = &partition.log;
    let mut replayed = Replayed {
        batches: 0,
        entries: 0,
        skipped: 0,
    };
    match log.read(log.log_start(), usize::MAX, log.log_end()) {
        Ok(read) => {
            for chunk in &read.chunks {
                let mut at = 0usize;
                while let Some(header) = chunk.get(at..).and_then(BatchHeader::parse) {
                    let total = header.total_bytes();
                    let Some(bytes) = chunk.get(at..at + total) else { break };
                    at += total;
                    replayed.batches += 1;
                    match decode_batch(bytes) {
                        Ok(decoded) => {
                            for (delta, entry) in decoded {
                                apply(entry, header.base_offset.0 + i64::from(delta));
                                replayed.entries += 1;
                            }
                        }
                        Err(e) => {
                            replayed.skipped += 1;
                            tracing::error!(partition = index, offset = header.base_offset.0, error = %e,
                                "skipping unreadable coordinator batch");
                        }
                    }
                }
            }
        }
        Err(e) => tracing::error!(partition = index, error = %e, "reading coordinator log"),
    }
    replayed
}

/// Replays one entry of a coordinator partition into the groups being
/// rebuilt (the rules' own replay, `shardline_groups::replay_entry`).
fn apply_entry(groups: &mut HashMap<String, Group>, entry: Entry, log_offset: i64, now: Instant) {
    let stored = match entry {
        Entry::OffsetCommit {
            group,
            topic,
            partition,
            committed,
        } => Stored::OffsetCommit {
            group,
            topic,
            partition,
            committed,
        },
        Entry::OffsetTombstone {
            group,
            topic,
            partition,
        } => Stored::OffsetTombstone {
            group,
            topic,
            partition,
        },
        Entry::Group(snapshot) => Stored::Group(snapshot),
        Entry::GroupTombstone { group } => Stored::GroupTombstone { group },
        Entry::TxnOffsetCommit {
            group,
            producer_id,
            topic,
            partition,
            committed,
        } => Stored::TxnOffsetCommit {
            group,
            producer_id,
            topic,
            partition,
            committed,
        },
        Entry::TxnOffsetTombstone {
            group,
            producer_id,
            topic,
            partition,
        } => Stored::TxnOffsetTombstone {
            group,
            producer_id,
            topic,
            partition,
        },
        Entry::Transaction(_) | Entry::TransactionTombstone { .. } => {
            tracing::warn!(
                log_offset,
                "transaction state in a __consumer_offsets partition: skipped"
            );
            return;
        }
    };
    replay_entry(groups, stored, log_offset, now);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long a coordinator write waits for the in-sync replicas of its
/// partition before the request fails (the client retries).
const STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Appends `entries` to coordinator partition `index` and waits until they are
/// durable and on every in-sync replica; returns the log offset of the first.
async fn store(shard: &Shard, index: i32, entries: &[Entry]) -> Result<i64, EngineError> {
    store_in(shard, OFFSETS_TOPIC, index, entries).await
}

/// [`store`] into partition `index` of the internal topic `topic`.
pub(crate) async fn store_in(shard: &Shard, topic: &str, index: i32, entries: &[Entry]) -> Result<i64, EngineError> {
    let partition = shard.partition(topic, index)?;
    let base_offset = partition
        .append_internal(encode_batch(entries, now_ms()), STORE_TIMEOUT)
        .await?;
    if base_offset < Offset(0) {
        return Err(EngineError::Group(GroupError::CoordinatorNotAvailable));
    }
    Ok(base_offset.0)
}

fn ready(shard: &Shard, index: i32) -> Result<(), GroupError> {
    if shard.coordinator.is_loaded(index) {
        Ok(())
    } else if shard.partition(OFFSETS_TOPIC, index).is_ok() {
        Err(GroupError::LoadInProgress)
    } else {
        Err(GroupError::NotCoordinator)
    }
}

/// Stores the metadata of groups that changed outside a request (emptied by
/// a leave or a session expiry); a failure is logged, the next change stores
/// the group again.
fn store_in_background(shard: &Rc<Shard>, to_store: Vec<(i32, Entry)>) {
    for (index, entry) in to_store {
        let shard = Rc::clone(shard);
        glommio::spawn_local(async move {
            if let Err(e) = store(&shard, index, std::slice::from_ref(&entry)).await {
                tracing::warn!(partition = index, error = %e, "storing group metadata");
            }
        })
        .detach();
    }
}

/// Runs on every shard until shutdown: session expiry and join deadlines.
pub(crate) async fn run_ticks(shard: Rc<Shard>) {
    while !shard.is_shutting_down() {
        glommio::timer::sleep(TICK_INTERVAL).await;
        let to_store = shard.coordinator.tick(Instant::now());
        store_in_background(&shard, to_store);
    }
}

async fn parked<T>(receiver: futures_channel::oneshot::Receiver<T>) -> Option<T> {
    glommio::timer::timeout(PARKED_WAIT_MAX, async move { Ok(receiver.await.ok()) })
        .await
        .ok()
        .flatten()
}

/// JoinGroup, on the coordinator shard: the group's answer (which may
/// refuse the join), or why the coordinator could not ask the group.
pub(crate) async fn join(
    shard: &Rc<Shard>,
    index: i32,
    group: &str,
    request: JoinRequest,
) -> Result<JoinAnswer, GroupError> {
    ready(shard, index)?;
    let member_id = request.member_id.clone();
    let (step, dirty) = shard.coordinator.with_slot(index, group, true, |slot| {
        let (step, answers) = {
            let mut ids = shard.coordinator.member_ids.borrow_mut();
            slot.group.join(request, &mut ids, Instant::now())
        };
        let step = match step {
            JoinStep::Answer(answer) => Ok(answer),
            JoinStep::Park(ticket) => {
                let (sender, receiver) = oneshot::channel();
                slot.joins.insert(ticket, sender);
                Err(receiver)
            }
        };
        slot.deliver(answers);
        let dirty = slot.group.take_dirty().then(|| slot.group.snapshot());
        (step, dirty)
    })?;
    if let Some(snapshot) = dirty {
        store_in_background(shard, vec![(index, Entry::Group(snapshot))]);
    }
    match step {
        Ok(answer) => Ok(answer),
        Err(receiver) => Ok(parked(receiver)
            .await
            .unwrap_or_else(|| JoinAnswer::error(Refusal::RebalanceInProgress, &member_id))),
    }
}

/// SyncGroup, on the coordinator shard.
pub(crate) async fn sync(
    shard: &Rc<Shard>,
    index: i32,
    group: &str,
    committer: Committer,
    assignments: Vec<(String, Bytes)>,
) -> Result<SyncAnswer, GroupError> {
    ready(shard, index)?;
    let generation = committer.generation;
    let (step, receiver) = shard
        .coordinator
        .with_slot(index, group, false, |slot| {
            let (step, answers) = slot.group.sync(
                &committer.member_id,
                committer.instance_id.as_deref(),
                generation,
                assignments,
                Instant::now(),
            );
            let receiver = match &step {
                SyncStep::Park(ticket) | SyncStep::PersistThenPark(_, ticket) => {
                    let (sender, receiver) = oneshot::channel();
                    slot.syncs.insert(*ticket, sender);
                    Some(receiver)
                }
                SyncStep::Answer(_) => None,
            };
            slot.deliver(answers);
            (step, receiver)
        })
        .map_err(|e| match e {
            GroupError::GroupIdNotFound => GroupError::UnknownMemberId,
            other => other,
        })?;
    match step {
        SyncStep::Answer(answer) => return answer.map_err(GroupError::from),
        SyncStep::Park(_) => {}
        SyncStep::PersistThenPark(snapshot, _) => {
            let stored = store(shard, index, &[Entry::Group(snapshot)]).await.map_err(|e| {
                tracing::warn!(%group, error = %e, "storing group assignment");
                Refusal::CoordinatorNotAvailable
            });
            let _ = shard.coordinator.with_slot(index, group, false, |slot| {
                let answers = slot.group.complete_sync(generation, stored, Instant::now());
                slot.deliver(answers);
            });
        }
    }
    let answer = match receiver {
        Some(receiver) => parked(receiver).await,
        None => None,
    };
    answer.map_or(Err(GroupError::RebalanceInProgress), |answer| {
        answer.map_err(GroupError::from)
    })
}

/// OffsetFetch, on the coordinator shard.
pub(crate) fn fetch_offsets(
    shard: &Rc<Shard>,
    index: i32,
    group: &str,
    wanted: Option<Vec<(String, i32)>>,
    require_stable: bool,
) -> Result<Vec<FetchedOffset>, GroupError> {
    ready(shard, index)?;
    shard.coordinator.fetch_offsets(index, group, wanted, require_stable)
}

/// Heartbeat, on the coordinator shard.
pub(crate) fn heartbeat(shard: &Rc<Shard>, index: i32, group: &str, committer: &Committer) -> Result<(), GroupError> {
    ready(shard, index)?;
    shard
        .coordinator
        .with_group(index, group, false, |g| {
            g.heartbeat(
                &committer.member_id,
                committer.instance_id.as_deref(),
                committer.generation,
                Instant::now(),
            )
            .map_err(GroupError::from)
        })
        .map_err(|e| match e {
            GroupError::GroupIdNotFound => GroupError::UnknownMemberId,
            other => other,
        })?
}

/// LeaveGroup of several members, on the coordinator shard: one result each.
pub(crate) fn leave(
    shard: &Rc<Shard>,
    index: i32,
    group: &str,
    members: &[(String, Option<String>)],
) -> Result<Vec<Result<(), GroupError>>, GroupError> {
    ready(shard, index)?;
    let (results, dirty) = shard
        .coordinator
        .with_slot(index, group, false, |slot| {
            let now = Instant::now();
            let mut results = Vec::with_capacity(members.len());
            for (member, instance) in members {
                let (verdict, answers) = slot.group.leave(member, instance.as_deref(), now);
                slot.deliver(answers);
                results.push(verdict.map_err(GroupError::from));
            }
            (results, slot.group.take_dirty().then(|| slot.group.snapshot()))
        })
        .map_err(|e| match e {
            GroupError::GroupIdNotFound => GroupError::UnknownMemberId,
            other => other,
        })?;
    if let Some(snapshot) = dirty {
        store_in_background(shard, vec![(index, Entry::Group(snapshot))]);
    }
    Ok(results)
}

/// Whether one commit may be stored: its metadata within the bound, and
/// `has_room` in the group's table.
fn commit_verdict(commit: &Commit, has_room: bool) -> Result<(), GroupError> {
    if commit
        .committed
        .metadata
        .as_ref()
        .is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX)
    {
        Err(GroupError::OffsetMetadataTooLarge)
    } else if !has_room {
        Err(GroupError::TooManyOffsets)
    } else {
        Ok(())
    }
}

/// OffsetCommit, on the coordinator shard: one result per commit, in order.
pub(crate) async fn commit(
    shard: &Rc<Shard>,
    index: i32,
    group: &str,
    committer: Committer,
    commits: Vec<Commit>,
) -> Vec<Result<(), EngineError>> {
    let all = |e: GroupError| commits.iter().map(|_| Err(EngineError::Group(e))).collect::<Vec<_>>();
    if let Err(e) = ready(shard, index) {
        return all(e);
    }
    // A group that does not exist yet is created by a simple commit (generation < 0).
    let create = committer.generation < 0;
    let checked = shard.coordinator.with_group(index, group, create, |g| {
        g.check_commit(
            &committer.member_id,
            committer.instance_id.as_deref(),
            committer.generation,
        )?;
        Ok(commits
            .iter()
            .map(|c| commit_verdict(c, g.has_room_for(&c.topic, c.partition)))
            .collect::<Vec<_>>())
    });
    let verdicts = match checked {
        Ok(Ok(verdicts)) => verdicts,
        Ok(Err(e)) => return all(e),
        Err(GroupError::GroupIdNotFound) => return all(GroupError::IllegalGeneration),
        Err(e) => return all(e),
    };
    let entries: Vec<Entry> = commits
        .iter()
        .zip(&verdicts)
        .filter(|(_, verdict)| verdict.is_ok())
        .map(|(c, _)| Entry::OffsetCommit {
            group: group.to_string(),
            topic: c.topic.clone(),
            partition: c.partition,
            committed: c.committed.clone(),
        })
        .collect();
    if entries.is_empty() {
        return verdicts.into_iter().map(|v| v.map_err(EngineError::Group)).collect();
    }
    // Pending until stored and applied (or failed): a stable OffsetFetch waits.
    let each_commit = |g: &mut Group, f: &mut dyn FnMut(&mut Group, &str, i32)| {
        for entry in &entries {
            if let Entry::OffsetCommit { topic, partition, .. } = entry {
                f(g, topic, *partition);
            }
        }
    };
    let _ = shard.coordinator.with_group(index, group, true, |g| {
        each_commit(g, &mut |g, topic, partition| g.commit_started(topic, partition));
    });
    let stored = store(shard, index, &entries).await;
    let finished = |g: &mut Group| each_commit(g, &mut |g, topic, partition| g.commit_finished(topic, partition));
    let base_offset = match stored {
        Ok(base_offset) => base_offset,
        Err(e) => {
            tracing::warn!(%group, error = %e, "storing committed offsets");
            let _ = shard.coordinator.with_group(index, group, false, finished);
            return all(GroupError::CoordinatorNotAvailable);
        }
    };
    let _ = shard.coordinator.with_group(index, group, true, |g| {
        finished(g);
        for (delta, entry) in entries.iter().enumerate() {
            if let Entry::OffsetCommit {
                topic,
                partition,
                committed,
                ..
            } = entry
            {
                let log_offset = base_offset + i64::try_from(delta).unwrap_or(0);
                g.apply_commit(topic, *partition, committed.clone(), log_offset);
            }
        }
    });
    verdicts.into_iter().map(|v| v.map_err(EngineError::Group)).collect()
}

/// TxnOffsetCommit, on the group's coordinator shard: the offsets are
/// stored as held for producer `producer_id`'s transaction, and become the
/// group's committed offsets only when it commits ([`end_transaction`]).
/// One result per commit, in order.
pub(crate) async fn txn_commit(
    shard: &Rc<Shard>,
    index: i32,
    group: &str,
    producer_id: i64,
    committer: Committer,
    commits: Vec<Commit>,
) -> Vec<Result<(), EngineError>> {
    let all = |e: GroupError| commits.iter().map(|_| Err(EngineError::Group(e))).collect::<Vec<_>>();
    if let Err(e) = ready(shard, index) {
        return all(e);
    }
    // Kafka accepts a transactional commit for a group without members
    // (and, before TxnOffsetCommit v3, without naming any).
    let checked = shard.coordinator.with_group(index, group, true, |g| {
        if committer.generation >= 0 {
            g.check_commit(
                &committer.member_id,
                committer.instance_id.as_deref(),
                committer.generation,
            )?;
        }
        Ok(commits
            .iter()
            .map(|c| commit_verdict(c, g.has_room_for_txn(producer_id, &c.topic, c.partition)))
            .collect::<Vec<_>>())
    });
    let verdicts = match checked {
        Ok(Ok(verdicts)) => verdicts,
        Ok(Err(e)) | Err(e) => return all(e),
    };
    let entries: Vec<Entry> = commits
        .iter()
        .zip(&verdicts)
        .filter(|(_, verdict)| verdict.is_ok())
        .map(|(c, _)| Entry::TxnOffsetCommit {
            group: group.to_string(),
            producer_id,
            topic: c.topic.clone(),
            partition: c.partition,
            committed: c.committed.clone(),
        })
        .collect();
    if !entries.is_empty() {
        if let Err(e) = store(shard, index, &entries).await {
            tracing::warn!(%group, error = %e, "storing transactional offsets");
            return all(GroupError::CoordinatorNotAvailable);
        }
        let _ = shard.coordinator.with_group(index, group, true, |g| {
            for entry in entries {
                if let Entry::TxnOffsetCommit {
                    topic,
                    partition,
                    committed,
                    ..
                } = entry
                {
                    g.apply_txn_commit(producer_id, &topic, partition, committed);
                }
            }
        });
    }
    verdicts.into_iter().map(|v| v.map_err(EngineError::Group)).collect()
}

/// The transaction of producer `producer_id` ended: its offsets held for
/// `group` become committed offsets (commit) or are dropped (abort), in one
/// stored batch. Idempotent: a second call finds nothing held.
pub(crate) async fn end_transaction(
    shard: &Rc<Shard>,
    index: i32,
    group: &str,
    producer_id: i64,
    commit: bool,
) -> Result<(), EngineError> {
    ready(shard, index).map_err(EngineError::Group)?;
    let held = match shard
        .coordinator
        .with_group(index, group, false, |g| g.txn_commits_of(producer_id))
    {
        Ok(held) => held,
        Err(GroupError::GroupIdNotFound) => return Ok(()),
        Err(e) => return Err(EngineError::Group(e)),
    };
    if held.is_empty() {
        return Ok(());
    }
    let mut entries = Vec::with_capacity(held.len() * 2);
    for (topic, partition, committed) in &held {
        if commit {
            entries.push(Entry::OffsetCommit {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *partition,
                committed: committed.clone(),
            });
        }
        entries.push(Entry::TxnOffsetTombstone {
            group: group.to_string(),
            producer_id,
            topic: topic.clone(),
            partition: *partition,
        });
    }
    let base_offset = store(shard, index, &entries).await?;
    let _ = shard.coordinator.with_group(index, group, false, |g| {
        for (delta, entry) in entries.into_iter().enumerate() {
            let log_offset = base_offset + i64::try_from(delta).unwrap_or(0);
            match entry {
                Entry::OffsetCommit {
                    topic,
                    partition,
                    committed,
                    ..
                } => g.apply_commit(&topic, partition, committed, log_offset),
                Entry::TxnOffsetTombstone { topic, partition, .. } => {
                    g.remove_txn_commit(producer_id, &topic, partition);
                }
                _ => {}
            }
        }
    });
    Ok(())
}

/// The transaction of producer `producer_id` ended: [`end_transaction`]
/// for every group of coordinator partition `index` holding offsets for it
/// (what a marker for a `__consumer_offsets` partition means).
pub(crate) async fn end_transaction_in_partition(
    shard: &Rc<Shard>,
    index: i32,
    producer_id: i64,
    commit: bool,
) -> Result<(), EngineError> {
    ready(shard, index).map_err(EngineError::Group)?;
    let holding: Vec<String> = shard
        .coordinator
        .partitions
        .borrow()
        .get(&index)
        .map(|groups| {
            groups
                .values()
                .filter(|slot| !slot.group.txn_commits_of(producer_id).is_empty())
                .map(|slot| slot.group.id().to_string())
                .collect()
        })
        .unwrap_or_default();
    for group in holding {
        end_transaction(shard, index, &group, producer_id, commit).await?;
    }
    Ok(())
}

/// DeleteGroups of one group, on the coordinator shard.
pub(crate) async fn delete_group(shard: &Rc<Shard>, index: i32, group: &str) -> Result<(), GroupError> {
    ready(shard, index)?;
    shard.coordinator.with_group(index, group, false, |g| {
        if !g.has_members() {
            Ok(())
        } else {
            Err(GroupError::NonEmptyGroup)
        }
    })??;
    store(
        shard,
        index,
        &[Entry::GroupTombstone {
            group: group.to_string(),
        }],
    )
    .await
    .map_err(|_| GroupError::CoordinatorNotAvailable)?;
    let removed = shard
        .coordinator
        .partitions
        .borrow_mut()
        .get_mut(&index)
        .and_then(|groups| groups.remove(group));
    if let Some(mut removed) = removed {
        removed.fail_parked(Refusal::UnknownMemberId);
    }
    Ok(())
}

/// OffsetDelete, on the coordinator shard: one result per partition.
pub(crate) async fn delete_offsets(
    shard: &Rc<Shard>,
    index: i32,
    group: &str,
    partitions: Vec<(String, i32)>,
) -> Result<Vec<Result<(), GroupError>>, GroupError> {
    ready(shard, index)?;
    let verdicts = shard.coordinator.with_group(index, group, false, |g| {
        let assigned = assigned_topics(g);
        partitions
            .iter()
            .map(|(topic, _)| {
                if assigned.contains(topic) {
                    Err(GroupError::SubscribedToTopic)
                } else {
                    Ok(())
                }
            })
            .collect::<Vec<_>>()
    })?;
    let entries: Vec<Entry> = partitions
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| v.is_ok())
        .map(|((topic, partition), _)| Entry::OffsetTombstone {
            group: group.to_string(),
            topic: topic.clone(),
            partition: *partition,
        })
        .collect();
    if !entries.is_empty() {
        let base_offset = store(shard, index, &entries)
            .await
            .map_err(|_| GroupError::CoordinatorNotAvailable)?;
        let _ = shard.coordinator.with_group(index, group, false, |g| {
            for (delta, entry) in entries.into_iter().enumerate() {
                if let Entry::OffsetTombstone { topic, partition, .. } = entry {
                    let log_offset = base_offset + i64::try_from(delta).unwrap_or(0);
                    g.apply_offset_tombstone(&topic, partition, log_offset);
                }
            }
        });
    }
    Ok(verdicts)
}

/// Topics assigned to the group's members (consumer protocol assignments).
fn assigned_topics(group: &Group) -> std::collections::BTreeSet<String> {
    let mut topics = std::collections::BTreeSet::new();
    if group.protocol_type() != Some("consumer") {
        return topics;
    }
    for member in group.members() {
        topics.extend(assignment_topics(&member.assignment));
    }
    topics
}

/// The topic names of a consumer-protocol assignment (any version 0–3:
/// `version i16 | topic count i32 | (topic i16-string, partition count i32,
/// partitions i32…)…`), read with every length checked; bytes that do not
/// parse name no topic.
fn assignment_topics(bytes: &[u8]) -> Vec<String> {
    fn take<'a>(input: &mut &'a [u8], count: usize) -> Option<&'a [u8]> {
        if input.len() < count {
            return None;
        }
        let (head, rest) = input.split_at(count);
        *input = rest;
        Some(head)
    }
    fn i16_at(input: &mut &[u8]) -> Option<i16> {
        let raw = take(input, 2)?;
        Some(i16::from_be_bytes([*raw.first()?, *raw.get(1)?]))
    }
    fn i32_at(input: &mut &[u8]) -> Option<i32> {
        let raw = take(input, 4)?;
        Some(i32::from_be_bytes([
            *raw.first()?,
            *raw.get(1)?,
            *raw.get(2)?,
            *raw.get(3)?,
        ]))
    }
    let mut input = bytes;
    let mut topics = Vec::new();
    // A parse that stops early keeps the topics read so far.
    let _complete: Option<()> = (|| {
        i16_at(&mut input)?;
        let count = i32_at(&mut input)?;
        for _ in 0..count.max(0) {
            let length = usize::try_from(i16_at(&mut input)?).ok()?;
            let name = std::str::from_utf8(take(&mut input, length)?).ok()?;
            topics.push(name.to_string());
            let partitions = usize::try_from(i32_at(&mut input)?.max(0)).ok()?;
            take(&mut input, partitions.checked_mul(4)?)?;
        }
        Some(())
    })();
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KIP-447: while a commit to a partition is being stored, a stable
    /// OffsetFetch of it is told to retry; an unstable one reads what is
    /// committed; other partitions answer as usual.
    #[test]
    fn a_stable_offset_fetch_waits_for_commits_being_stored() {
        let coordinator = Coordinator::default();
        let mut group = Group::new("g", Instant::now());
        let committed = CommittedOffset::bare;
        group.apply_commit("t", 0, committed(5), 1);
        group.commit_started("t", 0);
        coordinator
            .partitions
            .borrow_mut()
            .insert(0, HashMap::from([("g".to_string(), Slot::new(group))]));
        let wanted = || Some(vec![("t".to_string(), 0), ("t".to_string(), 1)]);
        let offsets = |stable| {
            coordinator
                .fetch_offsets(0, "g", wanted(), stable)
                .unwrap_or_default()
                .into_iter()
                .map(|(_, _, o)| o.map(|c| c.map(|c| c.offset)))
                .collect::<Vec<_>>()
        };
        assert_eq!(offsets(true), vec![Err(GroupError::UnstableOffsetCommit), Ok(None)]);
        assert_eq!(offsets(false), vec![Ok(Some(5)), Ok(None)]);
        let finished = coordinator.with_group(0, "g", false, |g| {
            assert!(!g.is_forgettable(), "a commit is being stored");
            g.commit_finished("t", 0);
            g.apply_commit("t", 0, committed(9), 2);
        });
        assert!(finished.is_ok());
        assert_eq!(offsets(true), vec![Ok(Some(9)), Ok(None)]);
    }

    /// Offsets held for transactions make their partitions unstable until
    /// every producer holding one is done, and are per producer.
    #[test]
    fn offsets_held_for_transactions_are_counted_per_partition() {
        let mut group = Group::new("g", Instant::now());
        let committed = CommittedOffset::bare;
        group.apply_txn_commit(1, "t", 0, committed(5));
        group.apply_txn_commit(2, "t", 0, committed(7));
        group.apply_txn_commit(1, "t", 1, committed(3));
        group.apply_txn_commit(1, "t", 1, committed(4));
        assert!(group.has_pending_commit("t", 0) && group.has_pending_commit("t", 1));
        assert_eq!(group.txn_commits_of(1).len(), 2);
        assert_eq!(group.txn_commits_of(2), vec![("t".to_string(), 0, committed(7))]);
        group.remove_txn_commit(1, "t", 0);
        group.remove_txn_commit(1, "t", 0);
        assert!(group.has_pending_commit("t", 0), "producer 2 still holds one");
        group.remove_txn_commit(2, "t", 0);
        assert!(!group.has_pending_commit("t", 0));
        group.remove_txn_commit(1, "t", 1);
        assert!(!group.has_pending_commit("t", 1));
        assert!(group.offsets().is_empty(), "nothing became a committed offset");
        assert!(group.is_forgettable());
    }

    #[test]
    fn group_partition_follows_kafkas_string_hash() {
        // Java: "my-group".hashCode() == -1906497762; abs % 50 == 12.
        assert_eq!(partition_for("my-group", 50), 12);
        for name in ["", "a", "consumers", "ünïcödé", "g-with-a-very-long-name-0123456789"] {
            let p = partition_for(name, 6);
            assert!((0..6).contains(&p), "{name} -> {p}");
        }
        assert_eq!(partition_for("anything", 1), 0);
    }

    #[test]
    fn assignment_topics_are_read_with_bounds_checked() {
        // version 1, two topics: "a" [0, 1] and "bc" [].
        let mut bytes = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1];
        bytes.extend_from_slice(&[0, 2, b'b', b'c', 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(assignment_topics(&bytes), vec!["a".to_string(), "bc".to_string()]);
        for cut in 0..bytes.len() {
            let _ = assignment_topics(bytes.get(..cut).unwrap_or_default());
        }
        assert!(assignment_topics(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_empty());
    }
}
