//! One consumer group's state machine (Kafka's classic group protocol) and
//! its committed offsets. Lives wherever its driver keeps it (the engine:
//! the shard owning the group's coordinator partition); time is passed in
//! (`now`), answers are returned, nothing waits inside.
//!
//! ```text
//!            join (first member)                       all known members rejoined,
//!   Empty ───────────────────────► PreparingRebalance ── or the rebalance timeout passed ──► CompletingRebalance
//!     ▲                               ▲        │ no member left                                   │ leader's SyncGroup
//!     └───────────────────────────────┼────────┘                                                  │ (assignment durable)
//!                                     │ join of a new member / changed protocols,                  ▼
//!                                     └─ leave, session expiry ─────────────────────────────── Stable
//!   Dead: deleted (DeleteGroups); the driver drops the group from its table.
//! ```
//!
//! JoinGroup and SyncGroup answers are delayed: a request that must wait
//! gets a [`Ticket`] (its driver parks the request under it), and the
//! transition that completes the phase returns an [`Answer`] for every
//! parked ticket at once. Every such wait is bounded by the rebalance
//! timeout (the join phase ends when it passes) or by the member's session
//! timeout (checked by [`Group::tick`]).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::stored::{CommittedOffset, GroupSnapshot, MemberSnapshot};

/// Members one group may have (Kafka's `group.max.size` is unbounded by
/// default; a bound keeps one group from taking a shard's memory).
pub const GROUP_MEMBERS_MAX: usize = 1000;
/// Member ids handed out with MEMBER_ID_REQUIRED and not yet used, per group.
pub const PENDING_MEMBERS_MAX: usize = 1000;
/// Committed partitions one group may hold.
pub const GROUP_OFFSETS_MAX: usize = 100_000;
/// Session timeout bounds (Kafka: `group.min/max.session.timeout.ms`, 6 s and
/// 30 min; the minimum is lower here so tests can use short sessions).
pub const SESSION_TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(30 * 60);
/// Longest join phase, whatever members ask (bounds every parked JoinGroup).
pub const REBALANCE_TIMEOUT_MAX: Duration = Duration::from_secs(5 * 60);
/// A group that starts from Empty waits this long for more members before
/// completing its first join phase (Kafka's `group.initial.rebalance.delay.ms`
/// is 3 s; consumers started together then share one generation instead of
/// rebalancing once per arrival).
pub const INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(500);
/// Characters of a client id kept as a member id's prefix.
const MEMBER_ID_PREFIX_CHARS: usize = 64;

/// Why the group's rules refuse a request (the engine picks the Kafka
/// error code for each, in `engine/src/error.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The group is no longer served here (its coordinator moved): parked
    /// requests are failed with this.
    NotCoordinator,
    /// The leader's assignment could not be stored.
    CoordinatorNotAvailable,
    /// The member id is not (or no longer) in the group.
    UnknownMemberId,
    /// The request's generation is not the group's.
    IllegalGeneration,
    /// The group is rebalancing: rejoin.
    RebalanceInProgress,
    /// Protocol type or protocols do not match the group's members.
    InconsistentGroupProtocol,
    /// JoinGroup v4+: a new member must rejoin with the member id it was given.
    MemberIdRequired,
    /// Session timeout outside the bounds.
    InvalidSessionTimeout,
    /// The group has as many members as it may.
    GroupMaxSizeReached,
    /// Another member holds this static member's `group.instance.id`.
    FencedInstanceId,
    /// A stable offset (KIP-447) asked of a partition whose commit is still
    /// being stored or held inside an open transaction: retry.
    UnstableOffsetCommit,
}

/// Kafka's names for the states (DescribeGroups, ListGroups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Where member ids come from: a prefix the caller picks (the engine: its
/// start time, so ids differ across brokers and restarts; the simulator: a
/// constant, so a seed replays byte for byte) and a counter. Ids issued by
/// one source sort in the order they were issued.
#[derive(Debug, Clone)]
pub struct MemberIds {
    prefix: u64,
    issued: u64,
}

impl MemberIds {
    pub fn new(prefix: u64) -> MemberIds {
        MemberIds { prefix, issued: 0 }
    }

    /// The next id: the client id (as Kafka does), the prefix, the counter.
    fn issue(&mut self, client_id: &str) -> String {
        self.issued = self.issued.wrapping_add(1);
        let client: String = client_id.chars().take(MEMBER_ID_PREFIX_CHARS).collect();
        format!("{client}-{:x}-{:016x}", self.prefix, self.issued)
    }
}

/// A parked JoinGroup or SyncGroup, named by the group that parked it.
/// Unique per group incarnation (a counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// An answer owed to a parked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Join(Ticket, JoinAnswer),
    Sync(Ticket, Result<SyncAnswer, Refusal>),
}

/// What a JoinGroup carries.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: an unknown member first gets MEMBER_ID_REQUIRED.
    pub require_known_member: bool,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAnswer {
    pub error: Option<Refusal>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata for the chosen protocol; only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinAnswer {
    pub fn error(error: Refusal, member_id: &str) -> JoinAnswer {
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
pub struct SyncAnswer {
    pub assignment: Bytes,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
}

/// What the driver does next with a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinStep {
    Answer(JoinAnswer),
    /// Park the request under the ticket; an [`Answer::Join`] follows.
    Park(Ticket),
}

/// What the driver does next with a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStep {
    Answer(Result<SyncAnswer, Refusal>),
    /// Park the request under the ticket; an [`Answer::Sync`] follows.
    Park(Ticket),
    /// The leader's assignment: store the snapshot durably, call
    /// [`Group::complete_sync`] with the generation, and park the request
    /// under the ticket.
    PersistThenPark(GroupSnapshot, Ticket),
}

/// One member.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// The generation `assignment` was given for (-1: none yet).
    assigned_generation: i32,
    heartbeat_deadline: Instant,
    join_parked: Option<Ticket>,
    sync_parked: Option<Ticket>,
}

impl Member {
    /// The member's metadata for `protocol`.
    pub fn metadata_for(&self, protocol: Option<&str>) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| Some(name.as_str()) == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    /// Answers owed to this member's parked requests, failed with `error`.
    fn fail_parked(&mut self, error: Refusal, answers: &mut Vec<Answer>) {
        if let Some(ticket) = self.join_parked.take() {
            answers.push(Answer::Join(ticket, JoinAnswer::error(error, &self.id)));
        }
        if let Some(ticket) = self.sync_parked.take() {
            answers.push(Answer::Sync(ticket, Err(error)));
        }
    }
}

/// A committed offset with the log offset of the entry that stored it (later
/// entries win, whatever order their writes completed in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    pub committed: CommittedOffset,
    pub log_offset: i64,
}

/// One group.
#[derive(Debug)]
pub struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending: HashMap<String, Instant>,
    join_deadline: Instant,
    join_not_before: Instant,
    /// The last ticket handed out.
    tickets: u64,
    /// Committed offsets by (topic, partition).
    offsets: BTreeMap<(String, i32), StoredOffset>,
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
    pub metadata_log_offset: i64,
    /// Set when the group emptied: its metadata should be stored.
    dirty: bool,
}

fn clamp_ms(ms: i32, max: Duration) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(max)
}

impl Group {
    pub fn new(id: &str, now: Instant) -> Group {
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
            tickets: 0,
            offsets: BTreeMap::new(),
            pending_commits: BTreeMap::new(),
            txn_offsets: BTreeMap::new(),
            txn_partitions: BTreeMap::new(),
            metadata_log_offset: -1,
            dirty: false,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// Members in id order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// Committed offsets by (topic, partition).
    pub fn offsets(&self) -> &BTreeMap<(String, i32), StoredOffset> {
        &self.offsets
    }

    /// Every invariant of the group, asserted (release builds too).
    fn check(&self) {
        if matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable) {
            assert!(
                self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)),
                "group {}: the leader is a member once the join phase completed",
                self.id
            );
            assert!(
                self.generation > 0,
                "group {}: a completed join has a generation",
                self.id
            );
        }
        if self.state == GroupState::Stable {
            for member in self.members.values() {
                assert!(
                    member.assigned_generation == self.generation && member.sync_parked.is_none(),
                    "group {}: member {} of a stable group holds this generation's assignment",
                    self.id,
                    member.id
                );
            }
        }
        if self.state != GroupState::PreparingRebalance {
            assert!(
                self.members.values().all(|m| m.join_parked.is_none()),
                "group {}: JoinGroups park only while preparing a rebalance",
                self.id
            );
        }
        assert!(self.members.len() <= GROUP_MEMBERS_MAX, "members bounded");
        assert!(self.pending.len() <= PENDING_MEMBERS_MAX, "pending ids bounded");
        assert!(self.offsets.len() <= GROUP_OFFSETS_MAX, "offsets bounded");
        assert!(
            self.txn_offsets.len() <= GROUP_OFFSETS_MAX,
            "transactional offsets bounded"
        );
        assert!(
            self.txn_partitions.len() <= self.txn_offsets.len(),
            "counted per held offset"
        );
    }

    fn next_ticket(&mut self) -> Ticket {
        self.tickets += 1;
        Ticket(self.tickets)
    }

    /// Rebuilds a group from its stored metadata: members come back with a
    /// fresh session (they keep their generation if they heartbeat in time,
    /// as after a Kafka coordinator failover). Requests parked on the group
    /// are failed with NOT_COORDINATOR: the answers are returned.
    #[must_use = "the answers are owed to parked requests"]
    pub fn restore(&mut self, snapshot: &GroupSnapshot, log_offset: i64, now: Instant) -> Vec<Answer> {
        let answers = self.fail_parked(Refusal::NotCoordinator);
        self.generation = snapshot.generation;
        self.protocol_type = Some(snapshot.protocol_type.clone()).filter(|t| !t.is_empty());
        self.protocol = snapshot.protocol.clone();
        self.members.clear();
        self.pending.clear();
        for stored in &snapshot.members {
            if self.members.len() >= GROUP_MEMBERS_MAX {
                break;
            }
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
                    assigned_generation: snapshot.generation,
                    heartbeat_deadline: now + session_timeout,
                    join_parked: None,
                    sync_parked: None,
                },
            );
        }
        // Stored bytes are not trusted to name a member as leader: a
        // leader that is not one is replaced by the first member.
        self.leader = snapshot
            .leader
            .clone()
            .filter(|l| self.members.contains_key(l))
            .or_else(|| self.members.keys().next().cloned());
        self.state = if self.members.is_empty() || self.generation <= 0 {
            // (A generation that is not positive with members is not
            // something this code stores: such a group comes back empty.)
            self.members.clear();
            self.leader = None;
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.metadata_log_offset = log_offset;
        self.check();
        answers
    }

    /// The group's metadata as stored.
    pub fn snapshot(&self) -> GroupSnapshot {
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
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Whether the group holds nothing worth keeping: never had a
    /// generation, holds no offsets and stores none, and has handed out no
    /// member id still waiting to be used.
    pub fn is_forgettable(&self) -> bool {
        self.state == GroupState::Empty
            && self.offsets.is_empty()
            && self.pending_commits.is_empty()
            && self.txn_offsets.is_empty()
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.generation == 0
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

    /// JoinGroup: the step for this request, and answers owed to requests
    /// parked before it.
    #[must_use = "the answers are owed to parked requests"]
    pub fn join(&mut self, request: JoinRequest, ids: &mut MemberIds, now: Instant) -> (JoinStep, Vec<Answer>) {
        self.transition(|group, answers| group.join_inner(request, ids, now, answers))
    }

    /// Runs one transition, collecting the answers it owes parked
    /// requests, and checks the invariants after it.
    fn transition<T>(&mut self, f: impl FnOnce(&mut Group, &mut Vec<Answer>) -> T) -> (T, Vec<Answer>) {
        let mut answers = Vec::new();
        let result = f(self, &mut answers);
        self.check();
        (result, answers)
    }

    fn join_inner(
        &mut self,
        request: JoinRequest,
        ids: &mut MemberIds,
        now: Instant,
        answers: &mut Vec<Answer>,
    ) -> JoinStep {
        let refuse = |error, id: &str| JoinStep::Answer(JoinAnswer::error(error, id));
        let session_timeout = Duration::from_millis(u64::try_from(request.session_timeout_ms).unwrap_or(0));
        if !(SESSION_TIMEOUT_MIN..=SESSION_TIMEOUT_MAX).contains(&session_timeout) {
            return refuse(Refusal::InvalidSessionTimeout, &request.member_id);
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
                member_id = ids.issue(&request.client_id);
                if let Some(previous) = previous {
                    if let Some(mut old) = self.members.remove(&previous) {
                        old.fail_parked(Refusal::UnknownMemberId, answers);
                        old.id = member_id.clone();
                        if self.leader.as_deref() == Some(previous.as_str()) {
                            self.leader = Some(member_id.clone());
                        }
                        self.members.insert(member_id.clone(), old);
                    }
                }
            } else if request.require_known_member {
                if self.pending.len() >= PENDING_MEMBERS_MAX || self.members.len() >= GROUP_MEMBERS_MAX {
                    return refuse(Refusal::GroupMaxSizeReached, "");
                }
                let id = ids.issue(&request.client_id);
                self.pending.insert(id.clone(), now + session_timeout);
                return refuse(Refusal::MemberIdRequired, &id);
            } else {
                member_id = ids.issue(&request.client_id);
            }
        } else if !self.members.contains_key(&member_id) && self.pending.remove(&member_id).is_none() {
            return refuse(Refusal::UnknownMemberId, &member_id);
        } else if let (Some(instance), Some(member)) = (&request.instance_id, self.members.get(&member_id)) {
            if member.instance_id.as_deref() != Some(instance.as_str()) {
                return refuse(Refusal::FencedInstanceId, &member_id);
            }
        }
        if !self.supports(&request, Some(&member_id)) {
            return refuse(Refusal::InconsistentGroupProtocol, &member_id);
        }
        let existing = self.members.contains_key(&member_id);
        if !existing && self.members.len() >= GROUP_MEMBERS_MAX {
            return refuse(Refusal::GroupMaxSizeReached, &member_id);
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
        let member = self.members.entry(member_id.clone()).or_insert_with(|| Member {
            id: member_id.clone(),
            instance_id: request.instance_id.clone(),
            client_id: String::new(),
            client_host: String::new(),
            session_timeout,
            rebalance_timeout,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            assigned_generation: -1,
            heartbeat_deadline: now + session_timeout,
            join_parked: None,
            sync_parked: None,
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
        let ticket = self.next_ticket();
        if let Some(member) = self.members.get_mut(&member_id) {
            if let Some(old) = member.join_parked.replace(ticket) {
                answers.push(Answer::Join(
                    old,
                    JoinAnswer::error(Refusal::RebalanceInProgress, &member_id),
                ));
            }
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, answers);
        }
        self.try_complete_join(now, answers);
        JoinStep::Park(ticket)
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

    fn prepare_rebalance(&mut self, now: Instant, answers: &mut Vec<Answer>) {
        let from_empty = self.state == GroupState::Empty;
        for member in self.members.values_mut() {
            if let Some(ticket) = member.sync_parked.take() {
                answers.push(Answer::Sync(ticket, Err(Refusal::RebalanceInProgress)));
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
    fn try_complete_join(&mut self, now: Instant, answers: &mut Vec<Answer>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.pending.is_empty() && self.members.values().all(|m| m.join_parked.is_some());
        if !(all_joined && now >= self.join_not_before) && now < self.join_deadline {
            return;
        }
        // Members that did not rejoin in time are out.
        self.members.retain(|_, m| m.join_parked.is_some());
        self.pending.clear();
        let previous = self.generation;
        self.generation = self.generation.saturating_add(1).max(1);
        assert!(
            self.generation > previous || previous == i32::MAX,
            "group {}: a generation never goes back ({previous} -> {})",
            self.id,
            self.generation
        );
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            member.assigned_generation = -1;
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
            if let Some(ticket) = self.members.get_mut(&id).and_then(|m| m.join_parked.take()) {
                answers.push(Answer::Join(ticket, answer));
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

    fn check_member(&self, member_id: &str, instance_id: Option<&str>, generation: i32) -> Result<(), Refusal> {
        let member = self.members.get(member_id).ok_or(Refusal::UnknownMemberId)?;
        if instance_id.is_some() && member.instance_id.as_deref() != instance_id {
            return Err(Refusal::FencedInstanceId);
        }
        if generation != self.generation {
            return Err(Refusal::IllegalGeneration);
        }
        Ok(())
    }

    /// SyncGroup: the step for this request, and answers owed to requests
    /// parked before it.
    #[must_use = "the answers are owed to parked requests"]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> (SyncStep, Vec<Answer>) {
        self.transition(|group, answers| {
            group.sync_inner(member_id, instance_id, generation, assignments, now, answers)
        })
    }

    fn sync_inner(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
        answers: &mut Vec<Answer>,
    ) -> SyncStep {
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return SyncStep::Answer(Err(e));
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => SyncStep::Answer(Err(Refusal::UnknownMemberId)),
            GroupState::PreparingRebalance => SyncStep::Answer(Err(Refusal::RebalanceInProgress)),
            GroupState::Stable => SyncStep::Answer(Ok(self.sync_answer(member_id))),
            GroupState::CompletingRebalance => {
                let ticket = self.next_ticket();
                if let Some(member) = self.members.get_mut(member_id) {
                    member.heartbeat_deadline = now + member.session_timeout;
                    if let Some(old) = member.sync_parked.replace(ticket) {
                        answers.push(Answer::Sync(old, Err(Refusal::RebalanceInProgress)));
                    }
                }
                if self.leader.as_deref() != Some(member_id) {
                    return SyncStep::Park(ticket);
                }
                for member in self.members.values_mut() {
                    member.assignment = Bytes::new();
                }
                for (id, assignment) in assignments {
                    if let Some(member) = self.members.get_mut(&id) {
                        member.assignment = assignment;
                    }
                }
                SyncStep::PersistThenPark(self.snapshot(), ticket)
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

    /// The leader's assignment for `generation` is durable at `Ok(log
    /// offset)`, or could not be stored (`Err`): returns the answers of
    /// every parked SyncGroup.
    #[must_use = "the answers are owed to parked requests"]
    pub fn complete_sync(&mut self, generation: i32, stored: Result<i64, Refusal>, now: Instant) -> Vec<Answer> {
        let mut answers = Vec::new();
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return answers; // a newer rebalance took over; its own answers follow
        }
        match stored {
            Ok(log_offset) => {
                self.metadata_log_offset = self.metadata_log_offset.max(log_offset);
                self.state = GroupState::Stable;
                let ids: Vec<String> = self.members.keys().cloned().collect();
                for id in ids {
                    let answer = self.sync_answer(&id);
                    if let Some(member) = self.members.get_mut(&id) {
                        member.assigned_generation = generation;
                        if let Some(ticket) = member.sync_parked.take() {
                            answers.push(Answer::Sync(ticket, Ok(answer)));
                        }
                    }
                }
            }
            Err(error) => {
                for member in self.members.values_mut() {
                    member.assignment = Bytes::new();
                    if let Some(ticket) = member.sync_parked.take() {
                        answers.push(Answer::Sync(ticket, Err(error)));
                    }
                }
                self.prepare_rebalance(now, &mut answers);
            }
        }
        self.check();
        answers
    }

    /// Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), Refusal> {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return Err(Refusal::UnknownMemberId);
        }
        self.check_member(member_id, instance_id, generation)?;
        if let Some(member) = self.members.get_mut(member_id) {
            member.heartbeat_deadline = now + member.session_timeout;
        }
        if self.state == GroupState::PreparingRebalance {
            return Err(Refusal::RebalanceInProgress);
        }
        Ok(())
    }

    /// LeaveGroup of one member (by member id, or by instance id for static
    /// members): its verdict, and answers owed to parked requests.
    #[must_use = "the answers are owed to parked requests"]
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> (Result<(), Refusal>, Vec<Answer>) {
        self.transition(|group, answers| group.leave_inner(member_id, instance_id, now, answers))
    }

    fn leave_inner(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
        answers: &mut Vec<Answer>,
    ) -> Result<(), Refusal> {
        let id = match instance_id {
            Some(instance) => {
                let found = self
                    .members
                    .values()
                    .find(|m| m.instance_id.as_deref() == Some(instance))
                    .map(|m| m.id.clone())
                    .ok_or(Refusal::UnknownMemberId)?;
                if !member_id.is_empty() && member_id != found {
                    return Err(Refusal::FencedInstanceId);
                }
                found
            }
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            return Ok(());
        }
        let mut member = self.members.remove(&id).ok_or(Refusal::UnknownMemberId)?;
        member.fail_parked(Refusal::UnknownMemberId, answers);
        self.member_gone(now, answers);
        Ok(())
    }

    fn member_gone(&mut self, now: Instant, answers: &mut Vec<Answer>) {
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, answers);
        }
        self.try_complete_join(now, answers);
    }

    /// Periodic work: expired sessions and pending ids, join phases that
    /// reached their deadline. Returns the ids of members removed, and
    /// answers owed to parked requests.
    #[must_use = "the answers are owed to parked requests"]
    pub fn tick(&mut self, now: Instant) -> (Vec<String>, Vec<Answer>) {
        let mut answers = Vec::new();
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_parked.is_none() && m.sync_parked.is_none() && m.heartbeat_deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            if let Some(mut member) = self.members.remove(id) {
                member.fail_parked(Refusal::UnknownMemberId, &mut answers);
            }
        }
        if !expired.is_empty() {
            self.member_gone(now, &mut answers);
        } else {
            self.try_complete_join(now, &mut answers);
        }
        self.check();
        (expired, answers)
    }

    /// Validates an OffsetCommit's member and generation (Kafka's rules: a
    /// commit with generation < 0 is a "simple" commit, allowed while the
    /// group has no members).
    pub fn check_commit(&self, member_id: &str, instance_id: Option<&str>, generation: i32) -> Result<(), Refusal> {
        if generation < 0 && self.members.is_empty() {
            return Ok(());
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(Refusal::RebalanceInProgress);
        }
        self.check_member(member_id, instance_id, generation)?;
        assert!(
            generation == self.generation && self.members.contains_key(member_id),
            "group {}: a commit is accepted from a member of the current generation only",
            self.id
        );
        Ok(())
    }

    /// Stores a committed offset applied from the log at `log_offset`.
    pub fn apply_commit(&mut self, topic: &str, partition: i32, committed: CommittedOffset, log_offset: i64) {
        let key = (topic.to_string(), partition);
        if self.offsets.get(&key).is_some_and(|o| o.log_offset > log_offset) {
            return;
        }
        if !self.offsets.contains_key(&key) && self.offsets.len() >= GROUP_OFFSETS_MAX {
            return;
        }
        let previous = self.offsets.insert(key, StoredOffset { committed, log_offset });
        assert!(
            previous.is_none_or(|p| p.log_offset <= log_offset),
            "a stored offset never moves to an earlier log entry"
        );
        assert!(self.offsets.len() <= GROUP_OFFSETS_MAX, "offsets bounded");
    }

    /// An offset tombstone at `log_offset`: the committed offset goes if it
    /// was stored before it.
    pub fn apply_offset_tombstone(&mut self, topic: &str, partition: i32, log_offset: i64) {
        let key = (topic.to_string(), partition);
        if self.offsets.get(&key).is_some_and(|o| o.log_offset < log_offset) {
            self.offsets.remove(&key);
        }
    }

    /// The committed offset of (topic, partition), if any. Asked for a
    /// stable one (OffsetFetch v7, KIP-447), a partition with a commit still
    /// being stored or held inside an open transaction is refused with
    /// `UnstableOffsetCommit` (the client retries): read now, it would give
    /// a new owner of the partition an offset that commit then overtakes.
    pub fn fetch_offset(
        &self,
        topic: &str,
        partition: i32,
        require_stable: bool,
    ) -> Result<Option<CommittedOffset>, Refusal> {
        if require_stable && self.has_pending_commit(topic, partition) {
            return Err(Refusal::UnstableOffsetCommit);
        }
        Ok(self
            .offsets
            .get(&(topic.to_string(), partition))
            .map(|o| o.committed.clone()))
    }

    /// A commit to (topic, partition) passed its checks and is being stored.
    pub fn commit_started(&mut self, topic: &str, partition: i32) {
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
    pub fn commit_finished(&mut self, topic: &str, partition: i32) {
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
    pub fn has_pending_commit(&self, topic: &str, partition: i32) -> bool {
        let key = (topic.to_string(), partition);
        self.pending_commits.contains_key(&key) || self.txn_partitions.contains_key(&key)
    }

    /// Whether a transactional commit fits under the bound.
    pub fn has_room_for_txn(&self, producer_id: i64, topic: &str, partition: i32) -> bool {
        self.txn_offsets.len() < GROUP_OFFSETS_MAX
            || self
                .txn_offsets
                .contains_key(&(producer_id, topic.to_string(), partition))
    }

    /// Holds an offset committed inside producer `producer_id`'s
    /// transaction (stored or replayed).
    pub fn apply_txn_commit(&mut self, producer_id: i64, topic: &str, partition: i32, committed: CommittedOffset) {
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
    pub fn remove_txn_commit(&mut self, producer_id: i64, topic: &str, partition: i32) {
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
    pub fn txn_commits_of(&self, producer_id: i64) -> Vec<(String, i32, CommittedOffset)> {
        self.txn_offsets
            .range((producer_id, String::new(), i32::MIN)..)
            .take_while(|((id, _, _), _)| *id == producer_id)
            .map(|((_, topic, partition), committed)| (topic.clone(), *partition, committed.clone()))
            .collect()
    }

    /// Whether a commit to (topic, partition) fits under the offsets bound.
    pub fn has_room_for(&self, topic: &str, partition: i32) -> bool {
        self.offsets.len() < GROUP_OFFSETS_MAX || self.offsets.contains_key(&(topic.to_string(), partition))
    }

    /// Answers every parked request with `error` (the group is no longer
    /// served here, or is deleted).
    #[must_use = "the answers are owed to parked requests"]
    pub fn fail_parked(&mut self, error: Refusal) -> Vec<Answer> {
        let mut answers = Vec::new();
        for member in self.members.values_mut() {
            member.fail_parked(error, &mut answers);
        }
        answers
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

    fn join_answer_for(answers: &[Answer], ticket: Ticket) -> Option<JoinAnswer> {
        answers.iter().find_map(|a| match a {
            Answer::Join(t, answer) if *t == ticket => Some(answer.clone()),
            _ => None,
        })
    }

    fn sync_answer_for(answers: &[Answer], ticket: Ticket) -> Option<Result<SyncAnswer, Refusal>> {
        answers.iter().find_map(|a| match a {
            Answer::Sync(t, answer) if *t == ticket => Some(answer.clone()),
            _ => None,
        })
    }

    /// Joins a new member (two-step, v4+) and returns its id and ticket.
    fn join_new(group: &mut Group, ids: &mut MemberIds, protocols: &[&str], now: Instant) -> (String, Ticket) {
        let (JoinStep::Answer(first), _) = group.join(join_request("", protocols), ids, now) else {
            panic!("first join is answered at once");
        };
        assert_eq!(first.error, Some(Refusal::MemberIdRequired));
        let id = first.member_id.clone();
        match group.join(join_request(&id, protocols), ids, now) {
            (JoinStep::Park(ticket), _) => (id, ticket),
            (JoinStep::Answer(a), _) => panic!("second join parks, got {a:?}"),
        }
    }

    #[test]
    fn two_members_join_one_generation_and_sync_their_assignments() {
        let t0 = Instant::now();
        let mut ids = MemberIds::new(1);
        let mut group = Group::new("g", t0);
        let (a, ta) = join_new(&mut group, &mut ids, &["range", "roundrobin"], t0);
        let (b, tb) = join_new(&mut group, &mut ids, &["roundrobin", "range"], t0);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        let (_, answers) = group.tick(t0);
        assert!(answers.is_empty(), "initial delay holds the join phase");
        let (_, answers) = group.tick(t0 + INITIAL_REBALANCE_DELAY);
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        let ja = join_answer_for(&answers, ta).unwrap();
        let jb = join_answer_for(&answers, tb).unwrap();
        assert_eq!((ja.error, ja.generation, jb.generation), (None, 1, 1));
        assert_eq!(ja.leader, jb.leader);
        let (leader, follower) = if ja.leader == a { (&a, &b) } else { (&b, &a) };
        let leader_answer = if ja.leader == a { &ja } else { &jb };
        assert_eq!(leader_answer.members.len(), 2, "the leader sees every member");
        assert!(ja.protocol.is_some() && ja.protocol == jb.protocol);

        let t1 = t0 + Duration::from_secs(1);
        let (SyncStep::Park(tf), _) = group.sync(follower, None, 1, vec![], t1) else {
            panic!("follower waits for the leader");
        };
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"for-a")),
            (b.clone(), Bytes::from_static(b"for-b")),
        ];
        let (SyncStep::PersistThenPark(snapshot, tl), answers) = group.sync(leader, None, 1, assignments, t1) else {
            panic!("leader's assignment is persisted first");
        };
        assert_eq!(snapshot.members.len(), 2);
        assert!(answers.is_empty(), "nothing answered before the write is durable");
        let answers = group.complete_sync(1, Ok(10), t1);
        assert_eq!(group.state(), GroupState::Stable);
        let mine = |id: &str| Bytes::from(format!("for-{}", if id == a { "a" } else { "b" }));
        assert_eq!(
            sync_answer_for(&answers, tf).unwrap().unwrap().assignment,
            mine(follower)
        );
        assert_eq!(sync_answer_for(&answers, tl).unwrap().unwrap().assignment, mine(leader));
        assert_eq!(group.heartbeat(&a, None, 1, t1), Ok(()));
    }

    fn stable_group_of_two(t0: Instant, ids: &mut MemberIds) -> (Group, String, String) {
        let mut group = Group::new("g", t0);
        let (a, _) = join_new(&mut group, ids, &["range"], t0);
        let (b, _) = join_new(&mut group, ids, &["range"], t0);
        let _ = group.tick(t0 + INITIAL_REBALANCE_DELAY);
        let leader = group.leader().unwrap().to_string();
        let _ = group.sync(&leader, None, 1, vec![], t0 + INITIAL_REBALANCE_DELAY);
        let _ = group.complete_sync(1, Ok(1), t0 + INITIAL_REBALANCE_DELAY);
        assert_eq!(group.state(), GroupState::Stable);
        (group, a, b)
    }

    #[test]
    fn bad_member_and_generation_get_their_errors_and_change_nothing() {
        let t0 = Instant::now();
        let mut ids = MemberIds::new(1);
        let (mut group, a, _b) = stable_group_of_two(t0, &mut ids);
        assert_eq!(group.heartbeat("nobody", None, 1, t0), Err(Refusal::UnknownMemberId));
        assert_eq!(group.heartbeat(&a, None, 7, t0), Err(Refusal::IllegalGeneration));
        assert!(matches!(
            group.sync("nobody", None, 1, vec![], t0).0,
            SyncStep::Answer(Err(Refusal::UnknownMemberId))
        ));
        assert!(matches!(
            group.sync(&a, None, 0, vec![], t0).0,
            SyncStep::Answer(Err(Refusal::IllegalGeneration))
        ));
        let refused = |step: JoinStep| match step {
            JoinStep::Answer(answer) => answer.error,
            JoinStep::Park(_) => None,
        };
        assert_eq!(
            refused(group.join(join_request("stranger", &["range"]), &mut ids, t0).0),
            Some(Refusal::UnknownMemberId)
        );
        assert_eq!(
            refused(group.join(join_request("", &["sticky-only"]), &mut ids, t0).0),
            Some(Refusal::MemberIdRequired)
        );
        assert_eq!(group.check_commit(&a, None, 0), Err(Refusal::IllegalGeneration));
        assert_eq!(group.check_commit("", None, -1), Err(Refusal::UnknownMemberId));
        assert_eq!(group.leave("nobody", None, t0).0, Err(Refusal::UnknownMemberId));
        assert_eq!(group.state(), GroupState::Stable);
        assert_eq!(group.generation(), 1);
        assert_eq!(group.members().count(), 2);
    }

    #[test]
    fn incompatible_protocols_are_refused() {
        let t0 = Instant::now();
        let mut ids = MemberIds::new(1);
        let (mut group, _a, _b) = stable_group_of_two(t0, &mut ids);
        let mut request = join_request("", &["roundrobin"]);
        request.require_known_member = false;
        assert!(matches!(
            group.join(request, &mut ids, t0).0,
            JoinStep::Answer(JoinAnswer {
                error: Some(Refusal::InconsistentGroupProtocol),
                ..
            })
        ));
        let mut other_type = join_request("", &["range"]);
        other_type.require_known_member = false;
        other_type.protocol_type = "connect".into();
        assert!(matches!(
            group.join(other_type, &mut ids, t0).0,
            JoinStep::Answer(JoinAnswer {
                error: Some(Refusal::InconsistentGroupProtocol),
                ..
            })
        ));
    }

    #[test]
    fn a_silent_member_is_removed_after_its_session_and_the_rest_rebalance() {
        let t0 = Instant::now();
        let mut ids = MemberIds::new(1);
        let (mut group, a, b) = stable_group_of_two(t0, &mut ids);
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(group.heartbeat(&a, None, 1, t1), Ok(()));
        // b never heartbeats: its session (6 s from the join) ends.
        let (expired, _) = group.tick(t0 + Duration::from_secs(7));
        assert_eq!(expired, vec![b.clone()]);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        let t2 = t0 + Duration::from_secs(7);
        assert_eq!(group.heartbeat(&a, None, 1, t2), Err(Refusal::RebalanceInProgress));
        let (JoinStep::Park(ta), answers) = group.join(join_request(&a, &["range"]), &mut ids, t2) else {
            panic!("rejoin parks until the phase completes");
        };
        let answer = join_answer_for(&answers, ta).expect("a is the only member: the phase completes at once");
        assert_eq!((answer.generation, answer.leader.as_str()), (2, a.as_str()));
        assert_eq!(answer.members.len(), 1);
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let t0 = Instant::now();
        let mut ids = MemberIds::new(1);
        let (mut group, a, b) = stable_group_of_two(t0, &mut ids);
        let (c, tc) = join_new(&mut group, &mut ids, &["range"], t0);
        let (JoinStep::Park(ta), answers) = group.join(join_request(&a, &["range"]), &mut ids, t0) else {
            panic!("parks");
        };
        assert!(answers.is_empty());
        // b keeps heartbeating but never rejoins.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(group.heartbeat(&b, None, 1, t1), Err(Refusal::RebalanceInProgress));
        let (_, answers) = group.tick(t0 + Duration::from_secs(10));
        assert_eq!(join_answer_for(&answers, ta).unwrap().generation, 2);
        assert!(join_answer_for(&answers, tc).is_some());
        assert!(group.members().all(|m| m.id != b));
        assert!(group.members().any(|m| m.id == c));
    }

    #[test]
    fn a_repeated_join_answers_the_request_it_replaces() {
        let t0 = Instant::now();
        let mut ids = MemberIds::new(1);
        let (mut group, a, _b) = stable_group_of_two(t0, &mut ids);
        let (JoinStep::Park(first), _) = group.join(join_request(&a, &["range"]), &mut ids, t0) else {
            panic!("parks");
        };
        let (JoinStep::Park(second), answers) = group.join(join_request(&a, &["range"]), &mut ids, t0) else {
            panic!("parks");
        };
        assert_ne!(first, second);
        assert_eq!(
            join_answer_for(&answers, first).unwrap().error,
            Some(Refusal::RebalanceInProgress)
        );
        assert!(join_answer_for(&answers, second).is_none());
    }

    #[test]
    fn the_last_member_leaving_empties_the_group_and_marks_it_for_storage() {
        let t0 = Instant::now();
        let mut ids = MemberIds::new(1);
        let (mut group, a, b) = stable_group_of_two(t0, &mut ids);
        assert_eq!(group.leave(&a, None, t0).0, Ok(()));
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(group.leave(&b, None, t0).0, Ok(()));
        assert_eq!(group.state(), GroupState::Empty);
        assert!(group.take_dirty());
        assert!(!group.take_dirty());
        assert_eq!(group.check_commit("", None, -1), Ok(()), "simple commits once empty");
    }

    #[test]
    fn later_log_entries_win_whatever_order_they_are_applied_in() {
        let mut group = Group::new("g", Instant::now());
        group.apply_commit("t", 0, CommittedOffset::bare(20), 9);
        group.apply_commit("t", 0, CommittedOffset::bare(10), 5);
        assert_eq!(group.offsets()[&("t".to_string(), 0)].committed.offset, 20);
        group.apply_offset_tombstone("t", 0, 7);
        assert_eq!(group.offsets().len(), 1, "a tombstone older than the commit is ignored");
        group.apply_offset_tombstone("t", 0, 10);
        assert!(group.offsets().is_empty());
    }

    #[test]
    fn restored_groups_come_back_stable_with_their_members() {
        let t0 = Instant::now();
        let mut ids = MemberIds::new(1);
        let (group, a, _b) = stable_group_of_two(t0, &mut ids);
        let snapshot = group.snapshot();
        let mut restored = Group::new("g", t0);
        assert!(restored.restore(&snapshot, 3, t0).is_empty());
        assert_eq!(restored.state(), GroupState::Stable);
        assert_eq!(restored.generation(), 1);
        assert_eq!(restored.heartbeat(&a, None, 1, t0), Ok(()));
        assert_eq!(restored.snapshot(), snapshot);
    }

    #[test]
    fn a_stored_leader_that_is_no_member_is_replaced_on_restore() {
        let t0 = Instant::now();
        let mut ids = MemberIds::new(1);
        let (group, _a, _b) = stable_group_of_two(t0, &mut ids);
        let mut snapshot = group.snapshot();
        snapshot.leader = Some("nobody".into());
        let mut restored = Group::new("g", t0);
        let _ = restored.restore(&snapshot, 3, t0);
        assert_eq!(restored.leader(), restored.members().next().map(|m| m.id.as_str()));
    }

    #[test]
    fn a_static_member_rejoining_without_its_id_takes_over_its_entry() {
        let t0 = Instant::now();
        let mut ids = MemberIds::new(1);
        let mut group = Group::new("g", t0);
        let mut request = join_request("", &["range"]);
        request.instance_id = Some("pod-1".into());
        let (JoinStep::Park(first), _) = group.join(request.clone(), &mut ids, t0) else {
            panic!("static members join without MEMBER_ID_REQUIRED");
        };
        let (_, answers) = group.tick(t0 + INITIAL_REBALANCE_DELAY);
        let old_id = join_answer_for(&answers, first).unwrap().member_id;
        let _ = group.join(request, &mut ids, t0 + INITIAL_REBALANCE_DELAY);
        assert_eq!(group.members().count(), 1);
        assert!(group.members().all(|m| m.id != old_id));
    }

    #[test]
    fn member_ids_come_from_the_source_in_order() {
        let mut ids = MemberIds::new(0xab);
        let first = ids.issue("client");
        let second = ids.issue("client");
        assert_eq!(first, "client-ab-0000000000000001");
        assert!(first < second);
        assert_eq!(MemberIds::new(0xab).issue("client"), first, "same source, same ids");
    }

    /// KIP-447: while a commit to a partition is being stored, or held in
    /// an open transaction, a stable fetch of it is refused; an unstable
    /// one reads what is committed.
    #[test]
    fn a_stable_fetch_waits_for_commits_being_stored_or_held() {
        let mut group = Group::new("g", Instant::now());
        group.apply_commit("t", 0, CommittedOffset::bare(5), 1);
        group.commit_started("t", 0);
        assert_eq!(group.fetch_offset("t", 0, true), Err(Refusal::UnstableOffsetCommit));
        assert_eq!(group.fetch_offset("t", 0, false).unwrap().unwrap().offset, 5);
        assert_eq!(group.fetch_offset("t", 1, true), Ok(None));
        assert!(!group.is_forgettable(), "a commit is being stored");
        group.commit_finished("t", 0);
        group.apply_commit("t", 0, CommittedOffset::bare(9), 2);
        assert_eq!(group.fetch_offset("t", 0, true).unwrap().unwrap().offset, 9);
        group.apply_txn_commit(1, "t", 1, CommittedOffset::bare(3));
        assert_eq!(group.fetch_offset("t", 1, true), Err(Refusal::UnstableOffsetCommit));
        group.remove_txn_commit(1, "t", 1);
        assert_eq!(group.fetch_offset("t", 1, true), Ok(None));
    }
}
