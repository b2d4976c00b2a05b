//! `engine`: the Shardline broker binary.
//!
//! The Kafka-serving engine is the subject of issue 3; until it lands this
//! binary says so and exits non-zero, so nobody mistakes it for a broker.

fn main() {
    eprintln!("shardline engine: the broker is not built yet (see issue 3); the partition log and `shardctl log` are available");
    std::process::exit(2);
}
