//! A seeded model of one consumer group under faults, driving the group
//! rules the engine runs (`shardline_groups`) on virtual time.
//!
//! Consumers join (two-step, v4+), sync (the leader assigns the partitions
//! round-robin), heartbeat, consume, commit, leave and stall. A stalled
//! consumer does nothing while its session runs out, then carries on as if
//! it still belonged (a zombie). Commits travel over each consumer's own
//! connection: in order, after a random delay of up to half a second, so
//! they reach the group after rebalances, expiries and leaves. The leader's
//! assignment is made durable after a random delay too.
//!
//! The model is the group's driver, as `engine/src/coordinator` is: it
//! keeps the parked JoinGroups and SyncGroups by ticket and delivers the
//! answers the rules return, stores what they ask to be stored, and hands
//! them member ids from a [`MemberIds`] of its own. A commit takes effect
//! up to [`STORE_DELAY_MS_MAX`] after its check (the store), with
//! `commit_started` / `commit_finished` around it as the engine's commit
//! does, and consumers read their offsets through the rules'
//! `fetch_offset`, asking for stable ones (KIP-447).
//!
//! Checked whenever a commit takes effect: a partition's committed offset
//! never goes back. Consumers behave as Kafka's do (a consumer commits only
//! partitions it was assigned, positions that only grow, starting from what
//! was committed when it got the partition, and stops committing when it
//! rejoins), so a step back can only come from a commit the group should
//! have fenced (one from an older generation, or from a member it
//! removed) or an offset read while a commit to it was still being stored.
//!
//! Now and then the coordinator fails over: the group is rebuilt from the
//! facts stored so far (group snapshots and commits) by the replay the
//! engine's coordinator load runs (`shardline_groups::replay_entry`), an
//! assignment not yet stored is lost, every parked request is failed
//! (NOT_COORDINATOR), and commits still on their way to the old coordinator
//! are lost with their connections. After each failover the rebuilt group
//! must hold every commit it took.
//!
//! Every choice comes from the run's PCG32 (`rng.rs`), time is virtual
//! (milliseconds from an origin `Instant` read once, which no history line
//! shows), member ids come from a counter: a seed replays its history byte
//! for byte ([`GroupOutcome::history_hash`], FNV-1a over every line as the
//! cluster model does).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use bytes::Bytes;
use shardline_groups::{
    replay_entry, Answer, CommittedOffset, Group, GroupState, JoinAnswer, JoinRequest, JoinStep, MemberIds, Refusal,
    Stored, SyncAnswer, SyncStep, Ticket,
};

use crate::{
    cluster::{fnv1a, FNV_OFFSET},
    rng::Pcg32,
    Violation,
};

/// Partitions of the one topic the group consumes.
const PARTITIONS: i32 = 4;
/// Consumers in the model.
const CONSUMERS: usize = 3;
/// Steps of one run.
pub const GROUP_STEPS: usize = 1500;
/// Every consumer's session (the group's minimum) and rebalance timeouts.
const SESSION_TIMEOUT_MS: i32 = 1000;
const REBALANCE_TIMEOUT_MS: i32 = 2000;
/// Longest a commit spends on its connection.
const COMMIT_DELAY_MS_MAX: u64 = 500;
/// Longest a commit takes to be stored once checked (fsync, replication).
pub const STORE_DELAY_MS_MAX: u64 = 300;
/// History lines a failure shows.
const HISTORY_LINES: usize = 100;
/// The one group's id and the one topic's name.
const GROUP: &str = "g";
const TOPIC: &str = "t";

/// One group run's settings.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub seed: u64,
    pub steps: usize,
    /// Longest a commit takes to store between its check and its effect.
    pub store_delay_ms_max: u64,
    /// Whether consumers fetch offsets asking for stable ones (KIP-447).
    pub require_stable: bool,
}

impl GroupConfig {
    /// The settings CI and `just sim-groups` use for `seed`.
    pub fn for_seed(seed: u64) -> GroupConfig {
        GroupConfig {
            seed,
            steps: GROUP_STEPS,
            store_delay_ms_max: STORE_DELAY_MS_MAX,
            require_stable: true,
        }
    }
}

/// What a group run did.
#[derive(Debug, Clone)]
pub struct GroupOutcome {
    pub seed: u64,
    /// FNV-1a over every history line: equal for equal histories.
    pub history_hash: u64,
    pub violation: Option<Violation>,
    pub commits_taken: usize,
    pub commits_fenced: usize,
    /// The highest generation a consumer was assigned partitions in.
    pub generations: i32,
    pub failovers: usize,
    /// The last lines of the history.
    pub tail: Vec<String>,
}

/// Where a consumer is in the protocol.
enum Phase {
    Idle,
    /// A JoinGroup parked under the ticket (of the group incarnation).
    Joining(u64, Ticket),
    Syncing(u64, Ticket),
    /// Assigned these partitions, fetching their committed offsets.
    Fetching(Vec<i32>),
    Member,
}

/// An OffsetCommit on its way.
struct Commit {
    arrives_ms: u64,
    member_id: String,
    generation: i32,
    partition: i32,
    offset: i64,
}

struct Consumer {
    member_id: String,
    generation: i32,
    phase: Phase,
    /// Assigned partitions and the next offset to commit.
    owned: BTreeMap<i32, i64>,
    stalled_until_ms: u64,
    /// In order: a connection delivers what it was given in order.
    connection: VecDeque<Commit>,
}

/// A commit checked and stored, not yet in effect.
struct Storing {
    effective_ms: u64,
    partition: i32,
    committed: CommittedOffset,
    log_offset: i64,
}

/// One run.
pub struct GroupModel {
    config: GroupConfig,
    rng: Pcg32,
    origin: Instant,
    now_ms: u64,
    ids: MemberIds,
    group: Group,
    /// Which incarnation of the group (one per failover): tickets are the
    /// group's own, so they are kept with it.
    incarnation: u64,
    /// Answers the rules returned for parked requests, not yet picked up
    /// by their consumer, by (incarnation, ticket).
    answers: BTreeMap<(u64, Ticket), Answer>,
    consumers: Vec<Consumer>,
    /// The leader's assignment, durable once `complete_sync` is called.
    persisting: Option<(i32, Stored)>,
    next_log_offset: i64,
    /// What the coordinator stored, by log offset: what a failover replays.
    log: Vec<(i64, Stored)>,
    /// Per partition: the committed offset the group shows.
    committed: BTreeMap<i32, i64>,
    storing: Vec<Storing>,
    outcome: GroupOutcome,
}

fn join_request(member_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        instance_id: None,
        client_id: "model".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_TIMEOUT_MS,
        rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"t"))],
        require_known_member: true,
    }
}

fn encode_assignment(partitions: &[i32]) -> Bytes {
    let text: Vec<String> = partitions.iter().map(i32::to_string).collect();
    Bytes::from(text.join(","))
}

/// The model's own assignment format (its leader wrote it).
fn decode_assignment(bytes: &[u8]) -> Vec<i32> {
    std::str::from_utf8(bytes)
        .unwrap_or_default()
        .split(',')
        .filter_map(|part| part.parse().ok())
        .collect()
}

impl GroupModel {
    pub fn new(config: GroupConfig) -> GroupModel {
        let origin = Instant::now();
        let outcome = GroupOutcome {
            seed: config.seed,
            history_hash: FNV_OFFSET,
            violation: None,
            commits_taken: 0,
            commits_fenced: 0,
            generations: 0,
            failovers: 0,
            tail: Vec::new(),
        };
        GroupModel {
            rng: Pcg32::new(config.seed),
            origin,
            now_ms: 0,
            ids: MemberIds::new(config.seed),
            group: Group::new(GROUP, origin),
            incarnation: 0,
            answers: BTreeMap::new(),
            consumers: (0..CONSUMERS)
                .map(|_| Consumer {
                    member_id: String::new(),
                    generation: -1,
                    phase: Phase::Idle,
                    owned: BTreeMap::new(),
                    stalled_until_ms: 0,
                    connection: VecDeque::new(),
                })
                .collect(),
            persisting: None,
            next_log_offset: 0,
            log: Vec::new(),
            committed: BTreeMap::new(),
            storing: Vec::new(),
            outcome,
            config,
        }
    }

    /// Runs the configured steps, or up to the first violation.
    pub fn run(mut self) -> GroupOutcome {
        self.note(format!(
            "seed {} store delay <= {} ms, stable fetches {}",
            self.config.seed, self.config.store_delay_ms_max, self.config.require_stable
        ));
        for _ in 0..self.config.steps {
            if let Err(violation) = self.step() {
                self.note(format!("VIOLATION: {}", violation.0));
                self.outcome.violation = Some(violation);
                break;
            }
        }
        assert_ne!(
            self.group.state(),
            GroupState::Dead,
            "the model never deletes its group"
        );
        self.outcome
    }

    fn now(&self) -> Instant {
        self.origin + Duration::from_millis(self.now_ms)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.rng.between(0, bound.max(1) - 1)
    }

    fn note(&mut self, line: String) {
        let line = format!("t={} {line}", self.now_ms);
        self.outcome.history_hash = fnv1a(self.outcome.history_hash, line.as_bytes());
        self.outcome.history_hash = fnv1a(self.outcome.history_hash, b"\n");
        if self.outcome.tail.len() >= HISTORY_LINES {
            self.outcome.tail.remove(0);
        }
        self.outcome.tail.push(line);
    }

    /// Keeps the answers the rules returned until their consumer looks.
    fn deliver(&mut self, answers: Vec<Answer>) {
        for answer in answers {
            let ticket = match &answer {
                Answer::Join(ticket, _) | Answer::Sync(ticket, _) => *ticket,
            };
            self.answers.insert((self.incarnation, ticket), answer);
        }
    }

    /// Stores `entry` (durable at once) and returns its log offset.
    fn store(&mut self, entry: Stored) -> i64 {
        self.next_log_offset += 1;
        self.log.push((self.next_log_offset, entry));
        self.next_log_offset
    }

    /// Stores the group's metadata if it emptied (as the engine does in
    /// the background).
    fn store_if_dirty(&mut self) {
        if self.group.take_dirty() {
            let snapshot = self.group.snapshot();
            self.store(Stored::Group(snapshot));
        }
    }

    /// The coordinator moves: the group is rebuilt from what was stored.
    fn fail_over(&mut self) -> Result<(), Violation> {
        let now = self.now();
        let answers = self.group.fail_parked(Refusal::NotCoordinator);
        self.deliver(answers);
        let mut groups: HashMap<String, Group> = HashMap::new();
        for (log_offset, entry) in &self.log {
            replay_entry(&mut groups, entry.clone(), *log_offset, now);
        }
        self.group = groups.remove(GROUP).unwrap_or_else(|| Group::new(GROUP, now));
        self.incarnation += 1;
        self.persisting = None;
        // Appended, so replayed above: the old coordinator's pending
        // effects are the rebuilt group's already.
        self.storing.clear();
        // Connections to the old coordinator break: what was on them never
        // reaches the new one. (Kept, they let a rejoin at a restored
        // generation overtake the member's own older commits, which one
        // connection does not do: docs/reliability.md.)
        for consumer in &mut self.consumers {
            consumer.connection.clear();
        }
        self.outcome.failovers += 1;
        let line = format!(
            "coordinator fails over: generation {} {:?}",
            self.group.generation(),
            self.group.state()
        );
        self.note(line);
        for (partition, offset) in &self.committed {
            if !self.group.offsets().contains_key(&(TOPIC.to_string(), *partition)) {
                return Err(Violation(format!(
                    "the rebuilt group lost partition {partition}'s commit {offset}"
                )));
            }
        }
        self.check_committed("failover")
    }

    /// The offsets the group shows never go back.
    fn check_committed(&mut self, after: &str) -> Result<(), Violation> {
        for partition in 0..PARTITIONS {
            let Some(stored) = self.group.offsets().get(&(TOPIC.to_string(), partition)) else {
                continue;
            };
            let now = stored.committed.offset;
            let previous = self.committed.insert(partition, now).unwrap_or(0);
            if now != previous {
                self.note(format!("p{partition} committed {previous} -> {now} ({after})"));
            }
            if now < previous {
                return Err(Violation(format!(
                    "partition {partition}: committed offset went back from {previous} to {now} ({after})"
                )));
            }
        }
        Ok(())
    }

    /// Stored commits whose time has come take effect.
    fn take_effect(&mut self) -> Result<(), Violation> {
        let now_ms = self.now_ms;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.storing)
            .into_iter()
            .partition(|storing| storing.effective_ms <= now_ms);
        self.storing = later;
        for storing in due {
            self.group.commit_finished(TOPIC, storing.partition);
            self.group
                .apply_commit(TOPIC, storing.partition, storing.committed, storing.log_offset);
            self.outcome.commits_taken += 1;
        }
        self.check_committed("a commit took effect")
    }

    fn step(&mut self) -> Result<(), Violation> {
        match self.below(10) {
            0..=2 => {
                self.now_ms += 1 + self.below(120);
                let (expired, answers) = self.group.tick(self.now());
                self.deliver(answers);
                if !expired.is_empty() {
                    self.note(format!("sessions expired: {expired:?}"));
                }
            }
            3 => {
                if self.below(40) == 0 {
                    self.fail_over()?;
                } else if let Some((generation, snapshot)) = self.persisting.take() {
                    let log_offset = self.store(snapshot);
                    let answers = self.group.complete_sync(generation, Ok(log_offset), self.now());
                    self.deliver(answers);
                    self.note(format!("assignment of generation {generation} stored"));
                }
            }
            _ => {
                let c = usize::try_from(self.below(CONSUMERS as u64)).unwrap_or(0);
                if self
                    .consumers
                    .get(c)
                    .is_some_and(|consumer| consumer.stalled_until_ms <= self.now_ms)
                {
                    self.act(c);
                }
            }
        }
        self.store_if_dirty();
        self.deliver_commits();
        self.take_effect()
    }

    fn consumer(&mut self, c: usize) -> &mut Consumer {
        let count = self.consumers.len();
        self.consumers
            .get_mut(c)
            .unwrap_or_else(|| panic!("consumer {c} of {count}"))
    }

    /// Consumer `c` takes its next step.
    fn act(&mut self, c: usize) {
        let now = self.now();
        match std::mem::replace(&mut self.consumer(c).phase, Phase::Idle) {
            Phase::Idle => {
                let member_id = self.consumer(c).member_id.clone();
                let (step, answers) = self.group.join(join_request(&member_id), &mut self.ids, now);
                match step {
                    JoinStep::Park(ticket) => self.consumer(c).phase = Phase::Joining(self.incarnation, ticket),
                    JoinStep::Answer(answer) => self.joined(c, answer),
                }
                self.deliver(answers);
            }
            Phase::Joining(incarnation, ticket) => match self.answers.remove(&(incarnation, ticket)) {
                None => self.consumer(c).phase = Phase::Joining(incarnation, ticket),
                Some(Answer::Join(_, answer)) => self.joined(c, answer),
                Some(other) => panic!("a join ticket answered as a sync: {other:?}"),
            },
            Phase::Syncing(incarnation, ticket) => match self.answers.remove(&(incarnation, ticket)) {
                None => self.consumer(c).phase = Phase::Syncing(incarnation, ticket),
                Some(Answer::Sync(_, Ok(answer))) => self.synced(c, &answer),
                Some(Answer::Sync(_, Err(error))) => self.rejoin(c, error),
                Some(other) => panic!("a sync ticket answered as a join: {other:?}"),
            },
            Phase::Fetching(partitions) => self.fetch(c, partitions),
            Phase::Member => {
                self.consumer(c).phase = Phase::Member;
                self.member_acts(c);
            }
        }
    }

    fn member_acts(&mut self, c: usize) {
        let now = self.now();
        match self.below(20) {
            0..=5 => {
                let (id, generation) = (self.consumer(c).member_id.clone(), self.consumer(c).generation);
                if let Err(error) = self.group.heartbeat(&id, None, generation, now) {
                    self.rejoin(c, error);
                }
            }
            6 => {
                let id = self.consumer(c).member_id.clone();
                let (verdict, answers) = self.group.leave(&id, None, now);
                self.deliver(answers);
                self.note(format!("c{c} ({id}) leaves: {verdict:?}"));
                self.forget_member(c);
            }
            7 => {
                let stall = 500 + self.below(2500);
                self.consumer(c).stalled_until_ms = self.now_ms + stall;
                self.note(format!("c{c} stalls for {stall} ms"));
            }
            _ => {
                // Consume a few records of one owned partition and commit.
                let owned: Vec<i32> = self.consumer(c).owned.keys().copied().collect();
                if owned.is_empty() {
                    return;
                }
                let pick = usize::try_from(self.below(owned.len() as u64)).unwrap_or(0);
                let partition = owned.get(pick).copied().unwrap_or_default();
                let advance = 1 + i64::try_from(self.below(4)).unwrap_or(0);
                let delay = self.below(COMMIT_DELAY_MS_MAX);
                let now_ms = self.now_ms;
                let consumer = self.consumer(c);
                let position = consumer.owned.entry(partition).or_insert(0);
                *position += advance;
                let offset = *position;
                let after_last = consumer.connection.back().map_or(0, |last| last.arrives_ms);
                let commit = Commit {
                    arrives_ms: (now_ms + delay).max(after_last),
                    member_id: consumer.member_id.clone(),
                    generation: consumer.generation,
                    partition,
                    offset,
                };
                consumer.connection.push_back(commit);
                self.note(format!("c{c} sends commit p{partition} = {offset}"));
            }
        }
    }

    /// A JoinGroup answered: the next step, or back to the start.
    fn joined(&mut self, c: usize, answer: JoinAnswer) {
        match answer.error {
            Some(Refusal::MemberIdRequired) => self.consumer(c).member_id = answer.member_id,
            Some(error) => self.rejoin(c, error),
            None => {
                let now = self.now();
                let consumer = self.consumer(c);
                consumer.member_id = answer.member_id.clone();
                consumer.generation = answer.generation;
                let mut assignments = Vec::new();
                if answer.leader == answer.member_id {
                    let count = answer.members.len();
                    for (position, (id, _, _)) in answer.members.iter().enumerate() {
                        let partitions: Vec<i32> = (0..PARTITIONS)
                            .filter(|p| usize::try_from(*p).unwrap_or(0) % count == position)
                            .collect();
                        assignments.push((id.clone(), encode_assignment(&partitions)));
                    }
                }
                let (id, generation) = (answer.member_id, answer.generation);
                let (step, answers) = self.group.sync(&id, None, generation, assignments, now);
                match step {
                    SyncStep::Answer(Ok(sync)) => self.synced(c, &sync),
                    SyncStep::Answer(Err(error)) => self.rejoin(c, error),
                    SyncStep::Park(ticket) => self.consumer(c).phase = Phase::Syncing(self.incarnation, ticket),
                    SyncStep::PersistThenPark(snapshot, ticket) => {
                        self.persisting = Some((generation, Stored::Group(snapshot)));
                        self.consumer(c).phase = Phase::Syncing(self.incarnation, ticket);
                    }
                }
                self.deliver(answers);
            }
        }
    }

    /// A SyncGroup answered: the consumer fetches its partitions' offsets.
    fn synced(&mut self, c: usize, answer: &SyncAnswer) {
        let partitions = decode_assignment(&answer.assignment);
        self.fetch(c, partitions);
    }

    /// OffsetFetch of the assigned partitions: the consumer owns them from
    /// the committed offsets on, or (an unstable offset) asks again at its
    /// next step.
    fn fetch(&mut self, c: usize, partitions: Vec<i32>) {
        let mut owned = BTreeMap::new();
        for partition in &partitions {
            match self.group.fetch_offset(TOPIC, *partition, self.config.require_stable) {
                Ok(committed) => {
                    owned.insert(*partition, committed.map_or(0, |c| c.offset));
                }
                Err(Refusal::UnstableOffsetCommit) => {
                    self.note(format!("c{c}: p{partition} unstable, fetching again"));
                    self.consumer(c).phase = Phase::Fetching(partitions);
                    return;
                }
                Err(error) => panic!("a fetch refused with {error:?}"),
            }
        }
        let consumer = self.consumer(c);
        consumer.owned = owned;
        consumer.phase = Phase::Member;
        let line = format!(
            "c{c} ({}) generation {} owns {:?}",
            consumer.member_id, consumer.generation, consumer.owned
        );
        let generation = consumer.generation;
        self.outcome.generations = self.outcome.generations.max(generation);
        self.note(line);
    }

    /// Back to JoinGroup (revoking what it owned, as Kafka's eager protocol
    /// does): with its member id while the group knows it, without once not.
    fn rejoin(&mut self, c: usize, error: Refusal) {
        let consumer = self.consumer(c);
        consumer.owned.clear();
        consumer.phase = Phase::Idle;
        if matches!(error, Refusal::UnknownMemberId | Refusal::IllegalGeneration) {
            self.forget_member(c);
        }
    }

    fn forget_member(&mut self, c: usize) {
        let consumer = self.consumer(c);
        consumer.member_id.clear();
        consumer.generation = -1;
        consumer.owned.clear();
        consumer.phase = Phase::Idle;
    }

    /// Commits whose time has come reach the group, each connection in order.
    fn deliver_commits(&mut self) {
        for c in 0..CONSUMERS {
            loop {
                let now_ms = self.now_ms;
                let connection = &mut self.consumer(c).connection;
                if connection.front().is_none_or(|commit| commit.arrives_ms > now_ms) {
                    break;
                }
                if let Some(commit) = connection.pop_front() {
                    self.commit(c, &commit);
                }
            }
        }
    }

    fn commit(&mut self, c: usize, commit: &Commit) {
        let checked = self.group.check_commit(&commit.member_id, None, commit.generation);
        if let Err(error) = checked {
            self.outcome.commits_fenced += 1;
            self.note(format!(
                "c{c} commit p{} = {} (generation {}) fenced: {error:?}",
                commit.partition, commit.offset, commit.generation
            ));
            return;
        }
        let line = format!(
            "c{c} commit p{} = {} (generation {}, group {:?} generation {})",
            commit.partition,
            commit.offset,
            commit.generation,
            self.group.state(),
            self.group.generation()
        );
        self.note(line);
        let committed = CommittedOffset {
            commit_timestamp_ms: i64::try_from(self.now_ms).unwrap_or(i64::MAX),
            ..CommittedOffset::bare(commit.offset)
        };
        let log_offset = self.store(Stored::OffsetCommit {
            group: GROUP.into(),
            topic: TOPIC.into(),
            partition: commit.partition,
            committed: committed.clone(),
        });
        self.group.commit_started(TOPIC, commit.partition);
        let delay = self.rng.between(0, self.config.store_delay_ms_max);
        self.storing.push(Storing {
            effective_ms: self.now_ms + delay,
            partition: commit.partition,
            committed,
            log_offset,
        });
    }
}
