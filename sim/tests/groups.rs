//! The consumer-group model in CI: a bounded number of seeds on the rules
//! the engine runs (`shardline_groups`), determinism, and the KIP-447 case
//! the model found (docs/reliability.md).

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

use shardline_sim::{GroupConfig, GroupOutcome, Simulation};

/// Group seeds every `cargo test` runs (`just sim-groups SEEDS` runs more
/// in release).
const CI_GROUP_SEEDS: u64 = 1000;

fn failure(outcome: &GroupOutcome) -> String {
    format!(
        "group seed {} failed: {}\nreplay: cargo run -p shardline-sim --release -- groups 1 {}\n{}",
        outcome.seed,
        outcome.violation.as_ref().map_or("no violation", |v| v.0.as_str()),
        outcome.seed,
        outcome.tail.join("\n")
    )
}

#[test]
fn committed_offsets_never_go_back_under_rebalances_zombies_and_failovers() {
    Simulation::report_seed_on_panic();
    let (mut taken, mut fenced, mut generations, mut failovers) = (0, 0, 0, 0);
    for seed in 1..=CI_GROUP_SEEDS {
        let outcome = Simulation::run_group(&GroupConfig::for_seed(seed));
        assert!(outcome.violation.is_none(), "{}", failure(&outcome));
        taken += outcome.commits_taken;
        fenced += outcome.commits_fenced;
        generations += i64::from(outcome.generations);
        failovers += outcome.failovers;
    }
    // The model did what it is for: commits taken, late ones fenced, many
    // generations (rebalances after leaves, stalls and expiries), failovers.
    let seeds = usize::try_from(CI_GROUP_SEEDS).unwrap();
    assert!(failovers > seeds, "{failovers} failovers");
    assert!(taken > 10_000, "{taken} commits taken");
    assert!(fenced > 1_000, "{fenced} commits fenced");
    assert!(
        generations > 5 * i64::try_from(seeds).unwrap(),
        "{generations} generations"
    );
}

#[test]
fn a_group_seed_replays_its_history_byte_for_byte() {
    for seed in [7, 8] {
        let first = Simulation::run_group(&GroupConfig::for_seed(seed));
        let second = Simulation::run_group(&GroupConfig::for_seed(seed));
        assert_eq!(first.history_hash, second.history_hash, "seed {seed}");
        assert_eq!(first.tail, second.tail, "seed {seed}");
        assert_eq!(
            (first.commits_taken, first.commits_fenced, first.failovers),
            (second.commits_taken, second.commits_fenced, second.failovers)
        );
    }
    let other = Simulation::run_group(&GroupConfig::for_seed(9));
    assert_ne!(
        other.history_hash,
        Simulation::run_group(&GroupConfig::for_seed(7)).history_hash
    );
}

/// Without KIP-447's stable offsets, a consumer that rejoins while its
/// commit is being stored can be given its partition again (or give it to
/// another) from the offset before that commit, which then lands, and the
/// new owner's first commit moves the offset back. Found by this model; the
/// rules refuse a stable fetch of a partition with a commit being stored
/// (UNSTABLE_OFFSET_COMMIT), and this pins that the model still sees the
/// difference.
#[test]
fn without_stable_offset_fetches_a_late_commit_moves_an_offset_back() {
    let found = (1..=CI_GROUP_SEEDS).find_map(|seed| {
        let config = GroupConfig {
            require_stable: false,
            ..GroupConfig::for_seed(seed)
        };
        Simulation::run_group(&config).violation
    });
    let violation = found.expect("a seed without stable fetches moves an offset back");
    assert!(violation.0.contains("went back"), "{}", violation.0);
}
