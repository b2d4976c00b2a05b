//! Network faults between three engine processes (issue 16 §3), Jepsen
//! style: each node in a network namespace of its own, joined to the others
//! and to the test by veth links (`common/netns.rs`), under two idempotent
//! `acks=all` producers and two consumers reading all the while
//! (`common/workload.rs`). The faults:
//!
//! - a partition leader cut off from its peers but not from its clients;
//! - a node leading *every* partition the producers write, cut off the same
//!   way (its clients must find the new leaders elsewhere);
//! - one-way partitions: what a leader sends its peers is dropped, or what
//!   they send it;
//! - a bridge: two nodes that do not see each other, both seeing the third;
//! - lossy links (a share of the packets dropped at random, iptables) and a
//!   slow link (a rate cap whose queue delays what crosses it, `tbf`; this
//!   kernel has no `netem`).
//!
//! Every test ends with the history check (`common/history.rs`): every
//! acknowledged message stored exactly once at its acknowledged offset,
//! offsets dense, nothing stored that was not sent, and nothing a consumer
//! was served during the faults later lost or replaced. Timings are printed
//! (`--nocapture`), not asserted; the one liveness rule asserted is that a
//! cut-off leader's partitions are acknowledged again while it is still cut
//! off, within a generous bound.
//!
//! Needs root, iproute2 and iptables; skips with a message where they are
//! missing. Rounds per test: 2 or 3 in CI, `SHARDLINE_NETFAULT_ROUNDS=N` for
//! more by hand. The tests of this file run one at a time (three engines
//! each on two cores is load enough).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    collections::BTreeSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use common::{
    cluster::Cluster,
    history::{check, payload, Delivery, History, Observation, Stored},
    netns::Network,
    workload::{Budget, Load, LoadSpec},
};

const TOPIC: &str = "netfault";
const PARTITIONS: i32 = 3;
/// With 3 replicas: acks=all survives one node cut off, and an
/// acknowledged message is always on at least two nodes.
const MIN_INSYNC_REPLICAS: &str = "2";

/// Two producers, each sending one message per partition per 20 ms (300
/// messages per second in all), and two consumers.
const LOAD: LoadSpec = LoadSpec {
    topic: TOPIC,
    partitions: PARTITIONS,
    producers: 2,
    consumers: 2,
    tick: Duration::from_millis(20),
};

/// How long a fault lasts at least: well past the broker session timeout
/// (1.5 s), so the others fence a cut-off node and it fences itself.
const FAULT_TIME: Duration = Duration::from_secs(6);
/// Bound on a cut-off leader's partitions being acknowledged again while it
/// is cut off (about 2 s when all goes well; generous for a loaded machine).
const RESUME_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the cluster forming, or agreeing again after a fault.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on every replica of every partition being back in the ISR.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(40);
/// Bound on the first acknowledgement at the start and after a heal.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on reading everything back.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after the cluster is whole again, before the next fault.
const SETTLE_PAUSE: Duration = Duration::from_millis(500);
/// Test budget: this plus [`BUDGET_PER_ROUND`] per round.
const BUDGET_BASE: Duration = Duration::from_secs(120);
const BUDGET_PER_ROUND: Duration = Duration::from_secs(60);
/// Rounds per test by hand (`SHARDLINE_NETFAULT_ROUNDS`) at most.
const ROUNDS_MAX: usize = 20;

/// A fault between nodes: set (`true`) or healed.
type Fault = Box<dyn Fn(&Network, bool)>;

/// One test at a time in this binary.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `default` rounds, or `SHARDLINE_NETFAULT_ROUNDS` (at most `ROUNDS_MAX`).
fn rounds(default: usize) -> usize {
    std::env::var("SHARDLINE_NETFAULT_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .map_or(default, |rounds: usize| rounds.clamp(1, ROUNDS_MAX))
}

/// Takes this binary's one-test-at-a-time lock, or prints why the test
/// cannot run here and gives `None` (it skips): `filters` for the tests that
/// need iptables and tc besides `ip`.
fn begin(filters: bool) -> Option<std::sync::MutexGuard<'static, ()>> {
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(why) = Network::unavailable(filters) {
        println!("skipped: network fault tests cannot run: {why}");
        return None;
    }
    Some(one)
}

/// A cluster on its own network with the test topic in sync and the load
/// running (its first acknowledgement in); `assignment` places replicas by
/// hand (first = preferred leader), else the cluster places them.
struct Run {
    cluster: Cluster,
    load: Load,
    budget: Budget,
}

impl Run {
    fn start(rounds: usize, assignment: Option<&[Vec<i32>]>) -> Run {
        let budget = Budget::new(BUDGET_BASE + BUDGET_PER_ROUND * u32::try_from(rounds).unwrap());
        let mut cluster = Cluster::start_on_network(common::cluster::REPLICATED_FLAGS);
        cluster.wait_ready(budget.bound(READY_TIMEOUT));
        let configs = [("min.insync.replicas", MIN_INSYNC_REPLICAS)];
        match assignment {
            Some(assignment) => cluster.create_topic_assigned(TOPIC, assignment, &configs),
            None => cluster.create_topic(TOPIC, PARTITIONS, &configs),
        }
        cluster.wait_full_isr(TOPIC, PARTITIONS, budget.bound(CATCH_UP_TIMEOUT));
        let load = Load::start(&cluster.bootstrap(), LOAD, budget.end);
        let mut run = Run { cluster, load, budget };
        run.wait_acks_after(Instant::now(), &[], ACK_TIMEOUT);
        run
    }

    fn wait_acks_after(&mut self, since: Instant, partitions: &[i32], timeout: Duration) -> Duration {
        let cluster = &mut self.cluster;
        let (first, per_partition) =
            self.load
                .wait_acks_after(since, partitions, self.budget.bound(timeout), &mut || {
                    cluster.assert_none_exited()
                });
        per_partition.values().copied().max().unwrap_or(first)
    }

    /// Partitions `node` leads now.
    fn led_by(&mut self, node: i32) -> Vec<i32> {
        let leaders = self.cluster.partition_leaders(TOPIC);
        (0..PARTITIONS)
            .filter(|&p| leaders[usize::try_from(p).unwrap()] == node)
            .collect()
    }

    /// After a heal: produce resumes, the cluster agrees on a metadata
    /// leader and every replica is back in every ISR. Prints the times.
    /// The cluster's recovery is asserted (bounded waits); the clients'
    /// is a printed figure: a client that stays stuck past its message
    /// timeout shows as failed deliveries, which the history allows.
    fn recover(&mut self, what: &str, fault_at: Instant) {
        let healed_at = Instant::now();
        let cluster = &mut self.cluster;
        let after_heal = self
            .load
            .acks_after(healed_at, &[], self.budget.bound(ACK_TIMEOUT), &mut || {
                cluster.assert_none_exited()
            });
        self.cluster.wait_ready(self.budget.bound(READY_TIMEOUT));
        self.cluster
            .wait_full_isr(TOPIC, PARTITIONS, self.budget.bound(CATCH_UP_TIMEOUT));
        println!(
            "{what}: after the heal, produce acknowledged within {}; every replica in every ISR {} ms after the fault",
            after_heal.map_or_else(
                |_| format!("NONE in {} ms", ACK_TIMEOUT.as_millis()),
                |(first, _)| format!("{} ms", first.as_millis())
            ),
            fault_at.elapsed().as_millis()
        );
        std::thread::sleep(SETTLE_PAUSE);
    }

    /// Stops the load, checks the history and that no node exited.
    fn finish(self) {
        let Run {
            mut cluster,
            load,
            budget,
        } = self;
        let recorded = load.finish();
        cluster.wait_full_isr(TOPIC, PARTITIONS, budget.bound(CATCH_UP_TIMEOUT));
        let verdict = recorded.check(&cluster.bootstrap(), budget.bound(CONSUME_TIMEOUT));
        assert!(verdict.acknowledged > 0, "nothing was acknowledged");
        cluster.assert_none_exited();
    }
}

/// Cuts `node` off from its peers (not from its clients), waits until the
/// partitions it led are acknowledged again while it is still cut off
/// (bounded by [`RESUME_TIMEOUT`]; fails the test otherwise), keeps the cut
/// for at least [`FAULT_TIME`], heals and waits until the cluster is whole.
fn isolate_round(run: &mut Run, label: &str, node: i32) {
    run.budget.assert_left(label);
    let led = run.led_by(node);
    run.cluster.isolate_from_peers(node, true);
    let cut_at = Instant::now();
    // The cut node stops leading once it has missed a metadata quorum for
    // the session timeout; the others elect new leaders; its clients find
    // them (docs/cluster.md, "A leader cut off from its peers").
    let resumed = run.wait_acks_after(cut_at, &led, RESUME_TIMEOUT);
    assert_answers_as_fenced(&run.cluster, node, &led);
    std::thread::sleep(FAULT_TIME.saturating_sub(cut_at.elapsed()));
    run.cluster.isolate_from_peers(node, false);
    println!(
        "{label}: node {node} (led partitions {led:?}) cut off from its peers for {} ms; \
         its partitions acknowledged again {} ms after the cut",
        cut_at.elapsed().as_millis(),
        resumed.as_millis()
    );
    run.recover(label, cut_at);
}

/// A node cut off from the metadata quorum past the session timeout,
/// asked for Metadata, names no leader where its image names itself and
/// leaves itself out of the brokers, so that a client whose only connection
/// it is drops it and asks the others, and names itself coordinator of no
/// group (bounded by [`RESUME_TIMEOUT`]: it fences itself 1.5 s after the
/// cut).
fn assert_answers_as_fenced(cluster: &Cluster, node: i32, led: &[i32]) {
    let deadline = Instant::now() + RESUME_TIMEOUT;
    loop {
        let answer = cluster.metadata(node, Some(&[TOPIC]));
        let fenced = answer.as_ref().is_ok_and(|metadata| {
            let brokers: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
            let leaders: Vec<i32> = metadata
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .filter(|p| led.contains(&p.partition_index))
                .map(|p| p.leader_id.0)
                .collect();
            !brokers.contains(&node) && leaders.iter().all(|&leader| leader != node)
        });
        // Nor does it name itself coordinator of any group.
        let fenced = fenced
            && (0..16).all(|n| {
                cluster
                    .group_coordinator_seen_by(node, &format!("fence-probe-{n}"))
                    .is_ok_and(|(coordinator, _)| coordinator != node)
            });
        if fenced {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node}, cut off for {RESUME_TIMEOUT:?}, still answers Metadata or FindCoordinator as a live leader: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many times the metadata leaders so far fenced a broker (their log
/// lines), over every node's log.
fn fence_events(cluster: &Cluster) -> usize {
    cluster
        .node_ids()
        .into_iter()
        .map(|node| cluster.log(node).matches("fencing broker").count())
        .sum()
}

/// In each round the leader of one partition is cut off from both peers
/// while the clients still reach it: a stale leader that cannot replicate.
#[test]
fn acknowledged_messages_survive_leaders_cut_off_from_their_peers() {
    let Some(_one) = begin(false) else {
        return;
    };
    let rounds = rounds(3);
    let mut run = Run::start(rounds, None);
    for round in 0..rounds {
        let partition = i32::try_from(round).unwrap() % PARTITIONS;
        let node = run.cluster.partition_leader(TOPIC, partition);
        isolate_round(&mut run, &format!("isolation {}/{rounds}", round + 1), node);
    }
    run.finish();
}

/// Node 1 is the preferred leader of every partition (and leads them all
/// again after each round, once it is back in their ISRs): cut off from its
/// peers, it is the only broker the producers had a connection to. They
/// must find the new leaders through it (docs/cluster.md, "A leader cut off
/// from its peers": before the fix, librdkafka asked only it for metadata
/// and never found them while the cut lasted).
#[test]
fn a_leader_of_every_partition_cut_off_is_replaced_for_its_clients() {
    let Some(_one) = begin(false) else {
        return;
    };
    let rounds = rounds(2);
    let assignment: Vec<Vec<i32>> = (0..PARTITIONS)
        .map(|p| if p % 2 == 0 { vec![1, 2, 3] } else { vec![1, 3, 2] })
        .collect();
    let mut run = Run::start(rounds, Some(&assignment));
    for round in 0..rounds {
        // Leadership returns to node 1 within the preferred-leader period.
        let deadline = Instant::now() + run.budget.bound(READY_TIMEOUT);
        while run.led_by(1).len() < usize::try_from(PARTITIONS).unwrap() {
            assert!(Instant::now() < deadline, "node 1 does not lead every partition again");
            std::thread::sleep(Duration::from_millis(200));
        }
        isolate_round(
            &mut run,
            &format!("every-partition leader cut off {}/{rounds}", round + 1),
            1,
        );
    }
    run.finish();
}

/// One-way partitions: in turn, everything the leader of a partition sends
/// its peers is dropped (it still hears them), and everything they send it
/// (it still reaches them); then a bridge: the leader of a partition and
/// another node no longer see each other, while both see the third. From
/// the fourth round on (by hand), every other series of three strikes the
/// metadata leader instead.
#[test]
fn acknowledged_messages_survive_one_way_partitions_and_a_bridge() {
    let Some(_one) = begin(true) else {
        return;
    };
    let rounds = rounds(3);
    let mut run = Run::start(rounds, None);
    for round in 0..rounds {
        run.budget.assert_left(&format!("round {}", round + 1));
        let partition = i32::try_from(round).unwrap() % PARTITIONS;
        let node = if (round / 3) % 2 == 0 {
            run.cluster.partition_leader(TOPIC, partition)
        } else {
            run.cluster.metadata_leader()
        };
        let role = if run.cluster.metadata_leader() == node {
            "metadata leader, "
        } else {
            ""
        };
        let leads: Vec<i32> = run.led_by(node);
        let others: Vec<i32> = run.cluster.node_ids().into_iter().filter(|&n| n != node).collect();
        let network = run.cluster.network();
        let (label, apply): (String, Fault) = match round % 3 {
            0 => (
                format!(
                    "one-way {}/{rounds}: node {node} ({role}leading {leads:?}) -> peers dropped",
                    round + 1
                ),
                Box::new({
                    let others = others.clone();
                    move |network: &Network, on| {
                        for &other in &others {
                            network.drop_one_way(node, other, on);
                        }
                    }
                }),
            ),
            1 => (
                format!(
                    "one-way {}/{rounds}: peers -> node {node} ({role}leading {leads:?}) dropped",
                    round + 1
                ),
                Box::new({
                    let others = others.clone();
                    move |network: &Network, on| {
                        for &other in &others {
                            network.drop_one_way(other, node, on);
                        }
                    }
                }),
            ),
            _ => {
                let (far, middle) = (others[0], others[1]);
                (
                    format!(
                        "bridge {}/{rounds}: node {node} ({role}leading {leads:?}) and node {far} apart, node {middle} sees both",
                        round + 1
                    ),
                    Box::new(move |network: &Network, on| network.cut(node, far, on)),
                )
            }
        };
        apply(network, true);
        let fault_at = Instant::now();
        // Whatever the cluster makes of it, produce goes on somewhere.
        let during = run.load.acks_after(fault_at, &[], FAULT_TIME, &mut || {});
        std::thread::sleep(FAULT_TIME.saturating_sub(fault_at.elapsed()));
        let led_during = run.cluster.partition_leaders(TOPIC);
        apply(run.cluster.network(), false);
        println!(
            "{label}: {} ms; first acknowledgement after the fault: {}; leaders at its end {led_during:?}",
            fault_at.elapsed().as_millis(),
            during.map_or_else(
                |_| "none during the fault".to_string(),
                |(first, _)| format!("{} ms", first.as_millis())
            )
        );
        run.recover(&label, fault_at);
    }
    run.finish();
}

/// Flaky links between the nodes: a share of the packets on every peer
/// link dropped at random, then the links of one partition's leader slowed
/// to a crawl (a rate cap whose queue delays what waits behind it).
#[test]
fn acknowledged_messages_survive_lossy_and_slow_links() {
    let Some(_one) = begin(true) else {
        return;
    };
    let rounds = rounds(2);
    let mut run = Run::start(rounds, None);
    /// Packets dropped on every peer link in a lossy round.
    const LOSS_PERCENT: u32 = 10;
    /// The slow link's rate (kbit/s) and queue (ms at that rate).
    const SLOW: (u32, u32) = (256, 200);
    for round in 0..rounds {
        run.budget.assert_left(&format!("round {}", round + 1));
        let nodes = run.cluster.node_ids();
        let pairs: Vec<(i32, i32)> = nodes
            .iter()
            .enumerate()
            .flat_map(|(i, &a)| nodes[i + 1..].iter().map(move |&b| (a, b)))
            .collect();
        let (label, slowed) = if round % 2 == 0 {
            (
                format!(
                    "lossy {}/{rounds}: {LOSS_PERCENT} % of packets dropped on every peer link",
                    round + 1
                ),
                None,
            )
        } else {
            let node = run.cluster.partition_leader(TOPIC, 0);
            (
                format!(
                    "slow {}/{rounds}: node {node}'s peer links capped at {} kbit/s, {} ms queue",
                    round + 1,
                    SLOW.0,
                    SLOW.1
                ),
                Some(node),
            )
        };
        let network = run.cluster.network();
        for &(a, b) in &pairs {
            match slowed {
                None => network.lossy(a, b, LOSS_PERCENT),
                Some(node) if a == node || b == node => network.slow(a, b, Some(SLOW)),
                Some(_) => {}
            }
        }
        let fault_at = Instant::now();
        let fences_before = fence_events(&run.cluster);
        let before = run.load.reports.0.lock().unwrap().len();
        std::thread::sleep(FAULT_TIME * 2);
        let reports = run.load.reports.0.lock().unwrap()[before..]
            .iter()
            .filter(|r| r.outcome.is_ok())
            .count();
        let fences = fence_events(&run.cluster) - fences_before;
        let network = run.cluster.network();
        for &(a, b) in &pairs {
            match slowed {
                None => network.lossy(a, b, 0),
                Some(node) if a == node || b == node => network.slow(a, b, None),
                Some(_) => {}
            }
        }
        println!(
            "{label}: {} ms, {reports} acknowledgements meanwhile (300 messages per second offered), \
             {fences} brokers fenced",
            fault_at.elapsed().as_millis()
        );
        run.recover(&label, fault_at);
    }
    run.finish();
}

/// A small seeded generator for the flapping schedule (xorshift64*): the
/// seed is printed, so a schedule can be run again.
struct Schedule(u64);

impl Schedule {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

/// Flapping links: for 12 s per round, every 0.5–2 s the faults change at
/// random (seed printed; `SHARDLINE_NETFAULT_SEED` sets it): the links heal
/// and one link is cut (a bridge) or one node cut off, or all heal, or one
/// more link is cut on top of what is cut — leaders fenced, elected, back in
/// the ISR and out again in quick succession, while the clients write and
/// read. `SHARDLINE_NETFAULT_FLAP=harsh` lets the faults pile up instead.
#[test]
fn acknowledged_messages_survive_flapping_links() {
    let Some(_one) = begin(false) else {
        return;
    };
    /// How long the links flap per round.
    const FLAP_TIME: Duration = Duration::from_secs(12);
    let rounds = rounds(2);
    let seed = std::env::var("SHARDLINE_NETFAULT_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("flapping schedule seed {seed} (SHARDLINE_NETFAULT_SEED={seed} runs it again)");
    let mut schedule = Schedule(seed);
    // By hand, `SHARDLINE_NETFAULT_FLAP=harsh`: faults pile up until a
    // "heal" step (often no majority anywhere for seconds).
    let harsh = std::env::var("SHARDLINE_NETFAULT_FLAP").is_ok_and(|mode| mode == "harsh");
    let mut run = Run::start(rounds, None);
    let nodes = run.cluster.node_ids();
    let pairs: Vec<(i32, i32)> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, &a)| nodes[i + 1..].iter().map(move |&b| (a, b)))
        .collect();
    for round in 0..rounds {
        run.budget.assert_left(&format!("round {}", round + 1));
        let fault_at = Instant::now();
        let fences_before = fence_events(&run.cluster);
        let mut cut: Vec<(i32, i32)> = Vec::new();
        let mut steps = Vec::new();
        while fault_at.elapsed() < FLAP_TIME {
            let network = run.cluster.network();
            let pair = pairs[usize::try_from(schedule.next(pairs.len() as u64)).unwrap()];
            let node = nodes[usize::try_from(schedule.next(nodes.len() as u64)).unwrap()];
            // Mostly one fault at a time (a bridge, an isolated node), so
            // that a majority can form somewhere; sometimes one more cut on
            // top, which may leave no majority at all for a moment.
            let step = schedule.next(8);
            if step < 6 && !harsh {
                for &(a, b) in &cut {
                    network.cut(a, b, false);
                }
                cut.clear();
            }
            match step {
                0..=2 => {
                    network.cut(pair.0, pair.1, true);
                    cut.push(pair);
                    steps.push(format!("bridge {}-{}", pair.0, pair.1));
                }
                3 | 4 => {
                    for &(a, b) in pairs.iter().filter(|(a, b)| *a == node || *b == node) {
                        network.cut(a, b, true);
                        cut.push((a, b));
                    }
                    steps.push(format!("isolate {node}"));
                }
                5 => steps.push("heal".to_string()),
                _ => {
                    if !cut.contains(&pair) {
                        network.cut(pair.0, pair.1, true);
                        cut.push(pair);
                    }
                    steps.push(format!("and cut {}-{}", pair.0, pair.1));
                }
            }
            std::thread::sleep(Duration::from_millis(500 + schedule.next(1500)));
        }
        for &(a, b) in &cut {
            run.cluster.network().cut(a, b, false);
        }
        let fences = fence_events(&run.cluster) - fences_before;
        let label = format!("flapping {}/{rounds}", round + 1);
        println!(
            "{label}: {} steps in {} ms ({}), {fences} brokers fenced",
            steps.len(),
            fault_at.elapsed().as_millis(),
            steps.join(", ")
        );
        run.recover(&label, fault_at);
    }
    run.finish();
}

// The history checker itself, on histories made by hand (no network needed).

fn checker_log_of(entries: &[(i32, i64, usize)]) -> Vec<Stored> {
    entries
        .iter()
        .map(|(p, o, seq)| (*p, *o, payload(*seq).into_bytes()))
        .collect()
}

fn checker_run(sent: &[usize], reports: &[Delivery], observed: &[Observation], log: &[Stored]) {
    let sent: BTreeSet<usize> = sent.iter().copied().collect();
    let partition_of = |seq: usize| i32::try_from(seq % 2).unwrap();
    check(
        &History {
            sent: &sent,
            reports,
            observed,
            partition_of: &partition_of,
        },
        log,
    );
}

fn checker_seen(partition: i32, offset: i64, seq: usize) -> Observation {
    Observation {
        consumer: 0,
        partition,
        offset,
        seq: Some(seq),
    }
}

#[test]
fn history_checker_passes_a_clean_history() {
    let log = checker_log_of(&[(0, 0, 0), (1, 0, 1), (0, 1, 2)]);
    let reports = [(0, Ok((0, 0))), (1, Ok((1, 0))), (2, Err("timed out".to_string()))];
    checker_run(
        &[0, 1, 2],
        &reports,
        &[checker_seen(0, 0, 0), checker_seen(0, 1, 2)],
        &log,
    );
}

#[test]
#[should_panic(expected = "acknowledged messages are missing")]
fn history_checker_finds_a_lost_acknowledgement() {
    let log = checker_log_of(&[(0, 0, 0)]);
    checker_run(&[0, 2], &[(0, Ok((0, 0))), (2, Ok((0, 1)))], &[], &log);
}

#[test]
#[should_panic(expected = "served, then lost or replaced")]
fn history_checker_finds_a_served_record_later_replaced() {
    let log = checker_log_of(&[(0, 0, 0), (0, 1, 4)]);
    let reports = [(0, Ok((0, 0))), (2, Err("timed out".to_string())), (4, Ok((0, 1)))];
    checker_run(&[0, 2, 4], &reports, &[checker_seen(0, 1, 2)], &log);
}

#[test]
#[should_panic(expected = "stored more than once")]
fn history_checker_finds_a_duplicate() {
    let log = checker_log_of(&[(0, 0, 0), (0, 1, 0)]);
    checker_run(&[0], &[(0, Ok((0, 0)))], &[], &log);
}

#[test]
#[should_panic(expected = "offsets are dense")]
fn history_checker_finds_a_gap() {
    let log = checker_log_of(&[(0, 0, 0), (0, 2, 2)]);
    checker_run(&[0, 2], &[(0, Ok((0, 0))), (2, Ok((0, 2)))], &[], &log);
}
