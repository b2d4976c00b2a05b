//! The simulator in CI: a bounded number of seeds, determinism, and the
//! seeds that found bugs (docs/reliability.md), kept as regressions.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

use shardline_sim::{report, shrink, Config, Simulation};

/// Seeds every `cargo test` runs (half with 3 brokers, half with 5). A
/// seed takes ≈ 30–60 ms in a debug build; `just sim SEEDS` runs more in
/// release.
const CI_SEEDS: u64 = 400;

/// Seeds that found bugs in the replication rules, in the order found.
/// (Their histories changed from their first metadata quorum loss on,
/// when that fault was added; they are kept as clean runs.)
const FOUND_BUGS: [u64; 6] = [50, 312, 494, 1788, 18048, 23963];

fn run_clean(seed: u64) {
    let config = Config::for_seed(seed);
    let outcome = Simulation::run(&config);
    if outcome.violation.is_some() {
        let (config, outcome) = shrink(&config);
        panic!("{}", report(&config, &outcome));
    }
}

#[test]
fn ci_seeds_find_no_violation() {
    Simulation::report_seed_on_panic();
    let mut acked = 0;
    for seed in 1..=CI_SEEDS {
        let config = Config::for_seed(seed);
        let outcome = Simulation::run(&config);
        if outcome.violation.is_some() {
            let (config, outcome) = shrink(&config);
            panic!("{}", report(&config, &outcome));
        }
        acked += outcome.acked;
    }
    assert!(acked > 0, "the runs acknowledged records at all");
}

#[test]
fn seeds_that_found_bugs_stay_clean() {
    for seed in FOUND_BUGS {
        run_clean(seed);
    }
}

#[test]
fn a_seed_replays_its_history_byte_for_byte() {
    for seed in [7, 8] {
        let first = Simulation::run(&Config::for_seed(seed));
        let second = Simulation::run(&Config::for_seed(seed));
        assert_eq!(first.history_hash, second.history_hash, "seed {seed}");
        assert_eq!(
            (first.steps, first.acked, first.tail),
            (second.steps, second.acked, second.tail)
        );
    }
    let other = Simulation::run(&Config::for_seed(9));
    assert_ne!(other.history_hash, Simulation::run(&Config::for_seed(7)).history_hash);
}

#[test]
fn runs_are_bounded_and_do_work() {
    let config = Config::for_seed(3);
    let outcome = Simulation::run(&config);
    assert!(outcome.steps <= config.steps_max);
    assert!(outcome.faults > 0, "faults were injected");
    assert!(outcome.committed >= outcome.acked);
    assert!(outcome.consumed > 0, "consumers read");
    assert!(
        outcome
            .applied_faults
            .iter()
            .any(|fault| fault.contains("loses its quorum")),
        "the metadata group lost its quorum at least once: {:?}",
        outcome.applied_faults
    );
    assert!(
        outcome.applied_faults.iter().any(|fault| fault.contains("disk stalls")),
        "a disk stalled at least once: {:?}",
        outcome.applied_faults
    );
}
