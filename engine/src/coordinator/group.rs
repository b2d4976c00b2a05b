//! One consumer group's state machine (Kafka's classic group protocol) and its
//! committed offsets. Lives on the shard that owns the group's coordinator
//! partition; `!Send`, never locked. Time is passed in (`now`), so tests drive
//! it without sleeping.
//!
//! ```text
//!            join (first member)                       all known members rejoined,
//!   Empty ───────────────────────► PreparingRebalance ── or the rebalance timeout passed ──► CompletingRebalance
//!     ▲                               ▲        │ no member left                                   │ leader's SyncGroup
//!     └───────────────────────────────┼────────┘                                                  │ (assignment durable)
//!                                     │ join of a new member / changed protocols,                  ▼
//!                                     └─ leave, session expiry ─────────────────────────────── Stable
//!   Dead: deleted (DeleteGroups); the coordinator drops the group from its table.
//! ```
//!
//! JoinGroup and SyncGroup answers are delayed: the member's request parks a
//! one-shot sender in its member entry, and the transition that completes the
//! phase answers every parked request at once. Every such wait is bounded by
//! the rebalance timeout (the join phase ends when it passes) or by the
//! member's session timeout (checked by the coordinator's periodic tick).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_channel::oneshot;

use super::record::{CommittedOffset, GroupSnapshot, MemberSnapshot};
use crate::error::GroupError;

/// Members one group may have (Kafka's `group.max.size` is unbounded by
/// default; a bound keeps one group from taking a shard's memory).
pub(crate) const GROUP_MEMBERS_MAX: usize = 1000;
/// Member ids handed out with MEMBER_ID_REQUIRED and not yet used, per group.
pub(crate) const PENDING_MEMBERS_MAX: usize = 1000;
/// Committed partitions one group may hold.
pub(crate) const GROUP_OFFSETS_MAX: usize = 100_000;
/// Session timeout bounds (Kafka: `group.min/max.session.timeout.ms`, 6 s and
/// 30 min; the minimum is lower here so tests can use short sessions).
pub(crate) const SESSION_TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub(crate) const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(30 * 60);
/// Longest join phase, whatever members ask (bounds every parked JoinGroup).
pub(crate) const REBALANCE_TIMEOUT_MAX: Duration = Duration::from_secs(5 * 60);
/// A group that starts from Empty waits this long for more members before
/// completing its first join phase (Kafka's `group.initial.rebalance.delay.ms`
/// is 3 s; consumers started together then share one generation instead of
/// rebalancing once per arrival).
pub(crate) const INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(500);

/// Kafka's names for the states (DescribeGroups, ListGroups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a JoinGroup carries.
#[derive(Debug, Clone)]
pub(crate) struct JoinRequest {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout_ms: i32,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) protocol_type: String,
    pub(crate) protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: an unknown member first gets MEMBER_ID_REQUIRED.
    pub(crate) require_known_member: bool,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinAnswer {
    pub(crate) error: Option<GroupError>,
    pub(crate) generation: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) leader: String,
    pub(crate) member_id: String,
    /// Every member's metadata for the chosen protocol; only for the leader.
    pub(crate) members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinAnswer {
    fn error(error: GroupError, member_id: &str) -> JoinAnswer {
        JoinAnswer {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup answer: the member's assignment and the group's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncAnswer {
    pub(crate) assignment: Bytes,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol: Option<String>,
}

pub(crate) type JoinWaiter = oneshot::Sender<JoinAnswer>;
pub(crate) type SyncWaiter = oneshot::Sender<Result<SyncAnswer, GroupError>>;

/// What the coordinator does next with a JoinGroup.
pub(crate) enum JoinStep {
    Answer(JoinAnswer),
    Wait(oneshot::Receiver<JoinAnswer>),
}

/// What the coordinator does next with a SyncGroup.
pub(crate) enum SyncStep {
    Answer(Result<SyncAnswer, GroupError>),
    Wait(oneshot::Receiver<Result<SyncAnswer, GroupError>>),
    /// The leader's assignment: store the snapshot durably, then call
    /// [`Group::complete_sync`] with the generation, then wait.
    PersistThenWait(GroupSnapshot, oneshot::Receiver<Result<SyncAnswer, GroupError>>),
}

pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) protocols: Vec<(String, Bytes)>,
    pub(crate) assignment: Bytes,
    heartbeat_deadline: Instant,
    join_waiter: Option<JoinWaiter>,
    sync_waiter: Option<SyncWaiter>,
}

impl Member {
    fn metadata_for(&self, protocol: Option<&str>) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| Some(name.as_str()) == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

/// A committed offset with the log offset of the entry that stored it (later
/// entries win, whatever order their writes completed in).
#[derive(Debug, Clone)]
pub(crate) struct StoredOffset {
    pub(crate) committed: CommittedOffset,
    pub(crate) log_offset: i64,
}

/// One group.
pub(crate) struct Group {
    pub(crate) id: String,
    pub(crate) state: GroupState,
    pub(crate) generation: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) leader: Option<String>,
    pub(crate) members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending: HashMap<String, Instant>,
    join_deadline: Instant,
    join_not_before: Instant,
    /// Committed offsets by (topic, partition).
    pub(crate) offsets: BTreeMap<(String, i32), StoredOffset>,
    /// Commits checked and being stored, not yet in `offsets`, by (topic,
    /// partition): an OffsetFetch that asks for stable offsets is told to
    /// retry until they land (KIP-447), or a new owner of the partition
    /// would start before a commit that then lands after its own.
    pending_commits: BTreeMap<(String, i32), u32>,
    /// Offsets committed inside open transactions (TxnOffsetCommit), by
    /// (producer id, topic, partition): invisible until the transaction
    /// commits, dropped if it aborts; a stable OffsetFetch of their
    /// partitions is told to retry meanwhile (KIP-447). Bounded like
    /// `offsets`.
    txn_offsets: BTreeMap<(i64, String, i32), CommittedOffset>,
    /// How many producers hold an offset in `txn_offsets` for each (topic,
    /// partition): what a stable OffsetFetch asks, without a scan.
    txn_partitions: BTreeMap<(String, i32), u32>,
    /// Log offset of the group metadata entry last applied.
    pub(crate) metadata_log_offset: i64,
    /// Set when the group emptied: its metadata should be stored.
    dirty: bool,
}

fn clamp_ms(ms: i32, max: Duration) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(max)
}

impl Group {
    pub(crate) fn new(id: &str, now: Instant) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            join_deadline: now,
            join_not_before: now,
            offsets: BTreeMap::new(),
            pending_commits: BTreeMap::new(),
            txn_offsets: BTreeMap::new(),
            txn_partitions: BTreeMap::new(),
            metadata_log_offset: -1,
            dirty: false,
        }
    }

    /// Rebuilds a group from its stored metadata: members come back with a
    /// fresh session (they keep their generation if they heartbeat in time,
    /// as after a Kafka coordinator failover).
    pub(crate) fn restore(&mut self, snapshot: &GroupSnapshot, log_offset: i64, now: Instant) {
        self.fail_waiters(GroupError::NotCoordinator);
        self.generation = snapshot.generation;
        self.protocol_type = Some(snapshot.protocol_type.clone()).filter(|t| !t.is_empty());
        self.protocol = snapshot.protocol.clone();
        self.leader = snapshot.leader.clone();
        self.members.clear();
        self.pending.clear();
        for stored in &snapshot.members {
            let session_timeout = clamp_ms(stored.session_timeout_ms, SESSION_TIMEOUT_MAX);
            let protocols = snapshot
                .protocol
                .iter()
                .map(|name| (name.clone(), stored.subscription.clone()))
                .collect();
            self.members.insert(
                stored.member_id.clone(),
                Member {
                    id: stored.member_id.clone(),
                    instance_id: stored.instance_id.clone(),
                    client_id: stored.client_id.clone(),
                    client_host: stored.client_host.clone(),
                    session_timeout,
                    rebalance_timeout: clamp_ms(stored.rebalance_timeout_ms, REBALANCE_TIMEOUT_MAX),
                    protocols,
                    assignment: stored.assignment.clone(),
                    heartbeat_deadline: now + session_timeout,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.metadata_log_offset = log_offset;
    }

    /// The group's metadata as stored.
    pub(crate) fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            group: self.id.clone(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone(),
            generation: self.generation,
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| MemberSnapshot {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: i32::try_from(m.session_timeout.as_millis()).unwrap_or(i32::MAX),
                    rebalance_timeout_ms: i32::try_from(m.rebalance_timeout.as_millis()).unwrap_or(i32::MAX),
                    subscription: m.metadata_for(self.protocol.as_deref()),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// True once: the group emptied and its metadata should be stored.
    pub(crate) fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Whether the group holds nothing worth keeping: never had a
    /// generation, holds no offsets and stores none, and has handed out no
    /// member id still waiting to be used.
    pub(crate) fn is_forgettable(&self) -> bool {
        self.state == GroupState::Empty
            && self.offsets.is_empty()
            && self.pending_commits.is_empty()
            && self.txn_offsets.is_empty()
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.generation == 0
    }

    /// A member id unique on this broker: the client id (as Kafka does), the
    /// wall clock in nanoseconds and a per-thread counter.
    fn new_member_id(&self, client_id: &str) -> String {
        thread_local! {
            static ISSUED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        }
        let sequence = ISSUED.with(|issued| {
            issued.set(issued.get().wrapping_add(1));
            issued.get()
        });
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let prefix: String = client_id.chars().take(64).collect();
        format!("{prefix}-{nanos:x}-{sequence:x}")
    }

    fn supports(&self, request: &JoinRequest, ignoring: Option<&str>) -> bool {
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| Some(m.id.as_str()) != ignoring)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(request.protocol_type.as_str()) {
            return false;
        }
        request
            .protocols
            .iter()
            .any(|(name, _)| others.iter().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    /// JoinGroup.
    pub(crate) fn join(&mut self, request: JoinRequest, now: Instant) -> JoinStep {
        let session_timeout = Duration::from_millis(u64::try_from(request.session_timeout_ms).unwrap_or(0));
        if !(SESSION_TIMEOUT_MIN..=SESSION_TIMEOUT_MAX).contains(&session_timeout) {
            return JoinStep::Answer(JoinAnswer::error(GroupError::InvalidSessionTimeout, &request.member_id));
        }
        let mut member_id = request.member_id.clone();
        if member_id.is_empty() {
            if let Some(instance) = &request.instance_id {
                // A static member coming back: it takes over its old entry under a new id.
                let previous = self
                    .members
                    .values()
                    .find(|m| m.instance_id.as_deref() == Some(instance.as_str()))
                    .map(|m| m.id.clone());
                member_id = self.new_member_id(&request.client_id);
                if let Some(previous) = previous {
                    if let Some(mut old) = self.members.remove(&previous) {
                        answer_fenced(&mut old);
                        old.id = member_id.clone();
                        if self.leader.as_deref() == Some(previous.as_str()) {
                            self.leader = Some(member_id.clone());
                        }
                        self.members.insert(member_id.clone(), old);
                    }
                }
            } else if request.require_known_member {
                if self.pending.len() >= PENDING_MEMBERS_MAX || self.members.len() >= GROUP_MEMBERS_MAX {
                    return JoinStep::Answer(JoinAnswer::error(GroupError::GroupMaxSizeReached, ""));
                }
                let id = self.new_member_id(&request.client_id);
                self.pending.insert(id.clone(), now + session_timeout);
                return JoinStep::Answer(JoinAnswer::error(GroupError::MemberIdRequired, &id));
            } else {
                member_id = self.new_member_id(&request.client_id);
            }
        } else if !self.members.contains_key(&member_id) && self.pending.remove(&member_id).is_none() {
            return JoinStep::Answer(JoinAnswer::error(GroupError::UnknownMemberId, &member_id));
        } else if let (Some(instance), Some(member)) = (&request.instance_id, self.members.get(&member_id)) {
            if member.instance_id.as_deref() != Some(instance.as_str()) {
                return JoinStep::Answer(JoinAnswer::error(GroupError::FencedInstanceId, &member_id));
            }
        }
        if !self.supports(&request, Some(&member_id)) {
            return JoinStep::Answer(JoinAnswer::error(GroupError::InconsistentGroupProtocol, &member_id));
        }
        let existing = self.members.contains_key(&member_id);
        if !existing && self.members.len() >= GROUP_MEMBERS_MAX {
            return JoinStep::Answer(JoinAnswer::error(GroupError::GroupMaxSizeReached, &member_id));
        }
        let unchanged = self
            .members
            .get(&member_id)
            .is_some_and(|m| m.protocols == request.protocols);
        let rebalance_timeout = if request.rebalance_timeout_ms < 0 {
            session_timeout.min(REBALANCE_TIMEOUT_MAX)
        } else {
            clamp_ms(request.rebalance_timeout_ms, REBALANCE_TIMEOUT_MAX)
        };
        let (sender, receiver) = oneshot::channel();
        let member = self.members.entry(member_id.clone()).or_insert_with(|| Member {
            id: member_id.clone(),
            instance_id: request.instance_id.clone(),
            client_id: String::new(),
            client_host: String::new(),
            session_timeout,
            rebalance_timeout,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            heartbeat_deadline: now + session_timeout,
            join_waiter: None,
            sync_waiter: None,
        });
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.session_timeout = session_timeout;
        member.rebalance_timeout = rebalance_timeout;
        member.protocols = request.protocols.clone();
        member.heartbeat_deadline = now + session_timeout;
        if self.protocol_type.is_none() || self.members.len() == 1 {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        let settled = matches!(self.state, GroupState::Stable | GroupState::CompletingRebalance);
        if existing && unchanged && settled && !(is_leader && self.state == GroupState::Stable) {
            // A member repeating its join (a lost response): tell it the current generation.
            return JoinStep::Answer(self.join_answer(&member_id));
        }
        if let Some(member) = self.members.get_mut(&member_id) {
            if let Some(old) = member.join_waiter.replace(sender) {
                let _ = old.send(JoinAnswer::error(GroupError::RebalanceInProgress, &member_id));
            }
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.try_complete_join(now);
        JoinStep::Wait(receiver)
    }

    fn join_answer(&self, member_id: &str) -> JoinAnswer {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.metadata_for(self.protocol.as_deref()),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinAnswer {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        let from_empty = self.state == GroupState::Empty;
        for member in self.members.values_mut() {
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(Err(GroupError::RebalanceInProgress));
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
            .min(REBALANCE_TIMEOUT_MAX);
        self.state = GroupState::PreparingRebalance;
        self.join_deadline = now + timeout;
        self.join_not_before = if from_empty {
            now + INITIAL_REBALANCE_DELAY.min(timeout)
        } else {
            now
        };
    }

    /// Ends the join phase if every known member has rejoined (and the
    /// initial delay passed) or the rebalance timeout passed.
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some());
        if !(all_joined && now >= self.join_not_before) && now < self.join_deadline {
            return;
        }
        // Members that did not rejoin in time are out.
        self.members.retain(|_, m| m.join_waiter.is_some());
        self.pending.clear();
        self.generation = self.generation.wrapping_add(1).max(1);
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            member.heartbeat_deadline = now + member.session_timeout;
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            self.dirty = true;
            return;
        }
        self.protocol = self.select_protocol();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let answer = self.join_answer(&id);
            if let Some(waiter) = self.members.get_mut(&id).and_then(|m| m.join_waiter.take()) {
                let _ = waiter.send(answer);
            }
        }
    }

    /// The protocol every member supports that most members list first.
    fn select_protocol(&self) -> Option<String> {
        let mut candidates: BTreeSet<&str> = BTreeSet::new();
        if let Some(first) = self.members.values().next() {
            candidates.extend(first.protocols.iter().map(|(n, _)| n.as_str()));
        }
        for member in self.members.values() {
            candidates.retain(|c| member.protocols.iter().any(|(n, _)| n == c));
        }
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(n, _)| candidates.contains(n.as_str())) {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(name, _)| name.to_string())
    }

    fn check_member(&self, member_id: &str, instance_id: Option<&str>, generation: i32) -> Result<(), GroupError> {
        let member = self.members.get(member_id).ok_or(GroupError::UnknownMemberId)?;
        if instance_id.is_some() && member.instance_id.as_deref() != instance_id {
            return Err(GroupError::FencedInstanceId);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    /// SyncGroup.
    pub(crate) fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> SyncStep {
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return SyncStep::Answer(Err(e));
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => SyncStep::Answer(Err(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => SyncStep::Answer(Err(GroupError::RebalanceInProgress)),
            GroupState::Stable => SyncStep::Answer(Ok(self.sync_answer(member_id))),
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                if let Some(member) = self.members.get_mut(member_id) {
                    member.heartbeat_deadline = now + member.session_timeout;
                    if let Some(old) = member.sync_waiter.replace(sender) {
                        let _ = old.send(Err(GroupError::RebalanceInProgress));
                    }
                }
                if self.leader.as_deref() != Some(member_id) {
                    return SyncStep::Wait(receiver);
                }
                for member in self.members.values_mut() {
                    member.assignment = Bytes::new();
                }
                for (id, assignment) in assignments {
                    if let Some(member) = self.members.get_mut(&id) {
                        member.assignment = assignment;
                    }
                }
                SyncStep::PersistThenWait(self.snapshot(), receiver)
            }
        }
    }

    fn sync_answer(&self, member_id: &str) -> SyncAnswer {
        SyncAnswer {
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
        }
    }

    /// The leader's assignment for `generation` is durable (`Ok`) or could not
    /// be stored: answer every parked SyncGroup.
    pub(crate) fn complete_sync(&mut self, generation: i32, stored: Result<i64, GroupError>, now: Instant) {
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return; // a newer rebalance took over; its own answers follow
        }
        match stored {
            Ok(log_offset) => {
                self.metadata_log_offset = self.metadata_log_offset.max(log_offset);
                self.state = GroupState::Stable;
                let ids: Vec<String> = self.members.keys().cloned().collect();
                for id in ids {
                    let answer = self.sync_answer(&id);
                    if let Some(waiter) = self.members.get_mut(&id).and_then(|m| m.sync_waiter.take()) {
                        let _ = waiter.send(Ok(answer));
                    }
                }
            }
            Err(error) => {
                for member in self.members.values_mut() {
                    member.assignment = Bytes::new();
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(Err(error));
                    }
                }
                self.prepare_rebalance(now);
            }
        }
    }

    /// Heartbeat.
    pub(crate) fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return Err(GroupError::UnknownMemberId);
        }
        self.check_member(member_id, instance_id, generation)?;
        if let Some(member) = self.members.get_mut(member_id) {
            member.heartbeat_deadline = now + member.session_timeout;
        }
        if self.state == GroupState::PreparingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// LeaveGroup of one member (by member id, or by instance id for static members).
    pub(crate) fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: Instant) -> Result<(), GroupError> {
        let id = match instance_id {
            Some(instance) => {
                let found = self
                    .members
                    .values()
                    .find(|m| m.instance_id.as_deref() == Some(instance))
                    .map(|m| m.id.clone())
                    .ok_or(GroupError::UnknownMemberId)?;
                if !member_id.is_empty() && member_id != found {
                    return Err(GroupError::FencedInstanceId);
                }
                found
            }
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            return Ok(());
        }
        let mut member = self.members.remove(&id).ok_or(GroupError::UnknownMemberId)?;
        answer_fenced(&mut member);
        self.member_gone(now);
        Ok(())
    }

    fn member_gone(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.try_complete_join(now);
    }

    /// Periodic work: expired sessions and pending ids, join phases that
    /// reached their deadline. Returns the ids of members removed.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<String> {
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none() && m.heartbeat_deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            if let Some(mut member) = self.members.remove(id) {
                answer_fenced(&mut member);
            }
        }
        if !expired.is_empty() {
            self.member_gone(now);
        } else {
            self.try_complete_join(now);
        }
        expired
    }

    /// Validates an OffsetCommit's member and generation (Kafka's rules: a
    /// commit with generation < 0 is a "simple" commit, allowed while the
    /// group has no members).
    pub(crate) fn check_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if generation < 0 && self.members.is_empty() {
            return Ok(());
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        self.check_member(member_id, instance_id, generation)
    }

    /// Stores a committed offset applied from the log at `log_offset`.
    pub(crate) fn apply_commit(&mut self, topic: &str, partition: i32, committed: CommittedOffset, log_offset: i64) {
        let key = (topic.to_string(), partition);
        if self.offsets.get(&key).is_some_and(|o| o.log_offset > log_offset) {
            return;
        }
        if !self.offsets.contains_key(&key) && self.offsets.len() >= GROUP_OFFSETS_MAX {
            return;
        }
        self.offsets.insert(key, StoredOffset { committed, log_offset });
    }

    /// A commit to (topic, partition) passed its checks and is being stored.
    pub(crate) fn commit_started(&mut self, topic: &str, partition: i32) {
        let pending = self.pending_commits.entry((topic.to_string(), partition)).or_insert(0);
        *pending += 1;
        assert!(
            self.pending_commits.len() <= GROUP_OFFSETS_MAX,
            "pending commits are bounded by the offsets a group may hold"
        );
    }

    /// A commit [`Group::commit_started`] is stored (and applied) or failed.
    /// One started on another incarnation of the group (its coordinator
    /// partition was unloaded and loaded again meanwhile) is not pending
    /// here, and changes nothing.
    pub(crate) fn commit_finished(&mut self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        if let Some(count) = self.pending_commits.get_mut(&key) {
            assert!(*count > 0, "an empty pending entry is removed");
            *count -= 1;
            if *count == 0 {
                self.pending_commits.remove(&key);
            }
        }
    }

    /// Whether a commit to (topic, partition) is being stored, or waits
    /// inside an open transaction.
    pub(crate) fn has_pending_commit(&self, topic: &str, partition: i32) -> bool {
        let key = (topic.to_string(), partition);
        self.pending_commits.contains_key(&key) || self.txn_partitions.contains_key(&key)
    }

    /// Whether a transactional commit fits under the bound.
    pub(crate) fn has_room_for_txn(&self, producer_id: i64, topic: &str, partition: i32) -> bool {
        self.txn_offsets.len() < GROUP_OFFSETS_MAX
            || self
                .txn_offsets
                .contains_key(&(producer_id, topic.to_string(), partition))
    }

    /// Holds an offset committed inside producer `producer_id`'s
    /// transaction (stored or replayed).
    pub(crate) fn apply_txn_commit(
        &mut self,
        producer_id: i64,
        topic: &str,
        partition: i32,
        committed: CommittedOffset,
    ) {
        let key = (producer_id, topic.to_string(), partition);
        if !self.txn_offsets.contains_key(&key) {
            if self.txn_offsets.len() >= GROUP_OFFSETS_MAX {
                return;
            }
            *self.txn_partitions.entry((topic.to_string(), partition)).or_insert(0) += 1;
        }
        self.txn_offsets.insert(key, committed);
        assert!(
            self.txn_partitions.len() <= self.txn_offsets.len(),
            "counted per held offset"
        );
        assert!(
            self.txn_offsets.len() <= GROUP_OFFSETS_MAX,
            "transactional offsets bounded"
        );
    }

    /// Drops one offset held for a transaction (its end was stored).
    pub(crate) fn remove_txn_commit(&mut self, producer_id: i64, topic: &str, partition: i32) {
        if self
            .txn_offsets
            .remove(&(producer_id, topic.to_string(), partition))
            .is_none()
        {
            return;
        }
        let key = (topic.to_string(), partition);
        let count = self.txn_partitions.get_mut(&key);
        assert!(count.as_ref().is_some_and(|c| **c > 0), "a held offset is counted");
        if let Some(count) = count {
            *count -= 1;
            if *count == 0 {
                self.txn_partitions.remove(&key);
            }
        }
    }

    /// The offsets held for producer `producer_id`'s transaction.
    pub(crate) fn txn_commits_of(&self, producer_id: i64) -> Vec<(String, i32, CommittedOffset)> {
        self.txn_offsets
            .range((producer_id, String::new(), i32::MIN)..)
            .take_while(|((id, _, _), _)| *id == producer_id)
            .map(|((_, topic, partition), committed)| (topic.clone(), *partition, committed.clone()))
            .collect()
    }

    /// Whether a commit to (topic, partition) fits under the offsets bound.
    pub(crate) fn has_room_for(&self, topic: &str, partition: i32) -> bool {
        self.offsets.len() < GROUP_OFFSETS_MAX || self.offsets.contains_key(&(topic.to_string(), partition))
    }

    /// Fails every parked request (the coordinator partition is closing, or the group is deleted).
    pub(crate) fn fail_waiters(&mut self, error: GroupError) {
        for member in self.members.values_mut() {
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(JoinAnswer::error(error, &member.id));
            }
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(Err(error));
            }
        }
    }
}

fn answer_fenced(member: &mut Member) {
    if let Some(waiter) = member.join_waiter.take() {
        let _ = waiter.send(JoinAnswer::error(GroupError::UnknownMemberId, &member.id));
    }
    if let Some(waiter) = member.sync_waiter.take() {
        let _ = waiter.send(Err(GroupError::UnknownMemberId));
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "test code"
    )]

    use super::*;

    fn join_request(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 6000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            require_known_member: true,
        }
    }

    fn answered<T>(receiver: &mut oneshot::Receiver<T>) -> Option<T> {
        receiver.try_recv().ok().flatten()
    }

    /// Joins a new member (two-step, v4+) and returns its id and parked receiver.
    fn join_new(group: &mut Group, protocols: &[&str], now: Instant) -> (String, oneshot::Receiver<JoinAnswer>) {
        let JoinStep::Answer(first) = group.join(join_request("", protocols), now) else {
            panic!("first join is answered at once");
        };
        assert_eq!(first.error, Some(GroupError::MemberIdRequired));
        let id = first.member_id.clone();
        match group.join(join_request(&id, protocols), now) {
            JoinStep::Wait(receiver) => (id, receiver),
            JoinStep::Answer(a) => panic!("second join parks, got {a:?}"),
        }
    }

    #[test]
    fn two_members_join_one_generation_and_sync_their_assignments() {
        let t0 = Instant::now();
        let mut group = Group::new("g", t0);
        let (a, mut ra) = join_new(&mut group, &["range", "roundrobin"], t0);
        let (b, mut rb) = join_new(&mut group, &["roundrobin", "range"], t0);
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert!(answered(&mut ra).is_none(), "initial delay holds the join phase");
        group.tick(t0 + INITIAL_REBALANCE_DELAY);
        assert_eq!(group.state, GroupState::CompletingRebalance);
        let ja = answered(&mut ra).unwrap();
        let jb = answered(&mut rb).unwrap();
        assert_eq!((ja.error, ja.generation, jb.generation), (None, 1, 1));
        assert_eq!(ja.leader, jb.leader);
        let (leader, follower) = if ja.leader == a { (&a, &b) } else { (&b, &a) };
        let leader_answer = if ja.leader == a { &ja } else { &jb };
        assert_eq!(leader_answer.members.len(), 2, "the leader sees every member");
        assert!(ja.protocol.is_some() && ja.protocol == jb.protocol);

        let t1 = t0 + Duration::from_secs(1);
        let SyncStep::Wait(mut rf) = group.sync(follower, None, 1, vec![], t1) else {
            panic!("follower waits for the leader");
        };
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"for-a")),
            (b.clone(), Bytes::from_static(b"for-b")),
        ];
        let SyncStep::PersistThenWait(snapshot, mut rl) = group.sync(leader, None, 1, assignments, t1) else {
            panic!("leader's assignment is persisted first");
        };
        assert_eq!(snapshot.members.len(), 2);
        assert!(
            answered(&mut rf).is_none(),
            "nothing answered before the write is durable"
        );
        group.complete_sync(1, Ok(10), t1);
        assert_eq!(group.state, GroupState::Stable);
        let mine = |id: &str| Bytes::from(format!("for-{}", if id == a { "a" } else { "b" }));
        assert_eq!(answered(&mut rf).unwrap().unwrap().assignment, mine(follower));
        assert_eq!(answered(&mut rl).unwrap().unwrap().assignment, mine(leader));
        assert_eq!(group.heartbeat(&a, None, 1, t1), Ok(()));
    }

    fn stable_group_of_two(t0: Instant) -> (Group, String, String) {
        let mut group = Group::new("g", t0);
        let (a, _ra) = join_new(&mut group, &["range"], t0);
        let (b, _rb) = join_new(&mut group, &["range"], t0);
        group.tick(t0 + INITIAL_REBALANCE_DELAY);
        let leader = group.leader.clone().unwrap();
        let _ = group.sync(&leader, None, 1, vec![], t0 + INITIAL_REBALANCE_DELAY);
        group.complete_sync(1, Ok(1), t0 + INITIAL_REBALANCE_DELAY);
        assert_eq!(group.state, GroupState::Stable);
        (group, a, b)
    }

    #[test]
    fn bad_member_and_generation_get_their_errors_and_change_nothing() {
        let t0 = Instant::now();
        let (mut group, a, _b) = stable_group_of_two(t0);
        assert_eq!(group.heartbeat("nobody", None, 1, t0), Err(GroupError::UnknownMemberId));
        assert_eq!(group.heartbeat(&a, None, 7, t0), Err(GroupError::IllegalGeneration));
        assert!(matches!(
            group.sync("nobody", None, 1, vec![], t0),
            SyncStep::Answer(Err(GroupError::UnknownMemberId))
        ));
        assert!(matches!(
            group.sync(&a, None, 0, vec![], t0),
            SyncStep::Answer(Err(GroupError::IllegalGeneration))
        ));
        assert!(matches!(
            group.join(join_request("stranger", &["range"]), t0),
            JoinStep::Answer(JoinAnswer {
                error: Some(GroupError::UnknownMemberId),
                ..
            })
        ));
        assert!(matches!(
            group.join(join_request("", &["sticky-only"]), t0),
            JoinStep::Answer(JoinAnswer {
                error: Some(GroupError::MemberIdRequired),
                ..
            })
        ));
        assert_eq!(group.check_commit(&a, None, 0), Err(GroupError::IllegalGeneration));
        assert_eq!(group.check_commit("", None, -1), Err(GroupError::UnknownMemberId));
        assert_eq!(group.leave("nobody", None, t0), Err(GroupError::UnknownMemberId));
        assert_eq!(group.state, GroupState::Stable);
        assert_eq!(group.generation, 1);
        assert_eq!(group.members.len(), 2);
    }

    #[test]
    fn incompatible_protocols_are_refused() {
        let t0 = Instant::now();
        let (mut group, _a, _b) = stable_group_of_two(t0);
        let mut request = join_request("", &["roundrobin"]);
        request.require_known_member = false;
        assert!(matches!(
            group.join(request, t0),
            JoinStep::Answer(JoinAnswer {
                error: Some(GroupError::InconsistentGroupProtocol),
                ..
            })
        ));
        let mut other_type = join_request("", &["range"]);
        other_type.require_known_member = false;
        other_type.protocol_type = "connect".into();
        assert!(matches!(
            group.join(other_type, t0),
            JoinStep::Answer(JoinAnswer {
                error: Some(GroupError::InconsistentGroupProtocol),
                ..
            })
        ));
    }

    #[test]
    fn a_silent_member_is_removed_after_its_session_and_the_rest_rebalance() {
        let t0 = Instant::now();
        let (mut group, a, b) = stable_group_of_two(t0);
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(group.heartbeat(&a, None, 1, t1), Ok(()));
        // b never heartbeats: its session (6 s from the join) ends.
        let expired = group.tick(t0 + Duration::from_secs(7));
        assert_eq!(expired, vec![b.clone()]);
        assert_eq!(group.state, GroupState::PreparingRebalance);
        let t2 = t0 + Duration::from_secs(7);
        assert_eq!(group.heartbeat(&a, None, 1, t2), Err(GroupError::RebalanceInProgress));
        let JoinStep::Wait(mut ra) = group.join(join_request(&a, &["range"]), t2) else {
            panic!("rejoin parks until the phase completes");
        };
        let answer = answered(&mut ra).expect("a is the only member: the phase completes at once");
        assert_eq!((answer.generation, answer.leader.as_str()), (2, a.as_str()));
        assert_eq!(answer.members.len(), 1);
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let t0 = Instant::now();
        let (mut group, a, b) = stable_group_of_two(t0);
        let (c, mut rc) = join_new(&mut group, &["range"], t0);
        let JoinStep::Wait(mut ra) = group.join(join_request(&a, &["range"]), t0) else {
            panic!("parks");
        };
        // b keeps heartbeating but never rejoins.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(group.heartbeat(&b, None, 1, t1), Err(GroupError::RebalanceInProgress));
        assert!(answered(&mut ra).is_none());
        group.tick(t0 + Duration::from_secs(10));
        let answer = answered(&mut ra).unwrap();
        assert_eq!(answer.generation, 2);
        assert!(answered(&mut rc).is_some());
        assert!(!group.members.contains_key(&b));
        assert!(group.members.contains_key(&c));
    }

    #[test]
    fn the_last_member_leaving_empties_the_group_and_marks_it_for_storage() {
        let t0 = Instant::now();
        let (mut group, a, b) = stable_group_of_two(t0);
        assert_eq!(group.leave(&a, None, t0), Ok(()));
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert_eq!(group.leave(&b, None, t0), Ok(()));
        assert_eq!(group.state, GroupState::Empty);
        assert!(group.take_dirty());
        assert!(!group.take_dirty());
        assert_eq!(group.check_commit("", None, -1), Ok(()), "simple commits once empty");
    }

    #[test]
    fn later_log_entries_win_whatever_order_they_are_applied_in() {
        let mut group = Group::new("g", Instant::now());
        group.apply_commit("t", 0, CommittedOffset::bare(20), 9);
        group.apply_commit("t", 0, CommittedOffset::bare(10), 5);
        assert_eq!(group.offsets[&("t".to_string(), 0)].committed.offset, 20);
    }

    #[test]
    fn restored_groups_come_back_stable_with_their_members() {
        let t0 = Instant::now();
        let (group, a, _b) = stable_group_of_two(t0);
        let snapshot = group.snapshot();
        let mut restored = Group::new("g", t0);
        restored.restore(&snapshot, 3, t0);
        assert_eq!(restored.state, GroupState::Stable);
        assert_eq!(restored.generation, 1);
        assert_eq!(restored.heartbeat(&a, None, 1, t0), Ok(()));
        assert_eq!(restored.snapshot(), snapshot);
    }

    #[test]
    fn a_static_member_rejoining_without_its_id_takes_over_its_entry() {
        let t0 = Instant::now();
        let mut group = Group::new("g", t0);
        let mut request = join_request("", &["range"]);
        request.instance_id = Some("pod-1".into());
        let JoinStep::Wait(mut first) = group.join(request.clone(), t0) else {
            panic!("static members join without MEMBER_ID_REQUIRED");
        };
        group.tick(t0 + INITIAL_REBALANCE_DELAY);
        let old_id = answered(&mut first).unwrap().member_id;
        let _ = group.join(request, t0 + INITIAL_REBALANCE_DELAY);
        assert_eq!(group.members.len(), 1);
        assert!(!group.members.contains_key(&old_id));
    }
}
