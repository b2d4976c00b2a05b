//! `engine`: the Shardline broker binary. `engine --help` lists the flags;
//! with none it runs a single node with data in `./data`, serving Kafka on
//! 127.0.0.1:9092.

use clap::Parser;
use shardline_engine::{EngineConfig, LogFormat};

fn main() {
    // Flags first: a usage error is printed by clap before any log line.
    let config = EngineConfig::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let subscriber = tracing_subscriber::fmt()
        // A log line that cannot be written (stdout on a full disk) is dropped:
        // the default reports it with eprintln!, which panics (and so aborts)
        // when stderr fails too.
        .log_internal_errors(false)
        .with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => subscriber
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        LogFormat::Json => subscriber.json().with_current_span(false).init(),
    }
    if let Err(e) = shardline_engine::run(config) {
        // Once, on stderr (the log goes to stdout; a second copy there read
        // as two failures).
        eprintln!("engine: {e}");
        std::process::exit(1);
    }
}
