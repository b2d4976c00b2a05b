//! Writes seed inputs for the engine's fuzz targets into DIR/<target>/.
//!
//! Usage: engine-seeds DIR

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: engine-seeds DIR"));
    let target = dir.join("mqtt_session");
    std::fs::create_dir_all(&target).expect("the seed directory");
    for (n, stored) in shardline_engine::fuzz_api::sample_mqtt_sessions()
        .into_iter()
        .enumerate()
    {
        // Flag byte 0: the checksum as written.
        let mut input = vec![0u8];
        input.extend_from_slice(&stored);
        std::fs::write(target.join(format!("seed-{n}")), input).expect("a seed file");
    }
}
