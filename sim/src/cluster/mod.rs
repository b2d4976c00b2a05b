//! The simulated cluster: brokers, the metadata group's model, producers and
//! consumers, all driven by one event queue on virtual time.
//!
//! One step pops the earliest event (ties broken by the order they were
//! scheduled, so the order is a function of the seed alone), applies it,
//! and runs every check. Time is a `u64` of virtual milliseconds; nothing
//! reads a real clock.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    time::Duration,
};

use shardline_log::Offset;
use shardline_replication::{
    election, truncation_point, EpochEnd, EpochRefusal, IsrProposal, LeaderEpoch, Moment, NodeId, PartitionEpoch,
    Placement, ReplicaState, Role, RoleChange,
};

mod brokers;
mod clients;
mod controller;

use crate::{
    check::{Checker, Verified, Violation},
    disk::{Entry, Record, SimLog},
    network::{Endpoint, Network, NetworkFaults},
    rng::Pcg32,
    Config,
};

/// Partitions of the one simulated topic.
const PARTITIONS: usize = 2;
/// Replicas per partition.
const REPLICATION_FACTOR: usize = 3;
/// A broker's own tick: fetch, sync, ISR upkeep, heartbeat.
const NODE_TICK_MS: u64 = 10;
/// A broker heartbeats the metadata group every this many ticks.
const HEARTBEAT_TICKS: u64 = 5;
/// The metadata group fences a broker silent for this long.
const SESSION_TIMEOUT_MS: u64 = 600;
/// `replica_lag_time_max`.
const REPLICA_LAG_MAX_MS: u64 = 300;
/// The metadata group's tick: fencing, and re-sending the image.
const CONTROLLER_TICK_MS: u64 = 50;
/// A follower's fetch or epoch query unanswered this long is sent again.
const FOLLOWER_REQUEST_TIMEOUT_MS: u64 = 200;
/// An ISR change unanswered this long may be proposed again.
const ISR_CHANGE_TIMEOUT_MS: u64 = 400;
/// An acks=all produce waits this long for the high watermark.
const PRODUCE_TIMEOUT_MS: u64 = 800;
/// A client gives up on a request after this long and retries.
const CLIENT_REQUEST_TIMEOUT_MS: u64 = 1200;
/// Records a follower copies per fetch, and a consumer reads per request.
const FETCH_RECORDS_MAX: usize = 8;
/// Producers and consumers.
const PRODUCERS: usize = 3;
const CONSUMERS: usize = 2;
/// Records each producer sends over a run.
const RECORDS_PER_PRODUCER: u32 = 60;

/// The metadata image's version: bumped by every change the metadata group
/// commits (not a leader epoch, not a producer epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
struct MetadataEpoch(u64);

#[derive(Debug, Clone)]
struct Image {
    version: MetadataEpoch,
    placements: Vec<Placement>,
    fenced: Vec<bool>,
    /// Each broker's registered incarnation: a broker uses an image only
    /// once its own registration is in it (the engine registers before it
    /// serves).
    incarnations: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProduceError {
    NotLeader,
    NotEnoughReplicas,
    Disk,
    TimedOut,
}

#[derive(Debug, Clone)]
enum Body {
    /// Also the registration: a new incarnation is a restart.
    Heartbeat {
        incarnation: u64,
    },
    Image(Image),
    AlterIsr {
        partition: usize,
        request: u64,
        proposal: IsrProposal,
    },
    AlterIsrAnswer {
        partition: usize,
        request: u64,
        answer: shardline_replication::IsrAnswer,
    },
    EpochQuery {
        partition: usize,
        request: u64,
        current: LeaderEpoch,
        asked: LeaderEpoch,
    },
    EpochAnswer {
        partition: usize,
        request: u64,
        answer: Result<EpochEnd, EpochRefusal>,
    },
    Fetch {
        partition: usize,
        request: u64,
        current: LeaderEpoch,
        offset: Offset,
    },
    FetchAnswer {
        partition: usize,
        request: u64,
        offset: Offset,
        answer: Result<(Vec<Entry>, Offset), EpochRefusal>,
    },
    Produce {
        partition: usize,
        request: u64,
        record: Record,
    },
    ProduceAnswer {
        request: u64,
        answer: Result<Offset, ProduceError>,
    },
    Consume {
        partition: usize,
        request: u64,
        offset: Offset,
    },
    ConsumeAnswer {
        partition: usize,
        request: u64,
        offset: Offset,
        entries: Option<Vec<Entry>>,
    },
}

#[derive(Debug, Clone)]
struct Message {
    from: Endpoint,
    to: Endpoint,
    body: Body,
}

#[derive(Debug, Clone)]
enum Event {
    Deliver(Message),
    NodeTick(usize),
    ControllerTick,
    ClientTick(usize),
    Fault,
    Restart(usize),
}

/// An acks=all produce waiting on a leader.
#[derive(Debug, Clone)]
struct Waiter {
    end: Offset,
    offset: Offset,
    client: usize,
    request: u64,
    deadline: u64,
}

/// A follower's request in flight.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    request: u64,
    deadline: u64,
    generation: u64,
}

/// One partition replica's volatile state on a running broker.
#[derive(Debug, Clone)]
struct Replica {
    state: ReplicaState,
    outstanding: Option<Outstanding>,
    waiters: Vec<Waiter>,
    /// The ISR change in flight: (request, deadline).
    isr_change: Option<(u64, u64)>,
}

#[derive(Debug)]
struct Node {
    alive: bool,
    /// Bumped at every restart.
    incarnation: u64,
    /// Survives crashes (the disk).
    logs: Vec<SimLog>,
    /// Lost at a crash.
    replicas: Vec<Option<Replica>>,
    image: Option<Image>,
    ticks: u64,
    verified: Vec<Verified>,
    /// The disk answers no sync until then (slow I/O): a leader's group
    /// commit waits, and a follower's fetcher, waiting on its append's
    /// sync, sends nothing. Survives crashes (it is the disk's).
    disk_stalled_until_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Producer,
    Consumer,
}

#[derive(Debug)]
struct Client {
    kind: ClientKind,
    /// In flight: (request, deadline, partition, record for a producer).
    pending: Option<(u64, u64, usize, Option<Record>)>,
    next_sequence: u32,
    /// Consumer: next offset per partition.
    positions: Vec<Offset>,
}

#[derive(Debug)]
struct Controller {
    placements: Vec<Placement>,
    version: MetadataEpoch,
    last_heartbeat: Vec<u64>,
    fenced: Vec<bool>,
    incarnations: Vec<u64>,
    /// The metadata group has no quorum until then: it decides nothing,
    /// answers nothing and sends no image.
    quorum_lost_until_ms: u64,
    /// A quorum loss began and its end has not been noticed yet.
    quorum_lost: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub steps: u64,
    /// FNV-1a over every history line: equal for equal histories.
    pub history_hash: u64,
    pub violation: Option<Violation>,
    pub acked: usize,
    pub committed: usize,
    pub consumed: usize,
    /// Faults drawn (suppressed ones included), and which were applied.
    pub faults: u32,
    pub applied_faults: Vec<String>,
    /// The last lines of the history.
    pub tail: Vec<String>,
}

pub(crate) struct Cluster {
    config: Config,
    rng: Pcg32,
    now: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: BTreeMap<usize, Event>,
    scheduled: u64,
    next_slot: usize,
    network: Network,
    faults_net: NetworkFaults,
    nodes: Vec<Node>,
    controller: Controller,
    clients: Vec<Client>,
    checker: Checker,
    min_isr: usize,
    next_request: u64,
    next_value: u64,
    fault_count: u32,
    applied_faults: Vec<String>,
    hash: u64,
    tail: Vec<String>,
    steps: u64,
}

fn moment(ms: u64) -> Moment {
    Moment(Duration::from_millis(ms))
}

fn node_id(index: usize) -> NodeId {
    NodeId(i32::try_from(index + 1).unwrap_or(i32::MAX))
}

fn node_index(node: NodeId) -> usize {
    usize::try_from(node.0 - 1).unwrap_or(usize::MAX)
}

/// FNV-1a, 64 bits: the history's fingerprint.
pub(crate) fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

impl Cluster {
    pub(crate) fn new(config: Config) -> Cluster {
        let mut rng = Pcg32::new(config.seed);
        let nodes = config.nodes;
        assert!(
            nodes >= REPLICATION_FACTOR,
            "a partition needs {REPLICATION_FACTOR} brokers"
        );
        let placements: Vec<Placement> = (0..PARTITIONS)
            .map(|p| {
                let replicas: Vec<NodeId> = (0..REPLICATION_FACTOR).map(|k| node_id((p + k) % nodes)).collect();
                Placement {
                    leader: replicas.first().copied(),
                    leader_epoch: LeaderEpoch(0),
                    partition_epoch: PartitionEpoch(0),
                    isr: replicas.clone(),
                    replicas,
                }
            })
            .collect();
        let faults_net = NetworkFaults {
            loss_per_mille: u32::try_from(rng.between(0, 50)).unwrap_or(0),
            duplicate_per_mille: u32::try_from(rng.between(0, 30)).unwrap_or(0),
            slow_per_mille: u32::try_from(rng.between(0, 30)).unwrap_or(0),
            delay_ms_max: rng.between(1, 30),
        };
        let min_isr = usize::try_from(rng.between(1, 2)).unwrap_or(2);
        let node_list = (0..nodes)
            .map(|_| Node {
                alive: true,
                incarnation: 1,
                logs: vec![SimLog::default(); PARTITIONS],
                replicas: vec![None; PARTITIONS],
                image: None,
                ticks: 0,
                verified: vec![0; PARTITIONS],
                disk_stalled_until_ms: 0,
            })
            .collect();
        let clients = (0..PRODUCERS + CONSUMERS)
            .map(|c| Client {
                kind: if c < PRODUCERS {
                    ClientKind::Producer
                } else {
                    ClientKind::Consumer
                },
                pending: None,
                next_sequence: 0,
                positions: vec![Offset(0); PARTITIONS],
            })
            .collect();
        let mut cluster = Cluster {
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            scheduled: 0,
            next_slot: 0,
            network: Network::default(),
            faults_net,
            nodes: node_list,
            controller: Controller {
                placements,
                version: MetadataEpoch(1),
                last_heartbeat: vec![0; nodes],
                fenced: vec![false; nodes],
                incarnations: vec![1; nodes],
                quorum_lost_until_ms: 0,
                quorum_lost: false,
            },
            clients,
            checker: Checker::new(PARTITIONS),
            min_isr,
            next_request: 0,
            next_value: 0,
            fault_count: 0,
            applied_faults: Vec::new(),
            hash: FNV_OFFSET,
            tail: Vec::new(),
            steps: 0,
            config,
        };
        for (partition, placement) in cluster.controller.placements.iter().enumerate() {
            let first = cluster.checker.placement_committed(partition, placement);
            assert!(first.is_ok(), "the first placement of a partition is its first");
        }
        cluster.note(format!(
            "seed {} nodes {} min_isr {} network {:?}",
            cluster.config.seed, nodes, min_isr, cluster.faults_net
        ));
        for node in 0..nodes {
            let delay = cluster.rng.between(0, NODE_TICK_MS);
            cluster.schedule(delay, Event::NodeTick(node));
            cluster.restart_replicas(node);
        }
        for client in 0..PRODUCERS + CONSUMERS {
            let delay = cluster.rng.between(0, 20);
            cluster.schedule(delay, Event::ClientTick(client));
        }
        cluster.schedule(0, Event::ControllerTick);
        cluster.schedule(100, Event::Fault);
        cluster
    }

    fn note(&mut self, line: String) {
        self.hash = fnv1a(self.hash, line.as_bytes());
        self.hash = fnv1a(self.hash, b"\n");
        if self.tail.len() >= self.config.history_lines {
            self.tail.remove(0);
        }
        self.tail.push(line);
    }

    fn schedule(&mut self, delay_ms: u64, event: Event) {
        let slot = self.next_slot;
        self.next_slot += 1;
        self.scheduled += 1;
        self.events.insert(slot, event);
        self.queue.push(Reverse((self.now + delay_ms, self.scheduled, slot)));
    }

    fn send(&mut self, from: Endpoint, to: Endpoint, body: Body) {
        let delays = self.network.route(from, to, self.faults_net, &mut self.rng);
        for delay in delays {
            let message = Message {
                from,
                to,
                body: body.clone(),
            };
            self.schedule(delay, Event::Deliver(message));
        }
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Runs to the end of the configured virtual time or the first violation.
    pub(crate) fn run(mut self) -> Outcome {
        let mut violation = None;
        while let Some(Reverse((at, _, slot))) = self.queue.pop() {
            if at > self.config.duration_ms || self.steps >= self.config.steps_max {
                break;
            }
            let Some(event) = self.events.remove(&slot) else {
                continue;
            };
            assert!(at >= self.now, "virtual time never goes back");
            self.now = at;
            self.steps += 1;
            let result = self.step(event).and_then(|()| self.check());
            if let Err(v) = result {
                self.note(format!("t={} VIOLATION {}", self.now, v.0));
                violation = Some(v);
                break;
            }
        }
        if violation.is_none() {
            violation = self.check_durability().err();
        }
        Outcome {
            seed: self.config.seed,
            steps: self.steps,
            history_hash: self.hash,
            violation,
            acked: self.checker.acked_count(),
            committed: self.checker.committed_count(),
            consumed: self.checker.consumed,
            faults: self.fault_count,
            applied_faults: self.applied_faults,
            tail: self.tail,
        }
    }

    fn step(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Deliver(message) => self.deliver(message),
            Event::NodeTick(node) => {
                if self.nodes.get(node).is_some_and(|n| n.alive) {
                    self.node_tick(node)?;
                    self.schedule(NODE_TICK_MS, Event::NodeTick(node));
                }
                Ok(())
            }
            Event::ControllerTick => {
                let checked = self.controller_tick();
                self.schedule(CONTROLLER_TICK_MS, Event::ControllerTick);
                checked
            }
            Event::ClientTick(client) => {
                self.client_tick(client);
                let pause = self.rng.between(5, 40);
                self.schedule(pause, Event::ClientTick(client));
                Ok(())
            }
            Event::Fault => {
                self.fault();
                let pause = self.rng.between(50, 400);
                self.schedule(pause, Event::Fault);
                Ok(())
            }
            Event::Restart(node) => {
                self.restart(node);
                Ok(())
            }
        }
    }

    // ---- faults ----

    fn fault(&mut self) {
        let index = self.fault_count;
        self.fault_count += 1;
        let nodes = self.nodes.len();
        let kind = self.rng.between(0, 10);
        let target = self.rng.index(nodes);
        let other = self.rng.index(nodes + 1);
        let down_ms = self.rng.between(50, 900);
        let suppressed = self.config.suppressed_faults.contains(&index);
        let description = match kind {
            0 | 1 => format!("crash n{} for {down_ms} ms", target + 1),
            2 => format!("isolate n{}", target + 1),
            3 | 4 => {
                let to = if other == nodes {
                    "controller".to_owned()
                } else {
                    format!("n{}", other + 1)
                };
                format!("cut n{} -> {to}", target + 1)
            }
            5 => {
                let from = if other == nodes {
                    "controller".to_owned()
                } else {
                    format!("n{}", other + 1)
                };
                format!("cut {from} -> n{}", target + 1)
            }
            6 | 7 => "heal the network".to_owned(),
            8 => "no fault".to_owned(),
            9 => format!("the metadata group loses its quorum for {down_ms} ms"),
            _ => format!("n{}'s disk stalls for {down_ms} ms", target + 1),
        };
        self.note(format!(
            "t={} fault #{index}: {description}{}",
            self.now,
            if suppressed { " (suppressed)" } else { "" }
        ));
        if suppressed || kind == 8 {
            return;
        }
        self.applied_faults
            .push(format!("t={} #{index} {description}", self.now));
        let endpoint_of = |i: usize| {
            if i == nodes {
                Endpoint::Controller
            } else {
                Endpoint::Node(i)
            }
        };
        match kind {
            0 | 1 => {
                if self.nodes.get(target).is_some_and(|n| n.alive) {
                    self.crash(target);
                    self.schedule(down_ms, Event::Restart(target));
                }
            }
            2 => {
                let mut everyone: Vec<Endpoint> = (0..nodes).map(Endpoint::Node).collect();
                everyone.push(Endpoint::Controller);
                self.network.isolate(Endpoint::Node(target), &everyone);
            }
            3 | 4 => self.network.cut(Endpoint::Node(target), endpoint_of(other)),
            5 => self.network.cut(endpoint_of(other), Endpoint::Node(target)),
            6 | 7 => self.network.heal(),
            9 => {
                let until = self.now + down_ms;
                self.controller.quorum_lost_until_ms = self.controller.quorum_lost_until_ms.max(until);
                self.controller.quorum_lost = true;
            }
            _ => {
                let until = self.now + down_ms;
                if let Some(n) = self.nodes.get_mut(target) {
                    n.disk_stalled_until_ms = n.disk_stalled_until_ms.max(until);
                }
            }
        }
    }

    fn crash(&mut self, node: usize) {
        let Some(n) = self.nodes.get_mut(node) else { return };
        n.alive = false;
        n.image = None;
        for replica in &mut n.replicas {
            *replica = None;
        }
        for log in &mut n.logs {
            log.crash(&mut self.rng);
        }
        for verified in &mut n.verified {
            *verified = 0;
        }
    }

    fn restart(&mut self, node: usize) {
        let Some(n) = self.nodes.get_mut(node) else { return };
        if n.alive {
            return;
        }
        n.alive = true;
        n.incarnation += 1;
        let torn: usize = n.logs.iter_mut().map(SimLog::recover).sum();
        self.note(format!(
            "t={} n{} restarts (recovery cut {torn} torn records)",
            self.now,
            node + 1
        ));
        self.restart_replicas(node);
        self.schedule(0, Event::NodeTick(node));
    }

    fn restart_replicas(&mut self, node: usize) {
        let now = moment(self.now);
        let id = node_id(node);
        let placements = self.controller.placements.clone();
        let Some(n) = self.nodes.get_mut(node) else { return };
        for (partition, placement) in placements.iter().enumerate() {
            if placement.replicas.contains(&id) {
                if let Some(slot) = n.replicas.get_mut(partition) {
                    *slot = Some(Replica {
                        state: ReplicaState::new(id, now),
                        outstanding: None,
                        waiters: Vec::new(),
                        isr_change: None,
                    });
                }
            }
        }
    }

    // ---- checks ----

    /// After every step: every live replica's log below its high watermark
    /// is the committed log; at most one leader per epoch is enforced as
    /// leaders appear (`apply_image`).
    fn check(&mut self) -> Result<(), Violation> {
        for node in 0..self.nodes.len() {
            for partition in 0..PARTITIONS {
                let Some(n) = self.nodes.get_mut(node) else { continue };
                if !n.alive {
                    continue;
                }
                let (Some(Some(replica)), Some(log), Some(verified)) = (
                    n.replicas.get(partition),
                    n.logs.get(partition),
                    n.verified.get_mut(partition),
                ) else {
                    continue;
                };
                self.checker
                    .replica(partition, node, log, replica.state.high_watermark(), verified)?;
            }
        }
        if self.steps.is_multiple_of(256) {
            self.check_durability()?;
        }
        Ok(())
    }

    /// Every acknowledged record is on some in-sync replica's disk.
    fn check_durability(&self) -> Result<(), Violation> {
        for (partition, placement) in self.controller.placements.iter().enumerate() {
            let holders: Vec<&SimLog> = placement
                .isr
                .iter()
                .filter_map(|n| self.nodes.get(node_index(*n)).and_then(|node| node.logs.get(partition)))
                .collect();
            self.checker.acked_still_held(partition, &holders)?;
        }
        Ok(())
    }
}
