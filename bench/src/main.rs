//! `bench`: the open-loop Kafka latency and throughput tool (issue 4).
//!
//! Not built yet; it needs an engine that serves Produce and Fetch.

fn main() {
    eprintln!("shardline bench: not built yet (see issue 4)");
    std::process::exit(2);
}
