//! `engine`: the Shardline broker binary. `engine --help` lists the flags;
//! with none it runs a single node with data in `./data`, serving Kafka on
//! 127.0.0.1:9092.

use clap::Parser;
use shardline_engine::EngineConfig;

fn main() {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        // A log line that cannot be written (stdout on a full disk) is dropped:
        // the default reports it with eprintln!, which panics (and so aborts)
        // when stderr fails too.
        .log_internal_errors(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .init();
    let config = EngineConfig::parse();
    if let Err(e) = shardline_engine::run(config) {
        // Once, on stderr (the log goes to stdout; a second copy there read
        // as two failures).
        eprintln!("engine: {e}");
        std::process::exit(1);
    }
}
