//! Broker liveness: heartbeats to the metadata leader, and fencing.
//!
//! ```text
//!  every node, every heartbeat interval        the metadata leader
//!  ────────────────────────────────────        ───────────────────
//!  leader known, not me: BrokerHeartbeat ──TCP──► Liveness::heard(node, now)
//!  I am the leader:      heard(me, now)          ticker, every heartbeat interval:
//!                                                  silent > session timeout, unfenced → FenceBroker
//!                                                  heard again, fenced             → UnfenceBroker
//! ```
//! The liveness table lives only in the leader's memory. A node that
//! becomes leader forgets it and gives every registered broker a grace
//! period of one session timeout (it cannot know who talked to the old
//! leader) — except the old leader itself: its silence started no later than
//! the last heartbeat it answered this node, so its grace runs from there,
//! and a dead metadata leader's partitions fail over one session timeout
//! after it stopped answering, not after the election. "Heard again" means a real heartbeat since this node became
//! leader, never the grace entry, so a new leader does not unfence brokers
//! that are still down. The ticker also proposes `InitCluster` while the
//! image has no cluster id (a new multi-node group).
//!
//! Only a group with peers runs this; a single node never fences itself.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

use crate::{
    command::Command,
    forward::{propose_with_index, PeerSet},
    group::new_cluster_id,
    image::MetadataImage,
    network::{RpcRequest, RpcResponse},
    state_machine::prefers_another_leader,
    types::{NodeId, Raft},
};

/// Brokers the liveness table tracks at most. Entries of unregistered
/// brokers are dropped every tick, so this bounds only what arrives between
/// two ticks from senders that never register.
pub(crate) const LIVENESS_ENTRIES_MAX: usize = 4096;

/// Leader changes logged one by one after a fence; the rest are counted.
const LEADER_CHANGES_LOGGED_MAX: usize = 64;

/// How long the ticker waits for one of its proposals.
const LIVENESS_PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Least time between two preferred-leader elections (and after this node
/// becomes leader, before the first): leadership moves back to a returning
/// broker's partitions at most this often (Kafka's auto leader rebalance).
pub(crate) const PREFERRED_ELECTION_INTERVAL: Duration = Duration::from_secs(5);

/// When the leader last heard of a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// Last heartbeat, or the start of the grace period.
    at: Instant,
    /// Whether `at` is a real heartbeat (not the grace period).
    heard: bool,
}

/// The leader's liveness table: broker → last heard.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    seen: Mutex<BTreeMap<i32, Seen>>,
    /// When the last preferred-leader election was proposed (or this node
    /// became leader).
    last_preferred_election: Mutex<Option<Instant>>,
}

impl Liveness {
    /// Notes a heartbeat of `broker` at `now`.
    pub(crate) fn heard(&self, broker: i32, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= LIVENESS_ENTRIES_MAX && !seen.contains_key(&broker) {
            tracing::warn!(
                broker,
                limit = LIVENESS_ENTRIES_MAX,
                "liveness table full: heartbeat ignored"
            );
            return;
        }
        seen.insert(broker, Seen { at: now, heard: true });
    }

    /// Forgets everything (this node just became leader at `now`).
    /// `old_leader`: the previous leader and when it last answered this
    /// node's heartbeat; its grace period starts then, not now.
    pub(crate) fn forget_all(&self, now: Instant, old_leader: Option<(i32, Instant)>) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.clear();
        if let Some((broker, answered_at)) = old_leader {
            assert!(answered_at <= now, "an answer from the future");
            // Not `heard`: no heartbeat reached this leader, so it unfences nothing.
            seen.insert(
                broker,
                Seen {
                    at: answered_at,
                    heard: false,
                },
            );
        }
        drop(seen);
        *self
            .last_preferred_election
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now);
    }

    /// Whether a preferred-leader election should be proposed now: some
    /// partition prefers another leader and the last election is at least
    /// [`PREFERRED_ELECTION_INTERVAL`] old (then `now` becomes the last).
    pub(crate) fn preferred_election_due(&self, image: &MetadataImage, now: Instant) -> bool {
        let wanted = image
            .topics
            .values()
            .flat_map(|topic| topic.partitions.iter())
            .any(|partition| prefers_another_leader(&image.brokers, partition));
        let mut last = self
            .last_preferred_election
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let waited = last.is_none_or(|at| now.saturating_duration_since(at) >= PREFERRED_ELECTION_INTERVAL);
        if wanted && waited {
            *last = Some(now);
            true
        } else {
            false
        }
    }

    /// The fences and unfences due at `now`. Registered brokers without an
    /// entry get one (the grace period starts); unregistered ones are
    /// dropped.
    pub(crate) fn decide(&self, image: &MetadataImage, now: Instant, session_timeout: Duration) -> Vec<Command> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.retain(|broker, _| image.brokers.contains_key(broker));
        let mut commands = Vec::new();
        for broker in image.brokers.values() {
            let entry = seen.entry(broker.node_id).or_insert(Seen { at: now, heard: false });
            let silent = now.saturating_duration_since(entry.at);
            if !broker.fenced && silent > session_timeout {
                commands.push(Command::FenceBroker {
                    node_id: broker.node_id,
                });
            } else if broker.fenced && entry.heard && silent <= session_timeout {
                commands.push(Command::UnfenceBroker {
                    node_id: broker.node_id,
                });
            }
        }
        assert!(seen.len() <= image.brokers.len());
        commands
    }
}

/// When this node last knew a metadata quorum heard it, for
/// [`crate::MetadataGroup::quorum_silence`]: written by the liveness task
/// (the raft thread) every heartbeat interval, read by the shards with one
/// relaxed load. Milliseconds since `base`, so it fits an atomic.
pub(crate) struct QuorumContact {
    base: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl QuorumContact {
    /// In contact as of now (a node starts with one session of grace).
    pub(crate) fn new() -> QuorumContact {
        QuorumContact {
            base: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A quorum heard this node at `at` (never moves backwards).
    pub(crate) fn touch(&self, at: std::time::Instant) {
        let ms = u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Time from the last contact to `now`.
    pub(crate) fn silence(&self, now: std::time::Instant) -> Duration {
        let last = self.base + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

/// The per-node liveness task: heartbeats, and on the leader the ticker.
pub(crate) struct LivenessTask {
    pub(crate) raft: Raft,
    pub(crate) node_id: NodeId,
    pub(crate) images: watch::Receiver<Arc<MetadataImage>>,
    pub(crate) liveness: Arc<Liveness>,
    pub(crate) peers: Arc<PeerSet>,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) session_timeout: Duration,
    pub(crate) contact: Arc<QuorumContact>,
}

impl LivenessTask {
    /// Runs until the task is aborted.
    pub(crate) async fn run(self) {
        let Ok(broker) = i32::try_from(self.node_id) else {
            tracing::error!(node_id = self.node_id, "node id is not a broker id: no heartbeats");
            return;
        };
        let mut ticker = tokio::time::interval(self.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading_term = None;
        // The leader this node last heartbeated, and when it last answered.
        let mut last_answer: Option<(NodeId, Instant)> = None;
        loop {
            ticker.tick().await;
            let (leader, term, quorum_ack_ms) = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                (
                    metrics.current_leader,
                    metrics.current_term,
                    metrics.millis_since_quorum_ack,
                )
            };
            if leader == Some(self.node_id) {
                if let Some(ms) = quorum_ack_ms {
                    let at = std::time::Instant::now().checked_sub(Duration::from_millis(ms));
                    if let Some(at) = at {
                        self.contact.touch(at);
                    }
                }
                if leading_term != Some(term) {
                    tracing::info!(term, "metadata leader: broker liveness tracking starts (grace period)");
                    let old_leader = last_answer
                        .filter(|(old, _)| *old != self.node_id)
                        .and_then(|(old, at)| Some((i32::try_from(old).ok()?, at)));
                    self.liveness.forget_all(Instant::now(), old_leader);
                    leading_term = Some(term);
                    // Elected: a quorum just voted for this node.
                    self.contact.touch(std::time::Instant::now());
                }
                self.liveness.heard(broker, Instant::now());
                self.lead().await;
            } else {
                leading_term = None;
                if let Some(leader) = leader {
                    if self.send_heartbeat(broker, leader).await {
                        last_answer = Some((leader, Instant::now()));
                        self.contact.touch(std::time::Instant::now());
                    }
                }
            }
        }
    }

    /// Sends one heartbeat; whether the leader took it.
    async fn send_heartbeat(&self, broker: i32, leader: NodeId) -> bool {
        let request = RpcRequest::BrokerHeartbeat { node_id: broker };
        match self.peers.call(leader, &request, self.heartbeat_interval).await {
            Ok(RpcResponse::BrokerHeartbeat { is_leader: true }) => true,
            Ok(answer) => {
                tracing::debug!(leader, ?answer, "broker heartbeat not taken");
                false
            }
            Err(error) => {
                tracing::debug!(leader, %error, "broker heartbeat not delivered");
                false
            }
        }
    }

    async fn lead(&self) {
        let image = Arc::clone(&self.images.borrow());
        if image.cluster_id.is_empty() {
            match new_cluster_id() {
                Ok(cluster_id) => self.propose(Command::InitCluster { cluster_id }).await,
                Err(error) => tracing::warn!(%error, "no cluster id drawn"),
            }
        }
        for command in self.liveness.decide(&image, Instant::now(), self.session_timeout) {
            let before = Arc::clone(&self.images.borrow());
            match &command {
                Command::FenceBroker { node_id } => tracing::info!(
                    broker = node_id,
                    session_timeout_ms = self.session_timeout.as_millis(),
                    "fencing broker: no heartbeat within the session timeout"
                ),
                Command::UnfenceBroker { node_id } => tracing::info!(broker = node_id, "unfencing broker: heard again"),
                _ => {}
            }
            self.propose(command).await;
            log_leader_changes(&before, &self.images.borrow());
        }
        let image = Arc::clone(&self.images.borrow());
        if self.liveness.preferred_election_due(&image, Instant::now()) {
            tracing::info!("moving leadership back to preferred replicas that are in sync");
            self.propose(Command::ElectPreferredLeaders).await;
            log_leader_changes(&image, &self.images.borrow());
        }
    }

    async fn propose(&self, command: Command) {
        match tokio::time::timeout(LIVENESS_PROPOSE_TIMEOUT, propose_with_index(&self.raft, command)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "liveness proposal refused"),
            Err(_) => tracing::warn!("liveness proposal not applied in time"),
        }
    }
}

/// Logs every partition whose leader differs between two images.
fn log_leader_changes(before: &MetadataImage, after: &MetadataImage) {
    let mut changed = 0usize;
    for (name, topic) in &after.topics {
        let Some(old) = before.topics.get(name) else { continue };
        for (partition, previous) in topic.partitions.iter().zip(old.partitions.iter()) {
            if partition.leader != previous.leader {
                changed += 1;
                if changed <= LEADER_CHANGES_LOGGED_MAX {
                    tracing::info!(
                        topic = %name,
                        partition = partition.index,
                        from = previous.leader,
                        to = partition.leader,
                        leader_epoch = partition.leader_epoch,
                        "partition leader changed"
                    );
                }
            }
        }
    }
    if changed > LEADER_CHANGES_LOGGED_MAX {
        tracing::info!(changed, logged = LEADER_CHANGES_LOGGED_MAX, "partition leaders changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::BrokerInfo;

    fn image(fenced: &[(i32, bool)]) -> MetadataImage {
        let mut image = MetadataImage::empty();
        for (node_id, fenced) in fenced {
            image.brokers.insert(
                *node_id,
                BrokerInfo {
                    node_id: *node_id,
                    host: "h".into(),
                    port: 1,
                    shards: 1,
                    fenced: *fenced,
                    shard_ports: Vec::new(),
                    listeners: Vec::new(),
                },
            );
        }
        image
    }

    #[test]
    fn quorum_contact_only_moves_forward() {
        let contact = QuorumContact::new();
        let start = std::time::Instant::now();
        contact.touch(start + Duration::from_millis(300));
        // An older contact (a late heartbeat answer) does not move it back.
        contact.touch(start + Duration::from_millis(100));
        let silence = contact.silence(start + Duration::from_millis(1300));
        // Stored in whole milliseconds since the contact's own start.
        assert!(
            silence <= Duration::from_millis(1001) && silence >= Duration::from_millis(990),
            "{silence:?}"
        );
        assert_eq!(contact.silence(start), Duration::ZERO);
    }

    #[test]
    fn silent_brokers_are_fenced_and_heard_ones_unfenced() {
        let timeout = Duration::from_millis(600);
        let liveness = Liveness::default();
        let start = Instant::now();
        let live = image(&[(1, false), (2, false), (3, true)]);
        // Grace period: nobody is fenced, the fenced one is not unfenced.
        assert!(liveness.decide(&live, start, timeout).is_empty());
        liveness.heard(1, start + Duration::from_millis(500));
        let later = start + Duration::from_millis(700);
        assert_eq!(
            liveness.decide(&live, later, timeout),
            vec![Command::FenceBroker { node_id: 2 }]
        );
        liveness.heard(3, later);
        assert_eq!(
            liveness.decide(&live, later, timeout),
            vec![
                Command::FenceBroker { node_id: 2 },
                Command::UnfenceBroker { node_id: 3 }
            ]
        );
        // Unregistered senders are dropped.
        liveness.heard(99, later);
        liveness.decide(&live, later, timeout);
        assert_eq!(liveness.seen.lock().unwrap().len(), 3);
        // A new leader starts over.
        liveness.forget_all(later, None);
        assert!(liveness.decide(&live, later, timeout).is_empty());
    }

    #[test]
    fn the_old_leaders_grace_runs_from_its_last_answer() {
        let timeout = Duration::from_millis(600);
        let liveness = Liveness::default();
        let answered = Instant::now();
        let elected = answered + Duration::from_millis(400);
        let live = image(&[(1, false), (2, false), (3, false)]);
        liveness.forget_all(elected, Some((2, answered)));
        assert!(liveness.decide(&live, elected, timeout).is_empty(), "within its grace");
        // Past the old leader's last answer + timeout, before the others' grace ends.
        let fenced_at = answered + Duration::from_millis(650);
        assert_eq!(
            liveness.decide(&live, fenced_at, timeout),
            vec![Command::FenceBroker { node_id: 2 }]
        );
        // Alive after all: a heartbeat to the new leader keeps it, as for anyone.
        let liveness = Liveness::default();
        liveness.forget_all(elected, Some((2, answered)));
        liveness.heard(2, elected + Duration::from_millis(100));
        assert!(liveness.decide(&live, fenced_at, timeout).is_empty());
    }

    #[test]
    fn preferred_elections_wait_for_a_reason_and_the_interval() {
        let liveness = Liveness::default();
        let start = Instant::now();
        let mut settled = image(&[(1, false), (2, false)]);
        let mut partition = crate::image::PartitionMeta {
            index: 0,
            leader: 1,
            shard: 0,
            replicas: vec![1, 2],
            leader_epoch: 0,
            isr: vec![1, 2],
            replica_shards: vec![0, 0],
            reassignment: None,
            partition_epoch: crate::image::PartitionEpoch(0),
        };
        settled.topics.insert(
            "t".into(),
            crate::image::TopicMeta {
                name: "t".into(),
                id: [1; 16],
                partitions: vec![partition.clone()],
                configs: BTreeMap::new(),
            },
        );
        assert!(!liveness.preferred_election_due(&settled, start), "nothing to move");
        partition.leader = 2;
        let mut moved = settled.clone();
        if let Some(topic) = moved.topics.get_mut("t") {
            topic.partitions = vec![partition];
        }
        assert!(liveness.preferred_election_due(&moved, start), "first time: due");
        let soon = start + PREFERRED_ELECTION_INTERVAL / 2;
        assert!(!liveness.preferred_election_due(&moved, soon), "within the interval");
        let later = start + PREFERRED_ELECTION_INTERVAL;
        assert!(liveness.preferred_election_due(&moved, later));
        // A new leader waits one interval first.
        liveness.forget_all(later, None);
        assert!(!liveness.preferred_election_due(&moved, later + PREFERRED_ELECTION_INTERVAL / 2));
        assert!(liveness.preferred_election_due(&moved, later + PREFERRED_ELECTION_INTERVAL));
    }
}
