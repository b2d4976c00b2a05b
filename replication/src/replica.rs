//! One partition replica's replication state, and the rules that move it.
//!
//! ## Kafka's rules, as this crate keeps them
//! The leader appends client batches stamped with its leader epoch;
//! followers copy them by fetching, and each fetch offset tells the leader
//! the follower's log end. The high watermark is the smallest log end over
//! the in-sync replicas — the leader's own counted only up to what it may
//! show readers (its durable end under `fsync always`) — and never moves
//! back while this replica leads. A follower takes the leader's high
//! watermark, bounded by its own log end.
//!
//! An in-sync follower that has not been caught up for longer than
//! `replica_lag_time_max` leaves the ISR; a replica rejoins once it holds
//! everything below the high watermark and everything written before this
//! leader's epoch began. The leader proposes, the metadata group decides
//! (`election::on_isr_change`), and the change comes back as a new
//! [`Placement`]. A proposal names the partition epoch of the placement
//! it was based on, and the metadata group takes it only while that is
//! still the partition's (KIP-497): so a placement with a newer partition
//! epoch settles every proposal made before it — taken and shown there
//! (or overtaken by what came after), or never to be taken.

use std::{collections::BTreeMap, time::Duration};

use shardline_log::Offset;

use crate::types::{LeaderEpoch, Moment, NodeId, PartitionEpoch, Placement, Role};

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FollowerProgress {
    /// The follower's log end (its last fetch offset).
    log_end: Offset,
    /// Last time the follower was caught up (fetched at least what the
    /// leader's log end was when it answered the follower's previous fetch).
    caught_up_at: Moment,
    /// The leader's log end when it answered this follower's last fetch.
    leader_end_at_last_fetch: Offset,
}

/// What changed when a placement was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    /// Nothing that needs action.
    None,
    /// Became (or stayed, under a new epoch) a follower: start a fetcher for
    /// this generation.
    StartFollowing { generation: u64 },
    /// Became leader.
    BecameLeader,
    /// Stopped leading (now offline).
    StoppedLeading,
}

/// ISR changes this leader proposed, all against one partition epoch,
/// whose fate it does not know yet. Until then the high watermark waits for
/// the replicas they add too (Kafka's "maximal ISR", KIP-497): the metadata
/// group may already count them in sync, and elect one of them, before this
/// leader hears so.
///
/// No timer ends it: a leader cut off from the metadata group cannot know
/// whether its change was taken (simulation bugs 1 and 5, docs/reliability.md).
/// A placement with a newer partition epoch does (bug 6): at most one
/// proposal made against an epoch is ever taken, and only while the
/// partition is at that epoch, so that placement shows its effect (or what
/// the metadata group decided after it) or it can never be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingIsr {
    /// Replicas any of these proposals adds.
    additions: Vec<NodeId>,
    /// The last proposal, re-sent while its outcome is unknown.
    proposed: IsrProposal,
    /// How the metadata group answered the last proposal.
    answer: Option<IsrAnswer>,
}

/// How the metadata group answered an ISR change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsrAnswer {
    /// Recorded.
    Accepted,
    /// Not recorded, on its merits (an invalid ISR: a fenced newcomer, a
    /// stranger): proposed again unchanged it would be refused again, so an
    /// earlier copy of it was not recorded either.
    Refused,
    /// Not recorded: the partition has a newer leader epoch or partition
    /// epoch than the proposal's. Says nothing of an earlier copy (which may
    /// be what moved the partition epoch; simulation bug 5): the high
    /// watermark keeps waiting, and nothing more is proposed, until a
    /// placement says more.
    Stale,
    /// No answer (a timeout, no quorum, a lost forward): it may be recorded.
    Unknown,
}

/// An ISR the leader wants the metadata group to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    /// The leader, and the epoch it leads under (the metadata group refuses
    /// the change if the partition has a newer one).
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch of the placement the change was based on (the
    /// metadata group refuses it if the partition changed since).
    pub partition_epoch: PartitionEpoch,
    pub isr: Vec<NodeId>,
}

/// Why a request naming a leader epoch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochRefusal {
    /// This replica does not lead.
    NotLeader,
    /// The request's epoch is older than this leader's (FENCED_LEADER_EPOCH).
    Fenced,
    /// The request's epoch is newer than this leader knows (UNKNOWN_LEADER_EPOCH).
    Unknown,
}

/// The replication state of one partition on one broker.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    /// The broker this replica lives on.
    node: NodeId,
    role: Role,
    leader_epoch: LeaderEpoch,
    /// The partition epoch of the last placement applied.
    partition_epoch: PartitionEpoch,
    replicas: Vec<NodeId>,
    isr: Vec<NodeId>,
    /// Offsets below this are on every in-sync replica: what consumers may read.
    high_watermark: Offset,
    /// Ordered so that every walk over it is deterministic (the simulator
    /// replays histories byte for byte).
    followers: BTreeMap<NodeId, FollowerProgress>,
    /// When this broker last became leader (grace before shrinking the ISR).
    leader_since: Moment,
    /// This log's end when this broker became leader: everything committed
    /// under earlier epochs lies below it.
    leader_epoch_start: Offset,
    /// Bumped on every role or epoch change; a follower fetcher started under
    /// another generation stops.
    generation: u64,
    /// The follower must ask the leader where its log diverges before fetching.
    needs_truncation: bool,
    /// An ISR change proposed to the metadata group and not yet answered.
    isr_change_in_flight: bool,
    /// The last proposed ISR change, until a placement shows its effect.
    pending_isr: Option<PendingIsr>,
}

impl ReplicaState {
    /// A replica on broker `node` that has seen no placement yet (offline).
    pub fn new(node: NodeId, now: Moment) -> ReplicaState {
        ReplicaState {
            node,
            role: Role::Offline,
            leader_epoch: LeaderEpoch::NONE,
            partition_epoch: PartitionEpoch(0),
            replicas: Vec::new(),
            isr: Vec::new(),
            high_watermark: Offset(0),
            followers: BTreeMap::new(),
            leader_since: now,
            leader_epoch_start: Offset(0),
            generation: 0,
            needs_truncation: false,
            isr_change_in_flight: false,
            pending_isr: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> PartitionEpoch {
        self.partition_epoch
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn isr(&self) -> &[NodeId] {
        &self.isr
    }

    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A follower must truncate (ask the leader where its log diverges)
    /// before it fetches.
    pub fn needs_truncation(&self) -> bool {
        self.needs_truncation
    }

    /// The follower has truncated (or found nothing to cut) for this epoch.
    pub fn truncation_done(&mut self) {
        self.needs_truncation = false;
    }

    /// (leads, under-replicated): a leader whose ISR is smaller than its
    /// replica set (Kafka's UnderReplicated).
    pub fn replication_health(&self) -> (bool, bool) {
        let leads = self.role == Role::Leader;
        (leads, leads && self.isr.len() < self.replicas.len())
    }

    /// The epoch this replica leads under, if it leads.
    pub fn leading_epoch(&self) -> Option<LeaderEpoch> {
        (self.role == Role::Leader).then_some(self.leader_epoch)
    }

    /// Checks a request's current leader epoch (`None`: the request names none).
    pub fn check_leader_epoch(&self, requested: Option<LeaderEpoch>) -> Result<LeaderEpoch, EpochRefusal> {
        let epoch = self.leading_epoch().ok_or(EpochRefusal::NotLeader)?;
        match requested {
            None => Ok(epoch),
            Some(r) if r == epoch => Ok(epoch),
            Some(r) if r < epoch => Err(EpochRefusal::Fenced),
            Some(_) => Err(EpochRefusal::Unknown),
        }
    }

    /// Applies the metadata group's placement of the partition. `log_end`
    /// is this replica's log end now (where a new leader's epoch starts).
    ///
    /// # Panics
    /// If the placement is inconsistent (ISR outside replicas, leader outside
    /// the ISR) or its leader epoch or partition epoch is older than one
    /// already applied.
    pub fn apply_placement(&mut self, placement: &Placement, log_end: Offset, now: Moment) -> RoleChange {
        placement.assert_consistent();
        assert!(
            placement.leader_epoch >= self.leader_epoch,
            "leader epoch went back from {} to {}",
            self.leader_epoch,
            placement.leader_epoch
        );
        assert!(
            placement.partition_epoch >= self.partition_epoch,
            "partition epoch went back from {} to {}",
            self.partition_epoch,
            placement.partition_epoch
        );
        let first = self.leader_epoch == LeaderEpoch::NONE;
        let unchanged = placement.leader_epoch == self.leader_epoch
            && placement.replicas == self.replicas
            && placement.isr == self.isr;
        assert!(
            first || unchanged || placement.partition_epoch > self.partition_epoch,
            "the partition changed under the same partition epoch {}",
            placement.partition_epoch
        );
        let role = match placement.leader {
            Some(leader) if leader == self.node => Role::Leader,
            Some(leader) => Role::Follower { leader },
            None => Role::Offline,
        };
        let was = self.role;
        let epoch_changed = self.leader_epoch != placement.leader_epoch;
        self.replicas.clone_from(&placement.replicas);
        self.isr.clone_from(&placement.isr);
        self.partition_epoch = placement.partition_epoch;
        if self
            .pending_isr
            .as_ref()
            .is_some_and(|pending| placement.partition_epoch > pending.proposed.partition_epoch)
        {
            // Settled: taken and shown here (or overtaken), or never to be taken.
            self.pending_isr = None;
        }
        if !epoch_changed && was == role {
            return RoleChange::None;
        }
        self.role = role;
        self.leader_epoch = placement.leader_epoch;
        self.generation += 1;
        self.isr_change_in_flight = false;
        self.pending_isr = None;
        self.followers.clear();
        let change = match role {
            Role::Leader => {
                self.leader_since = now;
                self.leader_epoch_start = log_end;
                self.needs_truncation = false;
                RoleChange::BecameLeader
            }
            Role::Follower { .. } => {
                self.needs_truncation = true;
                RoleChange::StartFollowing {
                    generation: self.generation,
                }
            }
            Role::Offline => {
                self.needs_truncation = true;
                if was == Role::Leader {
                    RoleChange::StoppedLeading
                } else {
                    RoleChange::None
                }
            }
        };
        assert!(
            self.role != Role::Leader || self.isr.contains(&self.node),
            "a leader is in its ISR"
        );
        change
    }

    /// Leader: follower `follower` fetched from `fetch_offset` (its log end)
    /// while the leader's log ended at `leader_log_end`. Returns whether it
    /// was recorded (a leader hears only from its replicas); the caller then
    /// moves the high watermark ([`ReplicaState::advance_high_watermark`]).
    pub fn record_follower_fetch(
        &mut self,
        follower: NodeId,
        fetch_offset: Offset,
        leader_log_end: Offset,
        now: Moment,
    ) -> bool {
        if self.role != Role::Leader || !self.replicas.contains(&follower) || follower == self.node {
            return false;
        }
        let leader_since = self.leader_since;
        let progress = self.followers.entry(follower).or_insert(FollowerProgress {
            log_end: fetch_offset,
            caught_up_at: leader_since,
            leader_end_at_last_fetch: leader_log_end,
        });
        if fetch_offset >= leader_log_end || fetch_offset >= progress.leader_end_at_last_fetch {
            progress.caught_up_at = now;
        }
        progress.log_end = fetch_offset;
        progress.leader_end_at_last_fetch = leader_log_end;
        assert!(progress.caught_up_at <= now, "caught up in the future");
        true
    }

    /// Leader: the high watermark becomes the smallest log end over the
    /// in-sync replicas, the leader's own counted up to `own_visible_end`
    /// (what it may show readers); a follower not heard from since this
    /// broker became leader holds it where it is. Returns whether it moved.
    /// A follower's high watermark moves only by
    /// [`ReplicaState::follow_high_watermark`].
    ///
    /// # Panics
    /// If the high watermark would pass `log_end`.
    pub fn advance_high_watermark(&mut self, own_visible_end: Offset, log_end: Offset) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        assert!(own_visible_end <= log_end, "nothing past the log end is visible");
        let before = self.high_watermark;
        let mut lowest = own_visible_end;
        let additions = self
            .pending_isr
            .as_ref()
            .map_or(&[][..], |pending| pending.additions.as_slice());
        for member in self.isr.iter().chain(additions) {
            if *member == self.node {
                continue;
            }
            let end = self.followers.get(member).map_or(self.high_watermark, |p| p.log_end);
            lowest = lowest.min(end);
        }
        if lowest > self.high_watermark {
            self.high_watermark = lowest;
        }
        assert!(
            self.high_watermark >= before,
            "a leader's high watermark never moves back"
        );
        assert!(
            self.high_watermark <= log_end,
            "the high watermark never passes the log end"
        );
        self.high_watermark > before
    }

    /// Follower: the offset to fetch from, which tells the leader how much
    /// of its log this replica holds: only what it may count on keeping,
    /// `own_visible_end` (under `fsync always`, what is fsynced). A record
    /// written but not synced — the follower's sync failed, its log now
    /// refuses writes — is lost at a crash, so the leader must not count
    /// it towards the high watermark: the follower may still be in the ISR
    /// when it restarts without it, and be elected.
    pub fn fetch_offset(&self, own_visible_end: Offset, log_end: Offset) -> Offset {
        assert!(own_visible_end <= log_end, "nothing past the log end is visible");
        assert!(matches!(self.role, Role::Follower { .. }), "only a follower fetches");
        own_visible_end
    }

    /// Follower: takes the leader's high watermark, bounded by this log's end.
    pub fn follow_high_watermark(&mut self, leader_high_watermark: Offset, log_end: Offset) {
        if matches!(self.role, Role::Follower { .. }) {
            self.high_watermark = leader_high_watermark.min(log_end).max(Offset(0));
            assert!(self.high_watermark <= log_end);
        }
    }

    /// The log was cut to end at `log_end` (a follower's truncation): the
    /// high watermark does not stay past it.
    pub fn truncated(&mut self, log_end: Offset) {
        self.high_watermark = self.high_watermark.min(log_end);
        assert!(self.high_watermark <= log_end);
    }

    /// The ISR this leader wants now: members not caught up for longer than
    /// `lag_max` leave; replicas `alive` and caught up to both the high
    /// watermark and this epoch's start join. `None` when nothing should
    /// change, this replica does not lead, or a change is in flight.
    ///
    /// A proposal whose outcome is unknown is proposed again, as it was, to
    /// learn it. A pending addition is not dropped because the replica was
    /// fenced since: a proposal still on its way may reach the metadata
    /// group after the replica is back, and be taken.
    pub fn desired_isr(
        &mut self,
        now: Moment,
        lag_max: Duration,
        alive: impl Fn(NodeId) -> bool,
    ) -> Option<IsrProposal> {
        if self.role != Role::Leader || self.isr_change_in_flight {
            return None;
        }
        if let Some(pending) = &self.pending_isr {
            match pending.answer {
                Some(IsrAnswer::Unknown) => return Some(pending.proposed.clone()),
                // The partition moved on: wait for the placement that says how.
                Some(IsrAnswer::Stale) => return None,
                // In flight (answered above), or taken and not yet shown.
                None | Some(IsrAnswer::Accepted | IsrAnswer::Refused) => {}
            }
        }
        let mut isr: Vec<NodeId> = Vec::new();
        for replica in &self.replicas {
            let keep = if *replica == self.node {
                true
            } else {
                let progress = self.followers.get(replica);
                let caught_up_at = progress.map_or(self.leader_since, |p| p.caught_up_at);
                if self.isr.contains(replica) {
                    now.since(caught_up_at) <= lag_max
                } else {
                    // Kafka's rule: a replica rejoins once it has everything
                    // below the high watermark and everything written before
                    // this leader's epoch began (the high watermark alone can
                    // be stale-low on a leader that just restarted); from then
                    // on it holds the high watermark back until it keeps up.
                    alive(*replica)
                        && progress
                            .is_some_and(|p| p.log_end >= self.high_watermark && p.log_end >= self.leader_epoch_start)
                }
            };
            if keep {
                isr.push(*replica);
            }
        }
        assert!(isr.contains(&self.node), "a leader proposes an ISR holding itself");
        assert!(isr.iter().all(|member| self.replicas.contains(member)));
        let mut current = self.isr.clone();
        current.sort_unstable();
        let mut wanted = isr.clone();
        wanted.sort_unstable();
        (current != wanted).then_some(IsrProposal {
            leader: self.node,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr,
        })
    }

    /// The driver sent `proposal` to the metadata group: no other until it
    /// is answered, and the high watermark waits for the replicas it adds.
    pub fn isr_change_proposed(&mut self, proposal: &IsrProposal) {
        assert!(!self.isr_change_in_flight, "one ISR change in flight at a time");
        assert_eq!(proposal.leader_epoch, self.leader_epoch, "proposed under this epoch");
        assert_eq!(
            proposal.partition_epoch, self.partition_epoch,
            "proposed against the partition as last placed"
        );
        self.isr_change_in_flight = true;
        // Additions of an earlier proposal with no known outcome stay: it
        // may still be recorded (it was made against this partition epoch
        // too: a newer one would have settled it).
        let mut additions: Vec<NodeId> = self.pending_isr.take().map(|p| p.additions).unwrap_or_default();
        for member in &proposal.isr {
            if !self.isr.contains(member) && !additions.contains(member) {
                additions.push(*member);
            }
        }
        assert!(additions.iter().all(|added| self.replicas.contains(added)));
        self.pending_isr = Some(PendingIsr {
            additions,
            proposed: proposal.clone(),
            answer: None,
        });
    }

    /// The metadata group answered the proposal in flight (or did not).
    /// Refused: the high watermark stops waiting for its additions.
    /// Accepted: it waits until a placement shows the change (or a later
    /// one). Unknown: it waits, and [`ReplicaState::desired_isr`] proposes
    /// the change again to learn its fate. Stale: it waits for the
    /// placement with the newer leader or partition epoch.
    pub fn isr_change_answered(&mut self, answer: IsrAnswer) {
        self.isr_change_in_flight = false;
        if answer == IsrAnswer::Refused {
            self.pending_isr = None;
        } else if let Some(pending) = &mut self.pending_isr {
            pending.answer = Some(answer);
        }
        assert!(!self.isr_change_in_flight);
        assert!(self.pending_isr.is_none() || answer != IsrAnswer::Refused);
    }

    /// The partition is closing on this broker: offline, and any fetcher of
    /// the old generation stops.
    pub fn close(&mut self) {
        self.role = Role::Offline;
        self.generation += 1;
    }
}
