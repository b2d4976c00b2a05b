//! `sim SEEDS [FIRST]`: runs seeds FIRST.. FIRST+SEEDS-1 and prints a
//! shrunk report of the first failure (exit 1), or a summary (exit 0).

use shardline_sim::{report, shrink, Config, Simulation};

fn main() {
    Simulation::report_seed_on_panic();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let first: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
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
