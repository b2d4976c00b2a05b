//! `sim SEEDS [FIRST]`: runs cluster seeds FIRST.. FIRST+SEEDS-1 and prints
//! a shrunk report of the first failure (exit 1), or a summary (exit 0).
//! `sim groups SEEDS [FIRST]`: the same with the consumer-group model.

use shardline_sim::{report, shrink, Config, GroupConfig, Simulation};

fn main() {
    Simulation::report_seed_on_panic();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let groups = args.first().is_some_and(|a| a == "groups");
    if groups {
        args.remove(0);
    }
    let seeds: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let first: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    if groups {
        run_groups(seeds, first);
        return;
    }
    let (mut steps, mut acked, mut consumed) = (0u64, 0usize, 0usize);
    for seed in first..first.saturating_add(seeds) {
        let mut config = Config::for_seed(seed);
        if let Some(lines) = std::env::var("SIM_HISTORY_LINES").ok().and_then(|l| l.parse().ok()) {
            config.history_lines = lines;
        }
        let outcome = Simulation::run(&config);
        steps += outcome.steps;
        acked += outcome.acked;
        consumed += outcome.consumed;
        if outcome.violation.is_some() {
            let (config, outcome) = shrink(&config);
            eprintln!("{}", report(&config, &outcome));
            std::process::exit(1);
        }
    }
    println!(
        "{seeds} seeds from {first}: no violation ({steps} steps, {acked} records acknowledged, {consumed} consumed)"
    );
}

/// Group seeds: the first failure prints its history's tail (exit 1).
fn run_groups(seeds: u64, first: u64) {
    let (mut taken, mut fenced, mut failovers, mut generations) = (0usize, 0usize, 0usize, 0i64);
    for seed in first..first.saturating_add(seeds) {
        let outcome = Simulation::run_group(&GroupConfig::for_seed(seed));
        if let Some(violation) = &outcome.violation {
            eprintln!(
                "group seed {seed} failed: {}\nreplay: cargo run -p shardline-sim --release -- groups 1 {seed}\nhistory tail:",
                violation.0
            );
            for line in &outcome.tail {
                eprintln!("  {line}");
            }
            std::process::exit(1);
        }
        taken += outcome.commits_taken;
        fenced += outcome.commits_fenced;
        failovers += outcome.failovers;
        generations += i64::from(outcome.generations);
    }
    println!(
        "{seeds} group seeds from {first}: no violation ({taken} commits taken, {fenced} fenced, \
         {generations} generations, {failovers} coordinator failovers)"
    );
}
