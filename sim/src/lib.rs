//! # `shardline-sim`: a seeded simulation of a cluster's replication
//!
//! Dev-only. One process runs a 3- or 5-broker cluster on virtual time:
//! partition replicas driven by the same rules the engine runs
//! (`shardline_replication`: high watermark, ISR, truncation, leader
//! epochs), a model of what the metadata group decides (fencing silent
//! brokers, electing leaders, accepting ISR changes fenced by leader epoch —
//! `shardline_replication::election`, the rules `raft` applies), producers
//! with acks=all and idempotent sequence numbers, and consumers reading up
//! to the high watermark. Around them: a network that loses, duplicates,
//! delays, reorders and cuts messages (per direction), a disk whose
//! unsynced writes are lost or torn at a crash and whose syncs can fail,
//! and brokers that crash and restart.
//!
//! Every choice comes from one seeded generator (`rng.rs`) and one event
//! queue ordered by (virtual time, scheduling order), so a seed is a
//! history: the same seed gives the same history, byte for byte
//! ([`Outcome::history_hash`]). After every step the invariants of
//! `check.rs` are checked; a violation stops the run, and [`shrink`] drops
//! the faults it does not need.
//!
//! Beside the cluster, a model of one consumer group (`groups.rs`) drives
//! the group rules the engine runs (`shardline_groups`: joins, syncs,
//! sessions, fencing of commits, the replay that rebuilds a group after a
//! coordinator failover) under rebalances, zombies, late commits and
//! failovers, on the same seeded generator and history hash
//! ([`Simulation::run_group`]).
//!
//! ## Where its state lives
//! Everything is in one [`Simulation`] value on the calling thread: no
//! threads, no clock, no I/O. docs/reliability.md says what is modelled and
//! what is not.

mod check;
mod cluster;
mod disk;
mod groups;
mod network;
mod rng;

use std::collections::BTreeSet;

pub use check::Violation;
pub use cluster::Outcome;
pub use groups::{GroupConfig, GroupOutcome};

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// Brokers: 3 or 5.
    pub nodes: usize,
    /// Virtual time the run lasts.
    pub duration_ms: u64,
    /// Bound on steps (events handled), whatever the virtual time.
    pub steps_max: u64,
    /// How often (per 1000 syncs) an fsync fails.
    pub sync_failure_per_mille: u32,
    /// Faults (by their index in the run) drawn but not applied: how
    /// [`shrink`] removes faults without changing the rest of the run.
    pub suppressed_faults: BTreeSet<u32>,
    /// Lines of history kept to print with a violation.
    pub history_lines: usize,
}

impl Config {
    /// The settings CI and `just sim` use for `seed`: 3 or 5 brokers by seed.
    pub fn for_seed(seed: u64) -> Config {
        Config {
            seed,
            nodes: if seed.is_multiple_of(2) { 3 } else { 5 },
            duration_ms: DURATION_MS,
            steps_max: STEPS_MAX,
            sync_failure_per_mille: 2,
            suppressed_faults: BTreeSet::new(),
            history_lines: HISTORY_LINES,
        }
    }
}

/// Virtual time of one run: long enough for dozens of faults and for every
/// producer to finish when the cluster lets it.
const DURATION_MS: u64 = 8_000;
/// Steps of one run at most (a run takes ≈ 10–20 k).
const STEPS_MAX: u64 = 200_000;
/// History lines a report shows by default (`SIM_HISTORY_LINES` for more).
const HISTORY_LINES: usize = 80;
/// Re-runs [`shrink`] may spend.
const SHRINK_RUNS_MAX: usize = 200;

/// The front type: runs seeds.
pub struct Simulation;

thread_local! {
    /// The seed running on this thread, for a panic hook to name: a broken
    /// `assert!` inside the rules stops the run without a [`Violation`].
    static RUNNING_SEED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

impl Simulation {
    /// Runs one history to its end or its first violation.
    pub fn run(config: &Config) -> Outcome {
        RUNNING_SEED.with(|seed| seed.set(Some(config.seed)));
        let outcome = cluster::Cluster::new(config.clone()).run();
        RUNNING_SEED.with(|seed| seed.set(None));
        outcome
    }

    /// Runs one consumer-group history to its end or its first violation.
    pub fn run_group(config: &GroupConfig) -> GroupOutcome {
        RUNNING_SEED.with(|seed| seed.set(Some(config.seed)));
        let outcome = groups::GroupModel::new(config.clone()).run();
        RUNNING_SEED.with(|seed| seed.set(None));
        outcome
    }

    /// Makes a panic (a failed assertion of the rules or the simulator)
    /// print the seed that was running on its thread, so it can be replayed.
    pub fn report_seed_on_panic() {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(seed) = RUNNING_SEED.with(std::cell::Cell::get) {
                eprintln!("simulation seed {seed} panicked; replay: cargo run -p shardline-sim --release -- 1 {seed}");
            }
            previous(info);
        }));
    }
}

/// A failing run with the faults it does not need suppressed, one at a
/// time (each re-run keeps the fault if the violation goes away without it),
/// and stopped at the step of the violation: the minimal prefix.
pub fn shrink(config: &Config) -> (Config, Outcome) {
    let mut best = config.clone();
    let mut outcome = Simulation::run(&best);
    assert!(outcome.violation.is_some(), "shrink a failing run only");
    let faults = outcome.faults;
    for fault in (0..faults).take(SHRINK_RUNS_MAX) {
        let mut candidate = best.clone();
        candidate.suppressed_faults.insert(fault);
        let tried = Simulation::run(&candidate);
        if tried.violation.is_some() {
            best = candidate;
            outcome = tried;
        }
    }
    (best, outcome)
}

/// A report of a failing run for a human: the seed, how to replay it, the
/// faults that matter, and the history's last lines.
pub fn report(config: &Config, outcome: &Outcome) -> String {
    let mut out = format!(
        "seed {} ({} brokers) failed after {} steps: {}\nreplay: cargo run -p shardline-sim --release -- {} 1\n",
        config.seed,
        config.nodes,
        outcome.steps,
        outcome.violation.as_ref().map_or("no violation", |v| v.0.as_str()),
        config.seed
    );
    out.push_str(&format!(
        "faults applied ({} suppressed as unneeded):\n",
        config.suppressed_faults.len()
    ));
    for fault in &outcome.applied_faults {
        out.push_str(&format!("  {fault}\n"));
    }
    out.push_str("history tail:\n");
    for line in &outcome.tail {
        out.push_str(&format!("  {line}\n"));
    }
    out
}
